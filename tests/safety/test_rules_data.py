"""Versioned rule data (docs/domain.md Part A design principle: thresholds and tables are data)."""

from __future__ import annotations

import pytest

from safety.rules_data import RULES, InputError, get_rules


def test_every_rule_version_names_itself_and_cites_its_domain_section():
    for family, spec in RULES.items():
        assert spec["current"] in spec["versions"], family
        for key, data in spec["versions"].items():
            assert data["version"] == key
            assert data["source"].startswith("docs/domain.md Part A §"), key


def test_the_current_version_is_returned_by_default_and_a_pinned_one_on_request():
    assert get_rules("causality")["version"] == "causality-5pt-2025.1"
    assert get_rules("causality", "causality-who-umc-2025.1")["version"] == "causality-who-umc-2025.1"


@pytest.mark.parametrize(
    ("family", "version", "field"), [("crs", "crs-v0", "rule_version"), ("sofa", None, "rule_family")]
)
def test_an_unknown_family_or_version_is_refused(family, version, field):
    with pytest.raises(InputError) as error:
        get_rules(family, version)
    assert error.value.field == field


def test_published_rule_data_cannot_be_changed_in_place():
    rules = get_rules("crs")
    with pytest.raises(TypeError):
        rules["fever_threshold_c"] = 37.5  # type: ignore[index]
    with pytest.raises(TypeError):
        rules["oxygen_grades"]["low_flow"] = 1  # type: ignore[index]
    assert isinstance(get_rules("ae_consistency")["ongoing_outcomes"], tuple)
