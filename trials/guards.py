"""Write guards every casebook service shares, and the other apps' services too (docs/architecture.md:
shared write guards live in public modules of ``trials``).

- ``ensure_writable`` / ``ensure_open``: a locked casebook or study refuses every change; a closed
  casebook takes only safety follow-up;
- ``require_role`` / ``required_reason`` / ``check_password``: who may write, and why;
- ``save_validated`` / ``record_update``: validate then save; edit with a reason and a
  compare-and-set on the version the form was loaded with;
- ``not_future`` and ``timeline_of``: dates against today and against the participant's timeline.
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model
from django.utils import timezone

from trials.access_log import record_access
from trials.audit import audit_context
from trials.errors import ConflictError, LockedError, RuleViolation
from trials.models import AccessEvent, Consent, Disposition, Infusion, Participant
from trials.rules import Timeline
from trials.selectors import has_role
from trials.text import REASON_MAX, clean_text


def clinical_today() -> dt.date:
    """The latest calendar date anywhere on Earth (UTC+14).

    Clinical dates are local to the site; checking "not in the future" against the UTC date would
    refuse a legitimate same-day entry at a site east of Greenwich.
    """
    return (timezone.now() + dt.timedelta(hours=14)).date()


def not_future(field: str, value: dt.date | None, label: str) -> None:
    if value is not None and value > clinical_today():
        raise RuleViolation({field: f"{label} {value:%Y-%m-%d} is in the future."})


def not_future_time(field: str, value: dt.datetime | None, label: str) -> None:
    if value is not None and value > timezone.now() + dt.timedelta(minutes=5):
        raise RuleViolation({field: f"{label} is in the future."})


def ensure_writable(participant: Participant) -> None:
    study = participant.study
    if study.is_locked:
        raise LockedError(f"Study {study.code} is locked; no data can be changed.")
    if participant.is_locked:
        raise LockedError(f"The casebook of {participant.subject_code} is locked; no data can be changed.")


def ensure_open(participant: Participant, what: str) -> None:
    """After disposition or screen failure only safety follow-up may still be recorded."""
    if participant.is_closed:
        raise RuleViolation(
            f"{participant.subject_code} is {participant.get_status_display().lower()}: "
            f"no {what} can be recorded, only safety follow-up."
        )


def first_consent(participant: Participant) -> Consent | None:
    return participant.consents.order_by("consent_date").first()


def ensure_consented_by(participant: Participant, field: str, when: dt.date, what: str) -> None:
    consent = first_consent(participant)
    if consent is None:
        raise RuleViolation({field: f"{participant.subject_code} has not consented: no {what} before consent."})
    if when < consent.consent_date:
        raise RuleViolation(
            {field: f"The {what} date {when:%Y-%m-%d} is before consent on {consent.consent_date:%Y-%m-%d}."}
        )


def first_infusion(participant: Participant) -> Infusion | None:
    return participant.infusions.filter(voided_at__isnull=True).order_by("number").first()


def timeline_of(participant: Participant) -> Timeline:
    """The participant's milestones from the database (voided records do not count)."""
    consent = first_consent(participant)
    infusion = first_infusion(participant)
    last_visit = (
        participant.visits.filter(voided_at__isnull=True, actual_date__isnull=False).order_by("-actual_date").first()
    )
    death = Disposition.objects.filter(participant=participant, voided_at__isnull=True).values_list(
        "death_date", flat=True
    )
    return Timeline(
        birth_year=participant.birth_year,
        screening_date=participant.screening_date,
        consent_date=consent.consent_date if consent else None,
        enrolment_date=participant.enrolment_date,
        infusion_date=infusion.infusion_date if infusion else None,
        last_visit_date=last_visit.actual_date if last_visit else None,
        death_date=death.first(),
    )


def save_validated(instance: Model) -> None:
    """Validate the fields, then save. Uniqueness and check constraints are not re-queried here:
    the services test each rule with its own message first, and PostgreSQL enforces the
    constraints in the same statement (re-checking them costs one query per constraint)."""
    instance.full_clean(validate_unique=False, validate_constraints=False)
    instance.save()


def record_update(
    instance: Model, *, actor, reason: str, expected_version: int | None, changes: dict, channel: str
) -> Model:
    """Apply ``changes`` to an existing clinical record: reason required, stale writes refused.

    The version check is a compare-and-set (healthchecks' conditional update): the row is updated
    only if its version is still the one the form was loaded with.
    """
    try:
        reason = clean_text(reason, max_length=REASON_MAX, label="The reason for change")
    except ValidationError as exc:
        raise RuleViolation({"reason": exc.messages}) from None
    if not reason:
        raise RuleViolation({"reason": "A reason for change is required to edit a saved record."})
    model = type(instance)
    current = model.objects.select_for_update().get(pk=instance.pk)
    if expected_version is not None and current.version != expected_version:
        raise ConflictError(
            "This record was changed by someone else since you opened it "
            f"(version {current.version}, yours {expected_version}). Reload it and enter your change again."
        )
    for field, value in changes.items():
        setattr(current, field, value)
    current.version += 1
    current.full_clean(validate_unique=False, validate_constraints=False)
    with audit_context(actor=actor, reason=reason, channel=channel):
        current.save()
    return current


def require_role(actor, *, study, roles: set[str], site=None, action: str) -> None:
    """Refuse unless ``actor`` holds one of ``roles`` in ``study`` (at ``site`` for site-bound roles)."""
    # Fresh memberships: the actor object may carry a cache from earlier in the request.
    if hasattr(actor, "_tolerance_memberships"):
        del actor._tolerance_memberships
    if not has_role(actor, study=study, roles=roles, site=site):
        raise PermissionDenied(f"Your role does not allow you to {action}.")


def required_reason(reason: str, field: str = "reason") -> str:
    """The reason, cleaned and bounded (``trials.text``); refused when empty."""
    try:
        reason = clean_text(reason, max_length=REASON_MAX, label="The reason")
    except ValidationError as exc:
        raise RuleViolation({field: exc.messages}) from None
    if not reason:
        raise RuleViolation({field: "A reason is required."})
    return reason


def check_password(actor, password: str, http_request=None) -> None:
    """Re-authentication for signatures and unblinding; a failure is audited as an access event."""
    if not password or not actor.check_password(password):
        # Callers run this outside their atomic block so the failed attempt is never rolled back.
        record_access(kind=AccessEvent.Kind.SIGNATURE_FAILED, request=http_request, user=actor)
        raise RuleViolation({"password": "The password is not correct; nothing was signed."})


def participant_of(record) -> Participant:
    if isinstance(record, Participant):
        return record
    if hasattr(record, "participant_id"):
        return Participant.objects.select_related("study", "site").get(pk=record.participant_id)
    if hasattr(record, "visit_id"):
        return Participant.objects.select_related("study", "site").get(visits__pk=record.visit_id)
    raise TypeError(f"{type(record).__name__} is not part of a casebook")
