"""Computed toxicity grades for cell-therapy AEs of special interest (docs/domain.md Part A §3.1-3.3).

The platform computes the grade from structured inputs; the investigator may override it with a
recorded reason (``apply_investigator_grade``). Every result carries the scale name and the rule
version that produced it, because the same AE may be graded on more than one scale (ASTCT vs CTCAE
CRS) and the tables change between versions.

These are pure functions: no database, no clock. Grading tables come from ``safety.rules_data``;
pass ``rules=get_rules("crs", "<pinned version>")`` to grade under a study's pinned version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from safety.rules_data import InputError, get_rules


@dataclass(frozen=True)
class GradeResult:
    """A computed grade. ``drivers`` names every domain that reached ``grade`` (a tie lists both)."""

    grade: int
    scale: str
    rule_version: str
    drivers: tuple[str, ...]
    reason: str
    domain_grades: Mapping[str, int]
    grade_range: tuple[int, int]


@dataclass(frozen=True)
class FinalGrade:
    """The grade that goes on the AE record, with the computed grade kept alongside for audit."""

    grade: int
    computed: GradeResult
    overridden: bool
    override_reason: str

    @property
    def scale(self) -> str:
        return self.computed.scale

    @property
    def rule_version(self) -> str:
        return self.computed.rule_version


def _result(
    rules: Mapping[str, Any], domain_grades: dict[str, int], reasons: dict[str, str], none_reason: str
) -> GradeResult:
    grade = max(domain_grades.values())
    drivers = tuple(domain for domain, value in domain_grades.items() if value == grade and grade > 0)
    reason = "; ".join(reasons[d] for d in drivers) if drivers else none_reason
    return GradeResult(
        grade=grade,
        scale=rules["scale"],
        rule_version=rules["version"],
        drivers=drivers,
        reason=reason,
        domain_grades=dict(domain_grades),
        grade_range=tuple(rules["grade_range"]),
    )


def _bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InputError(field, f"Expected True or False, got {value!r}.")
    return value


def _count(field: str, value: object, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int) or value < 0 or (maximum is not None and value > maximum):
        upper = f" to {maximum}" if maximum is not None else " or more"
        raise InputError(field, f"Expected a whole number from 0{upper}, got {value!r}.")
    return value


# ---------------------------------------------------------------------------------------------
# CRS, ASTCT 2019 (docs/domain.md §3.1)
# ---------------------------------------------------------------------------------------------


class Hypotension(StrEnum):
    NONE = "none"
    NO_VASOPRESSOR = "no_vasopressor"
    ONE_VASOPRESSOR = "one_vasopressor"  # with or without vasopressin
    MULTIPLE_VASOPRESSORS = "multiple_vasopressors"  # excluding vasopressin


class OxygenSupport(StrEnum):
    NONE = "none"
    LOW_FLOW = "low_flow"  # nasal cannula <= 6 L/min, or blow-by
    HIGH_FLOW = "high_flow"  # nasal cannula > 6 L/min, facemask, non-rebreather, Venturi
    POSITIVE_PRESSURE = "positive_pressure"  # CPAP, BiPAP, intubation / mechanical ventilation


class OxygenDevice(StrEnum):
    NONE = "none"
    NASAL_CANNULA = "nasal_cannula"  # low- or high-flow depending on the flow rate
    BLOW_BY = "blow_by"
    FACEMASK = "facemask"
    NON_REBREATHER = "non_rebreather"
    VENTURI = "venturi"
    CPAP = "cpap"
    BIPAP = "bipap"
    MECHANICAL_VENTILATION = "mechanical_ventilation"


_DEVICE_SUPPORT = {
    OxygenDevice.NONE: OxygenSupport.NONE,
    OxygenDevice.BLOW_BY: OxygenSupport.LOW_FLOW,
    OxygenDevice.FACEMASK: OxygenSupport.HIGH_FLOW,
    OxygenDevice.NON_REBREATHER: OxygenSupport.HIGH_FLOW,
    OxygenDevice.VENTURI: OxygenSupport.HIGH_FLOW,
    OxygenDevice.CPAP: OxygenSupport.POSITIVE_PRESSURE,
    OxygenDevice.BIPAP: OxygenSupport.POSITIVE_PRESSURE,
    OxygenDevice.MECHANICAL_VENTILATION: OxygenSupport.POSITIVE_PRESSURE,
}


def classify_oxygen(
    device: OxygenDevice | str, flow_l_min: float | None = None, *, rules: Mapping[str, Any] | None = None
) -> OxygenSupport:
    """ASTCT oxygen category from the device and, for a nasal cannula, the flow rate.

    A nasal cannula needs its flow: <= 6 L/min is low-flow (grade 2), > 6 L/min is high-flow (grade 3).
    """
    rules = rules or get_rules("crs")
    try:
        device = OxygenDevice(device)
    except ValueError:
        raise InputError("oxygen_device", f"Unknown oxygen device {device!r}.") from None
    if device is not OxygenDevice.NASAL_CANNULA:
        return _DEVICE_SUPPORT[device]
    if flow_l_min is None or isinstance(flow_l_min, bool) or flow_l_min <= 0:
        raise InputError("oxygen_flow_l_min", "A nasal cannula needs a flow rate above 0 L/min.")
    if flow_l_min <= rules["low_flow_max_l_min"]:
        return OxygenSupport.LOW_FLOW
    return OxygenSupport.HIGH_FLOW


def classify_hypotension(
    *, hypotension: bool, vasopressors_excluding_vasopressin: int, vasopressin: bool
) -> Hypotension:
    """ASTCT hypotension category from the pressor count.

    Vasopressin does not count towards "multiple": vasopressin alone, or one other pressor with or
    without vasopressin, is one vasopressor (grade 3); two or more non-vasopressin pressors is grade 4.
    """
    hypotension = _bool("hypotension", hypotension)
    pressors = _count("vasopressors_excluding_vasopressin", vasopressors_excluding_vasopressin)
    vasopressin = _bool("vasopressin", vasopressin)
    if (pressors or vasopressin) and not hypotension:
        raise InputError("hypotension", "Vasopressors are recorded, so hypotension must be recorded too.")
    if pressors >= 2:
        return Hypotension.MULTIPLE_VASOPRESSORS
    if pressors == 1 or vasopressin:
        return Hypotension.ONE_VASOPRESSOR
    return Hypotension.NO_VASOPRESSOR if hypotension else Hypotension.NONE


@dataclass(frozen=True)
class CRSInputs:
    """Structured CRS findings at the worst time point. Fever, hypotension and hypoxia are recorded
    only when not attributable to another cause (the investigator's judgement)."""

    max_temperature_c: float | None
    fever_masked: bool = False  # fever >= 38 °C suppressed by antipyretics or anti-cytokine therapy
    hypotension: Hypotension | str = Hypotension.NONE
    oxygen: OxygenSupport | str = OxygenSupport.NONE
    death_due_to_crs: bool = False


def grade_crs(inputs: CRSInputs, *, rules: Mapping[str, Any] | None = None) -> GradeResult:
    """ASTCT CRS grade 0-5 (0 = criteria for CRS not met).

    - Fever >= 38.0 °C is required for any grade unless it is masked by antipyretic or anti-cytokine
      therapy; then hypotension and hypoxia alone drive the grade (and with neither, the CRS that
      was treated is grade 1).
    - The grade is the more severe of hypotension and hypoxia; with fever and neither, grade 1.
    - Death due to CRS is grade 5.
    """
    rules = rules or get_rules("crs")
    try:
        hypotension = Hypotension(inputs.hypotension)
    except ValueError:
        raise InputError("hypotension", f"Unknown hypotension category {inputs.hypotension!r}.") from None
    try:
        oxygen = OxygenSupport(inputs.oxygen)
    except ValueError:
        raise InputError("oxygen", f"Unknown oxygen category {inputs.oxygen!r}.") from None
    temperature = inputs.max_temperature_c
    if temperature is not None and (isinstance(temperature, bool) or not 25 <= temperature <= 45):
        raise InputError("max_temperature_c", f"Temperature {temperature!r} °C is not plausible.")
    masked = _bool("fever_masked", inputs.fever_masked)
    death = _bool("death_due_to_crs", inputs.death_due_to_crs)

    threshold = rules["fever_threshold_c"]
    febrile = temperature is not None and temperature >= threshold
    if death:
        return _result(
            rules, {"death": rules["death_grade"]}, {"death": "death due to CRS with no other principal cause"}, ""
        )
    if not (febrile or masked):
        shown = "not recorded" if temperature is None else f"{temperature} °C"
        return _result(
            rules,
            {"fever": 0},
            {},
            f"no CRS: fever >= {threshold} °C is required (max temperature {shown}) and is not masked by therapy",
        )
    fever_reason = "fever masked by antipyretic/anti-cytokine therapy" if masked and not febrile else "fever"
    grades = {
        "fever": rules["grade_without_organ_support"],
        "hypotension": rules["hypotension_grades"][hypotension.value],
        "oxygen": rules["oxygen_grades"][oxygen.value],
    }
    reasons = {
        "fever": f"{fever_reason} without hypotension or hypoxia",
        "hypotension": f"hypotension: {hypotension.value.replace('_', ' ')}",
        "oxygen": f"hypoxia: {oxygen.value.replace('_', ' ')} oxygen",
    }
    # Fever's grade 1 never ties a higher organ-support grade, so it drives only when nothing else does.
    return _result(rules, grades, reasons, "")


# ---------------------------------------------------------------------------------------------
# ICANS, ASTCT 2019 (docs/domain.md §3.2)
# ---------------------------------------------------------------------------------------------


class Consciousness(StrEnum):
    ALERT = "alert"
    AWAKENS_SPONTANEOUSLY = "awakens_spontaneously"
    AWAKENS_TO_VOICE = "awakens_to_voice"
    AWAKENS_TO_TACTILE = "awakens_to_tactile"
    UNAROUSABLE = "unarousable"  # or needs vigorous/repeated tactile stimuli; stupor; coma


class Seizure(StrEnum):
    NONE = "none"
    RAPIDLY_RESOLVING = "rapidly_resolving"
    LIFE_THREATENING = "life_threatening"  # > 5 min, or repetitive without return to baseline


class MotorFinding(StrEnum):
    NONE = "none"
    DEEP_FOCAL_WEAKNESS = "deep_focal_weakness"  # hemiparesis, paraparesis


class RaisedICP(StrEnum):
    NONE = "none"
    FOCAL_OEDEMA = "focal_oedema"
    DIFFUSE_OEDEMA = "diffuse_oedema"  # or posturing, CN VI palsy, papilloedema, Cushing's triad


def ice_score(
    *,
    orientation: int,
    naming: int,
    commands: int | bool,
    writing: int | bool,
    attention: int | bool,
    rules: Mapping[str, Any] | None = None,
) -> int:
    """ICE score 0-10: orientation (year, month, city, hospital) 0-4, naming three objects 0-3,
    following simple commands 0-1, writing a standard sentence 0-1, counting back from 100 by 10 0-1."""
    rules = rules or get_rules("icans")
    values = {"orientation": orientation, "naming": naming, "commands": commands, "writing": writing}
    values["attention"] = attention
    return sum(_count(item, values[item], maximum) for item, maximum in rules["ice_items"].items())


@dataclass(frozen=True)
class ICANSInputs:
    """Structured ICANS findings at the worst time point, each not attributable to another cause.

    Tremor, myoclonus and intracranial haemorrhage are not ICANS (grade them by CTCAE instead).
    """

    age_years: int
    consciousness: Consciousness | str = Consciousness.ALERT
    ice_score: int | None = None  # patients > 12 years
    capd_score: int | None = None  # children <= 12 years, or developmental delay
    developmental_delay: bool = False
    seizure: Seizure | str = Seizure.NONE
    motor: MotorFinding | str = MotorFinding.NONE
    raised_icp: RaisedICP | str = RaisedICP.NONE
    death_due_to_icans: bool = False


def _enum(enum_class: type[StrEnum], field: str, value: object) -> Any:
    try:
        return enum_class(value)
    except ValueError:
        raise InputError(field, f"Unknown value {value!r}.") from None


def _band(bands: Any, score: int) -> int:
    for low, high, grade in bands:
        if low <= score <= high:
            return grade
    raise AssertionError(f"score {score} is outside every band")  # pragma: no cover - bands cover the range


def grade_icans(inputs: ICANSInputs, *, rules: Mapping[str, Any] | None = None) -> GradeResult:
    """ASTCT ICANS grade 0-5: the worst of the encephalopathy score (ICE, or CAPD for children <= 12
    or with developmental delay), level of consciousness, seizure, motor findings and raised ICP.

    Special rules: ICE 0 in an awake patient (e.g. global aphasia) is grade 3; an unarousable patient
    cannot perform ICE/CAPD, which is grade 4. Death due to ICANS is grade 5.
    """
    rules = rules or get_rules("icans")
    age = _count("age_years", inputs.age_years, 130)
    consciousness = _enum(Consciousness, "consciousness", inputs.consciousness)
    seizure = _enum(Seizure, "seizure", inputs.seizure)
    motor = _enum(MotorFinding, "motor", inputs.motor)
    icp = _enum(RaisedICP, "raised_icp", inputs.raised_icp)
    delay = _bool("developmental_delay", inputs.developmental_delay)
    death = _bool("death_due_to_icans", inputs.death_due_to_icans)
    unarousable = consciousness is Consciousness.UNAROUSABLE
    uses_capd = age <= rules["capd_max_age_years"] or delay

    grades: dict[str, int] = {}
    reasons: dict[str, str] = {}
    if uses_capd:
        if inputs.ice_score is not None:
            raise InputError(
                "ice_score", "Children aged 12 or under, or with developmental delay, are assessed with CAPD."
            )
        if unarousable:
            if inputs.capd_score is not None:
                raise InputError("capd_score", "An unarousable patient cannot perform CAPD; leave the score blank.")
            grades["capd"] = rules["capd_unable_grade"]
            reasons["capd"] = "unable to perform CAPD (unarousable)"
        elif inputs.capd_score is not None:
            capd = _count("capd_score", inputs.capd_score, 32)
            grades["capd"] = _band(rules["capd_bands"], capd)
            reasons["capd"] = f"CAPD {capd}"
    else:
        if inputs.capd_score is not None:
            raise InputError("capd_score", "Patients over 12 without developmental delay are assessed with ICE.")
        if unarousable:
            if inputs.ice_score not in (None, 0):
                raise InputError("ice_score", "An unarousable patient cannot perform ICE; the score is 0.")
            grades["ice"] = rules["ice_unarousable_grade"]
            reasons["ice"] = "ICE 0, unarousable (cannot perform the test)"
        elif inputs.ice_score is not None:
            ice = _count("ice_score", inputs.ice_score, 10)
            grades["ice"] = _band(rules["ice_bands"], ice)
            reasons["ice"] = f"ICE {ice}" + (" while awake (e.g. global aphasia)" if ice == 0 else "")
    grades["consciousness"] = rules["consciousness_grades"][consciousness.value]
    reasons["consciousness"] = f"depressed consciousness: {consciousness.value.replace('_', ' ')}"
    grades["seizure"] = rules["seizure_grades"][seizure.value]
    reasons["seizure"] = f"seizure: {seizure.value.replace('_', ' ')}"
    grades["motor"] = rules["motor_grades"][motor.value]
    reasons["motor"] = "deep focal motor weakness"
    grades["raised_icp"] = rules["icp_grades"][icp.value]
    reasons["raised_icp"] = f"raised ICP/cerebral oedema: {icp.value.replace('_', ' ')}"
    if death:
        grades["death"] = rules["death_grade"]
        reasons["death"] = "death due to ICANS with no other principal cause"
    return _result(rules, grades, reasons, "no ICANS: every domain is normal")


# ---------------------------------------------------------------------------------------------
# Infusion-related reaction, CTCAE v5 (docs/domain.md §3.3)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfusionReactionInputs:
    """Findings for an infusion-related reaction that occurred (grade 1 at least)."""

    interruption_or_treatment_needed: bool = False
    responds_promptly: bool | None = None  # required when interruption/treatment was needed
    prolonged_or_recurrent: bool = False
    hospitalisation_indicated: bool = False
    life_threatening: bool = False
    death: bool = False


def grade_infusion_reaction(inputs: InfusionReactionInputs, *, rules: Mapping[str, Any] | None = None) -> GradeResult:
    """CTCAE infusion-related reaction grade 1-5.

    A reaction that needed interruption or symptomatic treatment and did *not* respond promptly is
    "not rapidly responsive", i.e. grade 3.
    """
    rules = rules or get_rules("infusion_reaction")
    needed = _bool("interruption_or_treatment_needed", inputs.interruption_or_treatment_needed)
    if needed and inputs.responds_promptly is None:
        raise InputError(
            "responds_promptly", "Say whether the reaction responded promptly to the interruption/treatment."
        )
    prompt = inputs.responds_promptly
    if prompt is not None:
        prompt = _bool("responds_promptly", prompt)
    prolonged = _bool("prolonged_or_recurrent", inputs.prolonged_or_recurrent)
    hospital = _bool("hospitalisation_indicated", inputs.hospitalisation_indicated)
    life = _bool("life_threatening", inputs.life_threatening)
    death = _bool("death", inputs.death)

    grades = {
        "death": 5 if death else 0,
        "life_threatening": 4 if life else 0,
        "prolonged_or_recurrent": 3 if prolonged else 0,
        "hospitalisation": 3 if hospital else 0,
        "not_promptly_responsive": 3 if needed and not prompt else 0,
        "interruption_or_treatment": 2 if needed else 0,
        "reaction": 1,
    }
    reasons = {
        "death": "death",
        "life_threatening": "life-threatening; urgent intervention indicated",
        "prolonged_or_recurrent": "prolonged or recurrent after initial improvement",
        "hospitalisation": "hospitalisation indicated for sequelae",
        "not_promptly_responsive": "not rapidly responsive to interruption/symptomatic treatment",
        "interruption_or_treatment": "interruption or symptomatic treatment needed, prompt response",
        "reaction": "mild transient reaction; no interruption or intervention",
    }
    return _result(rules, grades, reasons, "")


# ---------------------------------------------------------------------------------------------
# Investigator override
# ---------------------------------------------------------------------------------------------


def apply_investigator_grade(
    computed: GradeResult,
    *,
    investigator_grade: int | None,
    reason: str | None = None,
) -> FinalGrade:
    """The grade to record. An investigator grade that differs from the computed grade needs a
    non-empty reason (``InputError`` on ``override_reason`` otherwise) and must lie in the scale's
    grade range (``InputError`` on ``investigator_grade``)."""
    low, high = computed.grade_range
    text = (reason or "").strip()
    if investigator_grade is None:
        return FinalGrade(grade=computed.grade, computed=computed, overridden=False, override_reason=text)
    if (
        isinstance(investigator_grade, bool)
        or not isinstance(investigator_grade, int)
        or not low <= investigator_grade <= high
    ):
        raise InputError("investigator_grade", f"A {computed.scale} grade is a whole number from {low} to {high}.")
    if investigator_grade == computed.grade:
        return FinalGrade(grade=computed.grade, computed=computed, overridden=False, override_reason=text)
    if not text:
        raise InputError(
            "override_reason",
            f"The investigator grade ({investigator_grade}) differs from the computed {computed.scale} grade "
            f"({computed.grade}); record the reason for the override.",
        )
    return FinalGrade(grade=investigator_grade, computed=computed, overridden=True, override_reason=text)
