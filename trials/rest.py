"""What every REST endpoint shares: strict input at the edge and one documented error format.

The API answers bad input with a 4xx and a JSON body, never a 500 and never an HTML page
(docs/reliability.md #32):

- ``ApiViewSet`` refuses query parameters an operation does not document (400, naming them), reads
  object ids with ``parse_pk`` (a non-numeric or out-of-range id is a 404, not a crash), and filters
  lists through a django-filter ``FilterSet`` whose typed fields refuse ``?cohort=abc`` or a NUL byte;
- ``Pagination`` (trials/rest_input.py) caps the page size and refuses a limit or offset that is not
  a number in range;
- ``JSONParser`` (trials/rest_input.py) is the only parser: another media type is a 415, a body
  nested too deep a 400;
- ``AutoSchema`` documents the error answers (400, 401, 403, 404, 409, 413, 415, 422) with the
  ``Error`` body on every operation they can occur on, and the ``Idempotency-Key`` header on writes;
- ``idempotent`` makes a POST return its first result when it is repeated with the same key
  (trials/idempotency.py, docs/reliability.md #38).
"""

from __future__ import annotations

import functools
import re

from django import forms
from django_filters import filters
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_serializer
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.response import Response

from trials import idempotency
from trials.rest_input import PK_MAX

IDEMPOTENCY_HEADER = "Idempotency-Key"
_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_pk(value) -> int:
    """An object id from the URL; anything but a number in the id range is "not found" (404)."""
    text = str(value)
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= PK_MAX:
        raise exceptions.NotFound()
    return int(text)


# ---------------------------------------------------------------------------------------------
# Input: body, pagination, filters, query parameters
# ---------------------------------------------------------------------------------------------


class IntegerFilter(filters.NumberFilter):
    """A whole-number filter (django-filter's ``NumberFilter`` takes decimals such as ``1.5``)."""

    field_class = forms.IntegerField


def text_filter(field_name: str, *, max_length: int = 40, lookup_expr: str = "exact", help_text: str = ""):
    """A bounded text filter; like every Django form text field it refuses NUL bytes."""
    return filters.CharFilter(
        field_name=field_name, lookup_expr=lookup_expr, max_length=max_length, help_text=help_text
    )


class ApiViewSet(viewsets.GenericViewSet):
    """Base of every viewset: refuses undocumented query parameters; filters lists with a FilterSet.

    ``list_actions`` names the actions that answer a page of results (they take ``limit`` and
    ``offset``); only ``list`` takes the ``filterset_class`` filters.
    """

    filter_backends = [DjangoFilterBackend]
    list_actions = frozenset({"list"})
    # Any path segment reaches the viewset, so a malformed id (``0.5``, ``abc``) is this API's JSON
    # 404 from ``parse_pk`` rather than the site's HTML page.
    lookup_value_regex = "[^/]+"

    def allowed_query_params(self) -> set[str]:
        allowed: set[str] = set()
        if self.action in self.list_actions and self.pagination_class is not None:
            paginator = self.paginator
            allowed |= {paginator.limit_query_param, paginator.offset_query_param}
        if self.action == "list" and getattr(self, "filterset_class", None) is not None:
            allowed |= set(self.filterset_class.base_filters)
        return allowed

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication first: an anonymous call is a 401
        unknown = sorted(set(request.query_params) - self.allowed_query_params())
        if unknown:
            accepted = ", ".join(sorted(self.allowed_query_params())) or "none"
            raise exceptions.ValidationError(
                {name[:100]: [f"Unknown query parameter. This operation accepts: {accepted}."] for name in unknown}
            )

    def paginated(self, queryset, output: type[serializers.Serializer], **context) -> Response:
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(output(page, many=True, context=context).data)


def respond(instance, output: type[serializers.Serializer] | None = None, *, status_code: int = 200, **context):
    """The answer of a write: ``output`` of ``instance`` (or no body); remembers ``instance`` so that
    an idempotency record can point at what the request made."""
    body = output(instance, context=context).data if output is not None else None
    response = Response(body, status=status_code)
    response.instance = instance
    return response


# ---------------------------------------------------------------------------------------------
# Idempotency-Key on writes
# ---------------------------------------------------------------------------------------------


