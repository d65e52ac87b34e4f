"""Analysis jobs on a REAL Celery worker process, against Redis and the pytest test database
(docs/style.md: eager mode would run the task inside the test's transaction and hide serialization and
commit-timing bugs; docs/reliability.md #36: a worker killed mid-task, the job completes exactly once;
#34-35: a broker that is down delays the work, never the answer, and loses nothing).

Needs ``CELERY_BROKER_URL`` (CI: ``redis://127.0.0.1:6379/14``); the Redis database it names is
dedicated to these tests and is emptied first. Without it these tests fail, on purpose.

The worker runs the test app ``tests.analytics.held_worker``: the project's tasks, plus a hold for
analyses of a cut labelled ``hold N s`` (long enough to kill the worker mid-analysis). Heartbeats
every second and a 3-second stale bound make a dead worker's job recoverable within seconds here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import redis
from django.db import connection
from django.test import Client
from django.utils import timezone
from kombu import Connection

from analytics import services
from analytics.job_recovery import analysis_requeue_stale
from analytics.models import AnalysisJob, AnalysisResult, DataCut, RemissionAssessment, TaskOutbox
from analytics.outbox import ATTEMPT_LEASE, outbox_relay
from config.celery_app import app as celery_app
from tests.analytics.conftest import CUT_DATE, build_trial
from tests.analytics.held_worker import HELD_PERCENT, hold_label

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

BASE_DIR = Path(__file__).resolve().parents[2]
HEARTBEAT_SECONDS, STALE_SECONDS = 1, 3
DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused
WORKER_PATTERNS = [
    [True, True, True, True, True],
    [True, True, False, False, True],
    [False, True, True, True, False],
    [True, False, True, True, True],
    [True, True, True, False, False],
]


def _test_database_url() -> str:
    """The URL of the pytest test database: DATABASE_URL with the test database's name."""
    name = connection.settings_dict["NAME"]
    url = os.environ.get("DATABASE_URL")
    if url:
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + quote(name), parts.query, parts.fragment))
    s = connection.settings_dict
    auth = quote(s["USER"] or "") + (f":{quote(s['PASSWORD'])}" if s.get("PASSWORD") else "")
    host = quote(s["HOST"] or "", safe="")
    return f"postgres://{auth}@{host}:{s['PORT'] or 5432}/{quote(name)}"


