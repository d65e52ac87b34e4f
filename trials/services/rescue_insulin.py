"""Intercurrent events and the T1D insulin log (read by the durability analyses)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import transaction

from trials.audit import audit_context
from trials.errors import RuleViolation
from trials.guards import (
    ensure_consented_by,
    ensure_open,
    ensure_writable,
    first_infusion,
    not_future,
    save_validated,
    timeline_of,
)
from trials.models import Indication, InsulinDoseChange, Participant, RescueTherapy
from trials.rules import Problems, timeline_problems
from trials.services.assessments import range_problem
from trials.text import NAME_MAX, REASON_MAX, clean_identifier, clean_text


@transaction.atomic(durable=True)
def rescue_therapy_record(
    *,
    actor,
    participant: Participant,
    start_date: dt.date,
    stop_date: dt.date | None,
    category: str,
    agent: str,
    reason: str,
    channel: str = "web",
) -> RescueTherapy:
    """Record a rescue or new disease-modifying therapy started after the infusion, in any indication:
    an intercurrent event for remission durability (ICH E9(R1)). What a participant took before the
    infusion is prior medication, not rescue, so it is refused here."""
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    ensure_writable(participant)
    # After withdrawal a new therapy is no longer collected as efficacy data, like a relapse.
    ensure_open(participant, "rescue therapy")
    problems = Problems()
    if category not in RescueTherapy.Category.values:
        problems.add("category", f"Unknown rescue therapy category {category!r}.")
    agent = problems.check(clean_identifier, agent, max_length=NAME_MAX, label="The agent", field="agent")
    if agent == "":
        problems.add("agent", "Name the agent (the drug), e.g. methylprednisolone.")
    reason = problems.check(clean_text, reason, max_length=REASON_MAX, label="The reason", field="reason")
    if reason == "":
        problems.add("reason", "Say why the rescue therapy was started.")
    problems.check(not_future, "start_date", start_date, "Rescue therapy start")
    problems.check(not_future, "stop_date", stop_date, "Rescue therapy stop")
    problems.check(ensure_consented_by, participant, "start_date", start_date, "rescue therapy")
    timeline = timeline_of(participant)
    for field, when, what in (
        ("start_date", start_date, "rescue therapy start"),
        ("stop_date", stop_date, "rescue therapy stop"),
    ):
        for message in timeline_problems(timeline, when, what=what, after=()):
            problems.add(field, message)
    infusion = first_infusion(participant)
    if "start_date" in problems:
        pass  # consent (or the date itself) is the first thing to correct
    elif infusion is None:
        problems.add(
            "start_date", f"{participant.subject_code} has not been infused: rescue therapy is recorded after day 0."
        )
    elif start_date < infusion.infusion_date:
        problems.add(
            "start_date",
            f"The start {start_date:%Y-%m-%d} is before the infusion on {infusion.infusion_date:%Y-%m-%d}: "
            "a therapy before dosing is prior medication, not rescue.",
        )
    if stop_date is not None and stop_date < start_date:
        problems.add("stop_date", f"The stop date {stop_date:%Y-%m-%d} is before the start on {start_date:%Y-%m-%d}.")
    problems.raise_if_any()
    therapy = RescueTherapy(
        participant=participant,
        start_date=start_date,
        stop_date=stop_date,
        category=category,
        agent=agent,
        reason=reason,
    )
    with audit_context(actor=actor, channel=channel):
        save_validated(therapy)
    return therapy


@transaction.atomic(durable=True)
def insulin_dose_record(
    *,
    actor,
    participant: Participant,
    effective_date: dt.date,
    total_daily_units: Decimal,
    source: str,
    note: str = "",
    channel: str = "web",
) -> InsulinDoseChange:
    """Record a change of a T1D participant's total daily insulin from ``effective_date`` on (0 U/day:
    insulin stopped). The log is a step function with at most one current entry per date; a wrong
    entry is voided and entered again."""
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    ensure_writable(participant)
    ensure_open(participant, "insulin dose")
    if participant.study.indication != Indication.T1D:
        raise RuleViolation("Insulin dose logs are kept in type 1 diabetes studies only.")
    problems = Problems()
    if source not in InsulinDoseChange.Source.values:
        problems.add("source", f"Unknown source {source!r}.")
    problem = range_problem("insulin_total_daily_units", total_daily_units)
    if problem:
        problems.add("total_daily_units", problem)
    problems.check(not_future, "effective_date", effective_date, "Insulin dose change")
    problems.check(ensure_consented_by, participant, "effective_date", effective_date, "insulin dose")
    for message in timeline_problems(timeline_of(participant), effective_date, what="insulin dose change", after=()):
        problems.add("effective_date", message)
    note = problems.check(clean_text, note, max_length=REASON_MAX, label="The note", field="note")
    same_day = participant.insulin_dose_changes.filter(voided_at__isnull=True, effective_date=effective_date).first()
    if same_day is not None:
        problems.add(
            "effective_date",
            f"A dose of {same_day.total_daily_units} U/day from {effective_date:%Y-%m-%d} is "
            "already recorded; void it to enter a correction.",
        )
    problems.raise_if_any()
    change = InsulinDoseChange(
        participant=participant,
        effective_date=effective_date,
        total_daily_units=total_daily_units,
        source=source,
        note=note,
    )
    with audit_context(actor=actor, channel=channel):
        save_validated(change)
    return change
