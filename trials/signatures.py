"""E-signatures bound to the clinical content they sign (docs/reliability.md #15).

A signature keeps a SHA-256 digest of the record's clinical content: its own clinical fields and,
for a casebook (a participant), every clinical record under it (consents, infusions, visits and
their assessments, adverse events, ...). The signature holds while the digest is unchanged. What is
not clinical data leaves it intact: locking and unlocking, the version counter and timestamps,
verification and query marks, and records that are not clinical (allocation, unblinding events,
derived analyses), which are not ``VersionedModel`` rows or opt out with ``casebook_content = False``.

Signatures made before the digest was kept compare the record's version, as they always did.
"""

from __future__ import annotations

import hashlib
import json

from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from trials.errors import RuleViolation
from trials.guards import check_password, participant_of, require_role
from trials.models import Role, Signature, VersionedModel

# Bookkeeping and administrative marks: a change to these is not a change of clinical data.
NON_CLINICAL_FIELDS = frozenset({"id", "version", "created_at", "updated_at", "is_locked"})
NON_CLINICAL_PREFIXES = ("lock", "sdv", "verified", "verification", "query", "queries", "review")
# How far below the signed record the content reaches: participant -> visit -> assessment.
_DEPTH = 2


def _is_clinical_field(field) -> bool:
    name = field.name
    return name not in NON_CLINICAL_FIELDS and not name.startswith(NON_CLINICAL_PREFIXES)


def _is_content_model(model) -> bool:
    return issubclass(model, VersionedModel) and getattr(model, "casebook_content", True)


def _row(instance) -> dict:
    values = {}
    for field in instance._meta.concrete_fields:
        if _is_clinical_field(field):
            value = getattr(instance, field.attname)
            values[field.attname] = None if value is None else str(value)
    return values


def _children(model, pks: list) -> list:
    """Every clinical row pointing at the ``pks`` rows of ``model``, one query per relation."""
    rows = []
    for relation in model._meta.related_objects:
        related = relation.related_model
        if not (relation.one_to_many or relation.one_to_one) or not _is_content_model(related):
            continue
        if related._meta.proxy:
            continue
        rows.extend(related._base_manager.filter(**{f"{relation.field.name}__in": pks}).order_by("pk"))
    return rows


def _content_rows(record) -> list:
    """``record`` and the clinical rows under it, each once, level by level (one query per relation)."""
    seen: set[tuple[str, object]] = set()
    rows, level = [], [record]
    for depth in range(_DEPTH + 1):
        by_model: dict[type, list] = {}
        for instance in level:
            key = (instance._meta.label, instance.pk)
            if key not in seen:
                seen.add(key)
                rows.append(instance)
                by_model.setdefault(type(instance), []).append(instance.pk)
        if depth == _DEPTH:
            break
        level = [child for model, pks in by_model.items() for child in _children(model, pks)]
    return rows


def content_digest(record) -> str:
    """SHA-256 of the clinical content of ``record`` (and the clinical records under it)."""
    record = type(record)._base_manager.get(pk=record.pk)  # the saved state, not the caller's copy
    content = sorted([i._meta.label, str(i.pk), _row(i)] for i in _content_rows(record))
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def record_sign(*, actor, record, password: str, meaning: str, http_request=None, channel: str = "web"):
    """An investigator signs a record by re-entering their password and choosing what the signature
    means. The signature holds the digest of the clinical content: a later change invalidates it."""
    participant = participant_of(record)
    require_role(
        actor, study=participant.study, roles={Role.INVESTIGATOR}, site=participant.site, action="sign records"
    )
    if meaning not in Signature.Meaning.values:
        raise RuleViolation({"meaning": "Choose what your signature means."})
    # The failed attempt must stay recorded, so the password check runs before the atomic block.
    check_password(actor, password, http_request)
    with transaction.atomic(durable=True):
        current = type(record).objects.select_for_update().get(pk=record.pk)
        name = actor.get_full_name() or actor.get_username()
        return Signature.objects.create(
            content_type=ContentType.objects.get_for_model(current),
            object_id=current.pk,
            record_version=current.version,
            content_digest=content_digest(current),
            meaning=meaning,
            signer=actor,
            signer_name=name,
        )


def _changed_since(record, moment):
    """When the signed content last changed after ``moment`` (the latest clinical ``updated_at``)."""
    times = [getattr(row, "updated_at", None) for row in _content_rows(record)]
    later = [t for t in times if t is not None and t > moment]
    return max(later) if later else getattr(record, "updated_at", None)


def signature_state(record) -> dict | None:
    """The latest signature of a record and whether it still holds (None: never signed)."""
    signature = (
        Signature.objects.filter(content_type=ContentType.objects.get_for_model(record), object_id=record.pk)
        .order_by("-signed_at")
        .first()
    )
    if signature is None:
        return None
    if signature.content_digest:
        valid = signature.content_digest == content_digest(record)
    else:
        valid = signature.record_version == record.version
    return {
        "signature": signature,
        "valid": valid,
        "invalidated_on": None if valid else _changed_since(record, signature.signed_at),
    }
