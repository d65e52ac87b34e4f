"""Safety data: adverse events, graded toxicities of special interest, SAE cases and their expedited
reports, clock notifications, DLT definitions and adjudications (docs/domain.md Part A).

Clinical records inherit ``VersionedModel`` (optimistic version, voiding instead of deletion) and are
``@audited``. Reference dictionaries (CTCAE, MedDRA) are versioned, loaded by commands and never
edited in place, so they are not audited row by row. Invariants that PostgreSQL can hold are
declared as constraints here as well as enforced (with field messages) in ``services.py``.

Clinical dates of an AE are SDTM ``--DTC`` strings (``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``,
docs/domain.md §1.4); system events (awareness, receipt, submission) are UTC timestamps.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Least, Left, Length
from django.db.models.lookups import GreaterThanOrEqual

from safety.ae_rules import PartialDate
from safety.clocks import Clock, ClockKind, ClockStatus, clock_status
from safety.rules_data import InputError, get_rules
from trials.audit import audited
from trials.models import Infusion, Participant, Study, VersionedModel


def validate_partial_date(value: str) -> None:
    """An SDTM partial date: YYYY, YYYY-MM or YYYY-MM-DD, and a real calendar date."""
    try:
        PartialDate.parse(value)
    except InputError as error:
        raise ValidationError(error.message, code="partial_date") from None


def validate_time_zone(value: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not a known time zone (e.g. Europe/London).") from None


# ---------------------------------------------------------------------------------------------
# Controlled terminology (CDISC CT, docs/domain.md §1.4; check against the current NCI-EVS release)
# ---------------------------------------------------------------------------------------------


class Outcome(models.TextChoices):
    """CDISC CT "OUT" (C66768); the same list as ``rules_data.AE_CONSISTENCY_V1['outcomes']``."""

    RECOVERED = "RECOVERED/RESOLVED", "Recovered/resolved"
    RECOVERING = "RECOVERING/RESOLVING", "Recovering/resolving"
    NOT_RECOVERED = "NOT RECOVERED/NOT RESOLVED", "Not recovered/not resolved"
    SEQUELAE = "RECOVERED/RESOLVED WITH SEQUELAE", "Recovered/resolved with sequelae"
    FATAL = "FATAL", "Fatal"
    UNKNOWN = "UNKNOWN", "Unknown"


ONGOING_OUTCOMES = (Outcome.NOT_RECOVERED, Outcome.RECOVERING, Outcome.UNKNOWN)


class ActionTaken(models.TextChoices):
    """CDISC CT "ACN": action taken with the study treatment (AEACN)."""

    DOSE_INCREASED = "DOSE INCREASED", "Dose increased"
    DOSE_NOT_CHANGED = "DOSE NOT CHANGED", "Dose not changed"
    DOSE_RATE_REDUCED = "DOSE RATE REDUCED", "Dose rate reduced"
    DOSE_REDUCED = "DOSE REDUCED", "Dose reduced"
    DRUG_INTERRUPTED = "DRUG INTERRUPTED", "Drug interrupted"
    DRUG_WITHDRAWN = "DRUG WITHDRAWN", "Drug withdrawn"
    NOT_APPLICABLE = "NOT APPLICABLE", "Not applicable"
    UNKNOWN = "UNKNOWN", "Unknown"


# Only meaningful for an event that starts while the product is being infused (docs/domain.md §1.4).
DURING_INFUSION_ACTIONS = (ActionTaken.DRUG_INTERRUPTED, ActionTaken.DOSE_RATE_REDUCED)


class AECategory(models.TextChoices):
    """Sponsor categories (AECAT), the events of special interest first (docs/domain.md §3)."""

    INFUSION_REACTION = "INFUSION REACTION", "Infusion reaction"
    CRS = "CRS", "Cytokine release syndrome"
    ICANS = "ICANS", "ICANS"
    INFECTION = "INFECTION", "Infection"
    MALIGNANCY = "MALIGNANCY", "Malignancy"
    DISEASE_FLARE = "DISEASE FLARE", "Disease flare"
    OTHER = "OTHER", "Other"


SERIOUSNESS_CRITERIA = (
    "death",
    "life_threatening",
    "hospitalisation",
    "disability",
    "congenital_anomaly",
    "important_medical_event",
)


# ---------------------------------------------------------------------------------------------
# Dictionaries and per-study safety configuration
# ---------------------------------------------------------------------------------------------


class CTCAETerm(models.Model):
    """One CTCAE term of one CTCAE version with its SOC and grade texts. No MedDRA codes (docs/domain.md §7):
    the open identifier is the NCI Thesaurus C-code. A blank grade text is CTCAE's dash: that grade
    does not exist for the term."""

    version = models.CharField(max_length=10, help_text="CTCAE version, e.g. 5.0")
    term = models.CharField(max_length=200)
    soc = models.CharField("system organ class", max_length=200)
    definition = models.TextField(blank=True)
    nci_code = models.CharField("NCIt code", max_length=12, blank=True)
    grade_1 = models.TextField(blank=True)
    grade_2 = models.TextField(blank=True)
    grade_3 = models.TextField(blank=True)
    grade_4 = models.TextField(blank=True)
    grade_5 = models.TextField(blank=True)

    class Meta:
        ordering = ["version", "soc", "term"]
        verbose_name = "CTCAE term"
        constraints = [
            models.UniqueConstraint(fields=["version", "term"], name="ctcae_term_unique_per_version"),
        ]

    def __str__(self) -> str:
        return f"{self.term} (CTCAE v{self.version})"

    def grade_text(self, grade: int) -> str:
        return getattr(self, f"grade_{grade}", "") if 1 <= grade <= 5 else ""

    @property
    def grades(self) -> list[tuple[int, str]]:
        """(grade, text) for every grade the term has."""
        return [(grade, self.grade_text(grade)) for grade in range(1, 6) if self.grade_text(grade)]


class MedDRARelease(models.Model):
    """A user's own licensed MedDRA ASCII release, loaded by ``manage.py load_meddra``."""

    version = models.CharField(max_length=10)
    language = models.CharField(max_length=30, default="English")
    loaded_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-loaded_at"]
        constraints = [
            models.UniqueConstraint(fields=["version", "language"], name="meddra_release_unique"),
        ]

    def __str__(self) -> str:
        return f"MedDRA {self.version} {self.language}"


