"""The specification of an analysis: what a statistician asks for, normalised so that two requests
for the same analysis hash the same (every default filled in, keys sorted, numbers canonical).

A job is keyed on (data cut, :attr:`AnalysisSpec.hash`), so the hash must not depend on how the
request was spelled: ``{"grouping": "cohort"}`` and ``{"grouping": "cohort", "ci_transform": "log"}``
are the same analysis.

``horizon_days`` is the RMST horizon τ. Left out (``None``), the analysis takes the largest time every
group reaches (analytics/compute.py), so no group's RMST rests on a curve carried past its last
observation; a τ given explicitly is used as given and flagged when it lies beyond the data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from analytics.datacut import ENDPOINTS
from trials.errors import RuleViolation

GROUPINGS = {"pooled": "Pooled (all participants)", "cohort": "By dose cohort", "arm": "By randomized arm"}
CI_TRANSFORMS = {"log": "log (R survfit default)", "log-log": "log-log (lifelines default)"}
ENDPOINT_LABELS = {"time_to_relapse": "Time to relapse (ITT)", "duration_of_remission": "Duration of remission"}
HORIZON_RANGE = (30, 3650)


@dataclass(frozen=True)
class AnalysisSpec:
    endpoint: str = "time_to_relapse"
    grouping: str = "cohort"
    ci_transform: str = "log"
    horizon_days: int | None = None
    alpha: float = 0.05
    seed: int = 20240101

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _int(data: Mapping[str, Any], key: str, default: int, low: int, high: int, errors: dict) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors[key] = f"Must be a whole number from {low} to {high}."
        return default
    return value


def spec_parse(data: Mapping[str, Any]) -> AnalysisSpec:
    """Validate a requested specification; ``RuleViolation`` names each bad field, nothing is kept."""
    if not isinstance(data, Mapping):
        raise RuleViolation({"spec": "The specification must be an object."})
    errors: dict[str, str] = {}
    allowed = set(AnalysisSpec.__dataclass_fields__)
    for key in sorted(set(data) - allowed):
        errors[key] = "Unknown option."
    endpoint = data.get("endpoint", "time_to_relapse")
    if endpoint not in ENDPOINTS:
        errors["endpoint"] = f"Choose one of {', '.join(ENDPOINTS)}."
    grouping = data.get("grouping", "cohort")
    if grouping not in GROUPINGS:
        errors["grouping"] = f"Choose one of {', '.join(GROUPINGS)}."
    ci_transform = data.get("ci_transform", "log")
    if ci_transform not in CI_TRANSFORMS:
        errors["ci_transform"] = f"Choose one of {', '.join(CI_TRANSFORMS)}."
    horizon = data.get("horizon_days")
    if horizon is not None:
        horizon = _int(data, "horizon_days", HORIZON_RANGE[0], *HORIZON_RANGE, errors)
    seed = _int(data, "seed", 20240101, 0, 2**31 - 1, errors)
    alpha = data.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.001 <= alpha <= 0.2:
        errors["alpha"] = "Must be a number from 0.001 to 0.2."
        alpha = 0.05
    if errors:
        raise RuleViolation(errors)
    return AnalysisSpec(
        endpoint=endpoint,
        grouping=grouping,
        ci_transform=ci_transform,
        horizon_days=horizon,
        alpha=float(alpha),
        seed=seed,
    )
