"""How the durability pages show a definition and a result, as a statistician reads them: p-values
below 0.0001 as "p < 0.0001" (the exact value on hover and in the API), medians rounded, estimates
past a group's last observation as "not estimable", the remission rule and SAP options in words.

Pure functions of stored rows and numbers (no queries); the views pass their output to templates.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.utils.html import format_html

from analytics.compute import TIME_LABELS
from analytics.datacut import sap_options
from analytics.derivations import (
    MissingVisitPolicy,
    NonResponderPolicy,
    RemissionDefinition,
    RescueStrategy,
    rule_description,
)
from analytics.models import AnalysisJob, RemissionDefinitionConfig
from analytics.spec import CI_TRANSFORMS, ENDPOINT_LABELS, GROUPINGS

NOT_ESTIMABLE = "not estimable"
P_FLOOR = 1e-4

# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def days(value: float | None, *, missing: str = "not reached") -> str:
    """A time in days, to one decimal at most (316.6875 → "316.7", 394.0 → "394")."""
    if value is None:
        return missing
    text = f"{round(float(value), 1):.1f}"
    return text[:-2] if text.endswith(".0") else text


def p_text(value: float | None) -> str:
    """ "< 0.0001" below the floor, four decimals under 0.001, three otherwise."""
    if value is None or not math.isfinite(value):
        return "NE"
    if value < P_FLOOR:
        return "< 0.0001"
    return f"{value:.4f}" if value < 0.001 else f"{value:.3f}"


def p_html(value: float | None) -> str:
    """``p = 0.034`` or ``p < 0.0001``, with the exact value in the title (shown on hover)."""
    text = p_text(value)
    if text == "NE":
        return "p not estimable"
    shown = f"p {text}" if text.startswith("<") else f"p = {text}"
    return format_html('<span class="p-value" title="exact p = {}">{}</span>', f"{value:.4g}", shown)


def _num(value: float | None, digits: int = 3) -> str:
    return "NE" if value is None else f"{value:.{digits}f}"


def _ci(interval: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not interval or interval.get("lower") is None or interval.get("upper") is None:
        return "NE"
    return f"{interval['lower']:.{digits}f} – {interval['upper']:.{digits}f}"


def _label(time: float) -> str:
    return TIME_LABELS.get(time, f"{time:g} d")


def beyond(time: float, last: float | None, value: float | None) -> bool:
    """An estimate at ``time`` is not estimable past the group's last observation, unless the curve
    had already reached 0 there (nobody left event-free: 0 stays 0). Times are recorded in whole
    days, so 24 months (730.5 days) is within a follow-up that ends on day 730."""
    if last is None or value is None:
        return False
    return math.floor(time) > last and value > 0


def _last_km_time(group: Mapping[str, Any]) -> float | None:
    table = group.get("table") or []
    return table[-1]["time"] if table else None


def _last(numbers: Mapping[str, Any], label: str, key: str, km_group: Mapping[str, Any] | None) -> float | None:
    """The group's last observation (stored since the display fix; older results: the KM table's end)."""
    summary = (numbers.get("summary") or {}).get(label) or {}
    if summary.get(key) is not None:
        return summary[key]
    return _last_km_time(km_group) if km_group else None


# ---------------------------------------------------------------------------------------------
# The remission definition and SAP options in words
# ---------------------------------------------------------------------------------------------

_NON_RESPONDERS = {
    NonResponderPolicy.CENSOR: "censored at their last adequate assessment",
    NonResponderPolicy.EVENT_AT_FIRST_ASSESSMENT: "an event at their first adequate assessment",
    NonResponderPolicy.EVENT_AT_ORIGIN: "an event on day 0 (induction failure)",
    NonResponderPolicy.EXCLUDE: "left out of time to relapse",
}
_MISSING = {
    MissingVisitPolicy.IGNORE: "skipped (the episode continues)",
    MissingVisitPolicy.NOT_IN_REMISSION: "counted as not in remission",
}
_RESCUE = {
    RescueStrategy.EVENT: "ends remission: an event (composite strategy)",
    RescueStrategy.COMPETING: "a competing event; censored for Kaplan–Meier (while-on-treatment strategy)",
    RescueStrategy.CENSOR: "ends follow-up: censored (hypothetical strategy)",
    RescueStrategy.IGNORE: "ignored: later assessments count as any other (treatment-policy strategy)",
}


def _confirmation(confirm: bool, min_days: int, what: str) -> str:
    if not confirm:
        return f"the first visit {what}, unconfirmed"
    return f"confirmed by a later visit at least {min_days} days after" if min_days else "confirmed by the next visit"


def definition_view(config: RemissionDefinitionConfig, indication: str) -> dict[str, Any]:
    """The rule in words with its thresholds, and the SAP options as labelled sentences."""
    definition = RemissionDefinition(indication, config.name, str(config.version), config.rule, dict(config.parameters))
    given = set(config.parameters)
    parameters = [
        {
            "name": name.replace("_", " "),
            "value": "none" if value is None else ("yes" if value is True else "no" if value is False else str(value)),
            "default": name not in given,
        }
        for name, value in definition.resolved_parameters().items()
    ]
    sap = sap_options(config.sap)
    rules, episodes = sap.rules, sap.rules.episodes
    options = [
        ("Never in remission", _NON_RESPONDERS[rules.non_responders]),
        (
            "Remission onset",
            _confirmation(episodes.confirm_onset, episodes.onset_confirmation_min_days, "in remission"),
        ),
        ("Loss of remission", _confirmation(episodes.confirm_loss, episodes.loss_confirmation_min_days, "out of it")),
        ("Missed or non-evaluable visits", _MISSING[episodes.missing_visits]),
        (
            "Event after missed visits",
            f"censored at the last adequate assessment after {rules.missed_visits_censor_threshold} or more "
            "missed visits in a row",
        ),
        ("Rescue therapy", _RESCUE[rules.rescue]),
        (
            "Death (time to relapse)",
            "an event" if rules.death_is_event else "a competing event, censored for Kaplan–Meier",
        ),
        ("Retreatment", "an event" if rules.retreatment_is_event else "a competing event, censored for Kaplan–Meier"),
        ("Death (duration of remission)", "ends remission: an event" if sap.dor_death_is_event else "censored"),
    ]
    if indication == "MS":
        options.append(("NEDA window", f"{sap.neda_window_days} days"))
        rebaseline = sap.mri_rebaseline_day
        options.append(("MRI re-baseline", "none" if rebaseline is None else f"day {rebaseline}"))
    return {
        "rule": config.rule,
        "rule_text": rule_description(config.rule),
        "parameters": parameters,
        "sap": [{"label": label, "value": value} for label, value in options],
    }


# ---------------------------------------------------------------------------------------------
# A result
# ---------------------------------------------------------------------------------------------


def _km_rows(numbers: Mapping[str, Any], primary: str, other: str) -> list[dict[str, Any]]:
    key = {"log": "ci_log", "log-log": "ci_log_log"}
    rows = []
    for group in numbers["kaplan_meier"]["groups"]:
        label = group["group"]
        last = _last(numbers, label, "last_observation_days", group)
        median = group["median"]
        cells = []
        for at in group["survival_at"]:
            if beyond(at["time"], last, at["survival"]):
                cells.append({"label": _label(at["time"]), "ne": True, "last": days(last)})
                continue
            cells.append(
                {
                    "label": _label(at["time"]),
                    "survival": _num(at["survival"]),
                    "ci": _ci(at[key[primary]]),
                    "ci_other": _ci(at[key[other]]),
                    "n_risk": at["n_risk"],
                }
            )
        rows.append(
            {
                "group": label,
                "n": group["n"],
                "events": group["events"],
                "last": days(last, missing="—"),
                "median": days(median["median"]),
                "median_ci": " – ".join(days(median[key[primary]][side]) for side in ("lower", "upper")),
                "median_ci_other": " – ".join(days(median[key[other]][side]) for side in ("lower", "upper")),
                "at": cells,
            }
        )
    return rows


def _cif_rows(numbers: Mapping[str, Any], km_groups: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    # jsonb does not keep key order: groups are shown in label order.
    for label, cif in sorted(numbers["cumulative_incidence"].items()):
        if cif.get("estimable") is False:
            rows.append({"group": label, "reason": cif["reason"]})
            continue
        last = _last(numbers, label, "last_observation_cr_days", km_groups.get(label))
        cells = []
        for at in cif["at_times"]:
            # A cumulative incidence past the last observation is as unknown as a survival there.
            if beyond(at["time"], last, 1.0):
                cells.append({"label": _label(at["time"]), "ne": True, "last": days(last)})
            else:
                cells.append(
                    {
                        "label": _label(at["time"]),
                        "cif": _num(at["cif"]),
                        "ci": _ci(at["ci"]),
                        "naive": _num(at["naive_one_minus_km"]),
                    }
                )
        rows.append({"group": label, "at": cells})
    return rows


def _turnbull_rows(numbers: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for label, fit in sorted(numbers["turnbull"].items()):
        if fit.get("estimable") is False:
            rows.append({"group": label, "reason": fit["reason"]})
            continue
        rows.append(
            {
                "group": label,
                "median": f"{days(fit['median']['lower'])} – {days(fit['median']['upper'])}",
                "at": [
                    {"label": _label(at["time"]), "range": f"{at['survival_lower']:.3f} – {at['survival_upper']:.3f}"}
                    for at in fit["survival_at"]
                ],
            }
        )
    return rows


def _pir_rows(numbers: Mapping[str, Any], km_groups: Mapping[str, Any]) -> list[dict[str, Any]]:
    pir = numbers.get("probability_in_remission") or {}
    rows = []
    for group in pir.get("groups") or []:
        label = group["group"] or "All participants"
        last = _last(numbers, label, "last_observation_days", km_groups.get(label))
        cells = [
            {"ne": True, "last": days(last)} if beyond(at["time"], last, 1.0) else {"value": _num(at["in_remission"])}
            for at in group["at_times"]
        ]
        rows.append(
            {
                "group": label,
                "n": group["n"],
                "entered": group["entered_remission"],
                "left": group["left_remission"],
                "at": cells,
                "mean": days(group["mean_time_in_remission"], missing="NE"),
                "mean_se": days(group["mean_time_se"], missing="NE"),
                "mean_ci": f"{days(group['mean_time_ci']['lower'], missing='NE')} – "
                f"{days(group['mean_time_ci']['upper'], missing='NE')}",
            }
        )
    return rows


def _landmark_rows(numbers: Mapping[str, Any]) -> list[dict[str, Any]]:
    landmarks = []
    for lm in numbers.get("landmarks") or []:
        if not lm.get("kaplan_meier"):
            landmarks.append({"label": lm.get("label") or "—", "reason": lm.get("reason") or "No participant at risk."})
            continue
        groups = []
        for group in lm["kaplan_meier"]["groups"]:
            at = group["survival_at"][1] if len(group["survival_at"]) > 1 else None
            last = _last_km_time(group)
            if at is None or beyond(at["time"], last, at["survival"]):
                later = NOT_ESTIMABLE
            else:
                later = _num(at["survival"])
            groups.append(
                {
                    "group": group["group"],
                    "n": group["n"],
                    "events": group["events"],
                    "median": days(group["median"]["median"]),
                    "later": later,
                }
            )
        log_rank = lm.get("log_rank") or {}
        landmarks.append(
            {
                "label": lm["label"],
                "groups": groups,
                "log_rank": log_rank,
                "log_rank_p": p_html(log_rank.get("p_value")) if log_rank.get("statistic") is not None else "",
                "excluded_event_before": lm["excluded_event_before"],
                "excluded_censored_before": lm["excluded_censored_before"],
            }
        )
    return landmarks


def _rmst_view(numbers: Mapping[str, Any]) -> dict[str, Any]:
    rmst = numbers["rmst"]
    if rmst.get("estimable") is False:
        return {"reason": rmst["reason"], "horizon": days(rmst.get("horizon"))}
    return {
        "horizon": days(rmst["horizon"]),
        # Results stored before τ defaulted to the data had no rule: they used the requested 730 days.
        "rule": rmst.get("horizon_rule", "requested in the analysis"),
        "common": days(rmst.get("largest_common_time"), missing=""),
        "warnings": rmst.get("warnings") or [],
        "groups": [
            {
                "group": g["group"],
                "rmst": days(g["rmst"]),
                "se": days(g["se"]),
                "ci": f"{days(g['ci']['lower'])} – {days(g['ci']['upper'])}",
                "beyond": g.get("horizon_beyond_last_observation", False),
            }
            for g in rmst["groups"]
        ],
        "comparisons": [
            {
                "contrast": c["contrast"],
                "difference": days(c["difference"]),
                "se": days(c["difference_se"]),
                "ci": f"{days(c['difference_ci']['lower'])} – {days(c['difference_ci']['upper'])}",
                "p": p_html(c["p_value"]),
            }
            for c in rmst.get("comparisons") or []
            if c
        ],
    }


def _cox_view(numbers: Mapping[str, Any]) -> dict[str, Any]:
    cox = numbers["cox_dose"]
    if not cox.get("coefficients"):
        return {"reason": cox.get("reason", "not estimated")}
    c = cox["coefficients"][0]
    ph = (cox.get("proportional_hazards") or {}).get("tests") or []
    return {
        "hr": f"{c['hazard_ratio']:.3f}",
        "ci": _ci(c["hazard_ratio_ci"]),
        "p": p_html(c["p_value"]),
        "ph_p": p_html(ph[0]["p_value"]) if ph else "",
        "placebo_left_out": cox.get("placebo_left_out", 0),
    }


def svg_data_uri(markup: str) -> str:
    """A plot as an ``<img>`` source: the page's Content-Security-Policy refuses the style attributes
    and ``<style>`` element of matplotlib's SVG inline, but not inside an image."""
    if not markup:
        return ""
    return "data:image/svg+xml;base64," + base64.b64encode(markup.encode()).decode("ascii")