class MedDRASOC(models.Model):
    release = models.ForeignKey(MedDRARelease, on_delete=models.CASCADE, related_name="socs")
    code = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    abbrev = models.CharField(max_length=10, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["release", "code"], name="meddra_soc_unique")]

    def __str__(self) -> str:
        return self.name


class MedDRAPT(models.Model):
    release = models.ForeignKey(MedDRARelease, on_delete=models.CASCADE, related_name="pts")
    code = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    primary_soc = models.ForeignKey(MedDRASOC, on_delete=models.CASCADE, related_name="primary_pts")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["release", "code"], name="meddra_pt_unique")]

    def __str__(self) -> str:
        return self.name


class MedDRAHierarchy(models.Model):
    """One PT -> HLT -> HLGT -> SOC path of ``mdhier.asc`` (MedDRA is multi-axial: a PT can sit under
    several SOCs, exactly one of them primary)."""

    release = models.ForeignKey(MedDRARelease, on_delete=models.CASCADE, related_name="paths")
    pt = models.ForeignKey(MedDRAPT, on_delete=models.CASCADE, related_name="paths")
    hlt_code = models.PositiveIntegerField()
    hlt_name = models.CharField(max_length=100)
    hlgt_code = models.PositiveIntegerField()
    hlgt_name = models.CharField(max_length=100)
    soc = models.ForeignKey(MedDRASOC, on_delete=models.CASCADE, related_name="paths")
    is_primary = models.BooleanField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pt", "hlt_code", "hlgt_code", "soc"], name="meddra_path_unique"),
            models.UniqueConstraint(fields=["pt"], condition=Q(is_primary=True), name="meddra_path_one_primary_per_pt"),
        ]


class MedDRALLT(models.Model):
    release = models.ForeignKey(MedDRARelease, on_delete=models.CASCADE, related_name="llts")
    code = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    pt = models.ForeignKey(MedDRAPT, on_delete=models.CASCADE, related_name="llts")
    is_current = models.BooleanField(default=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["release", "code"], name="meddra_llt_unique")]
        indexes = [models.Index(fields=["release", "name"])]

    def __str__(self) -> str:
        return self.name


