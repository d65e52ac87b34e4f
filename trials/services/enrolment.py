"""Enrolment into the next dose cohort with room (and, in a blinded study, the allocation)."""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from trials.audit import audit_context
from trials.errors import RuleViolation
from trials.guards import ensure_consented_by, ensure_writable, not_future, save_validated, timeline_of
from trials.models import DoseCohort, Participant, ParticipantStatus
from trials.rules import Problems, timeline_problems
from trials.services.integrity import allocate
from trials.services.screening import eligibility_unmet


def _cohort_enrolled(cohort: DoseCohort) -> int:
    return cohort.participants.exclude(status=ParticipantStatus.SCREEN_FAILED).count()


@transaction.atomic(durable=True)
def participant_enrol(*, actor, participant: Participant, enrolment_date: dt.date, channel: str = "web") -> Participant:
    """Enrol an eligible, consented participant into the next cohort that has room.

    Cohorts fill sequentially (dose escalation): the open cohort with the lowest number that is not
    yet full. The cohort rows are locked so two simultaneous enrolments cannot overfill one.
    """
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    ensure_writable(participant)
    if participant.status != ParticipantStatus.SCREENING:
        raise RuleViolation(
            f"{participant.subject_code} is {participant.get_status_display().lower()}, "
            "not in screening; only a screened participant can be enrolled."
        )
    problems = Problems()
    problems.check(not_future, "enrolment_date", enrolment_date, "Enrolment date")
    problems.check(ensure_consented_by, participant, "enrolment_date", enrolment_date, "enrolment")
    if "enrolment_date" not in problems and enrolment_date < participant.screening_date:
        problems.add("enrolment_date", "Enrolment cannot precede screening.")
    for message in timeline_problems(timeline_of(participant), enrolment_date, what="enrolment", after=()):
        problems.add("enrolment_date", message)
    unmet = eligibility_unmet(participant)
    if unmet:
        problems.add(None, f"{participant.subject_code} is not eligible: " + "; ".join(unmet) + ".")
    problems.raise_if_any()
    cohorts = DoseCohort.objects.select_for_update().filter(study=participant.study, is_open=True).order_by("number")
    cohort = next((c for c in cohorts if _cohort_enrolled(c) < c.capacity), None)
    if cohort is None:
        raise RuleViolation("Every open cohort of this study is full; no participant can be enrolled.")
    participant.cohort = cohort
    participant.enrolment_date = enrolment_date
    participant.status = ParticipantStatus.ENROLLED
    participant.version += 1
    with audit_context(actor=actor, reason="enrolment", channel=channel):
        save_validated(participant)
        if participant.study.is_blinded:
            allocate(participant, cohort)
    return participant
