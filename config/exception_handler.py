"""One error format at the API edge (docs/style.md §4).

Services raise Django ``ValidationError`` subclasses (``RuleViolation``, ``ConflictError``,
``LockedError``); DRF raises its own. Everything leaves as JSON with field messages:
400 for bad input and refused rules, 409 for stale writes and locked records, 403/404 as usual.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from trials.errors import ConflictError, LockedError


def _messages(error: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(error, "error_dict"):
        return {("non_field_errors" if f == "__all__" else f): msgs for f, msgs in error.message_dict.items()}
    return {"non_field_errors": error.messages}


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        code = status.HTTP_409_CONFLICT if isinstance(exc, ConflictError | LockedError) else status.HTTP_400_BAD_REQUEST
        return Response(_messages(exc), status=code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    return drf_exception_handler(exc, context)