@audited
class StudySafetyProfile(models.Model):
    """The safety settings of a study: which dictionary and rule versions it runs under (DOMAIN
    design principle: versioned data, pinned per trial) and whom clock alerts go to."""

    class GradeChangePolicy(models.TextChoices):
        MAX_GRADE = "max_grade", "One record carrying the maximum grade"
        NEW_RECORD = "new_record", "A new record per grade change"

    study = models.OneToOneField(Study, on_delete=models.PROTECT, related_name="safety_profile")
    ctcae_version = models.CharField(max_length=10, default="5.0")
    causality_rules = models.CharField(max_length=60, default=get_rules("causality")["version"])
    clock_rules = models.CharField(max_length=60, default=get_rules("clocks")["version"])
    sponsor_time_zone = models.CharField(max_length=60, default="UTC", validators=[validate_time_zone])
    grade_change_policy = models.CharField(
        max_length=12, choices=GradeChangePolicy.choices, default=GradeChangePolicy.MAX_GRADE
    )
    extra_alert_emails = models.TextField(
        blank=True, help_text="Safety desk addresses, one per line, alerted with the medical monitors."
    )

    def __str__(self) -> str:
        return f"Safety settings of {self.study}"


@audited
class ReferenceSafetyInformation(models.Model):
    """A version of the RSI (usually the IB section): expected reaction term -> highest expected grade
    (null: any grade short of death). Expectedness is judged against the version in force at onset."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="rsi_versions")
    version = models.CharField(max_length=30)
    effective_from = models.DateField()
    expected_terms = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["study", "effective_from"]
        verbose_name = "reference safety information"
        constraints = [models.UniqueConstraint(fields=["study", "version"], name="rsi_version_unique")]

    def __str__(self) -> str:
        return f"RSI {self.version} from {self.effective_from:%Y-%m-%d}"


# ---------------------------------------------------------------------------------------------
# Adverse events
# ---------------------------------------------------------------------------------------------

_ANY_CRITERION = (
    Q(death=True)
    | Q(life_threatening=True)
    | Q(hospitalisation=True)
    | Q(disability=True)
    | Q(congenital_anomaly=True)
    | Q(important_medical_event=True)
)


@audited
class AdverseEvent(VersionedModel):
    """One adverse event (SDTM AE / CDASH AE). SDTM variable names in the comments."""

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="adverse_events")
    sequence = models.PositiveIntegerField(help_text="AESEQ: per participant.")
    category = models.CharField(max_length=20, choices=AECategory.choices, default=AECategory.OTHER)  # AECAT
    verbatim_term = models.CharField(max_length=200)  # AETERM
    ctcae_term = models.ForeignKey(CTCAETerm, on_delete=models.PROTECT, related_name="adverse_events")
    ctcae_version = models.CharField(max_length=10)
    meddra_llt = models.ForeignKey(
        MedDRALLT, on_delete=models.PROTECT, null=True, blank=True, related_name="adverse_events"
    )
    meddra_version = models.CharField(max_length=10, blank=True)
    grade = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(5)])  # AETOXGR
    grade_scale = models.CharField(max_length=80, default="CTCAE")
    onset = models.CharField(max_length=10, validators=[validate_partial_date])  # AESTDTC
    end = models.CharField(max_length=10, blank=True, validators=[validate_partial_date])  # AEENDTC
    ongoing = models.BooleanField(default=False)  # AEONGO
    # Seriousness (AESER and the six criteria)
    serious = models.BooleanField(default=False)
    death = models.BooleanField(default=False)  # AESDTH
    life_threatening = models.BooleanField(default=False)  # AESLIFE
    hospitalisation = models.BooleanField(default=False)  # AESHOSP
    disability = models.BooleanField(default=False)  # AESDISAB
    congenital_anomaly = models.BooleanField(default=False)  # AESCONG
    important_medical_event = models.BooleanField(default=False)  # AESMIE
    site_aware_at = models.DateTimeField(
        null=True, blank=True, help_text="When the site learned the event is serious: starts the 24 h clock."
    )
    # Investigator causality on the study's ordinal scale (blank: not yet assessed)
    causality_product = models.CharField(max_length=20, blank=True)  # AEREL
    causality_leukapheresis = models.CharField(max_length=20, blank=True)
    causality_procedures = models.CharField(max_length=20, blank=True)
    causality_rules = models.CharField(max_length=60)
    action_taken = models.CharField(max_length=20, choices=ActionTaken.choices)  # AEACN
    action_other = models.CharField(max_length=200, blank=True)  # AEACNOTH
    outcome = models.CharField(max_length=40, choices=Outcome.choices)  # AEOUT
    treatment_given = models.BooleanField(default=False)  # AECONTRT
    treatment_details = models.TextField(blank=True)
    infusion = models.ForeignKey(
        Infusion, on_delete=models.PROTECT, null=True, blank=True, related_name="adverse_events"
    )
    # Derived (TRTEMFL): onset on or after the first infusion, conservative for partial dates.
    treatment_emergent = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["participant", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "sequence"], name="ae_sequence_unique"),
            models.CheckConstraint(condition=Q(grade__gte=1, grade__lte=5), name="ae_grade_1_to_5"),
            models.CheckConstraint(
                condition=(Q(serious=True) & _ANY_CRITERION) | (Q(serious=False) & ~_ANY_CRITERION),
                name="ae_serious_iff_criterion",
            ),
            # Grade 5 <=> outcome FATAL <=> "results in death" (docs/domain.md §1.4).
            models.CheckConstraint(
                condition=Q(grade=5, outcome=Outcome.FATAL, death=True)
                | (~Q(grade=5) & ~Q(outcome=Outcome.FATAL) & Q(death=False)),
                name="ae_grade5_fatal_death_agree",
            ),
            models.CheckConstraint(
                condition=Q(ongoing=True, end="", outcome__in=ONGOING_OUTCOMES)
                | (Q(ongoing=False) & ~Q(end="") & ~Q(outcome__in=ONGOING_OUTCOMES)),
                name="ae_ongoing_iff_no_end",
            ),
            # End >= onset, compared at the common precision of the two partial dates.
            models.CheckConstraint(
                condition=Q(end="")
                | GreaterThanOrEqual(
                    Left("end", Least(Length("end"), Length("onset"))),
                    Left("onset", Least(Length("end"), Length("onset"))),
                ),
                name="ae_end_not_before_onset",
            ),
            models.CheckConstraint(
                condition=Q(serious=False) | Q(site_aware_at__isnull=False), name="ae_serious_has_awareness"
            ),
            models.CheckConstraint(
                condition=Q(treatment_given=True) | Q(treatment_details=""), name="ae_treatment_details_need_flag"
            ),
        ]
        indexes = [models.Index(fields=["participant", "serious"])]

    def __str__(self) -> str:
        return f"{self.participant} AE {self.sequence}: {self.verbatim_term}"

    @property
    def criteria(self) -> list[str]:
        return [name for name in SERIOUSNESS_CRITERIA if getattr(self, name)]

    @property
    def fatal_or_life_threatening(self) -> bool:
        return self.death or self.life_threatening

    @property
    def is_voided(self) -> bool:
        return self.voided_at is not None


class ToxicityAssessment(VersionedModel):
    """Common part of a computed toxicity grade: the inputs live in the subclass; the platform
    computes the grade and the investigator may override it only with a reason (docs/domain.md §3.2)."""

    adverse_event = models.ForeignKey(AdverseEvent, on_delete=models.PROTECT, related_name="+")
    assessed_at = models.DateTimeField(help_text="The time point of the worst findings.")
    computed_grade = models.PositiveSmallIntegerField(editable=False)
    computed_reason = models.TextField(editable=False)
    scale = models.CharField(max_length=80, editable=False)
    rule_version = models.CharField(max_length=60, editable=False)
    investigator_grade = models.PositiveSmallIntegerField(null=True, blank=True)
    override_reason = models.TextField(blank=True)
    final_grade = models.PositiveSmallIntegerField(editable=False)

    class Meta:
        abstract = True

    @classmethod
    def grade_constraints(cls, prefix: str) -> list[models.CheckConstraint]:
        return [
            models.CheckConstraint(
                condition=Q(computed_grade__lte=5) & Q(final_grade__lte=5), name=f"{prefix}_grades_0_to_5"
            ),
            models.CheckConstraint(
                condition=Q(investigator_grade__isnull=True)
                | Q(investigator_grade=F("computed_grade"))
                | ~Q(override_reason=""),
                name=f"{prefix}_override_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(investigator_grade__isnull=True, final_grade=F("computed_grade"))
                | Q(investigator_grade__isnull=False, final_grade=F("investigator_grade")),
                name=f"{prefix}_final_grade_consistent",
            ),
        ]

    @property
    def overridden(self) -> bool:
        return self.investigator_grade is not None and self.investigator_grade != self.computed_grade


@audited
class CRSAssessment(ToxicityAssessment):
    """ASTCT CRS grading inputs (docs/domain.md §3.1): fever, hypotension with pressors, oxygen device and flow."""

    class OxygenDevice(models.TextChoices):
        NONE = "none", "None (room air)"
        NASAL_CANNULA = "nasal_cannula", "Nasal cannula"
        BLOW_BY = "blow_by", "Blow-by"
        FACEMASK = "facemask", "Facemask"
        NON_REBREATHER = "non_rebreather", "Non-rebreather mask"
        VENTURI = "venturi", "Venturi mask"
        CPAP = "cpap", "CPAP"
        BIPAP = "bipap", "BiPAP"
        MECHANICAL_VENTILATION = "mechanical_ventilation", "Intubation / mechanical ventilation"

    adverse_event = models.ForeignKey(AdverseEvent, on_delete=models.PROTECT, related_name="crs_assessments")
    max_temperature_c = models.DecimalField(max_digits=3, decimal_places=1, null=True, blank=True)
    fever_masked = models.BooleanField(
        default=False, help_text="Fever suppressed by antipyretic or anti-cytokine therapy."
    )
    hypotension = models.BooleanField(default=False)
    vasopressors = models.PositiveSmallIntegerField(default=0, help_text="Vasopressors other than vasopressin.")
    vasopressin = models.BooleanField(default=False)
    oxygen_device = models.CharField(max_length=30, choices=OxygenDevice.choices, default=OxygenDevice.NONE)
    oxygen_flow_l_min = models.DecimalField(max_digits=4, decimal_places=1, null=True, blank=True)
    death_due_to_crs = models.BooleanField(default=False)
    tocilizumab_given = models.BooleanField(default=False)
    corticosteroids_given = models.BooleanField(default=False)

    class Meta:
        ordering = ["adverse_event", "assessed_at"]
        verbose_name = "CRS assessment"
        constraints = ToxicityAssessment.grade_constraints("crs")


@audited
class ICANSAssessment(ToxicityAssessment):
    """ASTCT ICANS grading inputs (docs/domain.md §3.2): ICE items (or CAPD for children <= 12), consciousness,
    seizure, motor findings and raised intracranial pressure."""

    class Consciousness(models.TextChoices):
        ALERT = "alert", "Alert"
        AWAKENS_SPONTANEOUSLY = "awakens_spontaneously", "Awakens spontaneously"
        AWAKENS_TO_VOICE = "awakens_to_voice", "Awakens to voice"
        AWAKENS_TO_TACTILE = "awakens_to_tactile", "Awakens only to tactile stimulus"
        UNAROUSABLE = "unarousable", "Unarousable, or stupor/coma"

    class Seizure(models.TextChoices):
        NONE = "none", "None"
        RAPIDLY_RESOLVING = "rapidly_resolving", "Clinical seizure resolving rapidly, or non-convulsive on EEG"
        LIFE_THREATENING = "life_threatening", "Prolonged (> 5 min) or repetitive without return to baseline"

    class Motor(models.TextChoices):
        NONE = "none", "None"
        DEEP_FOCAL_WEAKNESS = "deep_focal_weakness", "Deep focal motor weakness (hemiparesis, paraparesis)"

    class RaisedICP(models.TextChoices):
        NONE = "none", "None"
        FOCAL_OEDEMA = "focal_oedema", "Focal/local oedema on imaging"
        DIFFUSE_OEDEMA = "diffuse_oedema", "Diffuse oedema, posturing, CN VI palsy, papilloedema or Cushing's triad"

    adverse_event = models.ForeignKey(AdverseEvent, on_delete=models.PROTECT, related_name="icans_assessments")
    age_years = models.PositiveSmallIntegerField()
    developmental_delay = models.BooleanField(default=False)
    ice_orientation = models.PositiveSmallIntegerField(null=True, blank=True)
    ice_naming = models.PositiveSmallIntegerField(null=True, blank=True)
    ice_commands = models.PositiveSmallIntegerField(null=True, blank=True)
    ice_writing = models.PositiveSmallIntegerField(null=True, blank=True)
    ice_attention = models.PositiveSmallIntegerField(null=True, blank=True)
    ice_score = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    capd_score = models.PositiveSmallIntegerField(null=True, blank=True)
    consciousness = models.CharField(max_length=30, choices=Consciousness.choices, default=Consciousness.ALERT)
    seizure = models.CharField(max_length=30, choices=Seizure.choices, default=Seizure.NONE)
    motor = models.CharField(max_length=30, choices=Motor.choices, default=Motor.NONE)
    raised_icp = models.CharField(max_length=30, choices=RaisedICP.choices, default=RaisedICP.NONE)
    death_due_to_icans = models.BooleanField(default=False)

    class Meta:
        ordering = ["adverse_event", "assessed_at"]
        verbose_name = "ICANS assessment"
        constraints = [
            *ToxicityAssessment.grade_constraints("icans"),
            models.CheckConstraint(condition=Q(ice_score__lte=10), name="icans_ice_0_to_10"),
        ]


# ---------------------------------------------------------------------------------------------
# Serious adverse events and expedited reporting (docs/domain.md §2.1-2.2)
# ---------------------------------------------------------------------------------------------


@audited
class SAECase(VersionedModel):
    """The SAE case of one serious AE: site awareness (24 h clock), sponsor receipt (Day 0 of the
    regulatory clock), and the medical monitor's sponsor assessment kept beside the investigator's
    causality on the AE (the sponsor never overwrites or downgrades it: EU CTR Annex III §2.1)."""

    adverse_event = models.OneToOneField(AdverseEvent, on_delete=models.PROTECT, related_name="sae_case")
    case_number = models.CharField(max_length=40, unique=True, help_text="Worldwide unique case ID (E2B C.1.8.1).")
    site_aware_at = models.DateTimeField()
    sponsor_received_at = models.DateTimeField(null=True, blank=True)
    # Sponsor assessment (medical monitor)
    sponsor_causality = models.CharField(max_length=20, blank=True)
    causality_rationale = models.TextField(blank=True)
    expected = models.BooleanField(null=True, blank=True)
    rsi_expected = models.BooleanField(null=True, blank=True, editable=False)
    rsi_versions = models.CharField(max_length=200, blank=True, editable=False)
    expectedness_rationale = models.TextField(blank=True)
    assessed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    assessed_at = models.DateTimeField(null=True, blank=True)
    is_susar = models.BooleanField(null=True, blank=True, editable=False)
    susar_reason = models.CharField(max_length=200, blank=True, editable=False)

    class Meta:
        ordering = ["-site_aware_at"]
        verbose_name = "SAE case"
        constraints = [
            models.CheckConstraint(
                condition=Q(sponsor_received_at__isnull=True) | Q(sponsor_received_at__gte=F("site_aware_at")),
                name="sae_received_after_awareness",
            ),
            models.CheckConstraint(
                condition=Q(assessed_at__isnull=True) | Q(sponsor_received_at__isnull=False),
                name="sae_assessed_after_receipt",
            ),
        ]

    def __str__(self) -> str:
        return self.case_number


@audited
class SAECaseVersion(models.Model):
    """One transmission of the case to the sponsor: the initial report (number 0) and follow-ups
    (1, 2, ...), each linked to the one before (a chain) and holding a snapshot of the AE as sent."""

    case = models.ForeignKey(SAECase, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveSmallIntegerField()
    previous = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="next_version"
    )
    received_at = models.DateTimeField()
    reported_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    narrative = models.TextField()
    snapshot = models.JSONField()
    fatal_or_life_threatening = models.BooleanField()

    class Meta:
        ordering = ["case", "number"]
        constraints = [
            models.UniqueConstraint(fields=["case", "number"], name="sae_version_number_unique"),
            models.CheckConstraint(
                condition=Q(number=0, previous__isnull=True) | Q(number__gt=0, previous__isnull=False),
                name="sae_version_chain",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.case} {'initial' if self.number == 0 else f'follow-up {self.number}'}"

    @property
    def label(self) -> str:
        return "Initial report" if self.number == 0 else f"Follow-up {self.number}"


class ReportKind(models.TextChoices):
    SITE_24H = "site_24h", "Site to sponsor (24 h)"
    SEVEN_DAY = "seven_day", "7-day SUSAR report"
    FIFTEEN_DAY = "fifteen_day", "15-day SUSAR report"
    UPGRADE_SEVEN_DAY = "upgrade_seven_day", "7-day report (upgraded to fatal/life-threatening)"
    FOLLOW_UP = "follow_up", "15-day follow-up report"


# The kinds a case has at most once; follow-ups are once per SAE case version.
SINGLE_REPORT_KINDS = (ReportKind.SITE_24H, ReportKind.SEVEN_DAY, ReportKind.FIFTEEN_DAY, ReportKind.UPGRADE_SEVEN_DAY)
REGULATORY_REPORT_KINDS = (
    ReportKind.SEVEN_DAY,
    ReportKind.FIFTEEN_DAY,
    ReportKind.UPGRADE_SEVEN_DAY,
    ReportKind.FOLLOW_UP,
)


@audited
class ExpeditedReport(VersionedModel):
    """A report that is due, with its clock (``safety.clocks``) frozen at creation: kind, start,
    Day 0 and due date in the sponsor's time zone, ``due_at`` the last on-time instant (UTC)."""

    # The sponsor's regulatory submissions, not site data: they never invalidate the PI's signature.
    casebook_content = False

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUBMITTED = "submitted", "Submitted"
        CANCELLED = "cancelled", "No longer required"

    case = models.ForeignKey(SAECase, on_delete=models.PROTECT, related_name="reports")
    kind = models.CharField(max_length=20, choices=ReportKind.choices)
    recipient = models.CharField(max_length=100)
    case_version = models.ForeignKey(
        SAECaseVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="reports"
    )
    started_at = models.DateTimeField()
    day0 = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    due_at = models.DateTimeField()
    time_zone = models.CharField(max_length=60, default="UTC")
    rule_version = models.CharField(max_length=60)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    submitted_at = models.DateTimeField(null=True, blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    days_late = models.PositiveIntegerField(null=True, blank=True)
    acknowledgement = models.CharField(max_length=100, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["due_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["case", "kind"], condition=Q(kind__in=SINGLE_REPORT_KINDS), name="report_once_per_case_kind"
            ),
            models.UniqueConstraint(
                fields=["case", "case_version"],
                condition=Q(kind=ReportKind.FOLLOW_UP),
                name="follow_up_report_once_per_version",
            ),
            models.CheckConstraint(
                condition=Q(status="submitted", submitted_at__isnull=False, days_late__isnull=False)
                | (~Q(status="submitted") & Q(submitted_at__isnull=True, days_late__isnull=True)),
                name="report_submitted_has_time",
            ),
            models.CheckConstraint(condition=Q(due_at__gte=F("started_at")), name="report_due_after_start"),
            models.CheckConstraint(
                condition=Q(day0__isnull=True, due_date__isnull=True) | Q(due_date__gte=F("day0")),
                name="report_due_date_after_day0",
            ),
        ]
        indexes = [models.Index(fields=["status", "due_at"])]

    def __str__(self) -> str:
        return f"{self.case} {self.get_kind_display()} due {self.due_at:%Y-%m-%d %H:%M} UTC"

    @property
    def is_regulatory(self) -> bool:
        return self.kind in REGULATORY_REPORT_KINDS

    @property
    def clock(self) -> Clock:
        """The ``safety.clocks`` clock this report was created with."""
        from zoneinfo import ZoneInfo

        return Clock(
            kind=_CLOCK_KINDS[self.kind],
            started_at=self.started_at,
            day0=self.day0,
            due_date=self.due_date,
            due_at=self.due_at,
            tz=ZoneInfo(self.time_zone),
            calendar_days=self.day0 is not None,
            rule_version=self.rule_version,
        )

    def status_at(self, now) -> ClockStatus:
        """Not due, due soon, overdue, or submitted on time / late, under the rule version it was made with."""
        return clock_status(
            self.clock, now=now, submitted_at=self.submitted_at, rules=get_rules("clocks", self.rule_version)
        )


_CLOCK_KINDS = {
    ReportKind.SITE_24H: ClockKind.SITE_TO_SPONSOR,
    ReportKind.SEVEN_DAY: ClockKind.SEVEN_DAY,
    ReportKind.FIFTEEN_DAY: ClockKind.FIFTEEN_DAY,
    ReportKind.UPGRADE_SEVEN_DAY: ClockKind.UPGRADE_SEVEN_DAY,
    ReportKind.FOLLOW_UP: ClockKind.FOLLOW_UP,
}


class Notification(models.Model):
    """A clock alert: at most one per report and threshold, guaranteed by the unique constraint (so a
    second or concurrent monitor run sends nothing twice). Written in the same transaction as the
    monitor's decision and sent after commit; ``sent_at`` is claimed by compare-and-set before the
    email goes out, so unsent rows (a crash between commit and send) are retried by the next run."""

    class Threshold(models.TextChoices):
        DUE_SOON = "due_soon", "Due soon"
        OVERDUE = "overdue", "Overdue"

    report = models.ForeignKey(ExpeditedReport, on_delete=models.PROTECT, related_name="notifications")
    threshold = models.CharField(max_length=10, choices=Threshold.choices)
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    recipients = models.TextField(blank=True)
    subject = models.CharField(max_length=300)
    body = models.TextField()
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["report", "threshold"], name="notification_once_per_threshold"),
        ]

    def __str__(self) -> str:
        return self.subject


