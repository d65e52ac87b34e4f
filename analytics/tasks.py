"""Celery entry points of the analytics app: thin (docs/style.md §8-§10).

``materialise_remission_assessments_task`` stores a new cut's per-assessment derivations (the
timeline); it is idempotent the same way (an advisory lock and an "already stored" check).

``run_analysis_task`` takes a job id only and calls ``analytics.services.analysis_run``. It is safe to
acknowledge late and to redeliver because the service claims the job by compare-and-set and the result
row is unique per job (docs/style.md §9): a message redelivered after its worker died (``acks_late``, and
``reject_on_worker_lost`` for a pool child killed mid-task) takes the job back under the same task id
and finishes it; any other duplicate finds the job running or done and stops. Transient database and
network errors are retried with backoff, at most three times; after that the failure is recorded.

Both are published from the outbox (analytics/outbox.py) and keep no Celery result: the job row and
the stored result are the outcome, and a result backend that is down must not hold up publishing.

Two beat tasks keep jobs moving: ``outbox_relay_task`` publishes the messages the broker could not take
when they were written, and ``requeue_stale_jobs_task`` queues again the analyses whose worker died
(analytics/job_recovery.py). Both are idempotent by compare-and-set, so overlapping runs are harmless.
"""

from __future__ import annotations

from celery import Task, shared_task

from analytics.services import TRANSIENT_ERRORS


class AnalysisTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Retries exhausted (or an error escaped the service): record it on the job."""
        from analytics.services import analysis_fail

        job_id = args[0] if args else kwargs.get("job_id")
        if job_id is not None:
            analysis_fail(job_id=job_id, message=f"{type(exc).__name__}: {exc}")


@shared_task(
    bind=True,
    base=AnalysisTask,
    name="analytics.run_analysis",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=3,
)
def run_analysis_task(self, job_id: int) -> str:
    from analytics.services import analysis_run

    return analysis_run(job_id=job_id, task_id=self.request.id or f"local-{job_id}")


@shared_task(
    name="analytics.materialise_remission_assessments",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    max_retries=3,
)
def materialise_remission_assessments_task(cut_id: int) -> int:
    """Store a new cut's remission status per assessment (idempotent: stored once per cut)."""
    from analytics.services import remission_assessments_materialise

    return remission_assessments_materialise(cut_id=cut_id)


@shared_task(name="analytics.outbox_relay", acks_late=True, ignore_result=True)
def outbox_relay_task() -> dict:
    """Publish the analytics messages left unsent while the broker was unreachable (Celery beat)."""
    from analytics.outbox import outbox_relay

    result = outbox_relay()
    return {"sent": list(result.sent), "failed": list(result.failed)}


@shared_task(name="analytics.requeue_stale_jobs", acks_late=True, ignore_result=True)
def requeue_stale_jobs_task() -> dict:
    """Queue again the running analyses whose heartbeat stopped (Celery beat)."""
    from analytics.job_recovery import analysis_requeue_stale

    result = analysis_requeue_stale()
    return {"requeued": list(result.requeued), "failed": list(result.failed)}
