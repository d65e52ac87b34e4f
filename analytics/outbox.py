"""A transactional outbox for the analytics tasks (docs/reliability.md #34-35), as the safety clock
monitor keeps its notifications: the message is a database row, written in the same transaction as
the job or data cut it starts work on, and published only after that transaction commits.

* ``outbox_add`` — inside the caller's transaction: one row per message, and an after-commit attempt
  to publish it (``outbox_send``), so a healthy broker gets the message at once.
* ``outbox_send`` — publish the given unsent rows. Each attempt first claims its row by
  compare-and-set on ``last_attempt_at`` (two senders never publish the same row at once), then
  publishes with the short broker timeouts of the settings, then marks the row sent. A broker that
  does not answer costs about a second: the row keeps its error, the request still gets its answer
  ("queued; the task queue is unreachable"), and no later row of the same call is tried.
* ``outbox_relay`` — Celery beat, every few seconds: publish every unsent row whose last attempt is
  old enough. A message published twice (a crash between publishing and marking) is harmless: the
  analysis claims its job by compare-and-set and the derivations are stored once per cut.

No broker call happens inside a database transaction, so a slow broker never holds a row lock, and
eager Celery (the zero-setup demo) can run the task in place.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import KombuError

from analytics.models import TaskOutbox

logger = logging.getLogger(__name__)

# A claimed attempt that has neither succeeded nor failed after this long was interrupted (its process
# died): the relay may try the row again. Far longer than one publish with the broker timeouts.
ATTEMPT_LEASE = dt.timedelta(seconds=10)
# What the broker client raises when Redis is down or unreachable (kombu wraps the transport's
# connection errors; a bare socket error can still escape during connection set-up).
BROKER_ERRORS: tuple[type[BaseException], ...] = (KombuError, OSError, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class SendResult:
    sent: tuple[int, ...]
    failed: tuple[int, ...]
    error: str = ""

    @property
    def broker_unreachable(self) -> bool:
        return bool(self.failed)


def outbox_add(*, task: str, args: list, job_id: int | None = None, data_cut_id: int | None = None) -> TaskOutbox:
    """Record a message in the current transaction and try to publish it once that commits. Must be
    called inside ``transaction.atomic``: the row and the change it follows commit together or not at
    all (a rolled-back request publishes nothing)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("outbox_add must run inside the transaction that makes the change")
    row = TaskOutbox.objects.create(
        task=task, args=list(args), job_id=job_id, data_cut_id=data_cut_id, created_at=timezone.now()
    )
    row_id = row.pk
    # robust: a broker library failing in an unexpected way is logged, never turned into an error
    # page for a change that is already committed (the relay publishes the row later).
    transaction.on_commit(lambda: outbox_send(ids=[row_id]), robust=True)
    return row


def _claim(row: TaskOutbox, now: dt.datetime) -> bool:
    """Compare-and-set on the last attempt: exactly one sender gets this attempt."""
    unchanged = (
        Q(last_attempt_at__isnull=True) if row.last_attempt_at is None else Q(last_attempt_at=row.last_attempt_at)
    )
    return (
        TaskOutbox.objects.filter(unchanged, pk=row.pk, sent_at=None).update(
            last_attempt_at=now, attempts=F("attempts") + 1
        )
        == 1
    )


def _publish(row: TaskOutbox) -> str:
    """Publish the row's message; returns its Celery id. Results live in the database, never in the
    result backend (asking a dead Redis backend to watch the result is what used to take 19 s). A
    connection of its own: a pooled one may be dead since the broker restarted."""
    from analytics import tasks  # noqa: F401 - registers the tasks the rows name (web processes too)
    from config.celery_app import app  # the project's app: Celery's "current" app is per thread

    task = app.tasks[row.task]
    if app.conf.task_always_eager:  # the zero-setup demo: no broker, the task runs here
        return task.apply_async(args=list(row.args), ignore_result=True).id
    with app.connection_for_write() as connection:
        return task.apply_async(args=list(row.args), ignore_result=True, connection=connection).id


def outbox_send(*, ids: Iterable[int]) -> SendResult:
    """Publish the given rows that are still unsent (deliberately not atomic: each claim and each
    "sent" mark commits on its own, around the publish). Stops at the first broker failure."""
    sent: list[int] = []
    failed: list[int] = []
    error = ""
    rows = list(TaskOutbox.objects.filter(pk__in=list(ids), sent_at=None).order_by("created_at", "pk"))
    for row in rows:
        if failed:  # the broker is down: leave the rest to the relay rather than wait on each
            failed.append(row.pk)
            continue
        if not _claim(row, timezone.now()):
            continue  # another sender has this attempt
        try:
            message_id = _publish(row)
        except BROKER_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
            logger.warning("outbox %s (%s): broker unreachable, left for the relay: %s", row.pk, row.task, error)
            TaskOutbox.objects.filter(pk=row.pk, sent_at=None).update(error=error)
            failed.append(row.pk)
            continue
        TaskOutbox.objects.filter(pk=row.pk).update(sent_at=timezone.now(), message_id=message_id or "", error="")
        sent.append(row.pk)
    return SendResult(tuple(sent), tuple(failed), error)


def outbox_relay(*, now: dt.datetime | None = None, limit: int = 500) -> SendResult:
    """Publish the unsent rows (Celery beat). A row whose attempt is under way elsewhere (claimed less
    than ``ATTEMPT_LEASE`` ago) is left to that attempt."""
    now = now or timezone.now()
    due = (
        TaskOutbox.objects.filter(sent_at=None)
        .filter(Q(last_attempt_at__isnull=True) | Q(last_attempt_at__lt=now - ATTEMPT_LEASE))
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    return outbox_send(ids=list(due))


def outbox_pending() -> int:
    """Unsent messages (for health pages and the benchmark)."""
    return TaskOutbox.objects.filter(sent_at=None).count()
