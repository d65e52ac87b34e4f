"""The one way a page calls a service and shows its refusal; shared by every app's views.

- ``submit`` calls the service as the requesting user and returns its result, or None when it
  refused: a ``ValidationError`` lands on the form's fields (or above the form for fields the form
  does not have), a ``ConflictError`` becomes a message and marks the form for HTTP 409;
- ``render_form`` renders a form page with 409 when the form lost a version race.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from trials.errors import ConflictError


def attach_service_error(form, exc: ValidationError) -> None:
    """Put the service's messages on the form: on the named field, or above the form when the
    service names a field this form does not have (``add_error`` would raise on those)."""
    if hasattr(exc, "error_dict"):
        errors: dict[str, list] = {}
        for field, field_errors in exc.error_dict.items():
            key = field if field == NON_FIELD_ERRORS or field in form.fields else NON_FIELD_ERRORS
            errors.setdefault(key, []).extend(field_errors)
        exc = ValidationError(errors)
    form.add_error(None, exc)


def submit(request: HttpRequest, form, service, /, **kwargs):
    """Call ``service`` as the requesting user; return its result, or None if it refused."""
    try:
        return service(actor=request.user, channel="web", **kwargs)
    except ConflictError as exc:
        messages.error(request, " ".join(exc.messages))
        form.conflict = True
    except ValidationError as exc:
        attach_service_error(form, exc)
    return None


def render_form(request: HttpRequest, template: str, context: dict) -> HttpResponse:
    status = 409 if getattr(context.get("form"), "conflict", False) else 200
    return render(request, template, context, status=status)
