"""The synthetic demo trial behind ``manage.py seed_demo``: three single-infusion Treg studies (MS, T1D,
RA) sharing three sites, ~60 participants each at every stage of a 24-month follow-up.

The study build (studies, sites, cohorts, schedule, criteria, consent versions) and the users are
written with the ORM, as a data manager does in the admin. Every clinical record goes through
``trials.services``, so the demo obeys every rule and carries a full audit trail (actor = the
coordinator of the participant's site, channel ``command``).

Dates are relative to the day the command runs, so the demo always has participants inside
follow-up; all randomness comes from ``random.Random`` seeded per participant, so the same seed on
the same day builds the same demo.

How it is built, per study:

1. Each participant gets a *fate* (screen failure, in follow-up, completed, withdrawn, ...) and a
   screening date that fits it, and each infused participant a *course* (durable remission,
   remission then loss, no remission) that drives their assessments.
2. Services are called phase by phase in date order (screen, consent, eligibility, enrol, infuse),
   because three rules depend on the order of calls across participants: subject numbers are given
   in screening order, cohorts fill in enrolment order, and a cohort's sentinel must be infused first.
3. Then each participant's follow-up is replayed in date order: scheduled visits (done, missed,
   overdue, out of window) with the forms due at them, relapses and other unscheduled visits,
   rescue therapies, the T1D insulin log, re-consent to the new consent version, and finally the
   disposition.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Permission

from trials import services
from trials.audit import audit_context
from trials.management import demo_features
from trials.models import (
    ConsentDocument,
    DiseaseAssessment,
    Disposition,
    DoseCohort,
    EligibilityCriterion,
    FormCode,
    Indication,
    InsulinDoseChange,
    MMTTSample,
    Participant,
    RescueTherapy,
    Role,
    Site,
    Study,
    StudyMembership,
    Visit,
    VisitDefinition,
)

User = get_user_model()
CHANNEL = "command"
MONTH = 30.44  # days

# ---------------------------------------------------------------------------------------------
# Study build
# ---------------------------------------------------------------------------------------------

SITES = [
    # code, name, country, time zone, share of recruitment
    ("S01", "London Clinical Research Facility", "GB", "Europe/London", 0.40),
    ("S02", "Gdańsk University Clinical Centre", "PL", "Europe/Warsaw", 0.35),
    ("S03", "San Francisco Medical Center", "US", "America/Los_Angeles", 0.25),
]

# Units follow local laboratory practice: UK labs report HbA1c in mmol/mol (IFCC) and C-peptide in
# pmol/L, Polish labs CRP in mg/dL.
HBA1C_UNIT = {"S01": DiseaseAssessment.HbA1cUnit.MMOL_MOL}
CPEPTIDE_UNIT = {"S01": MMTTSample.Unit.PMOL_L}
CRP_UNIT = {"S02": DiseaseAssessment.CRPUnit.MG_DL}

M = 1_000_000


@dataclass(frozen=True)
class CohortSpec:
    label: str
    per_kg: int | None
    total: int | None
    route: str
    capacity: int


@dataclass(frozen=True)
class CriterionSpec:
    kind: str
    number: int
    text: str
    failure: str  # what the screen-failure reason says when a participant does not meet it


@dataclass(frozen=True)
class StudySpec:
    code: str
    title: str
    indication: str
    phase: str
    product: str
    cohorts: tuple[CohortSpec, ...]
    criteria: tuple[CriterionSpec, ...]
    birth_years: tuple[int, int]  # age range at screening, as years before today
    female_share: float
    weight_kg: tuple[float, float]
    deaths: int


IV, IT = DoseCohort.Route.IV, DoseCohort.Route.IT
INC, EXC = EligibilityCriterion.Kind.INCLUSION, EligibilityCriterion.Kind.EXCLUSION
COMMON_EXCLUSIONS = (
    CriterionSpec(
        EXC,
        2,
        "Active or chronic infection (HIV, hepatitis B or C, untreated latent tuberculosis)",
        "positive interferon-gamma release assay (latent tuberculosis)",
    ),
    CriterionSpec(
        EXC,
        3,
        "Pregnancy, breastfeeding, or unwilling to use effective contraception",
        "positive pregnancy test at screening",
    ),
)

STUDIES = (
    StudySpec(
        code="treg-ms-01",
        title=(
            "Autologous expanded polyclonal regulatory T cells given intrathecally or intravenously in "
            "relapsing-remitting multiple sclerosis: a phase 1b/2a dose-escalation study"
        ),
        indication=Indication.MS,
        phase=Study.Phase.PHASE1_2,
        product="Autologous CD4+CD25hiCD127- Treg (expanded)",
        # After Chwojnicki et al. 2021: intrathecal fresh Tregs 1.0 x 10^6 total, IV 40 x 10^6/kg.
        cohorts=(
            CohortSpec("IT 1.0 × 10⁶ total", None, 1 * M, IT, 6),
            CohortSpec("IV 20 × 10⁶/kg", 20 * M, None, IV, 6),
            CohortSpec("IV 40 × 10⁶/kg (expansion)", 40 * M, None, IV, 40),
        ),
        criteria=(
            CriterionSpec(INC, 1, "Aged 18 to 55 years", "aged over 55 at screening"),
            CriterionSpec(
                INC,
                2,
                "Relapsing-remitting MS by the 2017 McDonald criteria",
                "secondary progressive course on review of history",
            ),
            CriterionSpec(INC, 3, "EDSS 0 to 5.5 at screening", "EDSS 6.0 at screening"),
            CriterionSpec(
                INC,
                4,
                "At least one relapse in the past 12 months or a Gd-enhancing lesion in the past 6",
                "no relapse in 12 months and no Gd-enhancing lesion in 6 months",
            ),
            CriterionSpec(
                INC,
                5,
                "No disease-modifying therapy for at least 6 months",
                "fingolimod stopped 3 months before screening",
            ),
            CriterionSpec(EXC, 1, "Contraindication to MRI or gadolinium", "cardiac pacemaker not MRI-conditional"),
            *COMMON_EXCLUSIONS,
            CriterionSpec(
                EXC, 4, "Systemic corticosteroids within 30 days", "methylprednisolone for a relapse 2 weeks ago"
            ),
        ),
        birth_years=(18, 55),
        female_share=0.70,
        weight_kg=(52, 98),
        deaths=0,
    ),
    StudySpec(
        code="treg-t1d-01",
        title=(
            "Ex vivo expanded autologous polyclonal CD4+CD127lo/-CD25+ regulatory T cells in adults with "
            "recent-onset type 1 diabetes: a phase 1 dose-escalation study"
        ),
        indication=Indication.T1D,
        phase=Study.Phase.PHASE1,
        product="Autologous polyclonal CD4+CD127lo/-CD25+ Treg (expanded)",
        # After Bluestone et al. 2015: single IV infusion, 0.4, 3.2 and 26 x 10^8 total cells.
        cohorts=(
            CohortSpec("0.4 × 10⁸ total", None, 40 * M, IV, 6),
            CohortSpec("3.2 × 10⁸ total", None, 320 * M, IV, 6),
            CohortSpec("26 × 10⁸ total (expansion)", None, 2600 * M, IV, 40),
        ),
        criteria=(
            CriterionSpec(INC, 1, "Aged 18 to 45 years", "aged 47 at screening"),
            CriterionSpec(
                INC,
                2,
                "Type 1 diabetes diagnosed 3 to 24 months before screening",
                "diagnosed 31 months before screening",
            ),
            CriterionSpec(
                INC,
                3,
                "At least one islet autoantibody (GAD65, IA-2, ZnT8 or insulin)",
                "all islet autoantibodies negative",
            ),
            CriterionSpec(
                INC,
                4,
                "Peak stimulated C-peptide of at least 0.2 nmol/L on the screening MMTT",
                "peak stimulated C-peptide 0.12 nmol/L",
            ),
            CriterionSpec(
                EXC,
                1,
                "Severe hypoglycaemia or diabetic ketoacidosis in the past 3 months",
                "admitted with diabetic ketoacidosis 6 weeks ago",
            ),
            *COMMON_EXCLUSIONS,
            CriterionSpec(EXC, 4, "Previous immunotherapy for type 1 diabetes", "teplizumab in a previous trial"),
        ),
        birth_years=(18, 45),
        female_share=0.45,
        weight_kg=(50, 95),
        deaths=0,
    ),
    StudySpec(
        code="treg-ra-01",
        title=(
            "Autologous polyclonal regulatory T cells in adults with active rheumatoid arthritis despite "
            "methotrexate: a phase 1/2 dose-escalation study"
        ),
        indication=Indication.RA,
        phase=Study.Phase.PHASE1_2,
        product="Autologous polyclonal Treg (expanded)",
        cohorts=(
            CohortSpec("IV 5 × 10⁶/kg", 5 * M, None, IV, 6),
            CohortSpec("IV 10 × 10⁶/kg", 10 * M, None, IV, 6),
            CohortSpec("IV 20 × 10⁶/kg (expansion)", 20 * M, None, IV, 40),
            # Planned dose 0, after the others: cohorts fill in order and the three above hold every
            # participant the demo enrols, so it stays empty; the study build and the safety tables show it.
            CohortSpec("Placebo (saline, no cells)", 0, None, IV, 6),
        ),
        criteria=(
            CriterionSpec(INC, 1, "Aged 18 to 75 years", "aged 77 at screening"),
            CriterionSpec(
                INC,
                2,
                "Rheumatoid arthritis by the 2010 ACR/EULAR classification criteria",
                "psoriatic arthritis on review",
            ),
            CriterionSpec(
                INC,
                3,
                "DAS28-CRP above 3.2 on methotrexate at a stable dose for at least 12 weeks",
                "DAS28-CRP 2.9 at screening",
            ),
            CriterionSpec(INC, 4, "Rheumatoid factor or anti-CCP antibody positive", "seronegative"),
            CriterionSpec(
                EXC, 1, "Biologic or targeted synthetic DMARD in the past 3 months", "tofacitinib stopped 6 weeks ago"
            ),
            *COMMON_EXCLUSIONS,
            CriterionSpec(EXC, 4, "Prednisolone above 10 mg a day", "prednisolone 15 mg a day"),
        ),
        birth_years=(25, 75),
        female_share=0.75,
        weight_kg=(50, 105),
        deaths=1,
    ),
)

# code, name, protocol day, window before, window after
SCHEDULE = (
    ("d0", "Day 0 (infusion)", 0, 0, 0),
    ("d1", "Day 1", 1, 0, 0),
    ("d3", "Day 3", 3, 1, 1),
    ("d7", "Day 7", 7, 2, 2),
    ("d14", "Day 14", 14, 3, 3),
    ("d28", "Day 28", 28, 7, 7),
    ("m3", "Month 3", 91, 14, 14),
    ("m6", "Month 6", 182, 14, 14),
    ("m9", "Month 9", 273, 21, 21),
    ("m12", "Month 12", 365, 28, 28),
    ("m18", "Month 18", 547, 28, 28),
    ("m24", "Month 24", 730, 28, 28),
)
LABS_AT = {"d0", "d1", "d7", "d28", "m3", "m6", "m12", "m18", "m24"}
DISEASE_ACTIVITY_AT = {"d0", "d28", "m3", "m6", "m9", "m12", "m18", "m24"}
# The day-0 MRI is the pre-infusion baseline scan; the day-0 MMTT is done fasting before the infusion.
INDICATION_FORMS_AT = {
    Indication.MS: (FormCode.MRI, {"d0", "m6", "m12", "m18", "m24"}),
    Indication.T1D: (FormCode.MMTT, {"d0", "m3", "m6", "m12", "m18", "m24"}),
}


def forms_due(indication: str, code: str) -> list[str]:
    forms = [FormCode.VITALS, FormCode.AE_REVIEW]
    if code in LABS_AT:
        forms.append(FormCode.LABS)
    if code in DISEASE_ACTIVITY_AT:
        forms.append(FormCode.DISEASE_ACTIVITY)
    extra = INDICATION_FORMS_AT.get(indication)
    if extra and code in extra[1]:
        forms.append(extra[0])
    return forms


# ---------------------------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoUser:
    username: str
    first_name: str
    last_name: str
    password: str
    role: str | None  # None: the superuser
    sites: tuple[str | None, ...] = (None,)  # one membership per study and site; None = all sites
    unblinded: bool = False
    staff_permissions: tuple[str, ...] = ()
    note: str = ""  # shown in the logins table


STUDY_BUILD_MODELS = ("site", "study", "dosecohort", "visitdefinition", "eligibilitycriterion", "consentdocument")
CASEBOOK_MODELS = (
    "participant",
    "consent",
    "eligibilityanswer",
    "infusion",
    "visit",
    "diseaseassessment",
    "mriread",
    "mmttsample",
    "relapse",
    "rescuetherapy",
    "insulindosechange",
    "protocoldeviation",
    "disposition",
)
DATA_MANAGER_PERMISSIONS = (
    *(f"trials.{action}_{model}" for model in STUDY_BUILD_MODELS for action in ("add", "change", "view")),
    "trials.add_studymembership",
    "trials.change_studymembership",
    "trials.view_studymembership",
    *(f"trials.view_{model}" for model in CASEBOOK_MODELS),
    "auth.view_user",
)
SPONSOR_ADMIN_PERMISSIONS = (
    "auth.add_user",
    "auth.change_user",
    "auth.view_user",
    "trials.reset_user_password",  # ordinary accounts only, recorded (trials.accounts)
    "trials.view_studymembership",
)

# Demo-only passwords, printed by the command. Each passes the project's validators (>= 12
# characters, not common, not numeric, not like the username); the command checks that.
USERS = (
    DemoUser("admin", "Ada", "Admin", "orchid-lantern-5821", None),
    DemoUser("coordinator_s01", "Amira", "Khan", "harbour-violet-3307", Role.COORDINATOR, ("S01",)),
    DemoUser("coordinator_s02", "Katarzyna", "Wiśniewska", "amber-dunes-4419", Role.COORDINATOR, ("S02",)),
    DemoUser("coordinator_s03", "Daniel", "Reyes", "cedar-fog-7714-sf", Role.COORDINATOR, ("S03",)),
    DemoUser("investigator_s01", "Eleanor", "Price", "quartz-meadow-2286", Role.INVESTIGATOR, ("S01",)),
    DemoUser("monitor", "Tomasz", "Zieliński", "silver-heron-6052", Role.MONITOR, ("S01", "S02")),
    DemoUser("medical_monitor", "Grace", "Okafor", "granite-tide-9173", Role.MEDICAL_MONITOR, unblinded=True),
    DemoUser(
        "data_manager",
        "Priya",
        "Natarajan",
        "maple-signal-1848",
        Role.DATA_MANAGER,
        staff_permissions=DATA_MANAGER_PERMISSIONS,
    ),
    DemoUser("statistician", "Lukas", "Becker", "copper-kestrel-3961", Role.STATISTICIAN),
    DemoUser(
        "sponsor_admin",
        "Hannah",
        "Lindqvist",
        "willow-beacon-5530",
        Role.SPONSOR_ADMIN,
        staff_permissions=SPONSOR_ADMIN_PERMISSIONS,
    ),
    # Locked out by too many failed sign-ins (demo_features.lock_out): the data manager releases it.
    DemoUser(
        demo_features.LOCKED_USERNAME,
        "Marek",
        "Nowak",
        "juniper-ridge-8062",
        Role.COORDINATOR,
        ("S02",),
        note=demo_features.LOCKED_NOTE,
    ),
)
COORDINATOR_OF_SITE = {"S01": "coordinator_s01", "S02": "coordinator_s02", "S03": "coordinator_s03"}


# ---------------------------------------------------------------------------------------------
# Participants: fates and disease courses
# ---------------------------------------------------------------------------------------------

SCREEN_FAILED, SCREENING, AWAITING = "screen_failed", "screening", "awaiting_infusion"
FOLLOW_UP, COMPLETED, LOST, DIED = "follow_up", "completed", "lost", "died"
WITHDRAWN, WITHDRAWN_BEFORE_INFUSION = "withdrawn", "withdrawn_before_infusion"
PARTICIPANTS_PER_STUDY = 60

# fate -> (count, screening date range in days before today). Completers must have been infused
# at least 730 days ago, so they are the first screened (~26.5 months ago); the follow-up fates are
# spread over the rest of recruitment; the last few are still in screening or awaiting infusion.
FATES = {
    COMPLETED: (6, (812, 792)),
    SCREEN_FAILED: (8, (800, 15)),
    WITHDRAWN: (2, (700, 250)),
    WITHDRAWN_BEFORE_INFUSION: (1, (400, 100)),
    LOST: (2, (650, 300)),
    DIED: (None, (550, 350)),  # count from the study spec
    AWAITING: (3, (35, 22)),
    SCREENING: (4, (12, 2)),
    FOLLOW_UP: (None, (760, 40)),  # the rest of the 60
}

MISSED_REASONS = (
    "Participant unwell with a respiratory infection; visit could not be rearranged within the window",
    "Participant travelling abroad during the visit window",
    "Hospital transport unavailable; participant could not attend",
    "Participant declined the visit (family commitments)",
)
LOST_MISSED_REASON = "Did not attend; no answer to telephone calls or letters"
LOST_CONTACT = dt.timedelta(days=150)  # visits missed before a participant is declared lost
WITHDRAWAL_REASONS = {
    Indication.MS: "Investigator decision: started rescue disease-modifying therapy (ocrelizumab) after relapses",
    Indication.T1D: "Withdrew consent: burden of study visits alongside a new job",
    Indication.RA: "Withdrew consent: moving abroad",
}
WITHDRAWAL_BEFORE_INFUSION = (
    "Manufactured product failed release testing (sterility); participant declined a repeat apheresis"
)
LOST_REASON = "No contact after three telephone calls and a registered letter; GP has no forwarding address"
DEATH_REASON = (
    "Died of an acute myocardial infarction at home; assessed by the investigator as unrelated to study treatment"
)


@dataclass
class Course:
    """How the disease behaves after the infusion, in months from day 0.

    ``durable``: remission from ``onset`` on; ``lost``: remission from ``onset`` until ``loss``;
    ``none``: partial response at best, never remission.
    """

    kind: str
    onset: float
    loss: float | None

    def state(self, months: float) -> str:
        if months < 0.5:
            return "baseline"
        if self.kind == "none":
            return "partial"
        if self.loss is not None and months >= self.loss:
            return "relapsed"
        return "remission" if months >= self.onset else "partial"


@dataclass
class Plan:
    index: int  # order of screening in the study
    rank: int  # order within its fate
    spec: StudySpec
    fate: str
    rng: random.Random
    screening_date: dt.date
    site_code: str = ""
    sex: str = "F"
    birth_year: int = 1980
    weight: float = 70.0
    course: Course | None = None
    baseline: dict = field(default_factory=dict)
    participant: Participant | None = None
    first_consent: ConsentDocument | None = None
    consent_date: dt.date | None = None
    enrol_date: dt.date | None = None
    infusion_date: dt.date | None = None
    mri_after_loss: bool = False
    worsening: dt.date | None = None  # loss of remission or no response: rescue, more insulin
    rescue: bool = False


def d(value: float, places: int) -> Decimal:
    """A Decimal with exactly ``places`` decimals (DecimalFields refuse float noise)."""
    return Decimal(f"{value:.{places}f}")


def half_steps(value: float) -> Decimal:
    return d(min(9.5, max(0.0, round(value * 2) / 2)), 1)


# ---------------------------------------------------------------------------------------------
# Assessment values per indication (docs/domain.md §5)
# ---------------------------------------------------------------------------------------------


def ms_edss(plan: Plan, months: float) -> Decimal:
    """EDSS: stable in remission; a confirmed 1.0-point worsening after loss; slow worsening without response."""
    base, course, rng = plan.baseline["edss"], plan.course, plan.rng
    if course.kind == "none":
        worse = 0.5 * (months >= 3) + 0.5 * (months >= 9) + 0.5 * (months >= 18)
        return half_steps(base + worse)
    if course.loss is not None and months >= course.loss:
        return half_steps(base + 1.0)
    return half_steps(base + (0.5 if rng.random() < 0.1 else 0.0))  # occasional unconfirmed 0.5 change


def ms_mri(plan: Plan, months: float, *, first_after_loss: bool) -> tuple[int, int]:
    """(new or enlarging T2, Gd-enhancing) lesions."""
    rng, course = plan.rng, plan.course
    if months < 0.5:  # baseline scan: the activity that qualified the participant
        return rng.randint(1, 5), rng.randint(0, 3)
    if course.kind == "none":
        return rng.randint(1, 5), rng.randint(0, 3)
    if course.loss is not None and months >= course.loss:
        return rng.randint(1, 4), rng.randint(1, 2) if first_after_loss else rng.randint(0, 1)
    return 0, 0


def t1d_values(plan: Plan, months: float, site: str) -> dict:
    """HbA1c and daily insulin such that IDAA1c = HbA1c(%) + 4 x insulin is <= 9 exactly in remission."""
    rng, state = plan.rng, plan.course.state(months)
    if state == "baseline":
        hba1c, insulin = plan.baseline["hba1c"], plan.baseline["insulin"]
    elif state == "remission":
        hba1c = rng.uniform(6.0, 6.9)
        insulin = 0.0 if plan.baseline["insulin_free"] and months >= 6 else rng.uniform(0.10, 0.38)
    elif state == "relapsed":
        hba1c, insulin = rng.uniform(7.5, 8.6), rng.uniform(0.55, 0.85)
    else:
        hba1c, insulin = rng.uniform(7.4, 8.8), rng.uniform(0.50, 0.85)
    unit = HBA1C_UNIT.get(site, DiseaseAssessment.HbA1cUnit.PERCENT)
    value = (hba1c - 2.15) * 10.929 if unit == DiseaseAssessment.HbA1cUnit.MMOL_MOL else hba1c
    return {"hba1c": d(value, 1), "hba1c_unit": unit, "insulin_u_per_kg_day": d(insulin, 2)}


MMTT_SHAPE = ((-10, 0.32), (0, 0.33), (15, 0.50), (30, 0.78), (60, 1.00), (90, 0.96), (120, 0.86))


def t1d_mmtt(plan: Plan, months: float, site: str) -> tuple[list[tuple[int, Decimal]], str]:
    """C-peptide over a 2-hour MMTT; the peak declines slowly in remission and faster without it."""
    course, rng = plan.course, plan.rng
    if course.kind == "none":
        decline = 0.045 * months
    elif course.loss is not None and months >= course.loss:
        decline = 0.015 * course.loss + 0.05 * (months - course.loss)
    else:
        decline = 0.015 * months
    peak = max(0.03, plan.baseline["peak_c_peptide"] * (1 - decline))
    unit = CPEPTIDE_UNIT.get(site, MMTTSample.Unit.NMOL_L)
    factor, places = (1000, 1) if unit == MMTTSample.Unit.PMOL_L else (1, 3)
    samples = [(minute, d(peak * shape * rng.uniform(0.93, 1.07) * factor, places)) for minute, shape in MMTT_SHAPE]
    return samples, unit


def ra_values(plan: Plan, months: float, site: str) -> dict:
    """Joint counts, CRP, ESR and global assessments; in remission DAS28-CRP is at most ~2.5 (< 2.6)."""
    rng, b, state = plan.rng, plan.baseline, plan.course.state(months)
    if state == "remission":
        tjc, sjc = rng.randint(0, 1), rng.randint(0, 1)
        crp, esr = rng.uniform(0.5, 3.5), rng.randint(5, 18)
        patient, evaluator = rng.randint(3, 12), rng.randint(2, 10)
    else:
        low, high = {"baseline": (0.9, 1.1), "partial": (0.45, 0.7), "relapsed": (0.6, 0.9)}[state]

        def part(value: float) -> float:
            return value * rng.uniform(low, high)

        tjc, sjc = round(part(b["tjc"])), round(part(b["sjc"]))
        crp, esr = part(b["crp"]), max(2, round(part(b["esr"])))
        patient, evaluator = min(100, round(part(b["patient"]))), min(100, round(part(b["evaluator"])))
    unit = CRP_UNIT.get(site, DiseaseAssessment.CRPUnit.MG_L)
    crp_value = d(crp / 10, 2) if unit == DiseaseAssessment.CRPUnit.MG_DL else d(crp, 1)
    return {
        "tender_joints_28": min(28, tjc),
        "swollen_joints_28": min(28, sjc),
        "crp": crp_value,
        "crp_unit": unit,
        "esr_mm_h": esr,
        "patient_global_mm": patient,
        "evaluator_global_mm": evaluator,
    }


def das28_crp(values: dict) -> float:
    """DAS28-CRP(4) from an assessment's raw values (CRP converted to mg/L), docs/domain.md §5.3."""
    crp = float(values["crp"]) * (10 if values["crp_unit"] == DiseaseAssessment.CRPUnit.MG_DL else 1)
    return (
        0.56 * math.sqrt(values["tender_joints_28"])
        + 0.28 * math.sqrt(values["swollen_joints_28"])
        + 0.36 * math.log(crp + 1)
        + 0.014 * values["patient_global_mm"]
        + 0.96
    )


