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


def _payload_hash(prev_hash: str, table: str, event_id: int, payload: str) -> str:
    import hashlib

    return hashlib.sha256(f"{prev_hash}|{table}|{event_id}|{payload}".encode()).hexdigest()


def audit_verify(*, using: str = "default") -> tuple[int, list[str]]:
    """Walk the audit hash chain; return (links checked, problems found).

    A problem is reported when an event row was altered (its hash no longer matches), removed (a
    seal points at nothing), inserted without a seal (triggers disabled), or when the chain itself
    was cut or re-ordered (a link's ``prev_hash`` is not the previous link's hash, or ``seq`` skips).
    """
    from django.db import connections
    from psycopg import sql

    from trials.dbroles import event_models
    from trials.models import AuditSeal

    problems: list[str] = []
    payloads: dict[tuple[str, int], str] = {}
    with connections[using].cursor() as cursor:
        cursor.execute("SET LOCAL timezone = 'UTC'")
        for model in event_models():
            table = model._meta.db_table
            cursor.execute(sql.SQL("SELECT pgh_id, row_to_json(t)::text FROM {} t").format(sql.Identifier(table)))
            for event_id, payload in cursor.fetchall():
                payloads[(table, event_id)] = payload
    previous_hash, expected_seq, checked = "", 1, 0
    for seal in AuditSeal.objects.using(using).order_by("seq").iterator(chunk_size=5000):
        checked += 1
        if seal.seq != expected_seq:
            problems.append(f"chain gap: expected link #{expected_seq}, found #{seal.seq}")
        if seal.prev_hash != previous_hash:
            problems.append(f"link #{seal.seq}: previous hash does not match link #{seal.seq - 1}")
        payload = payloads.pop((seal.event_table, seal.event_id), None)
        if payload is None:
            problems.append(f"link #{seal.seq}: event {seal.event_table}:{seal.event_id} is missing (deleted)")
        elif _payload_hash(seal.prev_hash, seal.event_table, seal.event_id, payload) != seal.hash:
            problems.append(f"link #{seal.seq}: event {seal.event_table}:{seal.event_id} was altered after sealing")
        previous_hash, expected_seq = seal.hash, seal.seq + 1
    for table, event_id in sorted(payloads):
        problems.append(f"event {table}:{event_id} has no seal (written while the audit triggers were bypassed)")
    return checked, problems