# ---------------------------------------------------------------------------------------------
# Dose-limiting toxicity (docs/domain.md §3.6-3.8)
# ---------------------------------------------------------------------------------------------


@audited
class DLTDefinition(models.Model):
    """The protocol's DLT definition and stopping rule, as versioned configuration: a change is a new
    ``number``, never an edit, so every evaluation can say which definition it used."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="dlt_definitions")
    number = models.PositiveSmallIntegerField()
    effective_from = models.DateField()
    config = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()

    class Meta:
        ordering = ["study", "number"]
        verbose_name = "DLT definition"
        constraints = [models.UniqueConstraint(fields=["study", "number"], name="dlt_definition_number_unique")]

    def __str__(self) -> str:
        return f"{self.study} DLT definition v{self.number}"


@audited
class DLTAdjudication(VersionedModel):
    """The safety review committee's decision on one participant: DLT-evaluable or not, DLT or not,
    and which event. Signed by re-entering the password (21 CFR 11.200); the signer's printed name and
    UTC time stay with the record."""

    # The committee's judgement, not site data: adjudicating never invalidates the PI's signature.
    casebook_content = False

    participant = models.OneToOneField(Participant, on_delete=models.PROTECT, related_name="dlt_adjudication")
    definition = models.ForeignKey(DLTDefinition, on_delete=models.PROTECT, related_name="adjudications")
    evaluable = models.BooleanField()
    is_dlt = models.BooleanField()
    adverse_event = models.ForeignKey(
        AdverseEvent, on_delete=models.PROTECT, null=True, blank=True, related_name="dlt_adjudications"
    )
    rationale = models.TextField()
    signed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signer_name = models.CharField(max_length=300)
    signed_at = models.DateTimeField()

    class Meta:
        verbose_name = "DLT adjudication"
        constraints = [
            models.CheckConstraint(condition=Q(is_dlt=False) | Q(evaluable=True), name="dlt_is_evaluable"),
            models.CheckConstraint(
                condition=Q(is_dlt=False) | Q(adverse_event__isnull=False), name="dlt_names_its_event"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.participant}: {'DLT' if self.is_dlt else 'no DLT'}"