# ---------------------------------------------------------------------------------------------
# Intercurrent events and the T1D insulin log (read by the durability analyses)
# ---------------------------------------------------------------------------------------------

INSULIN_LOG_SHARE = 0.85  # of enrolled T1D participants: some diaries are never returned or entered
RESCUE_SHARE = 0.10  # of the infused participants of each study
DIARY, CLINIC = InsulinDoseChange.Source.DIARY, InsulinDoseChange.Source.CLINIC
Rescue = RescueTherapy.Category


@dataclass(frozen=True)
class RescueSpec:
    category: str
    agent: str
    days: tuple[int, int] | None  # length of the course; None: continues
    reason: str


RESCUES = {
    Indication.MS: (
        RescueSpec(
            Rescue.CORTICOSTEROID,
            "methylprednisolone",
            (3, 5),
            "Disabling relapse: intravenous methylprednisolone 1 g daily",
        ),
        RescueSpec(
            Rescue.DMT,
            "ocrelizumab",
            None,
            "Ongoing disease activity after the Treg infusion: started a high-efficacy disease-modifying therapy",
        ),
    ),
    Indication.RA: (
        RescueSpec(Rescue.CORTICOSTEROID, "prednisolone", (28, 56), "Flare: oral prednisolone 10 mg daily, tapered"),
        RescueSpec(
            Rescue.CSDMARD,
            "sulfasalazine",
            None,
            "Persistent disease activity (DAS28-CRP above 3.2): conventional synthetic DMARD added to methotrexate",
        ),
    ),
    Indication.T1D: (
        RescueSpec(
            Rescue.INSULIN_INTENSIFICATION,
            "insulin aspart with meals, added to basal insulin glargine",
            None,
            "Loss of glycaemic control: HbA1c above target; insulin regimen intensified to basal-bolus",
        ),
    ),
}
MS_WITHDRAWAL_RESCUE = RescueSpec(
    Rescue.DMT, "ocrelizumab", None, "Relapses despite the Treg infusion: switched to ocrelizumab"
)


