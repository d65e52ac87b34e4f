"""Dose-escalation decisions and Bayesian toxicity stopping rules (docs/domain.md §3.7-3.8).

Pure functions: the caller counts DLT-evaluable subjects and DLTs (after SRC adjudication) and
records the returned decision, rule text and rule version. The rule texts are plain sentences for
the people who decide; the rule numbers they apply are cited in the comments beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from scipy.stats import beta as beta_distribution

from safety.rules_data import InputError, get_rules

# ---------------------------------------------------------------------------------------------
# 3+3 (docs/domain.md §3.7)
# ---------------------------------------------------------------------------------------------


class Decision(StrEnum):
    ESCALATE = "escalate"
    EXPAND_TO_6 = "expand_to_6"
    MTD_EXCEEDED_DEESCALATE = "mtd_exceeded_deescalate"
    MTD_IDENTIFIED = "mtd_identified"
    STOP_NO_TOLERABLE_DOSE = "stop_no_tolerable_dose"
    STOP_MAX_DOSE_REACHED = "stop_max_dose_reached"
    WAIT = "wait"

    @property
    def label(self) -> str:
        return _DECISION_LABELS[self]


_DECISION_LABELS = {
    Decision.ESCALATE: "Escalate",
    Decision.EXPAND_TO_6: "Treat 6 at this dose",
    Decision.MTD_EXCEEDED_DEESCALATE: "Above the MTD: de-escalate",
    Decision.MTD_IDENTIFIED: "MTD found",
    Decision.STOP_NO_TOLERABLE_DOSE: "Stop: no tolerable dose",
    Decision.STOP_MAX_DOSE_REACHED: "Stop: highest planned dose reached",
    Decision.WAIT: "Wait",
}


@dataclass(frozen=True)
class LevelCounts:
    """DLT counts at one dose level.

    ``treated``: subjects dosed at the level. ``evaluable``: subjects whose DLT assessment is final
    (completed the DLT window, or had a DLT). ``not_evaluable``: subjects who left the window early
    for non-DLT reasons; they are replaced. Subjects still inside the window are the remainder.
    """

    treated: int
    evaluable: int
    dlts: int
    not_evaluable: int = 0

    @property
    def pending(self) -> int:
        return self.treated - self.evaluable - self.not_evaluable

    def validate(self, field: str, max_evaluable: int) -> None:
        for name in ("treated", "evaluable", "dlts", "not_evaluable"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{field}.{name}", f"Expected a whole number >= 0, got {value!r}.")
        if self.dlts > self.evaluable:
            raise InputError(
                f"{field}.dlts", "A subject with a DLT is evaluable, so DLTs cannot exceed evaluable subjects."
            )
        if self.pending < 0:
            raise InputError(
                f"{field}.treated", "Evaluable plus non-evaluable subjects cannot exceed the subjects treated."
            )
        if self.evaluable > max_evaluable:
            raise InputError(
                f"{field}.evaluable",
                f"{self.evaluable} evaluable participants: a 3+3 dose level holds at most {max_evaluable}.",
            )


@dataclass(frozen=True)
class EscalationDecision:
    decision: Decision
    rule: str
    next_level_offset: int | None  # +1 escalate, 0 stay, -1 de-escalate, None stop
    expand_level_below: bool  # MTD exceeded and d-1 has fewer than 6 evaluable: treat 6 there
    mtd_level_offset: int | None  # 0 = this level, -1 = the level below, None = not (yet) known
    subjects_needed: int  # more subjects to dose at ``next_level_offset`` (replacements included)
    rule_version: str


def three_plus_three(
    current: LevelCounts,
    *,
    below: LevelCounts | None,
    is_lowest: bool,
    is_highest: bool,
    above_exceeds_mtd: bool = False,
    rules: Mapping[str, Any] | None = None,
) -> EscalationDecision:
    """3+3 decision at dose level d (docs/domain.md §3.7). Expansion and placebo cohorts are not dose
    levels: the caller leaves them out of the sequence.

    ``below`` is the level d-1 (None only at the lowest level). ``above_exceeds_mtd`` says that d+1
    already exceeded the MTD, i.e. this level is being filled to 6 after a de-escalation.

    Conventions beyond docs/domain.md §3.7:
    - Two or more DLTs settle the outcome whatever the pending subjects do, so "MTD exceeded" is
      returned at once rather than WAIT (no further subject should be dosed at a toxic level).
    - Otherwise the decision waits until every treated subject is evaluable; evaluable counts short
      of 3 (or of 6 during expansion) with nobody pending mean non-evaluable subjects must be
      replaced: WAIT with ``subjects_needed`` > 0.
    - After a de-escalation (``above_exceeds_mtd``) a level with <= 1 DLT is filled to 6 and then
      declared the MTD (MTD_IDENTIFIED), never re-escalated.
    """
    rules = rules or get_rules("three_plus_three")
    size, full = rules["cohort_size"], rules["expanded_size"]
    version = rules["version"]
    current.validate("current", full)
    if is_lowest and below is not None:
        raise InputError("below", "The lowest dose level has no level below it.")
    if not is_lowest and below is None:
        raise InputError("below", "Give the counts at dose level d-1.")
    if below is not None:
        below.validate("below", full)
        if below.dlts > rules["tolerable_max_dlts_of_6"]:
            raise InputError("below", "Dose level d-1 already exceeds the MTD; evaluate d-1 instead.")
    if is_highest and above_exceeds_mtd:
        raise InputError("above_exceeds_mtd", "The highest dose level has no level above it.")

    def decide(
        decision: Decision,
        rule: str,
        offset: int | None,
        *,
        expand_below: bool = False,
        mtd: int | None = None,
        needed: int = 0,
    ) -> EscalationDecision:
        return EscalationDecision(decision, rule, offset, expand_below, mtd, needed, version)

    dlts, evaluable = current.dlts, current.evaluable
    tolerable_of_6 = rules["tolerable_max_dlts_of_6"]

    # docs/domain.md §3.7 rules 2b, 3 and 4: >= 2 DLTs (of 3 or of 6) means d exceeds the MTD.
    if dlts > tolerable_of_6:
        had = f"{dlts} of {evaluable} evaluable participants had a DLT"
        if is_lowest:
            return decide(
                Decision.STOP_NO_TOLERABLE_DOSE,
                f"{had} at the lowest dose, more than it tolerates: stop the trial, no dose is tolerable.",
                None,
            )
        assert below is not None
        below_full = below.evaluable >= full
        if below_full:
            return decide(
                Decision.MTD_EXCEEDED_DEESCALATE,
                f"{had}: this dose is above the maximum tolerated dose (MTD). The dose below had "
                f"{below.dlts} DLT(s) in {below.evaluable} participants and is the MTD.",
                -1,
                mtd=-1,
            )
        needed = full - below.evaluable - below.pending
        return decide(
            Decision.MTD_EXCEEDED_DEESCALATE,
            f"{had}: this dose is above the maximum tolerated dose (MTD). Go back to the dose below and "
            f"treat {full} participants there (it has {below.evaluable} evaluable); it is the MTD only if "
            f"at most {tolerable_of_6} of the {full} have a DLT.",
            -1,
            expand_below=True,
            needed=max(needed, 0),
        )

    if current.pending > 0:
        return decide(
            Decision.WAIT,
            f"Decide when every participant at this dose has finished the DLT window ({current.pending} still in it).",
            0,
        )

    if evaluable < size or size < evaluable < full:
        # docs/domain.md §3.6: participants not evaluable for reasons other than a DLT are replaced.
        target = size if evaluable < size else full
        replacing = (
            f", replacing {current.not_evaluable} not evaluable for reasons other than a DLT"
            if current.not_evaluable
            else ""
        )
        return decide(
            Decision.WAIT,
            f"{evaluable} evaluable of the {target} needed: treat {target - evaluable} more participant(s) "
            f"at this dose{replacing}.",
            0,
            needed=target - evaluable,
        )

    if evaluable == size:
        if dlts == rules["expand_dlts_of_3"]:  # rule 2
            return decide(
                Decision.EXPAND_TO_6,
                f"{dlts} of {size} participants had a DLT: treat {full - size} more at this dose ({full} in all).",
                0,
                needed=full - size,
            )
        # dlts == 0
        if above_exceeds_mtd:  # rules 2b/3: fill the level below a toxic one to 6
            return decide(
                Decision.EXPAND_TO_6,
                f"The dose above is beyond the MTD and {dlts} of {size} participants had a DLT here: treat "
                f"{full} at this dose; it is the MTD only if at most {tolerable_of_6} of the {full} have a DLT.",
                0,
                needed=full - size,
            )
        if is_highest:  # rule 4
            return decide(
                Decision.STOP_MAX_DOSE_REACHED,
                f"{dlts} of {size} participants had a DLT at the highest planned dose: stop escalating there "
                "(no MTD reached).",
                None,
            )
        return decide(  # rule 1
            Decision.ESCALATE,
            f"{dlts} of {size} participants had a DLT: escalate to the next dose with {size} new participants.",
            1,
            needed=size,
        )

    # evaluable == 6 with <= 1 DLT
    if above_exceeds_mtd:  # rule 5
        return decide(
            Decision.MTD_IDENTIFIED,
            f"{dlts} of {full} participants had a DLT here and the dose above is beyond the MTD: this dose is the MTD.",
            None,
            mtd=0,
        )
    if is_highest:  # rule 4
        return decide(
            Decision.STOP_MAX_DOSE_REACHED,
            f"{dlts} of {full} participants had a DLT at the highest planned dose: stop escalating there "
            "(no MTD reached).",
            None,
        )
    return decide(  # rule 2a
        Decision.ESCALATE,
        f"{dlts} of {full} participants had a DLT: escalate to the next dose with {size} new participants.",
        1,
        needed=size,
    )


# ---------------------------------------------------------------------------------------------
# Bayesian beta-binomial continuous monitoring (docs/domain.md §3.8)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BetaBinomialRule:
    """Stop (refer to the DSMB) when P(theta > theta0 | x events of n) > cutoff, with a Beta(a, b)
    prior, at each look n (every evaluable subject 1..max_n when ``looks`` is None).

    ``max_n`` is the design's maximum: the boundary table and the operating characteristics are
    computed up to it. A study that goes on to more evaluable subjects (an expansion cohort) is
    still monitored: past ``max_n`` the same posterior rule is evaluated at every n.
    """

    prior_a: float
    prior_b: float
    theta0: float
    cutoff: float
    max_n: int
    looks: tuple[int, ...] | None = None
    version: str = "ad-hoc"

    def __post_init__(self) -> None:
        if not (self.prior_a > 0 and self.prior_b > 0):
            raise InputError("prior", "The Beta prior parameters must both be > 0.")
        if not 0 < self.theta0 < 1:
            raise InputError("theta0", "theta0 must lie strictly between 0 and 1.")
        if not 0 < self.cutoff < 1:
            raise InputError("cutoff", "The probability cut-off must lie strictly between 0 and 1.")
        if isinstance(self.max_n, bool) or not isinstance(self.max_n, int) or self.max_n < 1:
            raise InputError("max_n", "The maximum sample size must be a whole number >= 1.")
        if self.looks is not None and (
            not self.looks
            or any(n < 1 or n > self.max_n for n in self.looks)
            or list(self.looks) != sorted(set(self.looks))
        ):
            raise InputError("looks", f"Looks must be increasing sample sizes within 1..{self.max_n}.")

    @classmethod
    def from_rules(cls, rules: Mapping[str, Any] | None = None) -> BetaBinomialRule:
        rules = rules or get_rules("bayes_stopping")
        looks = tuple(rules["looks"]) if rules["looks"] is not None else None
        return cls(
            prior_a=rules["prior_a"],
            prior_b=rules["prior_b"],
            theta0=rules["theta0"],
            cutoff=rules["cutoff"],
            max_n=rules["max_n"],
            looks=looks,
            version=rules["version"],
        )

    @property
    def look_points(self) -> tuple[int, ...]:
        return self.looks if self.looks is not None else tuple(range(1, self.max_n + 1))


def _check_counts(rule: BetaBinomialRule, x: int, n: int) -> None:
    for name, value in (("n", n), ("x", x)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(name, f"Expected a whole number >= 0, got {value!r}.")
    if x > n:
        raise InputError("x", "Events cannot exceed evaluable subjects.")


def posterior_prob_exceeds(rule: BetaBinomialRule, x: int, n: int) -> float:
    """P(theta > theta0 | x of n) under the posterior Beta(a + x, b + n - x)."""
    _check_counts(rule, x, n)
    return float(beta_distribution.sf(rule.theta0, rule.prior_a + x, rule.prior_b + n - x))


def stop_triggered(rule: BetaBinomialRule, x: int, n: int) -> bool:
    """Strict inequality: a posterior probability equal to the cut-off does not stop."""
    return posterior_prob_exceeds(rule, x, n) > rule.cutoff


def boundary_at(rule: BetaBinomialRule, n: int) -> int | None:
    """The smallest number of events x <= n that triggers a stop at n (None: no x <= n does), for
    any n, within or past the design's maximum.

    The posterior probability increases with x at fixed n (Beta(a+x, b+n-x) is stochastically
    increasing in x), so every x at or above the boundary stops as well, and bisection finds it.
    """
    _check_counts(rule, 0, n)
    if not stop_triggered(rule, n, n):
        return None
    low, high = 0, n
    while low < high:
        middle = (low + high) // 2
        if stop_triggered(rule, middle, n):
            high = middle
        else:
            low = middle + 1
    return low


def boundary_table(rule: BetaBinomialRule, *, up_to: int | None = None) -> dict[int, int | None]:
    """For each look n, the smallest number of events x that triggers a stop (None: no x <= n does);
    with ``up_to`` past the design's maximum, also every n from ``max_n + 1`` to ``up_to``."""
    table = {n: boundary_at(rule, n) for n in rule.look_points}
    previous = boundary_at(rule, rule.max_n)
    for n in range(rule.max_n + 1, (up_to or 0) + 1):
        # One more subject moves the boundary up by 0 or 1 (a subject without a DLT can only lower
        # the posterior, one with a DLT only raise it), so at most two evaluations per n.
        if previous is None:
            previous = boundary_at(rule, n)
        elif not stop_triggered(rule, previous, n):
            previous += 1
        table[n] = previous
    return table


