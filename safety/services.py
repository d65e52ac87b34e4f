"""Business rules and writes for safety data (docs/domain.md Part A). Forms, the API and Celery tasks call
these functions; nothing else writes safety rows.

As in ``trials.services``: each public function owns its transaction (``atomic(durable=True)``),
checks every rule before writing and raises ``RuleViolation({field: message})`` so that a refused
call saves nothing, and writes inside ``audit_context`` (edits carry a reason and the version the
form was loaded with). The rules themselves come from the pure engines (``grading``, ``ae_rules``,
``clocks``, ``escalation``, ``dlt``) and their versioned rule data; this module maps rows onto them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.db.models import Max, Model
from django.utils import timezone

from safety import grading
from safety.ae_rules import PartialDate, causality_is_related
from safety.clocks import (
    ClockState,
    RSIVersion,
    assess_expectedness,
    determine_susar,
    follow_up_clock,
    lateness_days,
    site_report_clock,
    susar_report_clock,
    upgrade_clock,
)
from safety.dlt import validate_dlt_config
from safety.models import (
    SERIOUSNESS_CRITERIA,
    AdverseEvent,
    AECategory,
    CRSAssessment,
    CTCAETerm,
    DLTAdjudication,
    DLTDefinition,
    ExpeditedReport,
    ICANSAssessment,
    Notification,
    Outcome,
    ReferenceSafetyInformation,
    ReportKind,
    SAECase,
    SAECaseVersion,
)
from safety.problems import (
    Problems,
    ae_prepare,
    ae_problems,
    ae_rule_problems,
    normalise_causality,
    safety_profile,
)
from safety.rules_data import InputError, get_rules
from trials.audit import audit_context
from trials.errors import ConflictError, RuleViolation
from trials.guards import check_password, ensure_writable, require_role, save_validated
from trials.models import DATA_ENTRY_ROLES, Participant, Role, Study, StudyMembership

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _reason(reason: str, problems: Problems) -> str:
    """The reason for change of an edit, cleaned; a missing one is recorded as a problem."""
    return problems.text(
        "reason",
        reason,
        label="The reason for change",
        required="A reason for change is required to edit a saved record.",
    )


def _lock_participant(participant: Participant) -> Participant:
    return Participant.objects.select_for_update(of=("self",)).select_related("study", "site").get(pk=participant.pk)


def _require_data_entry(actor, participant: Participant, action: str) -> None:
    require_role(actor, study=participant.study, roles=set(DATA_ENTRY_ROLES), site=participant.site, action=action)


def _require_medical_monitor(actor, study: Study, action: str) -> None:
    require_role(actor, study=study, roles={Role.MEDICAL_MONITOR}, action=action)


def _check_version(current: Model, expected_version: int | None) -> None:
    if expected_version is not None and current.version != expected_version:
        raise ConflictError(
            "This record was changed by someone else since you opened it "
            f"(version {current.version}, yours {expected_version}). Reload it and enter your change again."
        )


def _not_future_time(field: str, value: dt.datetime | None, label: str, now: dt.datetime, problems: Problems) -> bool:
    """Record a naive or future time; True when the time is usable."""
    if value is None:
        return False
    if value.tzinfo is None or value.utcoffset() is None:
        problems.add(field, f"{label} must carry a time zone.")
        return False
    if value > now + dt.timedelta(minutes=5):
        problems.add(field, f"{label} is in the future.")
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Adverse events (docs/domain.md §1.1-1.4)
# ---------------------------------------------------------------------------------------------

# Fields a coordinator enters; everything else on the AE is derived or system-set.
AE_FIELDS = (
    "category",
    "verbatim_term",
    "ctcae_term",
    "grade",
    "onset",
    "end",
    "ongoing",
    "serious",
    *SERIOUSNESS_CRITERIA,
    "site_aware_at",
    "causality_product",
    "causality_leukapheresis",
    "causality_procedures",
    "action_taken",
    "action_other",
    "outcome",
    "treatment_given",
    "treatment_details",
)


@transaction.atomic(durable=True)
def adverse_event_record(
    *,
    actor,
    participant: Participant,
    verbatim_term: str,
    ctcae_term: CTCAETerm | None,
    grade: int,
    onset: str,
    outcome: str,
    action_taken: str,
    end: str = "",
    ongoing: bool = False,
    category: str = AECategory.OTHER,
    serious: bool = False,
    death: bool = False,
    life_threatening: bool = False,
    hospitalisation: bool = False,
    disability: bool = False,
    congenital_anomaly: bool = False,
    important_medical_event: bool = False,
    site_aware_at: dt.datetime | None = None,
    causality_product: str = "",
    causality_leukapheresis: str = "",
    causality_procedures: str = "",
    action_other: str = "",
    treatment_given: bool = False,
    treatment_details: str = "",
    channel: str = "web",
) -> AdverseEvent:
    """Record an AE; a serious one opens its SAE case and the site's 24 h clock at once.

    AEs are collected from consent onwards, also after disposition (safety follow-up).
    """
    participant = _lock_participant(participant)
    ensure_writable(participant)
    _require_data_entry(actor, participant, "record adverse events")
    profile = safety_profile(participant.study)
    ae = AdverseEvent(
        participant=participant,
        category=category,
        verbatim_term=verbatim_term,
        ctcae_term=ctcae_term,
        grade=grade,
        onset=onset,
        end=end,
        ongoing=ongoing,
        serious=serious,
        death=death,
        life_threatening=life_threatening,
        hospitalisation=hospitalisation,
        disability=disability,
        congenital_anomaly=congenital_anomaly,
        important_medical_event=important_medical_event,
        site_aware_at=site_aware_at,
        causality_product=causality_product,
        causality_leukapheresis=causality_leukapheresis,
        causality_procedures=causality_procedures,
        action_taken=action_taken,
        action_other=action_other,
        outcome=outcome,
        treatment_given=treatment_given,
        treatment_details=treatment_details,
    )
    ae_prepare(ae, participant, profile)
    last = AdverseEvent.objects.filter(participant=participant).aggregate(n=Max("sequence"))["n"] or 0
    ae.sequence = last + 1
    with audit_context(actor=actor, channel=channel):
        save_validated(ae)
        if ae.serious:
            _sae_open(ae)
    return ae


@transaction.atomic(durable=True)
def adverse_event_update(
    *,
    actor,
    adverse_event: AdverseEvent,
    changes: Mapping[str, Any],
    reason: str,
    expected_version: int | None,
    channel: str = "web",
) -> AdverseEvent:
    """Correct or update an AE (reason for change required, stale versions refused). Marking it
    serious opens the SAE case; a case once opened keeps the AE serious (the medical monitor, not the
    site, closes a case)."""
    unknown = sorted(set(changes) - set(AE_FIELDS))
    if unknown:
        raise RuleViolation({"__all__": f"These fields cannot be changed here: {', '.join(unknown)}."})
    participant = _lock_participant(Participant(pk=adverse_event.participant_id))
    ensure_writable(participant)
    _require_data_entry(actor, participant, "change adverse events")
    current = AdverseEvent.objects.select_for_update().select_related("ctcae_term").get(pk=adverse_event.pk)
    if current.voided_at is not None:
        raise RuleViolation("This adverse event is voided; it cannot be changed.")
    _check_version(current, expected_version)
    problems = Problems()
    reason = _reason(reason, problems)
    was_serious = current.serious
    graded_by = _toxicity_assessments(current)
    if "grade" in changes and graded_by and changes["grade"] != current.grade:
        problems.add(
            "grade", f"This AE is graded from its {graded_by[0].scale} assessments; record a new assessment instead."
        )
    for name, value in changes.items():
        setattr(current, name, value)
    problems.merge(ae_problems(current, participant, safety_profile(participant.study)).as_dict())
    if was_serious and not current.serious and SAECase.objects.filter(adverse_event=current).exists():
        problems.add(
            "serious", "This AE has an SAE case; its seriousness cannot be removed here. Ask the medical monitor."
        )
    problems.raise_if_any()
    current.version += 1
    with audit_context(actor=actor, reason=reason, channel=channel):
        save_validated(current)
        if current.serious and not was_serious:
            _sae_open(current)
    return current


def _toxicity_assessments(ae: AdverseEvent) -> list:
    return [
        *CRSAssessment.objects.filter(adverse_event=ae, voided_at=None),
        *ICANSAssessment.objects.filter(adverse_event=ae, voided_at=None),
    ]


# ---------------------------------------------------------------------------------------------
# CRS and ICANS with computed grades (docs/domain.md §3.1-3.2)
# ---------------------------------------------------------------------------------------------

_GRADED_CATEGORY = {CRSAssessment: AECategory.CRS, ICANSAssessment: AECategory.ICANS}


def _assessment_context(actor, adverse_event: AdverseEvent, model, assessed_at: dt.datetime, problems: Problems):
    participant = _lock_participant(Participant(pk=adverse_event.participant_id))
    ensure_writable(participant)
    _require_data_entry(actor, participant, "grade adverse events")
    ae = AdverseEvent.objects.select_for_update().select_related("ctcae_term").get(pk=adverse_event.pk)
    if ae.voided_at is not None:
        raise RuleViolation("This adverse event is voided.")
    category = _GRADED_CATEGORY[model]
    if ae.category != category:
        raise RuleViolation(
            f"Only an AE of category {category.label} is graded here (this one is {ae.get_category_display()})."
        )
    if assessed_at is None:
        problems.add("assessed_at", "Give the time of the worst findings.")
    elif _not_future_time("assessed_at", assessed_at, "The assessment time", timezone.now(), problems):
        onset = PartialDate.parse(ae.onset)
        if assessed_at.astimezone(dt.UTC).date() < onset.earliest() - dt.timedelta(days=1):
            problems.add("assessed_at", f"The assessment cannot precede the onset ({onset}).")
    return participant, ae


def _final_grade(
    computed: grading.GradeResult | None, investigator_grade: int | None, override_reason: str, problems: Problems
) -> grading.FinalGrade | None:
    if computed is None:
        return None
    final = None
    with problems.collect():
        final = grading.apply_investigator_grade(
            computed, investigator_grade=investigator_grade, reason=override_reason
        )
    if final is None:
        return None
    if final.grade == 0:
        problems.add(
            "__all__",
            f"The computed {computed.scale} grade is 0 ({computed.reason}). An AE needs grade 1 or more: "
            "correct the findings, record the event under another term, or override the grade with a reason.",
        )
        return None
    return final


def _regrade(
    ae: AdverseEvent, participant: Participant, final_grade: int, scale: str, problems: Problems
) -> int | None:
    """Give the AE the maximum final grade of its assessments, the new one included (docs/domain.md
    §1.4, max-grade policy). Returns the old grade when it changes; a grade that would make the AE
    itself inconsistent is a problem."""
    grade = max([a.final_grade for a in _toxicity_assessments(ae)] + [final_grade])
    if grade == ae.grade and ae.grade_scale == scale:
        return None
    old = ae.grade
    ae.grade, ae.grade_scale = grade, scale
    inconsistent = ae_rule_problems(ae, participant, safety_profile(participant.study)).as_dict()
    if inconsistent:
        details = " ".join(message for messages in inconsistent.values() for message in messages)
        problems.add(
            "__all__",
            f"With grade {grade} the adverse event itself would be inconsistent: {details} Update the AE first.",
        )
    return old


def _save_assessment(actor, assessment, ae: AdverseEvent, old_grade: int | None, channel: str) -> None:
    with audit_context(actor=actor, channel=channel):
        save_validated(assessment)
    if old_grade is not None:
        ae.version += 1
        reason = f"grade {old_grade} -> {ae.grade} computed by {assessment.scale} ({assessment.rule_version})"
        with audit_context(actor=actor, reason=reason, channel=channel):
            save_validated(ae)


_CRS_FIELDS = {"vasopressors_excluding_vasopressin": "vasopressors"}
CRS_FINDINGS = (  # the structured inputs of the ASTCT CRS grade, as the form and the service name them
    "max_temperature_c",
    "fever_masked",
    "hypotension",
    "vasopressors",
    "vasopressin",
    "oxygen_device",
    "oxygen_flow_l_min",
    "death_due_to_crs",
)


def _crs_grade(problems: Problems, **findings) -> grading.GradeResult | None:
    """The ASTCT CRS grade, or None with every bad finding recorded (each domain is checked on its own)."""
    rules = get_rules("crs")
    flow, temperature = findings["oxygen_flow_l_min"], findings["max_temperature_c"]
    oxygen = pressure = None
    with problems.collect(_CRS_FIELDS):
        oxygen = grading.classify_oxygen(
            findings["oxygen_device"], float(flow) if flow is not None else None, rules=rules
        )
    with problems.collect(_CRS_FIELDS):
        pressure = grading.classify_hypotension(
            hypotension=findings["hypotension"],
            vasopressors_excluding_vasopressin=findings["vasopressors"],
            vasopressin=findings["vasopressin"],
        )
    with problems.collect(_CRS_FIELDS):
        # Graded even when a domain above failed, so a bad temperature is reported in the same answer.
        result = grading.grade_crs(
            grading.CRSInputs(
                max_temperature_c=float(temperature) if temperature is not None else None,
                fever_masked=findings["fever_masked"],
                hypotension=pressure or grading.Hypotension.NONE,
                oxygen=oxygen or grading.OxygenSupport.NONE,
                death_due_to_crs=findings["death_due_to_crs"],
            ),
            rules=rules,
        )
        return result if oxygen is not None and pressure is not None else None
    return None


def crs_compute(
    *,
    max_temperature_c: Decimal | None,
    fever_masked: bool,
    hypotension: bool,
    vasopressors: int,
    vasopressin: bool,
    oxygen_device: str,
    oxygen_flow_l_min: Decimal | None,
    death_due_to_crs: bool,
) -> grading.GradeResult:
    """The ASTCT CRS grade of the findings (no write; the form previews it). ``RuleViolation`` on the
    form fields of every bad finding."""
    findings = dict(locals())
    problems = Problems()
    result = _crs_grade(problems, **findings)
    problems.raise_if_any()
    assert result is not None
    return result


@transaction.atomic(durable=True)
def crs_assessment_record(
    *,
    actor,
    adverse_event: AdverseEvent,
    assessed_at: dt.datetime,
    max_temperature_c: Decimal | None,
    fever_masked: bool = False,
    hypotension: bool = False,
    vasopressors: int = 0,
    vasopressin: bool = False,
    oxygen_device: str = CRSAssessment.OxygenDevice.NONE,
    oxygen_flow_l_min: Decimal | None = None,
    death_due_to_crs: bool = False,
    tocilizumab_given: bool = False,
    corticosteroids_given: bool = False,
    investigator_grade: int | None = None,
    override_reason: str = "",
    channel: str = "web",
) -> CRSAssessment:
    """Grade a CRS by ASTCT from its findings; the AE takes the worst final grade of its assessments."""
    values = locals()
    findings = {name: values[name] for name in CRS_FINDINGS}
    problems = Problems()
    participant, ae = _assessment_context(actor, adverse_event, CRSAssessment, assessed_at, problems)
    override_reason = problems.text("override_reason", override_reason, label="The reason for the override")
    computed = _crs_grade(problems, **findings)
    final = _final_grade(computed, investigator_grade, override_reason, problems)
    old_grade = _regrade(ae, participant, final.grade, computed.scale, problems) if final and computed else None
    problems.raise_if_any()
    assert computed is not None
    assert final is not None
    assessment = CRSAssessment(
        adverse_event=ae,
        assessed_at=assessed_at,
        **findings,
        tocilizumab_given=tocilizumab_given,
        corticosteroids_given=corticosteroids_given,
        computed_grade=computed.grade,
        computed_reason=computed.reason,
        scale=computed.scale,
        rule_version=computed.rule_version,
        investigator_grade=investigator_grade,
        override_reason=override_reason,
        final_grade=final.grade,
    )
    _save_assessment(actor, assessment, ae, old_grade, channel)
    return assessment


_ICE_ITEMS = ("orientation", "naming", "commands", "writing", "attention")


def _ice_total(items: Mapping[str, int | None], problems: Problems) -> tuple[bool, int | None]:
    """(usable, ICE score): None when no item is filled in; every partly filled item is a problem."""
    filled = {name: value for name, value in items.items() if value is not None}
    if not filled:
        return True, None
    missing = [name for name in _ICE_ITEMS if name not in filled]
    for name in missing:
        problems.add(f"ice_{name}", "Score every ICE item, or none.")
    if missing:
        return False, None
    with problems.collect({n: f"ice_{n}" for n in filled}):
        return True, grading.ice_score(**filled)
    return False, None


def ice_total(items: Mapping[str, int | None]) -> int | None:
    """The ICE score from its five items; None when no item is filled in (refused if only some are)."""
    problems = Problems()
    _, total = _ice_total(items, problems)
    problems.raise_if_any()
    return total


def _icans_grade(problems: Problems, *, ice_items, **findings) -> tuple[int | None, grading.GradeResult | None]:
    usable, ice = _ice_total(ice_items, problems)
    if (
        usable
        and findings["consciousness"] == ICANSAssessment.Consciousness.UNAROUSABLE
        and ice is None
        and (findings["age_years"] or 0) > 12
    ):
        ice = 0  # an unarousable patient cannot perform ICE: the score is 0 (docs/domain.md §3.2)
    if findings["age_years"] is None:
        problems.add("age_years", "Give the participant's age in years.")
    if not usable or findings["age_years"] is None:
        return ice, None
    with problems.collect():
        return ice, grading.grade_icans(grading.ICANSInputs(ice_score=ice, **findings))
    return ice, None


def icans_compute(
    *,
    age_years: int,
    developmental_delay: bool,
    ice_items: Mapping[str, int | None],
    capd_score: int | None,
    consciousness: str,
    seizure: str,
    motor: str,
    raised_icp: str,
    death_due_to_icans: bool,
) -> tuple[int | None, grading.GradeResult]:
    """The ICE score and the ASTCT ICANS grade of the findings (no write; the form previews it)."""
    findings = dict(locals())
    ice_items = findings.pop("ice_items")
    problems = Problems()
    ice, result = _icans_grade(problems, ice_items=ice_items, **findings)
    problems.raise_if_any()
    assert result is not None
    return ice, result


@transaction.atomic(durable=True)
def icans_assessment_record(
    *,
    actor,
    adverse_event: AdverseEvent,
    assessed_at: dt.datetime,
    age_years: int,
    developmental_delay: bool = False,
    ice_orientation: int | None = None,
    ice_naming: int | None = None,
    ice_commands: int | None = None,
    ice_writing: int | None = None,
    ice_attention: int | None = None,
    capd_score: int | None = None,
    consciousness: str = ICANSAssessment.Consciousness.ALERT,
    seizure: str = ICANSAssessment.Seizure.NONE,
    motor: str = ICANSAssessment.Motor.NONE,
    raised_icp: str = ICANSAssessment.RaisedICP.NONE,
    death_due_to_icans: bool = False,
    investigator_grade: int | None = None,
    override_reason: str = "",
    channel: str = "web",
) -> ICANSAssessment:
    """Grade ICANS by ASTCT (ICE, or CAPD for children <= 12); the AE takes the worst final grade."""
    problems = Problems()
    ice_items = {
        "orientation": ice_orientation,
        "naming": ice_naming,
        "commands": ice_commands,
        "writing": ice_writing,
        "attention": ice_attention,
    }
    findings = {
        "age_years": age_years,
        "developmental_delay": developmental_delay,
        "capd_score": capd_score,
        "consciousness": consciousness,
        "seizure": seizure,
        "motor": motor,
        "raised_icp": raised_icp,
        "death_due_to_icans": death_due_to_icans,
    }
    participant, ae = _assessment_context(actor, adverse_event, ICANSAssessment, assessed_at, problems)
    override_reason = problems.text("override_reason", override_reason, label="The reason for the override")
    ice, computed = _icans_grade(problems, ice_items=ice_items, **findings)
    final = _final_grade(computed, investigator_grade, override_reason, problems)
    old_grade = _regrade(ae, participant, final.grade, computed.scale, problems) if final and computed else None
    problems.raise_if_any()
    assert computed is not None
    assert final is not None
    assessment = ICANSAssessment(
        adverse_event=ae,
        assessed_at=assessed_at,
        **findings,
        **{f"ice_{item}": value for item, value in ice_items.items()},
        ice_score=ice,
        computed_grade=computed.grade,
        computed_reason=computed.reason,
        scale=computed.scale,
        rule_version=computed.rule_version,
        investigator_grade=investigator_grade,
        override_reason=override_reason,
        final_grade=final.grade,
    )
    _save_assessment(actor, assessment, ae, old_grade, channel)
    return assessment


# ---------------------------------------------------------------------------------------------
# SAE cases and expedited reports (docs/domain.md §2.1-2.2)
# ---------------------------------------------------------------------------------------------


def _clock_rules(study: Study) -> Mapping[str, Any]:
    return get_rules("clocks", safety_profile(study).clock_rules)


def _report_from_clock(case: SAECase, kind: str, clock, recipient: str, case_version=None) -> ExpeditedReport:
    report = ExpeditedReport(
        case=case,
        kind=kind,
        recipient=recipient,
        case_version=case_version,
        started_at=clock.started_at,
        day0=clock.day0,
        due_date=clock.due_date,
        due_at=clock.due_at,
        time_zone=str(clock.tz) if clock.calendar_days else "UTC",
        rule_version=clock.rule_version,
    )
    save_validated(report)
    return report


def _sae_open(ae: AdverseEvent) -> SAECase:
    """Open the SAE case of a newly serious AE and start the site's 24 h clock (caller holds the
    participant lock and the audit context)."""
    participant = ae.participant
    case = SAECase(
        adverse_event=ae,
        case_number=f"{participant.study.code}-{participant.subject_code}-AE{ae.sequence:03d}".upper(),
        site_aware_at=ae.site_aware_at,
    )
    save_validated(case)
    clock = site_report_clock(ae.site_aware_at, rules=_clock_rules(participant.study))
    _report_from_clock(case, ReportKind.SITE_24H, clock, recipient="Sponsor (safety desk)")
    return case


def ae_snapshot(ae: AdverseEvent) -> dict[str, Any]:
    """The AE as sent in one SAE case version (JSON-safe)."""
    return {
        "sequence": ae.sequence,
        "verbatim_term": ae.verbatim_term,
        "ctcae_term": ae.ctcae_term.term,
        "ctcae_version": ae.ctcae_version,
        "soc": ae.ctcae_term.soc,
        "category": ae.category,
        "grade": ae.grade,
        "grade_scale": ae.grade_scale,
        "onset": ae.onset,
        "end": ae.end,
        "ongoing": ae.ongoing,
        "criteria": ae.criteria,
        "causality_product": ae.causality_product,
        "causality_leukapheresis": ae.causality_leukapheresis,
        "causality_procedures": ae.causality_procedures,
        "action_taken": ae.action_taken,
        "outcome": ae.outcome,
        "treatment_given": ae.treatment_given,
        "treatment_details": ae.treatment_details,
        "ae_version": ae.version,
    }


def _lock_case(case: SAECase) -> tuple[SAECase, Participant]:
    current = SAECase.objects.select_for_update().get(pk=case.pk)
    ae = AdverseEvent.objects.select_related("ctcae_term", "participant__study", "participant__site").get(
        pk=current.adverse_event_id
    )
    current.adverse_event = ae
    return current, ae.participant


@transaction.atomic(durable=True)
def sae_report_to_sponsor(*, actor, case: SAECase, narrative: str, channel: str = "web") -> SAECaseVersion:
    """The site sends the initial SAE report: stops the 24 h clock (on time or late) and is the
    sponsor's first receipt of the minimum information, Day 0 of the regulatory clock."""
    case, participant = _lock_case(case)
    ensure_writable(participant)
    _require_data_entry(actor, participant, "report SAEs")
    if case.sponsor_received_at is not None:
        raise RuleViolation("The initial report was already sent; send a follow-up with the new information.")
    problems = Problems()
    narrative = problems.text(
        "narrative",
        narrative,
        label="The narrative",
        required="Describe the event: what happened, treatment, current status.",
    )
    problems.raise_if_any()
    now = max(timezone.now(), case.site_aware_at)
    ae = case.adverse_event
    version = SAECaseVersion(
        case=case,
        number=0,
        received_at=now,
        reported_by=actor,
        narrative=narrative,
        snapshot=ae_snapshot(ae),
        fatal_or_life_threatening=ae.fatal_or_life_threatening,
    )
    case.sponsor_received_at = now
    case.version += 1
    with audit_context(actor=actor, reason="initial SAE report sent to the sponsor", channel=channel):
        save_validated(version)
        save_validated(case)
        for report in ExpeditedReport.objects.select_for_update().filter(
            case=case, kind=ReportKind.SITE_24H, status=ExpeditedReport.Status.PENDING
        ):
            _mark_submitted(report, actor=actor, submitted_at=now)
    return version


