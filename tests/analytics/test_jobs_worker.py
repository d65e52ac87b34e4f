"""Analysis jobs on a REAL Celery worker process, against Redis and the pytest test database
(docs/style.md: eager mode would run the task inside the test's transaction and hide serialization and
commit-timing bugs; docs/reliability.md §36: a worker killed mid-task, the job completes exactly once).

Needs ``CELERY_BROKER_URL`` (CI: ``redis://127.0.0.1:6379/14``); the Redis database it names is
dedicated to these tests and is emptied first. Without it these tests fail, on purpose.
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
from kombu import Connection

from analytics import services
from analytics.models import AnalysisJob, AnalysisResult
from config.celery_app import app as celery_app
from tests.analytics.conftest import CUT_DATE, build_trial

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

BASE_DIR = Path(__file__).resolve().parents[2]
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
    """``celery -A config worker --pool=solo -Q celery -c 1`` as a subprocess, logging to a file."""

    def __init__(self, broker_url: str, database_url: str) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "TOLERANCE_DB_ASSUME_APP_ROLE": "False",
            "TOLERANCE_ANALYTICS_DEBUG_SLEEP": "True",
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
            "config",
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
    settings.TOLERANCE_ANALYTICS_DEBUG_SLEEP = True
    return build_trial(code="treg-ra-worker", patterns=WORKER_PATTERNS)


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
    cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
    job = services.analysis_request(
        actor=trial.statistician, data_cut=cut, spec={"grouping": "cohort", "debug_sleep_seconds": 4}
    )
    running = _wait_for(job.pk, worker, lambda j: j.status == "running" and j.stage.startswith("waiting"))
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
