"""The casebook's audit-trail page: events grouped with their fields, labels and values as the forms
show them, filters by form, field, user and date, pages of events, and blinding."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest

from safety import services as safety_services
from tests.factories import admin_change, infused, member
from tests.safety import conftest as safety_fixtures
from tests.safety.conftest import serious_kwargs
from trials import audit_trail, services
from trials.models import RandomizationSlot, Role

CANARY = "ARM-ZX81Q"

ctcae = safety_fixtures.ctcae  # the CTCAE subset, as in the safety tests


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    return infused(study, sites[0], coordinator_site_a)


def _page(client, viewer, participant, **params) -> str:
    client.force_login(viewer)
    response = client.get(f"/participants/{participant.pk}/history/", params)
    assert response.status_code == 200
    return response.content.decode()


def _events(page: str) -> list[str]:
    return re.findall(r'<tbody class="audit-event">(.*?)</tbody>', page, flags=re.S)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_fields_and_values_read_as_the_forms_show_them(client, participant, coordinator_site_a, sites):
    page = _page(client, coordinator_site_a, participant, form="trials.participant")
    text = _text(page)
    creation = _text(_events(page)[-1])  # newest first: the screening is the last event
    assert "Subject code" in creation
    assert "S01-0001" in creation
    assert "Site" in creation
    assert "S01 Royal Infirmary" in creation
    assert "Sex" in creation
    assert "Female" in creation
    for internal in ("subject_code", "site_id", "is_locked", "created_at", "updated_at"):
        assert internal not in text
    eligibility = _text(_page(client, coordinator_site_a, participant, form="trials.eligibilityanswer"))
    assert "Aged 18 to 65 years" in eligibility  # the criterion's text, not "criterion 7"
    assert "Yes" in eligibility
    assert "No" in eligibility
    assert "True" not in eligibility


def test_one_entry_per_event_with_every_field_it_changed(client, participant, coordinator_site_a):
    visit = participant.visits.get(definition__code="d7")
    services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 2, 10))
    visit.refresh_from_db()
    services.visit_record(
        actor=coordinator_site_a,
        visit=visit,
        actual_date=dt.date(2025, 2, 11),
        reason="transcription error",
        expected_version=visit.version,
    )
    page = _page(client, coordinator_site_a, participant, form="trials.visit", field="actual date")
    correction = _text(_events(page)[0])
    assert "Visit" in correction
    assert "Day 7" in correction
    assert "Changed" in correction
    assert "Actual date 2025-02-10 2025-02-11" in correction
    assert "coord_a" in correction
    assert "transcription error" in correction
    screening = _events(_page(client, coordinator_site_a, participant, form="trials.participant"))[-1]
    assert screening.count("<tr>") > 5  # the creation's fields are grouped under one entry
    assert screening.count('rowspan="') == 3


def test_a_lock_reads_locked_and_shows_who_and_why(client, participant, data_manager):
    services.casebook_set_locked(actor=data_manager, participant=participant, locked=True, reason="database lock")
    event = _text(_events(_page(client, data_manager, participant))[0])
    assert "Locked" in event
    assert "Yes" in event
    assert "database lock" in event
    assert "dm" in event


def test_the_trail_filters_by_form_field_user_and_date(client, participant, coordinator_site_a, data_manager):
    services.casebook_set_locked(actor=data_manager, participant=participant, locked=True, reason="database lock")
    everything = _page(client, coordinator_site_a, participant)
    total = int(re.search(r"of (\d+)", everything).group(1))
    by_user = _page(client, coordinator_site_a, participant, user=str(data_manager.pk))
    assert len(_events(by_user)) == 1
    assert "database lock" in by_user
    by_form = _events(_page(client, coordinator_site_a, participant, form="trials.infusion"))
    assert by_form
    assert all("Infusion" in event for event in by_form)
    by_field = _events(_page(client, coordinator_site_a, participant, field="manufacturing lot"))
    assert len(by_field) == 1
    assert "LOT-0001" in by_field[0]
    assert "Weight" not in by_field[0]
    assert "No event matches" in _page(client, coordinator_site_a, participant, date_to="2020-01-01")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert f"of {total}" in _page(client, coordinator_site_a, participant, date_from=today, date_to=today)


@pytest.mark.parametrize(
    "params", [{"date_from": "not a date"}, {"form": "no.such"}, {"date_from": "2025-02-02", "date_to": "2025-01-01"}]
)
def test_bad_filters_are_shown_as_errors_not_failures(client, participant, coordinator_site_a, params):
    page = _page(client, coordinator_site_a, participant, **params)
    assert "field-error" in page
    assert _events(page)  # the trail is still shown, unfiltered


def test_the_trail_is_paginated_newest_first(client, participant, coordinator_site_a, monkeypatch):
    monkeypatch.setattr(audit_trail, "PAGE_SIZE", 5)
    page_one = _page(client, coordinator_site_a, participant)
    total = int(re.search(r"of (\d+)", page_one).group(1))
    assert total > audit_trail.PAGE_SIZE
    assert len(_events(page_one)) == audit_trail.PAGE_SIZE
    last = (total - 1) // audit_trail.PAGE_SIZE + 1
    last_page = _page(client, coordinator_site_a, participant, page=str(last))
    assert len(_events(last_page)) == total - (last - 1) * audit_trail.PAGE_SIZE
    assert "Screening" in _text(_events(last_page)[-1]) or "Subject code" in _text(_events(last_page)[-1])
    assert _page(client, coordinator_site_a, participant, page="nonsense").count("audit-event") == audit_trail.PAGE_SIZE
    times = re.findall(r'<time datetime="([^"]+)"', page_one)
    assert times == sorted(times, reverse=True)


def test_the_page_costs_the_same_few_queries_however_long_the_trail(client, participant, coordinator_site_a):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(coordinator_site_a)
    url = f"/participants/{participant.pk}/history/"
    with CaptureQueriesContext(connection) as before:
        client.get(url)
    for code in ("d7", "d28", "m3", "m6"):
        visit = participant.visits.get(definition__code=code)
        services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=visit.planned_date)
    with CaptureQueriesContext(connection) as after:
        client.get(url)
    assert len(after) == len(before) < 60  # one query per audited table, a few for the labels


def test_safety_records_of_the_casebook_are_in_its_trail(client, participant, coordinator_site_a, ctcae):
    ae = safety_services.adverse_event_record(
        actor=coordinator_site_a, participant=participant, **serious_kwargs(ctcae)
    )
    safety_services.crs_assessment_record(
        actor=coordinator_site_a,
        adverse_event=ae,
        assessed_at=dt.datetime(2025, 3, 1, 22, tzinfo=dt.UTC),
        max_temperature_c=Decimal("39.2"),
    )
    text = _text(_page(client, coordinator_site_a, participant))
    for form in ("Adverse event", "SAE case", "CRS assessment", "Expedited report"):
        assert form in text, form
    assert "Cytokine release syndrome" in text


def test_a_blinded_user_never_sees_the_allocation_even_by_asking_for_it(client, participant, study, sites):
    with admin_change("randomized, blinded design"):
        study.is_blinded = True
        study.save()
        RandomizationSlot.objects.create(
            study=study, cohort=participant.cohort, sequence=1, arm=CANARY, participant=participant
        )
    blinded = member("coord_blind", study, Role.COORDINATOR, sites[0])
    for params in ({}, {"form": "trials.randomizationslot"}, {"field": "arm"}):
        assert CANARY not in _page(client, blinded, participant, **params)
    unblinded = member("stats_unblinded", study, Role.STATISTICIAN, unblinded=True)
    assert CANARY in _page(client, unblinded, participant, form="trials.randomizationslot")
