"""The vectorised remission rules give exactly what the scalar reference gives, row by row, on random
inputs aimed at the thresholds, invalid values and unit spellings (analytics/rules_vectorised.py)."""

import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.derivations import RemissionDefinition
from analytics.rules_vectorised import RULE_INPUTS, VECTORISED_RULES, evaluate_frame, scalar_evaluator

DEFINITIONS = [
    RemissionDefinition("RA", "DAS28-CRP4", "1", "das28_crp4"),
    RemissionDefinition("RA", "DAS28-CRP3", "1", "das28_crp3"),
    RemissionDefinition("RA", "DAS28-ESR", "1", "das28_esr4", {"below": "2.6"}),
    RemissionDefinition("RA", "SDAI", "1", "sdai"),
    RemissionDefinition("RA", "SDAI strict", "2", "sdai", {"maximum": "3.2"}),
    RemissionDefinition("RA", "CDAI", "1", "cdai"),
    RemissionDefinition("RA", "Boolean 2011", "1", "acr_eular_boolean", {"version": "2011"}),
    RemissionDefinition("RA", "Boolean 2022", "1", "acr_eular_boolean", {"version": "2022"}),
    RemissionDefinition("T1D", "IDAA1c", "1", "idaa1c"),
    RemissionDefinition("T1D", "Insulin", "1", "insulin_dose_below", {"below": "0.5"}),
]

# Mostly valid values, with the boundaries over-represented and some invalid ones.
joints = st.one_of(st.integers(0, 3), st.integers(0, 28), st.sampled_from([None, 29, 2.5]))
crp = st.one_of(
    st.decimals(0, 40, places=2, allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal("0.3"), Decimal("3"), Decimal("10"), Decimal("1.00"), None, Decimal("-1")]),
)
crp_unit = st.sampled_from(["mg/L", "mg/L", "mg/dL", "mg/dL", "MG/L", "", "g/L"])
vas = st.one_of(st.integers(0, 30), st.integers(0, 100), st.sampled_from([None, 101, 5, 10, 20]))
esr = st.one_of(st.integers(1, 120), st.sampled_from([0, None, 13]))
hba1c = st.one_of(
    st.decimals(4, 12, places=1, allow_nan=False, allow_infinity=False),
    st.decimals(20, 110, places=1, allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal("9.0"), Decimal("7.0"), None]),
)
hba1c_unit = st.sampled_from(["%", "%", "mmol/mol", "MMOL/MOL", ""])
insulin = st.one_of(
    st.decimals(0, 2, places=2, allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal("0.5"), Decimal("0.00"), Decimal("0.25"), None]),
)

rows = st.fixed_dictionaries(
    {
        "tender_joints_28": joints,
        "swollen_joints_28": joints,
        "crp": crp,
        "crp_unit": crp_unit,
        "patient_global_mm": vas,
        "evaluator_global_mm": vas,
        "esr_mm_h": esr,
        "hba1c": hba1c,
        "hba1c_unit": hba1c_unit,
        "insulin_u_per_kg_day": insulin,
    }
)


def _frame(records):
    """Shaped like the extracted assessments: numbers as floats (NaN for missing), units as text."""
    frame = pd.DataFrame.from_records(records)
    for name in frame.columns:
        if name in ("crp_unit", "hba1c_unit"):
            frame[name] = frame[name].fillna("")
        else:
            frame[name] = pd.to_numeric(frame[name].map(lambda v: np.nan if v is None else float(v)))
    return frame


def _reference(definition, frame):
    scalar = scalar_evaluator(definition)
    out = []
    for record in frame.to_dict("records"):
        inputs = {}
        for name in RULE_INPUTS[definition.rule]:
            value = record[name]
            if isinstance(value, float):
                value = None if np.isnan(value) else repr(value)
            inputs[name] = value or None
        out.append(scalar(inputs))
    return out


