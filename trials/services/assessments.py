"""Disease activity per visit (MS: EDSS; T1D: HbA1c, insulin; RA: DAS28/CDAI items), MRI reads, MMTTs
and MS relapses. Values are stored raw with their unit and checked against physiological ranges."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import transaction

from trials.audit import audit_context
from trials.errors import RuleViolation
from trials.guards import (
    ensure_consented_by,
    ensure_open,
    ensure_writable,
    not_future,
    record_update,
    save_validated,
    timeline_of,
)
from trials.models import DiseaseAssessment, Indication, MMTTSample, MRIRead, Participant, Relapse, Visit
from trials.rules import Problems, timeline_problems
from trials.text import NAME_MAX, REASON_MAX, clean_identifier, clean_text, parse_plain_decimal

# Physiological ranges, with the unit in the message (docs/domain.md §5). (min, max) inclusive.
RANGES: dict[str, tuple[Decimal, Decimal, str]] = {
    "edss": (Decimal("0"), Decimal("10"), "EDSS"),
    "hba1c:%": (Decimal("3"), Decimal("20"), "HbA1c (%)"),
    "hba1c:mmol/mol": (Decimal("9"), Decimal("195"), "HbA1c (mmol/mol)"),
    "insulin_u_per_kg_day": (Decimal("0"), Decimal("3"), "Daily insulin dose (U/kg/day)"),
    "tender_joints_28": (Decimal("0"), Decimal("28"), "Tender joint count (of 28)"),
    "swollen_joints_28": (Decimal("0"), Decimal("28"), "Swollen joint count (of 28)"),
    "crp:mg/L": (Decimal("0"), Decimal("500"), "CRP (mg/L)"),
    "crp:mg/dL": (Decimal("0"), Decimal("50"), "CRP (mg/dL)"),
    "esr_mm_h": (Decimal("0"), Decimal("150"), "ESR (mm/h)"),
    "patient_global_mm": (Decimal("0"), Decimal("100"), "Patient global assessment (mm)"),
    "evaluator_global_mm": (Decimal("0"), Decimal("100"), "Evaluator global assessment (mm)"),
    "c_peptide:nmol/L": (Decimal("0"), Decimal("10"), "C-peptide (nmol/L)"),
    "c_peptide:pmol/L": (Decimal("0"), Decimal("10000"), "C-peptide (pmol/L)"),
    "c_peptide:ng/mL": (Decimal("0"), Decimal("30"), "C-peptide (ng/mL)"),
    "mri_lesions": (Decimal("0"), Decimal("200"), "Lesion count"),
    "insulin_total_daily_units": (Decimal("0"), Decimal("300"), "Total daily insulin (U/day)"),
}

# Which assessment fields each indication requires.
REQUIRED_FIELDS = {
    Indication.MS: ["edss"],
    Indication.T1D: ["hba1c", "hba1c_unit", "insulin_u_per_kg_day"],
    Indication.RA: [
        "tender_joints_28",
        "swollen_joints_28",
        "crp",
        "crp_unit",
        "esr_mm_h",
        "patient_global_mm",
        "evaluator_global_mm",
    ],
}
ALL_ASSESSMENT_FIELDS = sorted({f for fields in REQUIRED_FIELDS.values() for f in fields})
MMTT_MINUTES = (-10, 0, 15, 30, 60, 90, 120, 150, 180, 240)


def range_problem(key: str, value) -> str | None:
    """Why ``value`` is outside the range ``key`` of ``RANGES`` (or not a plain number), or None."""
    low, high, label = RANGES[key]
    try:
        number = parse_plain_decimal(value, label=label)
    except ValidationError as exc:
        return " ".join(exc.messages)
    if number is None or not low <= number <= high:
        return f"{label} must be between {low} and {high}; {value} is outside that range."
    return None


def _check_range(field: str, key: str, value) -> None:
    problem = range_problem(key, value)
    if problem:
        raise RuleViolation({field: problem})


def _check_assessment_values(indication: str, values: dict) -> dict:
    """Every problem of the values at once: missing, foreign to the indication, unknown unit, out of range."""
    required = REQUIRED_FIELDS[indication]
    problems = Problems()
    for field in required:
        if values.get(field) in (None, ""):
            problems.add(field, "This field is required for this indication.")
    for field in ALL_ASSESSMENT_FIELDS:
        if field not in required and values.get(field) not in (None, ""):
            problems.add(field, f"Not collected for {Indication(indication).label}.")
    for field in required:
        if field.endswith("_unit") or field in problems:
            continue
        unit_field = f"{field}_unit"
        if unit_field in required:
            if unit_field in problems:
                continue
            key = f"{field}:{values[unit_field]}"
            if key not in RANGES:
                problems.add(unit_field, f"Unknown unit {values[unit_field]!r}.")
                continue
        else:
            key = field
        problem = range_problem(key, values[field])
        if problem:
            problems.add(field, problem)
    if indication == Indication.MS and "edss" not in problems:
        try:
            if (Decimal(values["edss"]) * 2) % 1 != 0:
                problems.add("edss", "EDSS is scored in steps of 0.5.")
        except (InvalidOperation, TypeError):
            problems.add("edss", "EDSS must be a number.")
    problems.raise_if_any()
    return {f: values[f] for f in required}


def _ensure_visit_done(visit: Visit, participant: Participant) -> None:
    if visit.participant_id != participant.pk:
        raise RuleViolation("This visit belongs to another participant.")
    if not visit.actual_date:
        raise RuleViolation("Record the visit date before entering its assessments.")


@transaction.atomic(durable=True)
def assessment_record(
    *,
    actor,
    visit: Visit,
    values: dict,
    reason: str = "",
    expected_version: int | None = None,
    channel: str = "web",
) -> DiseaseAssessment:
    """Record (or, with a reason, correct) the disease-activity assessment of a visit."""
    participant = Participant.objects.select_related("study").get(pk=visit.participant_id)
    ensure_writable(participant)
    if visit.kind != Visit.Kind.SAFETY:
        ensure_open(participant, "assessment")
    _ensure_visit_done(visit, participant)
    problems = Problems()
    clean = problems.check(_check_assessment_values, participant.study.indication, values)
    reason = problems.check(clean_text, reason, max_length=REASON_MAX, label="The reason for change", field="reason")
    problems.raise_if_any()
    existing = DiseaseAssessment.objects.filter(visit=visit).first()
    if existing is not None:
        clean["assessment_date"] = Visit.objects.get(pk=visit.pk).actual_date  # follows a corrected visit date
        return record_update(
            existing,
            actor=actor,
            reason=reason,
            expected_version=expected_version,
            changes=clean,
            channel=channel,
        )
    assessment = DiseaseAssessment(visit=visit, assessment_date=visit.actual_date, **clean)
    with audit_context(actor=actor, channel=channel):
        save_validated(assessment)
    return assessment


@transaction.atomic(durable=True)
def mri_record(
    *,
    actor,
    visit: Visit,
    scan_date: dt.date,
    new_or_enlarging_t2: int,
    gd_enhancing: int,
    reader: str = "",
    channel: str = "web",
) -> MRIRead:
    participant = Participant.objects.select_related("study").get(pk=visit.participant_id)
    ensure_writable(participant)
    ensure_open(participant, "MRI")
    if participant.study.indication != Indication.MS:
        raise RuleViolation("MRI reads are collected in multiple sclerosis studies only.")
    _ensure_visit_done(visit, participant)
    if MRIRead.objects.filter(visit=visit).exists():
        raise RuleViolation("This visit already has an MRI read.")
    problems = Problems()
    problems.check(not_future, "scan_date", scan_date, "Scan date")
    problems.check(ensure_consented_by, participant, "scan_date", scan_date, "MRI")
    for message in timeline_problems(timeline_of(participant), scan_date, what="MRI scan", after=("screening",)):
        problems.add("scan_date", message)
    problems.check(_check_range, "new_or_enlarging_t2", "mri_lesions", new_or_enlarging_t2)
    problems.check(_check_range, "gd_enhancing", "mri_lesions", gd_enhancing)
    reader = problems.check(clean_identifier, reader, max_length=NAME_MAX, label="The reader", field="reader")
    problems.raise_if_any()
    read = MRIRead(
        visit=visit,
        scan_date=scan_date,
        new_or_enlarging_t2=new_or_enlarging_t2,
        gd_enhancing=gd_enhancing,
        reader=reader,
    )
    with audit_context(actor=actor, channel=channel):
        save_validated(read)
    return read


@transaction.atomic(durable=True)
def mmtt_record(
    *, actor, visit: Visit, samples: Iterable[tuple[int, Decimal]], unit: str, channel: str = "web"
) -> list[MMTTSample]:
    """Record a mixed-meal tolerance test: C-peptide at its time points (minutes), in one unit."""
    participant = Participant.objects.select_related("study").get(pk=visit.participant_id)
    ensure_writable(participant)
    ensure_open(participant, "MMTT")
    if participant.study.indication != Indication.T1D:
        raise RuleViolation("MMTTs are collected in type 1 diabetes studies only.")
    _ensure_visit_done(visit, participant)
    if visit.mmtt_samples.exists():
        raise RuleViolation("This visit already has an MMTT.")
    samples = list(samples)
    problems = Problems()
    if len(samples) < 2:
        problems.add("samples", "An MMTT needs at least two time points.")
    minutes = [m for m, _ in samples]
    if len(set(minutes)) != len(minutes):
        problems.add("samples", "A time point appears twice.")
    if any(m not in MMTT_MINUTES for m in minutes):
        problems.add("samples", f"Time points must be among {', '.join(map(str, MMTT_MINUTES))} min.")
    key = f"c_peptide:{unit}"
    if key not in RANGES:
        problems.add("unit", f"Unknown C-peptide unit {unit!r}.")
    else:
        for minute, value in samples:
            problem = range_problem(key, value)
            if problem:
                problems.add(f"c_peptide_{minute}", problem)
    problems.raise_if_any()
    rows = [MMTTSample(visit=visit, minute=m, c_peptide=v, unit=unit) for m, v in sorted(samples)]
    with audit_context(actor=actor, channel=channel):
        for row in rows:
            save_validated(row)
    return rows


@transaction.atomic(durable=True)
def relapse_record(
    *,
    actor,
    participant: Participant,
    onset_date: dt.date,
    steroid_treated: bool,
    confirmed_by_examination: bool,
    notes: str = "",
    channel: str = "web",
) -> Relapse:
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    ensure_writable(participant)
    ensure_open(participant, "relapse")
    if participant.study.indication != Indication.MS:
        raise RuleViolation("Relapses are recorded in multiple sclerosis studies only.")
    problems = Problems()
    problems.check(not_future, "onset_date", onset_date, "Relapse onset")
    problems.check(ensure_consented_by, participant, "onset_date", onset_date, "relapse")
    for message in timeline_problems(timeline_of(participant), onset_date, what="relapse onset", after=()):
        problems.add("onset_date", message)
    notes = problems.check(clean_text, notes, max_length=REASON_MAX, label="The notes", field="notes")
    # docs/domain.md §5.1: a protocol-defined relapse starts >= 30 days after the previous one's onset.
    window = dt.timedelta(days=30)
    close = participant.relapses.filter(
        voided_at__isnull=True, onset_date__gt=onset_date - window, onset_date__lt=onset_date + window
    ).first()
    if close is not None:
        problems.add(
            "onset_date",
            f"A relapse already started on {close.onset_date:%Y-%m-%d}; a new relapse must "
            "start at least 30 days after the previous one (otherwise it is the same relapse).",
        )
    problems.raise_if_any()
    relapse = Relapse(
        participant=participant,
        onset_date=onset_date,
        steroid_treated=steroid_treated,
        confirmed_by_examination=confirmed_by_examination,
        notes=notes,
    )
    with audit_context(actor=actor, channel=channel):
        save_validated(relapse)
    return relapse
