"""Type 1 diabetes derivations: IDAA1c, MMTT C-peptide, insulin independence (docs/domain.md §5.2)."""

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.derivations import (
    CPeptideSample,
    InsulinIndependenceRule,
    NotEvaluableError,
    consecutive_insulin_free_days,
    idaa1c,
    idaa1c_partial_remission,
    insulin_free_days_from_log,
    insulin_independent,
    mmtt_summary,
)

percents = st.decimals(min_value=4, max_value=15, places=1, allow_nan=False, allow_infinity=False)
doses = st.decimals(min_value=0, max_value=2, places=2, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(
    ("hba1c", "dose", "expected", "remission"),
    [
        # IDAA1c = HbA1c % + 4 × U/kg/24 h, worked by hand.
        ("7.0", "0.50", "9.00", True),  # 7.0 + 2.0 = 9.0: the boundary is inclusive (≤ 9)
        ("6.5", "0.40", "8.10", True),  # 6.5 + 1.6
        ("8.0", "0.30", "9.20", False),  # 8.0 + 1.2
        ("6.0", "0.76", "9.04", False),  # 6.0 + 3.04
    ],
)
def test_idaa1c_matches_worked_examples(hba1c, dose, expected, remission):
    value = idaa1c(hba1c=hba1c, hba1c_unit="%", insulin_u_per_kg_day=dose)
    assert value == Decimal(expected)
    assert idaa1c_partial_remission(value) is remission


def test_idaa1c_converts_ifcc_hba1c_to_percent_first():
    # 53 mmol/mol = 53/10.929 + 2.15 = 6.99945 %; + 4 × 0.5 = 8.99945 ≤ 9.
    value = idaa1c(hba1c=53, hba1c_unit="mmol/mol", insulin_u_per_kg_day="0.5")
    assert value == Decimal(53) / Decimal("10.929") + Decimal("2.15") + 2
    assert idaa1c_partial_remission(value)
    # Reading 53 as a percentage would be absurd, and the unit is what stops it.
    assert value < 10


@given(percents, doses, doses)
def test_idaa1c_increases_with_insulin_dose(hba1c, dose_a, dose_b):
    a = idaa1c(hba1c=hba1c, hba1c_unit="%", insulin_u_per_kg_day=dose_a)
    b = idaa1c(hba1c=hba1c, hba1c_unit="%", insulin_u_per_kg_day=dose_b)
    assert (a < b) == (dose_a < dose_b)
    assert b - a == 4 * (dose_b - dose_a)


def test_idaa1c_refuses_a_negative_dose():
    with pytest.raises(ValueError, match="negative"):
        idaa1c(hba1c="7", hba1c_unit="%", insulin_u_per_kg_day="-0.1")


# A TrialNet-schedule MMTT (−10, 0, 15, 30, 60, 90, 120 min), values in nmol/L.
MMTT = {-10: "0.18", 0: "0.20", 15: "0.35", 30: "0.50", 60: "0.60", 90: "0.45", 120: "0.30"}


def _samples(values, unit="nmol/L"):
    return [CPeptideSample(minute, value, unit) for minute, value in values.items()]


def test_mmtt_auc_is_the_trapezoid_from_minute_zero():
    summary = mmtt_summary(_samples(MMTT))
    # Trapezoids by hand, 0→120 min; the −10 min fasting draw does not extend the curve:
    # (0.20+0.35)/2·15 + (0.35+0.50)/2·15 + (0.50+0.60)/2·30 + (0.60+0.45)/2·30 + (0.45+0.30)/2·30
    # = 4.125 + 6.375 + 16.5 + 15.75 + 11.25 = 54.0 nmol/L·min
    assert summary.auc_nmol_min_l == Decimal("54.0")
    assert summary.duration_min == 120
    assert summary.start_minute == 0
    assert summary.mean_auc_nmol_l == Decimal("0.45")  # 54.0 / 120
    assert summary.peak_nmol_l == Decimal("0.60")
    assert summary.fasting_nmol_l == Decimal("0.20")
    assert summary.c_peptide_90_nmol_l == Decimal("0.45")
    assert summary.samples_used == 6


def test_mmtt_flags_the_domain_c_peptide_thresholds():
    assert mmtt_summary(_samples(MMTT)).peak_meaningful  # peak 0.60 ≥ 0.2 nmol/L
    low = mmtt_summary(_samples({0: "0.05", 60: "0.19", 90: "0.15", 120: "0.10"}))
    assert (low.peak_meaningful, low.c_peptide_90_meaningful, low.fasting_meaningful) == (False, False, False)
    edge = mmtt_summary(_samples({0: "0.1", 90: "0.2"}))
    assert (edge.peak_meaningful, edge.c_peptide_90_meaningful, edge.fasting_meaningful) == (True, True, True)
    assert mmtt_summary(_samples({15: "0.3", 60: "0.4"})).c_peptide_90_meaningful is None


def test_mmtt_can_average_the_pre_meal_draws_as_baseline():
    summary = mmtt_summary(_samples(MMTT), average_pre_meal_baseline=True)
    # Baseline (0.18 + 0.20)/2 = 0.19; first trapezoid (0.19 + 0.35)/2·15 = 4.05 instead of 4.125.
    assert summary.fasting_nmol_l == Decimal("0.19")
    assert summary.auc_nmol_min_l == Decimal("53.925")


def test_mmtt_converts_each_sample_from_its_own_unit():
    mixed = [
        CPeptideSample(0, 200, "pmol/L"),
        CPeptideSample(30, "0.5", "nmol/L"),
        CPeptideSample(60, 1, "ng/mL"),  # 0.331 nmol/L
        CPeptideSample(120, 300, "pmol/L"),
    ]
    summary = mmtt_summary(mixed)
    # (0.2+0.5)/2·30 + (0.5+0.331)/2·30 + (0.331+0.3)/2·60 = 10.5 + 12.465 + 18.93 = 41.895
    assert summary.auc_nmol_min_l == Decimal("41.895")
    assert summary.peak_nmol_l == Decimal("0.5")


@given(st.decimals(min_value=0, max_value=5, places=3, allow_nan=False, allow_infinity=False))
def test_a_flat_c_peptide_curve_has_mean_auc_equal_to_its_level(level):
    summary = mmtt_summary(_samples(dict.fromkeys((0, 15, 30, 60, 90, 120), level)))
    assert summary.auc_nmol_min_l == level * 120
    assert summary.mean_auc_nmol_l == level


def test_mmtt_needs_two_post_meal_samples_and_unique_minutes():
    with pytest.raises(NotEvaluableError):
        mmtt_summary(_samples({-10: "0.1", 0: "0.2"}))
    with pytest.raises(ValueError, match="minute 30"):
        mmtt_summary([CPeptideSample(30, "0.1", "nmol/L"), CPeptideSample(30, "0.2", "nmol/L")])
    with pytest.raises(ValueError, match="unit 'mg/dL'"):
        mmtt_summary([CPeptideSample(0, "0.1", "mg/dL"), CPeptideSample(30, "0.2", "nmol/L")])


def test_insulin_independence_default_rule():
    assert insulin_independent(insulin_free_days=14, hba1c="6.9", hba1c_unit="%")
    assert not insulin_independent(insulin_free_days=13, hba1c="6.9", hba1c_unit="%")
    assert not insulin_independent(insulin_free_days=30, hba1c="7.0", hba1c_unit="%")  # < 7 is strict
    assert insulin_independent(insulin_free_days=30, hba1c=48, hba1c_unit="mmol/mol")  # 6.54 %


def test_insulin_independence_rule_is_configurable():
    strict = InsulinIndependenceRule(
        min_insulin_free_days=28, hba1c_max_percent=Decimal("6.5"), hba1c_max_inclusive=True
    )
    assert insulin_independent(insulin_free_days=28, hba1c="6.5", hba1c_unit="%", rule=strict)
    assert not insulin_independent(insulin_free_days=27, hba1c="6.0", hba1c_unit="%", rule=strict)
    no_hba1c = InsulinIndependenceRule(hba1c_max_percent=None)
    assert insulin_independent(insulin_free_days=14, hba1c=None, hba1c_unit=None, rule=no_hba1c)
    with pytest.raises(NotEvaluableError, match="hba1c"):
        insulin_independent(insulin_free_days=14, hba1c=None, hba1c_unit=None)


def test_insulin_free_days_stop_at_a_dose_or_a_gap_in_the_diary():
    day = dt.date(2025, 6, 30)
    diary = {day - dt.timedelta(days=i): 0 for i in range(20)}
    assert consecutive_insulin_free_days(diary, as_of=day) == 20
    diary[day - dt.timedelta(days=5)] = Decimal("0.1")
    assert consecutive_insulin_free_days(diary, as_of=day) == 5
    del diary[day - dt.timedelta(days=2)]
    assert consecutive_insulin_free_days(diary, as_of=day) == 2


@given(
    changes=st.lists(
        st.tuples(st.integers(0, 120), st.sampled_from([0, 0, 0, 5, 12])),
        min_size=0,
        max_size=8,
        unique_by=lambda c: c[0],
    ),
    as_of=st.integers(0, 130),
)
def test_insulin_free_days_from_the_log_equal_the_daily_diary_count(changes, as_of):
    start = dt.date(2025, 1, 1)
    log = [(start + dt.timedelta(days=d), units) for d, units in changes]
    as_of_date = start + dt.timedelta(days=as_of)
    # Independent computation: expand the step function to one diary entry per day.
    daily = {}
    for offset in range(as_of + 1):
        day = start + dt.timedelta(days=offset)
        current = [units for d, units in sorted(log) if d <= day]
        if current:
            daily[day] = current[-1]
    expected = consecutive_insulin_free_days(daily, as_of=as_of_date) if daily else None
    assert insulin_free_days_from_log(log, as_of=as_of_date) == expected
