"""Text and number input cleaning shared by every app's forms, serializers and services.

Two kinds of text reach the database:

- **free text** (reasons, notes, narratives): normalised to Unicode NFC, line breaks and tabs kept;
  control characters (NUL included: PostgreSQL cannot store it), lone surrogates and the
  bidirectional embedding/override/isolate characters (U+202A-U+202E, U+2066-U+2069, which make a
  text display differently from what is stored) are refused;
- **identifiers and coded values** (lot numbers, codes, agent names, units): the same, and also no
  line break, tab or other invisible formatting character (zero-width joiners, BOM, soft hyphen).

Both are bounded: every text field has a maximum length (the constants below). Services call
``clean_text`` / ``clean_identifier`` themselves so the API and the pages get the same answer; the
form and serializer fields here only let the page or the API refuse earlier, with the same message.

Decimals typed by people (weights, lab values) are **plain decimals**: ``72.5``, never ``1e2``
(``parse_plain_decimal``), so a slip of the keyboard is not read as a hundred.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

from django import forms
from django.core.exceptions import ValidationError
from rest_framework import serializers

# Length bounds, in characters after NFC normalisation.
CODE_MAX = 40  # lot numbers, short codes
NAME_MAX = 200  # agents, readers, short labels
REASON_MAX = 2000  # reasons for change, interruption reasons, notes
NARRATIVE_MAX = 10_000  # long clinical narratives

_BIDI_CONTROLS = frozenset(chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_FREE_TEXT_ALLOWED_CONTROLS = frozenset("\t\n\r")
_PLAIN_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    if not name:
        names = {"\x00": "NUL", "\t": "TAB", "\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\x7f": "DELETE"}
        name = names.get(char, "control character")
    return f"U+{ord(char):04X} {name}"


def text_problem(value: str, *, single_line: bool) -> str | None:
    """Why ``value`` (already NFC) may not be stored, or None. Names the first offending character."""
    for char in value:
        category = unicodedata.category(char)
        if char in _BIDI_CONTROLS:
            return f"contains a bidirectional override character ({_describe(char)}); remove it."
        if category == "Cs":
            return "contains an invalid character (a lone surrogate); remove it."
        if category == "Cc" and (single_line or char not in _FREE_TEXT_ALLOWED_CONTROLS):
            what = "a line break or tab" if char in _FREE_TEXT_ALLOWED_CONTROLS else "a control character"
            return f"contains {what} ({_describe(char)}), which is not allowed here; remove it."
        if single_line and category in ("Cf", "Zl", "Zp"):
            return f"contains an invisible formatting character ({_describe(char)}); remove it."
    return None


def _clean(value, *, max_length: int, label: str, single_line: bool) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{label} must be text.")
    value = unicodedata.normalize("NFC", value).strip()
    problem = text_problem(value, single_line=single_line)
    if problem:
        raise ValidationError(f"{label} {problem}")
    if len(value) > max_length:
        raise ValidationError(f"{label} is too long: {len(value):,} characters, at most {max_length:,} are allowed.")
    return value


def clean_text(value, *, max_length: int = REASON_MAX, label: str = "This text") -> str:
    """Free text, NFC-normalised and stripped; raises ``ValidationError`` (no field key) if refused."""
    return _clean(value, max_length=max_length, label=label, single_line=False)


def clean_identifier(value, *, max_length: int = CODE_MAX, label: str = "This value") -> str:
    """An identifier or coded value on one line, NFC-normalised and stripped; raises if refused."""
    return _clean(value, max_length=max_length, label=label, single_line=True)


def parse_plain_decimal(value, *, label: str = "This number") -> Decimal | None:
    """A decimal written as digits with an optional point (``72.5``); ``1e2``, ``NaN`` and
    ``Infinity`` are refused. Ints and Decimals pass; floats only when they print plainly."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValidationError(f"{label} must be a number.")
    if isinstance(value, int | Decimal):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValidationError(f"{label} must be a number.")
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise ValidationError(f"{label} must be written as a plain decimal number such as 72.5 (not {text[:20]!r}).")
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern only lets digits through
        raise ValidationError(f"{label} must be a number.") from None


# ---------------------------------------------------------------------------------------------
# Form fields (pages)
# ---------------------------------------------------------------------------------------------


class FreeTextField(forms.CharField):
    """A bounded, NFC-normalised free-text form field (a textarea by default)."""

    single_line = False

    def __init__(self, *, max_length: int = REASON_MAX, rows: int = 2, **kwargs):
        kwargs.setdefault("required", False)
        if not self.single_line:
            kwargs.setdefault("widget", forms.Textarea(attrs={"rows": rows}))
        super().__init__(max_length=max_length, **kwargs)

    def to_python(self, value):
        value = super().to_python(value)
        if value in self.empty_values:
            return value
        return _clean(value, max_length=10**9, label=self.label or "This text", single_line=self.single_line)


class IdentifierField(FreeTextField):
    """A bounded, NFC-normalised one-line identifier or code."""

    single_line = True

    def __init__(self, *, max_length: int = CODE_MAX, **kwargs):
        super().__init__(max_length=max_length, **kwargs)


class PlainDecimalField(forms.DecimalField):
    """A decimal form field that refuses exponent notation (``1e2``), NaN and infinities."""

    def to_python(self, value):
        number = super().to_python(value)  # "Enter a number." for what is no number at all
        if number is not None and isinstance(value, str):
            parse_plain_decimal(value, label=self.label or "This number")
        return number


# ---------------------------------------------------------------------------------------------
# Serializer fields (API)
# ---------------------------------------------------------------------------------------------


class FreeTextSerializerField(serializers.CharField):
    """API counterpart of ``FreeTextField``: bounded, NFC-normalised, controls refused."""

    single_line = False

    def __init__(self, *, max_length: int = REASON_MAX, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", True)
        super().__init__(max_length=max_length, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        value = super().to_internal_value(data)
        try:
            return _clean(value, max_length=10**9, label="This text", single_line=self.single_line)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None


class IdentifierSerializerField(FreeTextSerializerField):
    single_line = True

    def __init__(self, *, max_length: int = CODE_MAX, **kwargs):
        super().__init__(max_length=max_length, **kwargs)


class PlainDecimalSerializerField(serializers.DecimalField):
    """A decimal API field that refuses exponent notation, NaN and infinities."""

    def to_internal_value(self, data):
        try:
            parse_plain_decimal(data, label="This number")
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return super().to_internal_value(data)
