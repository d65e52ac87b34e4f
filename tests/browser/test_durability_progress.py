"""A statistician requests a durability analysis on its page and watches a real Celery worker run it:
the job's progress bar advances in place (htmx polling, no reload) until the job succeeds, and the
page then shows the curves and the Kaplan-Meier median table. A coordinator is refused the page.

The test worker (tests/analytics/held_worker.py) holds analyses of a cut labelled "hold N s" at an
early stage for N seconds, reporting a countdown: long enough to watch the bar, with no lock or sleep
in the test itself and no test switch in the application.
"""

from __future__ import annotations

import re

import pytest

from analytics import presentation, services
from analytics.models import AnalysisJob, AnalysisResult
from tests.analytics.conftest import CUT_DATE, build_trial
from tests.analytics.held_worker import hold_label
from tests.analytics.test_jobs_worker import WORKER_PATTERNS
from tests.browser.conftest import chromium_page

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's password
HELD_STAGE = re.compile(r"6% · held by the test \(\d+ s\)")
HELD_PERCENT = "6"
HOLD_SECONDS = 8

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _log_in(page, username: str) -> None:
    from playwright.sync_api import expect

    expect(page).to_have_url(re.compile(r"/login/\?next="))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    page.wait_for_load_state("domcontentloaded")


def test_a_statistician_watches_an_analysis_progress_on_the_worker_then_sees_its_result(live_server, worker):
    from playwright.sync_api import expect

    trial = build_trial(code="treg-ra-browser", patterns=WORKER_PATTERNS)
    cut = services.datacut_create(
        actor=trial.statistician, study=trial.study, cut_date=CUT_DATE, label=hold_label(HOLD_SECONDS)
    )
    durability_url = f"{live_server.url}/analytics/studies/{trial.study.code}/"

    with chromium_page() as page:
        # A coordinator has no analytics role: the page is refused, so there is no request form.
        page.goto(durability_url)
        _log_in(page, trial.coordinator.username)
        response = page.goto(durability_url)
        assert response is not None
        assert response.status == 403
        expect(page.get_by_role("button", name="Run the analysis")).to_have_count(0)
        page.goto(f"{live_server.url}/")
        page.get_by_role("button", name="Log out").click()
        page.wait_for_load_state("domcontentloaded")

        # The statistician signs in through the login page and lands on the durability page.
        page.goto(durability_url)
        _log_in(page, trial.statistician.username)
        expect(page.get_by_role("heading", name="Remission durability")).to_be_visible()
        expect(page.get_by_role("heading", name=re.compile("Latest result"))).to_have_count(0)

        page.select_option("#id_data_cut", str(cut.pk))
        page.select_option("#id_grouping", "cohort")
        page.get_by_role("button", name="Run the analysis").click()
        page.wait_for_load_state("domcontentloaded")
        job = AnalysisJob.objects.get(data_cut=cut)
        expect(page.locator(".alert-success")).to_contain_text(f"Analysis #{job.pk} queued.")

        # The worker holds the job at an early stage; the polled job list shows it in place, counting down.
        page.evaluate("window.__samePage = true")
        progress = page.get_by_role("progressbar", name=f"Progress of analysis {job.pk}")
        row = page.locator("#analysis-jobs tr", has=progress)
        expect(progress).to_have_attribute("value", HELD_PERCENT, timeout=20_000)
        expect(row.locator(".progress-cell small")).to_have_text(HELD_STAGE)
        first_stage = row.locator(".progress-cell small").inner_text()
        expect(row.locator(".badge")).to_have_text("Running")
        expect(page.locator("#analysis-jobs")).to_have_attribute("hx-trigger", "every 2s")
        expect(row.locator(".progress-cell small")).not_to_have_text(first_stage, timeout=10_000)  # it advances
        assert page.evaluate("window.__samePage") is True, "the progress should update without a reload"

        # When the job finishes, the last poll reloads the page, which then shows the result.
        expect(page.get_by_role("heading", name=f"Latest result: analysis #{job.pk}")).to_be_visible(timeout=60_000)
        assert page.evaluate("window.__samePage") is None, "the finished job should bring its result in"

        job.refresh_from_db()
        assert (job.status, job.progress, job.attempts) == (AnalysisJob.Status.SUCCEEDED, 100, 1)
        result = AnalysisResult.objects.get(job=job)

        expect(page.locator("#analysis-jobs[hx-trigger]")).to_have_count(0)  # nothing left to poll
        expect(page.get_by_role("figure", name="Kaplan-Meier curves").locator("img")).to_be_visible()
        expect(page.get_by_role("figure", name="Cumulative incidence curves").locator("img")).to_be_visible()
        km_table = page.locator("table", has=page.get_by_role("columnheader", name="Median (days)"))
        groups = result.numbers["kaplan_meier"]["groups"]
        expect(km_table.locator("tbody tr")).to_have_count(len(groups))
        for row_at, group in zip(km_table.locator("tbody tr").all(), groups, strict=True):
            median = group["median"]["median"]
            cells = row_at.locator("td")
            expect(cells.nth(0)).to_have_text(group["group"])
            expect(cells.nth(1)).to_have_text(str(group["n"]))
            expect(cells.nth(2)).to_have_text(str(group["events"]))
            expect(cells.nth(4)).to_have_text("not reached" if median is None else presentation.days(median))
