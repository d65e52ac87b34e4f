"""Celery entry points for trials. Thin (docs/style.md §8): no arguments, the service does the work."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="trials.audit_anchor", acks_late=True)
def audit_anchor_task() -> dict:
    """Anchor the audit chain's head outside the database (Celery beat; trials/anchors.py). Running
    twice is harmless: the second run finds the head already anchored and writes nothing."""
    from trials.anchors import anchor_periodic

    path = anchor_periodic()
    return {"anchor": path.name if path else None}
