"""Locking, voiding, e-signatures and blinding, through the services."""

import datetime as dt

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied

from tests.factories import admin_change, build_study, enrolled, infused, member
from trials import services
from trials.errors import LockedError, RuleViolation
from trials.models import (
    AccessEvent,
    EmergencyUnblinding,
    Participant,
    RandomizationSlot,
    Role,
    Signature,
    Visit,
)

PASSWORD = "correct-horse-battery"


@pytest.fixture
def investigator(study, sites):
    return member("pi_a", study, Role.INVESTIGATOR, sites[0])


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    return infused(study, sites[0], coordinator_site_a)


def test_a_data_manager_locks_a_casebook_and_it_refuses_edits(participant, data_manager, coordinator_site_a):
    services.casebook_set_locked(actor=data_manager, participant=participant, locked=True, reason="SDV complete")
    visit = participant.visits.get(definition__code="d7")
    with pytest.raises(LockedError, match="is locked"):
        services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 2, 10))
    assert Visit.objects.get(pk=visit.pk).actual_date is None
    services.casebook_set_locked(actor=data_manager, participant=participant, locked=False, reason="query on AE")
    services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 2, 10))
    assert Visit.objects.get(pk=visit.pk).actual_date == dt.date(2025, 2, 10)


def test_locking_needs_a_reason_and_a_data_manager(participant, data_manager, coordinator_site_a, monitor):
    with pytest.raises(RuleViolation) as exc:
        services.casebook_set_locked(actor=data_manager, participant=participant, locked=True, reason=" ")
    assert "reason" in exc.value.message_dict
    for user in (coordinator_site_a, monitor):
        with pytest.raises(PermissionDenied):
            services.casebook_set_locked(actor=user, participant=participant, locked=True, reason="x")
    assert not Participant.objects.get(pk=participant.pk).is_locked


def test_a_study_lock_refuses_every_write_and_the_unlock_is_audited(
    study, participant, data_manager, coordinator_site_a, sites
):
    services.study_set_locked(actor=data_manager, study=study, locked=True, reason="interim analysis cut")
    with pytest.raises(LockedError, match="is locked"):
        services.participant_screen(
            actor=coordinator_site_a,
            study=study,
            site=sites[0],
            sex="M",
            birth_year=1990,
            screening_date=dt.date(2025, 3, 1),
        )
    services.study_set_locked(actor=data_manager, study=study, locked=False, reason="cut taken")
    event = study.pgh_event_model.objects.filter(pgh_obj_id=study.pk).order_by("-pgh_id").first()
    assert event.pgh_context.metadata["reason"] == "unlock: cut taken"
    assert event.pgh_context.metadata["user"] == data_manager.pk


def test_a_voided_record_stays_with_its_reason(participant, coordinator_site_a):
    visit = participant.visits.get(definition__code="d7")
    services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 2, 10))
    services.record_void(actor=coordinator_site_a, record=Visit.objects.get(pk=visit.pk), reason="entered twice")
    visit = Visit.objects.get(pk=visit.pk)
    assert visit.voided_at is not None
    assert (visit.voided_by, visit.void_reason) == (coordinator_site_a, "entered twice")
    with pytest.raises(RuleViolation, match="already voided"):
        services.record_void(actor=coordinator_site_a, record=visit, reason="again")


def test_voiding_needs_a_reason_and_a_role_at_the_site(participant, coordinator_site_b, coordinator_site_a):
    visit = participant.visits.get(definition__code="d7")
    with pytest.raises(RuleViolation):
        services.record_void(actor=coordinator_site_a, record=visit, reason="")
    with pytest.raises(PermissionDenied):
        services.record_void(actor=coordinator_site_b, record=visit, reason="not mine")
    assert Visit.objects.get(pk=visit.pk).voided_at is None


def test_an_investigator_signs_and_a_later_change_invalidates_the_signature(
    participant, investigator, coordinator_site_a
):
    visit = participant.visits.get(definition__code="d7")
    services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 2, 10))
    visit.refresh_from_db()
    signature = services.record_sign(actor=investigator, record=visit, password=PASSWORD, meaning="review")
    state = services.signature_state(visit)
    assert state["valid"] is True
    assert state["signature"] == signature
    assert signature.signer_name == "pi_a"
    assert signature.signed_at is not None

    services.visit_record(
        actor=coordinator_site_a,
        visit=visit,
        actual_date=dt.date(2025, 2, 11),
        reason="date transcribed wrongly",
        expected_version=visit.version,
    )
    visit.refresh_from_db()
    state = services.signature_state(visit)
    assert state["valid"] is False
    assert state["invalidated_on"] == visit.updated_at


