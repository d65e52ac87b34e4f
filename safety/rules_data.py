"""Versioned rule data for the safety engines (docs/domain.md Part A, design principle: thresholds,
timelines and grading tables are data, not code).

Each rule family holds one or more versions. A version is an immutable mapping with at least a
``version`` key and a ``source`` citing the docs/domain.md section it encodes (for readers of the code;
no page or message shows it). The engines in ``grading``, ``ae_rules``, ``clocks`` and
``escalation`` take an optional ``rules`` mapping and default to the family's current version, so a
study can pin the version that was in force when its protocol was approved and every evaluation can
record which version produced it.

Never edit a published version in place: add a new version and move ``current`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


class InputError(ValueError):
    """Bad input to a rule engine. ``field`` names the offending input so that the service layer can
    show the message on the right form field (docs/style.md §4)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, set | frozenset):
        return frozenset(value)
    return value


# ---------------------------------------------------------------------------------------------
# Cell-therapy toxicity grading (docs/domain.md §3.1-3.3)
# ---------------------------------------------------------------------------------------------

CRS_ASTCT_2019_V1 = {
    "version": "crs-astct-2019.1",
    "scale": "ASTCT CRS consensus grading (Lee et al. 2019)",
    "source": "docs/domain.md Part A §3.1",
    # Fever >= this temperature (not attributable to another cause) is required for any grade,
    # unless it has been masked by antipyretic or anti-cytokine therapy.
    "fever_threshold_c": 38.0,
    # Nasal cannula flow at or below this is low-flow (grade 2); above it is high-flow (grade 3).
    "low_flow_max_l_min": 6.0,
    "grade_without_organ_support": 1,
    "hypotension_grades": {
        "none": 0,
        "no_vasopressor": 2,
        "one_vasopressor": 3,  # one vasopressor with or without vasopressin
        "multiple_vasopressors": 4,  # multiple vasopressors, vasopressin not counted
    },
    "oxygen_grades": {
        "none": 0,
        "low_flow": 2,  # nasal cannula <= 6 L/min or blow-by
        "high_flow": 3,  # nasal cannula > 6 L/min, facemask, non-rebreather, Venturi
        "positive_pressure": 4,  # CPAP, BiPAP, intubation and mechanical ventilation
    },
    "death_grade": 5,
    "grade_range": (0, 5),
}

ICANS_ASTCT_2019_V1 = {
    "version": "icans-astct-2019.1",
    "scale": "ASTCT ICANS consensus grading (Lee et al. 2019)",
    "source": "docs/domain.md Part A §3.2",
    # Children at or below this age (or with developmental delay) are assessed with CAPD, not ICE.
    "capd_max_age_years": 12,
    # ICE items and their maximum points; ICE = 10 means no impairment.
    "ice_items": {"orientation": 4, "naming": 3, "commands": 1, "writing": 1, "attention": 1},
    # (lowest score, highest score, grade)
    "ice_bands": [(10, 10, 0), (7, 9, 1), (3, 6, 2), (0, 2, 3)],
    # ICE 0 because the patient is unarousable and cannot perform the test. ICE 0 while awake
    # (e.g. global aphasia) stays in the 0-2 band, grade 3.
    "ice_unarousable_grade": 4,
    # DOMAIN: "CAPD <9 = G1/G2 (by consciousness), CAPD >= 9 = G3". A CAPD of 0 is a normal score
    # (no delirium features), so the grade 1 band starts at 1 as in Lee 2019 (CAPD 1-8).
    "capd_bands": [(0, 0, 0), (1, 8, 1), (9, 32, 3)],
    "capd_unable_grade": 4,
    "consciousness_grades": {
        "alert": 0,
        "awakens_spontaneously": 1,
        "awakens_to_voice": 2,
        "awakens_to_tactile": 3,
        "unarousable": 4,  # or needs vigorous/repeated tactile stimuli; stupor; coma
    },
    "seizure_grades": {
        "none": 0,
        "rapidly_resolving": 3,  # any clinical seizure resolving rapidly, or NCS on EEG resolving with intervention
        "life_threatening": 4,  # prolonged > 5 min, or repetitive without return to baseline
    },
    "motor_grades": {"none": 0, "deep_focal_weakness": 4},
    "icp_grades": {"none": 0, "focal_oedema": 3, "diffuse_oedema": 4},
    "death_grade": 5,
    "grade_range": (0, 5),
}

INFUSION_REACTION_CTCAE5_V1 = {
    "version": "irr-ctcae5.1",
    "scale": "CTCAE v5.0 Infusion related reaction",
    "source": "docs/domain.md Part A §3.3",
    "grade_text": {
        1: "Mild transient reaction; infusion interruption not indicated; intervention not indicated.",
        2: "Infusion interruption or symptomatic treatment indicated, with prompt response.",
        3: "Prolonged (not rapidly responsive to symptomatic medication and/or brief interruption); "
        "recurrence after initial improvement; hospitalisation indicated for sequelae.",
        4: "Life-threatening consequences; urgent intervention indicated.",
        5: "Death.",
    },
    "grade_range": (1, 5),
}

# ---------------------------------------------------------------------------------------------
# AE record consistency and causality (docs/domain.md §1.2, §1.4)
# ---------------------------------------------------------------------------------------------