def side_rng(seed: int, plan: Plan, what: str) -> random.Random:
    """A generator of its own for the intercurrent events and the insulin log: drawing them from
    ``plan.rng`` would shift every later visit value of the participant."""
    return random.Random(f"{seed}:{plan.spec.code}:{plan.fate}:{plan.rank}:{what}")  # noqa: S311


def worsening_date(plan: Plan, rng: random.Random) -> dt.date | None:
    """When a participant who loses remission (or never reaches it) gets worse enough to be treated."""
    course = plan.course
    if course.kind == "lost":
        days = round(course.loss * MONTH) + rng.randint(3, 21)
    elif course.kind == "none":
        days = round(rng.uniform(4, 14) * MONTH)
    else:
        return None
    return plan.infusion_date + dt.timedelta(days=days)


def units(value: float) -> Decimal:
    """A daily insulin total as a diary records it, to the half unit."""
    return d(round(value * 2) / 2, 1)


def t1d_insulin_log(plan: Plan, rng: random.Random) -> list[tuple[dt.date, Decimal, str, str]]:
    """(effective date, U/day, source, note): the baseline dose, then the changes after the infusion,
    following the participant's course as ``t1d_values`` does (less insulin in remission, none for
    the insulin-free from about month 6, more again after loss of remission)."""
    weight, course, baseline = plan.weight, plan.course, plan.baseline
    base = baseline["insulin"] * weight
    entries = [(plan.consent_date, units(base), CLINIC, "Usual total daily dose at screening (clinic record)")]
    if plan.infusion_date is None:
        return entries
    start = plan.infusion_date

    def on(days: int) -> dt.date:
        return start + dt.timedelta(days=days)

    early = rng.randint(10, 24)
    entries.append((on(early), units(base * rng.uniform(0.80, 0.92)), DIARY, "Reduced after mild hypoglycaemia"))
    if course.kind == "none":
        entries.append((on(rng.randint(80, 110)), units(base * rng.uniform(0.85, 0.97)), CLINIC, "Adjusted at review"))
    else:
        remission = max(early + 14, round(course.onset * MONTH) + rng.randint(0, 14))
        entries.append(
            (
                on(remission),
                units(weight * rng.uniform(0.10, 0.38)),
                DIARY,
                "Reduced: glucose in target on a much lower dose",
            )
        )
        if baseline["insulin_free"]:
            stop = max(remission + 30, round(6 * MONTH) - rng.randint(0, 21))
            entries.append((on(stop), Decimal("0.0"), DIARY, "Insulin stopped: glucose in target without insulin"))
            if course.kind == "durable" and rng.random() < 0.5:
                # Insulin for a week or three during an infection, then off again.
                ill = stop + rng.randint(60, 200)
                entries.append(
                    (on(ill), units(weight * rng.uniform(0.10, 0.20)), DIARY, "Restarted during a febrile illness")
                )
                entries.append((on(ill + rng.randint(7, 21)), Decimal("0.0"), DIARY, "Stopped again after the illness"))
    if plan.worsening is not None:
        if course.kind == "lost":
            restarted = baseline["insulin_free"]  # off insulin since about month 6; the loss comes later
            note = "Insulin restarted: glucose above target" if restarted else "Increased: glucose above target"
            dose = weight * rng.uniform(0.55, 0.85)
        else:
            dose, note = base * rng.uniform(0.95, 1.10), "Increased: glucose above target"
        entries.append((plan.worsening, units(dose), CLINIC, note))
    entries.sort(key=lambda e: e[0])
    # At most one entry per date (the service refuses a second one); the later decision wins.
    by_date = {when: (when, dose, source, note) for when, dose, source, note in entries}
    return list(by_date.values())


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------


