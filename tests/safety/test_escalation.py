"""3+3 dose escalation and the Bayesian beta-binomial stopping rule (docs/domain.md Part A §3.7-3.8)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety.escalation import (
    BetaBinomialRule,
    Decision,
    LevelCounts,
    boundary_table,
    monitoring_status,
    operating_characteristics,
    operating_characteristics_table,
    posterior_prob_exceeds,
    stop_triggered,
    three_plus_three,
)
from safety.rules_data import InputError, get_rules

PROPERTY = settings(database=None, derandomize=True, deadline=None, max_examples=60)

FULL_3 = LevelCounts(treated=3, evaluable=3, dlts=0)
FULL_6 = LevelCounts(treated=6, evaluable=6, dlts=0)


def decide(current, below=FULL_3, *, lowest=False, highest=False, above_exceeds=False):
    return three_plus_three(
        current,
        below=None if lowest else below,
        is_lowest=lowest,
        is_highest=highest,
        above_exceeds_mtd=above_exceeds,
    )


# ---------------------------------------------------------------------------------------------
# 3+3
# ---------------------------------------------------------------------------------------------


def test_0_of_3_escalates_with_3_new_subjects():
    result = decide(LevelCounts(3, 3, 0))
    assert result.decision is Decision.ESCALATE
    assert (result.next_level_offset, result.subjects_needed) == (1, 3)
    assert result.rule == "0 of 3 participants had a DLT: escalate to the next dose with 3 new participants."
    assert result.rule_version == "3+3-2025.1"


def test_1_of_3_expands_the_level_to_6():
    result = decide(LevelCounts(3, 3, 1))
    assert result.decision is Decision.EXPAND_TO_6
    assert (result.next_level_offset, result.subjects_needed) == (0, 3)


def test_1_of_6_escalates():
    result = decide(LevelCounts(6, 6, 1))
    assert result.decision is Decision.ESCALATE
    assert result.rule == "1 of 6 participants had a DLT: escalate to the next dose with 3 new participants."


@pytest.mark.parametrize("dlts", [2, 3])
def test_2_or_3_of_3_exceeds_the_mtd_and_expands_the_level_below_to_6(dlts):
    result = decide(LevelCounts(3, 3, dlts), below=LevelCounts(3, 3, 0))
    assert result.decision is Decision.MTD_EXCEEDED_DEESCALATE
    assert result.next_level_offset == -1
    assert result.expand_level_below is True
    assert result.subjects_needed == 3
    assert result.mtd_level_offset is None  # d-1 is the MTD only if <= 1/6 once expanded


@pytest.mark.parametrize("dlts", [2, 3, 6])
def test_2_or_more_of_6_exceeds_the_mtd(dlts):
    result = decide(LevelCounts(6, 6, dlts), below=LevelCounts(3, 3, 0))
    assert result.decision is Decision.MTD_EXCEEDED_DEESCALATE
    assert result.expand_level_below is True


@pytest.mark.parametrize("below_dlts", [0, 1])
def test_when_the_level_below_already_has_6_with_at_most_1_dlt_it_is_the_mtd(below_dlts):
    result = decide(LevelCounts(6, 6, 2), below=LevelCounts(6, 6, below_dlts))
    assert result.decision is Decision.MTD_EXCEEDED_DEESCALATE
    assert result.expand_level_below is False
    assert result.mtd_level_offset == -1
    assert result.subjects_needed == 0


@pytest.mark.parametrize("counts", [LevelCounts(3, 3, 2), LevelCounts(6, 6, 2), LevelCounts(3, 3, 3)])
def test_exceeding_tolerability_at_the_lowest_level_stops_with_no_tolerable_dose(counts):
    result = decide(counts, lowest=True)
    assert result.decision is Decision.STOP_NO_TOLERABLE_DOSE
    assert result.next_level_offset is None
    assert result.rule.endswith("at the lowest dose, more than it tolerates: stop the trial, no dose is tolerable.")


@pytest.mark.parametrize("counts", [LevelCounts(3, 3, 0), LevelCounts(6, 6, 1), LevelCounts(6, 6, 0)])
def test_0_of_3_or_at_most_1_of_6_at_the_highest_level_stops_at_the_maximum_dose(counts):
    result = decide(counts, highest=True)
    assert result.decision is Decision.STOP_MAX_DOSE_REACHED
    assert result.mtd_level_offset is None


def test_1_of_3_at_the_highest_level_still_expands():
    assert decide(LevelCounts(3, 3, 1), highest=True).decision is Decision.EXPAND_TO_6


def test_2_of_3_at_the_highest_level_de_escalates():
    assert decide(LevelCounts(3, 3, 2), highest=True).decision is Decision.MTD_EXCEEDED_DEESCALATE


def test_a_single_level_trial_is_both_lowest_and_highest():
    assert decide(LevelCounts(3, 3, 0), lowest=True, highest=True).decision is Decision.STOP_MAX_DOSE_REACHED
    assert decide(LevelCounts(3, 3, 2), lowest=True, highest=True).decision is Decision.STOP_NO_TOLERABLE_DOSE


@pytest.mark.parametrize(
    "counts",
    [
        LevelCounts(treated=3, evaluable=2, dlts=0),  # one subject still in the DLT window
        LevelCounts(treated=3, evaluable=2, dlts=1),
        LevelCounts(treated=6, evaluable=3, dlts=1),  # expansion under way
        LevelCounts(treated=6, evaluable=5, dlts=1),
    ],
)
def test_the_decision_waits_until_every_subject_is_evaluable(counts):
    result = decide(counts)
    assert result.decision is Decision.WAIT
    assert result.next_level_offset == 0
    assert "DLT window" in result.rule


def test_two_dlts_settle_the_level_without_waiting_for_pending_subjects():
    result = decide(LevelCounts(treated=3, evaluable=2, dlts=2))
    assert result.decision is Decision.MTD_EXCEEDED_DEESCALATE


@pytest.mark.parametrize(
    ("counts", "needed"),
    [
        (LevelCounts(treated=3, evaluable=2, dlts=0, not_evaluable=1), 1),
        (LevelCounts(treated=4, evaluable=2, dlts=1, not_evaluable=2), 1),
        (LevelCounts(treated=6, evaluable=5, dlts=1, not_evaluable=1), 1),
    ],
)
def test_subjects_not_evaluable_for_non_dlt_reasons_are_replaced(counts, needed):
    result = decide(counts)
    assert result.decision is Decision.WAIT
    assert result.subjects_needed == needed
    assert "replacing" in result.rule


@pytest.mark.parametrize(
    ("counts", "decision"), [(LevelCounts(3, 3, 0), Decision.EXPAND_TO_6), (LevelCounts(3, 3, 1), Decision.EXPAND_TO_6)]
)
def test_after_a_de_escalation_the_level_is_filled_to_6(counts, decision):
    result = decide(counts, above_exceeds=True)
    assert result.decision is decision
    assert result.subjects_needed == 3


@pytest.mark.parametrize("dlts", [0, 1])
def test_after_a_de_escalation_at_most_1_of_6_identifies_the_mtd(dlts):
    result = decide(LevelCounts(6, 6, dlts), above_exceeds=True)
    assert result.decision is Decision.MTD_IDENTIFIED
    assert result.mtd_level_offset == 0
    assert result.next_level_offset is None


def test_after_a_de_escalation_2_of_6_de_escalates_again():
    result = decide(LevelCounts(6, 6, 2), below=LevelCounts(3, 3, 0), above_exceeds=True)
    assert result.decision is Decision.MTD_EXCEEDED_DEESCALATE


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"current": LevelCounts(3, 2, 3)}, "current.dlts"),
        ({"current": LevelCounts(3, 3, 0, not_evaluable=1)}, "current.treated"),
        ({"current": LevelCounts(7, 7, 0)}, "current.evaluable"),
        ({"current": LevelCounts(-1, 0, 0)}, "current.treated"),
        ({"current": FULL_3, "below": None, "is_lowest": False}, "below"),
        ({"current": FULL_3, "below": FULL_3, "is_lowest": True}, "below"),
        ({"current": FULL_3, "below": LevelCounts(6, 6, 2)}, "below"),
        ({"current": FULL_3, "is_highest": True, "above_exceeds_mtd": True}, "above_exceeds_mtd"),
    ],
)
def test_inconsistent_counts_are_refused(kwargs, field):
    arguments = {"below": FULL_3, "is_lowest": False, "is_highest": False, **kwargs}
    current = arguments.pop("current")
    with pytest.raises(InputError) as error:
        three_plus_three(current, **arguments)
    assert error.value.field == field


def _run_trial(outcomes: dict[int, list[int]]):
    """Drive three_plus_three through a trial whose subjects' DLT outcomes at each level are given in
    dosing order, the way the SRC would: dose what the decision asks for, then decide again."""
    treated = dict.fromkeys(outcomes, 0)
    exceeded: set[int] = set()
    top = max(outcomes)
    level, history = 1, []
    while True:
        counts = {d: LevelCounts(treated[d], treated[d], sum(outcomes[d][: treated[d]])) for d in outcomes}
        result = three_plus_three(
            counts[level],
            below=counts[level - 1] if level > 1 else None,
            is_lowest=level == 1,
            is_highest=level == top,
            above_exceeds_mtd=level + 1 in exceeded,
        )
        history.append((level, result.decision))
        if result.next_level_offset is None or result.mtd_level_offset is not None:
            mtd = None if result.mtd_level_offset is None else level + result.mtd_level_offset
            return history, mtd
        if result.decision is Decision.MTD_EXCEEDED_DEESCALATE:
            exceeded.add(level)
        level += result.next_level_offset
        treated[level] += result.subjects_needed


def test_a_whole_trial_stops_with_the_mtd_at_a_level_that_already_had_6():
    history, mtd = _run_trial({1: [0, 0, 0], 2: [0, 1, 0, 0, 0, 0], 3: [1, 0, 1], 4: []})
    assert history == [
        (1, Decision.WAIT),  # nobody dosed yet: dose 3
        (1, Decision.ESCALATE),
        (2, Decision.EXPAND_TO_6),
        (2, Decision.ESCALATE),
        (3, Decision.MTD_EXCEEDED_DEESCALATE),
    ]
    assert mtd == 2


def test_a_whole_trial_fills_the_level_below_to_6_before_naming_it_the_mtd():
    history, mtd = _run_trial({1: [0, 0, 0], 2: [0, 0, 0, 1, 0, 0], 3: [1, 1, 0], 4: []})
    assert history == [
        (1, Decision.WAIT),
        (1, Decision.ESCALATE),
        (2, Decision.ESCALATE),
        (3, Decision.MTD_EXCEEDED_DEESCALATE),  # 2/3 at level 3; level 2 had only 3
        (2, Decision.MTD_IDENTIFIED),  # 1/6 at level 2
    ]
    assert mtd == 2


def test_a_whole_trial_can_end_with_no_tolerable_dose_after_de_escalating():
    history, mtd = _run_trial({1: [0, 0, 0, 1, 1, 0], 2: [1, 1, 0], 3: []})
    assert history[-2:] == [(2, Decision.MTD_EXCEEDED_DEESCALATE), (1, Decision.STOP_NO_TOLERABLE_DOSE)]
    assert mtd is None


def test_a_whole_trial_without_toxicity_stops_at_the_maximum_planned_dose():
    history, mtd = _run_trial({1: [0, 0, 0], 2: [0, 0, 0], 3: [0, 0, 0]})
    assert history[-1] == (3, Decision.STOP_MAX_DOSE_REACHED)
    assert mtd is None


@PROPERTY
@given(
    evaluable=st.integers(min_value=0, max_value=6),
    dlt_fraction=st.integers(min_value=0, max_value=6),
    pending=st.integers(min_value=0, max_value=3),
    lowest=st.booleans(),
    highest=st.booleans(),
)
def test_3_plus_3_never_escalates_past_a_toxic_level(evaluable, dlt_fraction, pending, lowest, highest):
    dlts = min(dlt_fraction, evaluable)
    result = decide(LevelCounts(evaluable + pending, evaluable, dlts), lowest=lowest, highest=highest)
    if result.decision in (Decision.ESCALATE, Decision.STOP_MAX_DOSE_REACHED):
        assert pending == 0
        assert (evaluable, dlts) in {(3, 0), (6, 0), (6, 1)}
    if dlts >= 2:
        assert result.decision in (Decision.MTD_EXCEEDED_DEESCALATE, Decision.STOP_NO_TOLERABLE_DOSE)


# ---------------------------------------------------------------------------------------------
# Bayesian beta-binomial stopping rule
# ---------------------------------------------------------------------------------------------

EXAMPLE = BetaBinomialRule.from_rules()

# docs/domain.md §3.8 worked example: n evaluable -> stop if DLTs >= this.
DOMAIN_BOUNDARIES = {2: 2, 3: 2, 4: 3, 5: 3, 6: 3, 7: 4, 8: 4, 9: 4, 10: 5, 11: 5, 12: 5, 13: 5}
DOMAIN_BOUNDARIES |= {14: 6, 15: 6, 16: 6, 17: 6, 18: 7, 19: 7, 20: 7, 21: 7, 22: 8, 23: 8, 24: 8}


def test_the_example_rule_comes_from_versioned_rule_data():
    assert (EXAMPLE.prior_a, EXAMPLE.prior_b, EXAMPLE.theta0, EXAMPLE.cutoff, EXAMPLE.max_n) == (0.4, 1.6, 0.2, 0.9, 24)
    assert EXAMPLE.version == get_rules("bayes_stopping")["version"]


def test_the_boundary_table_reproduces_domain_3_8_exactly():
    table = boundary_table(EXAMPLE)
    # n = 1 is not in the DOMAIN table: with Beta(0.4, 1.6), one DLT in one subject gives the
    # posterior Beta(1.4, 1.6) and P(theta > 0.20) = 0.824, below c = 0.90, so nothing stops at
    # n = 1 (the table starts at n = 2, where 2/2 gives 0.957).
    assert table[1] is None
    assert posterior_prob_exceeds(EXAMPLE, 1, 1) == pytest.approx(0.8243, abs=1e-4)
    assert {n: x for n, x in table.items() if n >= 2} == DOMAIN_BOUNDARIES


def test_every_boundary_is_the_smallest_stopping_count():
    for n, boundary in boundary_table(EXAMPLE).items():
        if boundary is None:
            assert not stop_triggered(EXAMPLE, n, n)
            continue
        assert stop_triggered(EXAMPLE, boundary, n)
        assert boundary == 0 or not stop_triggered(EXAMPLE, boundary - 1, n)


@pytest.mark.parametrize(
    ("rate", "p_stop"),
    [(0.05, 0.01), (0.10, 0.04), (0.20, 0.25), (0.30, 0.62), (0.40, 0.89), (0.50, 0.98)],
)
def test_the_operating_characteristics_reproduce_domain_3_8_to_2_decimals(rate, p_stop):
    assert round(operating_characteristics(EXAMPLE, rate).p_stop, 2) == p_stop


def test_the_oc_table_lists_p_stop_by_true_rate():
    table = operating_characteristics_table(EXAMPLE, [0.05, 0.5])
    assert list(table) == [0.05, 0.5]
    assert table[0.05] < table[0.5]


def test_the_uniform_prior_with_c_0_80_stops_after_a_single_dlt():
    uniform = BetaBinomialRule(prior_a=1, prior_b=1, theta0=0.20, cutoff=0.80, max_n=24)
    # Before any data P(theta > 0.2) = 0.8 exactly: equal to c, so (strict inequality) no stop.
    assert posterior_prob_exceeds(uniform, 0, 0) == pytest.approx(0.80)
    assert not stop_triggered(uniform, 0, 0)
    assert posterior_prob_exceeds(uniform, 1, 1) == pytest.approx(0.96)  # Beta(2, 1)
    assert boundary_table(uniform)[1] == 1
    assert monitoring_status(uniform, 1, 1).stop


def _brute_force_p_stop(rule: BetaBinomialRule, rate: float) -> float:
    """Enumerate every DLT sequence of length max_n and sum the probability of those that cross a
    boundary at some look: an independent check of the dynamic programme."""
    boundaries = boundary_table(rule)
    total = 0.0
    for sequence in itertools.product((0, 1), repeat=rule.max_n):
        x = 0
        for n, event in enumerate(sequence, start=1):
            x += event
            if boundaries.get(n) is not None and x >= boundaries[n]:
                events = sum(sequence)
                total += rate**events * (1 - rate) ** (rule.max_n - events)
                break
    return total


@pytest.mark.parametrize("looks", [None, (3, 6, 9, 12)])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_the_dynamic_programme_matches_full_enumeration(looks, rate):
    small = BetaBinomialRule(prior_a=0.4, prior_b=1.6, theta0=0.2, cutoff=0.9, max_n=12, looks=looks)
    assert operating_characteristics(small, rate).p_stop == pytest.approx(_brute_force_p_stop(small, rate), abs=1e-12)


def test_operating_characteristics_at_the_extremes():
    never = operating_characteristics(EXAMPLE, 0.0)
    assert never.p_stop == 0.0
    assert never.expected_n == 24
    always = operating_characteristics(EXAMPLE, 1.0)
    assert always.p_stop == pytest.approx(1.0)
    assert always.expected_n == pytest.approx(2.0)  # stops at 2/2
    assert always.p_stop_by_look[1] == 0.0


def test_cohort_looks_check_only_at_the_listed_sizes():
    cohorts = BetaBinomialRule(prior_a=0.4, prior_b=1.6, theta0=0.2, cutoff=0.9, max_n=24, looks=(3, 6, 9))
    assert boundary_table(cohorts) == {3: 2, 6: 3, 9: 4}
    status = monitoring_status(cohorts, 3, 4)
    assert (status.is_look, status.stop, status.boundary) == (False, False, None)
    assert operating_characteristics(cohorts, 0.3).p_stop < operating_characteristics(EXAMPLE, 0.3).p_stop


def test_live_status_reports_the_posterior_and_the_distance_to_the_boundary():
    below = monitoring_status(EXAMPLE, 2, 5)
    assert (below.stop, below.boundary, below.events_to_boundary) == (False, 3, 1)
    assert below.posterior_prob == pytest.approx(0.7781, abs=1e-4)
    crossed = monitoring_status(EXAMPLE, 3, 5)
    assert (crossed.stop, crossed.events_to_boundary) == (True, 0)
    assert crossed.rule_version == EXAMPLE.version


@pytest.mark.parametrize(("x", "n", "field"), [(3, 2, "x"), (-1, 2, "x"), (1, -1, "n"), (1, True, "n")])
def test_impossible_counts_are_refused(x, n, field):
    with pytest.raises(InputError) as error:
        monitoring_status(EXAMPLE, x, n)
    assert error.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prior_a": 0}, "prior"),
        ({"theta0": 1.0}, "theta0"),
        ({"cutoff": 0}, "cutoff"),
        ({"max_n": 0}, "max_n"),
        ({"looks": (6, 3)}, "looks"),
        ({"looks": (30,)}, "looks"),
    ],
)
def test_an_invalid_rule_is_refused(kwargs, field):
    settings_ = {"prior_a": 0.4, "prior_b": 1.6, "theta0": 0.2, "cutoff": 0.9, "max_n": 24, **kwargs}
    with pytest.raises(InputError) as error:
        BetaBinomialRule(**settings_)
    assert error.value.field == field


random_rules = st.builds(
    BetaBinomialRule,
    prior_a=st.floats(min_value=0.1, max_value=5),
    prior_b=st.floats(min_value=0.1, max_value=10),
    theta0=st.floats(min_value=0.05, max_value=0.6),
    cutoff=st.floats(min_value=0.5, max_value=0.99),
    max_n=st.integers(min_value=1, max_value=30),
)


@PROPERTY
@given(rule=random_rules)
def test_the_boundary_never_decreases_and_rises_by_at_most_one_per_subject(rule):
    # One more subject without a DLT can only lower P(theta > theta0); one more with a DLT can only
    # raise it. So b(n) <= b(n+1) <= b(n) + 1 once a boundary exists.
    table = boundary_table(rule)
    reachable = [table[n] for n in sorted(table) if table[n] is not None]
    assert reachable == sorted(reachable)
    for n in range(1, rule.max_n):
        if table[n] is not None:
            assert table[n + 1] is not None
            assert table[n] <= table[n + 1] <= table[n] + 1


@PROPERTY
@given(rule=random_rules, low=st.floats(min_value=0, max_value=1), high=st.floats(min_value=0, max_value=1))
def test_p_stop_increases_with_the_true_rate(rule, low, high):
    low, high = sorted((low, high))
    assert operating_characteristics(rule, low).p_stop <= operating_characteristics(rule, high).p_stop + 1e-12


@pytest.mark.parametrize("highest", [False, True])
@pytest.mark.parametrize("above_exceeds", [False, True])
def test_every_decision_reads_as_a_plain_sentence(highest, above_exceeds):
    """Users read the rule text: no document sections, no "d+1" algebra, no enum spellings."""
    if highest and above_exceeds:
        return  # the highest level has no level above
    grid = [
        LevelCounts(treated, evaluable, dlts, not_evaluable)
        for treated in range(7)
        for evaluable in range(treated + 1)
        for dlts in range(evaluable + 1)
        for not_evaluable in range(treated - evaluable + 1)
    ]
    for counts in grid:
        for lowest in (False, True):
            result = decide(
                counts, below=LevelCounts(3, 3, 0), lowest=lowest, highest=highest, above_exceeds=above_exceeds
            )
            for fragment in ("§", "rule ", "d+1", "d-1", " d ", "_", "Mtd"):
                assert fragment not in result.rule, (counts, result.rule)
            assert result.rule[0].isupper() or result.rule[0].isdigit()
            assert result.decision.label[0].isupper()
