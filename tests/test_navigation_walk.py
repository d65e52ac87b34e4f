"""Every role follows every link it is offered: the start page, the header, and every page of each of
its studies it reaches from there (participants, adverse events, safety, analyses, administration).

A link (``<a href>`` or an htmx ``hx-get``) that answers 403, 404, 405 or 500 is a navigation bug: the
page offered something the role cannot open. The text users see never cites an internal document
(no "docs/", no "§", no "DOMAIN"), and no page carries inline script or style, which the
Content-Security-Policy refuses (tests/test_security_headers.py). Administration pages are opened but not walked through: the admin
site is Django's own, with its own permission tests (tests/trials/test_admin.py).
"""

from __future__ import annotations

from collections import deque
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
from django.contrib.auth.models import Permission

from tests.factories import UserFactory, build_study
from tests.test_access_matrix import world  # noqa: F401 - the matrix's world: a study, two sites, an analysis
from trials.management.demo_trial import DATA_MANAGER_PERMISSIONS, SPONSOR_ADMIN_PERMISSIONS
from trials.models import Indication, StudyMembership

ROLES = [
    "coordinator",
    "investigator",
    "monitor",
    "medical_monitor",
    "data_manager",
    "statistician",
    "sponsor_admin",
    "superuser",
]
FORBIDDEN_TEXT = ("docs/", "§", "DOMAIN")
PAGE_LIMIT = 600  # the walk is bounded; the small world below has far fewer pages


