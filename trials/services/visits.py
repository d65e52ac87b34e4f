"""Visits: record a scheduled visit, mark it missed, add an unscheduled or safety visit."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import transaction

from trials.audit import audit_context
from trials.errors import ConflictError, RuleViolation
from trials.guards import (
    clinical_today,
    ensure_consented_by,
    ensure_open,
    ensure_writable,
    first_infusion,
    not_future,
    record_update,
    save_validated,
    timeline_of,
)
from trials.models import Participant, ProtocolDeviation, Visit
from trials.rules import Problems, timeline_problems
from trials.text import REASON_MAX, clean_text, parse_plain_decimal

WEIGHT_RANGE = (Decimal("20"), Decimal("250"))


def visit_date_problems(problems: Problems, participant: Participant, field: str, when: dt.date) -> None:
    """A visit date: not in the future, from day 0 on, after consent, before any death."""
    problems.check(not_future, field, when, "Visit date")
    infusion = first_infusion(participant)
    if infusion is None:
        problems.add(field, f"{participant.subject_code} has not been infused; follow-up visits start at day 0.")
    elif when < infusion.infusion_date:
        problems.add(
            field, f"The visit date {when:%Y-%m-%d} is before the infusion on {infusion.infusion_date:%Y-%m-%d}."
        )
    problems.check(ensure_consented_by, participant, field, when, "visit")
    for message in timeline_problems(timeline_of(participant), when, what="visit", after=()):
        problems.add(field, message)


def weight_problems(problems: Problems, field: str, weight) -> Decimal | None:
    value = problems.check(parse_plain_decimal, weight, label="Weight", field=field)
    low, high = WEIGHT_RANGE
    if value is not None and not low <= value <= high:
        problems.add(field, f"Weight must be between {low} and {high} kg.")
    return value


@transaction.atomic(durable=True)
def visit_record(
    *,
    actor,
    visit: Visit,
    actual_date: dt.date,
    weight_kg: Decimal | None = None,
    reason: str = "",
    expected_version: int | None = None,
    channel: str = "web",
) -> Visit:
    """Record that a scheduled visit took place. A visit outside its window is kept and flagged as a
    protocol deviation. Editing a recorded visit needs a reason and the version it was loaded with."""
    participant = Participant.objects.select_related("study").get(pk=visit.participant_id)
    ensure_writable(participant)
    already_recorded = Visit.objects.filter(pk=visit.pk, actual_date__isnull=False).exists()
    if visit.kind != Visit.Kind.SAFETY and not already_recorded:
        # A closed casebook takes no new visits, but a visit recorded before the disposition can
        # still be corrected (with a reason) during data cleaning.
        ensure_open(participant, "visit")
    problems = Problems()
    visit_date_problems(problems, participant, "actual_date", actual_date)
    weight_kg = weight_problems(problems, "weight_kg", weight_kg)
    reason = problems.check(clean_text, reason, max_length=REASON_MAX, label="The reason for change", field="reason")
    problems.raise_if_any()
    changes = {"actual_date": actual_date, "weight_kg": weight_kg, "missed": False, "missed_reason": ""}
    # Decide between first entry and edit on the locked row, not on the caller's copy: a visit
    # recorded since the form was loaded must not be overwritten without a reason for change.
    current = Visit.objects.select_for_update().get(pk=visit.pk)
    if current.actual_date is None and not current.missed:
        if expected_version is not None and current.version != expected_version:
            raise ConflictError("This visit was changed by someone else since you opened it. Reload it.")
        for key, value in changes.items():
            setattr(current, key, value)
        current.version += 1
        # First entry of a planned visit: the row exists since the infusion, so this is an UPDATE
        # and the database wants a reason; the workflow step is the reason.
        with audit_context(actor=actor, reason="visit recorded", channel=channel):
            save_validated(current)
    else:
        current = record_update(
            current,
            actor=actor,
            reason=reason,
            expected_version=expected_version,
            changes=changes,
            channel=channel,
        )
    already_flagged = ProtocolDeviation.objects.filter(
        visit=current, category=ProtocolDeviation.Category.VISIT_WINDOW, system_detected=True
    ).exists()
    if current.in_window is False and not already_flagged:
        with audit_context(actor=actor, channel=channel):
            save_validated(
                ProtocolDeviation(
                    participant=participant,
                    category=ProtocolDeviation.Category.VISIT_WINDOW,
                    description=(
                        f"{current.label} done on {actual_date:%Y-%m-%d}, outside its window "
                        f"{current.window_start:%Y-%m-%d} to {current.window_end:%Y-%m-%d}."
                    ),
                    detected_on=actual_date,
                    visit=current,
                    system_detected=True,
                )
            )
    return current


@transaction.atomic(durable=True)
def visit_mark_missed(*, actor, visit: Visit, reason: str, channel: str = "web") -> Visit:
    participant = Participant.objects.select_related("study").get(pk=visit.participant_id)
    ensure_writable(participant)
    problems = Problems()
    reason = problems.check(
        clean_text, reason, max_length=REASON_MAX, label="The reason the visit was missed", field="missed_reason"
    )
    if reason == "":
        problems.add("missed_reason", "Say why the visit was missed.")
    problems.raise_if_any()
    ensure_open(participant, "missed visit")
    current = Visit.objects.select_for_update().get(pk=visit.pk)
    if current.actual_date:
        raise RuleViolation("This visit took place; correct its date instead of marking it missed.")
    if current.kind != Visit.Kind.SCHEDULED:
        raise RuleViolation("Only a scheduled visit can be missed.")
    if current.missed:
        raise RuleViolation("This visit is already marked as missed.")
    if current.window_start and current.window_start > clinical_today():
        raise RuleViolation(
            f"The window of {current.label} only opens on {current.window_start:%Y-%m-%d}; it cannot be missed yet."
        )
    current.missed = True
    current.missed_reason = reason
    current.version += 1
    with audit_context(actor=actor, reason="visit missed", channel=channel):
        save_validated(current)
    return current


@transaction.atomic(durable=True)
def visit_add_unscheduled(
    *,
    actor,
    participant: Participant,
    actual_date: dt.date,
    reason: str,
    safety_follow_up: bool = False,
    weight_kg: Decimal | None = None,
    channel: str = "web",
) -> Visit:
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    ensure_writable(participant)
    if not safety_follow_up:
        ensure_open(participant, "unscheduled visit")
    problems = Problems()
    reason = problems.check(clean_text, reason, max_length=REASON_MAX, label="The reason for the visit", field="reason")
    if reason == "":
        problems.add("reason", "Say why this unscheduled visit took place.")
    visit_date_problems(problems, participant, "actual_date", actual_date)
    weight_kg = weight_problems(problems, "weight_kg", weight_kg)
    problems.raise_if_any()
    visit = Visit(
        participant=participant,
        kind=Visit.Kind.SAFETY if safety_follow_up else Visit.Kind.UNSCHEDULED,
        actual_date=actual_date,
        reason=reason,
        weight_kg=weight_kg,
    )
    with audit_context(actor=actor, channel=channel):
        save_validated(visit)
    return visit