@dataclass(frozen=True)
class OperatingCharacteristics:
    true_rate: float
    p_stop: float
    expected_n: float  # expected number of subjects enrolled (stopping early or reaching max_n)
    p_stop_by_look: Mapping[int, float]  # cumulative P(stopped at or before look n)


def operating_characteristics(rule: BetaBinomialRule, true_rate: float) -> OperatingCharacteristics:
    """Exact P(the rule stops the trial) at a true event rate, by dynamic programming over the
    (n, x) states of the sequential monitoring: the probability mass of each still-running state is
    carried forward one subject at a time, and the mass in stopping states is absorbed at each look.
    """
    if not 0 <= true_rate <= 1:
        raise InputError("true_rate", "The true rate must lie in [0, 1].")
    boundaries = boundary_table(rule)
    running = [1.0]  # running[x] = P(no stop yet and x events so far), at the current n
    stopped = 0.0
    expected_n = 0.0
    by_look: dict[int, float] = {}
    for n in range(1, rule.max_n + 1):
        advanced = [0.0] * (n + 1)
        for x, mass in enumerate(running):
            advanced[x] += mass * (1 - true_rate)
            advanced[x + 1] += mass * true_rate
        running = advanced
        boundary = boundaries.get(n)
        if boundary is not None:
            absorbed = sum(running[boundary:])
            stopped += absorbed
            expected_n += n * absorbed
            running = running[:boundary] + [0.0] * (n + 1 - boundary)
        if n in boundaries:
            by_look[n] = stopped
    expected_n += rule.max_n * sum(running)
    return OperatingCharacteristics(true_rate, stopped, expected_n, by_look)


