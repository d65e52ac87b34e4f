"""Survival analyses for remission durability: the one module that talks to lifelines (0.30.3).

Every function takes a pandas DataFrame shaped like our extraction (:func:`analysis_frame`: columns
``duration``/``event`` for Kaplan–Meier, log-rank and Cox, ``cr_duration``/``event_code`` for
Aalen–Johansen, ``lower``/``upper`` for the interval-censored NPMLE, ``group`` for comparisons) and
returns a plain JSON-serialisable dict (a ``TypedDict``) that records the method choices and the
library versions. Non-finite numbers are returned as ``None``.

Where lifelines' defaults differ from R ``survival`` or are incomplete, this module closes the gap
itself (docs/domain.md Part B §0-§1, §6):

* Kaplan–Meier CIs: both R's default ``conf.type="log"`` (S·exp(±z·√Σd/(n(n−d))), capped at 1) and
  lifelines' "log-log" (exponential Greenwood); medians and their CIs use R's ``quantile.survfit``
  rule (first time the curve or band is ≤ 0.5, midpoint of a flat stretch at exactly 0.5). The primary
  transform is recorded in the output.
* RMST: lifelines gives no standard error (its ``return_variance`` is Var[min(T, τ)]) and its
  difference test is a stub; we compute SE = √Σ A_j² d_j/(n_j(n_j − d_j)) as R ``print.survfit(rmean=)``
  and survRM2 do, and the two-group difference and ratio.
* Cox ties: lifelines implements Efron only. ``ties="breslow"`` uses a small Newton–Raphson on the
  Breslow partial likelihood here (to reproduce textbook/SAS/scikit-survival numbers).
* Aalen–Johansen: lifelines jitters tied event times at random (and reseeds NumPy's global generator).
  We break ties ourselves with a seeded, downward-only jitter smaller than any gap between distinct
  times, so events stay before censorings at the same time and the CIF equals the exact tied estimate.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

import lifelines
import numpy as np
import pandas as pd
import scipy
from lifelines import AalenJohansenFitter, CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test
from lifelines.utils import CensoringType, concordance_index
from scipy import stats

# 6, 12, 18 and 24 months in days (docs/domain.md Part B §2: 182.625/365.25/730.5, and §5 "Months 6, 12,
# 18 and 24").
DEFAULT_TIMES_DAYS: tuple[float, ...] = (182.625, 365.25, 547.875, 730.5)
DEFAULT_RMST_HORIZON_DAYS = 730.0
# R's quantile.survfit tolerance for "the curve is exactly at the quantile".
_QUANTILE_TOLERANCE = math.sqrt(np.finfo(float).eps)

CITransform = Literal["log", "log-log"]
CI_TRANSFORM_DESCRIPTIONS: dict[str, str] = {
    "log": "R survfit default conf.type='log': S*exp(+-z*sqrt(sum d/(n(n-d)))), upper capped at 1",
    "log-log": "lifelines default (exponential Greenwood): exp(-exp(log(-log S) -+ z*sqrt(sum d/(n(n-d)))/log S))",
}


# ---------------------------------------------------------------------------------------------
# Result shapes
# ---------------------------------------------------------------------------------------------


class LibraryVersions(TypedDict):
    lifelines: str
    pandas: str
    numpy: str
    scipy: str
    python: str


class Interval(TypedDict):
    lower: float | None
    upper: float | None


class SurvivalAtTime(TypedDict):
    time: float
    survival: float | None
    std_err: float | None  # Greenwood SE of S(t), as R summary.survfit prints it
    n_risk: int
    cumulative_events: int
    ci_log: Interval
    ci_log_log: Interval
    beyond_last_observation: bool


class MedianSurvival(TypedDict):
    median: float | None
    ci_log: Interval
    ci_log_log: Interval


class KMTableRow(TypedDict):
    time: float
    n_risk: int
    n_event: int
    n_censored: int
    survival: float | None
    std_err: float | None
    ci_log: Interval
    ci_log_log: Interval


class KMGroup(TypedDict):
    group: str | None
    n: int
    events: int
    median: MedianSurvival
    survival_at: list[SurvivalAtTime]
    table: list[KMTableRow]


class KMResult(TypedDict):
    analysis: Literal["kaplan_meier"]
    alpha: float
    ci_transform_primary: CITransform
    ci_transforms: dict[str, str]
    median_rule: str
    groups: list[KMGroup]
    versions: LibraryVersions


class LogRankGroup(TypedDict):
    group: str
    n: int
    observed: int
    expected: float


class LogRankResult(TypedDict):
    analysis: Literal["log_rank"]
    weightings: str | None
    statistic: float
    df: int
    p_value: float
    groups: list[LogRankGroup]
    versions: LibraryVersions


class CoxCoefficient(TypedDict):
    covariate: str
    coef: float
    se: float
    hazard_ratio: float
    hazard_ratio_ci: Interval
    z: float
    p_value: float


class LikelihoodRatioTest(TypedDict):
    statistic: float
    df: int
    p_value: float


class PHTestRow(TypedDict):
    covariate: str
    statistic: float
    p_value: float


class PHCheck(TypedDict):
    method: str
    tests: list[PHTestRow]


class CoxResult(TypedDict):
    analysis: Literal["cox_ph"]
    ties: Literal["efron", "breslow"]
    engine: str
    alpha: float
    n: int
    events: int
    strata: list[str]
    coefficients: list[CoxCoefficient]
    log_likelihood: float
    log_likelihood_null: float
    likelihood_ratio_test: LikelihoodRatioTest
    concordance: float | None
    proportional_hazards: PHCheck | None
    notes: list[str]
    versions: LibraryVersions


class CIFAtTime(TypedDict):
    time: float
    cif: float
    std_err: float | None
    ci: Interval
    naive_one_minus_km: float


class CIFTableRow(TypedDict):
    time: float
    cif: float


class CIFResult(TypedDict):
    analysis: Literal["aalen_johansen"]
    event_of_interest: int
    competing_events: list[int]
    alpha: float
    n: int
    events_of_interest: int
    competing: int
    censored: int
    ties_broken: int
    tie_breaking: str
    seed: int
    ci_method: str
    at_times: list[CIFAtTime]
    table: list[CIFTableRow]
    notes: list[str]
    versions: LibraryVersions


class RMSTGroup(TypedDict):
    group: str | None
    n: int
    events: int
    rmst: float
    se: float
    ci: Interval
    horizon_beyond_last_observation: bool


class RMSTComparison(TypedDict):
    contrast: str
    difference: float
    difference_se: float
    difference_ci: Interval
    z: float
    p_value: float
    ratio: float | None
    ratio_ci: Interval


class RMSTResult(TypedDict):
    analysis: Literal["rmst"]
    horizon: float
    alpha: float
    se_method: str
    groups: list[RMSTGroup]
    comparison: RMSTComparison | None
    versions: LibraryVersions


class NPMLEAtTime(TypedDict):
    time: float
    survival_upper: float
    survival_lower: float


class TurnbullResult(TypedDict):
    analysis: Literal["turnbull_npmle"]
    n: int
    right_censored: int
    tolerance: float
    median: Interval
    survival_at: list[NPMLEAtTime]
    notes: list[str]
    versions: LibraryVersions


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def library_versions() -> LibraryVersions:
    """Versions recorded with every result, so a number can be traced to the code that made it."""
    return LibraryVersions(
        lifelines=lifelines.__version__,
        pandas=pd.__version__,
        numpy=np.__version__,
        scipy=scipy.__version__,
        python=platform.python_version(),
    )


def _num(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return float(stats.norm.ppf(1 - alpha / 2))


def _label(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _checked(df: pd.DataFrame, duration_col: str, event_col: str, group_col: str | None = None) -> pd.DataFrame:
    """Validated copy with columns ``duration`` (float), ``event`` (int) and ``group`` (str, if any).

    Missing values raise instead of being dropped: dropping rows silently would change N.
    """
    columns = [duration_col, event_col] + ([group_col] if group_col else [])
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise ValueError(f"missing column(s): {', '.join(absent)}")
    for column in columns:
        missing = int(df[column].isna().sum())
        if missing:
            raise ValueError(f"column {column!r} has {missing} missing value(s)")
    out = pd.DataFrame({"duration": df[duration_col].astype(float), "event": df[event_col].astype(int)})
    if not (df[event_col].astype(float).to_numpy() == out["event"].to_numpy()).all():
        raise ValueError(f"column {event_col!r} must hold whole-number event codes")
    if not np.isfinite(out["duration"]).all() or (out["duration"] < 0).any():
        raise ValueError(f"column {duration_col!r} must hold finite, non-negative durations")
    if group_col:
        out["group"] = [_label(v) for v in df[group_col]]
    sort_by = ["group", "duration", "event"] if group_col else ["duration", "event"]
    return out.sort_values(sort_by, kind="mergesort").reset_index(drop=True)


def _checked_events(out: pd.DataFrame, event_col: str) -> None:
    if not out["event"].isin([0, 1]).all():
        raise ValueError(f"column {event_col!r} must be 0/1 (use event_code columns for competing risks)")


def _groups(frame: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    if "group" not in frame.columns:
        return [(None, frame)]
    return [(str(name), part) for name, part in frame.groupby("group", sort=True)]


def analysis_frame(
    records: Iterable[Mapping[str, Any]], *, group: Mapping[int, str] | Sequence[str] | None = None
) -> pd.DataFrame:
    """The frame this module expects, from :meth:`analytics.derivations.TimeToEventRow.as_record` dicts.

    ``group`` gives one label per record (a sequence, or a mapping from record position).
    """
    rows = list(records)
    frame = pd.DataFrame(
        {
            "duration": [r["duration_days"] for r in rows],
            "event": [r["event"] for r in rows],
            "cr_duration": [r["cr_duration_days"] for r in rows],
            "event_code": [r["event_code"] for r in rows],
            "lower": [r["interval_lower_days"] for r in rows],
            "upper": [np.inf if r["interval_upper_days"] is None else r["interval_upper_days"] for r in rows],
        }
    )
    if group is not None:
        frame["group"] = [group[i] for i in range(len(rows))]
    return frame


# ---------------------------------------------------------------------------------------------
# Kaplan–Meier
# ---------------------------------------------------------------------------------------------


def _km_curve(durations: pd.Series, events: pd.Series, alpha: float) -> pd.DataFrame:
    """KM table with Greenwood sums and both CI bands, one row per distinct time (events and censorings)."""
    kmf = KaplanMeierFitter(alpha=alpha).fit(durations, event_observed=events)
    table = kmf.event_table
    n = table["at_risk"].to_numpy(dtype=float)
    d = table["observed"].to_numpy(dtype=float)
    surv = kmf.survival_function_.iloc[:, 0].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        # d/(n(n−d)); infinite when everyone still at risk has the event (S drops to 0 there).
        terms = np.where(d > 0, d / (n * (n - d)), 0.0)
        greenwood = np.cumsum(terms)
        root = np.sqrt(greenwood)
        z = _z(alpha)
        positive = surv > 0
        se = np.where(positive, surv * root, np.nan)
        log_lower = np.where(positive, surv * np.exp(-z * root), np.nan)
        log_upper = np.where(positive, np.minimum(1.0, surv * np.exp(z * root)), np.nan)
        log_s = np.log(surv)
        inner = np.log(-log_s)
        loglog_lower = np.exp(-np.exp(inner - z * root / log_s))
        loglog_upper = np.exp(-np.exp(inner + z * root / log_s))
    at_one = surv >= 1.0
    loglog_lower = np.where(at_one, 1.0, np.where(positive, loglog_lower, np.nan))
    loglog_upper = np.where(at_one, 1.0, np.where(positive, loglog_upper, np.nan))
    return pd.DataFrame(
        {
            "time": table.index.to_numpy(dtype=float),
            "n_risk": table["at_risk"].to_numpy(dtype=int),
            "n_event": table["observed"].to_numpy(dtype=int),
            "n_censored": table["censored"].to_numpy(dtype=int),
            "survival": surv,
            "greenwood": greenwood,
            "std_err": se,
            "log_lower": log_lower,
            "log_upper": log_upper,
            "loglog_lower": loglog_lower,
            "loglog_upper": loglog_upper,
        }
    )


def r_quantile(
    times: Sequence[float] | np.ndarray, survival: Sequence[float] | np.ndarray, p: float = 0.5
) -> float | None:
    """Time at which a step survival curve reaches quantile ``p`` of the distribution, as R
    ``quantile.survfit`` does: the first time 1 − S ≥ p; if 1 − S equals p (within √eps) on a flat
    stretch, the midpoint of that stretch (to the last time if the curve ends there). ``None`` if the
    curve never gets there. NaN points (an undefined band) are skipped. The curve starts at time 0."""
    x = np.concatenate(([0.0], np.asarray(times, dtype=float)))
    y = np.concatenate(([0.0], 1.0 - np.asarray(survival, dtype=float)))
    last_time = float(x[-1])
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if y.max() < p:
        return None
    _, first = np.unique(y, return_index=True)
    order = np.sort(first)
    x, y = x[order], y[order]
    reached = np.nonzero(y + _QUANTILE_TOLERANCE >= p)[0]
    if reached.size == 0:
        return None
    i = int(reached[0])
    if abs(y[i] - p) < _QUANTILE_TOLERANCE:
        beyond = np.nonzero(y - _QUANTILE_TOLERANCE >= p)[0]
        return float((x[i] + (x[int(beyond[0])] if beyond.size else last_time)) / 2)
    return float(x[i])


def _interval(lower: Any, upper: Any) -> Interval:
    return Interval(lower=_num(lower), upper=_num(upper))


def _step_index(times: np.ndarray, t: float) -> int:
    """Index of the last time ≤ t (times ascending, starting at 0)."""
    return int(np.searchsorted(times, t, side="right")) - 1


def _km_group(label: str | None, part: pd.DataFrame, times: Sequence[float], alpha: float) -> KMGroup:
    curve = _km_curve(part["duration"], part["event"], alpha)
    grid = curve["time"].to_numpy()
    durations = part["duration"].to_numpy()
    at_times: list[SurvivalAtTime] = []
    for t in times:
        i = _step_index(grid, float(t))
        row = curve.iloc[i] if i >= 0 else None
        at_times.append(
            SurvivalAtTime(
                time=float(t),
                survival=_num(row["survival"]) if row is not None else 1.0,
                std_err=_num(row["std_err"]) if row is not None else 0.0,
                n_risk=int((durations >= t).sum()),
                cumulative_events=int(part.loc[part["duration"] <= t, "event"].sum()),
                ci_log=_interval(row["log_lower"], row["log_upper"]) if row is not None else _interval(1, 1),
                ci_log_log=_interval(row["loglog_lower"], row["loglog_upper"]) if row is not None else _interval(1, 1),
                beyond_last_observation=bool(t > durations.max()),
            )
        )
    median = MedianSurvival(
        median=r_quantile(grid, curve["survival"]),
        # The lower limit of the median comes from the lower band (it reaches 0.5 first).
        ci_log=Interval(lower=r_quantile(grid, curve["log_lower"]), upper=r_quantile(grid, curve["log_upper"])),
        ci_log_log=Interval(
            lower=r_quantile(grid, curve["loglog_lower"]), upper=r_quantile(grid, curve["loglog_upper"])
        ),
    )
    table = [
        KMTableRow(
            time=float(r.time),
            n_risk=int(r.n_risk),
            n_event=int(r.n_event),
            n_censored=int(r.n_censored),
            survival=_num(r.survival),
            std_err=_num(r.std_err),
            ci_log=_interval(r.log_lower, r.log_upper),
            ci_log_log=_interval(r.loglog_lower, r.loglog_upper),
        )
        for r in curve.itertuples(index=False)
    ]
    return KMGroup(
        group=label,
        n=len(part),
        events=int(part["event"].sum()),
        median=median,
        survival_at=at_times,
        table=table,
    )


def kaplan_meier(
    df: pd.DataFrame,
    *,
    duration_col: str = "duration",
    event_col: str = "event",
    group_col: str | None = None,
    times: Sequence[float] = DEFAULT_TIMES_DAYS,
    alpha: float = 0.05,
    ci_transform: CITransform = "log",
) -> KMResult:
    """Kaplan–Meier per group: median with CI, survival at ``times`` with Greenwood SE and CI, and the
    full table. Both CI transforms are always computed; ``ci_transform`` only records which one the
    report treats as primary (default "log", to match R tables; docs/domain.md Part B §2 asks to state it).
    Survival at a time after the last observation carries the last value and is flagged."""
    if ci_transform not in CI_TRANSFORM_DESCRIPTIONS:
        raise ValueError(f"ci_transform must be 'log' or 'log-log', got {ci_transform!r}")
    frame = _checked(df, duration_col, event_col, group_col)
    _checked_events(frame, event_col)
    return KMResult(
        analysis="kaplan_meier",
        alpha=alpha,
        ci_transform_primary=ci_transform,
        ci_transforms=dict(CI_TRANSFORM_DESCRIPTIONS),
        median_rule="R quantile.survfit: first time S <= 0.5 (midpoint of a flat stretch at exactly 0.5); "
        "CI limits where the lower/upper band first reaches 0.5",
        groups=[_km_group(label, part, times, alpha) for label, part in _groups(frame)],
        versions=library_versions(),
    )


# ---------------------------------------------------------------------------------------------
# Log-rank
# ---------------------------------------------------------------------------------------------


def log_rank(
    df: pd.DataFrame,
    *,
    duration_col: str = "duration",
    event_col: str = "event",
    group_col: str = "group",
    weightings: str | None = None,
) -> LogRankResult:
    """Log-rank test across ≥ 2 groups (lifelines ``multivariate_logrank_test``; for two groups it
    equals the two-sample test). Observed and expected counts per group are the unweighted ones that R
    ``survdiff`` prints. There is no stratified log-rank in lifelines: use :func:`cox_ph` with strata."""
    frame = _checked(df, duration_col, event_col, group_col)
    _checked_events(frame, event_col)
    labels = sorted(frame["group"].unique())
    if len(labels) < 2:
        raise ValueError("log-rank needs at least two groups")
    kwargs = {"weightings": weightings} if weightings else {}
    result = multivariate_logrank_test(frame["duration"], frame["group"], frame["event"], **kwargs)
    # Expected events per group: Σ over event times of d_t · n_group(t) / n(t).
    durations = frame["duration"].to_numpy()
    event_times, deaths = np.unique(durations[frame["event"].to_numpy() == 1], return_counts=True)
    everyone = np.sort(durations)
    at_risk = len(everyone) - np.searchsorted(everyone, event_times, side="left")
    expected = {}
    for label in labels:
        mine = np.sort(durations[(frame["group"] == label).to_numpy()])
        at_risk_mine = len(mine) - np.searchsorted(mine, event_times, side="left")
        expected[label] = float((deaths * at_risk_mine / at_risk).sum())
    groups = [
        LogRankGroup(
            group=label,
            n=int((frame["group"] == label).sum()),
            observed=int(frame.loc[frame["group"] == label, "event"].sum()),
            expected=float(expected[label]),
        )
        for label in labels
    ]
    return LogRankResult(
        analysis="log_rank",
        weightings=weightings,
        statistic=float(result.test_statistic),
        df=int(result.degrees_of_freedom),
        p_value=float(result.p_value),
        groups=groups,
        versions=library_versions(),
    )


# ---------------------------------------------------------------------------------------------
# Cox proportional hazards
# ---------------------------------------------------------------------------------------------


def _breslow_loglik(
    beta: np.ndarray, blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[float, np.ndarray, np.ndarray]:
    """Breslow partial log-likelihood, score and information, summed over strata.

    Each block holds one stratum sorted by time descending: covariates X, times T, events E.
    """
    p = beta.shape[0]
    loglik, score, information = 0.0, np.zeros(p), np.zeros((p, p))
    for x, t, e in blocks:
        eta = x @ beta
        shift = eta.max()
        w = np.exp(eta - shift)
        s0 = np.cumsum(w)
        s1 = np.cumsum(w[:, None] * x, axis=0)
        s2 = np.cumsum(w[:, None, None] * x[:, :, None] * x[:, None, :], axis=0)
        ascending = t[::-1]
        for time in np.unique(t[e == 1]):
            # Rows with T >= time are the first `size` rows of the descending order.
            size = len(t) - int(np.searchsorted(ascending, time, side="left"))
            k = size - 1
            dying = (t == time) & (e == 1)
            d = int(dying.sum())
            mean = s1[k] / s0[k]
            loglik += float(eta[dying].sum() - d * (np.log(s0[k]) + shift))
            score += x[dying].sum(axis=0) - d * mean
            information += d * (s2[k] / s0[k] - np.outer(mean, mean))
    return loglik, score, information


def _breslow_cox(
    frame: pd.DataFrame, covariates: Sequence[str], strata: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, float, float]:
    x_all = frame[list(covariates)].to_numpy(dtype=float)
    x_all = x_all - x_all.mean(axis=0)  # centring changes neither β nor its SE, only the conditioning
    keys = frame[list(strata)].astype(str).agg("|".join, axis=1) if strata else pd.Series("", index=frame.index)
    blocks = []
    for key in sorted(keys.unique()):
        rows = np.nonzero((keys == key).to_numpy())[0]
        order = rows[np.argsort(-frame["duration"].to_numpy()[rows], kind="mergesort")]
        blocks.append((x_all[order], frame["duration"].to_numpy()[order], frame["event"].to_numpy()[order]))
    beta = np.zeros(len(covariates))
    loglik_null, score, information = _breslow_loglik(beta, blocks)
    loglik = loglik_null
    for _ in range(100):
        step = np.linalg.solve(information, score)
        candidate = beta + step
        new_loglik, new_score, new_information = _breslow_loglik(candidate, blocks)
        halvings = 0
        while new_loglik < loglik and halvings < 30:
            step /= 2
            candidate = beta + step
            new_loglik, new_score, new_information = _breslow_loglik(candidate, blocks)
            halvings += 1
        converged = abs(new_loglik - loglik) <= 1e-12 * max(1.0, abs(loglik)) and np.max(np.abs(step)) < 1e-9
        beta, loglik, score, information = candidate, new_loglik, new_score, new_information
        if converged:
            break
    else:
        raise RuntimeError("Breslow Cox fit did not converge in 100 Newton-Raphson iterations")
    se = np.sqrt(np.diag(np.linalg.inv(information)))
    return beta, se, loglik, loglik_null


# lifelines stops Newton-Raphson once the relative log-likelihood change is < 1e-9 (R's default), which
# can leave β ~1e-5 short of the maximum on flat likelihoods; a tighter stop costs one or two steps.
_COX_CONVERGENCE = {"precision": 1e-10, "r_precision": 1e-13}


def cox_ph(
    df: pd.DataFrame,
    *,
    covariates: Sequence[str],
    duration_col: str = "duration",
    event_col: str = "event",
    strata: Sequence[str] = (),
    ties: Literal["efron", "breslow"] = "efron",
    alpha: float = 0.05,
    check_proportional_hazards: bool = True,
    batch_mode: bool = True,
) -> CoxResult:
    """Cox proportional-hazards model: coefficients with SE, hazard ratios with CI, likelihood-ratio
    test and a proportional-hazards check.

    * ``ties="efron"`` (default, = R ``coxph``): lifelines ``CoxPHFitter``. ``batch_mode=True`` (default)
      is much faster for day-granular times, where lifelines' own heuristic picks the slow path, and
      gives identical coefficients (docs/domain.md Part B §5); pass ``False`` for all-distinct times.
    * ``ties="breslow"`` (SAS PHREG, scikit-survival and many textbooks): our own Newton–Raphson; it
      gives coefficients, SEs, log-likelihoods and concordance; no PH test.
    * PH check: scaled-Schoenfeld test with the rank time transform (lifelines). lifelines follows R's
      pre-2019 ``cox.zph`` approximation, so p-values differ from current R.
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    if not covariates:
        raise ValueError("a Cox model needs at least one covariate")
    frame = _checked(df, duration_col, event_col)
    _checked_events(frame, event_col)
    extra = list(dict.fromkeys([*covariates, *strata]))
    absent = [c for c in extra if c not in df.columns]
    if absent:
        raise ValueError(f"missing column(s): {', '.join(absent)}")
    # _checked re-sorted rows; bring covariates along in the same order.
    source = df[[duration_col, event_col, *extra]].copy()
    missing = source[extra].isna().sum()
    if missing.any():
        raise ValueError(f"covariate/strata columns with missing values: {', '.join(missing[missing > 0].index)}")
    source = source.rename(columns={duration_col: "duration", event_col: "event"})
    source["duration"] = source["duration"].astype(float)
    source["event"] = source["event"].astype(int)
    # A canonical row order: lifelines' rank-transformed PH test pairs tied times with covariates in
    # row order, so without it the same data in another order gives another p-value.
    source = source.sort_values(["duration", "event", *extra], kind="mergesort").reset_index(drop=True)
    z = _z(alpha)
    notes = [
        "lifelines CoxPHFitter handles ties by Efron only; Breslow results come from tolerance's own "
        "Newton-Raphson (ties='breslow')."
    ]
    if ties == "efron":
        cph = CoxPHFitter(alpha=alpha).fit(
            source,
            duration_col="duration",
            event_col="event",
            strata=list(strata) or None,
            batch_mode=batch_mode,
            fit_options=_COX_CONVERGENCE,
        )
        coef = cph.params_.reindex(list(covariates)).to_numpy(dtype=float)
        se = cph.standard_errors_.reindex(list(covariates)).to_numpy(dtype=float)
        loglik = float(cph.log_likelihood_)
        lr = cph.log_likelihood_ratio_test()
        lr_stat, lr_df = float(lr.test_statistic), int(lr.degrees_freedom)
        loglik_null = loglik - lr_stat / 2
        concordance = float(cph.concordance_index_)
        engine = (
            f"lifelines.CoxPHFitter {lifelines.__version__} "
            f"(Efron ties, batch_mode={batch_mode}, fit_options={_COX_CONVERGENCE})"
        )
        ph: PHCheck | None = None
        if check_proportional_hazards:
            test = proportional_hazard_test(cph, source, time_transform="rank")
            summary = test.summary
            ph = PHCheck(
                method="scaled Schoenfeld residuals vs rank(time), lifelines proportional_hazard_test "
                "(R cox.zph pre-2019 approximation)",
                tests=[
                    PHTestRow(
                        covariate=str(name),
                        statistic=float(summary.loc[name, "test_statistic"]),
                        p_value=float(summary.loc[name, "p"]),
                    )
                    for name in covariates
                ],
            )
    else:
        coef, se, loglik, loglik_null = _breslow_cox(source, covariates, strata)
        lr_stat, lr_df = 2 * (loglik - loglik_null), len(covariates)
        risk = source[list(covariates)].to_numpy(dtype=float) @ coef
        concordance = float(concordance_index(source["duration"], -risk, source["event"]))
        engine = "tolerance Newton-Raphson on the Breslow partial likelihood"
        ph = None
    coefficients = []
    for name, b, s in zip(covariates, coef, se, strict=True):
        z_value = b / s
        coefficients.append(
            CoxCoefficient(
                covariate=str(name),
                coef=float(b),
                se=float(s),
                hazard_ratio=float(np.exp(b)),
                hazard_ratio_ci=Interval(lower=float(np.exp(b - z * s)), upper=float(np.exp(b + z * s))),
                z=float(z_value),
                p_value=float(2 * stats.norm.sf(abs(z_value))),
            )
        )
    return CoxResult(
        analysis="cox_ph",
        ties=ties,
        engine=engine,
        alpha=alpha,
        n=len(source),
        events=int(source["event"].sum()),
        strata=list(strata),
        coefficients=coefficients,
        log_likelihood=float(loglik),
        log_likelihood_null=float(loglik_null),
        likelihood_ratio_test=LikelihoodRatioTest(
            statistic=float(lr_stat), df=lr_df, p_value=float(stats.chi2.sf(lr_stat, lr_df))
        ),
        concordance=concordance,
        proportional_hazards=ph,
        notes=notes,
        versions=library_versions(),
    )


