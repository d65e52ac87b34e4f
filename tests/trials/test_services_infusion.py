"""Infusion: product release, dose per kg and dose deviations, the sentinel interval, and the visit
schedule the first infusion sets."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tests.factories import SCHEDULE, admin_change, eligible, enrolled, infused, infusion_kwargs
from tests.trials.conftest import FROZEN_NOW
from trials import services
from trials.errors import LockedError, RuleViolation
from trials.models import (
    DoseCohort,
    Infusion,
    Participant,
    ParticipantStatus,
    ProtocolDeviation,
    Study,
)

DAY0 = dt.datetime(2025, 2, 3, 9, 0, tzinfo=dt.UTC)


def _infuse(participant, actor, **overrides):
    start = overrides.pop("start", None)
    if participant.cohort.planned_cells_per_kg is None:  # the factory derives the cells from a per-kg plan
        overrides.setdefault("total_viable_cells", participant.cohort.planned_total_cells)
    kwargs = infusion_kwargs(participant, start=start, cells=overrides.get("total_viable_cells"))
    kwargs.update(overrides)
    return services.infusion_record(actor=actor, participant=participant, **kwargs)


def _assert_not_infused(participant, status=ParticipantStatus.ENROLLED):
    participant.refresh_from_db()
    assert participant.status == status
    assert not participant.infusions.exists()
    assert not participant.visits.exists()


def test_it_records_an_infusion_and_computes_the_dose_per_kg(study, sites, coordinator_site_a):
    with admin_change():
        DoseCohort.objects.filter(study=study, number=1).update(planned_cells_per_kg=5_000_000)
    participant = enrolled(study, sites[0], coordinator_site_a)

    infusion = _infuse(
        participant, coordinator_site_a, total_viable_cells=Decimal("350000000"), weight_kg=Decimal("70")
    )

    infusion.refresh_from_db()
    assert infusion.dose_cells_per_kg == Decimal("5000000")
    assert (infusion.number, infusion.cohort.number, infusion.infusion_date) == (1, 1, dt.date(2025, 2, 3))
    assert not ProtocolDeviation.objects.exists()
    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.IN_FOLLOW_UP


def test_the_first_infusion_sets_the_visit_schedule_from_day_0(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a, start=DAY0)

    visits = {v.definition.code: v for v in participant.visits.select_related("definition")}
    assert len(visits) == len(SCHEDULE)
    for code, _name, day, before, after, _forms in SCHEDULE:
        planned = dt.date(2025, 2, 3) + dt.timedelta(days=day)
        visit = visits[code]
        assert (visit.kind, visit.planned_date, visit.window_start, visit.window_end) == (
            "scheduled",
            planned,
            planned - dt.timedelta(days=before),
            planned + dt.timedelta(days=after),
        ), code
        assert visit.actual_date is None
    assert visits["m3"].planned_date == dt.date(2025, 5, 5)
    assert (visits["d28"].window_start, visits["d28"].window_end) == (dt.date(2025, 2, 28), dt.date(2025, 3, 6))


def test_it_refuses_to_infuse_a_participant_still_in_screening(study, sites, coordinator_site_a, row_counts):
    participant = eligible(study, sites[0], coordinator_site_a)
    kwargs = infusion_kwargs(enrolled(study, sites[0], coordinator_site_a))
    before = row_counts()

    with pytest.raises(RuleViolation, match="S01-0001 is screening: only an enrolled participant can be infused"):
        services.infusion_record(actor=coordinator_site_a, participant=participant, **kwargs)

    assert row_counts() == before
    _assert_not_infused(participant, status=ParticipantStatus.SCREENING)


REFUSALS = [
    pytest.param(
        {"release_passed": False},
        "release_passed",
        "The product lot has not passed release testing; it cannot be infused.",
        id="release-not-passed",
    ),
    pytest.param(
        {"end_at": DAY0 - dt.timedelta(minutes=1)},
        "end_at",
        "The infusion cannot end before it starts.",
        id="end-before-start",
    ),
    pytest.param(
        {"end_at": DAY0 + dt.timedelta(hours=24, minutes=1)},
        "end_at",
        "An infusion lasting more than 24 hours is not plausible; check the times.",
        id="longer-than-24h",
    ),
    pytest.param(
        {"start_at": DAY0.replace(tzinfo=None)},
        "start_at",
        "Infusion times must carry a time zone.",
        id="naive-start",
    ),
    pytest.param(
        {"apheresis_date": dt.date(2025, 2, 4)},
        "apheresis_date",
        "The apheresis (cell collection) must come before the infusion.",
        id="apheresis-after-infusion",
    ),
    pytest.param(
        {
            "start_at": dt.datetime(2025, 1, 12, 23, 0, tzinfo=dt.UTC),
            "end_at": dt.datetime(2025, 1, 12, 23, 45, tzinfo=dt.UTC),
            "apheresis_date": dt.date(2025, 1, 7),
        },
        "start_at",
        "The infusion cannot precede enrolment (2025-01-13).",
        id="before-enrolment",
    ),
    pytest.param(
        {
            "start_at": dt.datetime(2025, 1, 5, 9, 0, tzinfo=dt.UTC),
            "end_at": dt.datetime(2025, 1, 5, 9, 45, tzinfo=dt.UTC),
            "apheresis_date": dt.date(2025, 1, 1),
        },
        "start_at",
        {
            "start_at": ["The infusion date 2025-01-05 is before consent on 2025-01-06."],
            "apheresis_date": ["The apheresis date 2025-01-01 is before consent on 2025-01-06."],
        },
        id="before-consent",
    ),
    pytest.param(
        {"apheresis_date": dt.date(2025, 1, 5)},
        "apheresis_date",
        "The apheresis date 2025-01-05 is before consent on 2025-01-06.",
        id="apheresis-before-consent",
    ),
    pytest.param({"viability_pct": Decimal("0")}, "viability_pct", "Viability must be between 0 and 100 %.", id="v0"),
    pytest.param(
        {"viability_pct": Decimal("100.1")}, "viability_pct", "Viability must be between 0 and 100 %.", id="v100.1"
    ),
    pytest.param(
        {"weight_kg": Decimal("19.9")},
        "weight_kg",
        "Weight used for dosing must be between 20 and 250 kg.",
        id="weight-19.9",
    ),
    pytest.param(
        {"weight_kg": Decimal("250.1")},
        "weight_kg",
        "Weight used for dosing must be between 20 and 250 kg.",
        id="weight-250.1",
    ),
    pytest.param(
        {"total_viable_cells": Decimal("0")},
        "total_viable_cells",
        "Total viable cells must be positive.",
        id="no-cells",
    ),
    pytest.param(
        {"interrupted": True, "interruption_reason": "  "},
        "interruption_reason",
        "Give the reason for the interruption.",
        id="interrupted-without-reason",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "message"), REFUSALS)
def test_it_refuses_an_implausible_infusion(study, sites, coordinator_site_a, row_counts, overrides, field, message):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _infuse(participant, coordinator_site_a, start=DAY0, **overrides)

    assert exc.value.message_dict == (message if isinstance(message, dict) else {field: [message]})
    assert row_counts() == before
    _assert_not_infused(participant)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"viability_pct": Decimal("100")}, id="viability-100"),
        pytest.param({"viability_pct": Decimal("70")}, id="viability-at-the-release-minimum"),
        pytest.param({"weight_kg": Decimal("20")}, id="weight-20"),
        pytest.param({"weight_kg": Decimal("250")}, id="weight-250"),
        pytest.param({"apheresis_date": dt.date(2025, 2, 3)}, id="apheresis-on-infusion-day"),
        pytest.param({"end_at": DAY0 + dt.timedelta(hours=24)}, id="lasting-24h"),
        pytest.param({"interrupted": True, "interruption_reason": "Rigors; restarted at half rate"}, id="interrupted"),
    ],
)
def test_it_accepts_an_infusion_at_the_edge_of_plausibility(study, sites, coordinator_site_a, overrides):
    participant = enrolled(study, sites[0], coordinator_site_a)
    if "weight_kg" in overrides:  # keep the dose on plan so only the boundary is under test
        overrides["total_viable_cells"] = participant.cohort.planned_cells_per_kg * overrides["weight_kg"]

    infusion = _infuse(participant, coordinator_site_a, start=DAY0, **overrides)

    infusion.refresh_from_db()
    for field, value in overrides.items():
        assert getattr(infusion, field) == (value.strip() if isinstance(value, str) else value)
    assert not ProtocolDeviation.objects.exists()


def test_it_refuses_an_infusion_that_starts_in_the_future(study, sites, coordinator_site_a, frozen_now, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    start = FROZEN_NOW + dt.timedelta(minutes=6)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _infuse(participant, coordinator_site_a, start=start)

    assert exc.value.message_dict == {
        "start_at": ["Infusion start is in the future."],
        "end_at": ["Infusion end is in the future."],
    }
    assert row_counts() == before
    _assert_not_infused(participant)


def test_it_refuses_an_infusion_that_ends_in_the_future(study, sites, coordinator_site_a, frozen_now, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _infuse(participant, coordinator_site_a, start=FROZEN_NOW - dt.timedelta(minutes=30))

    assert exc.value.message_dict == {"end_at": ["Infusion end is in the future."]}
    assert row_counts() == before


def test_it_accepts_an_infusion_that_has_just_ended(study, sites, coordinator_site_a, frozen_now):
    participant = enrolled(study, sites[0], coordinator_site_a)

    infusion = _infuse(participant, coordinator_site_a, start=FROZEN_NOW - dt.timedelta(minutes=45))

    assert infusion.end_at == FROZEN_NOW


# ---------------------------------------------------------------------------------------------
# Dose deviation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cells_per_kg", "deviation"),
    [
        pytest.param(Decimal("1210000"), "+21.0%", id="21pct-over"),
        pytest.param(Decimal("790000"), "-21.0%", id="21pct-under"),
        pytest.param(Decimal("5000000"), "+400.0%", id="wrong-cohort-dose"),
    ],
)
def test_a_dose_beyond_tolerance_creates_a_system_detected_deviation(
    study, sites, coordinator_site_a, cells_per_kg, deviation
):
    participant = enrolled(study, sites[0], coordinator_site_a)  # cohort 1: 1,000,000 cells/kg, tolerance 20 %

    infusion = _infuse(participant, coordinator_site_a, start=DAY0, total_viable_cells=cells_per_kg * 70)

    found = ProtocolDeviation.objects.get()
    assert (found.participant, found.infusion, found.category, found.system_detected, found.detected_on) == (
        participant,
        infusion,
        ProtocolDeviation.Category.DOSE,
        True,
        dt.date(2025, 2, 3),
    )
    assert f"is {deviation} from cohort 1's planned dose (tolerance ±20.00%)" in found.description


@pytest.mark.parametrize(
    "cells_per_kg",
    [Decimal("1200000"), Decimal("800000"), Decimal("1000000")],
    ids=["20pct-over", "20pct-under", "on-plan"],
)
def test_a_dose_within_tolerance_creates_no_deviation(study, sites, coordinator_site_a, cells_per_kg):
    participant = enrolled(study, sites[0], coordinator_site_a)

    _infuse(participant, coordinator_site_a, start=DAY0, total_viable_cells=cells_per_kg * 70)

    assert not ProtocolDeviation.objects.exists()
    assert participant.infusions.get().dose_cells_per_kg == cells_per_kg


def test_the_dose_tolerance_is_the_studys(study, sites, coordinator_site_a):
    with admin_change():
        Study.objects.filter(pk=study.pk).update(dose_tolerance_pct=Decimal("10"))
    participant = enrolled(study, sites[0], coordinator_site_a)

    _infuse(participant, coordinator_site_a, start=DAY0, total_viable_cells=Decimal("1150000") * 70)

    assert ProtocolDeviation.objects.get().category == ProtocolDeviation.Category.DOSE


def test_a_cohort_planned_in_total_cells_is_compared_on_total_cells(study, sites, coordinator_site_a):
    with admin_change():
        DoseCohort.objects.filter(study=study, number=1).update(
            planned_cells_per_kg=None, planned_total_cells=100_000_000
        )
    first = enrolled(study, sites[0], coordinator_site_a)
    second = enrolled(study, sites[0], coordinator_site_a)

    _infuse(first, coordinator_site_a, start=DAY0, total_viable_cells=Decimal("110000000"), weight_kg=Decimal("55"))
    assert not ProtocolDeviation.objects.exists()

    _infuse(second, coordinator_site_a, start=DAY0, total_viable_cells=Decimal("130000000"), weight_kg=Decimal("90"))
    assert ProtocolDeviation.objects.get().participant == second


# ---------------------------------------------------------------------------------------------
# Sentinel interval
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sentinel(study, sites, coordinator_site_a):
    """Cohorts with a 7-day sentinel interval, and the cohort's first participant infused on 2025-02-03."""
    with admin_change():
        DoseCohort.objects.filter(study=study).update(sentinel_interval_days=7)
    return infused(study, sites[0], coordinator_site_a, start=DAY0)