def test_a_wrong_password_signs_nothing_and_is_audited(participant, investigator):
    with pytest.raises(RuleViolation) as exc:
        services.record_sign(actor=investigator, record=participant, password="wrong", meaning="casebook")
    assert "password" in exc.value.message_dict
    assert not Signature.objects.exists()
    assert AccessEvent.objects.get(kind="signature_failed").user == investigator


def test_only_an_investigator_of_the_site_can_sign(participant, coordinator_site_a, study, sites):
    other_pi = member("pi_b", study, Role.INVESTIGATOR, sites[1])
    for user in (coordinator_site_a, other_pi):
        with pytest.raises(PermissionDenied):
            services.record_sign(actor=user, record=participant, password=PASSWORD, meaning="casebook")
    assert not Signature.objects.exists()


@pytest.fixture
def blinded_study(sites):
    study = build_study(code="TREG-BLIND", sites=list(sites), capacity=4)  # more places than slots
    with admin_change("randomized, blinded design"):
        study.is_blinded = True
        study.save()
    for cohort in study.cohorts.all():
        for sequence, arm in enumerate(["ARM-ZX81Q", "PLACEBO-QK2", "ARM-ZX81Q"], start=1):
            RandomizationSlot.objects.create(study=study, cohort=cohort, sequence=sequence, arm=arm)
    return study


def test_enrolment_in_a_blinded_study_takes_the_next_allocation_slot(blinded_study, sites):
    coordinator = member("coord_blind", blinded_study, Role.COORDINATOR, sites[0])
    first = enrolled(blinded_study, sites[0], coordinator)
    second = enrolled(blinded_study, sites[0], coordinator)
    assert RandomizationSlot.objects.get(participant=first).sequence == 1
    assert RandomizationSlot.objects.get(participant=second).arm == "PLACEBO-QK2"


def test_enrolment_is_refused_when_the_allocation_list_is_exhausted(blinded_study, sites):
    coordinator = member("coord_blind", blinded_study, Role.COORDINATOR, sites[0])
    first_three = [enrolled(blinded_study, sites[0], coordinator) for _ in range(3)]
    assert [RandomizationSlot.objects.get(participant=p).sequence for p in first_three] == [1, 2, 3]
    with pytest.raises(RuleViolation, match="allocation list of cohort 1 is exhausted"):
        enrolled(blinded_study, sites[0], coordinator)


def test_emergency_unblinding_reveals_one_arm_audits_and_notifies_without_the_arm(
    blinded_study, sites, django_capture_on_commit_callbacks
):
    coordinator = member("coord_blind", blinded_study, Role.COORDINATOR, sites[0])
    pi = member("pi_blind", blinded_study, Role.INVESTIGATOR, sites[0])
    safety = member("medmon", blinded_study, Role.MEDICAL_MONITOR)
    safety.email = "safety@example.org"
    safety.save()
    participant = enrolled(blinded_study, sites[0], coordinator)
    with pytest.raises(RuleViolation):
        services.participant_unblind(actor=pi, participant=participant, password=PASSWORD, reason="")
    with pytest.raises(PermissionDenied):
        services.participant_unblind(actor=coordinator, participant=participant, password=PASSWORD, reason="x")
    assert not EmergencyUnblinding.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        arm = services.participant_unblind(
            actor=pi, participant=participant, password=PASSWORD, reason="anaphylaxis, treating physician needs the arm"
        )
    assert arm == "ARM-ZX81Q"
    unblinding = EmergencyUnblinding.objects.get()
    assert unblinding.user == pi
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["safety@example.org"]
    assert "ARM-ZX81Q" not in mail.outbox[0].body
    assert participant.subject_code in mail.outbox[0].subject


def test_a_withdrawn_membership_loses_access_and_the_withdrawal_is_audited(participant, coordinator_site_a):
    from django.http import Http404

    from tests.factories import admin_change
    from trials.models import StudyMembership
    from trials.selectors import participant_get

    membership = StudyMembership.objects.get(user=coordinator_site_a)
    with admin_change("left the study team"):
        membership.is_active = False
        membership.save()
    coordinator_site_a.refresh_from_db()
    fresh_user = type(coordinator_site_a).objects.get(pk=coordinator_site_a.pk)
    with pytest.raises(Http404):
        participant_get(user=fresh_user, pk=participant.pk)
    event = StudyMembership.pgh_event_model.objects.filter(pgh_obj_id=membership.pk).order_by("-pgh_id").first()
    assert event.is_active is False
    assert event.pgh_context.metadata["reason"] == "left the study team"