class _Page(HTMLParser):
    """The links of a page (anchors, htmx GETs, stylesheets, scripts, images) and its visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.assets: list[str] = []
        self.text: list[str] = []
        self.inline: list[str] = []  # what the Content-Security-Policy would refuse
        self._hidden = 0  # inside <script> or <style>

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "style"):
            self._hidden += 1
        if tag == "style" or (tag == "script" and not attrs.get("src") and attrs.get("type") != "application/json"):
            self.inline.append(f"<{tag}>")
        self.inline.extend(f"{name}= on <{tag}>" for name in attrs if name == "style" or name.startswith("on"))
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if attrs.get("hx-get"):
            self.links.append(attrs["hx-get"])
        if tag in ("script", "img") and attrs.get("src"):
            self.assets.append(attrs["src"])
        if tag == "link" and attrs.get("href") and "stylesheet" in (attrs.get("rel") or ""):
            self.assets.append(attrs["href"])
        for name in ("title", "alt", "placeholder", "aria-label"):
            if attrs.get(name):
                self.text.append(attrs[name])

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden:
            self.text.append(data)


def _local(base: str, href: str) -> str | None:
    """The same-origin path (with query) of a link, or None for other origins, data: and mailto: links."""
    url, _fragment = urldefrag(urljoin(base, href))
    parts = urlsplit(url)
    if parts.scheme not in ("", "http") or parts.netloc not in ("", "testserver") or not parts.path:
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def walk(client, start: str = "/") -> tuple[list[str], list[str]]:
    """Follow every same-origin GET link from ``start``, breadth first. Returns the pages visited and
    the problems found (a status that is not 200, or a page that cites an internal document)."""
    queue: deque[tuple[str, str]] = deque([(start, "(start)")])
    seen: set[str] = set()
    visited: list[str] = []
    problems: list[str] = []
    while queue and len(visited) < PAGE_LIMIT:
        url, source = queue.popleft()
        if url in seen:
            continue
        seen.add(url)
        response = client.get(url)
        visited.append(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        if response.status_code in (301, 302):
            target = _local(url, response["Location"])
            if target is None or target.startswith("/login/"):
                problems.append(f"{url} (linked from {source}) redirects to {response['Location']}")
            else:
                queue.append((target, url))
            continue
        if response.status_code != 200:
            problems.append(f"{url} (linked from {source}) answers {response.status_code}")
            continue
        if not response.get("Content-Type", "").startswith("text/html"):
            continue
        page = _Page()
        page.feed(body.decode())
        text = " ".join(page.text)
        if page.inline:
            problems.append(f"{url} has inline code the CSP refuses: {sorted(set(page.inline))}")
        for needle in FORBIDDEN_TEXT:
            if needle in text:
                at = text.index(needle)
                problems.append(f"{url} shows {needle!r}: ...{text[max(0, at - 60) : at + 40]}...")
        for href in page.assets:
            target = _local(url, href)
            if target is not None:
                queue.append((target, url))
        if url.startswith("/admin/"):
            continue  # opened, not walked through
        for href in page.links:
            target = _local(url, href)
            if target is not None:
                queue.append((target, url))
    return visited, problems


@pytest.fixture
def people(world, sites):  # noqa: F811 - the imported fixture
    """The matrix world's users, with a second study where each has the same role, the demo's staff
    permissions for the data manager and the sponsor admin, and a superuser without any role."""
    users = dict(world["users"])
    second = build_study(code="TREG-T1D-02", indication=Indication.T1D, sites=list(sites))
    for membership in StudyMembership.objects.filter(study=world["study"]):
        StudyMembership.objects.create(
            user=membership.user,
            study=second,
            site=membership.site,
            role=membership.role,
            unblinded=membership.unblinded,
        )
    for role, permissions in (("data_manager", DATA_MANAGER_PERMISSIONS), ("sponsor_admin", SPONSOR_ADMIN_PERMISSIONS)):
        user = users[role]
        user.is_staff = True
        user.save()
        for dotted in permissions:
            app_label, codename = dotted.split(".")
            user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    users["superuser"] = UserFactory(username="root", is_staff=True, is_superuser=True)
    return {"users": users, "studies": [world["study"], second]}


@pytest.mark.parametrize("role", ROLES)
def test_every_link_a_role_is_offered_opens(client, people, role):
    client.force_login(people["users"][role])
    visited, problems = walk(client)
    assert problems == []
    # The walk reached the study pages (not just the start page).
    assert len(visited) > 5, visited


@pytest.mark.parametrize("role", ROLES)
def test_the_start_page_lists_each_study_with_the_role_and_its_pages(client, people, role):
    client.force_login(people["users"][role])
    page = client.get("/").content.decode()
    for study in people["studies"]:
        assert study.code.upper() in page
    if role == "superuser":
        assert "Superuser" in page
        assert "Study build" in page
    elif role == "sponsor_admin":
        assert "Sponsor admin" in page
        assert "User accounts" in page
        assert "Roles and sites" in page
        assert "no role in any study" not in page
    else:
        assert page.count(">Participants</a>") == 2


def test_the_header_offers_dose_escalation_only_to_study_wide_roles(client, people):
    study = people["studies"][0]
    url = f"/safety/studies/{study.code}/"
    for role in ("coordinator", "investigator", "monitor"):
        client.force_login(people["users"][role])
        page = client.get(url).content.decode()
        assert "Dose escalation" not in page, role
        assert client.get(f"/safety/studies/{study.code}/escalation/").status_code == 403
    for role in ("medical_monitor", "data_manager", "statistician"):
        client.force_login(people["users"][role])
        assert "Dose escalation" in client.get(url).content.decode(), role


def test_an_unknown_address_answers_tolerances_own_not_found_page(client, people):
    client.force_login(people["users"]["sponsor_admin"])
    response = client.get("/studies/no-such-study/participants/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "This page does not exist, or it is outside the studies and sites you work on." in page
    assert "Back to the start page" in page
    assert "URLconf" not in page  # never Django's debug list of URL patterns


def test_a_user_without_a_role_sees_that_and_nothing_to_open(client, people):
    client.force_login(people["users"]["no_role"])
    visited, problems = walk(client)
    assert problems == []
    assert "no role in any study" in client.get("/").content.decode()


def test_the_walk_reports_forbidden_links_citations_and_inline_styles():
    """The walker itself: each kind of problem it looks for is reported."""

    class Response:
        def __init__(self, status, body=b"", content_type="text/html"):
            self.status_code, self.content, self.streaming = status, body, False
            self.headers = {"Content-Type": content_type}

        def get(self, name, default=None):
            return self.headers.get(name, default)

        def __getitem__(self, name):
            return self.headers[name]

    pages = {
        "/": Response(200, b'<a href="/open/">ok</a> <a href="/closed/">no</a> <a href="https://example.org/">x</a>'),
        "/open/": Response(200, '<p style="color: red">See docs/domain.md §2</p>'.encode()),
        "/closed/": Response(403),
    }

    class Client:
        def get(self, url):
            return pages[url]

    visited, problems = walk(Client())
    assert visited == ["/", "/open/", "/closed/"]
    assert problems == [
        "/open/ has inline code the CSP refuses: ['style= on <p>']",
        "/open/ shows 'docs/': ...See docs/domain.md §2...",
        "/open/ shows '§': ...See docs/domain.md §2...",
        "/closed/ (linked from /) answers 403",
    ]