def operating_characteristics_table(rule: BetaBinomialRule, true_rates: Sequence[float]) -> dict[float, float]:
    """P(stop) by true rate: always show this next to the boundary table (docs/domain.md §3.8)."""
    return {rate: operating_characteristics(rule, rate).p_stop for rate in true_rates}


@dataclass(frozen=True)
class MonitoringStatus:
    n: int
    x: int
    posterior_prob: float
    cutoff: float
    boundary: int | None  # events that trigger a stop at this n (None: no look at n, or none can)
    stop: bool
    events_to_boundary: int | None  # further events at this n that would reach the boundary
    is_look: bool
    rule_version: str
    past_design_max: bool = False  # n > max_n: the boundary is extended by the same rule
    design_max: int | None = None

    @property
    def extension_note(self) -> str:
        if not self.past_design_max:
            return ""
        return (
            f"n = {self.n} is past the designed maximum of {self.design_max}; "
            "the boundary is extended by the same rule."
        )


def monitoring_status(rule: BetaBinomialRule, x: int, n: int) -> MonitoringStatus:
    """Live status for a cohort (or the pooled population) with x events in n evaluable subjects.

    Always gives the posterior probability. Within the design the rule is checked at its looks;
    past ``max_n`` (more evaluable subjects than the design planned) it is checked at every n, with
    the boundary computed by the same posterior rule, and ``past_design_max`` says so.
    """
    _check_counts(rule, x, n)
    probability = posterior_prob_exceeds(rule, x, n)
    past = n > rule.max_n
    is_look = past or n in rule.look_points
    boundary = boundary_at(rule, n) if is_look else None
    stop = is_look and probability > rule.cutoff
    to_boundary = max(boundary - x, 0) if boundary is not None else None
    return MonitoringStatus(
        n, x, probability, rule.cutoff, boundary, stop, to_boundary, is_look, rule.version, past, rule.max_n
    )
