"""Enrolment into sequentially filling dose cohorts, and screen failure."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from tests.factories import admin_change, consented, eligible, enrolled, screened
from tests.trials.conftest import CLINICAL_TODAY
from trials import services
from trials.errors import LockedError, RuleViolation
from trials.models import DoseCohort, Participant, ParticipantStatus, Study

ENROLMENT_DATE = dt.date(2025, 1, 13)


def _enrol(participant, actor, on=ENROLMENT_DATE):
    return services.participant_enrol(actor=actor, participant=participant, enrolment_date=on)


def _assert_still_screening(participant):
    participant.refresh_from_db()
    assert (participant.status, participant.cohort_id, participant.enrolment_date, participant.version) == (
        ParticipantStatus.SCREENING,
        None,
        None,
        1,
    )


def _answer(participant, actor, *, inclusion=None, exclusion=None):
    answers = {}
    for criterion in participant.study.criteria.all():
        value = inclusion if criterion.kind == criterion.Kind.INCLUSION else exclusion
        if value is not None:
            answers[criterion.pk] = value
    services.eligibility_record(actor=actor, participant=participant, answers=answers)


def test_it_enrols_a_consented_eligible_participant_into_cohort_1(study, sites, coordinator_site_a):
    participant = eligible(study, sites[0], coordinator_site_a)

    _enrol(participant, coordinator_site_a)

    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.ENROLLED
    assert participant.cohort.number == 1
    assert participant.enrolment_date == ENROLMENT_DATE
    assert participant.version == 2


def test_it_fills_cohort_1_to_capacity_before_cohort_2(study, sites, coordinator_site_a):
    cohorts = [enrolled(study, sites[i % 2], coordinator_site_a).cohort.number for i in range(5)]

    assert cohorts == [1, 1, 1, 2, 2]


def test_it_skips_a_closed_cohort(study, sites, coordinator_site_a):
    with admin_change():
        DoseCohort.objects.filter(study=study, number=1).update(is_open=False)

    assert enrolled(study, sites[0], coordinator_site_a).cohort.number == 2


def test_it_refuses_enrolment_when_every_open_cohort_is_full(study, sites, coordinator_site_a, row_counts):
    with admin_change():
        DoseCohort.objects.filter(study=study, number=1).update(capacity=1)
    with admin_change():
        DoseCohort.objects.filter(study=study, number__gt=1).update(is_open=False)
    enrolled(study, sites[0], coordinator_site_a)
    participant = eligible(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _enrol(participant, coordinator_site_a)

    assert exc.value.messages == ["Every open cohort of this study is full; no participant can be enrolled."]
    assert row_counts() == before
    _assert_still_screening(participant)


def test_it_refuses_enrolment_without_consent(study, sites, coordinator_site_a, row_counts):
    participant = screened(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _enrol(participant, coordinator_site_a)

    # Every problem at once: no consent, and the eligibility that could not be assessed without it.
    assert exc.value.message_dict == {
        "enrolment_date": ["S01-0001 has not consented: no enrolment before consent."],
        "__all__": ["S01-0001 is not eligible: Exclusion 1 is not answered; Inclusion 1 is not answered."],
    }
    assert row_counts() == before
    _assert_still_screening(participant)


def test_it_refuses_an_enrolment_date_before_consent(study, sites, coordinator_site_a, row_counts):
    participant = eligible(study, sites[0], coordinator_site_a, on=dt.date(2025, 1, 10))
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _enrol(participant, coordinator_site_a, on=dt.date(2025, 1, 9))

    assert exc.value.message_dict == {
        "enrolment_date": ["The enrolment date 2025-01-09 is before consent on 2025-01-10."]
    }
    assert row_counts() == before
    _assert_still_screening(participant)


def test_it_refuses_an_enrolment_date_in_the_future(study, sites, coordinator_site_a, frozen_now, row_counts):
    participant = eligible(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _enrol(participant, coordinator_site_a, on=CLINICAL_TODAY + dt.timedelta(days=1))

    assert exc.value.message_dict == {"enrolment_date": ["Enrolment date 2025-06-03 is in the future."]}
    assert row_counts() == before
    _assert_still_screening(participant)


def test_it_refuses_enrolment_with_an_unanswered_criterion(study, sites, coordinator_site_a, row_counts):
    participant = consented(study, sites[0], coordinator_site_a)
    _answer(participant, coordinator_site_a, inclusion=True)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _enrol(participant, coordinator_site_a)

    assert exc.value.messages == ["S01-0001 is not eligible: Exclusion 1 is not answered."]
    assert row_counts() == before
    _assert_still_screening(participant)


def test_it_refuses_enrolment_when_an_inclusion_criterion_is_not_met(study, sites, coordinator_site_a, row_counts):
    participant = consented(study, sites[0], coordinator_site_a)
    _answer(participant, coordinator_site_a, inclusion=False, exclusion=False)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _enrol(participant, coordinator_site_a)

    assert exc.value.messages == ["S01-0001 is not eligible: Inclusion 1 is not met."]
    assert row_counts() == before
    _assert_still_screening(participant)


def test_it_refuses_enrolment_when_an_exclusion_criterion_applies(study, sites, coordinator_site_a, row_counts):
    participant = consented(study, sites[0], coordinator_site_a)
    _answer(participant, coordinator_site_a, inclusion=True, exclusion=True)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _enrol(participant, coordinator_site_a)

    assert exc.value.messages == ["S01-0001 is not eligible: Exclusion 1 is not met."]
    assert row_counts() == before
    _assert_still_screening(participant)


def test_it_refuses_to_enrol_a_participant_twice(study, sites, coordinator_site_a, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation, match="S01-0001 is enrolled, not in screening"):
        _enrol(participant, coordinator_site_a, on=dt.date(2025, 1, 20))

    assert row_counts() == before
    participant.refresh_from_db()
    assert (participant.enrolment_date, participant.version) == (ENROLMENT_DATE, 2)


# ---------------------------------------------------------------------------------------------
# Screen failure
# ---------------------------------------------------------------------------------------------


def test_it_records_a_screen_failure_with_its_reason(study, sites, coordinator_site_a):
    participant = consented(study, sites[0], coordinator_site_a)

    services.participant_screen_fail(actor=coordinator_site_a, participant=participant, reason="  HbA1c too high ")

    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.SCREEN_FAILED
    assert participant.screen_failure_reason == "HbA1c too high"
    assert participant.cohort_id is None


def test_it_refuses_a_screen_failure_without_a_reason(study, sites, coordinator_site_a, row_counts):
    participant = consented(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.participant_screen_fail(actor=coordinator_site_a, participant=participant, reason=" ")

    assert exc.value.message_dict == {"reason": ["Give the reason for the screen failure."]}
    assert row_counts() == before
    _assert_still_screening(participant)


def test_it_refuses_to_enrol_a_screen_failure(study, sites, coordinator_site_a, row_counts):
    participant = eligible(study, sites[0], coordinator_site_a)
    services.participant_screen_fail(actor=coordinator_site_a, participant=participant, reason="Withdrew consent")
    before = row_counts()

    with pytest.raises(RuleViolation, match="S01-0001 is screen failure, not in screening"):
        _enrol(participant, coordinator_site_a)

    assert row_counts() == before
    participant.refresh_from_db()
    assert (participant.status, participant.cohort_id) == (ParticipantStatus.SCREEN_FAILED, None)


def test_it_refuses_a_screen_failure_after_enrolment(study, sites, coordinator_site_a, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation, match="Only a participant in screening can fail screening"):
        services.participant_screen_fail(actor=coordinator_site_a, participant=participant, reason="Late finding")

    assert row_counts() == before
    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.ENROLLED


# ---------------------------------------------------------------------------------------------
# Locking
# ---------------------------------------------------------------------------------------------


def _lock(lock: str, participant: Participant) -> None:
    if lock == "study":
        with admin_change():
            Study.objects.filter(pk=participant.study_id).update(is_locked=True)
    else:
        with admin_change():
            Participant.objects.filter(pk=participant.pk).update(is_locked=True)


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_it_refuses_enrolment_when_locked(study, sites, coordinator_site_a, row_counts, lock):
    participant = eligible(study, sites[0], coordinator_site_a)
    _lock(lock, participant)
    before = row_counts()

    with pytest.raises(LockedError):
        _enrol(participant, coordinator_site_a)

    assert row_counts() == before
    _assert_still_screening(participant)


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_it_refuses_a_screen_failure_when_locked(study, sites, coordinator_site_a, row_counts, lock):
    participant = consented(study, sites[0], coordinator_site_a)
    _lock(lock, participant)
    before = row_counts()

    with pytest.raises(LockedError):
        services.participant_screen_fail(actor=coordinator_site_a, participant=participant, reason="Lab values")

    assert row_counts() == before
    _assert_still_screening(participant)


@pytest.mark.django_db(transaction=True)
def test_two_enrolments_at_once_do_not_overfill_a_cohort(study, sites, coordinator_site_a):
    with admin_change():
        DoseCohort.objects.filter(study=study).update(capacity=1)
    participants = [eligible(study, sites[0], coordinator_site_a) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors = []

    def enrol(participant):
        try:
            barrier.wait(timeout=10)
            _enrol(participant, coordinator_site_a)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=enrol, args=(p,)) for p in participants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(Participant.objects.values_list("cohort__number", flat=True)) == [1, 2]
