"""The one audit mechanism every app uses (DESIGN.md §4, RELIABILITY.md (b)).

``audited`` puts django-pghistory triggers on a clinical model: every insert, update and delete,
by the ORM, ``QuerySet.update()``, bulk writes or raw SQL, lands in an append-only event table
with a full snapshot of the row. ``audit_context`` attaches who acted, why, and through which
channel (web, api, task, command) to the events written inside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pghistory


def audited(model_class):
    """Class decorator: track a clinical model from its first migration."""
    return pghistory.track(
        pghistory.InsertEvent(),
        pghistory.UpdateEvent(),
        pghistory.DeleteEvent(),
        append_only=True,
    )(model_class)


@contextmanager
def audit_context(*, actor, reason: str = "", channel: str = "web") -> Iterator[None]:
    """Attach the acting user, the reason for change and the channel to audit events."""
    with pghistory.context(
        user=getattr(actor, "pk", None),
        username=getattr(actor, "username", None),
        reason=reason,
        channel=channel,
    ):
        yield