def _mark_submitted(report: ExpeditedReport, *, actor, submitted_at: dt.datetime, acknowledgement: str = "") -> None:
    report.status = ExpeditedReport.Status.SUBMITTED
    report.submitted_at = submitted_at
    report.submitted_by = actor
    report.days_late = lateness_days(report.clock, submitted_at)
    report.acknowledgement = acknowledgement
    report.version += 1
    save_validated(report)


_INITIAL_SUSAR_KINDS = (ReportKind.SEVEN_DAY, ReportKind.FIFTEEN_DAY)


@transaction.atomic(durable=True)
def sae_follow_up_submit(*, actor, case: SAECase, narrative: str, channel: str = "web") -> SAECaseVersion:
    """The site sends new information on a case (a new link in the version chain). When the case has
    become fatal or life-threatening a new 7-day clock starts from today (EU CTR Art 42); when the
    initial SUSAR report has gone out, a 15-day follow-up report is due (21 CFR 312.32(d))."""
    case, participant = _lock_case(case)
    ensure_writable(participant)
    _require_data_entry(actor, participant, "report SAEs")
    previous = case.versions.order_by("-number").first()
    if previous is None:
        raise RuleViolation("Send the initial SAE report first.")
    problems = Problems()
    narrative = problems.text("narrative", narrative, label="The narrative", required="Describe the new information.")
    problems.raise_if_any()
    ae = case.adverse_event
    now = timezone.now()
    version = SAECaseVersion(
        case=case,
        number=previous.number + 1,
        previous=previous,
        received_at=now,
        reported_by=actor,
        narrative=narrative,
        snapshot=ae_snapshot(ae),
        fatal_or_life_threatening=ae.fatal_or_life_threatening,
    )
    upgraded = ae.fatal_or_life_threatening and not case.versions.filter(fatal_or_life_threatening=True).exists()
    reports = {r.kind: r for r in case.reports.filter(kind__in=[*_INITIAL_SUSAR_KINDS, ReportKind.UPGRADE_SEVEN_DAY])}
    rules = _clock_rules(participant.study)
    tz = ZoneInfo(safety_profile(participant.study).sponsor_time_zone)
    case.version += 1
    with audit_context(actor=actor, reason=f"SAE follow-up {version.number} sent to the sponsor", channel=channel):
        save_validated(version)
        save_validated(case)
        fifteen = reports.get(ReportKind.FIFTEEN_DAY)
        if upgraded and fifteen is not None and fifteen.status != ExpeditedReport.Status.CANCELLED:
            clock = upgrade_clock(upgrade_known_at=now, sponsor_tz=tz, rules=rules)
            _report_from_clock(case, ReportKind.UPGRADE_SEVEN_DAY, clock, "Regulatory authorities", version)
        elif any(r.status == ExpeditedReport.Status.SUBMITTED for k, r in reports.items() if k in _INITIAL_SUSAR_KINDS):
            clock = follow_up_clock(new_information_at=now, sponsor_tz=tz, rules=rules)
            _report_from_clock(case, ReportKind.FOLLOW_UP, clock, "Regulatory authorities", version)
    return version


