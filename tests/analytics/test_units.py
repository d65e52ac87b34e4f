"""Unit conversions (analytics/units.py; docs/domain.md §5.2, §5.3)."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics import units

# Concentrations as a lab would report them: non-negative, three decimals.
concentrations = st.decimals(min_value=0, max_value=10_000, places=3, allow_nan=False, allow_infinity=False)
hba1c_percents = st.decimals(min_value="2.15", max_value=20, places=2, allow_nan=False, allow_infinity=False)
vas_mms = st.decimals(min_value=0, max_value=100, places=1, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(
    ("mmol_per_mol", "percent"),
    # The NGSP/IFCC equivalence table every diabetes lab prints (DCCT % to one decimal).
    [(42, "6.0"), (48, "6.5"), (53, "7.0"), (58, "7.5"), (64, "8.0"), (75, "9.0"), (86, "10.0")],
)
def test_ifcc_hba1c_converts_to_the_published_dcct_equivalents(mmol_per_mol, percent):
    converted = units.hba1c_percent(mmol_per_mol, "mmol/mol")
    assert converted.quantize(Decimal("0.1")) == Decimal(percent)


def test_hba1c_conversion_is_the_domain_formula():
    # docs/domain.md §5.2: % = mmol/mol / 10.929 + 2.15
    assert units.hba1c_ifcc_to_dcct(53) == Decimal(53) / Decimal("10.929") + Decimal("2.15")
    assert units.hba1c_percent("7.1", "%") == Decimal("7.1")


@given(hba1c_percents)
def test_hba1c_round_trips_through_ifcc(percent):
    back = units.hba1c_ifcc_to_dcct(units.hba1c_dcct_to_ifcc(percent))
    assert abs(back - percent) < Decimal("1e-20")


@given(concentrations, concentrations)
def test_hba1c_conversion_is_increasing(a, b):
    if a < b:
        assert units.hba1c_ifcc_to_dcct(a) < units.hba1c_ifcc_to_dcct(b)


def test_c_peptide_units_convert_to_nmol_per_litre():
    assert units.c_peptide_nmol_l(1, "ng/mL") == Decimal("0.331")  # docs/domain.md §5.2
    assert units.c_peptide_nmol_l(300, "pmol/L") == Decimal("0.3")  # the IDAA1c ≤ 9 equivalent, 300 pmol/L
    assert units.c_peptide_nmol_l("0.2", "nmol/L") == Decimal("0.2")
    assert units.c_peptide_nmol_l("0.2", "pmol/mL") == Decimal("0.2")


@pytest.mark.parametrize("unit", ["nmol/L", "pmol/L", "ng/mL"])
@given(value=concentrations)
def test_c_peptide_round_trips_through_every_unit(unit, value):
    assert units.c_peptide_from_nmol_l(units.c_peptide_nmol_l(value, unit), unit) == value


@given(concentrations)
def test_crp_round_trips_between_mg_per_litre_and_mg_per_decilitre(value):
    assert units.crp_mg_l(units.crp_mg_dl(value, "mg/L"), "mg/dL") == value
    assert units.crp_mg_dl(value, "mg/L") * 10 == value


def test_crp_ten_mg_per_litre_is_one_mg_per_decilitre():
    assert units.crp_mg_dl(10, "mg/L") == 1
    assert units.crp_mg_l("1.2", "mg/dL") == 12
    assert units.crp_mg_l("1.2", " MG/DL ") == 12  # matching ignores case and spaces


@given(vas_mms)
def test_vas_round_trips_between_mm_and_cm(mm):
    assert units.vas_mm(units.vas_cm(mm, "mm"), "cm") == mm


def test_vas_outside_the_scale_is_refused():
    with pytest.raises(ValueError, match="0-100 mm"):
        units.vas_mm(101, "mm")
    with pytest.raises(ValueError, match="0-100 mm"):
        units.vas_cm("10.5", "cm")
    with pytest.raises(ValueError, match="0-100 mm"):
        units.vas_mm(-1, "mm")


@pytest.mark.parametrize(
    ("convert", "unit"),
    [
        (units.hba1c_percent, "mmol/L"),
        (units.c_peptide_nmol_l, "µg/L"),
        (units.crp_mg_l, "mg/mL"),
        (units.crp_mg_dl, ""),
        (units.vas_mm, "in"),
    ],
)
def test_an_unknown_unit_raises_a_value_error_naming_it(convert, unit):
    with pytest.raises(ValueError, match=f"unit {unit!r}") as caught:
        convert(1, unit)
    assert isinstance(caught.value, units.UnitError)


def test_a_missing_unit_is_an_unknown_unit():
    with pytest.raises(units.UnitError, match="None"):
        units.crp_mg_l(1, None)


def test_floats_convert_through_their_shortest_repr():
    assert units.to_decimal(0.1) == Decimal("0.1")
    assert units.crp_mg_dl(1.1, "mg/L") == Decimal("0.11")


@pytest.mark.parametrize("bad", [True, float("nan"), float("inf"), "abc", Decimal("NaN"), None])
def test_non_numbers_are_refused(bad):
    with pytest.raises((TypeError, ValueError)):
        units.to_decimal(bad)


def test_negative_concentrations_are_refused():
    with pytest.raises(ValueError, match="negative"):
        units.crp_mg_l(-1, "mg/L")
    with pytest.raises(ValueError, match="negative"):
        units.c_peptide_nmol_l("-0.1", "nmol/L")