class Worker:
    """``celery -A tests.analytics.held_worker worker --pool=solo -Q celery -c 1`` as a subprocess,
    logging to a file."""

    def __init__(self, broker_url: str, database_url: str) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "TOLERANCE_DB_ASSUME_APP_ROLE": "False",
            "TOLERANCE_JOB_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "TOLERANCE_JOB_STALE_SECONDS": str(STALE_SECONDS),
        }
        self.log = Path(tempfile.mkstemp(prefix="analytics-worker-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        offset = self.log.stat().st_size
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.analytics.held_worker",
            "worker",
            "--pool=solo",
            "-Q",
            "celery",
            "-c",
            "1",
            "--prefetch-multiplier=1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
            "-n",
            f"analytics-test-{uuid.uuid4().hex[:8]}@%h",
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed command line
                command, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the Celery worker exited with {self.process.returncode}:\n{self.tail()}")
            with self.log.open("rb") as log:
                log.seek(offset)
                if b" ready." in log.read():
                    return
            time.sleep(0.2)
        pytest.fail(f"the Celery worker did not become ready in {timeout} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no acknowledgement, no restore of reserved messages."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def broker_url() -> str:
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url:
        pytest.fail(
            "CELERY_BROKER_URL is not set. The worker tests run a real Celery worker against Redis: "
            "set it to a Redis database reserved for them, e.g. CELERY_BROKER_URL=redis://127.0.0.1:6379/14 "
            "(it is emptied before the tests)."
        )
    if not url.startswith(("redis://", "rediss://")):
        pytest.fail(f"CELERY_BROKER_URL must be a Redis URL for the worker tests, not {url.split(':')[0]}")
    return url


@pytest.fixture(scope="module")
def worker(broker_url, django_db_setup, django_db_blocker):
    """One worker for the module (the kill test restarts it). The test process publishes to Redis
    for real: whatever the settings say, the app is not eager here."""
    redis.Redis.from_url(broker_url).flushdb()
    saved = {key: celery_app.conf[key] for key in ("task_always_eager", "broker_url", "result_backend")}
    celery_app.conf.update(task_always_eager=False, broker_url=broker_url, result_backend=broker_url)
    celery_app.close()  # drop any producer pool made with other settings
    with django_db_blocker.unblock():
        database_url = _test_database_url()
    process = Worker(broker_url, database_url)
    process.start()
    yield process
    process.stop()
    celery_app.conf.update(saved)
    celery_app.close()
    process.log.unlink(missing_ok=True)


@pytest.fixture
def trial(worker, settings):
    settings.TOLERANCE_JOB_HEARTBEAT_SECONDS = HEARTBEAT_SECONDS
    settings.TOLERANCE_JOB_STALE_SECONDS = STALE_SECONDS
    return build_trial(code="treg-ra-worker", patterns=WORKER_PATTERNS)


def _use_broker(url: str) -> None:
    """Point this process's publishing at ``url`` (the worker keeps its own, live, broker). The write
    URL, because Celery reads CELERY_BROKER_URL from the environment before ``broker_url``."""
    celery_app.conf.update(broker_write_url=url)
    celery_app.close()  # drop the pooled connections to the previous broker


def _wait_for(job_id: int, worker: Worker, condition, timeout: float = 40) -> AnalysisJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = AnalysisJob.objects.get(pk=job_id)
        if condition(job):
            return job
        time.sleep(0.2)
    pytest.fail(f"analysis {job_id} is {job.status} ({job.stage}, {job.error}) after {timeout} s:\n{worker.tail()}")


def _queued_messages(broker_url: str) -> int:
    return redis.Redis.from_url(broker_url).llen("celery")


def test_a_requested_job_completes_on_the_worker_and_stores_its_result(trial, worker):
    cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)

    job = services.analysis_request(actor=trial.statistician, data_cut=cut, spec={"grouping": "cohort"})

    done = _wait_for(job.pk, worker, lambda j: j.status in ("succeeded", "failed"))
    assert done.status == "succeeded", done.error
    assert (done.progress, done.attempts) == (100, 1)
    assert done.task_id  # the Celery message that ran it
    result = AnalysisResult.objects.get(job=done)
    assert result.data_cut_checksum == cut.checksum
    assert result.numbers["n"] == 5
    assert bytes(result.km_png).startswith(b"\x89PNG")
    # The worker computed what this process computes from the same cut.
    assert services.analysis_compute(job=done)["numbers"] == result.numbers


def test_asking_again_returns_the_stored_result_without_a_new_run(trial, worker, broker_url):
    cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
    job = services.analysis_request(actor=trial.statistician, data_cut=cut, spec={"grouping": "pooled"})
    done = _wait_for(job.pk, worker, lambda j: j.status == "succeeded")

    again = services.analysis_request(actor=trial.medical_monitor, data_cut=cut, spec={"grouping": "pooled"})

    assert again.pk == done.pk
    assert again.status == "succeeded"
    assert _queued_messages(broker_url) == 0  # nothing was published
    time.sleep(1.0)
    after = AnalysisJob.objects.get(pk=job.pk)
    assert (after.attempts, after.finished_at) == (1, done.finished_at)
    assert AnalysisResult.objects.filter(job=job).count() == 1


def test_a_worker_killed_mid_task_is_redelivered_and_the_job_completes_once(trial, worker, broker_url):
    cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE, label=hold_label(4))
    job = services.analysis_request(actor=trial.statistician, data_cut=cut, spec={"grouping": "cohort"})
    running = _wait_for(job.pk, worker, lambda j: j.status == "running" and j.progress == HELD_PERCENT)
    first_task = running.task_id

    worker.kill()

    stranded = AnalysisJob.objects.get(pk=job.pk)
    assert (stranded.status, stranded.attempts) == ("running", 1)
    assert not AnalysisResult.objects.filter(job=job).exists()

    worker.start()
    # With acks_late the message is still unacknowledged in Redis. The broker hands it out again
    # once its visibility timeout has passed (a worker's periodic restore); the production timeout
    # is an hour, so here the restore runs with a 1-second timeout through kombu's own code.
    time.sleep(1.5)
    with Connection(broker_url, transport_options={"visibility_timeout": 1}) as broker:
        broker.default_channel.qos.restore_visible(num=100)

    done = _wait_for(job.pk, worker, lambda j: j.status in ("succeeded", "failed"), timeout=45)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2
    assert done.task_id == first_task  # the same message, redelivered
    assert AnalysisResult.objects.filter(job=job).count() == 1
    assert AnalysisJob.objects.filter(data_cut=cut).count() == 1


def test_a_job_whose_worker_was_killed_is_requeued_once_by_beat_and_completes(trial, worker, broker_url):
    """Issue 16: the worker and its analysis die (SIGKILL) and a new worker starts. The old message
    stays unacknowledged in Redis (its visibility timeout is 45 minutes), so nothing would happen for
    that long: beat's stale-job check re-queues the job once its heartbeat is older than the bound."""
    cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE, label=hold_label(4))
    job = services.analysis_request(actor=trial.statistician, data_cut=cut, spec={"grouping": "pooled"})
    running = _wait_for(job.pk, worker, lambda j: j.status == "running" and j.progress == HELD_PERCENT)
    first_task = running.task_id

    worker.kill()
    killed = time.monotonic()
    worker.start()

    requeued: list[int] = []
    while True:  # beat, every second here (every minute in production)
        requeued += analysis_requeue_stale().requeued
        done = AnalysisJob.objects.get(pk=job.pk)
        if done.status in ("succeeded", "failed") or time.monotonic() - killed > 60:
            break
        time.sleep(1)
    recovery = time.monotonic() - killed

    assert done.status == "succeeded", f"{done.status} {done.stage} {done.error}\n{worker.tail()}"
    assert requeued == [job.pk]  # once, although beat ran every second while the job was stale
    assert (done.attempts, AnalysisResult.objects.filter(job=job).count()) == (2, 1)
    assert done.task_id != first_task  # a new message, not the stranded one
    assert [row.sent_at is not None for row in TaskOutbox.objects.filter(job=job)] == [True, True]
    # Stale bound (3 s) + beat (1 s) + a worker start + the 4-second hold and the analysis.
    assert recovery < 45, recovery
    print(f"stuck-job recovery: {recovery:.1f} s from SIGKILL to the stored result")


