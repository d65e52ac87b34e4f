"""Infusion (dosing) services: record an infusion, correct it, and the visit schedule day 0 sets.

Both services collect every problem of the form before refusing (``trials.rules.Problems``). A
product outside the study's release criteria, or cells given in a placebo cohort, is not refused:
the coordinator confirms it (``confirm_outside_criteria``) and it is recorded as a protocol
deviation. A dose outside the study's tolerance is recorded as a deviation without asking, as before;
a placebo cohort has no dose to deviate from (docs/domain.md §4).
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from trials.audit import audit_context
from trials.errors import RuleViolation
from trials.guards import (
    ensure_consented_by,
    ensure_writable,
    not_future_time,
    record_update,
    require_role,
    save_validated,
    timeline_of,
)
from trials.models import (
    DATA_ENTRY_ROLES,
    DoseCohort,
    Infusion,
    Participant,
    ParticipantStatus,
    ProtocolDeviation,
    Visit,
)
from trials.release import release_problems
from trials.rules import Problems, dose_deviation_pct, placebo_dose_problem, timeline_problems
from trials.text import CODE_MAX, REASON_MAX, clean_identifier, clean_text, parse_plain_decimal

CONFIRM_FIELD = "confirm_outside_criteria"
WEIGHT_RANGE = (Decimal("20"), Decimal("250"))
VOLUME_MAX_ML = Decimal("2000")


def dose_per_kg(total_viable_cells: Decimal, weight_kg: Decimal) -> Decimal:
    return (Decimal(total_viable_cells) / Decimal(weight_kg)).quantize(Decimal("1"), rounding=ROUND_HALF_UP)


def _site_date(participant: Participant, moment: dt.datetime) -> dt.date:
    """The calendar date of ``moment`` at the participant's site: day 0 is the site's local date."""
    return moment.astimezone(ZoneInfo(participant.site.timezone)).date()


def _sentinel_problem(participant: Participant, cohort: DoseCohort, start_at: dt.datetime) -> str | None:
    if not cohort.sentinel_interval_days:
        return None
    sentinel = (
        Infusion.objects.filter(cohort=cohort, number=1, voided_at__isnull=True)
        .exclude(participant=participant)
        .order_by("start_at")
        .first()
    )
    if sentinel is None:
        return None  # this participant is the sentinel
    earliest = sentinel.infusion_date + dt.timedelta(days=cohort.sentinel_interval_days)
    if _site_date(participant, start_at) < earliest:
        return (
            f"Sentinel interval: {sentinel.participant.subject_code} was infused on "
            f"{sentinel.infusion_date:%Y-%m-%d}; the next participant of cohort {cohort.number} can be "
            f"infused from {earliest:%Y-%m-%d} ({cohort.sentinel_interval_days} days)."
        )
    return None


def _visit_window(definition, infusion_date: dt.date) -> dict:
    planned = infusion_date + dt.timedelta(days=definition.target_day)
    return {
        "planned_date": planned,
        "window_start": planned - dt.timedelta(days=definition.window_before),
        "window_end": planned + dt.timedelta(days=definition.window_after),
    }


def _create_schedule(participant: Participant, infusion_date: dt.date) -> None:
    Visit.objects.bulk_create(
        Visit(
            participant=participant,
            definition=definition,
            kind=Visit.Kind.SCHEDULED,
            **_visit_window(definition, infusion_date),
        )
        for definition in participant.study.schedule.all()
    )


def _decimal(problems: Problems, field: str, value, label: str) -> Decimal | None:
    return problems.check(parse_plain_decimal, value, label=label, field=field)


def _check_fields(
    problems: Problems, participant: Participant, cohort: DoseCohort, data: dict, *, infusion=None
) -> dict:
    """Check every field of an infusion form; return the cleaned values (with day 0) for the model.

    ``infusion`` is the record being corrected (None for a new one): it is left out of the
    comparisons with other infusions.
    """
    clean: dict = {}
    lot = problems.check(
        clean_identifier,
        data["manufacturing_lot"],
        max_length=CODE_MAX,
        label="The product lot",
        field="manufacturing_lot",
    )
    if lot == "":
        problems.add("manufacturing_lot", "Give the product lot (manufacturing lot).")
    clean["manufacturing_lot"] = lot
    if not data["release_passed"]:
        problems.add("release_passed", "The product lot has not passed release testing; it cannot be infused.")
    clean["release_passed"] = data["release_passed"]

    start_at, end_at = data["start_at"], data["end_at"]
    start_date = None
    if start_at.tzinfo is None or end_at.tzinfo is None:
        problems.add("start_at", "Infusion times must carry a time zone.")
    else:
        problems.check(not_future_time, "start_at", start_at, "Infusion start")
        problems.check(not_future_time, "end_at", end_at, "Infusion end")
        if end_at < start_at:
            problems.add("end_at", "The infusion cannot end before it starts.")
        elif end_at - start_at > dt.timedelta(hours=24):
            problems.add("end_at", "An infusion lasting more than 24 hours is not plausible; check the times.")
        start_date = _site_date(participant, start_at)
    clean.update(start_at=start_at, end_at=end_at, infusion_date=start_date)

    timeline = timeline_of(participant)
    apheresis = data["apheresis_date"]
    if start_date is not None:
        # Consent comes before enrolment: name the first milestone the date precedes, not both.
        problems.check(ensure_consented_by, participant, "start_at", start_date, "infusion")
        enrolled = participant.enrolment_date
        if "start_at" not in problems and enrolled and start_date < enrolled:
            problems.add("start_at", f"The infusion cannot precede enrolment ({enrolled:%Y-%m-%d}).")
        if apheresis is not None and apheresis > start_date:
            problems.add("apheresis_date", "The apheresis (cell collection) must come before the infusion.")
        for message in timeline_problems(timeline, start_date, what="infusion", after=()):
            problems.add("start_at", message)
        if infusion is not None and infusion.number == 1:
            _later_records_problems(problems, participant, start_date)
    if apheresis is not None:
        problems.check(ensure_consented_by, participant, "apheresis_date", apheresis, "apheresis")
        for message in timeline_problems(timeline, apheresis, what="apheresis", after=()):
            problems.add("apheresis_date", message)
    clean["apheresis_date"] = apheresis

    viability = _decimal(problems, "viability_pct", data["viability_pct"], "Viability")
    if viability is None and "viability_pct" not in problems and not cohort.is_placebo:
        problems.add("viability_pct", "Give the viability (%) of the product.")
    elif viability is not None and not 0 < viability <= 100:
        problems.add("viability_pct", "Viability must be between 0 and 100 %.")
    clean["viability_pct"] = viability

    weight = _decimal(problems, "weight_kg", data["weight_kg"], "Weight")
    low, high = WEIGHT_RANGE
    if weight is None and "weight_kg" not in problems:
        problems.add("weight_kg", "Give the weight used for dosing.")
    elif weight is not None and not low <= weight <= high:
        problems.add("weight_kg", f"Weight used for dosing must be between {low} and {high} kg.")
    clean["weight_kg"] = weight

    cells = data["total_viable_cells"]
    cells = None if cells is None else Decimal(cells)
    if cells is None or not cells.is_finite():
        problems.add("total_viable_cells", "Give the total viable cells infused.")
        cells = None
    elif cells < 0 or (cells == 0 and not cohort.is_placebo):
        problems.add("total_viable_cells", "Total viable cells must be positive.")
    clean["total_viable_cells"] = cells
    clean["dose_cells_per_kg"] = (
        dose_per_kg(cells, weight) if cells is not None and weight is not None and weight > 0 else None
    )

    endotoxin = _decimal(problems, "endotoxin_eu_per_kg", data.get("endotoxin_eu_per_kg"), "Endotoxin")
    if endotoxin is not None and endotoxin < 0:
        problems.add("endotoxin_eu_per_kg", "Endotoxin cannot be negative.")
    clean["endotoxin_eu_per_kg"] = endotoxin
    volume = _decimal(problems, "volume_ml", data.get("volume_ml"), "Volume")
    if volume is not None and not 0 < volume <= VOLUME_MAX_ML:
        problems.add("volume_ml", f"Volume infused must be above 0 and at most {VOLUME_MAX_ML} mL.")
    clean["volume_ml"] = volume

    interrupted = bool(data.get("interrupted"))
    reason = problems.check(
        clean_text,
        data.get("interruption_reason", ""),
        max_length=REASON_MAX,
        label="The reason for the interruption",
        field="interruption_reason",
    )
    if interrupted and reason == "":
        problems.add("interruption_reason", "Give the reason for the interruption.")
    clean["interrupted"] = interrupted
    clean["interruption_reason"] = reason if interrupted else ""
    clean["premedication"] = problems.check(
        clean_text, data.get("premedication", ""), max_length=REASON_MAX, label="Premedication", field="premedication"
    )

    others = participant.infusions.filter(voided_at__isnull=True)
    if infusion is not None:
        others = others.exclude(pk=infusion.pk)
    if start_at.tzinfo is not None and end_at.tzinfo is not None:
        number = infusion.number if infusion is not None else others.count() + 1
        previous = others.filter(number__lt=number).order_by("-number").first()
        if previous and start_at <= previous.end_at:
            problems.add("start_at", "This infusion starts before the previous one ended.")
        following = others.filter(number__gt=number).order_by("number").first()
        if following and end_at >= following.start_at:
            problems.add("end_at", "This infusion ends after the next one started.")
        if number == 1:
            sentinel = _sentinel_problem(participant, cohort, start_at)
            if sentinel:
                problems.add("start_at", sentinel)
    return clean


def _later_records_problems(problems: Problems, participant: Participant, day0: dt.date) -> None:
    """A corrected day 0 must still precede what the casebook dates from it."""
    first_visit = (
        participant.visits.filter(voided_at__isnull=True, actual_date__isnull=False).order_by("actual_date").first()
    )
    if first_visit and first_visit.actual_date < day0:
        problems.add(
            "start_at",
            f"{first_visit.label} took place on {first_visit.actual_date:%Y-%m-%d}, before this infusion date; "
            "correct that visit first.",
        )
    rescue = (
        participant.rescue_therapies.filter(voided_at__isnull=True, start_date__lt=day0).order_by("start_date").first()
    )
    if rescue:
        problems.add(
            "start_at",
            f"The rescue therapy {rescue.agent} started on {rescue.start_date:%Y-%m-%d}, before this infusion date.",
        )


def outside_criteria(
    participant: Participant, cohort: DoseCohort, clean: dict, problems: Problems
) -> list[tuple[str, str]]:
    """(deviation category, description) for each way the product is outside the criteria; a value
    the form must correct anyway is not judged."""
    if "viability_pct" in problems or "endotoxin_eu_per_kg" in problems:
        return []
    found = [
        (ProtocolDeviation.Category.RELEASE, message)
        for message in release_problems(
            study=participant.study,
            cohort=cohort,
            viability_pct=clean["viability_pct"],
            endotoxin_eu_per_kg=clean["endotoxin_eu_per_kg"],
        )
    ]
    if "total_viable_cells" in problems:
        return found
    placebo = placebo_dose_problem(cohort=cohort, total_viable_cells=clean["total_viable_cells"])
    if placebo:
        found.append((ProtocolDeviation.Category.DOSE, placebo))
    return found


def _confirmation_problem(problems: Problems, found: list[tuple[str, str]], confirmed: bool) -> None:
    if found and not confirmed:
        problems.add(
            CONFIRM_FIELD,
            "Outside the release criteria: " + " ".join(message for _, message in found) + " Confirm that this "
            "product was infused to record it; it becomes a protocol deviation.",
        )


def _dose_deviation(participant: Participant, infusion: Infusion, cohort: DoseCohort) -> tuple[str, str] | None:
    deviation = dose_deviation_pct(infusion, cohort)
    tolerance = participant.study.dose_tolerance_pct
    if deviation is None or abs(deviation) <= tolerance:
        return None
    return (
        ProtocolDeviation.Category.DOSE,
        f"Infused dose {infusion.dose_cells_per_kg:,} cells/kg ({infusion.total_viable_cells:,} cells) is "
        f"{deviation:+}% from cohort {cohort.number}'s planned dose (tolerance ±{tolerance}%).",
    )


def _sync_deviations(
    participant: Participant, infusion: Infusion, wanted: list[tuple[str, str]], *, actor, reason: str
) -> None:
    """Make the infusion's system-detected deviations the ``wanted`` ones: add the missing, void the
    ones a correction made obsolete (never delete them)."""
    current = list(
        ProtocolDeviation.objects.filter(infusion=infusion, system_detected=True, voided_at__isnull=True).order_by("pk")
    )
    have = {(d.category, d.description) for d in current}
    for deviation in current:
        if (deviation.category, deviation.description) not in wanted:
            deviation.voided_at = timezone.now()
            deviation.voided_by = actor
            deviation.void_reason = f"infusion corrected: {reason}"
            deviation.version += 1
            deviation.save(update_fields=["voided_at", "voided_by", "void_reason", "version", "updated_at"])
    for category, description in wanted:
        if (category, description) not in have:
            save_validated(
                ProtocolDeviation(
                    participant=participant,
                    category=category,
                    description=description,
                    detected_on=infusion.infusion_date,
                    infusion=infusion,
                    system_detected=True,
                )
            )


@transaction.atomic(durable=True)
def infusion_record(
    *,
    actor,
    participant: Participant,
    apheresis_date: dt.date,
    manufacturing_lot: str,
    release_passed: bool,
    viability_pct: Decimal | None,
    total_viable_cells: Decimal,
    weight_kg: Decimal,
    start_at: dt.datetime,
    end_at: dt.datetime,
    interrupted: bool = False,
    interruption_reason: str = "",
    premedication: str = "",
    volume_ml: Decimal | None = None,
    endotoxin_eu_per_kg: Decimal | None = None,
    confirm_outside_criteria: bool = False,
    channel: str = "web",
) -> Infusion:
    """Record a dosing event, compute the dose per kg, flag deviations (dose, release) and, for the
    first infusion, set the participant's visit schedule from day 0 = the infusion date."""
    data = {
        "apheresis_date": apheresis_date,
        "manufacturing_lot": manufacturing_lot,
        "release_passed": release_passed,
        "viability_pct": viability_pct,
        "total_viable_cells": total_viable_cells,
        "weight_kg": weight_kg,
        "start_at": start_at,
        "end_at": end_at,
        "interrupted": interrupted,
        "interruption_reason": interruption_reason,
        "premedication": premedication,
        "volume_ml": volume_ml,
        "endotoxin_eu_per_kg": endotoxin_eu_per_kg,
    }
    participant = (
        Participant.objects.select_for_update(of=("self",))
        .select_related("study", "cohort", "site")
        .get(pk=participant.pk)
    )
    ensure_writable(participant)
    if participant.status not in (ParticipantStatus.ENROLLED, ParticipantStatus.IN_FOLLOW_UP):
        raise RuleViolation(
            f"{participant.subject_code} is {participant.get_status_display().lower()}: "
            "only an enrolled participant can be infused."
        )
    cohort = participant.cohort
    number = participant.infusions.filter(voided_at__isnull=True).count() + 1
    if number > cohort.infusions_planned:
        raise RuleViolation(
            f"Cohort {cohort.number} plans {cohort.infusions_planned} infusion(s); "
            f"{participant.subject_code} has had them all."
        )
    problems = Problems()
    clean = _check_fields(problems, participant, cohort, data)
    found = outside_criteria(participant, cohort, clean, problems)
    _confirmation_problem(problems, found, confirm_outside_criteria)
    problems.raise_if_any()

    infusion = Infusion(participant=participant, number=number, cohort=cohort, **clean)
    with audit_context(actor=actor, reason="infusion recorded", channel=channel):
        save_validated(infusion)
        wanted = [*found, *filter(None, [_dose_deviation(participant, infusion, cohort)])]
        _sync_deviations(participant, infusion, wanted, actor=actor, reason="")
        if number == 1:
            _create_schedule(participant, infusion.infusion_date)
            participant.status = ParticipantStatus.IN_FOLLOW_UP
            participant.version += 1
            save_validated(participant)
    return infusion


