"""Versioned, data-driven remission definitions and ``in_remission`` (analytics/derivations.py)."""

import datetime as dt
import json
import math
from decimal import Decimal

import pytest

from analytics.derivations import REMISSION_RULES, NotEvaluableError, RemissionDefinition, in_remission

SDAI_V1 = RemissionDefinition(indication="RA", name="SDAI remission", version="1", rule="sdai")

# One RA assessment, keyed like the DiseaseAssessment fields.
RA_VISIT = {
    "tender_joints_28": 1,
    "swollen_joints_28": 0,
    "crp": Decimal("3.00"),
    "crp_unit": "mg/L",
    "esr_mm_h": 12,
    "patient_global_mm": 10,
    "evaluator_global_mm": 10,
}


def test_sdai_remission_keeps_each_derived_value_with_its_inputs():
    ok, derived = in_remission(SDAI_V1, RA_VISIT)
    assert ok  # 1 + 0 + 1.0 + 1.0 + 0.3 = 3.3 ≤ 3.3
    assert derived["sdai"]["value"] == "3.30"
    assert derived["sdai"]["inputs"] == {
        "tender_joints_28": 1,
        "swollen_joints_28": 0,
        "patient_global_mm": 10,
        "evaluator_global_mm": 10,
        "crp": "3.00",
        "crp_unit": "mg/L",
    }
    assert derived["sdai"]["definition"] == "RA/SDAI remission@1"
    assert derived["sdai_category"]["value"] == "remission"
    assert derived["in_remission"]["value"] is True
    assert derived["in_remission"]["inputs"]["criterion"] == "sdai <= 3.3"
    json.dumps(derived)  # storable as JSON as it is


def test_a_parameter_override_changes_the_outcome_and_the_recorded_criterion():
    stricter = RemissionDefinition("RA", "SDAI remission", "2", "sdai", {"maximum": "2.0"})
    ok, derived = in_remission(stricter, RA_VISIT)
    assert not ok
    assert derived["in_remission"]["inputs"]["criterion"] == "sdai <= 2.0"
    assert derived["sdai"]["definition"] == "RA/SDAI remission@2"


def test_das28_crp_reads_crp_in_whatever_unit_it_was_stored():
    definition = RemissionDefinition("RA", "DAS28-CRP remission", "1", "das28_crp4")
    in_mg_l = in_remission(definition, RA_VISIT)
    in_mg_dl = in_remission(definition, RA_VISIT | {"crp": Decimal("0.30"), "crp_unit": "mg/dL"})
    assert in_mg_l[1]["das28_crp4"]["value"] == in_mg_dl[1]["das28_crp4"]["value"]
    assert in_mg_l[0] is True


@pytest.mark.parametrize(
    ("rule", "score", "expected"),
    [
        ("das28_crp4", 0.56 + 0.36 * math.log(4) + 0.014 * 10 + 0.96, True),  # 2.159
        ("das28_crp3", (0.56 + 0.36 * math.log(4)) * 1.10 + 1.15, True),  # 2.315
        ("das28_esr4", 0.56 + 0.70 * math.log(12) + 0.014 * 10, True),  # 2.439
        ("cdai", 1 + 0 + 1.0 + 1.0, False),  # 3.0 > 2.8
    ],
)
def test_each_ra_rule_scores_the_same_visit(rule, score, expected):
    ok, derived = in_remission(RemissionDefinition("RA", rule, "1", rule), RA_VISIT)
    assert ok is expected
    assert float(derived[rule]["value"]) == pytest.approx(score, abs=1e-12)


def test_a_global_assessment_may_be_given_in_cm_with_its_unit():
    visit = {k: v for k, v in RA_VISIT.items() if k not in ("patient_global_mm", "evaluator_global_mm")}
    visit |= {
        "patient_global": "1.0",
        "patient_global_unit": "cm",
        "evaluator_global": "1.0",
        "evaluator_global_unit": "cm",
    }
    assert in_remission(SDAI_V1, visit)[1]["sdai"]["value"] == in_remission(SDAI_V1, RA_VISIT)[1]["sdai"]["value"]


def test_boolean_definition_version_is_a_parameter():
    visit = RA_VISIT | {"patient_global_mm": 18}
    v2011 = RemissionDefinition("RA", "ACR/EULAR Boolean", "2011", "acr_eular_boolean", {"version": "2011"})
    v2022 = RemissionDefinition("RA", "ACR/EULAR Boolean", "2022", "acr_eular_boolean", {"version": "2022"})
    assert in_remission(v2011, visit)[0] is False
    assert in_remission(v2022, visit)[0] is True
    assert in_remission(v2022, visit)[1]["patient_global_cm"]["value"] == "1.8"


def test_idaa1c_definition_converts_ifcc_hba1c():
    definition = RemissionDefinition("T1D", "IDAA1c partial remission", "1", "idaa1c")
    ok, derived = in_remission(
        definition, {"hba1c": Decimal("53.0"), "hba1c_unit": "mmol/mol", "insulin_u_per_kg_day": "0.50"}
    )
    assert ok
    assert Decimal(derived["hba1c_percent"]["value"]).quantize(Decimal("0.01")) == Decimal("7.00")
    assert derived["idaa1c"]["inputs"] == {"hba1c": "53.0", "hba1c_unit": "mmol/mol", "insulin_u_per_kg_day": "0.50"}


