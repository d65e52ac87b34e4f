"""Every date against the participant's timeline, and a sane bound on every field: the death date,
visits after death, free-text length, control and bidirectional-override characters, Unicode
normalisation and plain decimals, through the services, the forms and the API."""

from __future__ import annotations

import datetime as dt
import unicodedata
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils.html import escape
from rest_framework.test import APIClient

from tests.factories import enrolled, infused, infusion_kwargs, screened
from trials import services
from trials.errors import RuleViolation
from trials.models import Disposition, Infusion, Participant, Visit
from trials.text import REASON_MAX, clean_identifier, clean_text, parse_plain_decimal

DAY0 = dt.datetime(2025, 2, 3, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    """Screened and consented 2025-01-06 (born 1985), infused 2025-02-03, day 7 done on 2025-02-10."""
    participant = infused(study, sites[0], coordinator_site_a)
    visit = participant.visits.get(definition__code="d7")
    services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 2, 10))
    return participant


def _death(participant, actor, death_date, disposition_date=dt.date(2025, 3, 1), channel="web"):
    return services.disposition_record(
        actor=actor,
        participant=participant,
        kind="death",
        disposition_date=disposition_date,
        death_date=death_date,
        channel=channel,
    )


@pytest.mark.parametrize(
    ("death_date", "message"),
    [
        (dt.date(2025, 2, 9), "The death date 2025-02-09 is before the last recorded visit on 2025-02-10."),
        (dt.date(2025, 1, 1), "The death date 2025-01-01 is before screening on 2025-01-06."),
        (dt.date(1980, 5, 1), "The death date 1980-05-01 is before the participant's year of birth (1985)."),
    ],
    ids=["before-the-last-visit", "before-screening", "before-birth"],
)
def test_a_death_date_off_the_timeline_is_refused(participant, coordinator_site_a, row_counts, death_date, message):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _death(participant, coordinator_site_a, death_date)

    assert message in exc.value.message_dict["death_date"]
    assert row_counts() == before


def test_a_death_date_after_the_last_visit_is_accepted(participant, coordinator_site_a):
    disposition = _death(participant, coordinator_site_a, dt.date(2025, 2, 20))

    assert disposition.death_date == dt.date(2025, 2, 20)


