"""The durability pages: who may see them, the request form, the polled job list, the result page."""

from __future__ import annotations

import pytest
from django.test import Client

from analytics import services
from analytics.models import AnalysisJob, DataCut, RemissionDefinitionConfig
from tests.analytics.conftest import CUT_DATE


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def cut(trial):
    return services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)


@pytest.fixture
def done(trial, cut, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        job = services.analysis_request(actor=trial.statistician, data_cut=cut, spec={})
    services.analysis_run(job_id=job.pk, task_id="page-test")
    services.remission_assessments_materialise(cut_id=cut.pk)
    return AnalysisJob.objects.get(pk=job.pk)


def _url(trial, name="") -> str:
    return f"/analytics/studies/{trial.study.code}/{name}"


class TestDurabilityPage:
    @pytest.mark.parametrize("role", ["statistician", "data_manager", "medical_monitor"])
    def test_analytics_roles_see_the_page(self, trial, role):
        response = _client(getattr(trial, role)).get(_url(trial))
        assert response.status_code == 200
        assert b"Remission durability" in response.content

    def test_a_coordinator_is_refused(self, trial):
        assert _client(trial.coordinator).get(_url(trial)).status_code == 403

    def test_a_stranger_does_not_learn_the_study_exists(self, trial, outsider):
        assert _client(outsider).get(_url(trial)).status_code == 404

    def test_it_shows_the_latest_result_with_curves_and_tables(self, trial, done):
        response = _client(trial.medical_monitor).get(_url(trial))
        content = response.content.decode()
        assert f"Latest result: analysis #{done.pk}" in content
        assert content.count('src="data:image/svg+xml;base64,') >= 2
        assert "Kaplan–Meier" in content
        assert "Restricted mean survival time" in content
        assert "Cohort 1 (1M/kg)" in content

    def test_the_job_list_polls_while_a_job_is_active_and_stops_after(
        self, trial, cut, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks():
            job = services.analysis_request(actor=trial.statistician, data_cut=cut, spec={"grouping": "pooled"})
        client = _client(trial.statistician)

        polling = client.get(_url(trial, "jobs/"), HTTP_HX_REQUEST="true").content.decode()
        assert 'hx-trigger="every 2s"' in polling
        assert f'<progress value="0" max="100" aria-label="Progress of analysis {job.pk}"' in polling

        services.analysis_run(job_id=job.pk, task_id="page-test")
        finished = client.get(_url(trial, "jobs/"), HTTP_HX_REQUEST="true").content.decode()
        assert "hx-trigger" not in finished
        assert 'value="100"' in finished

    def test_the_request_form_queues_an_analysis(self, trial, cut, django_capture_on_commit_callbacks):
        form = {
            "data_cut": cut.pk,
            "endpoint": "time_to_relapse",
            "grouping": "cohort",
            "ci_transform": "log-log",
            "horizon_days": 365,
        }
        with django_capture_on_commit_callbacks() as callbacks:
            response = _client(trial.statistician).post(_url(trial, "analyses/"), form)
        assert response.status_code == 302
        job = AnalysisJob.objects.get()
        assert (job.spec["ci_transform"], job.spec["horizon_days"]) == ("log-log", 365)
        assert len(callbacks) == 1

    def test_the_request_form_offers_no_arm_grouping_to_blinded_roles(self, trial, cut):
        content = _client(trial.statistician).get(_url(trial)).content.decode()
        assert 'value="cohort"' in content
        assert 'value="arm"' not in content

    def test_a_cut_can_be_frozen_from_the_page(self, trial):
        response = _client(trial.data_manager).post(_url(trial, "cuts/"), {"cut_date": "2026-06-30", "label": "DSMB"})
        assert response.status_code == 302
        assert DataCut.objects.get().label == "DSMB"

    def test_a_future_cut_date_is_shown_on_the_form(self, trial):
        response = _client(trial.data_manager).post(_url(trial, "cuts/"), {"cut_date": "2999-01-01"})
        assert response.status_code == 400
        assert "in the future" in response.content.decode()
        assert not DataCut.objects.exists()

    def test_a_new_definition_version_from_the_page(self, trial):
        response = _client(trial.statistician).post(
            _url(trial, "definition/"),
            {
                "name": "CDAI remission",
                "rule": "cdai",
                "parameters": "",
                "non_responders": "censor",
                "sap": '{"confirm_loss": true, "loss_confirmation_min_days": 28}',
                "reason": "SAP amendment",
            },
        )
        assert response.status_code == 302
        latest = RemissionDefinitionConfig.objects.filter(study=trial.study).order_by("-version").first()
        assert (latest.version, latest.rule, latest.sap["confirm_loss"]) == (2, "cdai", True)

    def test_a_medical_monitor_cannot_change_the_definition(self, trial):
        response = _client(trial.medical_monitor).post(
            _url(trial, "definition/"),
            {"name": "x", "rule": "cdai", "non_responders": "censor", "reason": "x"},
        )
        assert response.status_code == 403


class TestResultPage:
    def test_it_shows_curves_tables_and_the_remission_timeline(self, trial, done):
        response = _client(trial.statistician).get(f"/analytics/jobs/{done.pk}/")
        content = response.content.decode()
        assert response.status_code == 200
        assert content.count('src="data:image/svg+xml;base64,') >= 2
        assert "<svg" not in content  # no inline SVG: its style attributes break the page's CSP
        assert "Remission timeline per participant" in content
        assert "Probability of being in remission" in content
        assert "Landmark analyses" in content
        assert 'aria-label="Probability in remission curves"' in content
        for participant in trial.participants:
            assert participant.subject_code in content
        assert 'class="chip in"' in content
        assert 'class="chip out"' in content
        assert 'class="chip na"' in content

    def test_a_coordinator_gets_404_for_a_result(self, trial, done):
        assert _client(trial.coordinator).get(f"/analytics/jobs/{done.pk}/").status_code == 404
        assert _client(trial.coordinator).get(f"/analytics/jobs/{done.pk}/plots/km.png").status_code == 404

    def test_a_running_job_shows_a_polled_progress_bar(self, trial, cut, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks():
            job = services.analysis_request(actor=trial.statistician, data_cut=cut, spec={})
        AnalysisJob.objects.filter(pk=job.pk).update(status="running", progress=40, stage="deriving")
        client = _client(trial.statistician)

        page = client.get(f"/analytics/jobs/{job.pk}/").content.decode()
        assert 'hx-trigger="every 2s"' in page
        assert 'value="40"' in page

        AnalysisJob.objects.filter(pk=job.pk).update(status="failed", error="boom")
        status = client.get(f"/analytics/jobs/{job.pk}/status/", HTTP_HX_REQUEST="true")
        assert status["HX-Refresh"] == "true"