class DemoBuilder:
    def __init__(self, *, seed: int, today: dt.date):
        self.seed = seed
        self.today = today
        self.users: dict[str, User] = {}
        self.sites: dict[str, Site] = {}
        self.documents: dict[int, list[ConsentDocument]] = {}  # study id -> versions by effective date

    # --- users and study build (ORM) ---------------------------------------------------------

    def build_users(self) -> None:
        """Create or reset the demo users and their staff permissions; passwords come later
        (``hash_passwords``), because hashing is slow and can overlap the seeding."""
        for spec in USERS:
            user, _ = User.objects.get_or_create(username=spec.username)
            user.first_name, user.last_name = spec.first_name, spec.last_name
            user.email = f"{spec.username}@demo.tolerance.invalid"
            user.is_active = True
            user.is_superuser = spec.role is None
            user.is_staff = spec.role is None or bool(spec.staff_permissions)
            password_validation.validate_password(spec.password, user)
            user.save()
            wanted = {tuple(p.split(".")) for p in spec.staff_permissions}
            perms = [
                p
                for p in Permission.objects.filter(codename__in=[c for _, c in wanted]).select_related("content_type")
                if (p.content_type.app_label, p.codename) in wanted
            ]
            user.user_permissions.set(perms)
            self.users[spec.username] = user
        demo_features.lock_out()

    @staticmethod
    def hash_passwords() -> dict[str, Future[str]]:
        """Start hashing the demo passwords in threads: PBKDF2 releases the GIL, so this overlaps the
        seeding instead of adding ~2 s to it."""
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="demo-hash")
        futures = {spec.username: pool.submit(make_password, spec.password) for spec in USERS}
        pool.shutdown(wait=False)  # queued hashes still run; save_passwords waits for them
        return futures

    @staticmethod
    def save_passwords(futures: dict[str, Future[str]]) -> None:
        for username, future in futures.items():
            User.objects.filter(username=username).update(password=future.result())

    def build_studies(self) -> list[Study]:
        first_screening = self.today - dt.timedelta(days=FATES[COMPLETED][1][0])
        with audit_context(actor=self.users["data_manager"], reason="demo study build", channel=CHANNEL):
            for code, name, country, zone, _ in SITES:
                self.sites[code] = Site.objects.create(code=code, name=name, country=country, timezone=zone)
            studies = []
            for spec in STUDIES:
                study = Study.objects.create(
                    code=spec.code,
                    title=spec.title,
                    indication=spec.indication,
                    phase=spec.phase,
                    product_name=spec.product,
                    dose_tolerance_pct=Decimal("20"),
                )
                study.sites.set(self.sites.values())
                for number, c in enumerate(spec.cohorts, start=1):
                    DoseCohort.objects.create(
                        study=study,
                        number=number,
                        label=c.label,
                        planned_cells_per_kg=c.per_kg,
                        planned_total_cells=c.total,
                        route=c.route,
                        sentinel_interval_days=14,
                        capacity=c.capacity,
                    )
                VisitDefinition.objects.bulk_create(
                    VisitDefinition(
                        study=study,
                        code=code,
                        name=name,
                        target_day=day,
                        window_before=before,
                        window_after=after,
                        forms_due=forms_due(spec.indication, code),
                    )
                    for code, name, day, before, after in SCHEDULE
                )
                EligibilityCriterion.objects.bulk_create(
                    EligibilityCriterion(study=study, kind=c.kind, number=c.number, text=c.text) for c in spec.criteria
                )
                ConsentDocument.objects.create(
                    study=study,
                    version="1.0",
                    effective_date=first_screening - dt.timedelta(days=60),
                    title="Participant information sheet and consent form",
                )
                # A recent amendment: participants consented to 1.0 and still on study must re-consent.
                ConsentDocument.objects.create(
                    study=study,
                    version="2.0",
                    effective_date=self.today - dt.timedelta(days=45),
                    title="Participant information sheet and consent form (amendment 3: infection risk update)",
                )
                self._memberships(study)
                studies.append(study)
        return studies

    def _memberships(self, study: Study) -> None:
        for spec in USERS:
            if spec.role is None:
                continue
            for site_code in spec.sites:
                StudyMembership.objects.create(
                    user=self.users[spec.username],
                    study=study,
                    site=self.sites[site_code] if site_code else None,
                    role=spec.role,
                    unblinded=spec.unblinded,
                )

    # --- plans ---------------------------------------------------------------------------------

    def plan_study(self, spec: StudySpec) -> list[Plan]:
        counts = {fate: count for fate, (count, _) in FATES.items() if count is not None}
        counts[DIED] = spec.deaths
        counts[FOLLOW_UP] = PARTICIPANTS_PER_STUDY - sum(counts.values())
        plans: list[Plan] = []
        for fate, (_, (earliest, latest)) in FATES.items():
            n = counts[fate]
            for k in range(n):
                # Reproducible demo data, not security: a seeded generator is what we want.
                rng = random.Random(f"{self.seed}:{spec.code}:{fate}:{k}")  # noqa: S311
                # Spread evenly over the fate's range, with a little jitter.
                days_ago = earliest - (earliest - latest) * (k / (n - 1) if n > 1 else 0.5)
                days_ago = min(earliest, max(latest, round(days_ago) + rng.randint(-4, 4)))
                plans.append(Plan(0, k, spec, fate, rng, self.today - dt.timedelta(days=days_ago)))
        plans.sort(key=lambda p: (p.screening_date, p.fate))
        sites = [code for code, *_ in SITES]
        shares = [share for *_, share in SITES]
        for index, plan in enumerate(plans):
            plan.index = index
            rng = plan.rng
            plan.site_code = rng.choices(sites, shares)[0]
            plan.sex = "F" if rng.random() < spec.female_share else "M"
            age = rng.randint(*spec.birth_years)
            plan.birth_year = plan.screening_date.year - age
            plan.weight = rng.uniform(*spec.weight_kg)
            plan.course = self._course(plan)
            plan.baseline = self._baseline(plan)
        return plans

    @staticmethod
    def _course(plan: Plan) -> Course:
        rng = plan.rng
        kind = rng.choices(["durable", "lost", "none"], [0.4, 0.35, 0.25])[0]
        if plan.fate == WITHDRAWN and plan.spec.indication == Indication.MS:
            kind = "none"  # withdrawn for rescue therapy after relapses
        onset = 0.0 if plan.spec.indication == Indication.MS else rng.choice([1.0, 3.0, 3.0, 6.0])
        loss = rng.uniform(max(onset, 3.0) + 4, 18.0) if kind == "lost" else None
        return Course(kind, onset, loss)

    @staticmethod
    def _baseline(plan: Plan) -> dict:
        rng = plan.rng
        indication = plan.spec.indication
        if indication == Indication.MS:
            return {"edss": rng.choice([1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0, 4.5])}
        if indication == Indication.T1D:
            return {
                "hba1c": rng.uniform(7.0, 10.5),
                "insulin": rng.uniform(0.60, 0.90),  # U/kg/day before the infusion
                "peak_c_peptide": rng.uniform(0.35, 0.95),
                "insulin_free": rng.random() < 0.3,  # off insulin from about month 6 if in remission
            }
        return {
            "tjc": rng.randint(8, 20),
            "sjc": rng.randint(5, 14),
            "crp": rng.uniform(8, 45),
            "esr": rng.randint(25, 70),
            "patient": rng.randint(50, 85),
            "evaluator": rng.randint(45, 80),
        }

    # --- execution -----------------------------------------------------------------------------

    def actor(self, plan: Plan):
        return self.users[COORDINATOR_OF_SITE[plan.site_code]]

    def consent_document(self, study: Study, on: dt.date) -> ConsentDocument:
        return [doc for doc in self.documents[study.pk] if doc.effective_date <= on][-1]

    def seed_study(self, study: Study, spec: StudySpec) -> None:
        self.documents[study.pk] = list(study.consent_documents.order_by("effective_date"))
        criteria = list(study.criteria.order_by("kind", "number"))
        plans = self.plan_study(spec)

        # 1. Screening, in screening order: subject numbers follow it.
        for plan in plans:
            plan.participant = services.participant_screen(
                actor=self.actor(plan),
                study=study,
                site=self.sites[plan.site_code],
                sex=plan.sex,
                birth_year=plan.birth_year,
                screening_date=plan.screening_date,
                channel=CHANNEL,
            )

        # 2. Consent and eligibility; screen failures.
        for plan in plans:
            self._screening_steps(plan, criteria)

        # 3. Enrolment, in enrolment order: cohorts fill in it.
        enrolled = [p for p in plans if p.enrol_date is not None]
        for plan in sorted(enrolled, key=lambda p: (p.enrol_date, p.index)):
            plan.participant = services.participant_enrol(
                actor=self.actor(plan), participant=plan.participant, enrolment_date=plan.enrol_date, channel=CHANNEL
            )

        # 4. Infusion, in infusion order: each cohort's sentinel first, the others after its interval.
        infused = [p for p in enrolled if p.fate not in (AWAITING, WITHDRAWN_BEFORE_INFUSION)]
        self._plan_infusion_dates(infused)
        exception = demo_features.release_exception(spec.code, [p for p in infused if p.fate == FOLLOW_UP])
        for plan in sorted(infused, key=lambda p: (p.infusion_date, p.index)):
            self._infuse(plan, outside_release_criteria=plan is exception)

        self._choose_rescues(spec, infused)

        # 5. Follow-up and disposition, participant by participant.
        for plan in enrolled:
            if plan.infusion_date is None:
                for _, record in self._insulin_log(plan, horizon=self.today):
                    record()  # the baseline dose only
            if plan.fate == WITHDRAWN_BEFORE_INFUSION:
                services.disposition_record(
                    actor=self.actor(plan),
                    participant=plan.participant,
                    kind=Disposition.Kind.WITHDRAWN,
                    disposition_date=plan.enrol_date + dt.timedelta(days=plan.rng.randint(30, 45)),
                    reason=WITHDRAWAL_BEFORE_INFUSION,
                    channel=CHANNEL,
                )
            elif plan.infusion_date is not None:
                self._follow_up(plan)

    def _screening_steps(self, plan: Plan, criteria: list[EligibilityCriterion]) -> None:
        rng, actor, participant = plan.rng, self.actor(plan), plan.participant
        study = participant.study
        # One participant in screening is registered but has not yet signed the consent form.
        if plan.fate == SCREENING and plan.rank % 4 == 0:
            return
        plan.consent_date = plan.screening_date
        plan.first_consent = self.consent_document(study, plan.consent_date)
        services.consent_record(
            actor=actor,
            participant=participant,
            document=plan.first_consent,
            consent_date=plan.consent_date,
            channel=CHANNEL,
        )
        answers = {c.pk: c.kind == INC for c in criteria}
        if plan.fate == SCREENING:
            # Still being worked up: none, some or all of the checklist answered.
            answered = [0, len(criteria) // 2, len(criteria)][plan.rank % 4 - 1]
            if answered:
                keep = dict(list(answers.items())[:answered])
                services.eligibility_record(actor=actor, participant=participant, answers=keep, channel=CHANNEL)
            return
        if plan.fate == SCREEN_FAILED:
            if rng.random() < 0.2:
                # Some leave before the checklist is complete.
                partial = dict(list(answers.items())[: rng.randint(1, 4)])
                services.eligibility_record(actor=actor, participant=participant, answers=partial, channel=CHANNEL)
                reason = "Withdrew consent during screening (did not wish to undergo apheresis)"
            else:
                unmet = rng.choice(criteria)
                answers[unmet.pk] = not answers[unmet.pk]
                services.eligibility_record(actor=actor, participant=participant, answers=answers, channel=CHANNEL)
                spec = next(c for c in plan.spec.criteria if (c.kind, c.number) == (unmet.kind, unmet.number))
                label = "Inclusion" if unmet.kind == INC else "Exclusion"
                reason = f"{label} {unmet.number} not met: {spec.failure}"
            services.participant_screen_fail(actor=actor, participant=participant, reason=reason, channel=CHANNEL)
            return
        services.eligibility_record(actor=actor, participant=participant, answers=answers, channel=CHANNEL)
        plan.enrol_date = min(
            self.today - dt.timedelta(days=1), plan.screening_date + dt.timedelta(days=rng.randint(8, 16))
        )

    def _plan_infusion_dates(self, infused: list[Plan]) -> None:
        """Apheresis, manufacture and release take 3-4 weeks after enrolment; within a cohort nobody is
        infused until the sentinel's interval has passed."""
        latest = self.today - dt.timedelta(days=2)
        for plan in infused:
            plan.infusion_date = min(latest, plan.enrol_date + dt.timedelta(days=plan.rng.randint(21, 28)))
        by_cohort: dict[int, list[Plan]] = {}
        for plan in infused:
            by_cohort.setdefault(plan.participant.cohort_id, []).append(plan)
        for members in by_cohort.values():
            members.sort(key=lambda p: (p.infusion_date, p.index))
            sentinel = members[0]
            interval = dt.timedelta(days=sentinel.participant.cohort.sentinel_interval_days)
            for plan in members[1:]:
                plan.infusion_date = min(latest, max(plan.infusion_date, sentinel.infusion_date + interval))
                if plan.infusion_date < sentinel.infusion_date + interval:
                    raise RuntimeError(f"Demo plan error: {plan.participant} cannot be infused before today.")

    def _infuse(self, plan: Plan, *, outside_release_criteria: bool = False) -> None:
        rng, participant = plan.rng, plan.participant
        cohort = participant.cohort
        # A few infusions deliver a dose outside the 20 % tolerance (a low manufacturing yield, or a
        # dose calculated on an outdated weight): services record those as protocol deviations.
        roll = rng.random()
        factor = (
            rng.uniform(0.62, 0.75)
            if roll < 0.07
            else rng.uniform(1.25, 1.35)
            if roll < 0.10
            else rng.uniform(0.92, 1.08)
        )
        planned = (
            cohort.planned_cells_per_kg * Decimal(f"{plan.weight:.1f}")
            if cohort.planned_cells_per_kg
            else cohort.planned_total_cells
        )
        total = Decimal(round(float(planned) * factor))
        intrathecal = cohort.route == DoseCohort.Route.IT
        indication_code = participant.study.code.split("-")[1].upper()
        # Day 0 is the infusion's local date at the site: infuse in the site's working hours.
        local = ZoneInfo(self.sites[plan.site_code].timezone)
        start = dt.datetime.combine(plan.infusion_date, dt.time(rng.randint(8, 13), rng.choice([0, 15, 30, 45])), local)
        minutes = rng.randint(10, 25) if intrathecal else rng.randint(30, 75)
        interrupted = not intrathecal and rng.random() < 0.06
        services.infusion_record(
            actor=self.actor(plan),
            participant=participant,
            apheresis_date=min(plan.infusion_date, plan.enrol_date + dt.timedelta(days=rng.randint(2, 5))),
            manufacturing_lot=f"TRG-{indication_code}-{plan.infusion_date:%y%m}-{plan.index + 1:03d}",
            release_passed=True,
            # Drawn for everyone (in this order), so the other participants' draws stay the same.
            viability_pct=demo_features.viability(
                d(rng.uniform(82, 97.5), 1), participant.study, outside_release_criteria=outside_release_criteria
            ),
            total_viable_cells=total,
            weight_kg=d(plan.weight, 1),
            start_at=start,
            end_at=start + dt.timedelta(minutes=minutes + (15 if interrupted else 0)),
            interrupted=interrupted,
            interruption_reason="Transient flushing and chills at 20 minutes; paused 15 minutes, resumed at half rate"
            if interrupted
            else "",
            premedication="" if intrathecal else "Paracetamol 1 g and cetirizine 10 mg orally 30 minutes before",
            volume_ml=d(rng.uniform(4, 6), 1) if intrathecal else d(rng.choice([100, 150, 250]), 1),
            confirm_outside_criteria=outside_release_criteria,
            channel=CHANNEL,
        )

    # --- follow-up -----------------------------------------------------------------------------

    def _closure_date(self, plan: Plan) -> dt.date | None:
        """When a withdrawn, lost or deceased participant leaves the study (None: still on it)."""
        if plan.fate not in (WITHDRAWN, LOST, DIED):
            return None
        available = (self.today - plan.infusion_date).days - 10
        days = plan.rng.randint(min(75, available), max(min(75, available), min(available, 540)))
        return plan.infusion_date + dt.timedelta(days=days)

    def _follow_up(self, plan: Plan) -> None:
        rng, actor, participant = plan.rng, self.actor(plan), plan.participant
        infused_on, today = plan.infusion_date, self.today
        closure = self._closure_date(plan)
        horizon = min(today, closure) if closure else today
        visits = list(
            Visit.objects.filter(participant=participant, kind=Visit.Kind.SCHEDULED)
            .select_related("definition")
            .order_by("definition__target_day")
        )
        closed_windows = [v for v in visits if v.window_end < today and v.planned_date <= horizon]
        # Some participants in follow-up have their last due visit not yet entered: it shows overdue.
        overdue = closed_windows[-1] if plan.fate == FOLLOW_UP and closed_windows and rng.random() < 0.2 else None
        actions: list[tuple[dt.date, int, Callable[[], None]]] = []
        last_date = infused_on

        for visit in visits:
            definition = visit.definition
            if visit.window_start > horizon or visit.planned_date > horizon or visit is overdue:
                continue  # upcoming, after the participant left, or overdue
            if plan.fate == LOST and definition.target_day >= 91 and visit.planned_date > closure - LOST_CONTACT:
                actions.append((visit.window_end, 1, self._missed(actor, visit, LOST_MISSED_REASON)))
                continue
            if visit.window_end >= today and plan.fate != COMPLETED and rng.random() < 0.5:
                continue  # window open now: due
            if 91 <= definition.target_day < 730 and rng.random() < 0.03:
                actions.append((visit.window_end, 1, self._missed(actor, visit, rng.choice(MISSED_REASONS))))
                continue
            actual = self._visit_date(plan, visit, horizon)
            last_date = max(last_date, actual)
            actions.append((actual, 0, self._visit(plan, visit, actual)))

        for onset, visit_date, reason in self._unscheduled_events(plan, horizon):
            last_date = max(last_date, visit_date)
            actions.append((visit_date, 2, self._unscheduled(plan, onset, visit_date, reason)))

        last_day = min(horizon - dt.timedelta(days=1), infused_on + dt.timedelta(days=participant.study.follow_up_days))
        for when, action in self._rescue_therapies(plan, closure, last_day):
            actions.append((when, 4, action))
        for when, action in self._insulin_log(plan, horizon=last_day):
            actions.append((when, 5, action))

        v2 = self.documents[participant.study_id][-1]
        if plan.fate == FOLLOW_UP and plan.first_consent != v2 and rng.random() < 0.65:
            on = min(today, v2.effective_date + dt.timedelta(days=rng.randint(3, 40)))
            actions.append((on, 3, self._reconsent(plan, v2, on)))

        for _, _, action in sorted(actions, key=lambda a: (a[0], a[1])):
            action()

        if plan.fate == COMPLETED:
            end = max(last_date, infused_on + dt.timedelta(days=participant.study.follow_up_days))
            self._dispose(plan, Disposition.Kind.COMPLETED, end)
        elif plan.fate == WITHDRAWN:
            self._dispose(
                plan, Disposition.Kind.WITHDRAWN, max(closure, last_date), WITHDRAWAL_REASONS[plan.spec.indication]
            )
        elif plan.fate == LOST:
            self._dispose(plan, Disposition.Kind.LOST, max(closure, last_date), LOST_REASON)
        elif plan.fate == DIED:
            death = min(today - dt.timedelta(days=5), max(closure, last_date + dt.timedelta(days=1)))
            self._dispose(
                plan, Disposition.Kind.DEATH, death + dt.timedelta(days=rng.randint(2, 4)), DEATH_REASON, death
            )

    def _visit_date(self, plan: Plan, visit: Visit, horizon: dt.date) -> dt.date:
        """Mostly inside the window; about one later visit in twenty falls outside it."""
        rng, definition = plan.rng, visit.definition
        if definition.target_day >= 91 and rng.random() < 0.05:
            actual = visit.window_end + dt.timedelta(days=rng.randint(2, 9))
        else:
            before, after = definition.window_before, definition.window_after
            actual = visit.planned_date + dt.timedelta(days=rng.randint(-(before // 2), after // 2))
        if plan.fate == COMPLETED:
            return min(actual, self.today - dt.timedelta(days=1))
        return max(visit.window_start, min(actual, horizon, self.today))

    def _missed(self, actor, visit: Visit, reason: str) -> Callable[[], None]:
        return lambda: services.visit_mark_missed(actor=actor, visit=visit, reason=reason, channel=CHANNEL)

    def _visit(self, plan: Plan, visit: Visit, actual: dt.date) -> Callable[[], None]:
        def record() -> None:
            rng, actor = plan.rng, self.actor(plan)
            weight = plan.weight + rng.uniform(-1.5, 1.5)
            done = services.visit_record(
                actor=actor, visit=visit, actual_date=actual, weight_kg=d(weight, 1), channel=CHANNEL
            )
            # Recent visits sometimes still wait for their forms to be entered.
            pending = (self.today - actual).days < 45 and rng.random() < 0.15
            forms = visit.definition.forms_due
            if pending or FormCode.DISEASE_ACTIVITY not in forms:
                return
            months = (actual - plan.infusion_date).days / MONTH
            self._assessments(plan, done, months, forms)

        return record

    def _assessments(self, plan: Plan, visit: Visit, months: float, forms: list[str]) -> None:
        actor, site, indication = self.actor(plan), plan.site_code, plan.spec.indication
        if indication == Indication.MS:
            values = {"edss": ms_edss(plan, months)}
        elif indication == Indication.T1D:
            values = t1d_values(plan, months, site)
        else:
            values = ra_values(plan, months, site)
        services.assessment_record(actor=actor, visit=visit, values=values, channel=CHANNEL)
        if FormCode.MRI in forms:
            loss = plan.course.loss
            first_after_loss = loss is not None and months >= loss and not plan.mri_after_loss
            plan.mri_after_loss = plan.mri_after_loss or first_after_loss
            t2, gd = ms_mri(plan, months, first_after_loss=first_after_loss)
            # The baseline scan is done in the 1-3 weeks before the infusion, after consent.
            scan = (
                visit.actual_date
                if months > 0.5
                else max(plan.consent_date, visit.actual_date - dt.timedelta(days=plan.rng.randint(7, 21)))
            )
            services.mri_record(
                actor=actor,
                visit=visit,
                scan_date=scan,
                new_or_enlarging_t2=t2,
                gd_enhancing=gd,
                reader="Central MRI reading centre",
                channel=CHANNEL,
            )
        if FormCode.MMTT in forms:
            samples, unit = t1d_mmtt(plan, months, site)
            services.mmtt_record(actor=actor, visit=visit, samples=samples, unit=unit, channel=CHANNEL)

    def _unscheduled_events(self, plan: Plan, horizon: dt.date) -> list[tuple[dt.date | None, dt.date, str]]:
        """(relapse onset or None, visit date, reason) of unscheduled visits before ``horizon``."""
        rng, course, start = plan.rng, plan.course, plan.infusion_date
        indication = plan.spec.indication
        events = []
        if indication == Indication.MS:
            onsets = []
            if course.kind == "none":
                first = rng.randint(60, 120)
                onsets = [first, first + rng.randint(150, 250)]
            elif course.loss is not None:
                onsets = [round(course.loss * MONTH) + rng.randint(-10, 10)]
            for days in onsets:
                onset = start + dt.timedelta(days=days)
                events.append(
                    (
                        onset,
                        onset + dt.timedelta(days=rng.randint(2, 6)),
                        "Suspected relapse: new sensory symptoms and gait unsteadiness for 3 days",
                    )
                )
        elif indication == Indication.RA and course.loss is not None:
            flare = start + dt.timedelta(days=round(course.loss * MONTH) + rng.randint(0, 14))
            events.append((None, flare, "Flare: painful swollen hands and wrists for a week"))
        elif indication == Indication.T1D and rng.random() < 0.15:
            when = start + dt.timedelta(days=rng.randint(40, 400))
            events.append((None, when, "Review of recurrent mild hypoglycaemia; insulin dose reduced"))
        return [e for e in events if e[1] <= horizon - dt.timedelta(days=1)]

    def _unscheduled(self, plan: Plan, onset: dt.date | None, visit_date: dt.date, reason: str) -> Callable[[], None]:
        def record() -> None:
            actor, rng = self.actor(plan), plan.rng
            services.visit_add_unscheduled(
                actor=actor, participant=plan.participant, actual_date=visit_date, reason=reason, channel=CHANNEL
            )
            if onset is not None:
                services.relapse_record(
                    actor=actor,
                    participant=plan.participant,
                    onset_date=onset,
                    steroid_treated=rng.random() < 0.7,
                    confirmed_by_examination=rng.random() < 0.85,
                    notes="EDSS examination at the unscheduled visit; MRI requested",
                    channel=CHANNEL,
                )

        return record

    def _choose_rescues(self, spec: StudySpec, infused: list[Plan]) -> None:
        """Who gets worse and when; about one infused participant in ten is given a rescue therapy
        then (the MS participants withdrawn for a new DMT among them)."""
        for plan in infused:
            plan.worsening = worsening_date(plan, side_rng(self.seed, plan, "worsening"))
        withdrawn_for_it = [p for p in infused if p.fate == WITHDRAWN and spec.indication == Indication.MS]
        candidates = [
            p
            for p in infused
            if p.fate in (FOLLOW_UP, COMPLETED)
            and p.worsening is not None
            and p.worsening < self.today - dt.timedelta(days=1)
            and (p.worsening - p.infusion_date).days <= p.participant.study.follow_up_days
        ]
        wanted = max(0, round(RESCUE_SHARE * len(infused)) - len(withdrawn_for_it))
        rng = random.Random(f"{self.seed}:{spec.code}:rescue")  # noqa: S311
        for plan in [*withdrawn_for_it, *rng.sample(candidates, min(wanted, len(candidates)))]:
            plan.rescue = True

    def _rescue_therapies(
        self, plan: Plan, closure: dt.date | None, last_day: dt.date
    ) -> list[tuple[dt.date, Callable[[], None]]]:
        """The rescue therapy of a participant chosen for one: when they get worse, or for the MS
        participants withdrawn for a new DMT, just before their withdrawal."""
        rng, indication = side_rng(self.seed, plan, "rescue"), plan.spec.indication
        if plan.fate == WITHDRAWN and indication == Indication.MS and closure is not None:
            start = max(plan.infusion_date + dt.timedelta(days=30), closure - dt.timedelta(days=rng.randint(7, 21)))
            spec = MS_WITHDRAWAL_RESCUE
        elif plan.rescue:
            spec = rng.choice(RESCUES[indication])
            # T1D: the intensification is the insulin increase of that day in the log.
            start = plan.worsening + dt.timedelta(days=0 if indication == Indication.T1D else rng.randint(0, 10))
        else:
            return []
        if start > last_day:
            return []
        stop = start + dt.timedelta(days=rng.randint(*spec.days) - 1) if spec.days else None
        if stop is not None and stop > last_day:
            stop = None  # still being taken at the last contact

        def record() -> None:
            services.rescue_therapy_record(
                actor=self.actor(plan),
                participant=plan.participant,
                start_date=start,
                stop_date=stop,
                category=spec.category,
                agent=spec.agent,
                reason=spec.reason,
                channel=CHANNEL,
            )

        return [(start, record)]

    def _insulin_log(self, plan: Plan, *, horizon: dt.date) -> list[tuple[dt.date, Callable[[], None]]]:
        """The insulin log of most enrolled T1D participants, up to ``horizon``."""
        if plan.spec.indication != Indication.T1D:
            return []
        rng = side_rng(self.seed, plan, "insulin")
        if rng.random() >= INSULIN_LOG_SHARE:
            return []
        actions = []
        for when, dose, source, note in t1d_insulin_log(plan, rng):
            if when > horizon:
                break

            def record(when=when, dose=dose, source=source, note=note) -> None:
                services.insulin_dose_record(
                    actor=self.actor(plan),
                    participant=plan.participant,
                    effective_date=when,
                    total_daily_units=dose,
                    source=source,
                    note=note,
                    channel=CHANNEL,
                )

            actions.append((when, record))
        return actions

    def _reconsent(self, plan: Plan, document: ConsentDocument, on: dt.date) -> Callable[[], None]:
        return lambda: services.consent_record(
            actor=self.actor(plan), participant=plan.participant, document=document, consent_date=on, channel=CHANNEL
        )

    def _dispose(self, plan: Plan, kind: str, on: dt.date, reason: str = "", death: dt.date | None = None) -> None:
        services.disposition_record(
            actor=self.actor(plan),
            participant=plan.participant,
            kind=kind,
            disposition_date=on,
            reason=reason,
            death_date=death,
            channel=CHANNEL,
        )
