"""The analytics outbox (issue 17; docs/reliability.md #34-35): a message is a row written with the
change it follows, published after commit; a broker that is down costs about a second and never an
error page; the relay publishes what is left once the broker is back. The broker here is real: a
URL nobody listens on, then the tests' Redis (no worker: the published message is read back)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from analytics import selectors, services
from analytics.models import AnalysisJob, DataCut, TaskOutbox
from analytics.outbox import ATTEMPT_LEASE, outbox_add, outbox_relay, outbox_send
from tests.analytics.conftest import DEAD_BROKER, _point_celery_at, _restore_celery


def _published(redis_client) -> list[dict]:
    """The Celery messages waiting in Redis: task name and arguments of each."""
    messages = []
    for raw in redis_client.lrange("celery", 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        messages.append({"task": message["headers"]["task"], "args": args})
    return messages


class TestOutboxRows:
    def test_a_new_cut_writes_its_derivation_message_with_it(self, bare):
        row = TaskOutbox.objects.get(data_cut=bare.cut)
        assert (row.task, row.args, row.job_id) == ("analytics.materialise_remission_assessments", [bare.cut.pk], None)

    def test_a_rolled_back_change_leaves_no_message(self, bare, django_capture_on_commit_callbacks):
        before = TaskOutbox.objects.count()

        def failing_change() -> None:
            with transaction.atomic():
                outbox_add(task="analytics.run_analysis", args=[bare.cut.pk], data_cut_id=bare.cut.pk)
                raise RuntimeError("the change failed")

        with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
            failing_change()
        assert TaskOutbox.objects.count() == before
        assert callbacks == []

    def test_a_request_writes_its_message_with_the_job(self, bare, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks() as callbacks:
            job = services.analysis_request(actor=bare.statistician, data_cut=bare.cut, spec={})
        row = TaskOutbox.objects.get(job=job)
        assert (row.task, row.args, row.sent_at, row.attempts) == ("analytics.run_analysis", [job.pk], None, 0)
        assert len(callbacks) == 1  # one publish attempt, after commit


class TestDeadBroker:
    def test_a_request_answers_at_once_and_its_message_waits(
        self, bare, dead_broker, django_capture_on_commit_callbacks
    ):
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            job = services.analysis_request(actor=bare.statistician, data_cut=bare.cut, spec={})
        elapsed = time.monotonic() - started

        assert elapsed < 3, elapsed  # it was 19 s (the result backend's reconnect loop)
        row = TaskOutbox.objects.get(job=job)
        assert row.sent_at is None
        assert row.attempts == 1
        assert "Connection refused" in row.error or "111" in row.error
        assert AnalysisJob.objects.get(pk=job.pk).status == "queued"
        assert selectors.job_get(user=bare.statistician, pk=job.pk).waiting_for_queue is True

    def test_asking_again_while_the_message_waits_does_not_queue_it_twice(
        self, bare, dead_broker, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            job = services.analysis_request(actor=bare.statistician, data_cut=bare.cut, spec={})
        AnalysisJob.objects.filter(pk=job.pk).update(queued_at=timezone.now() - services.QUEUED_TOO_LONG * 2)

        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            again = services.analysis_request(actor=bare.statistician, data_cut=bare.cut, spec={})

        assert again.pk == job.pk
        assert callbacks == []
        assert TaskOutbox.objects.filter(job=job).count() == 1

    def test_the_api_answers_202_and_says_the_job_waits_for_the_queue(
        self, bare, dead_broker, django_capture_on_commit_callbacks
    ):
        api = APIClient()
        api.force_authenticate(bare.statistician)
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/api/v1/analyses/", {"data_cut": bare.cut.pk, "spec": {}}, format="json")
        assert time.monotonic() - started < 3
        assert response.status_code == 202
        body = response.json()
        assert (body["status"], body["waiting_for_queue"], body["stalled"]) == ("queued", True, False)

    def test_a_data_cut_is_created_and_its_derivations_wait_for_the_queue(
        self, bare, dead_broker, django_capture_on_commit_callbacks
    ):
        api = APIClient()
        api.force_authenticate(bare.statistician)
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post(
                "/api/v1/data-cuts/", {"study": bare.study.code, "cut_date": "2026-06-01"}, format="json"
            )
        assert response.status_code == 201
        assert response.json()["waiting_for_queue"] is True
        cut = DataCut.objects.get(pk=response.json()["id"])
        assert TaskOutbox.objects.get(data_cut=cut).sent_at is None

    def test_the_page_says_the_analysis_is_queued_and_the_queue_unreachable(
        self, bare, dead_broker, django_capture_on_commit_callbacks
    ):
        client = Client()
        client.force_login(bare.statistician)
        form = {"data_cut": bare.cut.pk, "endpoint": "time_to_relapse", "grouping": "cohort", "ci_transform": "log"}
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(f"/analytics/studies/{bare.study.code}/analyses/", form, follow=True)
        content = response.content.decode()
        assert response.status_code == 200
        job = AnalysisJob.objects.get(data_cut=bare.cut)
        assert f"Analysis #{job.pk} queued; the task queue is unreachable" in content
        assert "Waiting for the task queue" in content


@pytest.fixture
def silent_broker():
    """A "Redis" that accepts connections and never answers (a hung server, a half-open link): kombu
    would wait on it forever without a socket timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    saved = _point_celery_at(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
    yield accepted
    _restore_celery(saved)
    stop.set()
    thread.join(timeout=5)
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_broker_that_never_answers_costs_a_request_seconds_not_forever(
    bare, silent_broker, django_capture_on_commit_callbacks
):
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        job = services.analysis_request(actor=bare.statistician, data_cut=bare.cut, spec={})
    elapsed = time.monotonic() - started

    assert silent_broker  # the request did reach the hung server
    assert elapsed < 5, elapsed
    row = TaskOutbox.objects.get(job=job)
    assert row.sent_at is None
    assert "Timeout" in row.error


class TestRelay:
    def test_once_the_broker_is_back_the_relay_publishes_what_waited(
        self, bare, live_broker, django_capture_on_commit_callbacks
    ):
        saved = _point_celery_at(DEAD_BROKER)
        try:
            with django_capture_on_commit_callbacks(execute=True):
                job = services.analysis_request(actor=bare.statistician, data_cut=bare.cut, spec={})
            assert outbox_relay(now=timezone.now() + ATTEMPT_LEASE).failed  # still down: tried, kept
        finally:
            _restore_celery(saved)
        waiting = list(TaskOutbox.objects.filter(sent_at=None).order_by("pk"))
        assert [row.job_id for row in waiting if row.job_id] == [job.pk]

        relayed = outbox_relay(now=timezone.now() + ATTEMPT_LEASE)

        assert set(relayed.sent) == {row.pk for row in waiting}
        assert not TaskOutbox.objects.filter(sent_at=None).exists()
        sent = TaskOutbox.objects.get(job=job)
        assert sent.message_id
        assert sent.error == ""
        assert {"task": "analytics.run_analysis", "args": [job.pk]} in _published(live_broker)

    def test_a_row_whose_attempt_is_under_way_is_left_to_it(
        self, bare, live_broker, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks():
            job = services.analysis_request(actor=bare.statistician, data_cut=bare.cut, spec={})
        row = TaskOutbox.objects.get(job=job)
        TaskOutbox.objects.filter(pk=row.pk).update(last_attempt_at=timezone.now())  # another sender claimed it

        assert row.pk not in outbox_relay().sent
        assert row.pk in outbox_relay(now=timezone.now() + ATTEMPT_LEASE).sent

    def test_a_sent_row_is_not_sent_again(self, bare, live_broker, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks():
            job = services.analysis_request(actor=bare.statistician, data_cut=bare.cut, spec={})
        row = TaskOutbox.objects.get(job=job)

        assert outbox_send(ids=[row.pk]).sent == (row.pk,)
        assert outbox_send(ids=[row.pk]).sent == ()
        assert [m for m in _published(live_broker) if m["task"] == "analytics.run_analysis"] == [
            {"task": "analytics.run_analysis", "args": [job.pk]}
        ]


def test_the_relay_and_the_stale_job_check_run_on_beat():
    from django.conf import settings

    from analytics import tasks  # noqa: F401 - what a worker imports
    from config.celery_app import app

    schedule = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["analytics.outbox_relay"]["schedule"].total_seconds() <= 30  # docs/reliability.md #35
    assert schedule["analytics.requeue_stale_jobs"]["schedule"].total_seconds() <= 60
    assert {"analytics.outbox_relay", "analytics.requeue_stale_jobs"} <= set(app.tasks)
    assert settings.CELERY_BROKER_CONNECTION_TIMEOUT <= 1
    assert settings.CELERY_TASK_PUBLISH_RETRY_POLICY["max_retries"] == 0
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["socket_timeout"] <= 2