def _assert_same(definition, frame):
    result = evaluate_frame(definition, frame)
    for i, (adequate, status, derived, note) in enumerate(_reference(definition, frame)):
        assert bool(result.adequate[i]) == adequate, (i, frame.iloc[i].to_dict())
        assert result.status[i] == (-1 if status is None else int(status)), (i, frame.iloc[i].to_dict())
        assert result.derived[i] == derived, (i, frame.iloc[i].to_dict())
        assert result.note[i] == note
    return result


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.key)
@settings(max_examples=60, deadline=None)
@given(records=st.lists(rows, min_size=1, max_size=40))
def test_every_row_matches_the_scalar_reference(definition, records):
    _assert_same(definition, _frame(records))


def test_the_rules_with_a_vectorised_form_are_all_exercised():
    assert {d.rule for d in DEFINITIONS} == VECTORISED_RULES


def test_an_sdai_of_exactly_3_3_is_remission_and_is_decided_by_the_reference():
    # 1 + 1 + 0.5 + 0.5 + 0.3 = 3.3 exactly; in floats it is 3.3000000000000003, which would miss (<= 3.3).
    frame = _frame(
        [
            {
                "tender_joints_28": 1,
                "swollen_joints_28": 1,
                "patient_global_mm": 5,
                "evaluator_global_mm": 5,
                "crp": Decimal("3"),
                "crp_unit": "mg/L",
            }
        ]
    )
    result = _assert_same(DEFINITIONS[3], frame)
    assert result.status.tolist() == [1]
    assert result.fallback_rows == 1
    assert json.loads(result.derived[0])["values"]["sdai"] == ["3.3000", ""]


def test_typical_rows_take_the_fast_path_and_the_stored_values_have_four_decimals():
    rng = np.random.default_rng(7)
    n = 2000
    frame = pd.DataFrame(
        {
            "tender_joints_28": rng.integers(0, 12, n).astype(float),
            "swollen_joints_28": rng.integers(0, 10, n).astype(float),
            "crp": np.round(rng.gamma(2, 4, n), 2),
            "crp_unit": rng.choice(["mg/L", "mg/dL"], n),
            "patient_global_mm": rng.integers(0, 100, n).astype(float),
            "evaluator_global_mm": rng.integers(0, 100, n).astype(float),
        }
    )
    result = _assert_same(DEFINITIONS[0], frame)
    assert result.fallback_rows < n // 50
    first = json.loads(result.derived[0])
    assert first["criterion"] == "das28_crp4 < 2.6"
    assert len(first["values"]["das28_crp4"][0].split(".")[1]) == 4


def test_invalid_rows_say_why_like_the_reference():
    frame = _frame([{"tender_joints_28": 29, "swollen_joints_28": 0, "patient_global_mm": 0, "evaluator_global_mm": 0}])
    result = _assert_same(DEFINITIONS[5], frame)
    assert result.adequate.tolist() == [False]
    assert "between 0 and 28" in result.note[0]


def test_without_texts_the_statuses_are_the_same_and_only_fallback_rows_carry_text():
    frame = _frame(
        [
            {"tender_joints_28": 1, "swollen_joints_28": 1, "patient_global_mm": 5, "evaluator_global_mm": 5},
            {"tender_joints_28": 8, "swollen_joints_28": 4, "patient_global_mm": 50, "evaluator_global_mm": 40},
            {"tender_joints_28": 29, "swollen_joints_28": 0, "patient_global_mm": 0, "evaluator_global_mm": 0},
        ]
    )
    full = evaluate_frame(DEFINITIONS[5], frame)
    lean = evaluate_frame(DEFINITIONS[5], frame, texts=False)
    assert lean.status.tolist() == full.status.tolist()
    assert lean.adequate.tolist() == full.adequate.tolist()
    assert lean.derived[1] == ""  # a fast row: no text
    assert lean.derived[2] == full.derived[2]  # the invalid row went to the reference, text and all
