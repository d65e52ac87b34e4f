"""Celery entry points for safety. Thin (docs/style.md §8): JSON arguments, no model instances; the
service does the work and is idempotent by its unique (report, threshold) key, so the task may be
acknowledged late and run twice, or in two workers at once, without sending anything twice."""

from __future__ import annotations

import datetime as dt

from celery import shared_task


@shared_task(name="safety.clock_monitor", acks_late=True)
def clock_monitor_task(now: str | None = None) -> dict:
    """Run the reporting-clock monitor (Celery beat, every 15 minutes). ``now`` is an optional ISO
    8601 instant with a time zone, for replays; by default the current time."""
    from safety.services import clock_monitor_run

    when = dt.datetime.fromisoformat(now) if now else None
    if when is not None and when.tzinfo is None:
        raise ValueError("now must carry a time zone, e.g. 2025-03-03T10:00:00+00:00")
    result = clock_monitor_run(now=when)
    return {"checked": result.checked, "created": list(result.created), "resent": list(result.resent)}