def idempotent(action):
    """Make a POST action honour the ``Idempotency-Key`` header (trials/idempotency.py).

    Without the header the action runs as usual. With it, the first request runs and its answer is
    stored; a repeat with the same key and body gets the stored answer (header
    ``Idempotent-Replayed: true``), one with a different body a 422, and one that arrives while the
    first is still running waits for it.
    """

    @functools.wraps(action)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return action(view, request, *args, **kwargs)
        endpoint = f"api:{view.basename}-{view.action}"
        if "pk" in kwargs:
            endpoint += f":{parse_pk(kwargs['pk'])}"
        with idempotency.once(
            user=request.user,
            key=key,
            endpoint=endpoint,
            fingerprint=idempotency.fingerprint(request.data),
            field=IDEMPOTENCY_HEADER,
        ) as claim:
            if claim.replay is not None:
                response = Response(claim.replay.response_body, status=claim.replay.status_code)
                response["Idempotent-Replayed"] = "true"
                return response
            response = action(view, request, *args, **kwargs)
            if status.is_success(response.status_code):
                claim.complete(
                    status_code=response.status_code,
                    body=response.data,
                    instance=getattr(response, "instance", None),
                )
            return response

    wrapper.idempotent = True
    return wrapper


# ---------------------------------------------------------------------------------------------
# Schema: the error answers of every operation
# ---------------------------------------------------------------------------------------------


@extend_schema_serializer(component_name="Error")
class ErrorOutput(serializers.Serializer):
    """Every error answer is a JSON object: ``detail`` for an error about the whole request, or one
    list of messages per input field (``non_field_errors`` for rules that involve several fields;
    a nested object for the entries of a mapping such as ``answers``)."""

    detail = serializers.CharField(required=False, help_text="What went wrong, for the request as a whole.")
    non_field_errors = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Refusals that concern several fields."
    )


ERRORS = {
    400: "Bad input: a message per field (body or query parameter), or a refused rule; nothing was saved.",
    401: "No valid credentials: send `Authorization: Token <key>` (see POST /api/v1/auth/token/).",
    403: "Your role may not do this here (for example a write by a read-only role).",
    404: "No such object in your scope (the answer is the same whether it exists elsewhere or not at all).",
    409: "Conflict, nothing was saved: the record changed since you loaded it (send the current `version`), "
    "it is locked, or a request with the same Idempotency-Key is still running.",
    413: "The request body is larger than the server accepts.",
    415: "The body must be JSON (`Content-Type: application/json`).",
    422: "This Idempotency-Key was first used with a different body; use a new key for a new request.",
    429: "Too many failed sign-ins: the account is locked for a while.",
}


def error_response(code: int) -> OpenApiResponse:
    return OpenApiResponse(ErrorOutput, description=ERRORS[code])


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, plus the error answers and the Idempotency-Key header."""

    def _action_function(self):
        action = getattr(self.view, "action", None)
        return getattr(self.view, action, None) if action else None

    def _is_idempotent(self) -> bool:
        return self.method == "POST" and getattr(self._action_function(), "idempotent", False)

    def _resolve_path_parameters(self, variables):
        parameters = super()._resolve_path_parameters(variables)
        for parameter in parameters:
            if parameter["name"] == "id" and parameter["schema"].get("type") == "integer":
                parameter["schema"].update({"minimum": 1, "maximum": PK_MAX})
        return parameters

    def get_filter_backends(self):
        # Only ``list`` takes the filters; other list-like actions (a participant's visits) do not.
        if getattr(self.view, "action", "list") != "list":
            return []
        return super().get_filter_backends()

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        if self._is_idempotent():
            parameters.append(
                OpenApiParameter(
                    IDEMPOTENCY_HEADER,
                    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]{1,255}$"},
                    OpenApiParameter.HEADER,
                    description="Optional. Any unique string (a UUID): a repeat of this request with the same "
                    "key returns the first answer instead of doing it again.",
                )
            )
        return parameters

    def error_codes(self) -> list[int]:
        if getattr(self.view, "public_endpoint", False):
            return list(getattr(self.view, "error_codes", []))
        codes = [400, 401, 403]
        if "{" in self.path:
            codes.append(404)
        if self.method in ("POST", "PUT", "PATCH"):
            codes += [409, 413, 415]
        if self._is_idempotent():
            codes.append(422)
        return codes

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self.error_codes():
            responses.setdefault(str(code), self._get_response_for_code(error_response(code), str(code)))
        return responses
