"""The reporting-clock monitor (docs/domain.md Part A §2; docs/reliability.md #35-36): one notification per
report and threshold, emailed after commit, never twice, also when two runs overlap; and the thin
Celery task and beat entry that drive it."""

from __future__ import annotations

import datetime as dt
import os
import threading

import pytest
from django.conf import settings
from django.db import connection

from safety import services
from safety.models import ExpeditedReport, Notification, SAECase
from safety.tasks import clock_monitor_task
from tests.safety.conftest import serious_kwargs

UTC = dt.UTC
# The site's 24 h clock of the ``sae`` fixture runs from 2025-03-02 08:30 to 2025-03-03 08:30 UTC.
NOT_DUE = dt.datetime(2025, 3, 3, 2, 0, tzinfo=UTC)  # 6 h 30 min left
DUE_SOON = dt.datetime(2025, 3, 3, 2, 30, tzinfo=UTC)  # exactly 6 h left: due soon
OVERDUE = dt.datetime(2025, 3, 3, 8, 30, 1, tzinfo=UTC)


@pytest.fixture
def sae(participant, coordinator_site_a, medical_monitor, ctcae):
    coordinator_site_a.email = "coord.a@site01.example"
    coordinator_site_a.save()
    ae = services.adverse_event_record(actor=coordinator_site_a, participant=participant, **serious_kwargs(ctcae))
    return SAECase.objects.get(adverse_event=ae)


def _run(capture, now):
    with capture(execute=True):
        return services.clock_monitor_run(now=now)


class TestClockMonitor:
    def test_nothing_is_sent_before_the_due_soon_threshold(self, sae, django_capture_on_commit_callbacks, mailoutbox):
        result = _run(django_capture_on_commit_callbacks, NOT_DUE)
        assert result.created == ()
        assert not Notification.objects.exists()
        assert mailoutbox == []

    def test_a_report_due_soon_is_notified_once(self, sae, django_capture_on_commit_callbacks, mailoutbox):
        first = _run(django_capture_on_commit_callbacks, DUE_SOON)
        second = _run(django_capture_on_commit_callbacks, DUE_SOON + dt.timedelta(minutes=15))
        assert len(first.created) == 1
        assert second.created == ()
        notification = Notification.objects.get()
        assert notification.threshold == "due_soon"
        assert notification.sent_at is not None
        assert len(mailoutbox) == 1
        mail = mailoutbox[0]
        assert sorted(mail.to) == ["coord.a@site01.example", "medmon@sponsor.example"]
        assert sae.case_number in mail.subject
        assert "due soon" in mail.subject
        assert "2025-03-03 08:30 UTC" in mail.body

    def test_an_overdue_report_gets_its_own_notification_once(
        self, sae, django_capture_on_commit_callbacks, mailoutbox
    ):
        _run(django_capture_on_commit_callbacks, DUE_SOON)
        _run(django_capture_on_commit_callbacks, OVERDUE)
        _run(django_capture_on_commit_callbacks, OVERDUE + dt.timedelta(hours=1))
        assert sorted(Notification.objects.values_list("threshold", flat=True)) == ["due_soon", "overdue"]
        assert [m.subject.split(": ")[0].rsplit(" ", 1)[-1] for m in mailoutbox] == ["soon", "OVERDUE"]

    def test_a_report_first_seen_overdue_is_only_notified_as_overdue(self, sae, django_capture_on_commit_callbacks):
        _run(django_capture_on_commit_callbacks, OVERDUE)
        assert list(Notification.objects.values_list("threshold", flat=True)) == ["overdue"]

    def test_a_submitted_report_is_not_notified(self, sae, coordinator_site_a, django_capture_on_commit_callbacks):
        services.sae_report_to_sponsor(actor=coordinator_site_a, case=sae, narrative="Details.")
        assert _run(django_capture_on_commit_callbacks, OVERDUE).created == ()

    def test_the_case_of_a_voided_ae_raises_no_alarm(self, sae, coordinator_site_a, django_capture_on_commit_callbacks):
        from trials.services import record_void

        record_void(actor=coordinator_site_a, record=sae.adverse_event, reason="Entered for the wrong participant")
        assert _run(django_capture_on_commit_callbacks, OVERDUE).created == ()

    def test_nothing_is_sent_before_commit(self, sae, django_capture_on_commit_callbacks, mailoutbox):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            services.clock_monitor_run(now=DUE_SOON)
        assert mailoutbox == []
        assert len(callbacks) == 1
        assert Notification.objects.get().sent_at is None

    def test_a_failed_email_is_retried_by_a_later_run(
        self, sae, django_capture_on_commit_callbacks, mailoutbox, monkeypatch
    ):
        import django.core.mail

        real_send = django.core.mail.send_mail

        def broken(**kwargs):
            raise ConnectionRefusedError("SMTP down")

        monkeypatch.setattr(django.core.mail, "send_mail", broken)
        _run(django_capture_on_commit_callbacks, DUE_SOON)
        notification = Notification.objects.get()
        assert notification.sent_at is None
        assert "SMTP down" in notification.error
        monkeypatch.setattr(django.core.mail, "send_mail", real_send)
        # Within the grace period a later run leaves it alone (its own send may still be under way)...
        assert _run(django_capture_on_commit_callbacks, DUE_SOON + dt.timedelta(minutes=5)).resent == ()
        # ...after it, the row is sent again, once.
        later = _run(django_capture_on_commit_callbacks, DUE_SOON + services.RESEND_AFTER + dt.timedelta(minutes=1))
        assert later.resent == (notification.pk,)
        assert later.created == ()
        assert len(mailoutbox) == 1
        assert Notification.objects.get().sent_at is not None

    def test_a_regulatory_report_is_due_soon_48_hours_ahead(
        self, sae, coordinator_site_a, medical_monitor, django_capture_on_commit_callbacks, time_machine, mailoutbox
    ):
        time_machine.move_to(dt.datetime(2025, 3, 3, 7, 0, tzinfo=UTC), tick=False)
        services.sae_report_to_sponsor(actor=coordinator_site_a, case=sae, narrative="Details.")
        services.sae_sponsor_assess(
            actor=medical_monitor, case=sae, sponsor_causality="possibly", expected=False, expectedness_rationale="New"
        )
        report = ExpeditedReport.objects.get(case=sae, kind="fifteen_day")
        assert _run(django_capture_on_commit_callbacks, report.due_at - dt.timedelta(hours=48, seconds=1)).created == ()
        assert len(_run(django_capture_on_commit_callbacks, report.due_at - dt.timedelta(hours=48)).created) == 1
        # Regulatory clocks go to the sponsor's safety team only.
        assert mailoutbox[-1].to == ["medmon@sponsor.example"]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_send_each_notification_once(sae, monkeypatch, mailoutbox):
    """Both runs read the pending report before either writes its notification; the unique key lets
    exactly one of them claim it (the other's INSERT waits for the first commit, then fails)."""
    barrier = threading.Barrier(2, timeout=20)
    original = services._recipients

    def in_step(report):
        recipients = original(report)
        barrier.wait()
        return recipients

    monkeypatch.setattr(services, "_recipients", in_step)
    results, errors = [], []

    def run():
        try:
            results.append(services.clock_monitor_run(now=DUE_SOON))
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
    assert sorted(len(result.created) for result in results) == [0, 1]
    assert Notification.objects.count() == 1
    assert len(mailoutbox) == 1


