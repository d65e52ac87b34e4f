"""Presentation helpers for the safety pages: time left on a clock, probabilities, labels."""

from __future__ import annotations

import datetime as dt

from django import template

register = template.Library()

_STATE_LABELS = {
    "not_due": "Not due yet",
    "due_soon": "Due soon",
    "overdue": "Overdue",
    "submitted_on_time": "Submitted on time",
    "submitted_late": "Submitted late",
    "cancelled": "Not required",
}


@register.filter
def clock_state(value: str) -> str:
    return _STATE_LABELS.get(value, value)


@register.filter
def time_left(value: dt.timedelta | None) -> str:
    """3 d 4 h / 5 h 20 min / 12 min; negative values read 'x ago'."""
    if value is None:
        return ""
    seconds = int(value.total_seconds())
    past = seconds < 0
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        text = f"{days} d {hours} h"
    elif hours:
        text = f"{hours} h {minutes} min"
    else:
        text = f"{minutes} min"
    return f"{text} ago" if past else text


@register.filter
def percent(value: float | None, places: int = 0) -> str:
    """0.1234 -> "12%"; a probability too small to show at this precision reads "< 0.1%", not "0.0%"."""
    if value is None:
        return ""
    smallest = 10.0**-places
    if 0 < value * 100 < smallest:
        return f"< {smallest:.{places}f}%"
    return f"{value * 100:.{places}f}%"


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if mapping else None


@register.filter
def grade_text_for(term, grade) -> str:
    """The CTCAE grade text of ``term`` for ``grade`` ("1".."5"); blank when the grade does not exist."""
    return term.grade_text(int(grade)) if term is not None else ""


@register.filter
def words(value) -> str:
    """An enum value in words: ``mtd_exceeded_deescalate`` -> ``Mtd exceeded deescalate``."""
    return str(value).replace("_", " ").capitalize()
