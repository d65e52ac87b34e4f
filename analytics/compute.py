"""The numbers of one durability analysis, from the participant-level frame (``analytics.datacut``)
through ``analytics.survival`` (the one module that talks to lifelines).

Kaplan–Meier per group (median and survival at 6/12/18/24 months, both CI transforms; the primary one
is the spec's), log-rank across groups, Cox by dose (log10 planned cells/kg, ``batch_mode=True``; a
placebo cohort, 0 cells/kg, has no place on a log-dose scale and is left out of that model only),
Aalen–Johansen cumulative incidence of relapse with death and retreatment competing (seeded),
RMST to τ with SE and differences against the first group (τ defaults to the largest time every
group reaches; a longer τ asked for is kept and warned about), the probability of being in
remission over time with the mean time in remission (multi-state Aalen–Johansen, bootstrap SE), the
3- and 6-month landmark analyses by remission status, and the Turnbull NPMLE as the interval-censored
sensitivity analysis. A secondary analysis that cannot be estimated on these data
(one group, no events, no dose contrast) is recorded as such instead of failing the whole job.

The numbers at risk under the plots are counted here, by R ``survfit``'s rule (followed to at least
that day, time ≥ t), so the plot's row at day 0 is the N of the tables.

Everything returned is plain JSON: non-finite numbers become ``None`` (PostgreSQL's jsonb refuses NaN).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from analytics import survival
from analytics.datacut import LANDMARK_COLUMNS
from analytics.derivations import LANDMARK_DAYS

DEFAULT_TIMES = survival.DEFAULT_TIMES_DAYS
# The Turnbull EM stops when the log-likelihood gains less than this. survival.turnbull_npmle's 1e-9
# costs ~7x the time of 1e-6 on day-granular data for changes below 1e-4 in S(t) (lifelines'
# own default is 1e-5); the value used is recorded in the result.
TURNBULL_TOLERANCE = 1e-6
# Bootstrap resamples for the SE of the mean time in remission (seeded with the spec's seed).
PIR_BOOTSTRAP = 200
TIME_LABELS = {182.625: "6 months", 365.25: "12 months", 547.875: "18 months", 730.5: "24 months"}
# Ticks of the plots' time axis (and of their numbers at risk): every three months.
AXIS_TICKS_DAYS = (0, 91, 182, 274, 365, 456, 547, 639, 730)


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars made Python and NaN/inf made ``None``, recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


def _secondary(name: str, fn: Callable[[], Any], notes: list[str]) -> Any:
    """Run a secondary analysis; its warnings become notes and a failure becomes a recorded reason."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except (ValueError, ArithmeticError, np.linalg.LinAlgError, RuntimeError) as exc:
            result = {"estimable": False, "reason": f"{type(exc).__name__}: {exc}"}
    for warning in caught:
        notes.append(f"{name}: {warning.category.__name__}: {warning.message}")
    return result


def _group_summary(part: pd.DataFrame) -> dict[str, Any]:
    return {
        "n": len(part),
        # The last time anyone in the group was observed: estimates past it are not estimable.
        "last_observation_days": float(part["duration"].max()) if len(part) else None,
        "last_observation_cr_days": float(part["cr_duration"].max()) if len(part) else None,
        "events": int(part["event"].sum()),
        "censored": int((part["event"] == 0).sum()),
        "responders": int(part["responder"].sum()),
        "mean_days_in_remission": float(part["days_in_remission"].mean()) if len(part) else None,
        "competing": {
            "relapse": int((part["event_code"] == 1).sum()),
            "death": int((part["event_code"] == 2).sum()),
            "retreatment": int((part["event_code"] == 3).sum()),
        },
        "reasons": dict(sorted(Counter(part["reason"]).items())),
    }


def _at_risk(parts: dict[str, pd.DataFrame], column: str, days: list[float]) -> list[dict[str, Any]]:
    """Per group, the number still followed at each day: ``column`` ≥ day (R ``survfit``'s n.risk)."""
    return [
        {"group": label, "counts": [int((part[column] >= day).sum()) for day in days]} for label, part in parts.items()
    ]


def rmst_horizon(parts: dict[str, pd.DataFrame], requested: float | None) -> tuple[float, float, list[str]]:
    """(τ, the largest time every group reaches, warnings). Without a requested τ, τ is that largest
    common time; a requested τ beyond it is kept (the user asked for it) with a warning per group whose
    curve would be carried past its last observation."""
    reached = {label: float(part["duration"].max()) for label, part in parts.items()}
    common = min(reached.values())
    if requested is None:
        return common, common, []
    warnings_ = [
        f"τ = {requested:g} days is beyond the last observation of {label} (day {last:g}): its RMST assumes "
        f"the curve stays flat after day {last:g}. The largest τ every group reaches is {common:g} days."
        for label, last in reached.items()
        if requested > last
    ]
    return float(requested), common, warnings_


def _cox_by_dose(frame: pd.DataFrame, alpha: float, notes: list[str]) -> dict[str, Any]:
    """Cox on log10(planned cells/kg) over the dosed participants. Placebo (0 cells/kg) has no
    logarithm: it is compared with the active cohorts by the log-rank test and RMST, not here."""
    doses = frame["dose_per_kg"]
    if doses.isna().any():
        return {"estimable": False, "reason": "a cohort has a total dose only, no planned dose per kg"}
    placebo = int((doses == 0).sum())
    dosed = frame[doses > 0]
    left_out = (
        f"{placebo} placebo participant{'s' if placebo != 1 else ''} (0 cells/kg) left out: a zero dose has no "
        "place on the log-dose scale (compare placebo by cohort: log-rank and RMST)"
        if placebo
        else ""
    )
    if dosed["log10_dose"].nunique() < 2:
        reason = "fewer than two active dose levels: no dose–response to estimate"
        return {"estimable": False, "reason": f"{reason}; {left_out}" if left_out else reason}
    if dosed["event"].sum() == 0:
        return {"estimable": False, "reason": "no events among the dosed participants"}
    result = _secondary(
        "Cox",
        lambda: survival.cox_ph(dosed, covariates=["log10_dose"], alpha=alpha, batch_mode=True),
        notes,
    )
    if left_out and result.get("estimable") is not False:
        result["placebo_left_out"] = placebo
        result["notes"] = [*result.get("notes", []), left_out]
    return result


