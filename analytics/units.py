"""Unit conversions for the disease-activity inputs of the remission definitions.

The casebook stores every measurement raw, with the unit it was entered in (``DiseaseAssessment``,
``MMTTSample``). Scores convert at the point of use, because the same analyte is wanted in different
units by different formulas (docs/domain.md §5.3 "Unit trap": CRP is mg/L in DAS28-CRP but mg/dL in SDAI
and the Boolean definition; the global assessments are 0-100 mm in DAS28 but 0-10 cm elsewhere).

All functions take and return :class:`~decimal.Decimal`. Floats are accepted and converted through
their shortest ``repr`` (so ``0.1`` becomes ``Decimal("0.1")``, not the binary expansion). Decimal
keeps threshold comparisons exact: with floats, a PtGA of 1.1 cm plus a PhGA of 2.2 cm is
3.3000000000000003, and an SDAI of exactly 3.3 would miss remission (≤ 3.3).

An unknown unit raises :class:`UnitError` (a ``ValueError``) that names the unit and the accepted ones.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import TypeAlias

Number: TypeAlias = Decimal | int | float | str

# docs/domain.md §5.2: % (DCCT/NGSP) = mmol/mol (IFCC) / 10.929 + 2.15.
HBA1C_IFCC_PER_DCCT_PERCENT = Decimal("10.929")
HBA1C_DCCT_OFFSET_PERCENT = Decimal("2.15")
# docs/domain.md §5.2: 1 ng/mL C-peptide = 0.331 nmol/L (molar mass about 3020 g/mol).
C_PEPTIDE_NMOL_L_PER_NG_ML = Decimal("0.331")
VAS_MAX_MM = Decimal("100")


class UnitError(ValueError):
    """A measurement came with a unit this conversion does not know."""

    def __init__(self, quantity: str, unit: object, accepted: tuple[str, ...]) -> None:
        super().__init__(f"Unknown {quantity} unit {unit!r}; expected one of {', '.join(accepted)}")
        self.quantity = quantity
        self.unit = unit


def to_decimal(value: Number, *, name: str = "value") -> Decimal:
    """``value`` as a finite Decimal. Booleans and non-finite numbers are rejected."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, not a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{name} is not a number: {value!r}") from None
    else:
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def non_negative(value: Number, name: str) -> Decimal:
    """``value`` as a Decimal, refusing negatives (concentrations, doses)."""
    result = to_decimal(value, name=name)
    if result < 0:
        raise ValueError(f"{name} must not be negative, got {result}")
    return result


def _unit_key(unit: object, quantity: str, accepted: dict[str, str]) -> str:
    """The canonical spelling of ``unit``; matching ignores case and surrounding spaces."""
    if isinstance(unit, str):
        canonical = accepted.get(unit.strip().lower())
        if canonical is not None:
            return canonical
    raise UnitError(quantity, unit, tuple(dict.fromkeys(accepted.values())))


# --- HbA1c (docs/domain.md §5.2) ------------------------------------------------------------------

_HBA1C_UNITS = {"%": "%", "mmol/mol": "mmol/mol"}


def hba1c_ifcc_to_dcct(mmol_per_mol: Number) -> Decimal:
    """IFCC HbA1c (mmol/mol) to DCCT/NGSP HbA1c (%): ``mmol/mol / 10.929 + 2.15`` (docs/domain.md §5.2)."""
    return non_negative(mmol_per_mol, "HbA1c") / HBA1C_IFCC_PER_DCCT_PERCENT + HBA1C_DCCT_OFFSET_PERCENT


def hba1c_dcct_to_ifcc(percent: Number) -> Decimal:
    """DCCT/NGSP HbA1c (%) to IFCC HbA1c (mmol/mol): the inverse of :func:`hba1c_ifcc_to_dcct`."""
    return (non_negative(percent, "HbA1c") - HBA1C_DCCT_OFFSET_PERCENT) * HBA1C_IFCC_PER_DCCT_PERCENT


def hba1c_percent(value: Number, unit: str) -> Decimal:
    """HbA1c in DCCT % from a value stored as ``'%'`` or ``'mmol/mol'``. IDAA1c needs % (§5.2)."""
    if _unit_key(unit, "HbA1c", _HBA1C_UNITS) == "%":
        return non_negative(value, "HbA1c")
    return hba1c_ifcc_to_dcct(value)


# --- C-peptide (docs/domain.md §5.2) --------------------------------------------------------------

# pmol/mL is the same concentration as nmol/L (docs/domain.md §5.2 reports mean AUC "in nmol/L (or pmol/mL)").
_C_PEPTIDE_UNITS = {"nmol/l": "nmol/L", "pmol/ml": "nmol/L", "pmol/l": "pmol/L", "ng/ml": "ng/mL"}
_C_PEPTIDE_NMOL_L_PER_UNIT = {"nmol/L": Decimal(1), "pmol/L": Decimal("0.001"), "ng/mL": C_PEPTIDE_NMOL_L_PER_NG_ML}


def c_peptide_nmol_l(value: Number, unit: str) -> Decimal:
    """C-peptide in nmol/L from nmol/L (= pmol/mL), pmol/L (÷1000) or ng/mL (×0.331) (§5.2)."""
    factor = _C_PEPTIDE_NMOL_L_PER_UNIT[_unit_key(unit, "C-peptide", _C_PEPTIDE_UNITS)]
    return non_negative(value, "C-peptide") * factor


def c_peptide_from_nmol_l(nmol_per_l: Number, unit: str) -> Decimal:
    """C-peptide expressed in ``unit`` from nmol/L: the inverse of :func:`c_peptide_nmol_l`."""
    factor = _C_PEPTIDE_NMOL_L_PER_UNIT[_unit_key(unit, "C-peptide", _C_PEPTIDE_UNITS)]
    return non_negative(nmol_per_l, "C-peptide") / factor


# --- CRP (docs/domain.md §5.3) --------------------------------------------------------------------

_CRP_UNITS = {"mg/l": "mg/L", "mg/dl": "mg/dL"}


def crp_mg_l(value: Number, unit: str) -> Decimal:
    """CRP in mg/L (the DAS28-CRP unit) from mg/L or mg/dL (1 mg/dL = 10 mg/L)."""
    crp = non_negative(value, "CRP")
    return crp if _unit_key(unit, "CRP", _CRP_UNITS) == "mg/L" else crp * 10


def crp_mg_dl(value: Number, unit: str) -> Decimal:
    """CRP in mg/dL (the SDAI and ACR/EULAR Boolean unit) from mg/L or mg/dL."""
    crp = non_negative(value, "CRP")
    return crp if _unit_key(unit, "CRP", _CRP_UNITS) == "mg/dL" else crp / 10


# --- Visual analogue scales (docs/domain.md §5.3) ---------------------------------------------------

_VAS_UNITS = {"mm": "mm", "cm": "cm"}


def vas_mm(value: Number, unit: str) -> Decimal:
    """A 0-100 mm VAS (the DAS28 'GH' unit) from mm or cm; outside 0-100 mm raises ``ValueError``."""
    raw = to_decimal(value, name="VAS")
    mm = raw if _unit_key(unit, "VAS", _VAS_UNITS) == "mm" else raw * 10
    if not Decimal(0) <= mm <= VAS_MAX_MM:
        raise ValueError(f"VAS must lie within 0-100 mm (0-10 cm), got {raw} {unit}")
    return mm


def vas_cm(value: Number, unit: str) -> Decimal:
    """A 0-10 cm VAS (the SDAI, CDAI and Boolean unit) from mm or cm."""
    return vas_mm(value, unit) / 10
