"""Integrity: casebook and study locks, voiding, blinded allocation and emergency unblinding
(docs/reliability.md §B, §C). E-signatures are in ``trials.signatures``."""

from __future__ import annotations

from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from trials.audit import audit_context
from trials.errors import RuleViolation
from trials.guards import (
    check_password,
    ensure_writable,
    participant_of,
    require_role,
    required_reason,
)
from trials.models import (
    DATA_ENTRY_ROLES,
    DoseCohort,
    EmergencyUnblinding,
    Participant,
    RandomizationSlot,
    Role,
    Study,
    StudyMembership,
)


@transaction.atomic(durable=True)
def casebook_set_locked(*, actor, participant: Participant, locked: bool, reason: str, channel: str = "web"):
    """Lock or unlock one participant's casebook (data managers). Unlocking needs a reason too."""
    reason = required_reason(reason)
    require_role(actor, study=participant.study, roles={Role.DATA_MANAGER}, action="lock casebooks")
    current = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    if current.is_locked == locked:
        raise RuleViolation(f"The casebook of {current.subject_code} is already {'locked' if locked else 'unlocked'}.")
    current.is_locked = locked
    # The version stays: it counts changes of clinical data (forms compare it), and a lock is none.
    with audit_context(actor=actor, reason=f"{'lock' if locked else 'unlock'}: {reason}", channel=channel):
        current.save(update_fields=["is_locked", "updated_at"])
    return current


@transaction.atomic(durable=True)
def study_set_locked(*, actor, study: Study, locked: bool, reason: str, channel: str = "web") -> Study:
    """Database lock of a whole study (e.g. before an interim analysis), and its reasoned unlock."""
    reason = required_reason(reason)
    require_role(actor, study=study, roles={Role.DATA_MANAGER}, action="lock a study")
    current = Study.objects.select_for_update().get(pk=study.pk)
    if current.is_locked == locked:
        raise RuleViolation(f"Study {current.code} is already {'locked' if locked else 'unlocked'}.")
    current.is_locked = locked
    with audit_context(actor=actor, reason=f"{'lock' if locked else 'unlock'}: {reason}", channel=channel):
        current.save(update_fields=["is_locked"])
    return current


@transaction.atomic(durable=True)
def record_void(*, actor, record, reason: str, channel: str = "web"):
    """Void a clinical record instead of deleting it: it stays in the database and the audit trail,
    visible to data managers and auditors, and drops out of analyses and exports."""
    reason = required_reason(reason)
    participant = participant_of(record)
    ensure_writable(participant)
    require_role(
        actor,
        study=participant.study,
        roles=set(DATA_ENTRY_ROLES) | {Role.DATA_MANAGER},
        site=participant.site,
        action="void records",
    )
    model = type(record)
    current = model.objects.select_for_update().get(pk=record.pk)
    if current.voided_at is not None:
        raise RuleViolation("This record is already voided.")
    current.voided_at = timezone.now()
    current.voided_by = actor
    current.void_reason = reason
    current.version += 1
    with audit_context(actor=actor, reason=f"void: {reason}", channel=channel):
        current.save(update_fields=["voided_at", "voided_by", "void_reason", "version", "updated_at"])
    return current


def allocate(participant: Participant, cohort: DoseCohort) -> None:
    """Blinded studies: give the participant the next free slot of the cohort's allocation list."""
    slot = (
        RandomizationSlot.objects.select_for_update()
        .filter(cohort=cohort, participant__isnull=True)
        .order_by("sequence")
        .first()
    )
    if slot is None:
        raise RuleViolation(f"The allocation list of cohort {cohort.number} is exhausted; ask the data manager.")
    slot.participant = participant
    slot.allocated_at = timezone.now()
    slot.save(update_fields=["participant", "allocated_at"])


def participant_unblind(
    *, actor, participant: Participant, password: str, reason: str, http_request=None, channel: str = "web"
) -> str:
    """Emergency unblinding of one participant by an investigator: re-authenticated, reasoned,
    audited and notified to the medical monitors. Returns the arm."""
    reason = required_reason(reason)
    require_role(actor, study=participant.study, roles={Role.INVESTIGATOR}, site=participant.site, action="unblind")
    slot = RandomizationSlot.objects.filter(participant=participant).first()
    if slot is None:
        raise RuleViolation(f"{participant.subject_code} has no randomized allocation.")
    check_password(actor, password, http_request)
    with (
        transaction.atomic(durable=True),
        audit_context(actor=actor, reason=f"emergency unblinding: {reason}", channel=channel),
    ):
        unblinding = EmergencyUnblinding.objects.create(participant=participant, user=actor, reason=reason)
        transaction.on_commit(lambda: _notify_unblinding(unblinding.pk))
    return slot.arm


def _notify_unblinding(unblinding_id: int) -> None:
    unblinding = EmergencyUnblinding.objects.select_related("participant__study", "user").get(pk=unblinding_id)
    study = unblinding.participant.study
    recipients = sorted(
        {
            m.user.email
            for m in StudyMembership.objects.filter(study=study, role=Role.MEDICAL_MONITOR).select_related("user")
            if m.user.email
        }
    )
    if recipients:
        # The arm itself is never put in the message: it goes to people who may be blinded.
        send_mail(
            subject=f"[{study.code}] Emergency unblinding of {unblinding.participant.subject_code}",
            message=(
                f"{unblinding.user.get_full_name() or unblinding.user.get_username()} unblinded "
                f"{unblinding.participant.subject_code} at {unblinding.at:%Y-%m-%d %H:%M} UTC.\n"
                f"Reason: {unblinding.reason}"
            ),
            from_email=None,
            recipient_list=recipients,
        )
