"""Rheumatoid-arthritis scores and remission (docs/domain.md §5.3)."""

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.derivations import (
    DiseaseActivity,
    acr_eular_boolean_remission,
    cdai,
    cdai_category,
    das28_category,
    das28_crp3,
    das28_crp4,
    das28_esr4,
    sdai,
    sdai_category,
)

joints = st.integers(min_value=0, max_value=28)
crps = st.decimals(min_value=0, max_value=300, places=1, allow_nan=False, allow_infinity=False)
vas = st.integers(min_value=0, max_value=100)

# A worked patient: TJC 4 and SJC 9 keep the square roots exact (2 and 3).
PATIENT = {"tender_28": 4, "swollen_28": 9}


def close(value, expected, tol=1e-12):
    return abs(float(value) - expected) < tol


def test_das28_minimum_values_match_the_published_floor():
    # Published: "minimum score 0.96 for the 4-variable version and 1.15 for the 3-variable version".
    zero = {"tender_28": 0, "swollen_28": 0, "crp": 0, "crp_unit": "mg/L"}
    assert das28_crp4(**zero, patient_global=0, patient_global_unit="mm") == Decimal("0.96")
    assert das28_crp3(**zero) == Decimal("1.15")


def test_das28_crp4_worked_example():
    score = das28_crp4(**PATIENT, crp=12, crp_unit="mg/L", patient_global=35, patient_global_unit="mm")
    # 0.56·√4 + 0.28·√9 + 0.36·ln(12 + 1) + 0.014·35 + 0.96 = 1.12 + 0.84 + 0.36·ln 13 + 0.49 + 0.96
    assert close(score, 1.12 + 0.84 + 0.36 * math.log(13) + 0.49 + 0.96)  # 4.3334
    assert das28_category(score) == DiseaseActivity.MODERATE


def test_das28_crp_is_the_same_whatever_units_crp_and_global_health_were_stored_in():
    in_mg_l_mm = das28_crp4(**PATIENT, crp=12, crp_unit="mg/L", patient_global=35, patient_global_unit="mm")
    in_mg_dl_cm = das28_crp4(**PATIENT, crp="1.2", crp_unit="mg/dL", patient_global="3.5", patient_global_unit="cm")
    assert in_mg_l_mm == in_mg_dl_cm
    # The trap: 1.2 read as mg/L would understate CRP tenfold.
    assert das28_crp4(**PATIENT, crp="1.2", crp_unit="mg/L", patient_global=35, patient_global_unit="mm") < in_mg_l_mm


def test_das28_crp3_worked_example():
    score = das28_crp3(**PATIENT, crp=12, crp_unit="mg/L")
    assert close(score, (1.12 + 0.84 + 0.36 * math.log(13)) * 1.10 + 1.15)  # 3.3217


def test_das28_esr4_worked_example():
    score = das28_esr4(**PATIENT, esr_mm_h=20, patient_global=35, patient_global_unit="mm")
    assert close(score, 1.12 + 0.84 + 0.70 * math.log(20) + 0.49)  # 4.5470
    with pytest.raises(ValueError, match="ESR"):
        das28_esr4(**PATIENT, esr_mm_h=0, patient_global=35, patient_global_unit="mm")


@given(joints, joints, crps, vas, st.sampled_from(["tender_28", "swollen_28", "crp", "patient_global"]))
def test_das28_crp4_never_decreases_when_one_component_worsens(tender, swollen, crp, gh, component):
    base = {"tender_28": tender, "swollen_28": swollen, "crp": crp, "crp_unit": "mg/L", "patient_global": gh}
    worse = dict(base)
    ceiling = {"tender_28": 28, "swollen_28": 28, "crp": Decimal(1000), "patient_global": 100}[component]
    worse[component] = min(worse[component] + 1, ceiling)
    assert das28_crp4(**worse, patient_global_unit="mm") >= das28_crp4(**base, patient_global_unit="mm")


def test_sdai_and_cdai_worked_example_with_the_unit_conversions():
    common = {"tender_28": 2, "swollen_28": 1, "patient_global": 35, "patient_global_unit": "mm"}
    common |= {"evaluator_global": 20, "evaluator_global_unit": "mm"}
    # CDAI = 2 + 1 + 3.5 cm + 2.0 cm = 8.5 ; SDAI adds CRP 12 mg/L = 1.2 mg/dL → 9.7
    assert cdai(**common) == Decimal("8.5")
    assert sdai(**common, crp=12, crp_unit="mg/L") == Decimal("9.7")
    assert cdai_category(Decimal("8.5")) == DiseaseActivity.LOW
    assert sdai_category(Decimal("9.7")) == DiseaseActivity.LOW