@transaction.atomic(durable=True)
def infusion_correct(
    *,
    actor,
    infusion: Infusion,
    reason: str,
    expected_version: int | None,
    apheresis_date: dt.date,
    manufacturing_lot: str,
    release_passed: bool,
    viability_pct: Decimal | None,
    total_viable_cells: Decimal,
    weight_kg: Decimal,
    start_at: dt.datetime,
    end_at: dt.datetime,
    interrupted: bool = False,
    interruption_reason: str = "",
    premedication: str = "",
    volume_ml: Decimal | None = None,
    endotoxin_eu_per_kg: Decimal | None = None,
    confirm_outside_criteria: bool = False,
    channel: str = "web",
) -> Infusion:
    """Correct a recorded infusion, with a reason for change (audited, old and new values).

    The dose per kg and day 0 are recomputed; if day 0 moves, the scheduled visits move with it
    (their windows are derived from it) and their window deviations follow. Deviations the
    correction makes obsolete are voided, new ones recorded.
    """
    data = {
        "apheresis_date": apheresis_date,
        "manufacturing_lot": manufacturing_lot,
        "release_passed": release_passed,
        "viability_pct": viability_pct,
        "total_viable_cells": total_viable_cells,
        "weight_kg": weight_kg,
        "start_at": start_at,
        "end_at": end_at,
        "interrupted": interrupted,
        "interruption_reason": interruption_reason,
        "premedication": premedication,
        "volume_ml": volume_ml,
        "endotoxin_eu_per_kg": endotoxin_eu_per_kg,
    }
    participant = (
        Participant.objects.select_for_update(of=("self",))
        .select_related("study", "cohort", "site")
        .get(pk=infusion.participant_id)
    )
    ensure_writable(participant)
    require_role(
        actor, study=participant.study, roles=set(DATA_ENTRY_ROLES), site=participant.site, action="correct infusions"
    )
    current = Infusion.objects.select_related("cohort").get(pk=infusion.pk)
    if current.voided_at is not None:
        raise RuleViolation("This infusion is voided; it cannot be corrected.")
    problems = Problems()
    reason = problems.check(clean_text, reason, max_length=REASON_MAX, label="The reason for change", field="reason")
    if not reason and "reason" not in problems:
        problems.add("reason", "A reason for change is required to correct an infusion.")
    clean = _check_fields(problems, participant, current.cohort, data, infusion=current)
    found = outside_criteria(participant, current.cohort, clean, problems)
    _confirmation_problem(problems, found, confirm_outside_criteria)
    problems.raise_if_any()

    old_day0 = current.infusion_date
    corrected = record_update(
        current, actor=actor, reason=reason, expected_version=expected_version, changes=clean, channel=channel
    )
    with audit_context(actor=actor, reason=f"infusion corrected: {reason}", channel=channel):
        wanted = [*found, *filter(None, [_dose_deviation(participant, corrected, corrected.cohort)])]
        _sync_deviations(participant, corrected, wanted, actor=actor, reason=reason)
        if corrected.number == 1 and corrected.infusion_date != old_day0:
            _move_schedule(participant, corrected.infusion_date, actor=actor, reason=reason)
    return corrected


