"""Browser tests: headless Debian Chromium driven by Playwright's sync API against pytest-django's
``live_server``.

Playwright's sync API runs an asyncio event loop in the test's thread; Django would then refuse the
test's own ORM calls as "async-unsafe". The test thread does not share connections with the live
server's thread, so allowing it here is safe.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connections

# The real Celery worker of the analytics worker tests (a subprocess on Redis and the test database),
# for browser tests of pages that follow a running analysis. Like the worker tests they need
# CELERY_BROKER_URL and fail without it; browser tests that do not ask for ``worker`` start none.
from tests.analytics.test_jobs_worker import broker_url, worker  # noqa: F401

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

# Debian's Chromium; TOLERANCE_CHROMIUM names another build (./dev.sh test checks it is there first).
CHROMIUM = os.environ.get("TOLERANCE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@contextmanager
def chromium_page() -> Iterator:
    """A fresh page in headless Chromium. Missing Chromium or Playwright fails the test (never a
    skip): a browser test that silently does not run proves nothing."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's Chromium with `apt-get install -y chromium` "
            "(never download a browser with `playwright install`).",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: `pip install playwright` (the Python package only).", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(locale="en-GB", timezone_id="UTC", viewport={"width": 1366, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
            context.close()
        finally:
            browser.close()
            # ORM calls made while Playwright's loop runs get their own connection (Django keeps
            # connections per context); close it here or the test database cannot be dropped.
            connections.close_all()
