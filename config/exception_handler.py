"""One error format at the API edge (docs/style.md §4).

Services raise Django ``ValidationError`` subclasses (``RuleViolation``, ``ConflictError``,
``LockedError``); DRF raises its own. Everything leaves as JSON with field messages, never as the
HTML error page Django would otherwise render:

- 400 for bad input and refused rules;
- 409 for stale writes, locked records and an idempotency key whose first request is still running;
- 413 for a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (Django refuses to read it);
- 422 for an idempotency key reused with a different body (trials/idempotency.py);
- 401/403/404/415 as DRF answers them.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from trials.errors import ConflictError, LockedError
from trials.idempotency import KeyReused


def _messages(error: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(error, "error_dict"):
        return {("non_field_errors" if f == "__all__" else f): msgs for f, msgs in error.message_dict.items()}
    return {"non_field_errors": error.messages}


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        if isinstance(exc, KeyReused):
            code = status.HTTP_422_UNPROCESSABLE_ENTITY
        elif isinstance(exc, ConflictError | LockedError):
            code = status.HTTP_409_CONFLICT
        else:
            code = status.HTTP_400_BAD_REQUEST
        return Response(_messages(exc), status=code)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"The request body is too large: at most {limit:,} bytes are accepted."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return Response({"detail": "The request has too many fields."}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    return drf_exception_handler(exc, context)
