"""Dose cohorts as the safety pages see them: dose-escalation steps, expansion cohorts and placebo.

A 3+3 escalation step holds at most 6 evaluable participants (docs/domain.md §3.7). A cohort planned
for more than that (its capacity), or already holding more, is an expansion cohort: it is shown with
its DLT rate, never run through the 3+3 rules. A cohort whose planned dose is zero cells is a
placebo cohort: it is no dose level at all, so it is left out of the escalation sequence and of the
pooled stopping rule, and no dose arithmetic is done on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Any

from safety.rules_data import get_rules
from trials.models import DoseCohort

_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


class CohortKind(StrEnum):
    ESCALATION = "escalation"
    EXPANSION = "expansion"
    PLACEBO = "placebo"


def is_placebo(cohort: DoseCohort) -> bool:
    """The planned dose is zero cells (the study build's own definition)."""
    return cohort.is_placebo


def cohort_kind(cohort: DoseCohort, *, treated: int = 0, rules: Mapping[str, Any] | None = None) -> CohortKind:
    if is_placebo(cohort):
        return CohortKind.PLACEBO
    step = (rules or get_rules("three_plus_three"))["expanded_size"]
    if cohort.capacity > step or treated > step:
        return CohortKind.EXPANSION
    return CohortKind.ESCALATION


def cells_text(value: Decimal | int) -> str:
    """A cell count in engineering notation: 20000000 -> "20 × 10⁶", 2600000000 -> "2.6 × 10⁹"."""
    value = Decimal(value)
    if value == 0:
        return "0"
    exponent = value.adjusted() - value.adjusted() % 3
    if exponent <= 0:
        return f"{value.normalize():f}"
    mantissa = value.scaleb(-exponent).normalize()
    return f"{mantissa:f} × 10{str(exponent).translate(_SUPERSCRIPT)}"


def dose_text(cohort: DoseCohort) -> str:
    """The planned dose in words: "20 × 10⁶/kg", "2.6 × 10⁹ total", or "placebo"."""
    if is_placebo(cohort):
        return "placebo"
    if cohort.planned_cells_per_kg is not None:
        return f"{cells_text(cohort.planned_cells_per_kg)}/kg"
    return f"{cells_text(cohort.planned_total_cells)} total"


def cohort_label(cohort: DoseCohort) -> str:
    """How tables name a cohort: "Cohort 2 (IV 20 × 10⁶/kg)"; a placebo cohort always says so."""
    label = cohort.label
    if is_placebo(cohort) and "placebo" not in label.lower():
        label = f"{label}, placebo" if label else "Placebo"
    return f"Cohort {cohort.number} ({label})"


def cohort_dose_name(cohort: DoseCohort) -> str:
    """How a decision names a cohort: "cohort 2 (20 × 10⁶/kg)"."""
    return f"cohort {cohort.number} ({dose_text(cohort)})"
