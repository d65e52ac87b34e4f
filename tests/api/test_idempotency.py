"""A repeated create makes one record (docs/reliability.md #38): the API's ``Idempotency-Key``
header and the pages' hidden form token, for a double-click and for truly concurrent requests."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from safety import services as safety_services
from safety.models import AdverseEvent, CRSAssessment, ExpeditedReport, SAECase, SAECaseVersion
from tests.factories import infused
from tests.safety.conftest import serious_kwargs
from tests.safety.test_safety_views import _ae_post
from trials.models import IdempotencyRecord, Participant

SCREEN = {"site": "S01", "sex": "F", "birth_year": 1980, "screening_date": "2025-01-06"}
SERIOUS_AE = {
    "end": "",
    "ongoing": "on",
    "outcome": "RECOVERING/RESOLVING",
    "grade": "3",
    "serious": "on",
    "hospitalisation": "on",
    "site_aware_at": "2025-03-03T09:00",
    "time_zone": "UTC",
}


def _api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _screen(client, study, key: str | None, **overrides):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post("/api/v1/participants/", {"study": study.code, **SCREEN, **overrides}, format="json", **headers)


def _token(page) -> str:
    return re.search(rb'name="idempotency_token" value="([^"]+)"', page.content).group(1).decode()


class TestApiKey:
    def test_a_repeat_with_the_same_key_returns_the_first_participant(self, study, coordinator_site_a):
        client = _api(coordinator_site_a)
        first = _screen(client, study, "b7f0c1de-screen-1")
        again = _screen(client, study, "b7f0c1de-screen-1")
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again["Idempotent-Replayed"] == "true"
        assert Participant.objects.count() == 1
        record = IdempotencyRecord.objects.get()
        assert (record.result_type, record.result_id) == ("trials.participant", first.json()["id"])

    def test_without_a_key_two_posts_are_two_participants(self, study, coordinator_site_a):
        client = _api(coordinator_site_a)
        assert _screen(client, study, None).json()["id"] != _screen(client, study, None).json()["id"]
        assert not IdempotencyRecord.objects.exists()

    def test_the_same_key_with_another_body_is_a_422_and_saves_nothing(self, study, coordinator_site_a):
        client = _api(coordinator_site_a)
        _screen(client, study, "key-1")
        reused = _screen(client, study, "key-1", birth_year=1990)
        assert reused.status_code == 422
        assert "already used for a different request" in reused.json()["Idempotency-Key"][0]
        assert Participant.objects.count() == 1

    def test_a_refused_request_leaves_its_key_free_for_the_corrected_one(self, study, coordinator_site_a):
        client = _api(coordinator_site_a)
        refused = _screen(client, study, "key-2", screening_date="2999-01-01")
        assert refused.status_code == 400
        assert not IdempotencyRecord.objects.exists()
        corrected = _screen(client, study, "key-2")
        assert corrected.status_code == 201

    def test_keys_belong_to_their_user(self, study, coordinator_site_a, sites):
        from tests.factories import member
        from trials.models import Role

        colleague = member("coord_a2", study, Role.COORDINATOR, sites[0])
        first = _screen(_api(coordinator_site_a), study, "shared-key")
        second = _screen(_api(colleague), study, "shared-key")
        assert first.json()["id"] != second.json()["id"]

    @pytest.mark.parametrize("key", ["", "x" * 256, "with space", "naïve"])
    def test_a_malformed_key_is_a_400(self, study, coordinator_site_a, key):
        response = _screen(_api(coordinator_site_a), study, key or " ")
        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()
        assert not Participant.objects.exists()

    def test_every_write_takes_a_key(self, api_world):
        participant = api_world.participants[0]
        client = api_world.client("coordinator")
        url = f"/api/v1/participants/{participant.pk}/screen-fail/"
        first = client.post(url, {"reason": "Exclusion 1 met"}, format="json", HTTP_IDEMPOTENCY_KEY="sf-1")
        again = client.post(url, {"reason": "Exclusion 1 met"}, format="json", HTTP_IDEMPOTENCY_KEY="sf-1")
        without = client.post(url, {"reason": "Exclusion 1 met"}, format="json")
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.json() == first.json()
        assert without.status_code == 400  # the rule refuses a second screen failure


@pytest.mark.django_db(transaction=True)
class TestConcurrentRepeats:
    """Real concurrency: each thread has its own database connection and transaction."""

    def _race(self, requests: int, send) -> list:
        barrier = threading.Barrier(requests)
        answers: list = [None] * requests

        def worker(index: int) -> None:
            try:
                barrier.wait(timeout=30)
                answers[index] = send()
            finally:
                connection.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        return answers

    def test_concurrent_screenings_with_one_key_make_one_participant(self, study, coordinator_site_a):
        answers = self._race(3, lambda: _screen(_api(coordinator_site_a), study, "race-key"))
        assert [a.status_code for a in answers] == [201, 201, 201]
        assert len({a.json()["id"] for a in answers}) == 1
        assert Participant.objects.count() == 1

    def test_a_concurrent_double_submitted_serious_ae_makes_one_ae_case_and_report(
        self, study, sites, coordinator_site_a, ctcae, now
    ):
        participant = infused(study, sites[0], coordinator_site_a)
        url = reverse("safety:ae_create", args=[participant.pk])
        browser = Client()
        browser.force_login(coordinator_site_a)
        data = {**_ae_post(ctcae, **SERIOUS_AE), "idempotency_token": _token(browser.get(url))}

        def submit():
            tab = Client()
            tab.force_login(coordinator_site_a)
            return tab.post(url, data)

        answers = self._race(2, submit)
        assert [a.status_code for a in answers] == [302, 302]
        assert answers[0]["Location"] == answers[1]["Location"]
        assert AdverseEvent.objects.count() == 1
        assert SAECase.objects.count() == 1
        assert ExpeditedReport.objects.filter(kind="site_24h").count() == 1


class TestFormToken:
    def test_a_double_submitted_serious_ae_makes_one_ae_one_case_one_report(
        self, client, participant, coordinator_site_a, ctcae
    ):
        client.force_login(coordinator_site_a)
        url = reverse("safety:ae_create", args=[participant.pk])
        data = {**_ae_post(ctcae, **SERIOUS_AE), "idempotency_token": _token(client.get(url))}
        first = client.post(url, data)
        second = client.post(url, data, follow=True)
        assert first.status_code == 302
        assert second.redirect_chain[0][0] == first["Location"]
        assert "it was saved once" in second.content.decode()
        assert AdverseEvent.objects.count() == 1
        assert SAECase.objects.count() == 1
        assert ExpeditedReport.objects.filter(kind="site_24h").count() == 1

    def test_a_double_submitted_initial_sae_report_is_not_also_sent_as_a_follow_up(
        self, client, participant, coordinator_site_a, ctcae
    ):
        ae = safety_services.adverse_event_record(
            actor=coordinator_site_a, participant=participant, **serious_kwargs(ctcae)
        )
        case = SAECase.objects.get(adverse_event=ae)
        client.force_login(coordinator_site_a)
        url = reverse("safety:sae_report", args=[case.pk])
        data = {"narrative": "Admitted with fever and hypotension.", "idempotency_token": _token(client.get(url))}
        first = client.post(url, data)
        second = client.post(url, data)
        assert (first.status_code, second.status_code) == (302, 302)
        assert SAECaseVersion.objects.filter(case=case).count() == 1

    def test_a_double_submitted_crs_assessment_is_saved_once(self, client, participant, coordinator_site_a, ctcae):
        ae = safety_services.adverse_event_record(
            actor=coordinator_site_a,
            participant=participant,
            **serious_kwargs(
                ctcae,
                serious=False,
                hospitalisation=False,
                site_aware_at=None,
                grade=1,
                treatment_given=False,
                treatment_details="",
            ),
        )
        client.force_login(coordinator_site_a)
        url = reverse("safety:crs_assess", args=[ae.pk])
        data = {
            "time_zone": "UTC",
            "assessed_at": "2025-03-02T21:00",
            "max_temperature_c": "39.1",
            "hypotension": "on",
            "vasopressors": "1",
            "oxygen_device": "nasal_cannula",
            "oxygen_flow_l_min": "3",
            "override_reason": "",
            "idempotency_token": _token(client.get(url)),
        }
        first = client.post(url, data)
        second = client.post(url, data)
        assert (first.status_code, second.status_code) == (302, 302)
        assert CRSAssessment.objects.filter(adverse_event=ae).count() == 1

    def test_a_new_form_is_a_new_ae(self, client, participant, coordinator_site_a, ctcae):
        client.force_login(coordinator_site_a)
        url = reverse("safety:ae_create", args=[participant.pk])
        first_token, second_token = _token(client.get(url)), _token(client.get(url))
        assert first_token != second_token
        client.post(url, {**_ae_post(ctcae), "idempotency_token": first_token})
        client.post(url, {**_ae_post(ctcae), "idempotency_token": second_token})
        assert AdverseEvent.objects.count() == 2

    def test_a_double_submitted_screening_registers_one_participant(self, client, study, sites, coordinator_site_a):
        client.force_login(coordinator_site_a)
        url = reverse("trials:participant_screen", args=[study.code])
        data = {
            "site": sites[0].pk,
            "sex": "F",
            "birth_year": "1980",
            "screening_date": "2025-01-06",
            "idempotency_token": _token(client.get(url)),
        }
        first, second = client.post(url, data), client.post(url, data)
        assert first.status_code == second.status_code == 302
        assert first["Location"] == second["Location"]
        assert Participant.objects.count() == 1

    def test_a_resent_form_with_other_values_is_refused_on_the_form(self, client, study, sites, coordinator_site_a):
        client.force_login(coordinator_site_a)
        url = reverse("trials:participant_screen", args=[study.code])
        data = {
            "site": sites[0].pk,
            "sex": "F",
            "birth_year": "1980",
            "screening_date": "2025-01-06",
            "idempotency_token": _token(client.get(url)),
        }
        client.post(url, data)
        changed = client.post(url, {**data, "birth_year": "1981"})
        assert changed.status_code == 200
        assert "already used for a different request" in changed.content.decode()
        assert Participant.objects.count() == 1

    @pytest.mark.parametrize(
        "name",
        [
            "trials:consent_record",
            "trials:visit_add",
            "trials:relapse_record",
            "trials:rescue_therapy_record",
            "trials:insulin_dose_record",
            "trials:disposition_record",
            "safety:ae_create",
        ],
    )
    def test_every_create_form_carries_a_fresh_token(self, client, api_world, coordinator_site_a, name):
        client.force_login(coordinator_site_a)
        url = reverse(name, args=[api_world.participants[3].pk])
        assert _token(client.get(url)) != _token(client.get(url))

    def test_a_double_submitted_consent_is_recorded_once(self, client, api_world, coordinator_site_a):
        participant = api_world.participants[0]
        client.force_login(coordinator_site_a)
        url = reverse("trials:consent_record", args=[participant.pk])
        document = api_world.study.consent_documents.get()
        data = {"document": document.pk, "consent_date": "2025-01-06", "idempotency_token": _token(client.get(url))}
        first, second = client.post(url, data), client.post(url, data)
        assert first.status_code == second.status_code == 302
        assert participant.consents.count() == 1
