"""Security headers on every response: a strict Content-Security-Policy (this origin only, nothing
inline) and a Permissions-Policy switching off the browser features no page uses. Swagger UI still
works under the policy: its start-up script is a file of its own, its page has no inline style.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from config.security import permissions_policy
from tests.test_access_matrix import world  # noqa: F401 - a study with an analysis and its plots

BASE_DIR = Path(settings.BASE_DIR)


def _directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in (p.strip() for p in header.split(";")) if part}


@pytest.fixture
def signed_in(client, coordinator_site_a):
    client.force_login(coordinator_site_a)
    return client


@pytest.mark.parametrize(
    "url", ["/", "/login/", "/static/trials/app.css", "/api/v1/studies/", "/api/v1/docs/", "/no-such-page/"]
)
def test_every_response_carries_the_strict_policy_and_the_permissions_policy(signed_in, study, url):
    response = signed_in.get(url)
    if response.streaming:  # a static file: reading it to the end closes it
        b"".join(response.streaming_content)
    assert response.status_code in (200, 302, 404), url
    csp = _directives(response)
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no other origin
    assert csp["style-src"] == ["'self'"]
    assert csp["img-src"] == ["'self'", "data:"]  # plots are SVG images in data: URIs
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["form-action"] == ["'self'"]
    permissions = response["Permissions-Policy"]
    for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
        assert f"{feature}=()" in permissions
    assert response["X-Content-Type-Options"] == "nosniff"
    if not url.startswith("/static/"):
        assert response["X-Frame-Options"] == "DENY"


def test_the_permissions_policy_header_syntax():
    assert permissions_policy({"camera": [], "fullscreen": ["self"], "usb": ["https://a.example"]}) == (
        'camera=(), fullscreen=(self), usb=("https://a.example")'
    )


def test_swagger_ui_loads_its_start_up_script_from_this_origin_and_has_no_inline_code(signed_in):
    page = signed_in.get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<style" not in html
    assert ' style="' not in html
    inline_scripts = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert inline_scripts == []
    sources = re.findall(r'<script src="([^"]+)"', html)
    assert len(sources) == 3  # the Swagger UI bundle, its preset and the start-up script
    for src in sources:
        response = signed_in.get(src.replace("&amp;", "&"))
        assert response.status_code == 200, src
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert body, src
    script = signed_in.get(sources[-1].replace("&amp;", "&"))
    assert script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content
    assert b"/api/v1/schema/" in script.content


def test_no_template_has_inline_script_or_style():
    """The policy refuses inline code: templates keep CSS and JavaScript in static files. (Rendered
    pages are checked too, as every role walks them: tests/test_navigation_walk.py.)"""
    offending = []
    for template in sorted(BASE_DIR.glob("*/templates/**/*.html")) + sorted(BASE_DIR.glob("templates/**/*.html")):
        if ".venv" in template.parts:
            continue
        text = template.read_text()
        for pattern in (
            r"<style\b",
            r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>",
            r"\sstyle=",
            r"\son[a-z]+=",
        ):
            offending += [f"{template.relative_to(BASE_DIR)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert offending == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_swagger_ui_htmx_and_the_plots_work_under_the_policy_in_chromium(live_server, world):  # noqa: F811
    """In a real browser: no CSP violation on the pages with the most moving parts, and they still
    work (Swagger UI lists the API, the plots are drawn, htmx is loaded)."""
    from playwright.sync_api import expect

    from tests.browser.conftest import chromium_page

    violations: list[str] = []
    with chromium_page() as page:
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", "stats")
        page.fill("#id_password", "correct-horse-battery")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_load_state("networkidle")

        page.goto(f"{live_server.url}/studies/{world['study'].code}/participants/")
        assert page.evaluate("typeof window.htmx") == "object"

        page.goto(f"{live_server.url}/analytics/jobs/{world['analysis'].pk}/")
        expect(page.locator(".plots img").first).to_be_visible()
        widths = page.evaluate("Array.from(document.querySelectorAll('.plots img')).map(i => i.naturalWidth)")
        assert len(widths) >= 2
        assert all(width > 0 for width in widths), widths

        page.goto(f"{live_server.url}/api/v1/docs/")
        expect(page.locator(".opblock-tag").first).to_be_visible(timeout=20_000)
        expect(page.get_by_text("/api/v1/participants/").first).to_be_visible()
    assert violations == []