def _rsi_expectedness(ae: AdverseEvent, study: Study):
    versions = [
        RSIVersion(rsi.version, rsi.effective_from, dict(rsi.expected_terms))
        for rsi in ReferenceSafetyInformation.objects.filter(study=study)
    ]
    if not versions:
        return None
    return assess_expectedness(
        term=ae.ctcae_term.term,
        grade=ae.grade,
        fatal=ae.outcome == Outcome.FATAL,
        onset=ae.onset,
        rsi_versions=versions,
    )


@transaction.atomic(durable=True)
def sae_sponsor_assess(
    *,
    actor,
    case: SAECase,
    sponsor_causality: str,
    expected: bool | None = None,
    causality_rationale: str = "",
    expectedness_rationale: str = "",
    reason: str = "",
    expected_version: int | None = None,
    channel: str = "web",
) -> SAECase:
    """The medical monitor's sponsor assessment: causality to the product and expectedness against
    the RSI in force at onset; the system then determines SUSAR status and creates the report due.

    The sponsor cannot downgrade the investigator's causality (EU CTR Annex III §2.1): a sponsor
    "not related" against an investigator's "related" is accepted only as a recorded disagreement
    with its rationale, both opinions are kept, and the case stays related. Without an RSI on file,
    or to disagree with it, the monitor states expectedness with a rationale.
    """
    case, participant = _lock_case(case)
    _require_medical_monitor(actor, participant.study, "assess SAEs for the sponsor")
    if case.sponsor_received_at is None:
        raise RuleViolation("The site has not sent the initial SAE report yet; there is nothing to assess.")
    problems = Problems()
    if case.assessed_at is not None:
        _check_version(case, expected_version)
        reason = _reason(reason, problems)
    ae = case.adverse_event
    rules = get_rules("causality", ae.causality_rules)
    sponsor_causality = normalise_causality(sponsor_causality, rules, "sponsor_causality", problems)
    if not sponsor_causality and not problems.has("sponsor_causality"):
        problems.add("sponsor_causality", "Give the sponsor's causality assessment.")
    causality_rationale = problems.text("causality_rationale", causality_rationale, label="The causality rationale")
    expectedness_rationale = problems.text(
        "expectedness_rationale", expectedness_rationale, label="The expectedness rationale"
    )
    investigator = ae.causality_product
    if (
        sponsor_causality
        and investigator
        and causality_is_related(investigator, rules=rules)
        and not causality_is_related(sponsor_causality, rules=rules)
        and not causality_rationale
        and not problems.has("causality_rationale")
    ):
        problems.add(
            "sponsor_causality",
            f"The sponsor cannot downgrade the investigator's causality ('{investigator}', related): "
            "it stands and the case stays related. To record your disagreement, give its rationale; both "
            "opinions go in the report.",
        )
    rsi = _rsi_expectedness(ae, participant.study)
    if expected is None and rsi is None:
        problems.add("expected", "No reference safety information is on file: state whether the event is expected.")
    elif expected is None:
        expected = rsi.expected
    if (
        expected is not None
        and (rsi is None or rsi.expected != expected)
        and not expectedness_rationale
        and not problems.has("expectedness_rationale")
    ):
        why = (
            "no RSI is on file"
            if rsi is None
            else f"the RSI says {'expected' if rsi.expected else 'unexpected'} ({rsi.reason})"
        )
        problems.add("expectedness_rationale", f"Give the rationale for your expectedness judgement: {why}.")
    problems.raise_if_any()
    susar = determine_susar(
        serious=True,
        investigator_causality=investigator or None,
        sponsor_causality=sponsor_causality,
        expected=expected,
        causality_rules=rules,
    )
    now = timezone.now()
    case.sponsor_causality = sponsor_causality
    case.causality_rationale = causality_rationale
    case.expected = expected
    case.rsi_expected = rsi.expected if rsi is not None else None
    case.rsi_versions = ", ".join(rsi.rsi_versions) if rsi is not None else ""
    case.expectedness_rationale = expectedness_rationale
    case.assessed_by = actor
    case.assessed_at = now
    case.is_susar = susar.is_susar
    case.susar_reason = susar.reason
    case.version += 1
    with audit_context(actor=actor, reason=reason or "sponsor assessment", channel=channel):
        save_validated(case)
        open_reports = case.reports.select_for_update().exclude(kind=ReportKind.SITE_24H)
        live_initial = open_reports.filter(kind__in=_INITIAL_SUSAR_KINDS).exclude(
            status=ExpeditedReport.Status.CANCELLED
        )
        if susar.is_susar and not live_initial.exists():
            # Day 0 is the sponsor's first receipt; the qualification date only ever moves it earlier
            # (docs/domain.md §2.2: default to the conservative date).
            clock = susar_report_clock(
                first_receipt_at=case.sponsor_received_at,
                qualification_at=now,
                fatal_or_life_threatening=ae.fatal_or_life_threatening,
                sponsor_tz=ZoneInfo(safety_profile(participant.study).sponsor_time_zone),
                rules=_clock_rules(participant.study),
            )
            kind = ReportKind.SEVEN_DAY if ae.fatal_or_life_threatening else ReportKind.FIFTEEN_DAY
            cancelled = open_reports.filter(kind=kind, status=ExpeditedReport.Status.CANCELLED).first()
            if cancelled is None:
                _report_from_clock(case, kind, clock, "Regulatory authorities")
            else:  # a SUSAR again after a re-assessment: the same report is due once more
                _reinstate(cancelled, clock, now)
        elif not susar.is_susar:
            for report in open_reports.filter(status=ExpeditedReport.Status.PENDING):
                report.status = ExpeditedReport.Status.CANCELLED
                report.note = f"Not a SUSAR after the sponsor assessment of {now:%Y-%m-%d %H:%M} UTC ({susar.reason})."
                report.version += 1
                save_validated(report)
    return case