def result_view(job: AnalysisJob) -> dict[str, Any]:
    """Everything the result partial shows, from the stored result."""
    result = job.result
    numbers = result.numbers
    primary = numbers["ci_transform_primary"]
    other = "log-log" if primary == "log" else "log"
    km_groups = {g["group"]: g for g in numbers["kaplan_meier"]["groups"]}
    log_rank = numbers["log_rank"]
    return {
        "job": job,
        "result": result,
        "numbers": numbers,
        "spec": {
            "endpoint": ENDPOINT_LABELS.get(job.spec.get("endpoint"), job.spec.get("endpoint")),
            "grouping": GROUPINGS.get(job.spec.get("grouping"), job.spec.get("grouping")),
            "ci_transform": CI_TRANSFORMS.get(primary, primary),
            "other_ci": other,
        },
        "plots": {
            "km": svg_data_uri(result.km_svg),
            "cif": svg_data_uri(result.cif_svg),
            "pir": svg_data_uri(result.pir_svg),
        },
        "km_rows": _km_rows(numbers, primary, other),
        "cif_rows": _cif_rows(numbers, km_groups),
        "turnbull_rows": _turnbull_rows(numbers),
        "pir_rows": _pir_rows(numbers, km_groups),
        "pir_reason": (numbers.get("probability_in_remission") or {}).get("reason", ""),
        "landmarks": _landmark_rows(numbers),
        "log_rank": {
            "statistic": f"{log_rank['statistic']:.3f}",
            "df": log_rank["df"],
            "p": p_html(log_rank["p_value"]),
        }
        if log_rank.get("statistic") is not None
        else {"reason": log_rank.get("reason", "not estimated")},
        "cox": _cox_view(numbers),
        "rmst": _rmst_view(numbers),
        "at_risk": numbers.get("at_risk"),
        "summary": sorted(numbers["summary"].items()),
        "times": [_label(t["time"]) for t in numbers["kaplan_meier"]["groups"][0]["survival_at"]],
    }


