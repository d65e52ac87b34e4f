"""Analysis jobs through the services, without a broker: idempotent requests keyed on (cut, spec
hash), the compare-and-set claim, stored results, failures, reproducibility and blinding. The real
Celery worker runs in test_jobs_worker.py."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.http import Http404

from analytics import selectors, services
from analytics.models import AnalysisJob, AnalysisResult, RemissionAssessment
from analytics.spec import spec_parse
from analytics.tasks import run_analysis_task
from tests.analytics.conftest import CUT_DATE, build_trial
from trials import services as trial_services
from trials.errors import RuleViolation
from trials.models import DiseaseAssessment, StudyMembership


@pytest.fixture
def cut(trial):
    return services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)


def _request(actor, cut, spec, capture):
    with capture() as callbacks:
        job = services.analysis_request(actor=actor, data_cut=cut, spec=spec)
    return job, callbacks


def _run(job, task_id="task-1"):
    return services.analysis_run(job_id=job.pk, task_id=task_id)


class TestAnalysisRequest:
    def test_a_new_request_queues_one_task_after_commit(self, trial, cut, django_capture_on_commit_callbacks):
        job, callbacks = _request(trial.statistician, cut, {"grouping": "cohort"}, django_capture_on_commit_callbacks)

        assert job.status == AnalysisJob.Status.QUEUED
        assert job.spec == spec_parse({}).to_dict()
        assert len(callbacks) == 1
        assert job.requested_by == trial.statistician

    def test_the_job_runs_to_a_stored_result(self, trial, cut, django_capture_on_commit_callbacks):
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)

        assert _run(job) == "succeeded"

        job.refresh_from_db()
        assert (job.status, job.progress, job.attempts, job.stage) == ("succeeded", 100, 1, "done")
        assert job.finished_at is not None
        assert job.error == ""
        result = job.result
        assert result.data_cut_checksum == cut.checksum
        assert len(result.input_checksum) == 64
        assert result.library_versions["lifelines"] == "0.30.3"
        numbers = result.numbers
        assert numbers["n"] == 10
        assert numbers["groups"] == ["Cohort 1 (1M/kg)", "Cohort 2 (5M/kg)", "Cohort 3 (20M/kg)"]
        assert [g["n"] for g in numbers["kaplan_meier"]["groups"]] == [4, 4, 2]
        assert numbers["kaplan_meier"]["ci_transform_primary"] == "log"
        at_6_months = numbers["kaplan_meier"]["groups"][0]["survival_at"][0]
        assert set(at_6_months) >= {"survival", "ci_log", "ci_log_log", "std_err"}
        assert numbers["log_rank"]["df"] == 2
        assert numbers["cox_dose"]["coefficients"][0]["covariate"] == "log10_dose"
        assert "batch_mode=True" in numbers["cox_dose"]["engine"]
        assert numbers["cumulative_incidence"]["Cohort 3 (20M/kg)"]["competing"] == 1  # the death
        # τ defaults to the largest time every group reaches: cohort 2's last observation (day 365: a
        # relapse and a withdrawal), not the 730 days of follow-up.
        last = {label: group["last_observation_days"] for label, group in numbers["summary"].items()}
        assert numbers["rmst"]["horizon"] == min(last.values()) == last["Cohort 2 (5M/kg)"] == 365
        assert numbers["rmst"]["warnings"] == []
        assert len(numbers["rmst"]["comparisons"]) == 2
        assert numbers["turnbull"]["Cohort 1 (1M/kg)"]["analysis"] == "turnbull_npmle"
        pir = numbers["probability_in_remission"]
        assert [g["group"] for g in pir["groups"]] == numbers["groups"]
        assert all(0 <= g["mean_time_in_remission"] <= 730 for g in pir["groups"])
        assert [lm["label"] for lm in numbers["landmarks"]] == ["3 months", "6 months"]
        assert bytes(result.pir_png).startswith(b"\x89PNG")
        assert numbers["input"]["input_checksum"] == result.input_checksum
        assert result.km_svg.lstrip().startswith("<?xml")
        assert "<svg" in result.km_svg
        assert bytes(result.km_png).startswith(b"\x89PNG")
        assert bytes(result.cif_png).startswith(b"\x89PNG")

    def test_a_new_cut_stores_its_per_assessment_derivations_once(self, trial, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks() as callbacks:
            cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
        assert len(callbacks) == 1  # the materialisation task, enqueued once the cut is committed
        assert RemissionAssessment.objects.filter(data_cut=cut).count() == 0

        assert services.remission_assessments_materialise(cut_id=cut.pk) == 50
        assert services.remission_assessments_materialise(cut_id=cut.pk) == 0  # already stored: no second copy
        assert RemissionAssessment.objects.filter(data_cut=cut).count() == 50
        assert RemissionAssessment.objects.filter(data_cut=cut, adequate=True).count() == 43
        row = RemissionAssessment.objects.filter(data_cut=cut, assessment__isnull=False).first()
        assert row.definition == cut.definition
        assert row.assessment.visit_id == row.visit_id
        assert row.derived["definition"] == "RA/SDAI remission@1"
        assert row.derived["values"]["sdai"][0] == str(
            Decimal(row.derived["values"]["sdai"][0]).quantize(Decimal("0.0001"))
        )

    def test_asking_again_returns_the_stored_result_without_a_new_run(
        self, trial, cut, django_capture_on_commit_callbacks
    ):
        job, _ = _request(trial.statistician, cut, {"grouping": "cohort"}, django_capture_on_commit_callbacks)
        _run(job)

        again, callbacks = _request(
            trial.medical_monitor,
            cut,
            {"grouping": "cohort", "ci_transform": "log"},
            django_capture_on_commit_callbacks,
        )

        assert again.pk == job.pk
        assert again.result.pk == job.result.pk
        assert callbacks == []
        assert AnalysisJob.objects.count() == 1
        assert AnalysisResult.objects.count() == 1

    def test_a_queued_job_asked_for_again_is_not_queued_twice(self, trial, cut, django_capture_on_commit_callbacks):
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)
        again, callbacks = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)
        assert (again.pk, callbacks) == (job.pk, [])

    def test_another_spec_is_another_job(self, trial, cut, django_capture_on_commit_callbacks):
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)
        other, _ = _request(trial.statistician, cut, {"ci_transform": "log-log"}, django_capture_on_commit_callbacks)
        assert other.pk != job.pk
        assert other.spec_hash != job.spec_hash

    def test_a_bad_spec_is_refused_field_by_field(self, trial, cut):
        with pytest.raises(RuleViolation) as refused:
            services.analysis_request(
                actor=trial.statistician,
                data_cut=cut,
                spec={"grouping": "site", "horizon_days": 5, "colour": "red", "debug_sleep_seconds": 3},
            )
        assert set(refused.value.message_dict) == {"grouping", "horizon_days", "colour", "debug_sleep_seconds"}
        assert not AnalysisJob.objects.exists()

    def test_a_coordinator_cannot_request_analyses(self, trial, cut):
        with pytest.raises(PermissionDenied):
            services.analysis_request(actor=trial.coordinator, data_cut=cut, spec={})
        assert not AnalysisJob.objects.exists()


class TestAnalysisRun:
    def test_a_second_message_for_a_finished_job_does_nothing(self, trial, cut, django_capture_on_commit_callbacks):
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)
        _run(job, "task-1")

        assert _run(job, "task-2") == "skipped (succeeded)"
        assert _run(job, "task-1") == "skipped (succeeded)"

        job.refresh_from_db()
        assert job.attempts == 1
        assert AnalysisResult.objects.filter(job=job).count() == 1

    def test_a_job_running_elsewhere_is_left_alone(self, trial, cut, django_capture_on_commit_callbacks):
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)
        AnalysisJob.objects.filter(pk=job.pk).update(status="running", task_id="task-1", attempts=1)

        assert _run(job, "task-2") == "skipped (running)"
        job.refresh_from_db()
        assert (job.status, job.attempts, job.task_id) == ("running", 1, "task-1")

    def test_a_redelivered_message_takes_its_job_back(self, trial, cut, django_capture_on_commit_callbacks):
        """The worker holding the message died mid-run: the same task id claims the job again."""
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)
        AnalysisJob.objects.filter(pk=job.pk).update(status="running", task_id="task-1", attempts=1, progress=10)

        assert _run(job, "task-1") == "succeeded"

        job.refresh_from_db()
        assert (job.status, job.attempts) == ("succeeded", 2)
        assert AnalysisResult.objects.filter(job=job).count() == 1

    def test_a_failure_is_recorded_with_its_message(self, trial, django_capture_on_commit_callbacks):
        # A cut before the first infusion has nobody to analyse.
        import datetime as dt

        early = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=dt.date(2024, 1, 31))
        job, _ = _request(trial.statistician, early, {}, django_capture_on_commit_callbacks)

        assert _run(job) == "failed"

        job.refresh_from_db()
        assert job.status == "failed"
        assert "no participant" in job.error
        assert not AnalysisResult.objects.filter(job=job).exists()

    def test_a_failed_job_asked_for_again_is_queued_again(self, trial, cut, django_capture_on_commit_callbacks):
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)
        services.analysis_fail(job_id=job.pk, message="worker ran out of memory")

        again, callbacks = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)

        assert again.pk == job.pk
        assert (again.status, again.error) == ("queued", "")
        assert len(callbacks) == 1

    def test_transient_errors_propagate_for_the_task_to_retry(
        self, trial, cut, django_capture_on_commit_callbacks, monkeypatch
    ):
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)

        def lost_connection(**kwargs):
            raise OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(services, "analysis_compute", lost_connection)
        with pytest.raises(OperationalError):
            _run(job, "task-1")
        job.refresh_from_db()
        # Still claimed by the message: its retry (same task id) takes it back.
        assert (job.status, job.task_id, job.attempts) == ("running", "task-1", 1)

    def test_a_corrupted_frame_fails_the_job(self, trial, cut, django_capture_on_commit_callbacks):
        import gzip

        from analytics.models import DataCutFrame

        frame = DataCutFrame.objects.get(data_cut=cut, name="assessments")
        DataCutFrame.objects.filter(pk=frame.pk).update(content=gzip.compress(b"participant_id\n1\n", mtime=0))
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)

        assert _run(job) == "failed"
        job.refresh_from_db()
        assert "does not match its checksum" in job.error

    def test_the_task_is_configured_for_redelivery_and_bounded_retries(self):
        assert run_analysis_task.acks_late is True
        assert run_analysis_task.reject_on_worker_lost is True
        assert run_analysis_task.max_retries == 3
        assert OperationalError in run_analysis_task.autoretry_for
        assert run_analysis_task.retry_backoff


class TestReproducibility:
    def test_rerunning_on_the_same_cut_reproduces_checksum_and_numbers(
        self, trial, cut, django_capture_on_commit_callbacks
    ):
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)
        _run(job)
        stored = AnalysisResult.objects.get(job=job)
        # The live casebook changes after the cut; the cut does not.
        assessment = DiseaseAssessment.objects.filter(visit__participant=trial.participants[1]).latest(
            "assessment_date"
        )
        trial_services.record_void(actor=trial.data_manager, record=assessment, reason="transcription error")

        again = services.analysis_compute(job=AnalysisJob.objects.get(pk=job.pk))

        assert again["input_checksum"] == stored.input_checksum
        assert again["numbers"] == stored.numbers
        assert again["km_svg"] == stored.km_svg
        assert again["cif_svg"] == stored.cif_svg

    def test_a_new_cut_after_a_change_gives_a_new_checksum(self, trial, cut, django_capture_on_commit_callbacks):
        job, _ = _request(trial.statistician, cut, {}, django_capture_on_commit_callbacks)
        _run(job)
        assessment = DiseaseAssessment.objects.filter(visit__participant=trial.participants[1]).latest(
            "assessment_date"
        )
        trial_services.record_void(actor=trial.data_manager, record=assessment, reason="transcription error")
        new_cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
        new_job, _ = _request(trial.statistician, new_cut, {}, django_capture_on_commit_callbacks)
        _run(new_job)

        assert new_job.pk != job.pk
        assert (
            AnalysisResult.objects.get(job=new_job).input_checksum != AnalysisResult.objects.get(job=job).input_checksum
        )


@pytest.fixture
def blinded(db):
    from tests.factories import member
    from trials.models import Role

    trial = build_trial(code="treg-ra-blind", blinded=True, patterns=[[True] * 5, [True, True, False, False, True]] * 3)
    trial.unblinded_statistician = member("stats-unblinded", trial.study, Role.STATISTICIAN, unblinded=True)
    trial.cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
    return trial


class TestBlinding:
    def test_a_blinded_statistician_cannot_group_by_arm(self, blinded):
        with pytest.raises(PermissionDenied, match="pooled or by-cohort"):
            services.analysis_request(actor=blinded.statistician, data_cut=blinded.cut, spec={"grouping": "arm"})
        assert not AnalysisJob.objects.exists()

    def test_an_unblinded_statistician_gets_results_by_arm(self, blinded, django_capture_on_commit_callbacks):
        job, _ = _request(
            blinded.unblinded_statistician, blinded.cut, {"grouping": "arm"}, django_capture_on_commit_callbacks
        )
        _run(job)
        job.refresh_from_db()
        assert job.status == "succeeded", job.error
        assert job.result.numbers["groups"] == ["PLACEBO", "TREG"]

    def test_arm_results_are_invisible_to_blinded_roles(self, blinded, django_capture_on_commit_callbacks):
        arm_job, _ = _request(
            blinded.unblinded_statistician, blinded.cut, {"grouping": "arm"}, django_capture_on_commit_callbacks
        )
        cohort_job, _ = _request(
            blinded.statistician, blinded.cut, {"grouping": "cohort"}, django_capture_on_commit_callbacks
        )

        assert list(selectors.job_list(user=blinded.statistician)) == [cohort_job]
        with pytest.raises(Http404):
            selectors.job_get(user=blinded.statistician, pk=arm_job.pk)
        assert selectors.job_get(user=blinded.unblinded_statistician, pk=arm_job.pk) == arm_job

    def test_the_manifest_does_not_carry_the_allocation_checksum(self, blinded):
        assert blinded.cut.manifest["allocation_frame"] is True
        assert "allocation" not in blinded.cut.manifest["frames"]

    def test_grouping_by_arm_is_refused_in_an_open_label_study(self, trial, cut):
        StudyMembership.objects.filter(user=trial.statistician).update(unblinded=True)
        trial.statistician.__dict__.pop("_tolerance_memberships", None)
        with pytest.raises(RuleViolation, match="not randomized"):
            services.analysis_request(actor=trial.statistician, data_cut=cut, spec={"grouping": "arm"})
