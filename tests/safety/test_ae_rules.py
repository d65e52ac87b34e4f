"""AE consistency checks, partial dates, treatment-emergence and causality (docs/domain.md Part A §1.2, §1.4)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety.ae_rules import (
    AEFields,
    PartialDate,
    causality_is_related,
    check_ae_consistency,
    treatment_emergent,
)
from safety.rules_data import InputError, get_rules

PROPERTY = settings(database=None, derandomize=True, deadline=None, max_examples=300)
UTC = dt.UTC

# A consistent, non-serious, resolved grade 2 AE; each test changes what it checks.
BASE = AEFields(
    onset="2025-03-04",
    end="2025-03-10",
    grade=2,
    outcome="RECOVERED/RESOLVED",
    consent_date=dt.date(2025, 1, 15),
    infusion_at=dt.datetime(2025, 2, 3, 10, 0, tzinfo=UTC),
)


def check(**changes):
    return check_ae_consistency(dataclasses.replace(BASE, **changes))


def test_a_consistent_ae_has_no_violations():
    assert check() == {}


# ---------------------------------------------------------------------------------------------
# Partial dates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts", "precision"),
    [("2025", (2025, None, None), 1), ("2025-03", (2025, 3, None), 2), ("2025-03-04", (2025, 3, 4), 3)],
)
def test_partial_iso_dates_parse_at_their_precision(text, parts, precision):
    parsed = PartialDate.parse(text)
    assert (parsed.year, parsed.month, parsed.day) == parts
    assert parsed.precision == precision
    assert str(parsed) == text


@pytest.mark.parametrize(
    "text", ["", "25-03", "2025/03/04", "2025-13", "2025-02-30", "2025-3-4", "2025-03-04T10:00", "UN-UNK-2025"]
)
def test_malformed_or_impossible_dates_are_refused(text):
    with pytest.raises(InputError) as error:
        PartialDate.parse(text, field="onset")
    assert error.value.field == "onset"


@pytest.mark.parametrize(
    ("first", "second", "order"),
    [
        ("2024", "2025-03", -1),
        ("2025-02", "2025-03-04", -1),
        ("2025-02-28", "2025-03", -1),
        ("2025-03-05", "2025-03-04", 1),
        ("2025-03-04", "2025-03-04", 0),
        ("2025", "2025-03-04", None),  # same year: cannot be ordered
        ("2025-03", "2025-03-04", None),  # same month: cannot be ordered
        ("2025-03", "2025-03", None),  # two partial dates in the same month may differ
        ("2025-12", "2025", None),
    ],
)
def test_partial_dates_compare_at_their_common_precision(first, second, order):
    assert PartialDate.parse(first).compare(PartialDate.parse(second)) == order


def test_the_latest_day_of_a_partial_date_respects_month_lengths():
    assert PartialDate.parse("2024-02").latest() == dt.date(2024, 2, 29)
    assert PartialDate.parse("2025-02").latest() == dt.date(2025, 2, 28)
    assert PartialDate.parse("2025-12").latest() == dt.date(2025, 12, 31)
    assert PartialDate.parse("2025").earliest() == dt.date(2025, 1, 1)


@st.composite
def partial_dates(draw):
    day = draw(st.dates(min_value=dt.date(2023, 1, 1), max_value=dt.date(2026, 12, 31)))
    precision = draw(st.integers(min_value=1, max_value=3))
    return PartialDate(day.year, day.month if precision >= 2 else None, day.day if precision == 3 else None)


@PROPERTY
@given(first=partial_dates(), second=partial_dates())
def test_common_precision_comparison_agrees_with_the_intervals_the_dates_cover(first, second):
    order = first.compare(second)
    assert (order == -1) == (first.latest() < second.earliest())
    assert (order == 1) == (first.earliest() > second.latest())
    assert (order == 0) == (first.is_complete and second.is_complete and first == second)
    assert second.compare(first) == (None if order is None else -order)


# ---------------------------------------------------------------------------------------------
# Seriousness
# ---------------------------------------------------------------------------------------------


def test_a_serious_ae_without_any_criterion_is_refused():
    assert check(serious=True) == {"serious": "A serious AE needs at least one seriousness criterion."}


@pytest.mark.parametrize(
    "criterion",
    ["life_threatening", "hospitalisation", "disability", "congenital_anomaly", "important_medical_event"],
)
def test_a_criterion_without_the_serious_flag_is_refused(criterion):
    problems = check(**{criterion: True})
    assert list(problems) == ["serious"]
    assert criterion in problems["serious"]


@pytest.mark.parametrize(
    "criterion",
    ["life_threatening", "hospitalisation", "disability", "congenital_anomaly", "important_medical_event"],
)
def test_a_serious_ae_with_one_criterion_is_accepted(criterion):
    assert check(serious=True, **{criterion: True}) == {}


def test_grade_and_seriousness_are_independent():
    # docs/domain.md §1.1: a grade 3 headache can be non-serious and a grade 2 event serious.
    assert check(grade=3) == {}
    assert check(grade=2, serious=True, hospitalisation=True) == {}


# ---------------------------------------------------------------------------------------------
# Grade 5, fatal outcome and death
# ---------------------------------------------------------------------------------------------

FATAL = {"grade": 5, "outcome": "FATAL", "death": True, "serious": True, "end": "2025-03-12"}


def test_a_fatal_grade_5_ae_with_the_death_criterion_is_accepted():
    assert check(**FATAL) == {}


def test_grade_5_without_fatal_outcome_or_death_criterion_is_refused():
    problems = check(grade=5)
    assert set(problems) == {"outcome", "death"}
    assert "FATAL" in problems["outcome"]


def test_fatal_outcome_needs_grade_5():
    assert check(**{**FATAL, "grade": 4}) == {"grade": "An AE with outcome FATAL is grade 5."}


def test_fatal_outcome_needs_the_death_criterion():
    problems = check(**{**FATAL, "death": False, "hospitalisation": True})
    assert set(problems) == {"death"}


def test_the_death_criterion_needs_a_fatal_outcome():
    problems = check(death=True, serious=True, grade=4)
    assert problems == {"outcome": "An AE that results in death has outcome FATAL."}


def test_fatal_outcome_without_a_ctcae_grade_is_checked_only_against_death():
    # Protocols grading by AESEV record no AETOXGR; the grade rule then does not apply.
    assert check(**{**FATAL, "grade": None}) == {}


@pytest.mark.parametrize("grade", [0, 6, True, 2.5])
def test_a_grade_outside_1_to_5_is_refused(grade):
    assert set(check(grade=grade)) == {"grade"}


def test_two_violations_on_one_field_are_both_reported():
    problems = check(grade=5, death=True, serious=True)
    assert problems["outcome"].count("FATAL") == 2


# ---------------------------------------------------------------------------------------------
# Outcome and ongoing status
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["NOT RECOVERED/NOT RESOLVED", "RECOVERING/RESOLVING", "UNKNOWN"])
def test_an_ongoing_ae_without_end_date_and_an_open_outcome_is_accepted(outcome):
    assert check(ongoing=True, end=None, outcome=outcome) == {}


@pytest.mark.parametrize("outcome", ["RECOVERED/RESOLVED", "RECOVERED/RESOLVED WITH SEQUELAE", "FATAL"])
def test_an_ongoing_ae_with_a_closed_outcome_is_refused(outcome):
    problems = check(ongoing=True, end=None, outcome=outcome)
    assert "outcome" in problems
    assert "ongoing" in problems["outcome"]


def test_an_ongoing_ae_with_an_end_date_is_refused():
    problems = check(ongoing=True, outcome="RECOVERING/RESOLVING")
    assert problems == {"end": "An ongoing AE has no end date."}


def test_an_ae_that_is_not_ongoing_needs_an_end_date():
    assert check(end=None) == {"end": "End date is required unless the AE is ongoing."}


@pytest.mark.parametrize("outcome", ["NOT RECOVERED/NOT RESOLVED", "RECOVERING/RESOLVING", "UNKNOWN"])
def test_an_ended_ae_with_an_open_outcome_is_refused(outcome):
    assert set(check(outcome=outcome)) == {"outcome"}


@pytest.mark.parametrize(("outcome", "message"), [(None, "required"), ("", "required"), ("RESOLVED", "Unknown")])
def test_a_missing_or_unknown_outcome_is_refused(outcome, message):
    problems = check(outcome=outcome)
    assert set(problems) == {"outcome"}
    assert message in problems["outcome"]


# ---------------------------------------------------------------------------------------------
# Dates: end >= onset, onset >= consent
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("onset", "end"),
    [
        ("2025-03-04", "2025-03-04"),  # same day
        ("2025-03-04", "2025-03"),  # same month: undecidable, accepted
        ("2025-03", "2025-03-01"),
        ("2025", "2025-01-01"),  # same year: undecidable, accepted
        ("2025-03-04", "2026"),
    ],
)
def test_an_end_date_not_provably_before_onset_is_accepted(onset, end):
    assert check(onset=onset, end=end) == {}


@pytest.mark.parametrize(
    ("onset", "end"),
    [("2025-03-04", "2025-03-03"), ("2025-03-04", "2025-02"), ("2025-03", "2025-02-28"), ("2025", "2024-12")],
)
def test_an_end_date_provably_before_onset_is_refused(onset, end):
    problems = check(onset=onset, end=end, consent_date=dt.date(2024, 1, 1))
    assert problems == {"end": f"End date {end} is before onset {onset}."}


def test_a_malformed_onset_or_end_date_is_refused_on_its_field():
    problems = check(onset="2025-02-30", end="03/10/2025")
    assert set(problems) == {"onset", "end"}


def test_a_missing_onset_is_refused():
    assert check(onset=None) == {"onset": "Onset date is required."}


@pytest.mark.parametrize("onset", ["2025-01-15", "2025-01", "2025", "2025-02-01"])
def test_an_onset_not_provably_before_consent_is_accepted(onset):
    assert check(onset=onset, end="2025-03-10") == {}


@pytest.mark.parametrize("onset", ["2025-01-14", "2024-12", "2024"])
def test_an_onset_before_consent_is_refused_as_medical_history(onset):
    problems = check(onset=onset, end="2025-03-10")
    assert set(problems) == {"onset"}
    assert "medical history" in problems["onset"]


# ---------------------------------------------------------------------------------------------
# Treatment-emergence
# ---------------------------------------------------------------------------------------------

INFUSION = dt.datetime(2025, 2, 3, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("onset", "emergent", "by_convention"),
    [
        ("2025-02-02", False, False),
        ("2025-02-03", True, True),  # the infusion day: no onset time, counted as emergent
        ("2025-02-04", True, False),
        ("2025-02", True, True),  # partial month of infusion: may be on/after, counted as emergent
        ("2025", True, True),
        ("2025-01", False, False),  # whole month before the infusion
        ("2024", False, False),
        ("2025-03", True, False),
    ],
)
def test_treatment_emergence_resolves_partial_dates_conservatively(onset, emergent, by_convention):
    result = treatment_emergent(onset, INFUSION)
    assert (result.emergent, result.decided_by_convention) == (emergent, by_convention)


def test_no_infusion_means_not_treatment_emergent():
    assert treatment_emergent("2025-02-03", None).emergent is False


def test_the_infusion_date_is_taken_in_the_site_time_zone_when_given():
    late_evening_utc = dt.datetime(2025, 2, 3, 23, 30, tzinfo=UTC)  # 4 Feb 10:30 in Sydney
    assert treatment_emergent("2025-02-03", late_evening_utc).emergent is True
    assert treatment_emergent("2025-02-03", late_evening_utc, tz=ZoneInfo("Australia/Sydney")).emergent is False


def test_a_naive_infusion_datetime_is_refused():
    with pytest.raises(InputError) as error:
        treatment_emergent("2025-02-03", dt.datetime(2025, 2, 3, 10, 0))  # noqa: DTZ001
    assert error.value.field == "infusion_at"


# ---------------------------------------------------------------------------------------------
# Causality
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "related"),
    [
        ("Not related", False),
        ("unlikely", False),
        ("Possibly", True),
        ("PROBABLY", True),
        (" definitely ", True),
    ],
)
def test_the_default_5_point_scale_counts_possibly_probably_definitely_as_related(value, related):
    assert causality_is_related(value) is related


def test_an_unknown_causality_value_is_refused():
    with pytest.raises(InputError) as error:
        causality_is_related("maybe", field="investigator_causality")
    assert error.value.field == "investigator_causality"


def test_a_study_can_pin_another_causality_rule():
    who = get_rules("causality", "causality-who-umc-2025.1")
    assert causality_is_related("possible", rules=who) is True
    assert causality_is_related("unlikely", rules=who) is False
    assert causality_is_related("unassessable", rules=who) is True  # cannot exclude: conservative
    strict = {**get_rules("causality"), "version": "strict", "related": ["probably", "definitely"]}
    assert causality_is_related("possibly", rules=strict) is False