def _reinstate(report: ExpeditedReport, clock, now: dt.datetime) -> None:
    report.status = ExpeditedReport.Status.PENDING
    report.started_at, report.day0, report.due_date, report.due_at = (
        clock.started_at,
        clock.day0,
        clock.due_date,
        clock.due_at,
    )
    report.time_zone, report.rule_version = str(clock.tz), clock.rule_version
    report.note = f"Due again: a SUSAR after the sponsor re-assessment of {now:%Y-%m-%d %H:%M} UTC."
    report.version += 1
    save_validated(report)


@transaction.atomic(durable=True)
def expedited_report_submit(
    *,
    actor,
    report: ExpeditedReport,
    submitted_at: dt.datetime | None = None,
    acknowledgement: str = "",
    expected_version: int | None = None,
    channel: str = "web",
) -> ExpeditedReport:
    """Record that a regulatory report went out, with its lateness (0 when on time)."""
    current = (
        ExpeditedReport.objects.select_for_update()
        .select_related("case__adverse_event__participant__study")
        .get(pk=report.pk)
    )
    study = current.case.adverse_event.participant.study
    _require_medical_monitor(actor, study, "submit expedited reports")
    if current.kind == ReportKind.SITE_24H:
        raise RuleViolation("The site's 24 h report is sent by the site with the initial SAE report.")
    if current.status != ExpeditedReport.Status.PENDING:
        raise RuleViolation(f"This report is {current.get_status_display().lower()}; it cannot be submitted again.")
    _check_version(current, expected_version)
    now = timezone.now()
    submitted_at = submitted_at or now
    problems = Problems()
    usable = _not_future_time("submitted_at", submitted_at, "The submission time", now, problems)
    if usable and submitted_at < current.started_at:
        problems.add("submitted_at", "A report cannot be submitted before its clock started.")
    acknowledgement = problems.text(
        "acknowledgement", acknowledgement, label="The acknowledgement / reference ID", single_line=True
    )
    problems.raise_if_any()
    with audit_context(actor=actor, reason=f"{current.get_kind_display()} submitted", channel=channel):
        _mark_submitted(current, actor=actor, submitted_at=submitted_at, acknowledgement=acknowledgement)
    return current