def test_sdai_exactly_at_the_remission_cut_off_is_remission():
    # PtGA 1.1 cm + PhGA 2.2 cm is 3.3000000000000003 in binary floating point, and would miss ≤ 3.3.
    assert 1.1 + 2.2 > 3.3
    score = sdai(
        tender_28=0,
        swollen_28=0,
        patient_global=11,
        patient_global_unit="mm",
        evaluator_global=22,
        evaluator_global_unit="mm",
        crp=0,
        crp_unit="mg/dL",
    )
    assert score == Decimal("3.3")
    assert sdai_category(score) == DiseaseActivity.REMISSION


@given(joints, joints, vas, vas, crps)
def test_sdai_is_cdai_plus_crp_in_mg_per_decilitre(tender, swollen, ptga, phga, crp_mg_l):
    common = {"tender_28": tender, "swollen_28": swollen, "patient_global": ptga, "patient_global_unit": "mm"}
    common |= {"evaluator_global": phga, "evaluator_global_unit": "mm"}
    assert sdai(**common, crp=crp_mg_l, crp_unit="mg/L") - cdai(**common) == crp_mg_l / 10


@pytest.mark.parametrize(
    ("score", "category"),
    [
        ("2.5999", DiseaseActivity.REMISSION),
        ("2.6", DiseaseActivity.LOW),  # remission is strictly < 2.6
        ("3.2", DiseaseActivity.LOW),
        ("3.2001", DiseaseActivity.MODERATE),
        ("5.1", DiseaseActivity.MODERATE),
        ("5.1001", DiseaseActivity.HIGH),
    ],
)
def test_das28_categories_at_the_cut_offs(score, category):
    assert das28_category(score) == category


@pytest.mark.parametrize(
    ("categorise", "score", "category"),
    [
        (sdai_category, "3.3", DiseaseActivity.REMISSION),
        (sdai_category, "3.31", DiseaseActivity.LOW),
        (sdai_category, "11", DiseaseActivity.LOW),
        (sdai_category, "26", DiseaseActivity.MODERATE),
        (sdai_category, "26.01", DiseaseActivity.HIGH),
        (cdai_category, "2.8", DiseaseActivity.REMISSION),
        (cdai_category, "2.81", DiseaseActivity.LOW),
        (cdai_category, "10", DiseaseActivity.LOW),
        (cdai_category, "22", DiseaseActivity.MODERATE),
        (cdai_category, "22.1", DiseaseActivity.HIGH),
    ],
)
def test_sdai_and_cdai_categories_at_the_cut_offs(categorise, score, category):
    assert categorise(score) == category


BOOLEAN_OK = {"tender_28": 1, "swollen_28": 1, "crp": 10, "crp_unit": "mg/L", "patient_global_unit": "mm"}


def test_boolean_remission_2022_allows_a_patient_global_up_to_2_cm():
    assert acr_eular_boolean_remission(**BOOLEAN_OK, patient_global=10, version="2011")
    assert not acr_eular_boolean_remission(**BOOLEAN_OK, patient_global=15, version="2011")
    assert acr_eular_boolean_remission(**BOOLEAN_OK, patient_global=15, version="2022")
    assert acr_eular_boolean_remission(**BOOLEAN_OK, patient_global=20, version="2022")
    assert not acr_eular_boolean_remission(**BOOLEAN_OK, patient_global=21, version="2022")


def test_boolean_remission_reads_crp_in_mg_per_decilitre():
    base = dict(BOOLEAN_OK, patient_global=5, version="2011")
    assert acr_eular_boolean_remission(**base | {"crp": 9, "crp_unit": "mg/L"})  # 0.9 mg/dL
    assert not acr_eular_boolean_remission(**base | {"crp": 9, "crp_unit": "mg/dL"})
    assert not acr_eular_boolean_remission(**base | {"crp": 11, "crp_unit": "mg/L"})
    assert not acr_eular_boolean_remission(**base | {"tender_28": 2})


def test_boolean_remission_version_must_be_chosen():
    with pytest.raises(TypeError):
        acr_eular_boolean_remission(**BOOLEAN_OK, patient_global=5)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="2015"):
        acr_eular_boolean_remission(**BOOLEAN_OK, patient_global=5, version="2015")


@pytest.mark.parametrize("count", [-1, 29, "2.5", True])
def test_joint_counts_must_be_whole_numbers_between_0_and_28(count):
    with pytest.raises((TypeError, ValueError)):
        das28_crp3(tender_28=count, swollen_28=0, crp=1, crp_unit="mg/L")
