"""Behaviour of analytics/survival.py beyond the published anchors: hand computations, lifelines
pitfalls (docs/domain.md Part B §0-§1), determinism and the JSON contract."""

import json
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.datasets import load_lung
from lifelines.utils import restricted_mean_survival_time as lifelines_rmst

from analytics.survival import (
    cox_ph,
    cumulative_incidence,
    kaplan_meier,
    log_rank,
    r_quantile,
    restricted_mean_survival_time,
    turnbull_npmle,
)


def lung_ecog0() -> pd.DataFrame:
    data = load_lung()
    return data[data["ph.ecog"] == 0].rename(columns={"time": "duration", "status": "event"})


# --- Aalen–Johansen ---------------------------------------------------------------------------

# Eight participants: time in days, cause 0 censored / 1 relapse / 2 death.
COMPETING = pd.DataFrame({"cr_duration": [1, 2, 3, 4, 5, 6, 7, 8], "event_code": [1, 2, 0, 1, 1, 2, 0, 1]})


def hand_aalen_johansen(times, codes, cause):
    """CIF_k(t) = Σ_{t_j ≤ t} S(t_j−) · d_kj / n_j, S the all-cause KM. Exact fractions, no ties here."""
    rows = sorted(zip(times, codes, strict=True))
    at_risk, survival, cif, curve = len(rows), Fraction(1), Fraction(0), {}
    for time, code in rows:
        if code != 0:
            if code == cause:
                cif += survival / at_risk
            survival *= Fraction(at_risk - 1, at_risk)
        at_risk -= 1
        curve[time] = cif
    return curve


def test_aalen_johansen_matches_a_hand_computation():
    hand = hand_aalen_johansen(COMPETING["cr_duration"], COMPETING["event_code"], cause=1)
    # Written out: t=1: 1·1/8 = 1/8;  t=4: S=6/8, n=5 → +3/20 → 11/40;  t=5: S=3/5, n=4 → +3/20 → 17/40;
    # t=8: S=3/10, n=1 → +3/10 → 29/40.
    assert [hand[t] for t in (1, 4, 5, 8)] == [Fraction(1, 8), Fraction(11, 40), Fraction(17, 40), Fraction(29, 40)]
    result = cumulative_incidence(COMPETING, times=[1, 2, 3, 4, 5, 6, 7, 8])
    for row in result["at_times"]:
        assert row["cif"] == pytest.approx(float(hand[int(row["time"])]), abs=1e-12)
    assert result["competing_events"] == [2]
    assert (result["events_of_interest"], result["competing"], result["censored"]) == (4, 2, 2)


def test_naive_one_minus_km_overstates_the_incidence():
    result = cumulative_incidence(COMPETING, times=[4, 5, 8])
    # 1 − KM with deaths censored: 1 − (7/8)(4/5) = 0.3, 1 − (7/8)(4/5)(3/4) = 0.475, then 1.
    naive = {row["time"]: row["naive_one_minus_km"] for row in result["at_times"]}
    assert naive == pytest.approx({4.0: 0.3, 5.0: 0.475, 8.0: 1.0})
    for row in result["at_times"]:
        assert row["naive_one_minus_km"] > row["cif"]


def test_tied_competing_events_give_the_exact_estimate_whatever_the_seed():
    tied = pd.DataFrame({"cr_duration": [2, 2, 2, 3, 5, 5], "event_code": [1, 2, 0, 1, 0, 2]})
    # t=2: n=6, a relapse and a death (the censoring at 2 comes after them): CIF₁ = 1/6, S = 4/6.
    # t=3: n=3: CIF₁ += (4/6)·(1/3) = 2/9 → 7/18.
    expected = {2.0: 1 / 6, 3.0: 7 / 18, 5.0: 7 / 18}
    state = np.random.get_state()[1].copy()
    results = [cumulative_incidence(tied, times=[2, 3, 5], seed=seed) for seed in (1, 2, 3)]
    assert np.array_equal(np.random.get_state()[1], state)  # NumPy's global generator is left alone
    for result in results:
        assert result["ties_broken"] == 2
        assert {r["time"]: r["cif"] for r in result["at_times"]} == pytest.approx(expected)
    assert cumulative_incidence(tied, seed=7) == cumulative_incidence(tied, seed=7)