AE_CONSISTENCY_V1 = {
    "version": "ae-consistency-2025.1",
    "source": "docs/domain.md Part A §1.4 (SDTM AE, CDASH AE)",
    "criteria": {
        "death": "AESDTH",
        "life_threatening": "AESLIFE",
        "hospitalisation": "AESHOSP",
        "disability": "AESDISAB",
        "congenital_anomaly": "AESCONG",
        "important_medical_event": "AESMIE",
    },
    # CDISC CT "OUT" (C66768); load the current release from NCI-EVS when wiring to models.
    "outcomes": [
        "RECOVERED/RESOLVED",
        "RECOVERING/RESOLVING",
        "NOT RECOVERED/NOT RESOLVED",
        "RECOVERED/RESOLVED WITH SEQUELAE",
        "FATAL",
        "UNKNOWN",
    ],
    "fatal_outcome": "FATAL",
    # AEENDTC blank <=> ongoing, and then AEOUT is one of these.
    "ongoing_outcomes": ["NOT RECOVERED/NOT RESOLVED", "RECOVERING/RESOLVING", "UNKNOWN"],
    "grade_range": (1, 5),
    # Treatment-emergent: onset on or after the infusion date (ADaM TRTEMFL). A partial onset date
    # that cannot be shown to be before the infusion date counts as treatment-emergent.
    "treatment_emergent_partial_dates": "conservative",
}

CAUSALITY_5POINT_V1 = {
    "version": "causality-5pt-2025.1",
    "source": "docs/domain.md Part A §1.2 (5-point protocol scale; NCT02428309 mapping)",
    "scale": ["not related", "unlikely", "possibly", "probably", "definitely"],
    "related": ["possibly", "probably", "definitely"],
}

CAUSALITY_WHO_UMC_V1 = {
    "version": "causality-who-umc-2025.1",
    "source": "docs/domain.md Part A §1.2 (WHO-UMC)",
    "scale": ["certain", "probable", "possible", "unlikely", "conditional", "unassessable"],
    # Conditional/unclassified and unassessable/unclassifiable cannot exclude a reasonable
    # possibility of causation, so they are mapped to "related" (the conservative choice).
    "related": ["certain", "probable", "possible", "conditional", "unassessable"],
}

# ---------------------------------------------------------------------------------------------
# Expedited reporting clocks (docs/domain.md §2.1-2.2)
# ---------------------------------------------------------------------------------------------

CLOCKS_V1 = {
    "version": "clocks-ich-fda-eu-2025.1",
    "source": "docs/domain.md Part A §2.1 (EU CTR Art 41(2)), §2.2 (ICH E2A, 21 CFR 312.32, EU CTR Art 42)",
    "site_to_sponsor_hours": 24,
    "fatal_or_life_threatening_days": 7,
    "other_susar_days": 15,
    "upgrade_days": 7,
    "follow_up_days": 15,
    # Status thresholds: a clock is "due soon" when this much time or less remains.
    "site_due_soon_hours": 6,
    "regulatory_due_soon_hours": 48,
}

# ---------------------------------------------------------------------------------------------
# Dose escalation and stopping rules (docs/domain.md §3.7-3.8)
# ---------------------------------------------------------------------------------------------

THREE_PLUS_THREE_V1 = {
    "version": "3+3-2025.1",
    "source": "docs/domain.md Part A §3.7",
    "cohort_size": 3,
    "expanded_size": 6,
    # At 3 evaluable: 0 DLT escalate, 1 DLT expand, >= 2 exceeds the MTD.
    "expand_dlts_of_3": 1,
    # At 6 evaluable: <= 1 DLT tolerable, >= 2 exceeds the MTD.
    "tolerable_max_dlts_of_6": 1,
}

BAYES_DLT_EXAMPLE_V1 = {
    "version": "bayes-dlt-beta-0.4-1.6-2025.1",
    "source": "docs/domain.md Part A §3.8 worked example",
    "prior_a": 0.4,
    "prior_b": 1.6,
    "theta0": 0.20,
    "cutoff": 0.90,
    "max_n": 24,
    # None: checked after every evaluable subject; otherwise a list of the n at which to check.
    "looks": None,
}

# ---------------------------------------------------------------------------------------------

_FAMILIES: dict[str, dict[str, Any]] = {
    "crs": {"current": CRS_ASTCT_2019_V1["version"], "versions": [CRS_ASTCT_2019_V1]},
    "icans": {"current": ICANS_ASTCT_2019_V1["version"], "versions": [ICANS_ASTCT_2019_V1]},
    "infusion_reaction": {
        "current": INFUSION_REACTION_CTCAE5_V1["version"],
        "versions": [INFUSION_REACTION_CTCAE5_V1],
    },
    "ae_consistency": {"current": AE_CONSISTENCY_V1["version"], "versions": [AE_CONSISTENCY_V1]},
    "causality": {
        "current": CAUSALITY_5POINT_V1["version"],
        "versions": [CAUSALITY_5POINT_V1, CAUSALITY_WHO_UMC_V1],
    },
    "clocks": {"current": CLOCKS_V1["version"], "versions": [CLOCKS_V1]},
    "three_plus_three": {"current": THREE_PLUS_THREE_V1["version"], "versions": [THREE_PLUS_THREE_V1]},
    "bayes_stopping": {"current": BAYES_DLT_EXAMPLE_V1["version"], "versions": [BAYES_DLT_EXAMPLE_V1]},
}

RULES: Mapping[str, Mapping[str, Any]] = _freeze(
    {
        family: {
            "current": spec["current"],
            "versions": {data["version"]: data for data in spec["versions"]},
        }
        for family, spec in _FAMILIES.items()
    }
)


def get_rules(family: str, version: str | None = None) -> Mapping[str, Any]:
    """The rule data of ``family`` at ``version`` (the family's current version when None)."""
    try:
        spec = RULES[family]
    except KeyError:
        raise InputError("rule_family", f"Unknown rule family {family!r}.") from None
    chosen = version or spec["current"]
    try:
        return spec["versions"][chosen]
    except KeyError:
        known = ", ".join(sorted(spec["versions"]))
        raise InputError("rule_version", f"Unknown {family} rule version {chosen!r}; known: {known}.") from None
