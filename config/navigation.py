"""What each user can open in a study: the one source of the header, the safety sub-navigation and
the start page's list of studies.

A link is offered only when the page behind it answers 200 for this user, so navigation never leads
to a 403 or a 404 (``tests/test_navigation_walk.py`` follows every link for every role). The rules
are the pages' own access checks, asked through each app's public selectors; this module spans the
three apps, so it lives in ``config`` (``trials`` imports neither ``safety`` nor ``analytics``).

Loaded in templates as ``{% load navigation %}`` (registered in ``TEMPLATES["OPTIONS"]["libraries"]``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django import template
from django.urls import reverse

from analytics.selectors import analytics_access
from safety.selectors import is_study_wide
from trials import selectors as trials_selectors
from trials.models import Role, Study

register = template.Library()

HEADER = ("participants", "safety", "durability")
SAFETY = ("safety", "reports", "escalation")


@dataclass(frozen=True)
class Link:
    key: str
    label: str
    url: str
    hint: str = ""


def study_links(user, study: Study) -> list[Link]:
    """Every page of ``study`` that ``user`` may open, in the order the start page lists them."""
    links: list[Link] = []
    code = study.code
    # Clinical pages: the same test as the pages' own ``study_get`` (sponsor admins see no clinical data).
    if trials_selectors.studies_visible_to(user).filter(pk=study.pk).exists():
        links.append(Link("participants", "Participants", reverse("trials:participant_list", args=[code]), "casebooks"))
        if trials_selectors.sites_for_entry(user, study).exists():
            links.append(
                Link("screen", "Screen a participant", reverse("trials:participant_screen", args=[code]), "new entry")
            )
        links.append(Link("safety", "Safety", reverse("safety:dashboard", args=[code]), "adverse events, SAEs"))
        links.append(Link("reports", "SAEs and reports", reverse("safety:reports", args=[code]), "reporting clocks"))
        if is_study_wide(user, study):
            links.append(
                Link("escalation", "Dose escalation", reverse("safety:escalation", args=[code]), "DLTs, stopping rule")
            )
        if analytics_access(user=user, study=study).can_view:
            links.append(
                Link("durability", "Durability", reverse("analytics:durability", args=[code]), "remission analyses")
            )
    links.extend(_admin_links(user, study))
    return links


def _admin_links(user, study: Study) -> list[Link]:
    """Study build and user administration happen in the admin site, for the staff who may use it."""
    if not user.is_staff:
        return []
    roles = trials_selectors.user_roles(user, study)
    links = []
    if user.has_perm("trials.change_study") and (user.is_superuser or Role.DATA_MANAGER in roles):
        links.append(
            Link("study_build", "Study build", reverse("admin:trials_study_change", args=[study.pk]), "administration")
        )
    if user.has_perm("trials.view_studymembership"):
        url = reverse("admin:trials_studymembership_changelist") + f"?study__id__exact={study.pk}"
        links.append(Link("memberships", "Roles and sites", url, "who works on this study"))
    if user.has_perm("auth.view_user") and (user.is_superuser or Role.SPONSOR_ADMIN in roles):
        links.append(Link("users", "User accounts", reverse("admin:auth_user_changelist"), "administration"))
    return links


@register.simple_tag(takes_context=True)
def study_nav(context, study, group: str = "") -> list[Link]:
    """The links of ``study`` that the current user may open: all of them, or one group of them
    (``"header"``: the top bar; ``"safety"``: the safety pages' sub-navigation)."""
    request = context.get("request")
    if request is None or not getattr(study, "pk", None) or not request.user.is_authenticated:
        return []
    links = study_links(request.user, study)
    keys = {"header": HEADER, "safety": SAFETY}.get(group)
    if keys is None:
        return links
    return sorted((link for link in links if link.key in keys), key=lambda link: keys.index(link.key))


@register.simple_tag(takes_context=True)
def can_open(context, study, key: str) -> bool:
    """Whether the current user may open the page ``key`` of ``study`` (e.g. a dashboard's shortcut)."""
    return any(link.key == key for link in study_nav(context, study))
