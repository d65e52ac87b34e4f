"""Visits: recording, windows and window deviations, missed and unscheduled visits, edits with a
reason and a version, and what may still be recorded after withdrawal."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tests.factories import admin_change, enrolled, infused
from tests.trials.conftest import CLINICAL_TODAY
from trials import services
from trials.errors import ConflictError, LockedError, RuleViolation
from trials.models import Consent, Participant, ProtocolDeviation, Study, Visit, VisitStatus

# The participant is infused on 2025-02-03 (day 0). Day 28 is planned on 2025-03-03, window -3/+3.
D28_PLANNED = dt.date(2025, 3, 3)
D28_OPENS = dt.date(2025, 2, 28)
D28_CLOSES = dt.date(2025, 3, 6)


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    return infused(study, sites[0], coordinator_site_a)


@pytest.fixture
def d28(participant):
    return participant.visits.get(definition__code="d28")


def _record(visit, actor, actual_date, **kwargs):
    return services.visit_record(actor=actor, visit=visit, actual_date=actual_date, **kwargs)


def _withdraw(participant, actor, on=dt.date(2025, 3, 10)):
    services.disposition_record(
        actor=actor, participant=participant, kind="withdrawn", disposition_date=on, reason="Moved abroad"
    )


# ---------------------------------------------------------------------------------------------
# Recording a scheduled visit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actual_date", [D28_OPENS, D28_PLANNED, D28_CLOSES], ids=["opens", "planned", "closes"])
def test_it_records_a_visit_in_its_window_without_a_deviation(coordinator_site_a, d28, actual_date):
    _record(d28, coordinator_site_a, actual_date, weight_kg=Decimal("71.5"))

    d28.refresh_from_db()
    assert (d28.actual_date, d28.weight_kg, d28.version, d28.in_window) == (actual_date, Decimal("71.5"), 2, True)
    assert not ProtocolDeviation.objects.exists()


@pytest.mark.parametrize(
    "actual_date",
    [D28_OPENS - dt.timedelta(days=1), D28_CLOSES + dt.timedelta(days=1)],
    ids=["day-before-window", "day-after-window"],
)
def test_it_records_a_visit_outside_its_window_and_flags_a_deviation(participant, coordinator_site_a, d28, actual_date):
    _record(d28, coordinator_site_a, actual_date)

    d28.refresh_from_db()
    assert (d28.actual_date, d28.in_window) == (actual_date, False)
    deviation = ProtocolDeviation.objects.get()
    assert (deviation.participant, deviation.visit, deviation.category, deviation.system_detected) == (
        participant,
        d28,
        ProtocolDeviation.Category.VISIT_WINDOW,
        True,
    )
    assert deviation.detected_on == actual_date
    assert deviation.description == (
        f"Day 28 done on {actual_date:%Y-%m-%d}, outside its window 2025-02-28 to 2025-03-06."
    )


def test_it_refuses_a_visit_date_before_the_infusion(coordinator_site_a, participant, row_counts):
    d0 = participant.visits.get(definition__code="d0")
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _record(d0, coordinator_site_a, dt.date(2025, 2, 2))

    assert exc.value.message_dict == {
        "actual_date": ["The visit date 2025-02-02 is before the infusion on 2025-02-03."]
    }
    assert row_counts() == before
    d0.refresh_from_db()
    assert (d0.actual_date, d0.version) == (None, 1)


def test_it_accepts_the_day_0_visit_on_the_infusion_day(coordinator_site_a, participant):
    d0 = participant.visits.get(definition__code="d0")

    _record(d0, coordinator_site_a, dt.date(2025, 2, 3))

    d0.refresh_from_db()
    assert d0.status_on(dt.date(2025, 2, 3)) == VisitStatus.DONE


def test_it_refuses_a_visit_date_in_the_future(coordinator_site_a, participant, frozen_now, row_counts):
    m6 = participant.visits.get(definition__code="m6")  # planned 2025-08-04
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _record(m6, coordinator_site_a, CLINICAL_TODAY + dt.timedelta(days=1))

    assert exc.value.message_dict == {"actual_date": ["Visit date 2025-06-03 is in the future."]}
    assert row_counts() == before


def test_it_refuses_a_visit_date_before_consent(coordinator_site_a, participant, d28, row_counts):
    # The consent date was corrected (outside the services) to a date after the visit.
    with admin_change():
        Consent.objects.filter(participant=participant).update(consent_date=dt.date(2025, 3, 5))
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _record(d28, coordinator_site_a, dt.date(2025, 3, 4))

    assert exc.value.message_dict == {"actual_date": ["The visit date 2025-03-04 is before consent on 2025-03-05."]}
    assert row_counts() == before


@pytest.mark.parametrize("weight", [Decimal("19.9"), Decimal("250.1")])
def test_it_refuses_an_implausible_weight_at_a_visit(coordinator_site_a, d28, row_counts, weight):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _record(d28, coordinator_site_a, D28_PLANNED, weight_kg=weight)

    assert exc.value.message_dict == {"weight_kg": ["Weight must be between 20 and 250 kg."]}
    assert row_counts() == before


# ---------------------------------------------------------------------------------------------
# Status on a given day
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "status"),
    [
        (D28_OPENS - dt.timedelta(days=1), VisitStatus.UPCOMING),
        (D28_OPENS, VisitStatus.DUE),
        (D28_PLANNED, VisitStatus.DUE),
        (D28_CLOSES, VisitStatus.DUE),
        (D28_CLOSES + dt.timedelta(days=1), VisitStatus.OVERDUE),
    ],
    ids=["day-before-window", "window-opens", "planned-day", "window-closes", "day-after-window"],
)
def test_a_pending_visit_status_follows_its_window(d28, today, status):
    assert d28.status_on(today) == status


def test_a_recorded_visit_is_done_whatever_the_day(coordinator_site_a, d28):
    _record(d28, coordinator_site_a, D28_CLOSES + dt.timedelta(days=2))
    d28.refresh_from_db()

    assert d28.status_on(D28_OPENS - dt.timedelta(days=1)) == VisitStatus.DONE
    assert d28.status_on(D28_CLOSES + dt.timedelta(days=30)) == VisitStatus.DONE


def test_a_missed_visit_is_missed_whatever_the_day(coordinator_site_a, d28):
    services.visit_mark_missed(actor=coordinator_site_a, visit=d28, reason="Participant in hospital")
    d28.refresh_from_db()

    assert d28.status_on(D28_OPENS) == VisitStatus.MISSED
    assert d28.status_on(D28_CLOSES + dt.timedelta(days=1)) == VisitStatus.MISSED


# ---------------------------------------------------------------------------------------------
# Missed visits
# ---------------------------------------------------------------------------------------------


def test_it_marks_a_visit_missed_with_its_reason(coordinator_site_a, d28):
    services.visit_mark_missed(actor=coordinator_site_a, visit=d28, reason=" Participant in hospital ")

    d28.refresh_from_db()
    assert (d28.missed, d28.missed_reason, d28.actual_date, d28.version) == (True, "Participant in hospital", None, 2)


def test_it_refuses_to_mark_a_visit_missed_without_a_reason(coordinator_site_a, d28, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.visit_mark_missed(actor=coordinator_site_a, visit=d28, reason="  ")

    assert exc.value.message_dict == {"missed_reason": ["Say why the visit was missed."]}
    assert row_counts() == before
    d28.refresh_from_db()
    assert (d28.missed, d28.version) == (False, 1)


def test_it_refuses_to_mark_a_visit_that_took_place_missed(coordinator_site_a, d28, row_counts):
    _record(d28, coordinator_site_a, D28_PLANNED)
    d28.refresh_from_db()
    before = row_counts()

    with pytest.raises(RuleViolation, match="This visit took place"):
        services.visit_mark_missed(actor=coordinator_site_a, visit=d28, reason="Wrong visit")

    assert row_counts() == before
    d28.refresh_from_db()
    assert (d28.missed, d28.actual_date, d28.version) == (False, D28_PLANNED, 2)


def test_it_refuses_to_mark_missed_a_visit_recorded_since_the_form_was_opened(coordinator_site_a, d28, row_counts):
    opened = Visit.objects.get(pk=d28.pk)
    _record(d28, coordinator_site_a, D28_PLANNED)
    before = row_counts()

    with pytest.raises(RuleViolation, match="This visit took place"):
        services.visit_mark_missed(actor=coordinator_site_a, visit=opened, reason="Participant in hospital")

    assert row_counts() == before
    d28.refresh_from_db()
    assert (d28.missed, d28.actual_date) == (False, D28_PLANNED)


def test_recording_a_missed_visit_that_did_take_place_needs_a_reason(coordinator_site_a, d28):
    services.visit_mark_missed(actor=coordinator_site_a, visit=d28, reason="No show")
    d28.refresh_from_db()

    with pytest.raises(RuleViolation) as exc:
        _record(d28, coordinator_site_a, D28_PLANNED)
    assert list(exc.value.message_dict) == ["reason"]

    _record(d28, coordinator_site_a, D28_PLANNED, reason="Visit took place; CRF filed late")
    d28.refresh_from_db()
    assert (d28.missed, d28.missed_reason, d28.actual_date) == (False, "", D28_PLANNED)


# ---------------------------------------------------------------------------------------------
# Editing a recorded visit
# ---------------------------------------------------------------------------------------------


def test_it_requires_a_reason_to_edit_a_recorded_visit(coordinator_site_a, d28, row_counts):
    _record(d28, coordinator_site_a, D28_PLANNED)
    d28.refresh_from_db()
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _record(d28, coordinator_site_a, dt.date(2025, 3, 4), expected_version=2)

    assert exc.value.message_dict == {"reason": ["A reason for change is required to edit a saved record."]}
    assert row_counts() == before
    d28.refresh_from_db()
    assert (d28.actual_date, d28.version) == (D28_PLANNED, 2)


def test_it_edits_a_recorded_visit_with_a_reason_and_the_current_version(coordinator_site_a, d28):
    _record(d28, coordinator_site_a, D28_PLANNED)
    d28.refresh_from_db()

    _record(d28, coordinator_site_a, dt.date(2025, 3, 4), reason="Transcription error", expected_version=2)

    d28.refresh_from_db()
    assert (d28.actual_date, d28.version) == (dt.date(2025, 3, 4), 3)


def test_it_refuses_an_edit_made_on_a_stale_version(coordinator_site_a, d28, row_counts):
    _record(d28, coordinator_site_a, D28_PLANNED)
    d28.refresh_from_db()
    _record(d28, coordinator_site_a, dt.date(2025, 3, 4), reason="Transcription error", expected_version=2)
    before = row_counts()

    with pytest.raises(ConflictError, match=r"changed by someone else since you opened it \(version 3, yours 2\)"):
        _record(d28, coordinator_site_a, dt.date(2025, 3, 5), reason="My own correction", expected_version=2)

    assert row_counts() == before
    d28.refresh_from_db()
    assert (d28.actual_date, d28.version) == (dt.date(2025, 3, 4), 3)


def test_it_refuses_a_first_entry_made_on_a_stale_version(coordinator_site_a, d28, row_counts):
    opened = Visit.objects.get(pk=d28.pk)
    services.visit_mark_missed(actor=coordinator_site_a, visit=d28, reason="No show")
    with admin_change():
        Visit.objects.filter(pk=d28.pk).update(missed=False, missed_reason="", version=3)  # reverted by another user
    before = row_counts()

    with pytest.raises(ConflictError):
        _record(opened, coordinator_site_a, D28_PLANNED, expected_version=1)

    assert row_counts() == before
    d28.refresh_from_db()
    assert (d28.actual_date, d28.version) == (None, 3)


def test_a_visit_recorded_since_the_form_was_opened_needs_a_reason_to_overwrite(coordinator_site_a, d28, row_counts):
    opened = Visit.objects.get(pk=d28.pk)
    _record(d28, coordinator_site_a, D28_PLANNED)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _record(opened, coordinator_site_a, dt.date(2025, 3, 4))

    assert list(exc.value.message_dict) == ["reason"]
    assert row_counts() == before
    d28.refresh_from_db()
    assert (d28.actual_date, d28.version) == (D28_PLANNED, 2)


def test_editing_an_out_of_window_visit_does_not_flag_the_deviation_twice(coordinator_site_a, d28):
    _record(d28, coordinator_site_a, dt.date(2025, 3, 10))
    d28.refresh_from_db()

    _record(
        d28,
        coordinator_site_a,
        dt.date(2025, 3, 10),
        weight_kg=Decimal("70"),
        reason="Weight added",
        expected_version=2,
    )

    assert ProtocolDeviation.objects.filter(visit=d28).count() == 1


# ---------------------------------------------------------------------------------------------
# Unscheduled and safety follow-up visits
# ---------------------------------------------------------------------------------------------


def test_it_records_an_unscheduled_visit_with_its_reason(coordinator_site_a, participant):
    visit = services.visit_add_unscheduled(
        actor=coordinator_site_a, participant=participant, actual_date=dt.date(2025, 2, 14), reason=" Rash "
    )

    visit.refresh_from_db()
    assert (visit.kind, visit.definition_id, visit.reason, visit.actual_date) == (
        Visit.Kind.UNSCHEDULED,
        None,
        "Rash",
        dt.date(2025, 2, 14),
    )
    assert visit.in_window is None
    assert not ProtocolDeviation.objects.exists()


def test_it_refuses_an_unscheduled_visit_without_a_reason(coordinator_site_a, participant, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.visit_add_unscheduled(
            actor=coordinator_site_a, participant=participant, actual_date=dt.date(2025, 2, 14), reason=" "
        )

    assert exc.value.message_dict == {"reason": ["Say why this unscheduled visit took place."]}
    assert row_counts() == before


def test_it_refuses_an_unscheduled_visit_before_the_infusion(study, sites, coordinator_site_a, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.visit_add_unscheduled(
            actor=coordinator_site_a, participant=participant, actual_date=dt.date(2025, 1, 20), reason="Fever"
        )

    assert exc.value.message_dict == {
        "actual_date": ["S01-0001 has not been infused; follow-up visits start at day 0."]
    }
    assert row_counts() == before


def test_it_refuses_an_implausible_weight_at_an_unscheduled_visit(coordinator_site_a, participant, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.visit_add_unscheduled(
            actor=coordinator_site_a,
            participant=participant,
            actual_date=dt.date(2025, 2, 14),
            reason="Fever",
            weight_kg=Decimal("700"),
        )

    assert exc.value.message_dict == {"weight_kg": ["Weight must be between 20 and 250 kg."]}
    assert row_counts() == before


def test_after_withdrawal_a_scheduled_visit_is_refused(coordinator_site_a, participant, row_counts):
    _withdraw(participant, coordinator_site_a)
    m3 = participant.visits.get(definition__code="m3")
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _record(m3, coordinator_site_a, dt.date(2025, 5, 5))

    assert exc.value.messages == ["S01-0001 is withdrawn: no visit can be recorded, only safety follow-up."]
    assert row_counts() == before
    m3.refresh_from_db()
    assert m3.actual_date is None


def test_after_withdrawal_an_unscheduled_visit_is_refused(coordinator_site_a, participant, row_counts):
    _withdraw(participant, coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation, match="no unscheduled visit can be recorded, only safety follow-up"):
        services.visit_add_unscheduled(
            actor=coordinator_site_a, participant=participant, actual_date=dt.date(2025, 3, 20), reason="Fever"
        )

    assert row_counts() == before


def test_after_withdrawal_a_safety_follow_up_visit_is_accepted(coordinator_site_a, participant):
    _withdraw(participant, coordinator_site_a)

    visit = services.visit_add_unscheduled(
        actor=coordinator_site_a,
        participant=participant,
        actual_date=dt.date(2025, 3, 20),
        reason="Follow-up of the grade 2 infusion reaction",
        safety_follow_up=True,
    )

    visit.refresh_from_db()
    assert (visit.kind, visit.actual_date) == (Visit.Kind.SAFETY, dt.date(2025, 3, 20))


def test_after_withdrawal_a_safety_visit_can_still_be_corrected(coordinator_site_a, participant):
    _withdraw(participant, coordinator_site_a)
    visit = services.visit_add_unscheduled(
        actor=coordinator_site_a,
        participant=participant,
        actual_date=dt.date(2025, 3, 20),
        reason="Safety follow-up",
        safety_follow_up=True,
    )

    _record(visit, coordinator_site_a, dt.date(2025, 3, 21), reason="Wrong date entered", expected_version=1)

    visit.refresh_from_db()
    assert (visit.actual_date, visit.version) == (dt.date(2025, 3, 21), 2)


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
def test_it_refuses_to_record_a_visit_when_locked(coordinator_site_a, participant, d28, row_counts, lock):
    _lock(lock, participant)
    before = row_counts()

    with pytest.raises(LockedError):
        _record(d28, coordinator_site_a, D28_PLANNED)

    assert row_counts() == before
    d28.refresh_from_db()
    assert (d28.actual_date, d28.version) == (None, 1)


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_it_refuses_to_edit_a_visit_when_locked(coordinator_site_a, participant, d28, row_counts, lock):
    _record(d28, coordinator_site_a, D28_PLANNED)
    d28.refresh_from_db()
    _lock(lock, participant)
    before = row_counts()

    with pytest.raises(LockedError):
        _record(d28, coordinator_site_a, dt.date(2025, 3, 4), reason="Correction", expected_version=2)

    assert row_counts() == before
    d28.refresh_from_db()
    assert (d28.actual_date, d28.version) == (D28_PLANNED, 2)


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_it_refuses_to_mark_a_visit_missed_when_locked(coordinator_site_a, participant, d28, row_counts, lock):
    _lock(lock, participant)
    before = row_counts()

    with pytest.raises(LockedError):
        services.visit_mark_missed(actor=coordinator_site_a, visit=d28, reason="No show")

    assert row_counts() == before
    d28.refresh_from_db()
    assert d28.missed is False


@pytest.mark.parametrize("safety_follow_up", [False, True])
@pytest.mark.parametrize("lock", ["study", "participant"])
def test_it_refuses_an_unscheduled_visit_when_locked(
    coordinator_site_a, participant, row_counts, lock, safety_follow_up
):
    _lock(lock, participant)
    before = row_counts()

    with pytest.raises(LockedError):
        services.visit_add_unscheduled(
            actor=coordinator_site_a,
            participant=participant,
            actual_date=dt.date(2025, 2, 14),
            reason="Fever",
            safety_follow_up=safety_follow_up,
        )

    assert row_counts() == before
