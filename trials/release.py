"""Product release criteria of the study build, checked at infusion (pure: no database).

The study sets them (minimum viability, maximum endotoxin); the coordinator records what the
certificate of analysis says. A product outside the criteria may still have been given (an
out-of-specification product released exceptionally by the treating physician), so it is not
refused outright: the coordinator must confirm it, and it becomes a protocol deviation.
"""

from __future__ import annotations

from decimal import Decimal


def release_problems(*, study, cohort, viability_pct: Decimal | None, endotoxin_eu_per_kg: Decimal | None) -> list[str]:
    """How the product falls outside the study's release criteria (empty: inside them)."""
    problems = []
    minimum = study.release_min_viability_pct
    if minimum is not None and not cohort.is_placebo and viability_pct is not None and viability_pct < minimum:
        problems.append(f"Viability {viability_pct}% is below the release minimum of {minimum}%.")
    maximum = study.release_max_endotoxin_eu_per_kg
    if maximum is not None:
        if endotoxin_eu_per_kg is None:
            problems.append(f"No endotoxin result was recorded; the release criteria allow at most {maximum} EU/kg.")
        elif endotoxin_eu_per_kg > maximum:
            problems.append(f"Endotoxin {endotoxin_eu_per_kg} EU/kg is above the release maximum of {maximum} EU/kg.")
    return problems
