"""Idempotency keys: a repeated create returns the first result (docs/reliability.md #38).

A client that retries a POST after a timeout, or a coordinator who double-clicks "Record AE", must
not make a second record (a second AE would open a second SAE case and a second 24-hour report).
So a create may carry a key: the ``Idempotency-Key`` header in the API (``trials.rest.idempotent``),
a hidden token in the page's form (``IdempotencyTokenMixin`` + ``submit_once``). The first request
with a key does the work and records what it made (``IdempotencyRecord``, unique per user, endpoint
and key); a repeat with the same body gets that result back; a repeat with a different body is
refused (``KeyReused``), because the key is being reused for another request.

Concurrency. Services own their transactions (``transaction.atomic(durable=True)``), so the key's row
cannot be written in the service's transaction. Instead (``once``):

1. a PostgreSQL session advisory lock on (user, endpoint, key) serialises requests with the same key:
   a concurrent repeat waits (at most ``WAIT_SECONDS``) until the first has finished, then reads its
   result;
2. the first request claims the key (a row without ``completed_at``) before it calls the service and
   completes the row afterwards; if the service refuses, the claim is removed, so the key can be sent
   again with corrected input;
3. if the process dies between the service's commit and the completion, the claim stays incomplete
   and a repeat is refused with 409 (``KeyBusy``): at most once, never twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django import forms
from django.apps import apps
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from trials import web
from trials.errors import ConflictError, RuleViolation
from trials.models import IdempotencyRecord

KEY_MAX = 255
_KEY = re.compile(rf"[!-~]{{1,{KEY_MAX}}}")  # visible ASCII: what an HTTP header carries safely
# First half of the two-int advisory lock key; PostgreSQL keeps two-int keys apart from the
# single-bigint keys the audit seal uses (trials/dbroles.py).
LOCK_CLASS = 38
WAIT_SECONDS = 30
TOKEN_FIELD = "idempotency_token"  # noqa: S105 - the name of a form field


class KeyReused(RuleViolation):
    """The key was first used for a request with a different body; nothing was done."""


class KeyBusy(ConflictError):
    """A request with this key is still running (or died half-way); nothing was done."""


def fingerprint(data) -> str:
    """SHA-256 of a request body, independent of key order and whitespace."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class Claim:
    """The state of a key inside ``once``: ``replay`` is the first request's completed record when
    this request is a repeat; otherwise call ``complete`` once the work has succeeded."""

    record: IdempotencyRecord | None
    replay: IdempotencyRecord | None = None
    completed: bool = field(default=False)

    def complete(self, *, status_code: int | None = None, instance=None, body=None) -> None:
        if self.record is None or self.replay is not None:
            return
        record = self.record
        record.completed_at = timezone.now()
        record.status_code = status_code
        if hasattr(instance, "_meta"):
            record.result_type = instance._meta.label_lower
            record.result_id = instance.pk
        record.response_body = body
        record.save(update_fields=["completed_at", "status_code", "result_type", "result_id", "response_body"])
        self.completed = True

    def replayed_instance(self):
        """The record the first request made (None if it made none)."""
        if self.replay is None or not self.replay.result_type:
            return None
        model = apps.get_model(self.replay.result_type)
        return model._default_manager.filter(pk=self.replay.result_id).first()


def _lock_key(user_id: int, endpoint: str, key: str) -> int:
    digest = hashlib.sha256(f"{user_id}\x1f{endpoint}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


@contextmanager
def _advisory_lock(lock_key: int) -> Iterator[None]:
    """Hold a session-level advisory lock; wait for it at most ``WAIT_SECONDS``."""
    deadline = time.monotonic() + WAIT_SECONDS
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, lock_key])
            if cursor.fetchone()[0]:
                break
            if time.monotonic() > deadline:
                raise KeyBusy("A request with this idempotency key is still being processed. Try again shortly.")
            time.sleep(0.05)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, lock_key])


def _refusal(message: str, field_name: str | None) -> dict | str:
    return {field_name: message} if field_name else message