def test_the_next_participant_cannot_be_infused_before_the_sentinel_interval_ends(
    study, sites, coordinator_site_a, sentinel, row_counts
):
    participant = enrolled(study, sites[1], coordinator_site_a)
    last_day_refused = dt.datetime(2025, 2, 9, 23, 0, tzinfo=dt.UTC)  # day 6 after the sentinel
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _infuse(participant, coordinator_site_a, start=last_day_refused)

    assert exc.value.message_dict == {
        "start_at": [
            "Sentinel interval: S01-0001 was infused on 2025-02-03; the next participant of cohort 1 can be "
            "infused from 2025-02-10 (7 days)."
        ]
    }
    assert row_counts() == before
    _assert_not_infused(participant)


def test_the_next_participant_can_be_infused_on_the_day_the_sentinel_interval_ends(
    study, sites, coordinator_site_a, sentinel
):
    participant = enrolled(study, sites[1], coordinator_site_a)

    infusion = _infuse(participant, coordinator_site_a, start=dt.datetime(2025, 2, 10, 0, 0, tzinfo=dt.UTC))

    assert infusion.infusion_date == dt.date(2025, 2, 10)


def test_the_sentinel_interval_also_holds_for_the_third_participant(study, sites, coordinator_site_a, sentinel):
    second = enrolled(study, sites[0], coordinator_site_a)
    third = enrolled(study, sites[0], coordinator_site_a)
    _infuse(second, coordinator_site_a, start=dt.datetime(2025, 2, 10, 9, 0, tzinfo=dt.UTC))

    with pytest.raises(RuleViolation, match="infused from 2025-02-10"):
        _infuse(third, coordinator_site_a, start=dt.datetime(2025, 2, 9, 9, 0, tzinfo=dt.UTC))


