"""Request bodies and pages for the REST API (see trials/rest.py for the rest of the edge).

DRF's settings import these classes while DRF's own views module is still loading, so this module
imports nothing from DRF's views, generics or viewsets.
"""

from __future__ import annotations

from rest_framework import exceptions, parsers
from rest_framework.pagination import LimitOffsetPagination

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
MAX_OFFSET = 2**31 - 1
PK_MAX = 2**63 - 1  # PostgreSQL bigint


class JSONParser(parsers.JSONParser):
    """DRF's parser, plus: a body nested deeper than Python's recursion limit is bad input."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply.") from None


class Pagination(LimitOffsetPagination):
    """``?limit=`` (1 to 500, default 100) and ``?offset=`` (0 or more); anything else is a 400."""

    default_limit = DEFAULT_PAGE_SIZE
    max_limit = MAX_PAGE_SIZE

    def _number(self, request, name: str, default: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
            raise exceptions.ValidationError({name: [f"Must be a whole number from {low} to {high:,}."]})
        return int(raw)

    def get_limit(self, request):
        return self._number(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request):
        return self._number(request, self.offset_query_param, 0, 0, MAX_OFFSET)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": self.max_limit, "default": self.default_limit},
            self.offset_query_param: {"minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        }
        for parameter in parameters:
            parameter["schema"].update(bounds[parameter["name"]])
        return parameters