def _move_schedule(participant: Participant, day0: dt.date, *, actor, reason: str) -> None:
    """Day 0 moved: re-plan the scheduled visits and re-judge the windows of those already done."""
    for visit in participant.visits.select_related("definition").filter(kind=Visit.Kind.SCHEDULED):
        for key, value in _visit_window(visit.definition, day0).items():
            setattr(visit, key, value)
        visit.version += 1
        save_validated(visit)
        flagged = ProtocolDeviation.objects.filter(
            visit=visit, category=ProtocolDeviation.Category.VISIT_WINDOW, system_detected=True, voided_at__isnull=True
        )
        if visit.in_window is False and not flagged.exists():
            save_validated(
                ProtocolDeviation(
                    participant=participant,
                    category=ProtocolDeviation.Category.VISIT_WINDOW,
                    description=(
                        f"{visit.label} done on {visit.actual_date:%Y-%m-%d}, outside its window "
                        f"{visit.window_start:%Y-%m-%d} to {visit.window_end:%Y-%m-%d}."
                    ),
                    detected_on=visit.actual_date,
                    visit=visit,
                    system_detected=True,
                )
            )
        elif visit.in_window is not False:
            flagged.update(
                voided_at=timezone.now(),
                voided_by=actor,
                void_reason=f"infusion corrected, visit now in its window: {reason}",
                version=F("version") + 1,
                updated_at=timezone.now(),
            )
