"""Disposition: withdrawal, loss to follow-up, death and completion, and the status they set."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.factories import admin_change, eligible, enrolled, infused
from tests.trials.conftest import CLINICAL_TODAY
from trials import services
from trials.errors import LockedError, RuleViolation
from trials.models import Disposition, Participant, ParticipantStatus, Study

# Infused on 2025-02-03; the study follows participants for 730 days, so follow-up ends 2027-02-03.
FOLLOW_UP_END = dt.date(2027, 2, 3)


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    return infused(study, sites[0], coordinator_site_a)


def _dispose(participant, actor, kind, disposition_date=dt.date(2025, 3, 10), **kwargs):
    return services.disposition_record(
        actor=actor, participant=participant, kind=kind, disposition_date=disposition_date, **kwargs
    )


def _assert_still_in_follow_up(participant):
    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.IN_FOLLOW_UP
    assert not Disposition.objects.filter(participant=participant).exists()


@pytest.mark.parametrize(
    ("kind", "status"),
    [("withdrawn", ParticipantStatus.WITHDRAWN), ("lost_to_follow_up", ParticipantStatus.LOST)],
)
def test_it_records_a_withdrawal_or_loss_with_its_reason(participant, coordinator_site_a, kind, status):
    disposition = _dispose(participant, coordinator_site_a, kind, reason=" Moved abroad ")

    disposition.refresh_from_db()
    assert (disposition.kind, disposition.reason, disposition.death_date) == (kind, "Moved abroad", None)
    participant.refresh_from_db()
    assert participant.status == status
    assert participant.is_closed


@pytest.mark.parametrize("kind", ["withdrawn", "lost_to_follow_up"])
def test_it_refuses_a_withdrawal_or_loss_without_a_reason(participant, coordinator_site_a, row_counts, kind):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, kind, reason="  ")

    assert exc.value.message_dict == {"reason": ["Give the reason for the withdrawal or loss to follow-up."]}
    assert row_counts() == before
    _assert_still_in_follow_up(participant)


def test_it_withdraws_an_enrolled_participant_before_infusion(study, sites, coordinator_site_a):
    participant = enrolled(study, sites[0], coordinator_site_a)

    _dispose(participant, coordinator_site_a, "withdrawn", dt.date(2025, 1, 20), reason="Withdrew consent")

    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.WITHDRAWN


def test_it_records_a_death_with_its_date(participant, coordinator_site_a):
    _dispose(participant, coordinator_site_a, "death", dt.date(2025, 3, 12), death_date=dt.date(2025, 3, 10))

    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.DIED
    assert participant.disposition.death_date == dt.date(2025, 3, 10)


def test_it_refuses_a_death_without_a_date_of_death(participant, coordinator_site_a, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "death")

    assert exc.value.message_dict == {"death_date": ["The date of death is required."]}
    assert row_counts() == before
    _assert_still_in_follow_up(participant)


def test_it_refuses_a_date_of_death_in_the_future(participant, coordinator_site_a, frozen_now, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "death", CLINICAL_TODAY, death_date=CLINICAL_TODAY + dt.timedelta(1))

    assert exc.value.message_dict == {
        "death_date": [
            "Date of death 2025-06-03 is in the future.",
            "The date of death cannot follow the disposition date.",
        ]
    }
    assert row_counts() == before
    _assert_still_in_follow_up(participant)


def test_it_accepts_a_death_on_clinical_today(participant, coordinator_site_a, frozen_now):
    _dispose(participant, coordinator_site_a, "death", CLINICAL_TODAY, death_date=CLINICAL_TODAY)

    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.DIED


def test_it_refuses_a_date_of_death_after_the_disposition_date(participant, coordinator_site_a, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "death", dt.date(2025, 3, 10), death_date=dt.date(2025, 3, 11))

    assert exc.value.message_dict == {"death_date": ["The date of death cannot follow the disposition date."]}
    assert row_counts() == before


def test_it_refuses_a_date_of_death_with_any_other_disposition(participant, coordinator_site_a, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "withdrawn", reason="Moved", death_date=dt.date(2025, 3, 1))

    assert exc.value.message_dict == {"death_date": ["A date of death is only recorded with a death disposition."]}
    assert row_counts() == before


def test_it_refuses_a_disposition_date_in_the_future(participant, coordinator_site_a, frozen_now, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "withdrawn", CLINICAL_TODAY + dt.timedelta(days=1), reason="Moved")

    assert exc.value.message_dict == {"disposition_date": ["Disposition date 2025-06-03 is in the future."]}
    assert row_counts() == before


def test_it_refuses_a_disposition_before_enrolment(participant, coordinator_site_a, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "withdrawn", dt.date(2025, 1, 12), reason="Moved")

    assert exc.value.message_dict == {"disposition_date": ["Disposition cannot precede enrolment."]}
    assert row_counts() == before


def test_it_refuses_a_disposition_dated_before_the_last_visit(participant, coordinator_site_a, row_counts):
    d28 = participant.visits.get(definition__code="d28")
    services.visit_record(actor=coordinator_site_a, visit=d28, actual_date=dt.date(2025, 3, 3))
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "withdrawn", dt.date(2025, 3, 2), reason="Moved")

    assert exc.value.message_dict == {"disposition_date": ["A visit took place after this date (2025-03-03)."]}
    assert row_counts() == before


def test_it_refuses_an_unknown_disposition(participant, coordinator_site_a, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "transferred", reason="Other centre")

    assert exc.value.message_dict == {"kind": ["Unknown disposition 'transferred'."]}
    assert row_counts() == before


# ---------------------------------------------------------------------------------------------
# Completion
# ---------------------------------------------------------------------------------------------


def test_it_refuses_completion_before_the_end_of_follow_up(participant, coordinator_site_a, time_machine, row_counts):
    time_machine.move_to(dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC), tick=False)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "completed", FOLLOW_UP_END - dt.timedelta(days=1))

    assert exc.value.message_dict == {"kind": ["Completion is only possible at the end of follow-up (2027-02-03)."]}
    assert row_counts() == before
    _assert_still_in_follow_up(participant)


def test_it_records_completion_at_the_end_of_follow_up(participant, coordinator_site_a, time_machine):
    time_machine.move_to(dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC), tick=False)

    _dispose(participant, coordinator_site_a, "completed", FOLLOW_UP_END)

    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.COMPLETED
    assert participant.disposition.kind == Disposition.Kind.COMPLETED


def test_it_refuses_completion_for_a_participant_never_infused(study, sites, coordinator_site_a, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "completed", dt.date(2025, 3, 1))

    assert exc.value.message_dict == {
        "kind": ["Completion is only possible at the end of follow-up after the infusion."]
    }
    assert row_counts() == before


# ---------------------------------------------------------------------------------------------
# Only one disposition, only for an enrolled participant
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "first_kwargs", "status_label"),
    [
        ("withdrawn", {"reason": "Moved"}, "withdrawn"),
        ("death", {"death_date": dt.date(2025, 3, 9)}, "died"),
    ],
)
def test_it_refuses_a_second_disposition(
    participant, coordinator_site_a, row_counts, first, first_kwargs, status_label
):
    _dispose(participant, coordinator_site_a, first, **first_kwargs)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _dispose(participant, coordinator_site_a, "lost_to_follow_up", dt.date(2025, 3, 20), reason="No contact")

    assert exc.value.messages == [f"S01-0001 is {status_label}; only an enrolled participant has a disposition."]
    assert row_counts() == before
    participant.refresh_from_db()
    assert participant.disposition.kind == first


def test_it_refuses_a_disposition_for_a_participant_in_screening(study, sites, coordinator_site_a, row_counts):
    participant = eligible(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation, match="S01-0001 is screening; only an enrolled participant has a disposition"):
        _dispose(participant, coordinator_site_a, "withdrawn", reason="Changed mind")

    assert row_counts() == before


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_it_refuses_a_disposition_when_locked(participant, coordinator_site_a, row_counts, lock):
    if lock == "study":
        with admin_change():
            Study.objects.filter(pk=participant.study_id).update(is_locked=True)
    else:
        with admin_change():
            Participant.objects.filter(pk=participant.pk).update(is_locked=True)
    before = row_counts()

    with pytest.raises(LockedError):
        _dispose(participant, coordinator_site_a, "withdrawn", reason="Moved")

    assert row_counts() == before
    _assert_still_in_follow_up(participant)