# ---------------------------------------------------------------------------------------------
# Clock monitoring (docs/domain.md §2; docs/reliability.md #35-36): idempotent notifications, sent after commit
# ---------------------------------------------------------------------------------------------

# Look no further ahead than the widest "due soon" threshold of any rule version.
_HORIZON = dt.timedelta(hours=72)
# A notification still unsent this long after it was written lost its send (crash after commit).
RESEND_AFTER = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class MonitorResult:
    checked: int
    created: tuple[int, ...]
    resent: tuple[int, ...]


def _recipients(report: ExpeditedReport) -> list[str]:
    """The study's medical monitors and safety desk; for the site clock, the site's data-entry staff too."""
    participant = report.case.adverse_event.participant
    memberships = StudyMembership.objects.filter(study_id=participant.study_id).select_related("user")
    wanted = {Role.MEDICAL_MONITOR}
    emails = set()
    for m in memberships:
        site_staff = (
            report.kind == ReportKind.SITE_24H and m.role in DATA_ENTRY_ROLES and m.site_id == participant.site_id
        )
        if (m.role in wanted or site_staff) and m.user.email and m.user.is_active:
            emails.add(m.user.email)
    profile = safety_profile(participant.study)
    emails.update(line.strip() for line in profile.extra_alert_emails.splitlines() if line.strip())
    return sorted(emails)