class TestTask:
    def test_the_task_takes_json_and_calls_the_service(self, sae, django_capture_on_commit_callbacks, mailoutbox):
        with django_capture_on_commit_callbacks(execute=True):
            result = clock_monitor_task.apply(kwargs={"now": DUE_SOON.isoformat()}).get()
        assert result == {"checked": 1, "created": [Notification.objects.get().pk], "resent": []}
        assert len(mailoutbox) == 1

    def test_a_naive_time_is_refused(self, db):
        with pytest.raises(ValueError, match="time zone"):
            clock_monitor_task.apply(kwargs={"now": "2025-03-03T10:00:00"}).get()

    def test_beat_runs_it_every_15_minutes(self):
        from config.celery_app import app

        entry = settings.CELERY_BEAT_SCHEDULE["safety-clock-monitor"]
        assert entry["task"] == clock_monitor_task.name == "safety.clock_monitor"
        assert entry["schedule"] == dt.timedelta(minutes=15)
        assert "safety.clock_monitor" in app.tasks


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_task_from_redis(sae, mailoutbox):
    """The task through Redis and a real worker thread (docs/style.md: no eager mode for task tests): the
    worker's own connection sees the committed report, and runs the service exactly once.

    A Celery app of its own, configured like the project's but with a broker: the project's app is
    in eager mode in tests and caches its result backend per thread."""
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    # The worker tests' Redis (CI sets CELERY_BROKER_URL, as for tests/analytics/test_jobs_worker.py).
    redis_url = os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/15"
    app = Celery("tolerance-worker-test", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(broker_url=redis_url, result_backend=redis_url, task_always_eager=False)
    app.finalize()
    task = app.tasks[clock_monitor_task.name]
    app.control.purge()  # nothing left over from an interrupted run
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=20):
        result = task.delay(now=DUE_SOON.isoformat()).get(timeout=30)
        again = task.delay(now=DUE_SOON.isoformat()).get(timeout=30)
    assert len(result["created"]) == 1
    assert again["created"] == []
    assert Notification.objects.get().sent_at is not None
    assert len(mailoutbox) == 1
