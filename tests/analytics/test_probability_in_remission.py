"""Probability of being in remission (multi-state Aalen–Johansen) and the landmark analysis, checked
against independent computations: counting when nothing is censored, lifelines' Kaplan–Meier for the
"not yet in remission" state, a hand-worked table with censoring, and lifelines fits on data filtered
and shifted by hand for the landmark."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import KaplanMeierFitter

from analytics import survival


@st.composite
def histories(draw, censored: bool):
    n = draw(st.integers(1, 25))
    rows = []
    for _ in range(n):
        onset = draw(st.one_of(st.none(), st.integers(1, 600)))
        if censored:
            exit_day = draw(st.integers(onset if onset is not None else 1, 730))
            event = draw(st.booleans()) if onset is None or exit_day > onset else False
        else:
            exit_day = draw(st.integers(onset + 1 if onset is not None else 1, 731))
            event = exit_day <= 730  # followed to the end unless they relapse first
            exit_day = min(exit_day, 730)
            if onset is not None and exit_day <= onset:
                exit_day, event = 730, False
        rows.append((math.nan if onset is None else float(onset), float(exit_day), int(event)))
    return pd.DataFrame(rows, columns=["onset_day", "exit_day", "exit_event"])


@settings(max_examples=150, deadline=None)
@given(frame=histories(censored=False))
def test_without_censoring_it_is_the_share_of_participants_in_remission(frame):
    times, p0, p1 = survival.state_occupancy(frame["onset_day"], frame["exit_day"], frame["exit_event"])
    onset, exit_day, event = (frame[c].to_numpy() for c in ("onset_day", "exit_day", "exit_event"))
    for t, a, b in zip(times, p0, p1, strict=True):
        if t >= 730:
            continue  # everyone still followed is censored at the horizon
        in_remission = (onset <= t) & ((exit_day > t) | (event == 0))
        not_yet = np.isnan(onset) & ((exit_day > t) | (event == 0)) | (onset > t)
        assert b == pytest.approx(in_remission.mean(), abs=1e-12)
        assert a == pytest.approx(not_yet.mean(), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(frame=histories(censored=True))
def test_the_not_yet_in_remission_state_is_the_kaplan_meier_of_leaving_it(frame):
    times, p0, _ = survival.state_occupancy(frame["onset_day"], frame["exit_day"], frame["exit_event"])
    has_onset = frame["onset_day"].notna()
    leave = np.where(has_onset, frame["onset_day"], frame["exit_day"])
    left = has_onset | (frame["exit_event"] == 1)
    kmf = KaplanMeierFitter().fit(leave, left)
    expected = kmf.survival_function_at_times(times).to_numpy()
    np.testing.assert_allclose(p0, expected, atol=1e-12)


def test_a_hand_worked_table_with_censoring():
    # Five participants (day of remission onset, day follow-up ends, relapsed?):
    #   A 10 -> 30 relapse;  B 10 -> 40 censored;  C never, censored 20;  D 20 -> 50 relapse;  E never, 25 relapse
    frame = pd.DataFrame(
        {
            "onset_day": [10, 10, math.nan, 20, math.nan],
            "exit_day": [30, 40, 20, 50, 25],
            "exit_event": [1, 0, 0, 1, 1],
        }
    )
    times, p0, p1 = survival.state_occupancy(frame["onset_day"], frame["exit_day"], frame["exit_event"])
    assert times.tolist() == [10, 20, 25, 30, 40, 50]
    # t=10: 5 in state 0, 2 enter remission: p0 = 3/5, p1 = 2/5.
    # t=20: 3 in state 0 (C censored at 20 still at risk), D enters: p0 = 3/5 * 2/3 = 2/5, p1 = 2/5 + 3/5 * 1/3 = 3/5.
    # t=25: state 0 holds E only (C left at 20): E relapses directly: p0 = 0.
    # t=30: 3 in remission (A, B, D), A relapses: p1 = 3/5 * 2/3 = 2/5.
    # t=40: B censored: no change. t=50: D (alone at risk) relapses: p1 = 0.
    np.testing.assert_allclose(p0, [3 / 5, 2 / 5, 0, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(p1, [2 / 5, 3 / 5, 3 / 5, 2 / 5, 2 / 5, 0], atol=1e-12)
    result = survival.probability_in_remission(frame, horizon=60, times=[15, 35], bootstrap=50, seed=1)
    (group,) = result["groups"]
    # Area: 2/5 on [10,20) + 3/5 on [20,30) + 2/5 on [30,50) = 4 + 6 + 8 = 18 days.
    assert group["mean_time_in_remission"] == pytest.approx(18.0)
    assert [s["in_remission"] for s in group["at_times"]] == pytest.approx([0.4, 0.4])
    assert group["mean_time_se"] > 0
    again = survival.probability_in_remission(frame, horizon=60, times=[15, 35], bootstrap=50, seed=1)
    assert again["groups"][0]["mean_time_se"] == group["mean_time_se"]  # seeded: reproducible


def test_an_onset_after_leaving_is_refused():
    with pytest.raises(ValueError, match="onset"):
        survival.state_occupancy(np.array([30.0]), np.array([20.0]), np.array([1]))


def test_the_landmark_analysis_equals_kaplan_meier_on_the_filtered_shifted_data():
    rng = np.random.default_rng(3)
    n = 300
    frame = pd.DataFrame(
        {
            "duration": rng.integers(20, 730, n).astype(float),
            "event": rng.integers(0, 2, n),
            "remission_at_3m": rng.random(n) < 0.5,
        }
    )
    result = survival.landmark_analysis(frame, landmark=91.3125, status_col="remission_at_3m", label="3 months")
    kept = frame[frame["duration"] > 91.3125]
    assert result["at_risk"] == len(kept)
    assert result["excluded_event_before"] + result["excluded_censored_before"] == n - len(kept)
    for group in result["kaplan_meier"]["groups"]:
        status = group["group"] == "In remission"
        part = kept[kept["remission_at_3m"] == status]
        kmf = KaplanMeierFitter().fit(part["duration"] - 91.3125, part["event"])
        at_six = next(s for s in group["survival_at"] if s["time"] == 182.625)
        assert at_six["survival"] == pytest.approx(float(kmf.survival_function_at_times(182.625).iloc[0]), abs=1e-12)
        assert group["n"] == len(part)
    assert result["log_rank"]["df"] == 1