def _message(report: ExpeditedReport, threshold: str, now: dt.datetime) -> tuple[str, str]:
    """Subject and body. Pseudonymous and free of any allocation: it may reach blinded people."""
    case = report.case
    participant = case.adverse_event.participant
    when = "OVERDUE" if threshold == Notification.Threshold.OVERDUE else "due soon"
    due = f"{report.due_at:%Y-%m-%d %H:%M} UTC"
    if report.due_date:
        due = f"{report.due_date:%Y-%m-%d} ({report.time_zone}; last on-time instant {due})"
    subject = f"[{participant.study.code}] {report.get_kind_display()} {when}: {case.case_number}"
    body = (
        f"{report.get_kind_display()} for SAE case {case.case_number} (participant {participant.subject_code}, "
        f"site {participant.site.code}) is {when}.\nDue: {due}.\nChecked at {now:%Y-%m-%d %H:%M} UTC.\n"
    )
    return subject, body


@transaction.atomic(durable=True)
def _record_notifications(now: dt.datetime) -> MonitorResult:
    reports = list(
        ExpeditedReport.objects.filter(
            status=ExpeditedReport.Status.PENDING,
            voided_at=None,
            case__voided_at=None,
            case__adverse_event__voided_at=None,  # an AE entered in error has no clock to alert on
            due_at__lte=now + _HORIZON,
        ).select_related("case__adverse_event__participant__study", "case__adverse_event__participant__site")
    )
    created = []
    for report in reports:
        state = report.status_at(now).state
        if state not in (ClockState.DUE_SOON, ClockState.OVERDUE):
            continue
        threshold = Notification.Threshold.OVERDUE if state == ClockState.OVERDUE else Notification.Threshold.DUE_SOON
        subject, body = _message(report, threshold, now)
        try:
            # The unique (report, threshold) key is the claim: a concurrent run's INSERT waits for
            # ours to commit and then fails here, so it sends nothing.
            with transaction.atomic():
                notification = Notification.objects.create(
                    report=report,
                    threshold=threshold,
                    created_at=now,
                    recipients=", ".join(_recipients(report)),
                    subject=subject,
                    body=body,
                )
        except IntegrityError:
            continue  # already notified (by an earlier run or a concurrent worker)
        created.append(notification.pk)
    resend = [
        pk
        for pk in Notification.objects.filter(sent_at=None, created_at__lt=now - RESEND_AFTER).values_list(
            "pk", flat=True
        )
        if pk not in created
    ]
    ids = [*created, *resend]
    if ids:
        transaction.on_commit(lambda: notifications_send(ids=ids))
    return MonitorResult(len(reports), tuple(created), tuple(resend))


