"""Dose-limiting toxicity: the per-study definition as versioned data, and the evaluation of one
participant's events against it (docs/domain.md §3.6). Pure functions over plain values; the
selectors feed them database rows and the SRC's adjudications.

Day 0 is the infusion day; the DLT window is Day 0 to Day ``window_days`` inclusive. An event whose
partial onset date may fall in the window counts (conservative: a possible DLT is never hidden), and
so does a grade >= threshold event whose investigator causality is still pending.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from safety.ae_rules import PartialDate
from safety.rules_data import InputError, get_rules

# docs/domain.md §3.6 typical cell-therapy definition: related grade >= 3 AE in the window, grade >= 3
# CRS, grade >= 2 ICANS, any related SAE. ``None`` switches a criterion off. The config is stored
# with each definition and may be shown to users, so it carries no document citation.
DEFAULT_DLT_CONFIG: dict[str, Any] = {
    "window_days": None,  # None: the study's dlt_window_days
    "related_grade_min": 3,
    "related_to": ["product"],  # causality targets that make an AE "related": product, leukapheresis, procedures
    "crs_grade_min": 3,
    "icans_grade_min": 2,
    "infusion_reaction_grade_min": None,
    "any_related_sae": True,
    "stopping_rule": {
        key: get_rules("bayes_stopping")[key] for key in ("prior_a", "prior_b", "theta0", "cutoff", "max_n")
    },
}

_TARGETS = ("product", "leukapheresis", "procedures")
_GRADE_KEYS = ("related_grade_min", "crs_grade_min", "icans_grade_min", "infusion_reaction_grade_min")


def validate_dlt_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with defaults filled in; ``InputError`` naming the key for anything malformed."""
    if not isinstance(config, Mapping):
        raise InputError("config", "The DLT definition must be a JSON object.")
    # Definitions stored by earlier versions carried a document citation under "source": dropped.
    config = {key: value for key, value in config.items() if key != "source"}
    unknown = set(config) - set(DEFAULT_DLT_CONFIG)
    if unknown:
        raise InputError("config", f"Unknown key(s): {', '.join(sorted(unknown))}.")
    merged = {**DEFAULT_DLT_CONFIG, **config}
    for key in _GRADE_KEYS:
        value = merged[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5):
            raise InputError(key, "A grade threshold is a whole number from 1 to 5, or null to switch it off.")
    window = merged["window_days"]
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 365):
        raise InputError("window_days", "The DLT window is a whole number of days from 1 to 365, or null.")
    targets = merged["related_to"]
    if not isinstance(targets, list | tuple) or not targets or any(t not in _TARGETS for t in targets):
        raise InputError("related_to", f"Choose one or more of: {', '.join(_TARGETS)}.")
    if not isinstance(merged["any_related_sae"], bool):
        raise InputError("any_related_sae", "Expected true or false.")
    rule = merged["stopping_rule"]
    if not isinstance(rule, Mapping) or set(rule) != set(DEFAULT_DLT_CONFIG["stopping_rule"]):
        raise InputError("stopping_rule", "Give prior_a, prior_b, theta0, cutoff and max_n.")
    from safety.escalation import BetaBinomialRule

    BetaBinomialRule(**rule)  # raises InputError naming the bad parameter
    merged["related_to"] = list(targets)
    merged["stopping_rule"] = dict(rule)
    return merged


def describe_dlt_config(config: Mapping[str, Any], window_days: int) -> list[str]:
    """The definition in words, for the escalation page and the SRC."""
    window = config.get("window_days") or window_days
    lines = [f"Window: Day 0 (infusion) to Day {window}."]
    targets = ", ".join(config["related_to"])
    if config.get("related_grade_min"):
        lines.append(f"Any AE of grade >= {config['related_grade_min']} at least possibly related to: {targets}.")
    if config.get("crs_grade_min"):
        lines.append(f"CRS of grade >= {config['crs_grade_min']}.")
    if config.get("icans_grade_min"):
        lines.append(f"ICANS of grade >= {config['icans_grade_min']}.")
    if config.get("infusion_reaction_grade_min"):
        lines.append(f"Infusion reaction of grade >= {config['infusion_reaction_grade_min']}.")
    if config.get("any_related_sae"):
        lines.append(f"Any serious AE at least possibly related to: {targets}.")
    return lines


@dataclass(frozen=True)
class DLTEvent:
    """The fields of one (non-voided) AE that the definition reads."""

    adverse_event_id: int
    label: str
    category: str  # AECategory value
    grade: int
    serious: bool
    onset: str
    related: Mapping[str, bool | None]  # target -> related (None: causality not yet assessed)