def job_warning(job: AnalysisJob) -> str:
    """What a user should know about an active job beyond its progress: its message is waiting for
    an unreachable task queue, or its worker has stopped reporting."""
    if job.status == AnalysisJob.Status.QUEUED and getattr(job, "waiting_for_queue", False):
        return "Waiting for the task queue, which is unreachable: the analysis starts as soon as it is back."
    silent = job.silent_for
    if job.is_stalled and silent is not None:
        minutes = max(1, round(silent.total_seconds() / 60))
        bound = max(1, round(settings.TOLERANCE_JOB_STALE_SECONDS / 60))
        return (
            f"No progress since {job.heartbeat_at:%H:%M:%S} UTC ({minutes} min): the worker running it may "
            f"have stopped. The analysis is queued again automatically after {bound} min without progress."
        )
    return ""


def job_row(job: AnalysisJob) -> dict[str, Any]:
    spec = job.spec
    return {
        "job": job,
        "endpoint": ENDPOINT_LABELS.get(spec.get("endpoint"), spec.get("endpoint")),
        "grouping": GROUPINGS.get(spec.get("grouping"), spec.get("grouping")),
        "ci_transform": spec.get("ci_transform"),
        "warning": job_warning(job) if job.is_active else "",
    }


def timeline_row(participant: Mapping[str, Any]) -> dict[str, Any]:
    """One participant's assessments in date order, each a chip: in remission, not, or not evaluable."""
    cells = []
    for a in participant["assessments"]:
        css = "na" if not a["adequate"] else ("in" if a["in_remission"] else "out")
        title = f"{a['visit_date']:%Y-%m-%d}" + (f": {a['note']}" if a["note"] else "")
        cells.append({"css": css, "day": a["study_day"], "title": title})
    return {"subject_code": participant["subject_code"], "cells": cells}