def test_the_sentinel_interval_does_not_hold_across_cohorts(study, sites, coordinator_site_a, sentinel):
    with admin_change():
        DoseCohort.objects.filter(study=study, number=1).update(capacity=1)
    participant = enrolled(study, sites[0], coordinator_site_a)
    assert participant.cohort.number == 2

    infusion = _infuse(participant, coordinator_site_a, start=dt.datetime(2025, 2, 4, 9, 0, tzinfo=dt.UTC))

    assert infusion.cohort.number == 2


# ---------------------------------------------------------------------------------------------
# Repeat infusions
# ---------------------------------------------------------------------------------------------


def test_it_refuses_an_infusion_beyond_the_cohorts_plan(study, sites, coordinator_site_a, row_counts):
    participant = infused(study, sites[0], coordinator_site_a, start=DAY0)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _infuse(participant, coordinator_site_a, start=DAY0 + dt.timedelta(days=28))

    assert exc.value.messages == ["Cohort 1 plans 1 infusion(s); S01-0001 has had them all."]
    assert row_counts() == before
    assert participant.infusions.count() == 1


def test_it_records_a_planned_second_infusion_without_a_second_schedule(study, sites, coordinator_site_a):
    with admin_change():
        DoseCohort.objects.filter(study=study).update(infusions_planned=2)
    participant = infused(study, sites[0], coordinator_site_a, start=DAY0)

    second = _infuse(participant, coordinator_site_a, start=DAY0 + dt.timedelta(days=28))

    assert second.number == 2
    assert participant.visits.count() == len(SCHEDULE)
    assert participant.visits.get(definition__code="m3").planned_date == dt.date(2025, 5, 5)

    with pytest.raises(RuleViolation, match="plans 2 infusion"):
        _infuse(participant, coordinator_site_a, start=DAY0 + dt.timedelta(days=56))


