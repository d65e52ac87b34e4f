"""Issue 4's "done when", in a real browser: a coordinator records a CRS, grades it by ASTCT (the page
shows the computed grade as the findings are entered), marks it serious and reports it; the medical
monitor assesses it and sees the 15-day report due; the clock job notifies once; the cohort's DLT
count and 3+3 decision update."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.utils import timezone

from safety import services
from safety.dictionaries import ctcae_load_shipped
from safety.models import AdverseEvent, ExpeditedReport, Notification, SAECase
from tests.browser.conftest import chromium_page
from tests.factories import infused, member
from trials.models import Role

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's password


def _submit(page, name: str) -> None:
    page.get_by_role("button", name=name, exact=True).click()
    page.wait_for_load_state("domcontentloaded")


def _log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    _submit(page, "Log in")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_grade_3_crs_becomes_serious_is_reported_assessed_and_counted(live_server, study, sites, coordinator_site_a):
    from playwright.sync_api import expect

    ctcae_load_shipped()
    medical_monitor = member("medmon", study, Role.MEDICAL_MONITOR)
    medical_monitor.email = "medmon@sponsor.example"
    medical_monitor.save()
    cohort = [infused(study, sites[0], coordinator_site_a) for _ in range(3)]  # infused 2025-02-03
    participant = cohort[0]
    aware = (timezone.now() - dt.timedelta(hours=1)).replace(second=0, microsecond=0)

    with chromium_page() as page:
        _log_in(page, live_server.url, "coord_a")

        # Record the CRS as an adverse event; the grade texts of the chosen term appear (htmx).
        page.goto(f"{live_server.url}/safety/participants/{participant.pk}/adverse-events/new/")
        page.select_option("#id_category", "CRS")
        page.fill("#id_verbatim_term", "Fever and low blood pressure")
        page.select_option("#id_ctcae_term", label="Cytokine release syndrome — Immune system disorders")
        expect(page.locator("#grade-help")).to_contain_text("Hypotension managed with one pressor")
        page.check("#id_grade_0")
        page.fill("#id_onset", "2025-02-05")
        page.check("#id_ongoing")
        page.select_option("#id_outcome", "RECOVERING/RESOLVING")
        page.select_option("#id_causality_product", "probably")
        _submit(page, "Record AE")
        expect(page.locator(".alert-success")).to_contain_text("AE 1 recorded")
        ae = AdverseEvent.objects.get()

        # Grade it by ASTCT: the computed grade shows while the findings are entered.
        page.get_by_role("button", name="Grade CRS (ASTCT)", exact=True).click()
        page.fill("#id_assessed_at", aware.strftime("%Y-%m-%dT%H:%M"))
        page.fill("#id_max_temperature_c", "39.2")
        page.check("#id_hypotension")
        page.fill("#id_vasopressors", "1")
        page.select_option("#id_oxygen_device", "nasal_cannula")
        page.fill("#id_oxygen_flow_l_min", "3")
        page.locator("#id_oxygen_flow_l_min").blur()
        expect(page.locator("#computed-grade")).to_contain_text("Computed grade 3")
        _submit(page, "Save assessment")
        expect(page.locator(".alert-success")).to_contain_text("grade 3")
        expect(page.locator("dl.facts")).to_contain_text("ASTCT CRS")

        # It becomes serious: the SAE case and its 24-hour clock appear.
        page.get_by_role("button", name="Correct", exact=True).click()
        page.check("#id_serious")
        page.check("#id_hospitalisation")
        page.fill("#id_site_aware_at", aware.strftime("%Y-%m-%dT%H:%M"))
        page.fill("#id_reason", "Admitted to ICU for a vasopressor")
        _submit(page, "Save changes")
        expect(page.locator(".alert-warning")).to_contain_text("SAE case")
        case = SAECase.objects.get(adverse_event=ae)
        expect(page.locator("body")).to_contain_text("Site to sponsor (24 h)")

        # The site reports it to the sponsor.
        page.get_by_role("button", name="Send the initial SAE report", exact=True).click()
        page.fill("#id_narrative", "Grade 3 CRS on day 2: one pressor, 3 L/min O2; tocilizumab given.")
        _submit(page, "Send")
        expect(page.locator(".alert-success")).to_contain_text("Initial report")
        expect(page.locator(".state-submitted_on_time")).to_be_visible()

        # The medical monitor assesses it: a SUSAR, so the 15-day report is due.
        page.context.clear_cookies()
        _log_in(page, live_server.url, "medmon")
        page.goto(f"{live_server.url}/safety/adverse-events/{ae.pk}/")
        page.get_by_role("button", name="Sponsor assessment", exact=True).click()
        page.select_option("#id_sponsor_causality", "possibly")
        page.select_option("#id_expected", "no")
        page.fill("#id_expectedness_rationale", "CRS is not listed in the IB")
        _submit(page, "Save assessment")
        expect(page.locator(".alert-success")).to_contain_text("a SUSAR")
        report = ExpeditedReport.objects.get(case=case, kind="fifteen_day")
        expect(page.locator("body")).to_contain_text(f"{report.due_date:%Y-%m-%d}")

        # The clock job notifies once, however often it runs.
        for _ in range(2):
            services.clock_monitor_run(now=report.due_at - dt.timedelta(hours=47))
        assert Notification.objects.filter(report=report).count() == 1
        assert [m.subject for m in mail.outbox if case.case_number in m.subject] == [
            f"[{study.code}] 15-day SUSAR report due soon: {case.case_number}"
        ]

        # The cohort's DLT count and 3+3 decision.
        page.goto(f"{live_server.url}/safety/studies/{study.code}/escalation/")
        first = page.locator("table").first.locator("tbody tr").first
        expect(first).to_contain_text("1 (1 not yet adjudicated)")
        expect(first).to_contain_text("Treat 3 more participant(s) in cohort 1 (1 × 10⁶/kg).")
        page.goto(f"{live_server.url}/safety/studies/{study.code}/")
        expect(page.locator("body")).to_contain_text(case.case_number)
        expect(page.locator("body")).to_contain_text("due soon")
