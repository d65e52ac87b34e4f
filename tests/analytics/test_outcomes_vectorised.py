"""The vectorised participant outcomes (analytics/outcomes_vectorised.py) equal the scalar reference
:func:`analytics.derivations.participant_outcome`, column by column, for every participant and rule set."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.derivations import (
    LANDMARK_DAYS,
    DurabilityRules,
    EpisodeRules,
    FollowUp,
    MissingVisitPolicy,
    NonResponderPolicy,
    RescueStrategy,
    VisitRemission,
    participant_outcome,
)
from analytics.outcomes_vectorised import participant_outcomes

PROPERTY = settings(database=None, derandomize=True, deadline=None, max_examples=300)
BASE = dt.date(2025, 1, 6).toordinal()
SCHEDULE = (28, 61, 91, 122, 152, 182, 243, 304, 365, 487, 608, 730)
ENDPOINTS = ("time_to_relapse", "duration_of_remission")


@dataclass(frozen=True)
class Case:
    """One participant; every day is relative to the infusion. Visits: 'R' in remission, 'N' not,
    '-' missed (not adequate)."""

    visits: tuple[tuple[int, str], ...] = ()
    cutoff: int = 730
    relapses: tuple[int, ...] = ()
    withdrawal: int | None = None
    death: int | None = None
    retreatment: int | None = None
    rescue: int | None = None
    infusion: int = 0  # offset of the infusion from BASE


def pattern(text: str, schedule: tuple[int, ...] = SCHEDULE) -> tuple[tuple[int, str], ...]:
    return tuple(zip(schedule, text, strict=False))


def follow_up(case: Case) -> FollowUp:
    origin = BASE + case.infusion

    def date(offset: int | None) -> dt.date | None:
        return None if offset is None else dt.date.fromordinal(origin + offset)

    return FollowUp(
        infusion_date=dt.date.fromordinal(origin),
        cutoff_date=dt.date.fromordinal(origin + case.cutoff),
        visits=[
            VisitRemission(dt.date.fromordinal(origin + d), None if s == "-" else s == "R", adequate=s != "-")
            for d, s in case.visits
        ],
        relapse_dates=[dt.date.fromordinal(origin + d) for d in case.relapses],
        death_date=date(case.death),
        retreatment_date=date(case.retreatment),
        withdrawal_date=date(case.withdrawal),
        rescue_date=date(case.rescue),
    )


def frames(cases: list[Case], *, relapse_order: list[int] | None = None) -> tuple[pd.DataFrame, ...]:
    """The three input frames; participant ids are sparse (3, 10, 17, …) so positions are not ids."""
    ids = [3 + 7 * i for i in range(len(cases))]

    def day(case: Case, offset: int | None) -> float:
        return np.nan if offset is None else float(BASE + case.infusion + offset)

    participants = pd.DataFrame(
        {
            "participant_id": pd.Series(ids, dtype="int64"),
            "infusion": pd.Series([BASE + c.infusion for c in cases], dtype="int64"),
            "cutoff": pd.Series([BASE + c.infusion + c.cutoff for c in cases], dtype="int64"),
            **{
                name: pd.Series([day(c, getattr(c, name)) for c in cases], dtype="float64")
                for name in ("withdrawal", "death", "retreatment", "rescue")
            },
        }
    )
    visit_rows = [
        (pid, BASE + c.infusion + d, s != "-", s == "R") for pid, c in zip(ids, cases, strict=True) for d, s in c.visits
    ]
    visits = pd.DataFrame(visit_rows, columns=["participant_id", "day", "adequate", "in_remission"]).astype(
        {"participant_id": "int64", "day": "int64", "adequate": bool, "in_remission": bool}
    )
    relapse_rows = [(pid, BASE + c.infusion + d) for pid, c in zip(ids, cases, strict=True) for d in c.relapses]
    if relapse_order is not None:
        relapse_rows = [relapse_rows[i] for i in relapse_order]
    relapses = pd.DataFrame(relapse_rows, columns=["participant_id", "day"]).astype(
        {"participant_id": "int64", "day": "int64"}
    )
    return participants, visits, relapses


def expected(case: Case, rules: DurabilityRules, endpoint: str, dor_death_is_event: bool, landmarks) -> dict:
    outcome = participant_outcome(
        follow_up(case), rules, endpoint=endpoint, dor_death_is_event=dor_death_is_event, landmarks=landmarks
    )
    if outcome is None:
        return {"included": False}
    row = outcome.row
    record = {
        "included": True,
        "origin": row.origin_date.toordinal(),
        "end": row.end_date.toordinal(),
        "duration": row.duration_days,
        "event": row.event,
        "event_code": row.event_code,
        "cr_end": row.cr_end_date.toordinal(),
        "cr_duration": row.cr_duration_days,
        "lower": row.interval_lower_days,
        "upper": math.inf if row.interval_upper_days is None else row.interval_upper_days,
        "reason": row.reason,
        "assessments": outcome.assessments,
        "adequate_assessments": outcome.adequate_assessments,
        "responder": outcome.responder,
        "days_in_remission": outcome.days_in_remission,
        "onset_day": outcome.onset_day,
        "exit_day": outcome.exit_day,
        "exit_event": outcome.exit_event,
    }
    for k, status in enumerate(outcome.in_remission_at_landmark):
        record[f"landmark_{k}"] = status
    return record


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, NaN to None (so NaN == NaN), keeping the type family visible."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def assert_agrees(
    cases: list[Case],
    rules: DurabilityRules,
    *,
    endpoint: str,
    dor_death_is_event: bool = True,
    landmarks=LANDMARK_DAYS,
    relapse_order: list[int] | None = None,
) -> pd.DataFrame:
    participants, visits, relapses = frames(cases, relapse_order=relapse_order)
    result = participant_outcomes(
        participants,
        visits,
        relapses,
        rules,
        endpoint=endpoint,
        dor_death_is_event=dor_death_is_event,
        landmarks=landmarks,
    )
    assert len(result) == len(cases)
    assert result["participant_id"].tolist() == participants["participant_id"].tolist()
    assert [f"landmark_{k}" for k in range(len(landmarks))] == [c for c in result.columns if c.startswith("landmark_")]
    for position, (case, got) in enumerate(zip(cases, result.to_dict("records"), strict=True)):
        want = expected(case, rules, endpoint, dor_death_is_event, landmarks)
        actual = {name: _plain(got[name]) for name in want}
        want = {name: _plain(value) for name, value in want.items()}
        assert actual == want, f"participant {position}: {case}\n{rules}\n{endpoint=} {dor_death_is_event=}"
    return result


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

# Per-participant status mixes: mostly in remission, mostly not, and often missed (runs of missed visits).
# Strategies are built once, here: building them inside the composites costs more than the test.
STATUSES = st.sampled_from([st.sampled_from(p) for p in ("RRRNN-", "RRRRRN", "NNNNR-", "RR---N", "R-", "RN")])
SHIFTS = st.lists(st.sampled_from((0, 0, 0, 0, -3, 2, None)), min_size=len(SCHEDULE), max_size=len(SCHEDULE))
ANCHORS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(SCHEDULE), st.integers(min_value=-15, max_value=800)),
        st.lists(st.integers(min_value=1, max_value=6), max_size=2),  # same-week cluster
    ),
    max_size=8,
)
# An event day relative to the infusion: ("day", d) that day, ("visit", i) one of the participant's visit
# days by index, ("shared", _) the one day several of their events fall on — so events tie with visits
# and with each other.
EVENT_DAY = st.tuples(st.sampled_from(("day", "visit", "shared")), st.integers(min_value=-20, max_value=800))
MAYBE_EVENT_DAY = st.one_of(st.none(), EVENT_DAY)
RELAPSES = st.lists(EVENT_DAY, max_size=3)
CUTOFFS = st.one_of(st.just(730), st.integers(min_value=-5, max_value=730), st.none())  # None: the shared day


@st.composite
def cases(draw) -> Case:
    """Scheduled visits (some skipped, some shifted), unscheduled ones, same-week clusters, and events."""
    statuses = draw(STATUSES)
    days: set[int] = set()
    if draw(st.booleans()):  # the protocol schedule, a visit now and then shifted by a few days or not held
        days.update(d + shift for d, shift in zip(SCHEDULE, draw(SHIFTS), strict=True) if shift is not None)
    for anchor, cluster in draw(ANCHORS):
        days.add(anchor)
        days.update(anchor + k for k in cluster)
    visit_days = sorted(days)
    shared = draw(st.integers(min_value=-20, max_value=800))

    def resolve(kind: str, value: int) -> int:
        if kind == "visit" and visit_days:
            return visit_days[value % len(visit_days)]
        return shared if kind == "shared" else value

    def maybe() -> int | None:
        drawn = draw(MAYBE_EVENT_DAY)
        return None if drawn is None else resolve(*drawn)

    shared = resolve("visit", shared) if visit_days and draw(st.booleans()) else shared
    cutoff = draw(CUTOFFS)
    return Case(
        visits=tuple((d, draw(statuses)) for d in visit_days),
        cutoff=shared if cutoff is None else cutoff,
        relapses=tuple(resolve(*r) for r in draw(RELAPSES)),
        withdrawal=maybe(),
        death=maybe(),
        retreatment=maybe(),
        rescue=maybe(),
        infusion=draw(st.integers(min_value=0, max_value=400)),
    )


# Gaps between scheduled visits (30, 31, 33, 61, 122 …) put confirmations exactly on the minimum.
min_days = st.one_of(
    st.just(0), st.sampled_from([1, 7, 28, 30, 31, 33, 61, 91, 122]), st.integers(min_value=0, max_value=200)
)
rule_sets = st.builds(
    DurabilityRules,
    non_responders=st.sampled_from(list(NonResponderPolicy)),
    episodes=st.builds(
        EpisodeRules,
        confirm_onset=st.booleans(),
        onset_confirmation_min_days=min_days,
        confirm_loss=st.booleans(),
        loss_confirmation_min_days=min_days,
        missing_visits=st.sampled_from(list(MissingVisitPolicy)),
    ),
    missed_visits_censor_threshold=st.sampled_from([2, 2, 1, 3, 0, 4]),
    death_is_event=st.booleans(),
    retreatment_is_event=st.booleans(),
    rescue=st.sampled_from(list(RescueStrategy)),
)
landmark_lists = st.one_of(
    st.just(LANDMARK_DAYS),
    st.lists(
        st.one_of(
            st.sampled_from([0.0, 28.0, 91.0, 91.3125, 182.625, 365.25]),
            st.floats(min_value=-10, max_value=800, allow_nan=False),
        ),
        max_size=3,
    ).map(tuple),
)


@PROPERTY
@given(
    batch=st.integers(min_value=0, max_value=30).flatmap(lambda size: st.lists(cases(), min_size=size, max_size=size)),
    rules=rule_sets,
    endpoint=st.sampled_from(ENDPOINTS),
    dor_death_is_event=st.booleans(),
    landmarks=landmark_lists,
    data=st.data(),
)
def test_every_column_equals_the_reference_for_random_participants_and_rules(
    batch, rules, endpoint, dor_death_is_event, landmarks, data
):
    count = sum(len(c.relapses) for c in batch)
    order = data.draw(st.permutations(range(count)))  # relapses come in any order
    assert_agrees(
        batch, rules, endpoint=endpoint, dor_death_is_event=dor_death_is_event, landmarks=landmarks, relapse_order=order
    )


# ---------------------------------------------------------------------------------------------
# Hand-written edge cases
# ---------------------------------------------------------------------------------------------

CENSOR = DurabilityRules(NonResponderPolicy.CENSOR)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("strategy", list(RescueStrategy))
def test_a_relapse_and_a_rescue_on_the_same_day_count_as_relapse(endpoint, strategy):
    same_day = Case(visits=pattern("RRRR"), relapses=(100,), rescue=100)
    result = assert_agrees([same_day], DurabilityRules(NonResponderPolicy.CENSOR, rescue=strategy), endpoint=endpoint)
    assert (result.loc[0, "event"], result.loc[0, "event_code"], result.loc[0, "reason"]) == (1, 1, "relapse")


@pytest.mark.parametrize("threshold", [1, 2, 3])
def test_an_event_after_exactly_threshold_missed_visits_is_censored_before_the_gap(threshold):
    gap = "-" * threshold
    at_threshold = Case(visits=pattern(f"RR{gap}N"))
    just_below = Case(visits=pattern(f"RR{gap[1:]}N"))
    rules = DurabilityRules(NonResponderPolicy.CENSOR, missed_visits_censor_threshold=threshold)
    for endpoint in ENDPOINTS:
        result = assert_agrees([at_threshold, just_below], rules, endpoint=endpoint)
        assert result["event"].tolist() == [0, 1]
        assert result.loc[0, "end"] == BASE + 61
        assert result.loc[0, "reason"] == (
            f"loss of remission after {threshold} consecutive missed visits: censored at last adequate assessment"
        )


def test_confirmation_can_come_at_the_last_visit():
    # Loss at day 122 confirmed by the last visit (day 152); onset at day 28 confirmed 33 days later.
    rules = DurabilityRules(
        NonResponderPolicy.CENSOR,
        episodes=EpisodeRules(
            confirm_onset=True, onset_confirmation_min_days=33, confirm_loss=True, loss_confirmation_min_days=30
        ),
    )
    confirmed = Case(visits=pattern("RRRNN"))
    too_soon = Case(visits=pattern("RRRNN", (28, 61, 91, 122, 151)))  # 29 days: the dip stays unconfirmed
    onset_at_last = Case(visits=pattern("NNNRR", (28, 61, 91, 122, 155)))
    onset_too_soon = Case(visits=pattern("NNNRR", (28, 61, 91, 122, 154)))
    cases = [confirmed, too_soon, onset_at_last, onset_too_soon]
    for endpoint in ENDPOINTS:
        assert_agrees(cases, rules, endpoint=endpoint)
    result = assert_agrees(cases, rules, endpoint="time_to_relapse")
    assert result["event"].tolist() == [1, 0, 0, 0]
    assert result["responder"].tolist() == [True, True, True, False]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_onset_on_the_day_follow_up_is_censored_is_kept(endpoint):
    withdrawn_at_onset = Case(visits=pattern("NNR"), withdrawal=91)
    cut_at_onset = Case(visits=pattern("NNRR"), cutoff=91)
    rescued_at_onset = Case(visits=pattern("NNRR"), rescue=91)
    rules = DurabilityRules(NonResponderPolicy.CENSOR, rescue=RescueStrategy.CENSOR)
    result = assert_agrees([withdrawn_at_onset, cut_at_onset, rescued_at_onset], rules, endpoint=endpoint)
    assert result["onset_day"].tolist() == [91.0, 91.0, 91.0]
    assert result["exit_day"].tolist() == [91, 91, 91]


def test_an_onset_on_the_day_of_a_dated_relapse_is_dropped():
    result = assert_agrees([Case(visits=pattern("NNRR"), relapses=(91,))], CENSOR, endpoint="time_to_relapse")
    assert math.isnan(result.loc[0, "onset_day"])


@pytest.mark.parametrize("policy", list(NonResponderPolicy))
def test_participants_without_visits_follow_the_non_responder_policy(policy):
    cases = [Case(), Case(relapses=(50,)), Case(death=20, cutoff=300), Case(visits=pattern("---"), withdrawal=100)]
    for endpoint in ENDPOINTS:
        assert_agrees(cases, DurabilityRules(policy), endpoint=endpoint)


def test_visits_outside_the_window_still_count_as_assessments():
    case = Case(visits=((-7, "R"), *pattern("RRN"), (760, "N")), cutoff=730)
    result = assert_agrees([case], CENSOR, endpoint="time_to_relapse")
    assert result.loc[0, "assessments"] == 5


def test_an_empty_trial_gives_an_empty_frame():
    result = assert_agrees([], CENSOR, endpoint="time_to_relapse")
    assert "landmark_1" in result.columns


def test_visits_and_relapses_may_come_unsorted():
    cases = [Case(visits=pattern("RRNR"), relapses=(300, 40)), Case(visits=pattern("NRRRN"))]
    participants, visits, relapses = frames(cases)
    shuffled = visits.iloc[::-1].reset_index(drop=True)
    want = participant_outcomes(participants, visits, relapses, CENSOR, endpoint="time_to_relapse")
    got = participant_outcomes(participants, shuffled, relapses.iloc[::-1], CENSOR, endpoint="time_to_relapse")
    pd.testing.assert_frame_equal(got, want)


def test_two_visits_on_one_day_or_an_unknown_endpoint_are_refused():
    participants, visits, relapses = frames([Case(visits=pattern("RR"))])
    doubled = pd.concat([visits, visits.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="share a date"):
        participant_outcomes(participants, doubled, relapses, CENSOR, endpoint="time_to_relapse")
    with pytest.raises(ValueError, match="unknown endpoint"):
        participant_outcomes(participants, visits, relapses, CENSOR, endpoint="overall_survival")


@pytest.mark.parametrize(
    ("late", "note"),
    [
        ({}, ""),
        ({"visits": pattern("RRR") + ((400, "R"),)}, " (administrative cut-off 2026-01-06)"),
        ({"relapses": (400,)}, " (administrative cut-off 2026-01-06)"),
        ({"death": 400}, " (administrative cut-off 2026-01-06)"),
        ({"retreatment": 400}, " (administrative cut-off 2026-01-06)"),
        ({"rescue": 400}, " (administrative cut-off 2026-01-06)"),
        ({"withdrawal": 400}, ""),  # a withdrawal after the cut-off is not something the cut hid
    ],
)
def test_anything_dated_after_the_cut_off_is_named_in_the_censoring_reason(late, note):
    case = Case(**{"visits": pattern("RRR"), "cutoff": 365, **late})
    for strategy in RescueStrategy:
        rules = DurabilityRules(NonResponderPolicy.CENSOR, rescue=strategy)
        result = assert_agrees([case], rules, endpoint="time_to_relapse")
        assert result.loc[0, "reason"] == f"censored at last adequate assessment{note}"


@pytest.mark.parametrize(
    ("withdrawal", "note"),
    [
        (99, " (withdrawn or lost to follow-up)"),
        (100, " (rescue therapy: hypothetical strategy)"),  # same day: the rescue ends follow-up
        (101, " (rescue therapy: hypothetical strategy)"),
        (None, " (rescue therapy: hypothetical strategy)"),
    ],
)
def test_a_withdrawal_before_a_hypothetical_strategy_rescue_names_the_withdrawal(withdrawal, note):
    case = Case(visits=pattern("RRR"), rescue=100, withdrawal=withdrawal)
    rules = DurabilityRules(NonResponderPolicy.CENSOR, rescue=RescueStrategy.CENSOR)
    for endpoint in ENDPOINTS:
        result = assert_agrees([case], rules, endpoint=endpoint)
        assert result.loc[0, "reason"] == f"censored at last adequate assessment{note}"


@pytest.mark.parametrize("strategy", [RescueStrategy.EVENT, RescueStrategy.COMPETING])
def test_a_remission_that_starts_only_after_rescue_does_not_count(strategy):
    """Under the composite and while-on-treatment strategies a remission that starts after the rescue is
    the rescue's effect: the participant is a non-responder for the endpoint too (no DOR row; excluded
    from time to relapse under ``exclude``), consistently with ``responder``."""
    case = Case(visits=pattern("NNRR"), rescue=70)
    rules = DurabilityRules(NonResponderPolicy.EXCLUDE, rescue=strategy)
    result = assert_agrees([case], rules, endpoint="duration_of_remission")
    assert result.loc[0, ["included", "responder"]].tolist() == [False, False]
    assert not bool(assert_agrees([case], rules, endpoint="time_to_relapse").loc[0, "included"])