def test_events_at_time_zero_count():
    # lifelines zeroes the CIF of its first row; an event at day 0 (failure at origin) must still count.
    result = cumulative_incidence(pd.DataFrame({"cr_duration": [0, 1, 2], "event_code": [1, 1, 0]}), times=[0, 1])
    assert [r["cif"] for r in result["at_times"]] == pytest.approx([1 / 3, 2 / 3])


def test_cif_confidence_interval_brackets_the_estimate():
    for row in cumulative_incidence(COMPETING, times=[4, 5])["at_times"]:
        assert row["ci"]["lower"] < row["cif"] < row["ci"]["upper"]
        assert row["std_err"] > 0


# --- Kaplan–Meier -------------------------------------------------------------------------------


def test_log_log_band_is_the_lifelines_band():
    frame = lung_ecog0()
    ours = kaplan_meier(frame, ci_transform="log-log")
    assert ours["ci_transform_primary"] == "log-log"
    kmf = KaplanMeierFitter().fit(frame["duration"], frame["event"])
    band = kmf.confidence_interval_
    for row in ours["groups"][0]["table"]:
        if row["survival"] is not None and 0 < row["survival"] < 1:
            lower, upper = band.loc[row["time"]].to_numpy()
            assert row["ci_log_log"]["lower"] == pytest.approx(lower, abs=1e-12)
            assert row["ci_log_log"]["upper"] == pytest.approx(upper, abs=1e-12)


def test_log_band_is_wider_above_and_capped_at_one():
    for row in kaplan_meier(lung_ecog0())["groups"][0]["table"]:
        if row["survival"]:
            assert row["ci_log"]["lower"] <= row["survival"] <= row["ci_log"]["upper"] <= 1


def test_median_uses_the_midpoint_of_a_flat_stretch_at_one_half():
    # Four deaths at 1, 2, 3, 4: S = 0.75, 0.5, 0.25, 0. S is exactly 0.5 on [2, 3): R reports 2.5.
    frame = pd.DataFrame({"duration": [1, 2, 3, 4], "event": [1, 1, 1, 1]})
    assert kaplan_meier(frame)["groups"][0]["median"]["median"] == 2.5
    assert r_quantile([1, 2, 3], [0.9, 0.8, 0.7]) is None  # never reaches 0.5


def test_survival_after_the_last_observation_is_flagged():
    frame = pd.DataFrame({"duration": [100, 200, 300], "event": [1, 0, 0]})
    [early, late] = kaplan_meier(frame, times=[150, 730.5])["groups"][0]["survival_at"]
    assert not early["beyond_last_observation"]
    assert late["beyond_last_observation"]
    assert (early["n_risk"], late["n_risk"]) == (2, 0)


# --- RMST -------------------------------------------------------------------------------------


def test_rmst_and_its_standard_error_by_hand():
    frame = pd.DataFrame({"duration": [1, 2, 3, 4], "event": [1, 1, 1, 1]})
    [group] = restricted_mean_survival_time(frame, horizon=3)["groups"]
    # Area to τ = 3: 1·1 + 1·0.75 + 1·0.5 = 2.25.
    # SE² = Σ A_j² d_j/(n_j(n_j − d_j)): t=1: A = 0.75 + 0.5 = 1.25, 1/(4·3); t=2: A = 0.5, 1/(3·2);
    #       t=3: A = 0. → 1.5625/12 + 0.25/6 = 0.171875.
    assert group["rmst"] == pytest.approx(2.25)
    assert group["se"] == pytest.approx(math.sqrt(0.171875))


# lifelines computes E[min(T, τ)²] with scipy.integrate.quad over the KM step function, which warns
# that it hit its subdivision limit; the warning is lifelines', not ours (we integrate the steps exactly).
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_rmst_point_estimate_agrees_with_lifelines_but_its_variance_is_not_a_standard_error():
    frame = lung_ecog0()
    [ours] = restricted_mean_survival_time(frame, horizon=730)["groups"]
    kmf = KaplanMeierFitter().fit(frame["duration"], frame["event"])
    point, variance = lifelines_rmst(kmf, t=730, return_variance=True)
    assert ours["rmst"] == pytest.approx(point, rel=1e-9)
    # lifelines' "variance" is Var[min(T, τ)], the spread of the truncated times (docs/domain.md Part B §1).
    assert math.sqrt(variance) > 5 * ours["se"]


