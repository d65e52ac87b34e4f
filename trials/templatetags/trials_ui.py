"""Small presentation helpers for the coordinators' pages: status badges, numbers, who-am-I."""

from __future__ import annotations

from decimal import Decimal

from django import template
from django.utils.html import format_html

from trials import selectors
from trials.models import VisitStatus

register = template.Library()


@register.simple_tag
def badge(value: str, label: str | None = None, *, kind: str = "") -> str:
    """A coloured pill; ``value`` picks the colour (a participant or visit status, or a keyword)."""
    css = f"badge badge-{value}".replace("_", "-")
    if kind:
        css += f" badge-{kind}"
    return format_html('<span class="{}">{}</span>', css, label if label is not None else value)


@register.filter
def thousands(value) -> str:
    """1234567 -> 1,234,567 (blank for None)."""
    if value in (None, ""):
        return ""
    number = Decimal(value)
    return f"{number:,.0f}" if number == number.to_integral_value() else f"{number:,}"


@register.filter
def signed(value) -> str:
    """A signed percentage difference, e.g. +4.5 or -12.0."""
    return "" if value is None else f"{Decimal(value):+}"


@register.inclusion_tag("trials/partials/whoami.html", takes_context=True)
def whoami(context, study=None) -> dict:
    """The user's role(s) and site(s) in the study being viewed, for the page header."""
    user = context["request"].user
    # Pages outside a study (start page, error pages) have no ``study``: the name alone is shown.
    memberships = selectors.memberships_in(user=user, study=study) if getattr(study, "pk", None) else []
    return {"user": user, "memberships": memberships}


@register.filter
def visit_status(value: str) -> str:
    """The label of a visit status (done, missed, upcoming, due, overdue)."""
    return VisitStatus(value).label if value in VisitStatus.values else value


@register.simple_tag(takes_context=True)
def durability_visible(context, study) -> bool:
    """Whether the header offers the durability pages (analytics roles only; others would get 403)."""
    from analytics.selectors import analytics_access

    user = context["request"].user
    return bool(getattr(study, "pk", None)) and analytics_access(user=user, study=study).can_view