def analysis_numbers(
    frame: pd.DataFrame,
    *,
    ci_transform: str,
    horizon_days: float | None,
    alpha: float,
    seed: int,
    axis_days: float = 730.0,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """All numbers of one analysis of ``frame`` (columns of :data:`analytics.datacut.FRAME_COLUMNS`).
    ``horizon_days`` is the requested RMST τ (``None``: the largest time every group reaches);
    ``axis_days`` the length of the plots' time axis (the study's follow-up)."""
    if frame.empty:
        raise ValueError("the data cut has no participant with a time-to-event row for this endpoint")
    stage = on_stage or (lambda _name: None)
    notes: list[str] = []
    labels = sorted(frame["group"].unique())
    parts = {label: frame[frame["group"] == label] for label in labels}
    tau, common, tau_warnings = rmst_horizon(parts, horizon_days)
    ticks = [float(t) for t in AXIS_TICKS_DAYS if t <= axis_days]

    stage("Kaplan-Meier")
    km = survival.kaplan_meier(frame, group_col="group", alpha=alpha, ci_transform=ci_transform)
    km_overall = survival.kaplan_meier(frame, alpha=alpha, ci_transform=ci_transform) if len(labels) > 1 else None

    stage("log-rank and Cox")
    if len(labels) > 1:
        logrank = _secondary("log-rank", lambda: survival.log_rank(frame, group_col="group"), notes)
    else:
        logrank = {"estimable": False, "reason": "a single group: nothing to compare"}
    cox = _cox_by_dose(frame, alpha, notes)

    stage("cumulative incidence")
    cif = {
        label: _secondary(
            f"Aalen-Johansen {label}", lambda part=part: survival.cumulative_incidence(part, seed=seed), notes
        )
        for label, part in parts.items()
    }

    stage("restricted mean survival time")
    tau_rule = "the largest time every group reaches (default)" if horizon_days is None else "requested in the analysis"
    if tau <= 0:
        rmst = {"estimable": False, "reason": "a group has no follow-up beyond day 0", "horizon": tau}
        comparisons = []
    else:
        rmst = survival.restricted_mean_survival_time(frame, horizon=tau, group_col="group", alpha=alpha)
        comparisons = []
        if len(labels) > 2:
            reference = labels[0]
            for other in labels[1:]:
                pair = frame[frame["group"].isin([reference, other])]
                result = survival.restricted_mean_survival_time(
                    pair, horizon=tau, group_col="group", reference_group=reference, alpha=alpha
                )
                comparisons.append(result["comparison"])
        elif rmst["comparison"] is not None:
            comparisons.append(rmst["comparison"])
    rmst_numbers = {
        **rmst,
        "comparisons": comparisons,
        "horizon_rule": tau_rule,
        "largest_common_time": common,
        "warnings": tau_warnings,
    }

    stage("probability in remission and landmarks")
    if frame["paramcd"].iloc[0] == "TTREL":
        pir = _secondary(
            "probability in remission",
            lambda: survival.probability_in_remission(
                frame, group_col="group", horizon=tau, bootstrap=PIR_BOOTSTRAP, seed=seed, alpha=alpha
            ),
            notes,
        )
        landmarks = [
            _secondary(
                f"landmark {label}",
                lambda day=day, column=column, label=label: survival.landmark_analysis(
                    frame, landmark=day, status_col=column, label=label, alpha=alpha, ci_transform=ci_transform
                ),
                notes,
            )
            for day, column, label in zip(LANDMARK_DAYS, LANDMARK_COLUMNS, ("3 months", "6 months"), strict=True)
        ]
    else:
        reason = "defined on the time-since-infusion clock: see the time-to-relapse endpoint"
        pir = {"estimable": False, "reason": reason}
        landmarks = [{"estimable": False, "reason": reason}]

    stage("interval-censored sensitivity analysis")
    turnbull = {
        label: _secondary(
            f"Turnbull {label}", lambda part=part: survival.turnbull_npmle(part, tolerance=TURNBULL_TOLERANCE), notes
        )
        for label, part in parts.items()
    }

    return jsonable(
        {
            "n": len(frame),
            "events": int(frame["event"].sum()),
            "groups": labels,
            "times": {str(t): TIME_LABELS.get(t, f"{t:g} days") for t in DEFAULT_TIMES},
            "ci_transform_primary": ci_transform,
            "alpha": alpha,
            "horizon_days": tau,
            "axis_days": axis_days,
            "summary": {label: _group_summary(part) for label, part in parts.items()},
            "kaplan_meier": km,
            "kaplan_meier_overall": km_overall,
            "log_rank": logrank,
            "cox_dose": cox,
            "cumulative_incidence": cif,
            "rmst": rmst_numbers,
            "at_risk": {
                "days": ticks,
                "rule": "participants followed to at least that day (time ≥ t), as R survfit's n.risk",
                "kaplan_meier": _at_risk(parts, "duration", ticks),
                "cumulative_incidence": _at_risk(parts, "cr_duration", ticks),
            },
            "turnbull": turnbull,
            "probability_in_remission": pir,
            "landmarks": landmarks,
            "notes": notes,
            "versions": survival.library_versions(),
        }
    )