@contextmanager
def once(*, user, key: str | None, endpoint: str, fingerprint: str, field: str | None = None) -> Iterator[Claim]:
    """Run the enclosed work at most once per (``user``, ``endpoint``, ``key``).

    Yields a ``Claim``. With no key it does nothing. A repeat yields ``claim.replay`` (the first
    request's record) and the caller answers from it instead of working. A different body under the
    same key raises ``KeyReused``; a key whose first request has not finished raises ``KeyBusy``.
    ``field`` names the input that carried the key in error messages (the header, in the API).
    """
    if key is None:
        yield Claim(record=None)
        return
    if not _KEY.fullmatch(key):
        raise RuleViolation(
            _refusal(f"An idempotency key is 1 to {KEY_MAX} visible ASCII characters (a UUID will do).", field)
        )
    with _advisory_lock(_lock_key(user.pk, endpoint, key)):
        existing = IdempotencyRecord.objects.filter(user=user, endpoint=endpoint, key=key).first()
        if existing is not None:
            if existing.fingerprint != fingerprint:
                raise KeyReused(
                    _refusal(
                        "This idempotency key was already used for a different request. "
                        "Use a new key for a new request.",
                        field,
                    )
                )
            if existing.completed_at is None:
                raise KeyBusy(
                    "The first request with this idempotency key did not finish; check whether it took effect, "
                    "then use a new key."
                )
            yield Claim(record=existing, replay=existing)
            return
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    user=user, endpoint=endpoint, key=key, fingerprint=fingerprint
                )
        except IntegrityError:  # another process claimed it between our read and insert
            raise KeyBusy("A request with this idempotency key is still being processed. Try again shortly.") from None
        claim = Claim(record=record)
        try:
            yield claim
        finally:
            if not claim.completed:
                IdempotencyRecord.objects.filter(pk=record.pk).delete()


# ---------------------------------------------------------------------------------------------
# Pages: a hidden token per form, and the one-line replacement of ``web.submit`` for creates
# ---------------------------------------------------------------------------------------------


class IdempotencyTokenMixin(forms.Form):
    """Adds a hidden, freshly generated token to a create form. After validation the token is in
    ``form.idempotency_key`` (not in ``cleaned_data``, which goes to the service)."""

    idempotency_token = forms.CharField(widget=forms.HiddenInput, required=False, max_length=KEY_MAX, initial=new_token)

    def full_clean(self):
        super().full_clean()
        cleaned = getattr(self, "cleaned_data", None)
        token = cleaned.pop(TOKEN_FIELD, "") if cleaned is not None else ""
        self.idempotency_key = token or None


def _page_endpoint(request: HttpRequest) -> str:
    match = request.resolver_match
    arguments = ",".join(f"{name}={value}" for name, value in sorted(match.kwargs.items()))
    return f"web:{match.view_name}:{arguments}"[:200]


def _form_fingerprint(request: HttpRequest) -> str:
    ignored = {"csrfmiddlewaretoken", TOKEN_FIELD}
    return fingerprint({name: request.POST.getlist(name) for name in sorted(request.POST) if name not in ignored})


def submit_once(request: HttpRequest, form, service, /, **kwargs):
    """``web.submit`` for a create form with ``IdempotencyTokenMixin``: the second submission of the
    same form (a double-click, a resend) returns the record the first one made, and the view answers
    as it did the first time. Returns None if the service, or the key, refused."""
    try:
        with once(
            user=request.user,
            key=getattr(form, "idempotency_key", None),
            endpoint=_page_endpoint(request),
            fingerprint=_form_fingerprint(request),
        ) as claim:
            if claim.replay is not None:
                instance = claim.replayed_instance()
                if instance is not None:
                    messages.info(request, "This form had already been submitted; it was saved once.")
                return instance
            result = web.submit(request, form, service, **kwargs)
            if result is not None:
                claim.complete(instance=result)
            return result
    except ConflictError as exc:
        messages.error(request, " ".join(exc.messages))
        form.conflict = True
    except ValidationError as exc:
        form.add_error(None, exc.messages)
    return None