def test_it_refuses_a_second_infusion_that_overlaps_the_first(study, sites, coordinator_site_a, row_counts):
    with admin_change():
        DoseCohort.objects.filter(study=study).update(infusions_planned=2)
    participant = infused(study, sites[0], coordinator_site_a, start=DAY0)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _infuse(participant, coordinator_site_a, start=DAY0 + dt.timedelta(minutes=30))

    assert exc.value.message_dict == {"start_at": ["This infusion starts before the previous one ended."]}
    assert row_counts() == before


def test_it_refuses_to_infuse_a_withdrawn_participant(study, sites, coordinator_site_a, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    services.disposition_record(
        actor=coordinator_site_a,
        participant=participant,
        kind="withdrawn",
        disposition_date=dt.date(2025, 1, 20),
        reason="Withdrew consent",
    )
    before = row_counts()

    with pytest.raises(RuleViolation, match="S01-0001 is withdrawn: only an enrolled participant can be infused"):
        _infuse(participant, coordinator_site_a, start=DAY0)

    assert row_counts() == before


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_it_refuses_an_infusion_when_locked(study, sites, coordinator_site_a, row_counts, lock):
    participant = enrolled(study, sites[0], coordinator_site_a)
    if lock == "study":
        with admin_change():
            Study.objects.filter(pk=study.pk).update(is_locked=True)
    else:
        with admin_change():
            Participant.objects.filter(pk=participant.pk).update(is_locked=True)
    before = row_counts()

    with pytest.raises(LockedError):
        _infuse(participant, coordinator_site_a, start=DAY0)

    assert row_counts() == before
    assert not Infusion.objects.exists()
