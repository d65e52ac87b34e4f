"""ASTCT CRS / ICANS and CTCAE infusion-reaction grading (docs/domain.md Part A §3.1-3.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety.grading import (
    Consciousness,
    CRSInputs,
    Hypotension,
    ICANSInputs,
    InfusionReactionInputs,
    MotorFinding,
    OxygenDevice,
    OxygenSupport,
    RaisedICP,
    Seizure,
    apply_investigator_grade,
    classify_hypotension,
    classify_oxygen,
    grade_crs,
    grade_icans,
    grade_infusion_reaction,
    ice_score,
)
from safety.rules_data import InputError, get_rules

PROPERTY = settings(database=None, derandomize=True, deadline=None, max_examples=200)

HYPOTENSION_ORDER = list(Hypotension)
OXYGEN_ORDER = list(OxygenSupport)


# ---------------------------------------------------------------------------------------------
# CRS
# ---------------------------------------------------------------------------------------------


def crs(temp=38.5, **kwargs):
    return grade_crs(CRSInputs(max_temperature_c=temp, **kwargs))


def test_a_febrile_patient_on_one_pressor_and_low_flow_oxygen_is_grade_3():
    # The worked example in docs/domain.md §3.1: the more severe domain (hypotension) drives the grade.
    result = crs(39.0, hypotension=Hypotension.ONE_VASOPRESSOR, oxygen=OxygenSupport.LOW_FLOW)
    assert result.grade == 3
    assert result.drivers == ("hypotension",)
    assert result.domain_grades == {"fever": 1, "hypotension": 3, "oxygen": 2}
    assert result.scale == "ASTCT CRS consensus grading (Lee et al. 2019)"
    assert result.rule_version == "crs-astct-2019.1"


@pytest.mark.parametrize(
    ("temperature", "grade"),
    [(None, 0), (36.5, 0), (37.9, 0), (38.0, 1), (38.1, 1), (40.2, 1)],
)
def test_fever_of_38_0_is_required_for_grade_1(temperature, grade):
    assert crs(temperature).grade == grade


def test_hypotension_and_hypoxia_without_fever_are_not_crs():
    result = crs(37.9, hypotension=Hypotension.MULTIPLE_VASOPRESSORS, oxygen=OxygenSupport.POSITIVE_PRESSURE)
    assert result.grade == 0
    assert result.drivers == ()
    assert "37.9" in result.reason
    assert "38.0" in result.reason


@pytest.mark.parametrize(
    ("hypotension", "grade"),
    [
        (Hypotension.NONE, 1),
        (Hypotension.NO_VASOPRESSOR, 2),
        (Hypotension.ONE_VASOPRESSOR, 3),
        (Hypotension.MULTIPLE_VASOPRESSORS, 4),
    ],
)
def test_each_hypotension_level_sets_its_grade(hypotension, grade):
    result = crs(hypotension=hypotension)
    assert result.grade == grade
    assert result.drivers == (("hypotension",) if grade > 1 else ("fever",))


@pytest.mark.parametrize(
    ("oxygen", "grade"),
    [
        (OxygenSupport.NONE, 1),
        (OxygenSupport.LOW_FLOW, 2),
        (OxygenSupport.HIGH_FLOW, 3),
        (OxygenSupport.POSITIVE_PRESSURE, 4),
    ],
)
def test_each_oxygen_level_sets_its_grade(oxygen, grade):
    assert crs(oxygen=oxygen).grade == grade


@pytest.mark.parametrize(
    ("flow", "support", "grade"),
    [
        (0.5, OxygenSupport.LOW_FLOW, 2),
        (6.0, OxygenSupport.LOW_FLOW, 2),
        (6.1, OxygenSupport.HIGH_FLOW, 3),
        (15, OxygenSupport.HIGH_FLOW, 3),
    ],
)
def test_nasal_cannula_at_6_l_min_is_low_flow_and_above_is_high_flow(flow, support, grade):
    assert classify_oxygen(OxygenDevice.NASAL_CANNULA, flow) is support
    assert crs(oxygen=classify_oxygen("nasal_cannula", flow)).grade == grade


@pytest.mark.parametrize(
    ("device", "support"),
    [
        (OxygenDevice.NONE, OxygenSupport.NONE),
        (OxygenDevice.BLOW_BY, OxygenSupport.LOW_FLOW),
        (OxygenDevice.FACEMASK, OxygenSupport.HIGH_FLOW),
        (OxygenDevice.NON_REBREATHER, OxygenSupport.HIGH_FLOW),
        (OxygenDevice.VENTURI, OxygenSupport.HIGH_FLOW),
        (OxygenDevice.CPAP, OxygenSupport.POSITIVE_PRESSURE),
        (OxygenDevice.BIPAP, OxygenSupport.POSITIVE_PRESSURE),
        (OxygenDevice.MECHANICAL_VENTILATION, OxygenSupport.POSITIVE_PRESSURE),
    ],
)
def test_each_oxygen_device_maps_to_its_astct_category(device, support):
    assert classify_oxygen(device) is support


@pytest.mark.parametrize("flow", [None, 0, -1])
def test_a_nasal_cannula_without_a_flow_is_refused(flow):
    with pytest.raises(InputError) as error:
        classify_oxygen(OxygenDevice.NASAL_CANNULA, flow)
    assert error.value.field == "oxygen_flow_l_min"


def test_an_unknown_oxygen_device_is_refused():
    with pytest.raises(InputError) as error:
        classify_oxygen("helmet")
    assert error.value.field == "oxygen_device"


@pytest.mark.parametrize(
    ("hypotension", "pressors", "vasopressin", "category"),
    [
        (False, 0, False, Hypotension.NONE),
        (True, 0, False, Hypotension.NO_VASOPRESSOR),
        (True, 1, False, Hypotension.ONE_VASOPRESSOR),
        (True, 0, True, Hypotension.ONE_VASOPRESSOR),  # vasopressin alone is one vasopressor
        (True, 1, True, Hypotension.ONE_VASOPRESSOR),  # one vasopressor plus vasopressin stays grade 3
        (True, 2, False, Hypotension.MULTIPLE_VASOPRESSORS),
        (True, 3, True, Hypotension.MULTIPLE_VASOPRESSORS),
    ],
)
def test_vasopressin_does_not_count_towards_multiple_vasopressors(hypotension, pressors, vasopressin, category):
    result = classify_hypotension(
        hypotension=hypotension, vasopressors_excluding_vasopressin=pressors, vasopressin=vasopressin
    )
    assert result is category


def test_vasopressors_without_hypotension_are_refused():
    with pytest.raises(InputError) as error:
        classify_hypotension(hypotension=False, vasopressors_excluding_vasopressin=1, vasopressin=False)
    assert error.value.field == "hypotension"


def test_a_tie_between_hypotension_and_hypoxia_names_both_drivers():
    result = crs(hypotension=Hypotension.ONE_VASOPRESSOR, oxygen=OxygenSupport.HIGH_FLOW)
    assert result.grade == 3
    assert result.drivers == ("hypotension", "oxygen")


def test_fever_masked_by_tocilizumab_lets_hypotension_and_hypoxia_drive_the_grade():
    assert crs(37.0, fever_masked=True, oxygen=OxygenSupport.HIGH_FLOW).grade == 3
    masked_alone = crs(36.8, fever_masked=True)
    assert masked_alone.grade == 1
    assert "masked" in masked_alone.reason


def test_death_due_to_crs_is_grade_5():
    result = crs(38.2, hypotension=Hypotension.ONE_VASOPRESSOR, death_due_to_crs=True)
    assert result.grade == 5
    assert result.drivers == ("death",)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hypotension": "severe"}, "hypotension"),
        ({"oxygen": "lots"}, "oxygen"),
        ({"temp": 60.0}, "max_temperature_c"),
        ({"fever_masked": "yes"}, "fever_masked"),
    ],
)
def test_implausible_crs_inputs_are_refused_with_the_field_named(kwargs, field):
    with pytest.raises(InputError) as error:
        crs(**kwargs)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")


def test_a_pinned_rule_version_is_used_and_recorded():
    pinned = dict(get_rules("crs"))
    pinned.update(version="crs-test-0.9", low_flow_max_l_min=4.0)
    assert classify_oxygen(OxygenDevice.NASAL_CANNULA, 5.0, rules=pinned) is OxygenSupport.HIGH_FLOW
    assert grade_crs(CRSInputs(38.5), rules=pinned).rule_version == "crs-test-0.9"


crs_inputs = st.builds(
    CRSInputs,
    max_temperature_c=st.one_of(st.none(), st.floats(min_value=35.0, max_value=42.0)),
    fever_masked=st.booleans(),
    hypotension=st.sampled_from(HYPOTENSION_ORDER),
    oxygen=st.sampled_from(OXYGEN_ORDER),
    death_due_to_crs=st.booleans(),
)


def _worsen(inputs: CRSInputs, which: str, data) -> CRSInputs:
    values = dict(inputs.__dict__)
    if which == "max_temperature_c":
        base = inputs.max_temperature_c
        values[which] = data.draw(st.floats(min_value=base if base is not None else 35.0, max_value=42.0))
    elif which in ("fever_masked", "death_due_to_crs"):
        values[which] = True
    else:
        order = HYPOTENSION_ORDER if which == "hypotension" else OXYGEN_ORDER
        values[which] = data.draw(st.sampled_from(order[order.index(getattr(inputs, which)) :]))
    return CRSInputs(**values)


@PROPERTY
@given(
    inputs=crs_inputs,
    which=st.sampled_from(["max_temperature_c", "fever_masked", "hypotension", "oxygen", "death_due_to_crs"]),
    data=st.data(),
)
def test_the_crs_grade_is_monotone_in_every_input(inputs, which, data):
    assert grade_crs(_worsen(inputs, which, data)).grade >= grade_crs(inputs).grade


@PROPERTY
@given(inputs=crs_inputs)
def test_the_crs_grade_is_the_worse_of_hypotension_and_hypoxia_once_fever_is_established(inputs):
    result = grade_crs(inputs)
    febrile = inputs.max_temperature_c is not None and inputs.max_temperature_c >= 38.0
    if inputs.death_due_to_crs:
        assert result.grade == 5
    elif not (febrile or inputs.fever_masked):
        assert result.grade == 0
    else:
        rules = get_rules("crs")
        expected = max(1, rules["hypotension_grades"][inputs.hypotension], rules["oxygen_grades"][inputs.oxygen])
        assert result.grade == expected
        assert result.drivers
        assert all(result.domain_grades[d] == expected for d in result.drivers)


# ---------------------------------------------------------------------------------------------
# ICE score and ICANS
# ---------------------------------------------------------------------------------------------


def test_the_ice_score_adds_its_five_items_to_at_most_10():
    assert ice_score(orientation=4, naming=3, commands=True, writing=True, attention=True) == 10
    assert ice_score(orientation=2, naming=1, commands=1, writing=0, attention=False) == 4
    assert ice_score(orientation=0, naming=0, commands=0, writing=0, attention=0) == 0


@pytest.mark.parametrize(
    ("item", "value"),
    [("orientation", 5), ("naming", 4), ("commands", 2), ("writing", -1), ("attention", 1.5)],
)
def test_an_ice_item_out_of_range_is_refused(item, value):
    items = {"orientation": 4, "naming": 3, "commands": 1, "writing": 1, "attention": 1, item: value}
    with pytest.raises(InputError) as error:
        ice_score(**items)
    assert error.value.field == item


def icans(age=40, **kwargs):
    return grade_icans(ICANSInputs(age_years=age, **kwargs))


@pytest.mark.parametrize(
    ("ice", "grade"),
    [(10, 0), (9, 1), (7, 1), (6, 2), (3, 2), (2, 3), (1, 3)],
)
def test_each_ice_band_sets_its_grade(ice, grade):
    result = icans(ice_score=ice)
    assert result.grade == grade
    assert result.scale == "ASTCT ICANS consensus grading (Lee et al. 2019)"
    assert result.rule_version == "icans-astct-2019.1"


def test_ice_0_in_an_awake_patient_with_global_aphasia_is_grade_3():
    result = icans(ice_score=0, consciousness=Consciousness.ALERT)
    assert result.grade == 3
    assert result.drivers == ("ice",)
    assert "awake" in result.reason


@pytest.mark.parametrize("ice", [0, None])
def test_ice_0_in_an_unarousable_patient_is_grade_4(ice):
    result = icans(ice_score=ice, consciousness=Consciousness.UNAROUSABLE)
    assert result.grade == 4
    assert result.drivers == ("ice", "consciousness")


def test_an_unarousable_patient_cannot_have_a_positive_ice_score():
    with pytest.raises(InputError) as error:
        icans(ice_score=5, consciousness=Consciousness.UNAROUSABLE)
    assert error.value.field == "ice_score"


@pytest.mark.parametrize(
    ("consciousness", "grade"),
    [
        (Consciousness.ALERT, 0),
        (Consciousness.AWAKENS_SPONTANEOUSLY, 1),
        (Consciousness.AWAKENS_TO_VOICE, 2),
        (Consciousness.AWAKENS_TO_TACTILE, 3),
        (Consciousness.UNAROUSABLE, 4),
    ],
)
def test_each_level_of_consciousness_sets_its_grade(consciousness, grade):
    assert icans(consciousness=consciousness).grade == grade


@pytest.mark.parametrize(
    ("kwargs", "grade", "driver"),
    [
        ({"seizure": Seizure.RAPIDLY_RESOLVING}, 3, "seizure"),
        ({"seizure": Seizure.LIFE_THREATENING}, 4, "seizure"),
        ({"motor": MotorFinding.DEEP_FOCAL_WEAKNESS}, 4, "motor"),
        ({"raised_icp": RaisedICP.FOCAL_OEDEMA}, 3, "raised_icp"),
        ({"raised_icp": RaisedICP.DIFFUSE_OEDEMA}, 4, "raised_icp"),
        ({"death_due_to_icans": True}, 5, "death"),
    ],
)
def test_seizure_motor_oedema_and_death_grades(kwargs, grade, driver):
    result = icans(ice_score=10, **kwargs)
    assert result.grade == grade
    assert result.drivers == (driver,)


def test_icans_is_the_worst_domain():
    result = icans(ice_score=8, consciousness=Consciousness.AWAKENS_TO_VOICE)
    assert result.grade == 2
    assert result.drivers == ("consciousness",)
    assert result.domain_grades["ice"] == 1


def test_no_findings_is_no_icans():
    result = icans(ice_score=10)
    assert result.grade == 0
    assert result.drivers == ()
    assert "no ICANS" in result.reason


@pytest.mark.parametrize(
    ("capd", "consciousness", "grade"),
    [
        (0, Consciousness.ALERT, 0),
        (1, Consciousness.AWAKENS_SPONTANEOUSLY, 1),
        (8, Consciousness.AWAKENS_SPONTANEOUSLY, 1),
        (8, Consciousness.AWAKENS_TO_VOICE, 2),  # CAPD < 9 waking to voice = grade 2
        (9, Consciousness.ALERT, 3),  # CAPD >= 9 = grade 3
        (20, Consciousness.AWAKENS_SPONTANEOUSLY, 3),
    ],
)
def test_children_aged_12_or_under_are_graded_by_capd(capd, consciousness, grade):
    assert icans(age=12, capd_score=capd, consciousness=consciousness).grade == grade


def test_a_child_unable_to_perform_capd_because_unarousable_is_grade_4():
    result = icans(age=8, consciousness=Consciousness.UNAROUSABLE)
    assert result.grade == 4
    assert "capd" in result.drivers


def test_a_13_year_old_is_graded_by_ice_and_a_12_year_old_by_capd():
    assert icans(age=13, ice_score=5).grade == 2
    with pytest.raises(InputError) as error:
        icans(age=12, ice_score=5)
    assert error.value.field == "ice_score"
    with pytest.raises(InputError) as error:
        icans(age=13, capd_score=5)
    assert error.value.field == "capd_score"


def test_developmental_delay_uses_capd_at_any_age():
    assert icans(age=30, developmental_delay=True, capd_score=10).grade == 3


def test_an_unknown_icans_category_is_refused():
    with pytest.raises(InputError) as error:
        icans(seizure="status")
    assert error.value.field == "seizure"


icans_inputs = st.builds(
    ICANSInputs,
    age_years=st.integers(min_value=13, max_value=90),
    consciousness=st.sampled_from([c for c in Consciousness if c is not Consciousness.UNAROUSABLE]),
    ice_score=st.integers(min_value=0, max_value=10),
    seizure=st.sampled_from(list(Seizure)),
    motor=st.sampled_from(list(MotorFinding)),
    raised_icp=st.sampled_from(list(RaisedICP)),
    death_due_to_icans=st.booleans(),
)


@PROPERTY
@given(inputs=icans_inputs, worse_ice=st.integers(min_value=0, max_value=10))
def test_the_icans_grade_never_improves_as_the_ice_score_falls(inputs, worse_ice):
    worse = ICANSInputs(**{**inputs.__dict__, "ice_score": min(worse_ice, inputs.ice_score)})
    assert grade_icans(worse).grade >= grade_icans(inputs).grade


@PROPERTY
@given(inputs=icans_inputs)
def test_the_icans_grade_is_the_maximum_of_its_domain_grades(inputs):
    result = grade_icans(inputs)
    assert result.grade == max(result.domain_grades.values())
    assert set(result.drivers) == {d for d, g in result.domain_grades.items() if g == result.grade and g > 0}


# ---------------------------------------------------------------------------------------------
# Infusion-related reactions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "grade"),
    [
        ({}, 1),
        ({"interruption_or_treatment_needed": True, "responds_promptly": True}, 2),
        ({"interruption_or_treatment_needed": True, "responds_promptly": False}, 3),
        ({"prolonged_or_recurrent": True}, 3),
        ({"hospitalisation_indicated": True}, 3),
        ({"life_threatening": True}, 4),
        ({"death": True, "life_threatening": True}, 5),
    ],
)
def test_infusion_reaction_grades_follow_ctcae(kwargs, grade):
    result = grade_infusion_reaction(InfusionReactionInputs(**kwargs))
    assert result.grade == grade
    assert result.scale == "CTCAE v5.0 Infusion related reaction"
    assert result.rule_version == "irr-ctcae5.1"


def test_an_interrupted_infusion_needs_the_response_recorded():
    with pytest.raises(InputError) as error:
        grade_infusion_reaction(InfusionReactionInputs(interruption_or_treatment_needed=True))
    assert error.value.field == "responds_promptly"


# ---------------------------------------------------------------------------------------------
# Investigator override
# ---------------------------------------------------------------------------------------------


def test_the_computed_grade_stands_without_an_investigator_grade():
    computed = crs(hypotension=Hypotension.NO_VASOPRESSOR)
    final = apply_investigator_grade(computed, investigator_grade=None)
    assert (final.grade, final.overridden) == (2, False)
    assert final.scale == computed.scale
    assert final.rule_version == computed.rule_version


def test_an_investigator_grade_equal_to_the_computed_one_needs_no_reason():
    final = apply_investigator_grade(crs(), investigator_grade=1, reason="")
    assert (final.grade, final.overridden) == (1, False)


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_different_investigator_grade_without_a_reason_is_refused(reason):
    with pytest.raises(InputError) as error:
        apply_investigator_grade(crs(), investigator_grade=2, reason=reason)
    assert error.value.field == "override_reason"
    assert "override_reason" in str(error.value)


def test_a_different_investigator_grade_with_a_reason_is_recorded_with_the_computed_grade():
    computed = crs(oxygen=OxygenSupport.LOW_FLOW)
    final = apply_investigator_grade(computed, investigator_grade=3, reason=" Hypoxia was on 8 L/min overnight ")
    assert final.grade == 3
    assert final.overridden
    assert final.override_reason == "Hypoxia was on 8 L/min overnight"
    assert final.computed.grade == 2


@pytest.mark.parametrize("grade", [-1, 6, True])
def test_an_investigator_grade_outside_the_scale_is_refused(grade):
    with pytest.raises(InputError) as error:
        apply_investigator_grade(crs(), investigator_grade=grade, reason="clinical judgement")
    assert error.value.field == "investigator_grade"


def test_an_infusion_reaction_cannot_be_overridden_to_grade_0():
    computed = grade_infusion_reaction(InfusionReactionInputs())
    with pytest.raises(InputError) as error:
        apply_investigator_grade(computed, investigator_grade=0, reason="not a reaction")
    assert error.value.field == "investigator_grade"
