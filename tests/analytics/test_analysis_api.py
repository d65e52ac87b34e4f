"""The analytics REST API: POST /api/v1/analyses/, GET /api/v1/analyses/{id}/, GET /api/v1/data-cuts/."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from analytics import services
from analytics.models import AnalysisJob, DataCut
from tests.analytics.conftest import CUT_DATE


@pytest.fixture
def cut(trial):
    return services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


class TestAnalysesEndpoint:
    def test_a_request_is_accepted_and_queued(self, trial, cut, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks() as callbacks:
            response = _client(trial.statistician).post(
                "/api/v1/analyses/", {"data_cut": cut.pk, "spec": {"grouping": "pooled"}}, format="json"
            )

        assert response.status_code == 202
        body = response.json()
        assert (body["status"], body["progress"], body["result"]) == ("queued", 0, None)
        assert body["spec"]["grouping"] == "pooled"
        assert len(callbacks) == 1

    def test_the_status_carries_the_numbers_once_done(self, trial, cut, django_capture_on_commit_callbacks):
        client = _client(trial.statistician)
        with django_capture_on_commit_callbacks():
            job_id = client.post("/api/v1/analyses/", {"data_cut": cut.pk}, format="json").json()["id"]
        services.analysis_run(job_id=job_id, task_id="api-test")

        response = client.get(f"/api/v1/analyses/{job_id}/")

        assert response.status_code == 200
        body = response.json()
        assert (body["status"], body["progress"], body["attempts"]) == ("succeeded", 100, 1)
        assert body["result"]["numbers"]["n"] == 10
        assert body["result"]["input_checksum"] == AnalysisJob.objects.get(pk=job_id).result.input_checksum
        assert body["result"]["plots"]["kaplan_meier_png"].endswith(f"/analytics/jobs/{job_id}/plots/km.png")
        assert body["result"]["plots"]["probability_in_remission_png"].endswith(
            f"/analytics/jobs/{job_id}/plots/pir.png"
        )
        assert body["result"]["numbers"]["probability_in_remission"]["groups"]
        browser = Client()
        browser.force_login(trial.statistician)
        png = browser.get(body["result"]["plots"]["kaplan_meier_png"])
        assert png.status_code == 200
        assert png["Content-Type"] == "image/png"

    def test_asking_again_answers_200_with_the_stored_result(self, trial, cut, django_capture_on_commit_callbacks):
        client = _client(trial.statistician)
        with django_capture_on_commit_callbacks():
            job_id = client.post("/api/v1/analyses/", {"data_cut": cut.pk}, format="json").json()["id"]
        services.analysis_run(job_id=job_id, task_id="api-test")

        with django_capture_on_commit_callbacks() as callbacks:
            again = client.post("/api/v1/analyses/", {"data_cut": cut.pk, "spec": {}}, format="json")

        assert again.status_code == 200
        assert again.json()["id"] == job_id
        assert again.json()["result"] is not None
        assert callbacks == []

    def test_a_bad_spec_is_a_400_with_field_messages(self, trial, cut):
        response = _client(trial.statistician).post(
            "/api/v1/analyses/", {"data_cut": cut.pk, "spec": {"ci_transform": "plain"}}, format="json"
        )
        assert response.status_code == 400
        assert "ci_transform" in response.json()
        assert not AnalysisJob.objects.exists()

    def test_an_unknown_cut_is_a_400_that_does_not_say_whether_it_exists(self, trial, cut, outsider):
        response = _client(outsider).post("/api/v1/analyses/", {"data_cut": cut.pk}, format="json")
        missing = _client(outsider).post("/api/v1/analyses/", {"data_cut": 999_999}, format="json")
        assert response.status_code == missing.status_code == 400
        assert response.json() == missing.json() == {"data_cut": ["No such data cut."]}

    def test_a_coordinator_cannot_see_or_request_analyses(self, trial, cut, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks():
            job = services.analysis_request(actor=trial.statistician, data_cut=cut, spec={})
        client = _client(trial.coordinator)

        assert client.get(f"/api/v1/analyses/{job.pk}/").status_code == 404
        assert client.get("/api/v1/analyses/").json()["results"] == []
        assert client.post("/api/v1/analyses/", {"data_cut": cut.pk}, format="json").status_code == 400

    def test_the_list_shows_jobs_with_their_progress(self, trial, cut, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks():
            services.analysis_request(actor=trial.statistician, data_cut=cut, spec={})
        body = _client(trial.medical_monitor).get("/api/v1/analyses/", {"study": trial.study.code}).json()
        assert [(j["status"], j["progress"]) for j in body["results"]] == [("queued", 0)]


class TestDataCutsEndpoint:
    def test_it_lists_the_cuts_with_their_manifest(self, trial, cut):
        response = _client(trial.medical_monitor).get("/api/v1/data-cuts/")
        assert response.status_code == 200
        (row,) = response.json()["results"]
        assert row["id"] == cut.pk
        assert row["checksum"] == cut.checksum
        assert row["definition"] == "RA/SDAI remission@1"
        assert row["manifest"]["frames"]["assessments"]["rows"] == 50
        assert row["audit_chain_head"] == cut.audit_chain_head

    def test_a_statistician_can_freeze_a_cut(self, trial):
        response = _client(trial.statistician).post(
            "/api/v1/data-cuts/",
            {"study": trial.study.code, "cut_date": "2026-06-30", "label": "DSMB 3"},
            format="json",
        )
        assert response.status_code == 201
        assert DataCut.objects.get(pk=response.json()["id"]).label == "DSMB 3"

    def test_a_coordinator_sees_no_cuts_and_cannot_make_one(self, trial, cut):
        client = _client(trial.coordinator)
        assert client.get("/api/v1/data-cuts/").json()["results"] == []
        assert client.get(f"/api/v1/data-cuts/{cut.pk}/").status_code == 404
        response = client.post(
            "/api/v1/data-cuts/", {"study": trial.study.code, "cut_date": "2026-06-30"}, format="json"
        )
        assert response.status_code == 403
