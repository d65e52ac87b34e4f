"""The casebook API calls the same services as the forms: same rules, field messages on 400,
409 on stale writes, 404 outside the caller's scope, 403 for read-only roles."""

import datetime as dt

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import consented, infused
from trials.models import Infusion, Participant, ParticipantStatus, Visit


@pytest.fixture
def api(coordinator_site_a):
    client = APIClient()
    client.force_authenticate(coordinator_site_a)
    return client


def _screen(api, study, site="S01", **overrides):
    body = {"study": study.code, "site": site, "sex": "F", "birth_year": 1980, "screening_date": "2025-01-06"}
    return api.post("/api/v1/participants/", {**body, **overrides}, format="json")


def test_a_coordinator_walks_the_casebook_through_the_api(api, study):
    response = _screen(api, study)
    assert response.status_code == 201, response.json()
    pid = response.json()["id"]
    assert response.json()["subject_code"] == "S01-0001"

    assert (
        api.post(
            f"/api/v1/participants/{pid}/consent/",
            {"document_version": "1.0", "consent_date": "2025-01-06"},
            format="json",
        ).status_code
        == 201
    )
    answers = {str(c.pk): c.kind == "inclusion" for c in study.criteria.all()}
    assert api.post(f"/api/v1/participants/{pid}/eligibility/", {"answers": answers}, format="json").status_code == 200
    response = api.post(f"/api/v1/participants/{pid}/enrol/", {"enrolment_date": "2025-01-13"}, format="json")
    assert response.status_code == 200
    assert response.json()["cohort"] == 1

    response = api.post(
        f"/api/v1/participants/{pid}/infusions/",
        {
            "apheresis_date": "2025-01-14",
            "manufacturing_lot": "LOT-7",
            "release_passed": True,
            "viability_pct": "91.0",
            "total_viable_cells": "70000000",
            "weight_kg": "70.0",
            "start_at": "2025-02-03T09:00:00Z",
            "end_at": "2025-02-03T09:40:00Z",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["dose_cells_per_kg"] == "1000000"

    visits = api.get(f"/api/v1/participants/{pid}/visits/").json()["results"]
    day7 = next(v for v in visits if v["code"] == "d7")
    response = api.post(
        f"/api/v1/visits/{day7['id']}/record/", {"actual_date": "2025-02-10", "version": day7["version"]}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["in_window"] is True
    assert Participant.objects.get(pk=pid).status == ParticipantStatus.IN_FOLLOW_UP


def test_a_refused_rule_is_a_400_with_the_field_message_and_saves_nothing(api, study):
    before = Participant.objects.count()
    response = _screen(
        api, study, screening_date=(dt.datetime.now(tz=dt.UTC).date() + dt.timedelta(days=3)).isoformat()
    )
    assert response.status_code == 400
    assert "is in the future" in response.json()["screening_date"][0]
    assert Participant.objects.count() == before


def test_bad_shapes_are_400_with_field_messages(api, study):
    response = _screen(api, study, sex="X", birth_year="abc")
    assert response.status_code == 400
    assert set(response.json()) == {"sex", "birth_year"}


def test_an_infusion_refused_by_the_sentinel_rule_saves_nothing(api, study, sites, coordinator_site_a):
    participant = consented(study, sites[0], coordinator_site_a)
    response = api.post(
        f"/api/v1/participants/{participant.pk}/infusions/",
        {
            "apheresis_date": "2025-01-14",
            "manufacturing_lot": "LOT-7",
            "release_passed": True,
            "viability_pct": "91.0",
            "total_viable_cells": "70000000",
            "weight_kg": "70.0",
            "start_at": "2025-02-03T09:00:00Z",
            "end_at": "2025-02-03T09:40:00Z",
        },
        format="json",
    )
    assert response.status_code == 400
    assert "only an enrolled participant can be infused" in response.json()["non_field_errors"][0]
    assert not Infusion.objects.exists()


def test_a_stale_visit_edit_is_a_409_and_changes_nothing(api, study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    visit = participant.visits.get(definition__code="d7")
    first = api.post(
        f"/api/v1/visits/{visit.pk}/record/", {"actual_date": "2025-02-10", "version": visit.version}, format="json"
    )
    assert first.status_code == 200
    stale = api.post(
        f"/api/v1/visits/{visit.pk}/record/",
        {"actual_date": "2025-02-11", "version": visit.version, "reason": "typo"},
        format="json",
    )
    assert stale.status_code == 409
    assert "changed by someone else" in stale.json()["non_field_errors"][0]
    assert Visit.objects.get(pk=visit.pk).actual_date == dt.date(2025, 2, 10)


def test_another_sites_participant_is_a_404_for_reads_and_writes(api, study, sites, coordinator_site_b):
    other = consented(study, sites[1], coordinator_site_b)
    assert api.get(f"/api/v1/participants/{other.pk}/").status_code == 404
    assert (
        api.post(f"/api/v1/participants/{other.pk}/enrol/", {"enrolment_date": "2025-01-13"}, format="json").status_code
        == 404
    )
    assert api.get("/api/v1/participants/999999/").status_code == 404
    listed = api.get("/api/v1/participants/").json()["results"]
    assert other.subject_code not in {p["subject_code"] for p in listed if p["site"] == "S02"}
    assert all(p["site"] == "S01" for p in listed)


def test_a_coordinator_cannot_screen_at_another_site(api, study):
    response = _screen(api, study, site="S02")
    assert response.status_code == 400
    assert "site" in response.json()


def test_a_monitor_reads_but_cannot_write(study, sites, coordinator_site_a, monitor):
    participant = consented(study, sites[0], coordinator_site_a)
    client = APIClient()
    client.force_authenticate(monitor)
    assert client.get(f"/api/v1/participants/{participant.pk}/").status_code == 200
    response = client.post(
        f"/api/v1/participants/{participant.pk}/enrol/", {"enrolment_date": "2025-01-13"}, format="json"
    )
    assert response.status_code == 403
    assert Participant.objects.get(pk=participant.pk).status == ParticipantStatus.SCREENING


def test_token_authentication_works_until_the_token_is_revoked(study, coordinator_site_a):
    token = Token.objects.create(user=coordinator_site_a)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/v1/studies/").json()[0]["code"] == study.code
    token.delete()  # revocation
    assert client.get("/api/v1/studies/").status_code == 401


def test_anonymous_callers_are_refused(db):
    assert APIClient().get("/api/v1/participants/").status_code == 401


def test_the_openapi_schema_is_served(api):
    response = api.get("/api/v1/schema/")
    assert response.status_code == 200
    assert b"/api/v1/participants/{id}/enrol/" in response.content
