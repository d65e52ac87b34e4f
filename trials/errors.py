"""Domain errors. Services raise these; forms show them on the named field, the API edge turns them
into HTTP 400/409 with field messages (docs/style.md §4). They subclass Django's ``ValidationError`` so a
``{field: message}`` dict reaches the right form field without translation code."""

from django.core.exceptions import ValidationError


class RuleViolation(ValidationError):
    """A business rule refused the write; nothing was saved."""


class ConflictError(RuleViolation):
    """The record changed since the form was loaded (stale version); nothing was saved."""


class LockedError(RuleViolation):
    """The casebook or the study is locked; nothing was saved."""
