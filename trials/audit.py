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
# Reading the audit trail: a record's history and a study's audit export
# ---------------------------------------------------------------------------------------------

# Audit rows that would reveal the randomized arm: never shown to blinded users (docs/reliability.md §0.4).
BLINDED_MODELS = frozenset({"trials.randomizationslot"})
_HIDDEN_FIELDS = frozenset({"created_at", "updated_at", "version"})


def _tracked_fields(event_model) -> list:
    return [
        f
        for f in event_model._meta.concrete_fields
        if not f.name.startswith("pgh_") and f.name not in _HIDDEN_FIELDS and f.name != "id"
    ]


def _display(value) -> str:
    if value is None:
        return ""
    return str(value)


def history_rows(events, event_model, *, label: str):
    """Turn the ordered snapshots of one model's events into field-level changes (old -> new)."""
    fields = _tracked_fields(event_model)
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


def _study_filter(event_model, study) -> dict | None:
    tracked = event_model.pgh_tracked_model
    names = {f.name for f in tracked._meta.concrete_fields}
    if tracked._meta.label_lower == "trials.study":
        return {"pgh_obj_id": study.pk}
    if "study" in names:
        return {"study_id": study.pk}
    if "participant" in names:
        return {"participant_id__in": study.participants.values("pk")}
    if "visit" in names:
        from trials.models import Visit

        return {"visit_id__in": Visit.objects.filter(participant__study=study).values("pk")}
    if tracked._meta.label_lower == "trials.site":
        return {"pgh_obj_id__in": study.sites.values("pk")}
    return None


def study_audit_rows(study, *, unblinded: bool):
    """The audit trail of a whole study, model by model, oldest first within each model."""
    from trials.dbroles import event_models

    for event_model in event_models():
        label = event_model.pgh_tracked_model._meta.label_lower
        if label in BLINDED_MODELS and not unblinded:
            continue
        filters = _study_filter(event_model, study)
        if filters is None:
            continue
        events = event_model.objects.filter(**filters).select_related("pgh_context").order_by("pgh_id")
        yield from history_rows(events.iterator(chunk_size=2000), event_model, label=label)


def participant_history_rows(participant, *, unblinded: bool) -> list[dict]:
    """The audit trail of one casebook: the participant row and every record hanging from it."""
    from trials.dbroles import event_models
    from trials.models import Visit

    rows: list[dict] = []
    visit_ids = list(Visit.objects.filter(participant=participant).values_list("pk", flat=True))
    for event_model in event_models():
        tracked = event_model.pgh_tracked_model
        label = tracked._meta.label_lower
        if label in BLINDED_MODELS and not unblinded:
            continue
        names = {f.name for f in tracked._meta.concrete_fields}
        if tracked is type(participant):
            filters = {"pgh_obj_id": participant.pk}
        elif "participant" in names:
            filters = {"participant_id": participant.pk}
        elif "visit" in names:
            filters = {"visit_id__in": visit_ids}
        else:
            continue
        events = event_model.objects.filter(**filters).select_related("pgh_context").order_by("pgh_id")
        rows.extend(history_rows(events, event_model, label=tracked._meta.verbose_name))
    rows.sort(key=lambda row: row["at"])
    return rows