def test_mmtt_definition_reports_auc_and_peak_from_stored_samples():
    definition = RemissionDefinition("T1D", "Peak C-peptide", "1", "mmtt_peak_c_peptide")
    samples = [
        {"minute": 0, "c_peptide": Decimal("0.100"), "unit": "nmol/L"},
        {"minute": 60, "c_peptide": Decimal("210.000"), "unit": "pmol/L"},
        {"minute": 120, "c_peptide": Decimal("0.150"), "unit": "nmol/L"},
    ]
    ok, derived = in_remission(definition, {"mmtt_samples": samples})
    assert ok  # peak 0.21 nmol/L ≥ 0.2
    assert Decimal(derived["c_peptide_peak"]["value"]) == Decimal("0.21")
    # (0.1 + 0.21)/2·60 + (0.21 + 0.15)/2·60 = 9.3 + 10.8 = 20.1
    assert Decimal(derived["c_peptide_auc"]["value"]) == Decimal("20.1")
    assert derived["c_peptide_auc"]["inputs"]["mmtt_samples"][1] == {
        "minute": 60,
        "c_peptide": "210.000",
        "unit": "pmol/L",
    }


def test_insulin_independence_definition():
    definition = RemissionDefinition("T1D", "Insulin independence", "1", "insulin_independence")
    assert in_remission(definition, {"insulin_free_days": 20, "hba1c": "6.4", "hba1c_unit": "%"})[0]
    assert not in_remission(definition, {"insulin_free_days": 10, "hba1c": "6.4", "hba1c_unit": "%"})[0]
    low_dose = RemissionDefinition("T1D", "Low insulin dose", "1", "insulin_dose_below")
    assert in_remission(low_dose, {"insulin_u_per_kg_day": "0.49"})[0]
    assert not in_remission(low_dose, {"insulin_u_per_kg_day": "0.50"})[0]


START = dt.date(2025, 1, 6)
MS_YEAR_ONE = {
    "window_start": START,
    "window_end": START + dt.timedelta(days=365),
    "baseline_edss": "2.0",
    "edss_assessments": [
        {"assessment_date": START + dt.timedelta(days=182), "edss": "2.5"},
        {"assessment_date": START + dt.timedelta(days=364), "edss": "2.0"},
    ],
    "relapse_onsets": [],
    "mri_scans": [{"scan_date": START + dt.timedelta(days=364), "new_or_enlarging_t2": 0, "gd_enhancing": 0}],
}


def test_neda3_definition():
    definition = RemissionDefinition("MS", "NEDA-3", "1", "neda3", {"confirmation_weeks": 24})
    ok, derived = in_remission(definition, MS_YEAR_ONE)
    assert ok
    assert derived["cdw"]["inputs"]["cdw_threshold"] == "1.0"
    assert derived["mri_active"]["inputs"]["mri_scans"][0]["scan_date"] == "2026-01-05"
    relapsed = MS_YEAR_ONE | {"relapse_onsets": [START + dt.timedelta(days=100)]}
    assert in_remission(definition, relapsed)[0] is False
    json.dumps(derived)


def test_neda3_without_mri_is_not_evaluable():
    definition = RemissionDefinition("MS", "NEDA-3", "1", "neda3")
    with pytest.raises(NotEvaluableError, match="no MRI"):
        in_remission(definition, MS_YEAR_ONE | {"mri_scans": []})


@pytest.mark.parametrize("field", ["tender_joints_28", "crp", "crp_unit", "evaluator_global_mm"])
def test_a_missing_input_is_not_evaluable_and_names_the_field(field):
    with pytest.raises(NotEvaluableError, match=field.removesuffix("_mm")):
        in_remission(SDAI_V1, RA_VISIT | {field: None})


def test_definitions_round_trip_through_json():
    definition = RemissionDefinition("RA", "SDAI remission", "3", "sdai", {"maximum": Decimal("3.3")})
    stored = json.loads(json.dumps(definition.to_dict()))
    assert stored["parameters"] == {"maximum": "3.3"}
    restored = RemissionDefinition.from_dict(stored)
    assert restored.resolved_parameters() == definition.resolved_parameters()
    assert restored.key == "RA/SDAI remission@3"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"indication": "RA", "rule": "das29"}, "Unknown remission rule"),
        ({"indication": "MS", "rule": "sdai"}, "applies to RA"),
        ({"indication": "RA", "rule": "sdai", "parameters": {"threshold": "3"}}, "Unknown parameter"),
        ({"indication": "RA", "rule": "sdai", "parameters": {"maximum": "three"}}, "maximum"),
        ({"indication": "RA", "rule": "acr_eular_boolean", "parameters": {"version": "2015"}}, "version"),
        ({"indication": "MS", "rule": "neda3", "parameters": {"confirmation_weeks": "12"}}, "integer"),
    ],
)
def test_a_bad_definition_is_refused_when_it_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RemissionDefinition(name="x", version="1", **kwargs)


def test_every_rule_has_defaults_that_resolve():
    indications = {
        "idaa1c": "T1D",
        "insulin_dose_below": "T1D",
        "insulin_independence": "T1D",
        "mmtt_peak_c_peptide": "T1D",
        "das28_crp4": "RA",
        "das28_crp3": "RA",
        "das28_esr4": "RA",
        "sdai": "RA",
        "cdai": "RA",
        "acr_eular_boolean": "RA",
        "neda3": "MS",
    }
    assert set(REMISSION_RULES) == set(indications)
    for rule, indication in indications.items():
        assert RemissionDefinition(indication, rule, "1", rule).resolved_parameters()


def test_parameters_cannot_be_changed_after_construction():
    with pytest.raises(TypeError):
        SDAI_V1.parameters["maximum"] = "10"  # type: ignore[index]
