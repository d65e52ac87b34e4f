"""The one audit mechanism every app uses (docs/architecture.md §4, docs/reliability.md (b)).

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
            query = sql.SQL("SELECT pgh_id, row_to_json(t)::text FROM {} t").format(sql.Identifier(table))
            cursor.execute(query.as_string(cursor.cursor.connection))
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


# ---------------------------------------------------------------------------------------------
# Reading the audit trail: which events belong to a study or a casebook, and which fields they show
# ---------------------------------------------------------------------------------------------

# Audit rows that would reveal the randomized arm: never shown to blinded users (docs/reliability.md #23).
BLINDED_MODELS = frozenset({"trials.randomizationslot"})
# Bookkeeping that every save rewrites: the event's own time stands for them.
_TIMESTAMP_FIELDS = frozenset({"created_at", "updated_at"})
# Voiding comes last, after the record's own fields.
_VOID_FIELDS = ("voided_at", "voided_by", "void_reason")
_MAX_PATH = 5  # foreign-key hops from an audited record to its study (an expedited report needs 4)


def audit_fields(event_model) -> list:
    """The snapshot fields an audit trail shows, in model order.

    Left out: pghistory's own columns, the primary key (it is the record's id), the save timestamps
    and the optimistic-lock counter of casebook records (``version``, not editable; a field that
    users type, such as a consent document's version, is shown)."""
    tracked = event_model.pgh_tracked_model
    shown = []
    for field in event_model._meta.concrete_fields:
        if field.name.startswith("pgh_") or field.name == tracked._meta.pk.name:
            continue
        if field.name in _TIMESTAMP_FIELDS:
            continue
        if field.name == "version" and not tracked._meta.get_field("version").editable:
            continue
        shown.append(field)
    return sorted(shown, key=lambda f: f.name in _VOID_FIELDS)


def _scoping_fields(model) -> list:
    """Foreign keys that lead towards a study: not to users or content types (shared by studies)."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    fields = [
        f
        for f in model._meta.concrete_fields
        if f.is_relation
        and f.related_model is not None
        and f.related_model is not user_model
        and f.related_model._meta.label_lower != "contenttypes.contenttype"
        and f.related_model is not model
    ]
    return sorted(fields, key=lambda f: (f.null, f.name))  # required links first: they always lead there


def path_to(model, target) -> list | None:
    """The shortest chain of foreign keys from ``model`` to ``target`` ([] when they are the same
    model; None when there is none), found by breadth-first search over the models' own fields, so a
    model added to any app is scoped without anyone listing it."""
    if model is target:
        return []
    frontier: list[tuple[object, list]] = [(model, [])]
    for _ in range(_MAX_PATH):
        next_frontier = []
        for current, path in frontier:
            for field in _scoping_fields(current):
                step = [*path, field]
                if field.related_model is target:
                    return step
                next_frontier.append((field.related_model, step))
        frontier = next_frontier
    return None


def _lookup(path: list) -> str:
    return "__".join(field.name for field in path)


def scope_filter(event_model, target) -> dict | None:
    """Filter for ``event_model``'s events that belong to ``target`` (a study or a participant), or
    None if its records cannot belong to one.

    The first hop is read from the event's own snapshot column; the rest of the chain from the live
    rows (links between clinical records never change: they are created once and never deleted)."""
    tracked = event_model.pgh_tracked_model
    target_model = type(target)
    path = path_to(tracked, target_model)
    if path is None:
        # A record the study links to many-to-many (its sites).
        for m2m in target_model._meta.many_to_many:
            if m2m.related_model is tracked:
                return {"pgh_obj_id__in": getattr(target, m2m.name).values("pk")}
        return None
    if not path:
        return {"pgh_obj_id": target.pk}
    first, rest = path[0], path[1:]
    if not rest:
        return {first.attname: target.pk}
    linked = first.related_model._default_manager.filter(**{_lookup(rest): target.pk}).values("pk")
    return {f"{first.attname}__in": linked}


def scoped_event_models(target, *, unblinded: bool) -> list[tuple[object, dict]]:
    """(event model, filter) for every audited model whose records can belong to ``target``;
    the allocation list only for unblinded users."""
    from trials.dbroles import event_models

    scoped = []
    for event_model in event_models():
        if event_model.pgh_tracked_model._meta.label_lower in BLINDED_MODELS and not unblinded:
            continue
        filters = scope_filter(event_model, target)
        if filters is not None:
            scoped.append((event_model, filters))
    return scoped


def _display(value) -> str:
    if value is None:
        return ""
    return str(value)


def history_rows(events, event_model, *, label: str):
    """Turn the ordered snapshots of one model's events into field-level changes (old -> new)."""
    fields = audit_fields(event_model)
    previous: dict[int, object] = {}
    for event in events:
        before = previous.get(event.pgh_obj_id)
        metadata = event.pgh_context.metadata if event.pgh_context_id else {}
        for field in fields:
            new = getattr(event, field.attname)
            old = getattr(before, field.attname) if before is not None else None
            if before is not None and old == new:
                continue
            if before is None and event.pgh_label == "insert" and new in (None, ""):
                continue
            yield {
                "at": event.pgh_created_at,
                "model": label,
                "object_id": event.pgh_obj_id,
                "action": event.pgh_label,
                "field": field.name,
                "old": _display(old),
                "new": _display(new),
                "user": metadata.get("username") or "",
                "user_id": metadata.get("user"),
                "reason": metadata.get("reason") or "",
                "channel": metadata.get("channel") or ("web" if metadata.get("url") else ""),
            }
        previous[event.pgh_obj_id] = event


def record_history(record) -> list[dict]:
    """Every change of one record: field, old -> new, who, when (UTC), why."""
    event_model = record.pgh_event_model
    events = event_model.objects.filter(pgh_obj_id=record.pk).select_related("pgh_context").order_by("pgh_id")
    return list(history_rows(events, event_model, label=record._meta.verbose_name))