def clock_monitor_run(*, now: dt.datetime | None = None) -> MonitorResult:
    """Find pending reports that are due soon or overdue and notify the safety team once per report
    and threshold, however often and however concurrently this runs (Celery beat, every 15 min).

    1. In one transaction, write a ``Notification`` per (report, threshold) reached; the unique
       constraint decides which of two concurrent runs owns it.
    2. After commit, ``notifications_send`` claims each row (compare-and-set on ``sent_at``) and
       emails it. A row left unsent (a crash between 1 and 2) is picked up again by a later run.
    """
    return _record_notifications(now or timezone.now())


def notifications_send(*, ids: Iterable[int]) -> int:
    """Email the given notifications; each is claimed first, so it goes out at most once. Deliberately
    not atomic: each claim commits on its own, before its email is sent."""
    from django.core.mail import send_mail

    sent = 0
    for notification in Notification.objects.filter(pk__in=list(ids), sent_at=None):
        claimed = Notification.objects.filter(pk=notification.pk, sent_at=None).update(sent_at=timezone.now())
        if claimed != 1:
            continue  # another process got there first
        recipients = [r.strip() for r in notification.recipients.split(",") if r.strip()]
        if not recipients:
            continue  # in-app only
        try:
            send_mail(
                subject=notification.subject,
                message=notification.body,
                from_email=None,
                recipient_list=recipients,
            )
        except Exception as exc:  # the mail server failed: release the claim so a later run retries
            logger.exception("Clock notification %s could not be sent", notification.pk)
            Notification.objects.filter(pk=notification.pk).update(sent_at=None, error=str(exc)[:1000])
            continue
        sent += 1
    return sent


