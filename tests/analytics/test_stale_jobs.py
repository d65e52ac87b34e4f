"""Jobs whose worker died (issue 16): heartbeats while an analysis runs, beat's re-queue of a job
silent past the stale bound (once, by compare-and-set), and what the pages say about such a job. The
end-to-end version, with a worker killed by SIGKILL, is in test_jobs_worker.py."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from analytics import job_recovery, services
from analytics.job_recovery import MAX_ATTEMPTS, Heartbeat, analysis_requeue_stale
from analytics.models import AnalysisJob, TaskOutbox
from tests.analytics.conftest import build_bare_cut

STALE = 180


@pytest.fixture(autouse=True)
def _bounds(settings):
    settings.TOLERANCE_JOB_HEARTBEAT_SECONDS = 30
    settings.TOLERANCE_JOB_STALE_SECONDS = STALE


def _running_job(bare, *, silent_for: float, attempts: int = 1, task_id: str = "task-1") -> AnalysisJob:
    job = AnalysisJob.objects.create(
        data_cut=bare.cut,
        spec={"grouping": "cohort"},
        spec_hash=f"hash-{task_id}-{silent_for}",
        requested_by=bare.statistician,
        queued_at=timezone.now(),
    )
    heartbeat = timezone.now() - dt.timedelta(seconds=silent_for)
    AnalysisJob.objects.filter(pk=job.pk).update(
        status="running", task_id=task_id, attempts=attempts, progress=6, stage="deriving", heartbeat_at=heartbeat
    )
    job.refresh_from_db()
    return job


class TestRequeue:
    def test_a_job_silent_past_the_bound_is_queued_again_once(self, bare, django_capture_on_commit_callbacks):
        job = _running_job(bare, silent_for=STALE + 20)

        with django_capture_on_commit_callbacks() as callbacks:
            first = analysis_requeue_stale()
        second = analysis_requeue_stale()

        assert (first.requeued, second.requeued) == ((job.pk,), ())
        job.refresh_from_db()
        assert (job.status, job.progress, job.task_id, job.attempts) == ("queued", 0, "", 1)
        assert job.stage.startswith("re-queued: no progress since ")
        assert list(TaskOutbox.objects.filter(job=job).values_list("task", "args")) == [
            ("analytics.run_analysis", [job.pk])
        ]
        assert len(callbacks) == 1  # published after commit

    def test_the_bound_is_exact(self, bare):
        job = _running_job(bare, silent_for=0)
        bound = job.heartbeat_at + dt.timedelta(seconds=STALE)

        assert analysis_requeue_stale(now=bound).requeued == ()
        assert analysis_requeue_stale(now=bound + dt.timedelta(milliseconds=1)).requeued == (job.pk,)

    def test_a_job_that_keeps_reporting_is_left_alone(self, bare):
        job = _running_job(bare, silent_for=STALE - 30)
        assert analysis_requeue_stale().requeued == ()
        job.refresh_from_db()
        assert (job.status, job.task_id) == ("running", "task-1")
        assert not TaskOutbox.objects.filter(job=job).exists()

    def test_a_job_that_stopped_every_time_is_failed_not_queued_again(self, bare):
        job = _running_job(bare, silent_for=STALE + 1, attempts=MAX_ATTEMPTS)

        result = analysis_requeue_stale()

        assert (result.requeued, result.failed) == ((), (job.pk,))
        job.refresh_from_db()
        assert job.status == "failed"
        assert f"stopped {MAX_ATTEMPTS} times" in job.error
        assert not TaskOutbox.objects.filter(job=job).exists()

    def test_the_requeued_job_runs_under_its_new_message_and_a_late_copy_of_the_old_one_stops(self, bare):
        job = _running_job(bare, silent_for=STALE + 1)
        analysis_requeue_stale()

        services.analysis_run(job_id=job.pk, task_id="task-2")  # the re-queued message (fails: empty cut)
        late = services.analysis_run(job_id=job.pk, task_id="task-1")  # the stranded one, redelivered

        assert late.startswith("skipped")
        job.refresh_from_db()
        assert (job.task_id, job.attempts) == ("task-2", 2)

    def test_a_request_for_a_running_job_leaves_it_to_beat(self, bare, django_capture_on_commit_callbacks):
        job = _running_job(bare, silent_for=STALE + 60)
        AnalysisJob.objects.filter(pk=job.pk).update(spec=services.spec_parse({}).to_dict())
        AnalysisJob.objects.filter(pk=job.pk).update(spec_hash=services.spec_parse({}).hash)

        with django_capture_on_commit_callbacks() as callbacks:
            again = services.analysis_request(actor=bare.statistician, data_cut=bare.cut, spec={})

        assert (again.pk, again.status, callbacks) == (job.pk, "running", [])


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_beat_runs_queue_a_stale_job_once(settings, monkeypatch):
    """Both runs find the job stale before either writes; the compare-and-set on the heartbeat they
    saw lets exactly one of them take it (the other's update waits for the first commit, then finds
    the job queued and changes nothing)."""
    settings.TOLERANCE_JOB_STALE_SECONDS = STALE
    settings.TOLERANCE_JOB_HEARTBEAT_SECONDS = 30
    bare = build_bare_cut(code="treg-ms-race")
    job = _running_job(bare, silent_for=STALE + 5)
    barrier = threading.Barrier(2, timeout=20)
    original = job_recovery._stale_jobs

    def in_step(now):
        stale = original(now)
        barrier.wait()
        return stale

    monkeypatch.setattr(job_recovery, "_stale_jobs", in_step)
    results, errors = [], []

    def run():
        try:
            results.append(analysis_requeue_stale())
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(len(result.requeued) for result in results) == [0, 1]
    assert TaskOutbox.objects.filter(job=job).count() == 1
    assert AnalysisJob.objects.get(pk=job.pk).status == "queued"


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_beats_while_the_job_is_held_and_stops_when_the_claim_moves(settings):
    settings.TOLERANCE_JOB_STALE_SECONDS = STALE
    bare = build_bare_cut(code="treg-ms-beat")
    job = _running_job(bare, silent_for=60)
    before = job.heartbeat_at

    with Heartbeat(job_id=job.pk, task_id="task-1", interval=0.1):
        time.sleep(0.5)
        beating = AnalysisJob.objects.get(pk=job.pk).heartbeat_at
        AnalysisJob.objects.filter(pk=job.pk).update(task_id="task-2")  # another run took the job
        time.sleep(0.3)
        moved = AnalysisJob.objects.get(pk=job.pk).heartbeat_at
        time.sleep(0.3)
        after = AnalysisJob.objects.get(pk=job.pk).heartbeat_at

    assert beating > before + dt.timedelta(seconds=59)
    assert after == moved  # the old run's heartbeat no longer touches the job


class TestPages:
    def test_a_silent_job_says_it_has_stopped_making_progress(self, bare):
        job = _running_job(bare, silent_for=90)
        client = Client()
        client.force_login(bare.statistician)

        listing = client.get(f"/analytics/studies/{bare.study.code}/jobs/", HTTP_HX_REQUEST="true").content.decode()
        status = client.get(f"/analytics/jobs/{job.pk}/status/", HTTP_HX_REQUEST="true").content.decode()

        for content in (listing, status):
            assert f"No progress since {job.heartbeat_at:%H:%M:%S} UTC (2 min)" in content
            assert "queued again automatically after 3 min without progress" in content

    def test_a_job_that_reports_says_nothing_of_the_kind(self, bare):
        _running_job(bare, silent_for=20)
        client = Client()
        client.force_login(bare.statistician)
        listing = client.get(f"/analytics/studies/{bare.study.code}/jobs/", HTTP_HX_REQUEST="true").content.decode()
        assert "No progress since" not in listing
        assert 'hx-trigger="every 2s"' in listing