def test_rmst_difference_between_two_groups():
    data = load_lung().dropna(subset=["ph.ecog"])
    frame = data[data["ph.ecog"] < 2].rename(columns={"time": "duration", "status": "event", "ph.ecog": "group"})
    result = restricted_mean_survival_time(frame, horizon=730, group_col="group", reference_group="0")
    by_group = {g["group"]: g for g in result["groups"]}
    comparison = result["comparison"]
    assert comparison["contrast"] == "1 - 0"
    assert comparison["difference"] == pytest.approx(by_group["1"]["rmst"] - by_group["0"]["rmst"])
    assert comparison["difference_se"] == pytest.approx(math.hypot(by_group["0"]["se"], by_group["1"]["se"]))
    assert comparison["difference_ci"]["lower"] < comparison["difference"] < comparison["difference_ci"]["upper"]
    assert 0 < comparison["p_value"] < 1
    assert comparison["ratio"] == pytest.approx(by_group["1"]["rmst"] / by_group["0"]["rmst"])


# --- Log-rank and Cox -------------------------------------------------------------------------


def test_two_group_log_rank_by_hand():
    frame = pd.DataFrame({"duration": [1, 3, 5, 2, 4, 6], "event": [1, 1, 0, 1, 1, 1], "group": list("AAABBB")})
    # Event times 1, 2, 3, 4, 6 with (n, n_A, d): (6,3,1) (5,2,1) (4,2,1) (3,1,1) (1,0,1).
    # E_A = 3/6 + 2/5 + 2/4 + 1/3 + 0 = 26/15; V = 1/4 + 6/25 + 1/4 + 2/9 + 0 = 433/450; O_A = 2.
    expected_a, variance = Fraction(26, 15), Fraction(433, 450)
    result = log_rank(frame)
    groups = {g["group"]: g for g in result["groups"]}
    assert groups["A"]["expected"] == pytest.approx(float(expected_a))
    assert groups["A"]["observed"] == 2
    assert result["statistic"] == pytest.approx(float((2 - expected_a) ** 2 / variance))
    assert result["df"] == 1


def test_breslow_and_efron_agree_when_there_are_no_ties():
    rng = np.random.default_rng(12345)
    x = rng.normal(size=80)
    frame = pd.DataFrame(
        {"duration": rng.exponential(np.exp(-0.7 * x)), "event": (rng.uniform(size=80) < 0.8).astype(int), "x": x}
    )
    efron = cox_ph(frame, covariates=["x"])
    breslow = cox_ph(frame, covariates=["x"], ties="breslow")
    assert breslow["coefficients"][0]["coef"] == pytest.approx(efron["coefficients"][0]["coef"], abs=1e-7)
    assert breslow["coefficients"][0]["se"] == pytest.approx(efron["coefficients"][0]["se"], abs=1e-7)
    assert breslow["log_likelihood"] == pytest.approx(efron["log_likelihood"], abs=1e-7)


def test_batch_mode_does_not_change_the_cox_fit():
    data = load_lung().dropna(subset=["ph.ecog"]).rename(columns={"time": "duration", "status": "event"})
    batch = cox_ph(data, covariates=["ph.ecog", "age"])
    single = cox_ph(data, covariates=["ph.ecog", "age"], batch_mode=False)
    for a, b in zip(batch["coefficients"], single["coefficients"], strict=True):
        assert a["coef"] == pytest.approx(b["coef"], abs=1e-10)
        assert a["se"] == pytest.approx(b["se"], abs=1e-10)
    assert "batch_mode=True" in batch["engine"]


def test_cox_reports_a_proportional_hazards_check_per_covariate():
    data = load_lung().dropna(subset=["ph.ecog"]).rename(columns={"time": "duration", "status": "event"})
    result = cox_ph(data, covariates=["ph.ecog", "age"])
    ph = result["proportional_hazards"]
    assert "rank" in ph["method"]
    assert [t["covariate"] for t in ph["tests"]] == ["ph.ecog", "age"]
    assert all(0 <= t["p_value"] <= 1 for t in ph["tests"])
    hr = result["coefficients"][0]
    assert hr["hazard_ratio"] == pytest.approx(math.exp(hr["coef"]))
    assert hr["hazard_ratio_ci"]["lower"] < hr["hazard_ratio"] < hr["hazard_ratio_ci"]["upper"]