# ---------------------------------------------------------------------------------------------
# Aalen–Johansen cumulative incidence
# ---------------------------------------------------------------------------------------------


def _break_ties(durations: np.ndarray, codes: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """Separate event times shared by different causes, reproducibly and without changing the estimate.

    Tied events at time t are moved to distinct times in (t − ε, t), ε = half the smallest gap between
    distinct times including 0 (at most 0.5), in an order drawn from ``default_rng(seed)``. Moving events *down* keeps them before
    any censoring at t (the KM convention); splitting a tie between events leaves the Aalen–Johansen
    CIF after t unchanged. Returns the new durations and the number of rows moved.
    """
    # Gaps include the one from time 0, so a moved event never reaches 0 (lifelines zeroes its first row).
    gaps = np.diff(np.unique(np.concatenate(([0.0], durations))))
    epsilon = 0.5 * min(gaps[gaps > 0].min() if (gaps > 0).any() else 1.0, 1.0)
    rng = np.random.default_rng(seed)
    result = durations.astype(float).copy()
    moved = 0
    for t in np.unique(durations[codes != 0]):
        rows = np.nonzero((durations == t) & (codes != 0))[0]
        if len(np.unique(codes[rows])) < 2:
            continue  # same-cause ties are handled exactly by the KM event table
        ranks = rng.permutation(len(rows)) + 1
        result[rows] = t - epsilon * ranks / (len(rows) + 1)
        if np.unique(result[rows]).size != len(rows):
            raise ValueError(f"cannot separate {len(rows)} tied events at time {t} in floating point")
        moved += len(rows)
    return result, moved


def cumulative_incidence(
    df: pd.DataFrame,
    *,
    duration_col: str = "cr_duration",
    event_col: str = "event_code",
    event_of_interest: int = 1,
    times: Sequence[float] = DEFAULT_TIMES_DAYS,
    alpha: float = 0.05,
    seed: int = 20240101,
) -> CIFResult:
    """Aalen–Johansen cumulative incidence of ``event_of_interest`` with competing causes
    (``event_col``: 0 censored, 1 relapse, 2 death, 3 retreatment; docs/domain.md Part B §1-§2).

    Also returns the naive 1 − KM that treats competitors as censored, which over-estimates
    (Gooley et al. 1999). CIs are lifelines' delta-method log(−log) intervals on Greenwood-type variance.
    """
    frame = _checked(df, duration_col, event_col)
    if (frame["event"] < 0).any():
        raise ValueError(f"column {event_col!r} must hold 0 (censored) or a positive cause code")
    if event_of_interest <= 0:
        raise ValueError("event_of_interest must be a positive cause code")
    durations, codes = frame["duration"].to_numpy(), frame["event"].to_numpy()
    # lifelines forces the CIF of its first row to 0, which is wrong when that row (time 0) has events.
    # The estimator depends only on the order of times, so shift the clock and query at t + offset.
    offset = 1.0 if durations.min() <= 0 else 0.0
    jittered, moved = _break_ties(durations + offset, codes, seed)
    # lifelines' variance divides by (n − d) and takes log(−log F) where F is 0 or 1; both are expected
    # at the ends of the curve and give inf/NaN, which become None below.
    with np.errstate(divide="ignore", invalid="ignore"):
        ajf = AalenJohansenFitter(alpha=alpha, seed=seed, calculate_variance=True)
        ajf.fit(jittered, codes, event_of_interest=event_of_interest)
    cif = ajf.cumulative_density_.iloc[:, 0]
    grid = cif.index.to_numpy(dtype=float)
    variance = ajf.variance_.to_numpy(dtype=float)
    bands = ajf.confidence_interval_.to_numpy(dtype=float)
    naive = KaplanMeierFitter().fit(durations, event_observed=(codes == event_of_interest).astype(int))
    at_times = []
    for t in times:
        i = _step_index(grid, float(t) + offset)
        value = float(cif.iloc[i]) if i >= 0 else 0.0
        low, high = (
            (np.nanmin(bands[i]), np.nanmax(bands[i])) if i >= 0 and not np.isnan(bands[i]).all() else (np.nan, np.nan)
        )
        at_times.append(
            CIFAtTime(
                time=float(t),
                cif=value,
                std_err=_num(np.sqrt(variance[i])) if i >= 0 and variance[i] >= 0 else None,
                ci=_interval(low, high),
                naive_one_minus_km=float(1.0 - naive.survival_function_at_times(float(t)).iloc[0]),
            )
        )
    event_times = np.unique(durations[codes != 0])
    table = [CIFTableRow(time=float(t), cif=float(cif.iloc[_step_index(grid, float(t) + offset)])) for t in event_times]
    causes = sorted(int(c) for c in np.unique(codes) if c != 0)
    return CIFResult(
        analysis="aalen_johansen",
        event_of_interest=event_of_interest,
        competing_events=[c for c in causes if c != event_of_interest],
        alpha=alpha,
        n=len(frame),
        events_of_interest=int((codes == event_of_interest).sum()),
        competing=int(((codes != 0) & (codes != event_of_interest)).sum()),
        censored=int((codes == 0).sum()),
        ties_broken=moved,
        tie_breaking="seeded downward jitter below half the smallest gap between distinct times "
        "(events before censorings; CIF identical to the tied Aalen-Johansen estimate)",
        seed=seed,
        ci_method="lifelines delta-method log(-log) interval on the Greenwood-type variance",
        at_times=at_times,
        table=table,
        notes=[
            "naive_one_minus_km censors competing events and over-estimates the incidence (Gooley 1999)",
            "the variance is lifelines' formula evaluated on the tie-broken times",
        ],
        versions=library_versions(),
    )


# ---------------------------------------------------------------------------------------------
# Restricted mean survival time
# ---------------------------------------------------------------------------------------------


def _rmst(part: pd.DataFrame, horizon: float) -> tuple[float, float]:
    """RMST to ``horizon`` and its SE: √Σ_j A_j² d_j/(n_j(n_j − d_j)), A_j = ∫_{t_j}^{τ} S(u) du over
    times t_j ≤ τ (R ``print.survfit(rmean=τ)``; survRM2). A term with n_j = d_j contributes 0, as in R."""
    kmf = KaplanMeierFitter().fit(part["duration"], event_observed=part["event"])
    table = kmf.event_table
    times = table.index.to_numpy(dtype=float)
    surv = kmf.survival_function_.iloc[:, 0].to_numpy(dtype=float)
    n = table["at_risk"].to_numpy(dtype=float)
    d = table["observed"].to_numpy(dtype=float)
    keep = times <= horizon
    times, surv, n, d = times[keep], surv[keep], n[keep], d[keep]
    edges = np.append(times, horizon)
    widths = np.diff(edges)  # S is constant at surv[j] on [times[j], times[j + 1])
    pieces = widths * surv
    before_first = times[0] if times.size else horizon  # S = 1 before the first time point
    rmst = float(before_first + pieces.sum())
    area_after = np.cumsum(pieces[::-1])[::-1]  # A_j = ∫_{t_j}^{τ} S
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where((d > 0) & (n - d > 0), d / (n * (n - d)), 0.0)
    return rmst, float(math.sqrt(float((area_after**2 * h).sum())))


def restricted_mean_survival_time(
    df: pd.DataFrame,
    *,
    horizon: float = DEFAULT_RMST_HORIZON_DAYS,
    duration_col: str = "duration",
    event_col: str = "event",
    group_col: str | None = None,
    reference_group: str | None = None,
    alpha: float = 0.05,
) -> RMSTResult:
    """RMST to ``horizon`` (default 730 days) per group with SE and normal CI; with exactly two groups,
    the difference (other − reference) with SE = √(SE₁² + SE₂²), CI and z-test, and the ratio with a
    log-scale CI (survRM2). ``reference_group`` defaults to the first label in sort order."""
    if horizon <= 0:
        raise ValueError("horizon must be positive")
    frame = _checked(df, duration_col, event_col, group_col)
    _checked_events(frame, event_col)
    z = _z(alpha)
    groups: list[RMSTGroup] = []
    for label, part in _groups(frame):
        rmst, se = _rmst(part, horizon)
        groups.append(
            RMSTGroup(
                group=label,
                n=len(part),
                events=int(part["event"].sum()),
                rmst=rmst,
                se=se,
                ci=Interval(lower=rmst - z * se, upper=rmst + z * se),
                horizon_beyond_last_observation=bool(horizon > part["duration"].max()),
            )
        )
    comparison = None
    if len(groups) == 2:
        labels = [g["group"] for g in groups]
        ref_label = reference_group if reference_group is not None else labels[0]
        if ref_label not in labels:
            raise ValueError(f"reference_group {ref_label!r} is not one of {labels}")
        ref = next(g for g in groups if g["group"] == ref_label)
        other = next(g for g in groups if g["group"] != ref_label)
        diff = other["rmst"] - ref["rmst"]
        diff_se = math.sqrt(other["se"] ** 2 + ref["se"] ** 2)
        z_value = diff / diff_se if diff_se > 0 else math.nan
        ratio = other["rmst"] / ref["rmst"] if ref["rmst"] > 0 else None
        if ratio is not None and other["rmst"] > 0:
            log_se = math.sqrt((other["se"] / other["rmst"]) ** 2 + (ref["se"] / ref["rmst"]) ** 2)
            ratio_ci = Interval(lower=ratio * math.exp(-z * log_se), upper=ratio * math.exp(z * log_se))
        else:
            ratio_ci = Interval(lower=None, upper=None)
        comparison = RMSTComparison(
            contrast=f"{other['group']} - {ref_label}",
            difference=diff,
            difference_se=diff_se,
            difference_ci=Interval(lower=diff - z * diff_se, upper=diff + z * diff_se),
            z=z_value,
            p_value=float(2 * stats.norm.sf(abs(z_value))) if math.isfinite(z_value) else math.nan,
            ratio=ratio,
            ratio_ci=ratio_ci,
        )
    return RMSTResult(
        analysis="rmst",
        horizon=float(horizon),
        alpha=alpha,
        se_method="sqrt(sum A_j^2 d_j/(n_j(n_j-d_j))), A_j = area under KM from t_j to horizon (R print.survfit rmean; survRM2)",
        groups=groups,
        comparison=comparison,
        versions=library_versions(),
    )


# ---------------------------------------------------------------------------------------------
# Interval-censored NPMLE (sensitivity analysis)
# ---------------------------------------------------------------------------------------------


def _npmle_median(grid: np.ndarray, curve: np.ndarray) -> float | None:
    """Infimum of {t: S(t) ≤ 0.5} for a curve that takes the value listed at grid[j] on
    (grid[j − 1], grid[j]] (see :func:`turnbull_npmle`)."""
    reached = np.nonzero(curve <= 0.5)[0]
    if reached.size == 0:
        return None
    j = int(reached[0])
    return _num(grid[j - 1]) if j > 0 else _num(grid[0])


def turnbull_npmle(
    df: pd.DataFrame,
    *,
    lower_col: str = "lower",
    upper_col: str = "upper",
    times: Sequence[float] = DEFAULT_TIMES_DAYS,
    tolerance: float = 1e-9,
) -> TurnbullResult:
    """Turnbull NPMLE of survival for interval-censored relapse times (lifelines
    ``KaplanMeierFitter.fit_interval_censoring``), the sensitivity analysis for relapse seen only at
    visits (docs/domain.md Part B §2). ``upper`` = inf/NaN/None means right-censored; lower = upper is an
    exactly known time. lifelines treats intervals as closed.

    The NPMLE is not unique inside Turnbull intervals, so both the upper and the lower survival curve
    are returned. lifelines calls this fitter experimental and gives no CI. Its EM stops when the
    log-likelihood gains less than ``tolerance``; estimates are then good to about 1e-3.
    """
    for column in (lower_col, upper_col):
        if column not in df.columns:
            raise ValueError(f"missing column: {column}")
    lower = df[lower_col].astype(float).to_numpy()
    upper = df[upper_col].astype(float).fillna(np.inf).to_numpy()
    if np.isnan(lower).any() or (lower < 0).any() or (upper < lower).any():
        raise ValueError("interval bounds must satisfy 0 <= lower <= upper")
    order = np.lexsort((upper, lower))
    # The EM's line search evaluates log(0) for candidate steps it then rejects.
    with np.errstate(divide="ignore", invalid="ignore"):
        kmf = KaplanMeierFitter().fit_interval_censoring(lower[order], upper[order], tol=tolerance)
    if not CensoringType.is_interval_censoring(kmf):
        raise RuntimeError("expected an interval-censored fit")
    sf = kmf.survival_function_
    grid = sf.index.to_numpy(dtype=float)
    upper_curve = sf["NPMLE_estimate_upper"].to_numpy(dtype=float)
    lower_curve = sf["NPMLE_estimate_lower"].to_numpy(dtype=float)
    at_times = []
    for t in times:
        # lifelines lists each Turnbull interval [l, r] at l (before its mass) and at r (upper curve:
        # mass not yet gone; lower curve: gone). Between listed points the value is the next point's,
        # which is also how lifelines fills a timeline (bfill).
        i = min(int(np.searchsorted(grid, float(t), side="left")), len(grid) - 1)
        at_times.append(
            NPMLEAtTime(time=float(t), survival_upper=float(upper_curve[i]), survival_lower=float(lower_curve[i]))
        )
    return TurnbullResult(
        analysis="turnbull_npmle",
        n=len(df),
        right_censored=int(np.isinf(upper).sum()),
        tolerance=tolerance,
        median=Interval(lower=_npmle_median(grid, lower_curve), upper=_npmle_median(grid, upper_curve)),
        survival_at=at_times,
        notes=[
            "lifelines marks fit_interval_censoring as experimental; no confidence intervals",
            "the NPMLE is set-valued inside Turnbull intervals: survival_upper/survival_lower bound it",
            "median: earliest/latest time at which the lower/upper curve reaches 0.5, from the curve "
            "(lifelines' median_survival_time_ reports the next listed time after the crossing)",
        ],
        versions=library_versions(),
    )


# ---------------------------------------------------------------------------------------------
# Probability of being in remission, and mean time in remission (multi-state Aalen–Johansen)
# ---------------------------------------------------------------------------------------------


class StateAtTime(TypedDict):
    time: float
    in_remission: float | None
    not_yet_in_remission: float | None
    relapsed: float | None


class PIRGroup(TypedDict):
    group: str | None
    n: int
    entered_remission: int
    left_remission: int
    at_times: list[StateAtTime]
    curve: list[StateAtTime]
    mean_time_in_remission: float | None
    mean_time_se: float | None
    mean_time_ci: Interval


class PIRResult(TypedDict):
    analysis: str
    horizon: float
    method: str
    bootstrap: dict[str, Any]
    groups: list[PIRGroup]
    versions: LibraryVersions


def state_occupancy(
    onset: np.ndarray, exit_day: np.ndarray, exit_event: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aalen–Johansen state occupation in the progressive model 0 "not yet in remission" →
    1 "in remission" → 2 "relapsed" (and 0 → 2): ``(times, p0, p1)`` just after each distinct time.

    ``onset``: day of entering remission (NaN: never); ``exit_day``/``exit_event``: the day follow-up
    ends, and whether it ends by entering state 2 (from 1, or from 0 when there is no onset).
    At each time t the transition matrix is I + dA(t), with dA_hj = d_hj(t)/n_h(t) and n_h(t) the
    weight in state h just before t (censorings at t are still at risk at t). This is the estimator
    behind R ``survfit`` for multi-state data ("probability in state"; the survival vignette's
    restricted mean time in the CR state).
    """
    onset = np.asarray(onset, dtype=float)
    exit_day = np.asarray(exit_day, dtype=float)
    event = np.asarray(exit_event, dtype=bool)
    w = np.ones(len(onset)) if weights is None else np.asarray(weights, dtype=float)
    has_onset = ~np.isnan(onset)
    if (has_onset & ((onset > exit_day) | ((onset == exit_day) & event))).any():
        raise ValueError("remission onset must come before leaving remission")
    times = np.unique(np.concatenate([onset[has_onset], exit_day]))
    k = len(times)

    def counts(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(np.searchsorted(times, values[mask]), weights=w[mask], minlength=k)

    leave0 = np.where(has_onset, onset, exit_day)
    n0 = np.cumsum(counts(leave0, np.ones(len(onset), dtype=bool))[::-1])[::-1]  # still in 0 just before t
    entered = counts(onset, has_onset)
    exited1 = counts(exit_day, has_onset)
    n1 = np.concatenate([[0.0], np.cumsum(entered)[:-1]]) - np.concatenate([[0.0], np.cumsum(exited1)[:-1]])
    d01 = entered
    d02 = counts(exit_day, ~has_onset & event)
    d12 = counts(exit_day, has_onset & event)
    p0_out, p1_out = np.empty(k), np.empty(k)
    p0, p1 = 1.0, 0.0
    for i in range(k):
        h01 = d01[i] / n0[i] if n0[i] > 0 else 0.0
        h02 = d02[i] / n0[i] if n0[i] > 0 else 0.0
        h12 = d12[i] / n1[i] if n1[i] > 0 else 0.0
        p0, p1 = p0 * (1.0 - h01 - h02), p1 * (1.0 - h12) + p0 * h01
        p0_out[i], p1_out[i] = p0, p1
    return times, p0_out, p1_out


def _area(times: np.ndarray, values: np.ndarray, horizon: float) -> float:
    """∫_0^horizon of a right-continuous step function equal to 0 before times[0]."""
    keep = times < horizon
    edges = np.append(times[keep], horizon)
    return float((np.diff(edges) * values[keep]).sum())


def _pir_group(label: str | None, part: pd.DataFrame, horizon: float, times, reps: int, rng, alpha: float):
    onset = part["onset_day"].astype(float).to_numpy()
    exit_day = part["exit_day"].astype(float).to_numpy()
    event = part["exit_event"].astype(int).to_numpy()
    grid, p0, p1 = state_occupancy(onset, exit_day, event)
    mean_time = _area(grid, p1, horizon)
    # Bootstrap over participants, on the distinct (onset, exit, event) histories with multinomial
    # weights: the same resampling as drawing participants, at a cost independent of n.
    keys = pd.DataFrame({"o": np.nan_to_num(onset, nan=-1.0), "x": exit_day, "e": event})
    distinct = keys.value_counts(sort=False).reset_index(name="count")
    d_onset = distinct["o"].to_numpy().astype(float)
    d_onset[d_onset < 0] = np.nan
    d_exit, d_event = distinct["x"].to_numpy(dtype=float), distinct["e"].to_numpy(dtype=int)
    probabilities = distinct["count"].to_numpy(dtype=float) / len(part)
    draws = []
    for _ in range(reps):
        weights = rng.multinomial(len(part), probabilities).astype(float)
        chosen = weights > 0
        g, _p0, b1 = state_occupancy(d_onset[chosen], d_exit[chosen], d_event[chosen], weights[chosen])
        draws.append(_area(g, b1, horizon))
    se = float(np.std(draws, ddof=1)) if reps > 1 else math.nan
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2]) if reps > 1 else (math.nan, math.nan)

    def state(t: float) -> StateAtTime:
        i = _step_index(grid, t)
        a, b = (p0[i], p1[i]) if i >= 0 else (1.0, 0.0)
        return StateAtTime(time=float(t), in_remission=_num(b), not_yet_in_remission=_num(a), relapsed=_num(1 - a - b))

    return PIRGroup(
        group=label,
        n=len(part),
        entered_remission=int((~np.isnan(onset)).sum()),
        left_remission=int(((~np.isnan(onset)) & (event == 1)).sum()),
        at_times=[state(float(t)) for t in times],
        curve=[state(float(t)) for t in grid if t <= horizon],
        mean_time_in_remission=_num(mean_time),
        mean_time_se=_num(se),
        mean_time_ci=_interval(lo, hi),
    )


def probability_in_remission(
    df: pd.DataFrame,
    *,
    group_col: str | None = None,
    horizon: float = DEFAULT_RMST_HORIZON_DAYS,
    times: Sequence[float] = DEFAULT_TIMES_DAYS,
    bootstrap: int = 200,
    seed: int = 20240101,
    alpha: float = 0.05,
) -> PIRResult:
    """Probability of being in remission over time (Temkin 1978; docs/domain.md Part B §2) and the mean
    time in remission up to ``horizon`` (the area under that curve), per group, from columns
    ``onset_day``, ``exit_day``, ``exit_event`` (see :func:`state_occupancy`). The SE and percentile
    CI of the mean time come from a seeded nonparametric bootstrap (``bootstrap`` resamples)."""
    for column in ("onset_day", "exit_day", "exit_event"):
        if column not in df.columns:
            raise ValueError(f"missing column: {column}")
    rng = np.random.default_rng(seed)
    frame = df if group_col is None else df.assign(group=df[group_col].map(_label))
    parts = [(None, frame)] if group_col is None else [(g, p) for g, p in frame.groupby("group", sort=True)]
    return PIRResult(
        analysis="probability_in_remission",
        horizon=float(horizon),
        method="Aalen-Johansen state occupation, progressive model (not yet in remission -> in remission -> "
        "relapsed); mean time in remission = area under P(in remission) to the horizon",
        bootstrap={"resamples": bootstrap, "seed": seed, "ci": "percentile"},
        groups=[_pir_group(label, part, horizon, times, bootstrap, rng, alpha) for label, part in parts],
        versions=library_versions(),
    )


# ---------------------------------------------------------------------------------------------
# Landmark analysis
# ---------------------------------------------------------------------------------------------


class LandmarkResult(TypedDict):
    analysis: str
    landmark: float
    label: str
    at_risk: int
    excluded_event_before: int
    excluded_censored_before: int
    kaplan_meier: KMResult | None
    log_rank: LogRankResult | dict[str, Any] | None


def landmark_analysis(
    df: pd.DataFrame,
    *,
    landmark: float,
    status_col: str,
    label: str,
    times: Sequence[float] = (91.3125, 182.625, 365.25),
    alpha: float = 0.05,
    ci_transform: CITransform = "log",
) -> LandmarkResult:
    """Landmark analysis (Anderson, Cain & Gelber 1983; docs/domain.md Part B §2): keep the participants
    still event-free and followed beyond ``landmark`` days, group them by remission status at the
    landmark (``status_col``), and measure time from the landmark. Removes the guarantee-time bias of
    comparing responders with non-responders from the origin."""
    _checked(df, "duration", "event")
    if status_col not in df.columns:
        raise ValueError(f"missing column: {status_col}")
    duration = df["duration"].astype(float).to_numpy()
    event = df["event"].astype(int).to_numpy()
    beyond = duration > landmark
    at_risk = pd.DataFrame(
        {
            "duration": duration[beyond] - landmark,
            "event": event[beyond],
            "group": np.where(
                df[status_col].astype(bool).to_numpy()[beyond], "In remission", "Not in remission"
            ).astype(object),
        }
    )
    result = LandmarkResult(
        analysis="landmark",
        landmark=float(landmark),
        label=label,
        at_risk=len(at_risk),
        excluded_event_before=int(((~beyond) & (event == 1)).sum()),
        excluded_censored_before=int(((~beyond) & (event == 0)).sum()),
        kaplan_meier=None,
        log_rank=None,
    )
    if at_risk.empty:
        return result
    result["kaplan_meier"] = kaplan_meier(
        at_risk, group_col="group", times=times, alpha=alpha, ci_transform=ci_transform
    )
    both = len(set(at_risk["group"])) > 1
    if both and at_risk["event"].sum() > 0:
        result["log_rank"] = log_rank(at_risk, group_col="group")
    else:
        result["log_rank"] = {"estimable": False, "reason": "one status group or no events after the landmark"}
    return result
