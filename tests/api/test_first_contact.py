"""A newcomer's first hour with the API: getting a token, reading the docs, and every malformed
request answered with a JSON 4xx that says what to fix (never a 500, never an HTML page), as the
schema documents it (docs/reliability.md #31, #32, #33)."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from trials.models import Participant, ParticipantStatus, Visit

DETAIL_OPERATIONS = [
    ("get", "/api/v1/participants/{}/"),
    ("get", "/api/v1/participants/{}/visits/"),
    ("post", "/api/v1/participants/{}/consent/"),
    ("post", "/api/v1/participants/{}/eligibility/"),
    ("post", "/api/v1/participants/{}/screen-fail/"),
    ("post", "/api/v1/participants/{}/enrol/"),
    ("post", "/api/v1/participants/{}/infusions/"),
    ("post", "/api/v1/participants/{}/disposition/"),
    ("get", "/api/v1/visits/{}/"),
    ("post", "/api/v1/visits/{}/record/"),
    ("post", "/api/v1/visits/{}/missed/"),
    ("post", "/api/v1/visits/{}/assessment/"),
    ("get", "/api/v1/analyses/{}/"),
    ("get", "/api/v1/data-cuts/{}/"),
]


def _call(client, method: str, url: str, body=None):
    return client.post(url, body or {}, format="json") if method == "post" else client.get(url)


def _schema(client) -> dict:
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


class TestTokens:
    def test_a_user_exchanges_username_and_password_for_a_token_shown_once(self, api_world, coordinator_site_a):
        anonymous = APIClient()
        response = anonymous.post(
            "/api/v1/auth/token/", {"username": "coord_a", "password": "correct-horse-battery"}, format="json"
        )
        assert response.status_code == 201
        assert response["Cache-Control"] == "no-store"
        body = response.json()
        assert body["username"] == "coord_a"
        assert Token.objects.get(user=coordinator_site_a).key == body["token"]
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
        assert client.get("/api/v1/studies/").json()[0]["code"] == api_world.study.code

    def test_a_new_exchange_revokes_the_previous_token(self, api_world):
        old = api_world.client("coordinator")
        assert old.get("/api/v1/studies/").status_code == 200
        credentials = {"username": "coord_a", "password": "correct-horse-battery"}
        assert APIClient().post("/api/v1/auth/token/", credentials, format="json").status_code == 201
        assert old.get("/api/v1/studies/").status_code == 401

    def test_wrong_credentials_are_a_400_that_does_not_say_which_part_was_wrong(self, coordinator_site_a):
        client = APIClient()
        wrong_password = client.post("/api/v1/auth/token/", {"username": "coord_a", "password": "nope"}, format="json")
        no_such_user = client.post("/api/v1/auth/token/", {"username": "nobody", "password": "nope"}, format="json")
        assert wrong_password.status_code == no_such_user.status_code == 400
        assert (
            wrong_password.json()
            == no_such_user.json()
            == {"non_field_errors": ["Unable to sign in with these credentials."]}
        )
        assert not Token.objects.exists()

    def test_repeated_failures_lock_the_account_even_for_the_right_password(self, coordinator_site_a):
        client = APIClient()
        for _ in range(settings.AXES_FAILURE_LIMIT):
            client.post("/api/v1/auth/token/", {"username": "coord_a", "password": "guess"}, format="json")
        locked = client.post(
            "/api/v1/auth/token/", {"username": "coord_a", "password": "correct-horse-battery"}, format="json"
        )
        assert locked.status_code == 429
        assert locked["Content-Type"] == "application/json"
        assert "locked" in locked.json()["detail"]
        assert not Token.objects.filter(user=coordinator_site_a).exists()

    def test_a_stale_token_in_the_header_does_not_stop_an_exchange(self, coordinator_site_a):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Token 0000000000000000000000000000000000000000")
        response = client.post(
            "/api/v1/auth/token/", {"username": "coord_a", "password": "correct-horse-battery"}, format="json"
        )
        assert response.status_code == 201

    def test_delete_revokes_the_callers_token(self, api_world, coordinator_site_a):
        client = api_world.client("coordinator")
        assert client.delete("/api/v1/auth/token/").status_code == 204
        assert not Token.objects.filter(user=coordinator_site_a).exists()
        assert client.get("/api/v1/studies/").status_code == 401
        assert APIClient().delete("/api/v1/auth/token/").status_code == 401

    def test_the_exchange_is_in_the_schema_without_authentication(self, api_world):
        schema = _schema(api_world.client("monitor"))
        operation = schema["paths"]["/api/v1/auth/token/"]["post"]
        assert "security" not in schema
        assert operation.get("security", []) in ([], [{}])
        assert set(operation["responses"]) >= {"201", "400", "429"}


class TestDocs:
    def test_the_docs_without_a_session_send_you_to_sign_in_and_back(self, client):
        response = client.get("/api/v1/docs/")
        assert response.status_code == 302
        assert response["Location"] == "/login/?next=/api/v1/docs/"

    def test_a_signed_in_user_reads_the_docs(self, client, monitor):
        client.force_login(monitor)
        page = client.get("/api/v1/docs/")
        assert page.status_code == 200
        assert b"swagger" in page.content.lower()


class TestIds:
    @pytest.mark.parametrize("bad_id", ["abc", "0.5", "0", "-1", "99999999999999999999", "%00"])
    def test_a_malformed_or_out_of_range_id_is_a_json_404_on_every_operation(self, coordinator_site_a, bad_id):
        client = APIClient()
        client.force_authenticate(coordinator_site_a)
        answers = {
            f"{method} {template}": _call(client, method, template.format(bad_id))
            for method, template in DETAIL_OPERATIONS
        }
        assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 404)
        assert all(r.json() == {"detail": "Not found."} for r in answers.values())

    def test_an_unknown_api_url_is_a_json_404_too(self, api_world):
        client = api_world.client("coordinator")
        for url in ("/api/v1/nothing-here/", "/api/v1/participants"):
            response = client.get(url)
            assert response.status_code == 404
            assert "No such endpoint" in response.json()["detail"]


class TestPages:
    @pytest.mark.parametrize(
        "query",
        ["limit=99999999999999999999", "limit=0", "limit=501", "limit=abc", "offset=-1", "offset=99999999999999999999"],
    )
    def test_a_page_size_or_offset_out_of_range_is_a_400(self, api_world, query):
        response = api_world.client("statistician").get(f"/api/v1/participants/?{query}")
        assert response.status_code == 400
        name = query.split("=")[0]
        assert "Must be a whole number" in response.json()[name][0]

    def test_the_largest_page_is_500(self, api_world):
        response = api_world.client("statistician").get("/api/v1/participants/?limit=500&offset=1")
        assert response.status_code == 200
        assert response.json()["count"] == len(api_world.participants)
        assert len(response.json()["results"]) == len(api_world.participants) - 1

    def test_a_participants_visits_are_a_page_as_the_schema_says(self, api_world):
        client = api_world.client("coordinator")
        infused = api_world.participants[3]
        page = client.get(f"/api/v1/participants/{infused.pk}/visits/?limit=2").json()
        assert page["count"] == infused.visits.count()
        assert len(page["results"]) == 2
        assert page["next"] is not None
        documented = _schema(client)["paths"]["/api/v1/participants/{id}/visits/"]["get"]["responses"]["200"]
        assert documented["content"]["application/json"]["schema"]["$ref"].endswith("/PaginatedVisitOutputList")


class TestFilters:
    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("cohort=abc", "cohort"),
            ("cohort=1.5", "cohort"),
            ("cohort=99999999999999999999", "cohort"),
            ("q=%00", "q"),
            ("site=%00", "site"),
            ("status=%00", "status"),
            ("status=dancing", "status"),
            ("study=%00", "study"),
        ],
    )
    def test_a_malformed_filter_is_a_400_naming_it(self, api_world, query, field):
        response = api_world.client("statistician").get(f"/api/v1/participants/?{query}")
        assert response.status_code == 400
        assert list(response.json()) == [field]

    @pytest.mark.parametrize("url", ["/api/v1/analyses/?study=%00", "/api/v1/data-cuts/?study=%00"])
    def test_the_analytics_lists_refuse_a_nul_byte_too(self, api_world, url):
        response = api_world.client("statistician").get(url)
        assert response.status_code == 400
        assert response.json() == {"study": ["Null characters are not allowed."]}

    def test_the_filters_filter(self, api_world):
        client = api_world.client("statistician")

        def codes(query: str) -> set[str]:
            return {p["subject_code"] for p in client.get(f"/api/v1/participants/?{query}").json()["results"]}

        own_site = {p.subject_code for p in api_world.participants if p.site.code == "S01"}
        assert codes("site=S01") == own_site
        assert codes(f"study={api_world.study.code}") == {p.subject_code for p in api_world.participants}
        assert codes("study=another-study") == set()
        assert codes("cohort=1") == {p.subject_code for p in api_world.participants if p.cohort_id}
        assert codes("status=screening") == {
            p.subject_code for p in Participant.objects.filter(status=ParticipantStatus.SCREENING)
        }
        assert codes("q=S02") == {p.subject_code for p in api_world.participants if p.site.code == "S02"}

    @pytest.mark.parametrize(
        "url",
        [
            "/api/v1/participants/?modified_since=2025-01-01",
            "/api/v1/studies/?study=treg-ms-01",
            "/api/v1/analyses/?page=2",
            "/api/v1/participants/{pk}/?expand=visits",
            "/api/v1/participants/{pk}/visits/?site=S01",
        ],
    )
    def test_an_unknown_query_parameter_is_a_400_naming_it(self, api_world, url):
        url = url.format(pk=api_world.participants[0].pk)
        response = api_world.client("statistician").get(url)
        assert response.status_code == 400
        [(name, [message])] = response.json().items()
        assert name in url
        assert message.startswith("Unknown query parameter.")

    def test_an_unknown_parameter_on_a_write_is_refused_before_anything_is_saved(self, api_world):
        participant = api_world.participants[0]
        response = api_world.client("coordinator").post(
            f"/api/v1/participants/{participant.pk}/screen-fail/?force=1", {"reason": "Criteria"}, format="json"
        )
        assert response.status_code == 400
        participant.refresh_from_db()
        assert participant.status == ParticipantStatus.SCREENING


class TestBodies:
    def test_an_oversized_json_body_is_a_json_413(self, api_world):
        body = json.dumps({"study": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
        response = api_world.client("coordinator").generic(
            "POST", "/api/v1/participants/", body, content_type="application/json"
        )
        assert response.status_code == 413
        assert response["Content-Type"] == "application/json"
        assert "too large" in response.json()["detail"]

    def test_a_form_encoded_body_is_a_415(self, api_world):
        response = api_world.client("coordinator").post("/api/v1/participants/", {"study": "x"}, format="multipart")
        assert response.status_code == 415
        assert "Unsupported media type" in response.json()["detail"]

    def test_a_body_nested_too_deeply_is_a_400(self, api_world):
        body = "[" * 100_000 + "]" * 100_000
        response = api_world.client("coordinator").generic(
            "POST", "/api/v1/participants/", body, content_type="application/json"
        )
        assert response.status_code == 400
        assert "nested too deeply" in response.json()["detail"]

    def test_a_nul_byte_in_a_text_field_is_a_400(self, api_world):
        response = api_world.client("coordinator").post(
            "/api/v1/participants/",
            {"study": "treg\x00", "site": "S01", "sex": "F", "birth_year": 1980, "screening_date": "2025-01-06"},
            format="json",
        )
        assert response.status_code == 400
        assert "study" in response.json()

    def test_a_nested_value_in_an_analysis_spec_is_a_400(self, api_world):
        response = api_world.client("statistician").post(
            "/api/v1/analyses/", {"data_cut": api_world.data_cuts[0], "spec": {"grouping": ["arm"]}}, format="json"
        )
        assert response.status_code == 400
        assert response.json() == {"spec": {"grouping": ["Must be a string, a number, true/false or null."]}}


class TestRoles:
    def test_a_statistician_who_screens_a_participant_gets_403_and_nothing_is_saved(self, api_world):
        before = Participant.objects.count()
        body = {"study": api_world.study.code, "site": "S01", "sex": "F", "birth_year": 1980}
        response = api_world.client("statistician").post(
            "/api/v1/participants/", {**body, "screening_date": "2025-01-06"}, format="json"
        )
        assert response.status_code == 403
        assert response.json() == {"detail": "Your role cannot screen participants."}
        assert Participant.objects.count() == before

    def test_a_monitor_gets_403_too_even_with_a_malformed_body(self, api_world):
        response = api_world.client("monitor").post("/api/v1/participants/", {"sex": "?"}, format="json")
        assert response.status_code == 403


class TestVersions:
    def test_a_visit_edit_without_its_version_is_a_400_and_changes_nothing(self, api_world):
        visit = Visit.objects.get(participant=api_world.participants[3], definition__code="d7")
        client = api_world.client("coordinator")
        response = client.post(f"/api/v1/visits/{visit.pk}/record/", {"actual_date": "2025-02-10"}, format="json")
        assert response.status_code == 400
        assert response.json() == {"version": ["This field is required."]}
        visit.refresh_from_db()
        assert visit.actual_date is None

    def test_an_assessment_correction_without_its_version_is_a_409_and_changes_nothing(self, api_world):
        visit = Visit.objects.get(participant=api_world.participants[3], definition__code="d0")
        client = api_world.client("coordinator")
        url = f"/api/v1/visits/{visit.pk}/assessment/"
        first = client.post(url, {"edss": "2.5", "version": None}, format="json")
        assert first.status_code == 201, first.json()
        assert client.get(f"/api/v1/visits/{visit.pk}/").json()["assessment_version"] == 1
        blind = client.post(url, {"edss": "6.0", "reason": "correction", "version": None}, format="json")
        assert blind.status_code == 409
        assert "already has an assessment (version 1)" in blind.json()["non_field_errors"][0]
        missing = client.post(url, {"edss": "6.0", "reason": "correction"}, format="json")
        assert missing.status_code == 400
        assert missing.json() == {"version": ["This field is required."]}
        corrected = client.post(url, {"edss": "3.0", "reason": "transcription", "version": 1}, format="json")
        assert corrected.status_code == 201
        visit.assessment.refresh_from_db()
        assert (str(visit.assessment.edss), visit.assessment.version) == ("3.0", 2)


class TestSchema:
    def test_every_operation_documents_its_error_answers_with_the_error_body(self, api_world):
        schema = _schema(api_world.client("monitor"))
        checked = 0
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                if path == "/api/v1/auth/token/":
                    continue
                expected = {"400", "401", "403"}
                if "{id}" in path:
                    expected.add("404")
                if method == "post":
                    expected |= {"409", "413", "415", "422"}
                    headers = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
                    assert headers == ["Idempotency-Key"], (method, path)
                assert expected <= set(operation["responses"]), (method, path)
                for code in expected:
                    body = operation["responses"][code]["content"]["application/json"]["schema"]
                    assert body == {"$ref": "#/components/schemas/Error"}, (method, path, code)
                checked += 1
        assert checked == 21