# ---------------------------------------------------------------------------------------------
# Dose-limiting toxicity (docs/domain.md §3.6)
# ---------------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def dlt_definition_create(
    *, actor, study: Study, config: Mapping[str, Any], effective_from: dt.date, reason: str, channel: str = "web"
) -> DLTDefinition:
    """A new version of the study's DLT definition and stopping rule (versions are never edited)."""
    require_role(actor, study=study, roles={Role.DATA_MANAGER, Role.MEDICAL_MONITOR}, action="define DLTs")
    problems = Problems()
    reason = problems.text(
        "reason",
        reason,
        label="The reason",
        required="Say why the definition is created or changed (e.g. protocol amendment).",
    )
    clean: dict[str, Any] = {}
    try:
        clean = validate_dlt_config(config)
    except InputError as error:
        problems.add("config", f"{error.field}: {error.message}")
    study = Study.objects.select_for_update().get(pk=study.pk)
    last = study.dlt_definitions.order_by("-number").first()
    if effective_from is None:
        problems.add("effective_from", "Give the date the definition takes effect.")
    elif last is not None and effective_from < last.effective_from:
        problems.add("effective_from", f"Version {last.number} is effective from {last.effective_from:%Y-%m-%d}.")
    problems.raise_if_any()
    definition = DLTDefinition(
        study=study,
        number=(last.number if last else 0) + 1,
        effective_from=effective_from,
        config=clean,
        created_by=actor,
        reason=reason,
    )
    with audit_context(actor=actor, reason=reason, channel=channel):
        save_validated(definition)
    return definition


def dlt_definition_current(study: Study) -> DLTDefinition | None:
    return study.dlt_definitions.order_by("-number").first()


def _adjudication_state(participant: Participant, problems: Problems) -> DLTDefinition | None:
    """The definition an adjudication signs against; what keeps the participant from one is a problem."""
    if not participant.infusions.filter(voided_at=None).exists():
        problems.add("__all__", "Only an infused participant is adjudicated for DLTs.")
    definition = dlt_definition_current(participant.study)
    if definition is None:
        problems.add("__all__", "The study has no DLT definition yet; the data manager creates it first.")
    return definition


def dlt_adjudicate(
    *,
    actor,
    participant: Participant,
    evaluable: bool,
    is_dlt: bool,
    rationale: str,
    password: str,
    adverse_event: AdverseEvent | None = None,
    reason: str = "",
    expected_version: int | None = None,
    request=None,
    channel: str = "web",
) -> DLTAdjudication:
    """The safety review committee's signed decision on a participant (docs/domain.md §3.6). A changed
    decision needs a reason and the version it was loaded with."""
    _require_medical_monitor(actor, participant.study, "adjudicate DLTs")
    problems = Problems()
    rationale = problems.text(
        "rationale", rationale, label="The rationale", required="Record the committee's rationale."
    )
    if is_dlt and not evaluable:
        problems.add("evaluable", "A participant with a DLT is DLT-evaluable.")
    if is_dlt and adverse_event is None:
        problems.add("adverse_event", "Name the event that is the DLT.")
    if adverse_event is not None and adverse_event.participant_id != participant.pk:
        problems.add("adverse_event", "This event belongs to another participant.")
    _adjudication_state(participant, problems)
    if DLTAdjudication.objects.filter(participant=participant).exists():
        reason = _reason(reason, problems)
    # The failed attempt must stay recorded, so the password check runs before the atomic block.
    with problems.collect():
        check_password(actor, password, request)
    problems.raise_if_any()
    with transaction.atomic(durable=True):
        participant = _lock_participant(participant)
        definition = _adjudication_state(participant, problems)
        problems.raise_if_any()
        existing = DLTAdjudication.objects.select_for_update().filter(participant=participant).first()
        now = timezone.now()
        values = {
            "definition": definition,
            "evaluable": evaluable,
            "is_dlt": is_dlt,
            "adverse_event": adverse_event,
            "rationale": rationale,
            "signed_by": actor,
            "signer_name": actor.get_full_name() or actor.get_username(),
            "signed_at": now,
        }
        if existing is None:
            adjudication = DLTAdjudication(participant=participant, **values)
            with audit_context(actor=actor, reason="DLT adjudication", channel=channel):
                save_validated(adjudication)
            return adjudication
        _check_version(existing, expected_version)
        reason = _reason(reason, problems)  # a first decision may have been signed meanwhile
        problems.raise_if_any()
        for name, value in values.items():
            setattr(existing, name, value)
        existing.version += 1
        with audit_context(actor=actor, reason=reason, channel=channel):
            save_validated(existing)
        return existing