@dataclass(frozen=True)
class DLTCandidate:
    adverse_event_id: int
    label: str
    reasons: tuple[str, ...]
    causality_pending: bool


class DLTState(StrEnum):
    NOT_TREATED = "not_treated"
    IN_WINDOW = "in_window"  # still being observed
    EVALUABLE = "evaluable"
    NOT_EVALUABLE = "not_evaluable"  # left the window early for a non-DLT reason: replace


@dataclass(frozen=True)
class ParticipantDLT:
    state: DLTState
    is_dlt: bool
    window_start: dt.date | None
    window_end: dt.date | None
    candidates: tuple[DLTCandidate, ...] = ()
    adjudicated: bool = False
    reason: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def evaluable(self) -> bool:
        return self.state is DLTState.EVALUABLE

    @property
    def provisional(self) -> bool:
        """A system-detected DLT the safety review committee has not adjudicated yet."""
        return self.is_dlt and not self.adjudicated


def _in_window(onset: str, start: dt.date, end: dt.date) -> bool:
    """The (partial) onset may fall inside [start, end]."""
    try:
        date = PartialDate.parse(onset)
    except InputError:
        return False
    return date.earliest() <= end and date.latest() >= start


def dlt_candidates(
    events: Sequence[DLTEvent], *, config: Mapping[str, Any], infusion_date: dt.date, window_days: int
) -> list[DLTCandidate]:
    """The events that meet the DLT definition inside the window."""
    window = config.get("window_days") or window_days
    end = infusion_date + dt.timedelta(days=window)
    targets = config["related_to"]
    found = []
    for event in events:
        if not _in_window(event.onset, infusion_date, end):
            continue
        relatedness = [event.related.get(target) for target in targets]
        related = any(value is True for value in relatedness)
        pending = not related and any(value is None for value in relatedness)
        reasons = []
        threshold = config.get("related_grade_min")
        if threshold and event.grade >= threshold and (related or pending):
            reasons.append(f"grade {event.grade} {'causality pending' if pending else 'related'}")
        for category, key, label in (
            ("CRS", "crs_grade_min", "CRS"),
            ("ICANS", "icans_grade_min", "ICANS"),
            ("INFUSION REACTION", "infusion_reaction_grade_min", "infusion reaction"),
        ):
            threshold = config.get(key)
            if threshold and event.category == category and event.grade >= threshold:
                reasons.append(f"grade {event.grade} {label} (>= {threshold})")
        if config.get("any_related_sae") and event.serious and (related or pending):
            reasons.append("serious, " + ("causality pending" if pending else "related"))
        if reasons:
            found.append(DLTCandidate(event.adverse_event_id, event.label, tuple(reasons), pending))
    return found


def evaluate_participant(
    events: Sequence[DLTEvent],
    *,
    config: Mapping[str, Any],
    infusion_date: dt.date | None,
    window_days: int,
    today: dt.date,
    left_study_on: dt.date | None = None,
) -> ParticipantDLT:
    """The participant's DLT state from their events (before any SRC adjudication).

    Evaluable: had a DLT in the window, or completed the window without one. Not evaluable: left the
    study inside the window without a DLT (to be replaced, docs/domain.md §3.6). Otherwise still in window.
    """
    if infusion_date is None:
        return ParticipantDLT(DLTState.NOT_TREATED, False, None, None, reason="not infused")
    window = config.get("window_days") or window_days
    end = infusion_date + dt.timedelta(days=window)
    candidates = tuple(dlt_candidates(events, config=config, infusion_date=infusion_date, window_days=window_days))
    if candidates:
        return ParticipantDLT(
            DLTState.EVALUABLE, True, infusion_date, end, candidates, reason="DLT detected (not yet adjudicated)"
        )
    if left_study_on is not None and left_study_on < end:
        return ParticipantDLT(
            DLTState.NOT_EVALUABLE,
            False,
            infusion_date,
            end,
            reason=f"left the study on {left_study_on:%Y-%m-%d}, inside the DLT window, without a DLT",
        )
    if today > end:
        return ParticipantDLT(DLTState.EVALUABLE, False, infusion_date, end, reason="completed the DLT window")
    return ParticipantDLT(
        DLTState.IN_WINDOW, False, infusion_date, end, reason=f"in the DLT window until {end:%Y-%m-%d}"
    )