def test_the_death_date_is_checked_on_the_form_too(client, participant, coordinator_site_a):
    client.force_login(coordinator_site_a)

    response = client.post(
        f"/participants/{participant.pk}/disposition/",
        {"kind": "death", "disposition_date": "2025-03-01", "death_date": "1980-05-01"},
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert escape("The death date 1980-05-01 is before the participant's year of birth (1985).") in page
    assert escape("The death date 1980-05-01 is before the last recorded visit on 2025-02-10.") in page
    assert not Disposition.objects.exists()


def test_the_death_date_is_checked_through_the_api(participant, coordinator_site_a):
    api = APIClient()
    api.force_authenticate(coordinator_site_a)

    response = api.post(
        f"/api/v1/participants/{participant.pk}/disposition/",
        {"kind": "death", "disposition_date": "2025-03-01", "death_date": "2025-02-09"},
        format="json",
    )

    assert response.status_code == 400
    assert "death_date" in response.json()
    assert not Disposition.objects.exists()


def test_a_safety_visit_after_the_death_is_refused(participant, coordinator_site_a):
    _death(participant, coordinator_site_a, dt.date(2025, 2, 20))

    with pytest.raises(RuleViolation) as exc:
        services.visit_add_unscheduled(
            actor=coordinator_site_a,
            participant=Participant.objects.get(pk=participant.pk),
            actual_date=dt.date(2025, 2, 25),
            reason="follow-up",
            safety_follow_up=True,
        )

    assert exc.value.message_dict == {
        "actual_date": ["The visit date 2025-02-25 is after the participant's death on 2025-02-20."]
    }


# ---------------------------------------------------------------------------------------------
# Free text, identifiers, Unicode and numbers
# ---------------------------------------------------------------------------------------------


def test_a_megabyte_screen_failure_reason_is_refused(study, sites, coordinator_site_a, row_counts):
    participant = screened(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.participant_screen_fail(actor=coordinator_site_a, participant=participant, reason="x" * 1_000_000)

    assert exc.value.message_dict == {
        "reason": [
            f"The reason for the screen failure is too long: 1,000,000 characters, at most {REASON_MAX:,} are allowed."
        ]
    }
    assert row_counts() == before


def test_the_screen_failure_form_bounds_the_reason(client, study, sites, coordinator_site_a):
    participant = screened(study, sites[0], coordinator_site_a)
    client.force_login(coordinator_site_a)

    response = client.post(f"/participants/{participant.pk}/screen-failure/", {"reason": "x" * 1_000_000})

    assert response.status_code == 200
    assert f"Ensure this value has at most {REASON_MAX} characters" in response.content.decode()
    assert Participant.objects.get(pk=participant.pk).screen_failure_reason == ""


@pytest.mark.parametrize(
    ("lot", "what"),
    [("LOT\x00001", "U+0000 NUL"), ("LOT\u202e100", "U+202E RIGHT-TO-LEFT OVERRIDE"), ("LOT\u2066A", "U+2066")],
    ids=["nul", "rlo", "isolate"],
)
def test_control_and_bidi_characters_are_refused_in_the_product_lot(
    study, sites, coordinator_site_a, row_counts, lot, what
):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.infusion_record(
            actor=coordinator_site_a,
            participant=participant,
            **{**infusion_kwargs(participant, start=DAY0), "manufacturing_lot": lot},
        )

    assert list(exc.value.message_dict) == ["manufacturing_lot"]
    assert what in exc.value.message_dict["manufacturing_lot"][0]
    assert row_counts() == before


def test_the_infusion_form_refuses_a_bidi_override_in_the_lot(client, study, sites, coordinator_site_a):
    participant = enrolled(study, sites[0], coordinator_site_a)
    client.force_login(coordinator_site_a)
    data = {
        "manufacturing_lot": "LOT\u202e100",
        "apheresis_date": "2025-01-13",
        "release_passed": "on",
        "viability_pct": "92.5",
        "total_viable_cells": "70000000",
        "weight_kg": "1e2",
        "time_zone": "UTC",
        "start_at": "2025-02-03T09:00",
        "end_at": "2025-02-03T09:45",
    }

    response = client.post(f"/participants/{participant.pk}/infusion/", data)

    assert response.status_code == 200
    page = response.content.decode()
    assert "bidirectional override character (U+202E RIGHT-TO-LEFT OVERRIDE)" in page
    assert escape("must be written as a plain decimal number such as 72.5 (not '1e2')") in page
    assert not Infusion.objects.exists()


def test_text_is_stored_in_nfc(study, sites, coordinator_site_a):
    participant = enrolled(study, sites[0], coordinator_site_a)
    decomposed = "Parace\u0301tamol 1 g"  # e + combining acute accent

    infusion = services.infusion_record(
        actor=coordinator_site_a,
        participant=participant,
        **{**infusion_kwargs(participant, start=DAY0), "premedication": decomposed},
    )

    assert Infusion.objects.get(pk=infusion.pk).premedication == unicodedata.normalize("NFC", decomposed)
    assert len(Infusion.objects.get(pk=infusion.pk).premedication) == len(decomposed) - 1


def test_a_weight_in_exponent_notation_is_refused_by_the_visit_form_and_the_api(
    client, participant, coordinator_site_a
):
    visit = participant.visits.get(definition__code="d28")
    client.force_login(coordinator_site_a)

    response = client.post(f"/visits/{visit.pk}/record/", {"actual_date": "2025-03-03", "weight_kg": "1e2"})
    assert response.status_code == 200
    assert Visit.objects.get(pk=visit.pk).actual_date is None

    api = APIClient()
    api.force_authenticate(coordinator_site_a)
    refused = api.post(
        f"/api/v1/visits/{visit.pk}/record/",
        {"actual_date": "2025-03-03", "weight_kg": "1e2", "version": visit.version},
        format="json",
    )
    assert refused.status_code == 400
    assert "weight_kg" in refused.json()
    accepted = api.post(
        f"/api/v1/visits/{visit.pk}/record/",
        {"actual_date": "2025-03-03", "weight_kg": "100", "version": visit.version},
        format="json",
    )
    assert accepted.status_code == 200, accepted.json()
    assert Visit.objects.get(pk=visit.pk).weight_kg == Decimal("100")


def test_the_api_bounds_free_text(participant, coordinator_site_a):
    api = APIClient()
    api.force_authenticate(coordinator_site_a)
    visit = participant.visits.get(definition__code="d28")

    response = api.post(f"/api/v1/visits/{visit.pk}/missed/", {"reason": "y" * (REASON_MAX + 1)}, format="json")

    assert response.status_code == 400
    assert "reason" in response.json()
    assert not Visit.objects.get(pk=visit.pk).missed


@pytest.mark.parametrize("value", ["1e2", "NaN", "Infinity", "-inf", "1E+2", "0x10"])
def test_only_plain_decimals_are_numbers(value):
    with pytest.raises(ValidationError):
        parse_plain_decimal(value, label="Weight")


@pytest.mark.parametrize(
    ("value", "expected"), [("72.5", Decimal("72.5")), (" 70 ", Decimal("70")), (70, Decimal("70"))]
)
def test_plain_decimals_are_read(value, expected):
    assert parse_plain_decimal(value) == expected


def test_free_text_keeps_line_breaks_and_identifiers_do_not():
    assert clean_text("line 1\r\nline 2\tend") == "line 1\r\nline 2\tend"
    with pytest.raises(ValidationError, match="line break or tab"):
        clean_identifier("LOT\n1", label="The lot")
    with pytest.raises(ValidationError, match="ZERO WIDTH SPACE"):
        clean_identifier("LOT\u200b1", label="The lot")