# --- Interval-censored NPMLE -----------------------------------------------------------------


def test_turnbull_with_exact_times_reduces_to_kaplan_meier():
    # Exactly known deaths (lower = upper) and right-censoring (upper = ∞) make the NPMLE the KM, so
    # the R values of docs/domain.md §3 for lung ph.ecog = 0 (S = .841, .535, .193; median 394) reappear.
    frame = lung_ecog0()
    intervals = pd.DataFrame(
        {"lower": frame["duration"], "upper": np.where(frame["event"] == 1, frame["duration"], np.inf)}
    )
    result = turnbull_npmle(intervals, times=[180, 365, 730])
    survival = [row["survival_upper"] for row in result["survival_at"]]
    assert survival == pytest.approx([0.841, 0.535, 0.193], abs=5e-4)
    assert result["median"] == {"lower": 394.0, "upper": 394.0}


def test_turnbull_hand_example():
    # Intervals [1,2], [2,3], [3,∞), [4,5] (closed). Turnbull intervals {2}, {3}, [4,5]; the likelihood
    # p₁(p₁+p₂)(p₂+p₃)p₃ is maximal at p₁ = p₃ = ½, p₂ = 0. So S = 1 before 2, ½ after 2 and 3, and
    # inside [4, 5] the NPMLE lies anywhere between ½ (upper) and 0 (lower). EM precision ~1e-3.
    frame = pd.DataFrame({"lower": [1, 2, 3, 4], "upper": [2, 3, None, 5]})
    result = turnbull_npmle(frame, times=[1.5, 2.5, 3.5, 4.5, 10])
    rows = [(r["survival_upper"], r["survival_lower"]) for r in result["survival_at"]]
    expected = [(1, 1), (0.5, 0.5), (0.5, 0.5), (0.5, 0), (0, 0)]
    for (upper, lower), (exp_upper, exp_lower) in zip(rows, expected, strict=True):
        assert upper == pytest.approx(exp_upper, abs=1e-2)
        assert lower == pytest.approx(exp_lower, abs=1e-2)
    assert result["right_censored"] == 1


# --- Contract ---------------------------------------------------------------------------------


def test_every_result_is_plain_json_with_library_versions():
    data = load_lung().dropna(subset=["ph.ecog"]).rename(columns={"time": "duration", "status": "event"})
    data["group"] = data["sex"]
    data["cr_duration"], data["event_code"] = data["duration"], data["event"]
    data["lower"], data["upper"] = data["duration"], np.where(data["event"] == 1, data["duration"], np.inf)
    results = [
        kaplan_meier(data, group_col="group"),
        log_rank(data),
        cox_ph(data, covariates=["ph.ecog", "age"]),
        cox_ph(data, covariates=["ph.ecog", "age"], ties="breslow"),
        cumulative_incidence(data),
        restricted_mean_survival_time(data, group_col="group"),
        turnbull_npmle(data),
    ]
    for result in results:
        assert json.loads(json.dumps(result, allow_nan=False)) == result
        assert result["versions"]["lifelines"] == "0.30.3"


def test_results_are_deterministic():
    data = load_lung().rename(columns={"time": "duration", "status": "event", "sex": "group"})
    assert kaplan_meier(data, group_col="group") == kaplan_meier(data.sample(frac=1, random_state=3), group_col="group")
    assert cox_ph(data, covariates=["age"]) == cox_ph(data.sample(frac=1, random_state=4), covariates=["age"])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"duration": [1.0]}), "missing column"),
        (pd.DataFrame({"duration": [1.0, None], "event": [1, 0]}), "missing value"),
        (pd.DataFrame({"duration": [-1.0], "event": [1]}), "non-negative"),
        (pd.DataFrame({"duration": [1.0], "event": [2]}), "0/1"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(frame, message):
    with pytest.raises(ValueError, match=message):
        kaplan_meier(frame)
