"""How a result reads (issue 9): p-values below 0.0001, the RMST horizon τ and estimates past a
group's last observation, the numbers at risk against the table's N, rounded landmark medians, the
definition and SAP options in words, the job list opened directly, and placebo (0 cells/kg) cohorts."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from analytics import presentation, services
from analytics.models import AnalysisJob, AnalysisResult
from tests.analytics.conftest import CUT_DATE
from tests.factories import admin_change
from trials.models import DoseCohort


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _analyse(trial, spec: dict, django_capture_on_commit_callbacks, cut=None) -> AnalysisJob:
    cut = cut or services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
    with django_capture_on_commit_callbacks():
        job = services.analysis_request(actor=trial.statistician, data_cut=cut, spec=spec)
    assert services.analysis_run(job_id=job.pk, task_id="display-test") == "succeeded", job.error
    return AnalysisJob.objects.select_related("result", "data_cut__study").get(pk=job.pk)


@pytest.fixture
def done(trial, django_capture_on_commit_callbacks) -> AnalysisJob:
    return _analyse(trial, {}, django_capture_on_commit_callbacks)


class TestPValues:
    def test_a_p_value_below_0_0001_reads_so_with_the_exact_value_on_hover_and_in_the_api(self, trial, done):
        numbers = done.result.numbers
        numbers["log_rank"]["p_value"] = 2.3e-7
        numbers["rmst"]["comparisons"][0]["p_value"] = 4.0e-5
        AnalysisResult.objects.filter(job=done).update(numbers=numbers)

        content = _client(trial.statistician).get(f"/analytics/jobs/{done.pk}/").content.decode()

        assert "p = 0.0000" not in content
        assert '<span class="p-value" title="exact p = 2.3e-07">p &lt; 0.0001</span>' in content
        assert 'title="exact p = 4e-05">p &lt; 0.0001</span>' in content
        api = APIClient()
        api.force_authenticate(trial.statistician)
        body = api.get(f"/api/v1/analyses/{done.pk}/").json()
        assert body["result"]["numbers"]["log_rank"]["p_value"] == 2.3e-7

    def test_other_p_values_keep_three_or_four_decimals(self):
        assert [presentation.p_text(p) for p in (0.75, 0.0312, 0.00042, 0.0001, None)] == [
            "0.750",
            "0.031",
            "0.0004",
            "0.0001",
            "NE",
        ]


class TestHorizonAndFollowUp:
    def test_tau_defaults_to_the_largest_time_every_group_reaches_and_the_page_says_so(self, trial, done):
        content = _client(trial.statistician).get(f"/analytics/jobs/{done.pk}/").content.decode()
        assert "Restricted mean survival time to τ = 365 days" in content
        assert "τ: the largest time every group reaches (default)" in content
        assert "beyond the last observation" not in content

    def test_a_tau_beyond_the_data_is_kept_and_warned_about(self, trial, django_capture_on_commit_callbacks):
        job = _analyse(trial, {"horizon_days": 730}, django_capture_on_commit_callbacks)
        rmst = job.result.numbers["rmst"]

        assert rmst["horizon"] == 730
        assert rmst["largest_common_time"] == 365
        assert len(rmst["warnings"]) == 1
        assert "beyond the last observation of Cohort 2 (5M/kg) (day 365)" in rmst["warnings"][0]
        content = _client(trial.statistician).get(f"/analytics/jobs/{job.pk}/").content.decode()
        assert 'class="alert alert-warning" role="alert"' in content
        assert "The largest τ every group reaches is 365 days." in content
        assert "(τ beyond its follow-up)" in content

    def test_survival_past_a_groups_last_observation_is_not_estimable(self, trial, done):
        view = presentation.result_view(done)
        cohort_2 = next(row for row in view["km_rows"] if row["group"] == "Cohort 2 (5M/kg)")
        cohort_1 = next(row for row in view["km_rows"] if row["group"] == "Cohort 1 (1M/kg)")

        # Cohort 2 is followed to day 365 (a relapse and a withdrawal then; S stays above 0): 12 months
        # (365.25 days, day 365) is estimable, 18 and 24 months are not.
        assert cohort_2["last"] == "365"
        assert [bool(cell.get("ne")) for cell in cohort_2["at"]] == [False, False, True, True]
        assert not any(cell.get("ne") for cell in cohort_1["at"])  # followed to day 730: 24 months is day 730
        content = _client(trial.statistician).get(f"/analytics/jobs/{done.pk}/").content.decode()
        assert content.count('title="Follow-up in this group ends on day 365">not estimable</td>') >= 2
        stored = done.result.numbers["kaplan_meier"]["groups"][1]["survival_at"][3]
        assert stored["survival"] > 0  # the number is kept, flagged, for the API
        assert stored["beyond_last_observation"] is True


class TestAtRisk:
    def test_the_number_at_risk_at_day_0_is_the_n_of_the_table(self, trial, django_capture_on_commit_callbacks):
        # Induction failure is an event on day 0: the participant never in remission has time 0.
        services.remission_definition_set(
            actor=trial.statistician,
            study=trial.study,
            name="SDAI remission",
            rule="sdai",
            parameters={},
            sap={"non_responders": "event_at_origin"},
            reason="sensitivity: induction failure on day 0",
        )
        job = _analyse(trial, {"grouping": "cohort"}, django_capture_on_commit_callbacks)
        numbers = job.result.numbers
        at_risk = {row["group"]: row["counts"] for row in numbers["at_risk"]["kaplan_meier"]}

        assert numbers["at_risk"]["days"][0] == 0
        for group in numbers["kaplan_meier"]["groups"]:
            assert at_risk[group["group"]][0] == group["n"]
        first = numbers["kaplan_meier"]["groups"][0]
        at_zero = first["table"][0]
        assert at_zero["time"] == 0
        assert at_zero["n_event"] == 1  # the case lifelines' own row counted one short (N - 1)
        assert at_risk[first["group"]][0] == at_zero["n_risk"] != at_zero["n_risk"] - at_zero["n_event"]
        assert numbers["at_risk"]["cumulative_incidence"][0]["counts"][0] == first["n"]


class TestReadableText:
    def test_landmark_medians_are_rounded(self, trial, done):
        medians = [
            g["median"]["median"]
            for lm in done.result.numbers["landmarks"]
            if lm.get("kaplan_meier")
            for g in lm["kaplan_meier"]["groups"]
            if g["median"]["median"] is not None
        ]
        assert any(m != round(m, 1) for m in medians)  # the data have a median like 316.6875
        content = _client(trial.statistician).get(f"/analytics/jobs/{done.pk}/").content.decode()
        landmarks = content.split('id="landmark-head"')[1].split("</table>")[0]
        for median in medians:
            assert f"<td>{presentation.days(median)}</td>" in landmarks
            assert f"{median}" not in landmarks or median == round(median, 1)

    def test_the_definition_and_sap_options_read_as_sentences(self, trial):
        content = _client(trial.statistician).get(f"/analytics/studies/{trial.study.code}/").content.decode()
        assert "SDAI ≤ maximum, with" in content
        assert "maximum 3.3 (default)" in content
        assert "<dt>Never in remission</dt><dd>censored at their last adequate assessment</dd>" in content
        assert "<dt>Rescue therapy</dt><dd>ends remission: an event (composite strategy)</dd>" in content
        assert "<code>sdai</code>" not in content
        assert "{&#x27;non_responders&#x27;" not in content
        assert "NEDA window" not in content  # an MS option, not shown for RA

    def test_the_job_list_opened_directly_is_the_whole_page(self, trial, done):
        client = _client(trial.statistician)
        direct = client.get(f"/analytics/studies/{trial.study.code}/jobs/")
        polled = client.get(f"/analytics/studies/{trial.study.code}/jobs/", HTTP_HX_REQUEST="true")

        assert direct.status_code == polled.status_code == 200
        assert "<html" in direct.content.decode()
        assert "analytics/durability.css" in direct.content.decode()
        assert "Remission durability" in direct.content.decode()
        assert "<html" not in polled.content.decode()
        status = client.get(f"/analytics/jobs/{done.pk}/status/").content.decode()
        assert "<html" in status
        assert f"Analysis #{done.pk}" in status


class TestPlacebo:
    def _placebo(self, trial, *numbers: int) -> None:
        with admin_change("cohort given placebo (0 cells/kg) for this test"):
            DoseCohort.objects.filter(study=trial.study, number__in=numbers).update(
                planned_cells_per_kg=0, label="Placebo"
            )

    def test_a_placebo_cohort_is_a_group_and_the_dose_model_leaves_it_out(
        self, trial, django_capture_on_commit_callbacks
    ):
        self._placebo(trial, 1)
        job = _analyse(trial, {"grouping": "cohort"}, django_capture_on_commit_callbacks)
        numbers = job.result.numbers

        assert numbers["groups"] == ["Cohort 1 (Placebo)", "Cohort 2 (5M/kg)", "Cohort 3 (20M/kg)"]
        assert numbers["log_rank"]["df"] == 2  # placebo is compared with the active cohorts
        cox = numbers["cox_dose"]
        assert cox["placebo_left_out"] == 4
        assert cox["n"] == 6  # the dosed participants only
        assert cox["coefficients"][0]["covariate"] == "log10_dose"
        content = _client(trial.statistician).get(f"/analytics/jobs/{job.pk}/").content.decode()
        assert "4 placebo participants (0 cells/kg) left out of this model" in content

    def test_with_one_active_dose_left_the_dose_model_says_why_it_is_not_estimable(
        self, trial, django_capture_on_commit_callbacks
    ):
        self._placebo(trial, 1, 2)
        job = _analyse(trial, {"grouping": "cohort"}, django_capture_on_commit_callbacks)
        cox = job.result.numbers["cox_dose"]

        assert cox["estimable"] is False
        assert cox["reason"].startswith("fewer than two active dose levels")
        assert "8 placebo participants (0 cells/kg) left out" in cox["reason"]
