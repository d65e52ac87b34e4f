"""Disposition (SDTM DS): completion, withdrawal, loss to follow-up or death."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import Max

from trials.audit import audit_context
from trials.errors import RuleViolation
from trials.guards import ensure_writable, first_infusion, not_future, save_validated, timeline_of
from trials.models import (
    Disposition,
    InsulinDoseChange,
    MRIRead,
    Participant,
    ParticipantStatus,
    Relapse,
    RescueTherapy,
)
from trials.rules import Problems, timeline_problems
from trials.text import REASON_MAX, clean_text

_DISPOSITION_STATUS = {
    Disposition.Kind.COMPLETED: ParticipantStatus.COMPLETED,
    Disposition.Kind.WITHDRAWN: ParticipantStatus.WITHDRAWN,
    Disposition.Kind.LOST: ParticipantStatus.LOST,
    Disposition.Kind.DEATH: ParticipantStatus.DIED,
}


def _last_recorded_events(participant: Participant) -> list[tuple[str, dt.date]]:
    """The latest date of each kind of clinical record the participant was alive for."""
    found = []
    for what, queryset, field in (
        ("relapse", Relapse.objects.filter(participant=participant), "onset_date"),
        ("rescue therapy", RescueTherapy.objects.filter(participant=participant), "start_date"),
        ("insulin dose change", InsulinDoseChange.objects.filter(participant=participant), "effective_date"),
        ("MRI scan", MRIRead.objects.filter(visit__participant=participant), "scan_date"),
    ):
        latest = queryset.filter(voided_at__isnull=True).aggregate(latest=Max(field))["latest"]
        if latest is not None:
            found.append((what, latest))
    return found


def _death_date_problems(problems: Problems, participant: Participant, death_date: dt.date) -> None:
    """A death date must follow everything the participant was alive for."""
    timeline = timeline_of(participant)
    after = ("screening", "consent", "enrolment", "infusion", "last_visit")
    for message in timeline_problems(timeline, death_date, what="death", after=after):
        problems.add("death_date", message)
    for what, latest in _last_recorded_events(participant):
        if death_date < latest:
            problems.add(
                "death_date",
                f"The date of death {death_date:%Y-%m-%d} is before a recorded {what} on {latest:%Y-%m-%d}.",
            )


@transaction.atomic(durable=True)
def disposition_record(
    *,
    actor,
    participant: Participant,
    kind: str,
    disposition_date: dt.date,
    reason: str = "",
    death_date: dt.date | None = None,
    channel: str = "web",
) -> Disposition:
    """End a participant's study participation and update their status accordingly."""
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    ensure_writable(participant)
    if participant.status not in (ParticipantStatus.ENROLLED, ParticipantStatus.IN_FOLLOW_UP):
        raise RuleViolation(
            f"{participant.subject_code} is {participant.get_status_display().lower()}; "
            "only an enrolled participant has a disposition."
        )
    problems = Problems()
    if kind not in _DISPOSITION_STATUS:
        problems.add("kind", f"Unknown disposition {kind!r}.")
    problems.check(not_future, "disposition_date", disposition_date, "Disposition date")
    if participant.enrolment_date and disposition_date < participant.enrolment_date:
        problems.add("disposition_date", "Disposition cannot precede enrolment.")
    for message in timeline_problems(timeline_of(participant), disposition_date, what="disposition", after=()):
        problems.add("disposition_date", message)
    reason = problems.check(clean_text, reason, max_length=REASON_MAX, label="The reason", field="reason")
    if kind in (Disposition.Kind.WITHDRAWN, Disposition.Kind.LOST) and reason == "":
        problems.add("reason", "Give the reason for the withdrawal or loss to follow-up.")
    if kind == Disposition.Kind.DEATH:
        if death_date is None:
            problems.add("death_date", "The date of death is required.")
        else:
            problems.check(not_future, "death_date", death_date, "Date of death")
            if death_date > disposition_date:
                problems.add("death_date", "The date of death cannot follow the disposition date.")
            _death_date_problems(problems, participant, death_date)
    elif death_date is not None:
        problems.add("death_date", "A date of death is only recorded with a death disposition.")
    if kind == Disposition.Kind.COMPLETED:
        infusion = first_infusion(participant)
        end = infusion.infusion_date + dt.timedelta(days=participant.study.follow_up_days) if infusion else None
        if end is None or disposition_date < end:
            problems.add(
                "kind",
                "Completion is only possible at the end of follow-up"
                + (f" ({end:%Y-%m-%d})." if end else " after the infusion."),
            )
    last_visit = (
        participant.visits.filter(voided_at__isnull=True).exclude(actual_date=None).order_by("-actual_date").first()
    )
    if last_visit and disposition_date < last_visit.actual_date and kind != Disposition.Kind.DEATH:
        problems.add("disposition_date", f"A visit took place after this date ({last_visit.actual_date:%Y-%m-%d}).")
    problems.raise_if_any()
    disposition = Disposition(
        participant=participant,
        kind=kind,
        disposition_date=disposition_date,
        reason=reason,
        death_date=death_date,
    )
    participant.status = _DISPOSITION_STATUS[kind]
    participant.version += 1
    with audit_context(actor=actor, reason=f"disposition: {kind}", channel=channel):
        save_validated(disposition)
        save_validated(participant)
    return disposition
