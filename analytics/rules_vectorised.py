"""Remission per assessment for a whole frame at once: the table rules (RA indices, the ACR/EULAR
Boolean, IDAA1c and the insulin-dose rule), identical to evaluating each row with the scalar reference
:func:`analytics.derivations.in_remission`.

Identical by construction, not by luck: the scores are computed in float64, and any row whose float
result could differ from the Decimal one is handed to the scalar reference instead. That is a row

* whose inputs are not plainly valid (missing, out of range, a unit spelled other than the canonical
  way): the reference gives the precise error message;
* whose score lies within :data:`MARGIN` of a threshold (the criterion or a disease-activity
  category cut-off): float rounding cannot flip a comparison;
* whose score, stored to 4 decimal places, lies within :data:`MARGIN` of a rounding tie.

Everything else agrees with Decimal arithmetic exactly after quantising to 4 decimals, and the
property tests (tests/analytics/test_rules_vectorised.py) check it on random inputs aimed at the
boundaries. On 1.2 million RA assessments this takes about a second instead of minutes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from analytics.derivations import (
    BOOLEAN_PTGA_MAX_CM,
    CDAI_LOW_MAX,
    CDAI_MODERATE_MAX,
    CDAI_REMISSION_MAX,
    DAS28_LOW_MAX,
    DAS28_MODERATE_MAX,
    DAS28_REMISSION_BELOW,
    SDAI_LOW_MAX,
    SDAI_MODERATE_MAX,
    SDAI_REMISSION_MAX,
    NotEvaluableError,
    RemissionDefinition,
    in_remission,
)
from analytics.units import HBA1C_DCCT_OFFSET_PERCENT, HBA1C_IFCC_PER_DCCT_PERCENT, UnitError

# Far above float64 error on these magnitudes (scores < 1000: error < 1e-12), far below any clinical
# resolution (inputs have at most 2 decimals).
MARGIN = 1e-7
# Derived values are stored to this many decimals (both paths).
DECIMALS = 4
_QUANTUM = Decimal(1).scaleb(-DECIMALS)

VECTORISED_RULES = frozenset(
    {"das28_crp4", "das28_crp3", "das28_esr4", "sdai", "cdai", "acr_eular_boolean", "idaa1c", "insulin_dose_below"}
)

# The casebook's input columns of each rule (DiseaseAssessment field names).
RULE_INPUTS: Mapping[str, tuple[str, ...]] = {
    "das28_crp4": ("tender_joints_28", "swollen_joints_28", "crp", "crp_unit", "patient_global_mm"),
    "das28_crp3": ("tender_joints_28", "swollen_joints_28", "crp", "crp_unit"),
    "das28_esr4": ("tender_joints_28", "swollen_joints_28", "esr_mm_h", "patient_global_mm"),
    "sdai": ("tender_joints_28", "swollen_joints_28", "crp", "crp_unit", "patient_global_mm", "evaluator_global_mm"),
    "cdai": ("tender_joints_28", "swollen_joints_28", "patient_global_mm", "evaluator_global_mm"),
    "acr_eular_boolean": ("tender_joints_28", "swollen_joints_28", "crp", "crp_unit", "patient_global_mm"),
    "idaa1c": ("hba1c", "hba1c_unit", "insulin_u_per_kg_day"),
    "insulin_dose_below": ("insulin_u_per_kg_day",),
}
UNIT_COLUMNS = frozenset({"crp_unit", "hba1c_unit"})


def quantised(value: Any) -> Any:
    """A derived number as stored: a Decimal (or its string) to :data:`DECIMALS` places; anything
    else (a category, a date, a boolean) unchanged."""
    if isinstance(value, Decimal) and value.is_finite():
        return str(value.quantize(_QUANTUM))
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except ArithmeticError:
            return value
        if number.is_finite() and any(ch.isdigit() for ch in value) and value.strip() == value:
            return str(number.quantize(_QUANTUM))
    return value


def compact_json(key: str, criterion: str, values: Mapping[str, tuple[Any, str]]) -> str:
    """The stored derivation of one assessment: definition, comparison made, and each derived value
    with its unit (the raw inputs are not repeated: the row links to its assessment)."""
    body = {name: [quantised(value), unit] for name, (value, unit) in values.items()}
    return json.dumps({"definition": key, "criterion": criterion, "values": body}, sort_keys=True)


@dataclass(frozen=True)
class FrameOutcome:
    """Per row: evaluable (``adequate``), in remission (``status``: 1, 0, or -1 when not evaluable),
    the stored derivation (JSON text) and a note; plus how many rows went to the scalar reference."""

    adequate: np.ndarray
    status: np.ndarray
    derived: np.ndarray
    note: np.ndarray
    fallback_rows: int


ScalarEvaluate = Callable[[dict[str, Any]], tuple[bool, bool | None, str, str]]


def _fmt(values: np.ndarray) -> np.ndarray:
    """Non-negative floats as strings with :data:`DECIMALS` places (the float is already known to be
    clear of a rounding tie, so this equals Decimal quantisation of the exact score)."""
    scaled = np.rint(values * 10**DECIMALS).astype(np.int64)
    whole = (scaled // 10**DECIMALS).astype(str).astype(object)
    frac = pd.Series(scaled % 10**DECIMALS).astype(str).str.zfill(DECIMALS).to_numpy(dtype=object)
    return whole + "." + frac


def _near(values: np.ndarray, thresholds: list[float]) -> np.ndarray:
    near = np.zeros(len(values), dtype=bool)
    for threshold in thresholds:
        near |= np.abs(values - threshold) < MARGIN
    scaled = values * 10**DECIMALS
    near |= np.abs(scaled - np.floor(scaled) - 0.5) < MARGIN * 10**DECIMALS
    return near


def _category(score: np.ndarray, remission: float, low: float, moderate: float, *, strict: bool) -> np.ndarray:
    first = score < remission if strict else score <= remission
    return np.select([first, score <= low, score <= moderate], ["remission", "low", "moderate"], "high").astype(object)


class _Template:
    """The JSON text of a rule's derivation with holes for the per-row values, filled by string
    concatenation of whole columns (json.dumps per row would cost seconds per million)."""

    def __init__(self, key: str, criterion: str, names: list[tuple[str, str]]) -> None:
        holes = {name: (f"@@{i}@@", unit) for i, (name, unit) in enumerate(names)}
        text = compact_json(key, criterion, holes)
        # The holes in the order json.dumps(sort_keys=True) wrote them.
        self.order = sorted(range(len(names)), key=lambda i: text.index(f"@@{i}@@"))
        self.parts = []
        for i in self.order:
            before, text = text.split(f"@@{i}@@", 1)
            self.parts.append(before)
        self.parts.append(text)

    def fill(self, columns: list[np.ndarray]) -> np.ndarray:
        result = np.full(len(columns[0]), self.parts[0], dtype=object)
        for i, part in zip(self.order, self.parts[1:], strict=True):
            result = result + columns[i] + part
        return result


def _numbers(frame: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def _joints_ok(values: np.ndarray) -> np.ndarray:
    return np.isfinite(values) & (values >= 0) & (values <= 28) & (values == np.floor(values))


def _vas_ok(values: np.ndarray) -> np.ndarray:
    return np.isfinite(values) & (values >= 0) & (values <= 100)


def _units(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].astype(object).to_numpy()


def evaluate_frame(
    definition: RemissionDefinition, frame: pd.DataFrame, scalar: ScalarEvaluate | None = None, *, texts: bool = True
) -> FrameOutcome:
    """Evaluate ``definition`` on every row of ``frame`` (one row per assessment, the casebook's
    column names; numbers as floats or numeric strings, NaN/None/"" for missing, units as strings).

    ``scalar`` evaluates one row's inputs (``{column: value or None}``) with the reference and returns
    ``(adequate, in_remission, derived JSON, note)``; it defaults to :func:`scalar_evaluator`.
    ``texts=False`` skips the derivation text of the fast rows (an analysis needs only the statuses;
    a million JSON strings cost seconds and hundreds of MB).
    """
    if definition.rule not in VECTORISED_RULES:
        raise ValueError(f"{definition.rule} has no vectorised form")
    scalar = scalar or scalar_evaluator(definition)
    p = definition.resolved_parameters()
    key = definition.key
    n = len(frame)
    rule = definition.rule
    if rule in ("das28_crp4", "das28_crp3", "das28_esr4", "sdai", "cdai", "acr_eular_boolean"):
        tender, swollen = _numbers(frame, "tender_joints_28"), _numbers(frame, "swollen_joints_28")
        valid = _joints_ok(tender) & _joints_ok(swollen)
        if "crp" in RULE_INPUTS[rule]:
            crp, unit = _numbers(frame, "crp"), _units(frame, "crp_unit")
            valid &= np.isfinite(crp) & (crp >= 0) & np.isin(unit, ["mg/L", "mg/dL"])
            crp_mg_dl = np.where(unit == "mg/dL", crp, crp / 10)
            crp_mg_l = np.where(unit == "mg/L", crp, crp * 10)
        if "patient_global_mm" in RULE_INPUTS[rule]:
            ptga = _numbers(frame, "patient_global_mm")
            valid &= _vas_ok(ptga)
        if "evaluator_global_mm" in RULE_INPUTS[rule]:
            phga = _numbers(frame, "evaluator_global_mm")
            valid &= _vas_ok(phga)
        with np.errstate(invalid="ignore", divide="ignore"):
            if rule.startswith("das28"):
                joints = 0.56 * np.sqrt(tender) + 0.28 * np.sqrt(swollen)
                if rule == "das28_crp4":
                    score = joints + 0.36 * np.log(crp_mg_l + 1) + 0.014 * ptga + 0.96
                elif rule == "das28_crp3":
                    score = (joints + 0.36 * np.log(crp_mg_l + 1)) * 1.10 + 1.15
                else:
                    esr = _numbers(frame, "esr_mm_h")
                    valid &= np.isfinite(esr) & (esr > 0)
                    score = joints + 0.70 * np.log(esr) + 0.014 * ptga
                below = float(p["below"])
                cuts = [below, float(DAS28_REMISSION_BELOW), float(DAS28_LOW_MAX), float(DAS28_MODERATE_MAX)]
                ok = score < below
                category = _category(score, *cuts[1:], strict=True)
                criterion, names = f"{rule} < {p['below']}", [(rule, ""), (f"{rule}_category", "")]
                near, columns = _near(score, cuts), [score, category]
            elif rule in ("sdai", "cdai"):
                score = tender + swollen + ptga / 10 + phga / 10 + (crp_mg_dl if rule == "sdai" else 0.0)
                maximum = float(p["maximum"])
                bands = (
                    (SDAI_REMISSION_MAX, SDAI_LOW_MAX, SDAI_MODERATE_MAX)
                    if rule == "sdai"
                    else (CDAI_REMISSION_MAX, CDAI_LOW_MAX, CDAI_MODERATE_MAX)
                )
                cuts = [maximum, *map(float, bands)]
                ok = score <= maximum
                category = _category(score, *cuts[1:], strict=False)
                criterion, names = f"{rule} <= {p['maximum']}", [(rule, ""), (f"{rule}_category", "")]
                near, columns = _near(score, cuts), [score, category]
            else:
                limit = BOOLEAN_PTGA_MAX_CM[p["version"]]
                ptga_cm = ptga / 10
                ok = (tender <= 1) & (swollen <= 1) & (crp_mg_dl <= 1) & (ptga_cm <= float(limit))
                criterion = (
                    f"tender <= 1 and swollen <= 1 and crp_mg_dl <= 1 and patient_global_cm <= {limit} ({p['version']})"
                )
                names = [("crp_mg_dl", "mg/dL"), ("patient_global_cm", "cm")]
                near = _near(crp_mg_dl, [1.0]) | _near(ptga_cm, [float(limit)])
                columns = [crp_mg_dl, ptga_cm]
    else:
        dose = _numbers(frame, "insulin_u_per_kg_day")
        valid = np.isfinite(dose) & (dose >= 0)
        if rule == "idaa1c":
            hba1c, unit = _numbers(frame, "hba1c"), _units(frame, "hba1c_unit")
            valid &= np.isfinite(hba1c) & (hba1c >= 0) & np.isin(unit, ["%", "mmol/mol"])
            percent = np.where(
                unit == "%", hba1c, hba1c / float(HBA1C_IFCC_PER_DCCT_PERCENT) + float(HBA1C_DCCT_OFFSET_PERCENT)
            )
            value = percent + 4 * dose
            maximum = float(p["maximum"])
            ok = value <= maximum
            criterion, names = f"idaa1c <= {p['maximum']}", [("hba1c_percent", "%"), ("idaa1c", "")]
            near, columns = _near(value, [maximum]) | _near(percent, []), [percent, value]
        else:
            below = float(p["below"])
            ok = dose < below
            criterion, names = f"insulin_u_per_kg_day < {p['below']}", [("insulin_u_per_kg_day", "U/kg/day")]
            near, columns = _near(dose, [below]), [dose]

    fast = valid & ~near
    adequate = np.zeros(n, dtype=bool)
    status = np.full(n, -1, dtype=np.int8)
    derived = np.empty(n, dtype=object)
    note = np.full(n, "", dtype=object)
    if fast.any():
        index = np.flatnonzero(fast)
        adequate[index] = True
        status[index] = ok[index].astype(np.int8)
        if texts:
            values = [_fmt(c[index]) if c.dtype != object else c[index] for c in columns]
            derived[index] = _Template(key, criterion, names).fill(values)
        else:
            derived[index] = ""
    slow = np.flatnonzero(~fast)
    inputs = RULE_INPUTS[rule]
    raw = {name: frame[name].to_numpy(dtype=object) for name in inputs}
    for i in slow:
        outcome = scalar({name: _raw(raw[name][i]) for name in inputs})
        adequate[i] = outcome[0]
        status[i] = -1 if outcome[1] is None else int(outcome[1])
        derived[i] = outcome[2]
        note[i] = outcome[3]
    return FrameOutcome(adequate=adequate, status=status, derived=derived, note=note, fallback_rows=len(slow))


def _raw(value: Any) -> Any:
    """A frame cell as the reference takes it: ``None`` for missing, numbers as their shortest text."""
    if value is None or value is pd.NA or value == "":
        return None
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return value


def scalar_evaluator(definition: RemissionDefinition) -> ScalarEvaluate:
    """The reference: :func:`analytics.derivations.in_remission` on one row, as stored."""

    def evaluate(inputs: dict[str, Any]) -> tuple[bool, bool | None, str, str]:
        try:
            ok, derived = in_remission(definition, inputs)
        except (NotEvaluableError, UnitError, ValueError, TypeError) as exc:
            return False, None, json.dumps({"definition": definition.key}), f"not evaluable: {exc}"[:300]
        criterion = derived.get("in_remission", {}).get("inputs", {}).get("criterion", "")
        values = {name: (item["value"], item["unit"]) for name, item in derived.items() if name != "in_remission"}
        return True, bool(ok), compact_json(definition.key, criterion, values), ""

    return evaluate
