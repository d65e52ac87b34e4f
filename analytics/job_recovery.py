"""Analyses whose worker died: heartbeats while they run, and re-queueing once they fall silent.

* ``Heartbeat`` — while an analysis computes, a daemon thread touches the job's ``heartbeat_at`` every
  ``TOLERANCE_JOB_HEARTBEAT_SECONDS`` (progress reports touch it too): a stage that runs for minutes
  (a bootstrap, the Turnbull fit) keeps the job alive, and a worker that is killed stops beating with it.
* ``analysis_requeue_stale`` — Celery beat (``analytics.requeue_stale_jobs``): a running job silent for
  ``TOLERANCE_JOB_STALE_SECONDS`` is taken back by compare-and-set on the heartbeat it was seen with
  and queued again through the outbox, in one transaction. Two concurrent runs re-queue it once: the
  second one's update finds the heartbeat changed and writes nothing. The old message, if its broker
  ever redelivers it, finds the job queued or running under another message, or done, and stops
  (``analytics.services.analysis_run``'s claim).
* A job that has stopped ``MAX_ATTEMPTS`` times is failed, not queued again: something in it kills its
  worker (memory, a time limit), and another run would do the same.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from analytics.models import AnalysisJob
from analytics.outbox import outbox_add

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
RUN_TASK = "analytics.run_analysis"


class Heartbeat:
    """Context manager: touch the job's heartbeat from a daemon thread while the body runs. The thread
    writes only while the job is still running under ``task_id`` (a lost claim stops it) and uses its
    own database connection, closed when it stops."""

    def __init__(self, *, job_id: int, task_id: str, interval: float | None = None) -> None:
        self.job_id, self.task_id = job_id, task_id
        self.interval = float(interval if interval is not None else settings.TOLERANCE_JOB_HEARTBEAT_SECONDS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-analysis-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                beat = AnalysisJob.objects.filter(
                    pk=self.job_id, status=AnalysisJob.Status.RUNNING, task_id=self.task_id
                ).update(heartbeat_at=timezone.now())
                if beat != 1:
                    return  # the claim is gone: the computing thread notices at its next progress report
        except DatabaseError:
            # The database went away: the job falls silent and is re-queued, which is what should happen.
            logger.exception("analysis %s: heartbeat stopped", self.job_id)
        finally:
            connections.close_all()  # this thread's connections only


@dataclass(frozen=True)
class RequeueResult:
    requeued: tuple[int, ...]
    failed: tuple[int, ...]


def stale_bound(now: dt.datetime) -> dt.datetime:
    return now - dt.timedelta(seconds=settings.TOLERANCE_JOB_STALE_SECONDS)


def _stale_jobs(now: dt.datetime) -> list[tuple[int, dt.datetime, int]]:
    """(id, heartbeat, attempts) of the running jobs silent since before the stale bound."""
    return list(
        AnalysisJob.objects.filter(status=AnalysisJob.Status.RUNNING, heartbeat_at__lt=stale_bound(now))
        .order_by("pk")
        .values_list("pk", "heartbeat_at", "attempts")
    )


@transaction.atomic(durable=True)
def analysis_requeue_stale(*, now: dt.datetime | None = None) -> RequeueResult:
    """Queue again (once) every running job whose heartbeat is older than the stale bound; fail the
    ones that have already stopped ``MAX_ATTEMPTS`` times. The messages go through the outbox, so a
    broker that is down at this moment gets them from the relay later."""
    now = now or timezone.now()
    requeued, failed = [], []
    for pk, heartbeat_at, attempts in _stale_jobs(now):
        silent = f"no progress since {heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
        # The claim: the job as it was seen (running, this heartbeat). A concurrent run, a late
        # heartbeat or the job finishing in between all make this update match nothing.
        seen = AnalysisJob.objects.filter(pk=pk, status=AnalysisJob.Status.RUNNING, heartbeat_at=heartbeat_at)
        if attempts >= MAX_ATTEMPTS:
            message = (
                f"The analysis stopped {attempts} times without finishing ({silent}): its worker was lost "
                "each time (often memory or a time limit). It was not queued again; ask for it again once "
                "the cause is fixed."
            )
            if seen.update(status=AnalysisJob.Status.FAILED, error=message, finished_at=now, stage="stopped"):
                failed.append(pk)
            continue
        changed = seen.update(
            status=AnalysisJob.Status.QUEUED,
            queued_at=now,
            progress=0,
            stage=f"re-queued: {silent}"[:100],
            task_id="",
        )
        if changed:
            outbox_add(task=RUN_TASK, args=[pk], job_id=pk)
            requeued.append(pk)
    if requeued or failed:
        logger.warning("stale analyses re-queued %s, failed %s", requeued, failed)
    return RequeueResult(tuple(requeued), tuple(failed))