def test_a_dead_broker_answers_at_once_and_the_relay_starts_the_work_when_it_is_back(trial, worker, broker_url):
    """Issue 17: with the broker unreachable, an analysis request and a data cut answer at once with
    a clear message (not a 500 after 19 s), their messages wait in the outbox, and the relay publishes
    them once the broker is back: the job runs, the cut's derivations are stored."""
    cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
    client = Client()
    client.force_login(trial.statistician)
    base = f"/analytics/studies/{trial.study.code}/"
    form = {"data_cut": cut.pk, "endpoint": "time_to_relapse", "grouping": "cohort", "ci_transform": "log"}

    _use_broker(DEAD_BROKER)
    try:
        started = time.monotonic()
        answer = client.post(base + "analyses/", form, follow=True)
        answered_in = time.monotonic() - started
        cut_answer = client.post(base + "cuts/", {"cut_date": CUT_DATE.isoformat(), "label": "while down"}, follow=True)
        still_down = outbox_relay(now=timezone.now() + ATTEMPT_LEASE)
    finally:
        _use_broker(broker_url)

    assert answer.status_code == 200
    assert answered_in < 3, answered_in
    job = AnalysisJob.objects.get(data_cut=cut)
    assert f"Analysis #{job.pk} queued; the task queue is unreachable" in answer.content.decode()
    assert "Waiting for the task queue" in answer.content.decode()
    assert job.status == "queued"
    assert cut_answer.status_code == 200
    down_cut = DataCut.objects.get(label="while down")
    assert "derivations are queued; the task queue is unreachable" in cut_answer.content.decode()
    unsent = TaskOutbox.objects.filter(sent_at=None).order_by("pk")
    assert [(row.job_id, row.data_cut_id) for row in unsent] == [(job.pk, None), (None, down_cut.pk)]
    assert all(row.error for row in unsent)
    assert set(still_down.failed) == {row.pk for row in unsent}

    relayed = outbox_relay(now=timezone.now() + ATTEMPT_LEASE)

    assert set(relayed.sent) == {row.pk for row in unsent}
    done = _wait_for(job.pk, worker, lambda j: j.status in ("succeeded", "failed"))
    assert (done.status, done.attempts) == ("succeeded", 1), done.error
    deadline = time.monotonic() + 30
    while not RemissionAssessment.objects.filter(data_cut=down_cut).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert RemissionAssessment.objects.filter(data_cut=down_cut).exists(), worker.tail()
    assert not TaskOutbox.objects.filter(sent_at=None).exists()
