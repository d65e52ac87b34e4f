"""A site coordinator's main path in a real browser: log in, screen, consent, eligibility, enrol,
infuse, then record a follow-up visit inline (htmx), checking what the page shows at each step."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest

from tests.browser.conftest import chromium_page
from trials.models import Participant, ParticipantStatus

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's password


def _submit(page, name: str) -> None:
    page.get_by_role("button", name=name, exact=True).click()
    page.wait_for_load_state("domcontentloaded")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_coordinator_screens_enrols_infuses_and_records_a_visit(live_server, study, sites, coordinator_site_a):
    from playwright.sync_api import expect

    with chromium_page() as page:
        # Log in: anonymous users land on the login page first.
        page.goto(f"{live_server.url}/")
        expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
        page.fill("#id_username", "coord_a")
        page.fill("#id_password", PASSWORD)
        _submit(page, "Log in")
        expect(page.get_by_role("heading", name="Participants")).to_be_visible()
        expect(page.locator(".whoami")).to_contain_text("Site coordinator · S01 Royal Infirmary")
        assert page.evaluate("typeof window.htmx") == "object", "the vendored htmx did not load"

        # Screen
        page.get_by_role("button", name="Screen a new participant").click()
        page.select_option("#id_sex", "F")
        page.fill("#id_birth_year", "1985")
        page.fill("#id_screening_date", "2025-01-06")
        _submit(page, "Register")
        expect(page.locator(".alert-success")).to_contain_text("S01-0001 registered for screening")
        expect(page.get_by_role("heading", level=1)).to_contain_text("S01-0001")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Screening")
        participant = Participant.objects.get(subject_code="S01-0001")

        # Consent
        page.get_by_role("button", name="Record consent").click()
        page.fill("#id_consent_date", "2025-01-06")
        _submit(page, "Record consent")
        expect(page.locator(".alert-success")).to_contain_text("Consent to v1.0 recorded (2025-01-06)")
        expect(page.locator("#consents")).to_contain_text("2025-01-06")

        # Eligibility: a refused answer first is impossible (shape only), so answer item by item.
        page.get_by_role("button", name="Eligibility").click()
        for criterion in study.criteria.all():
            choice = 0 if criterion.kind == "inclusion" else 1  # inclusion: Yes, exclusion: No
            page.check(f"#id_criterion_{criterion.pk}_{choice}")
        _submit(page, "Save answers")
        expect(page.locator(".alert-success")).to_contain_text("every criterion is met")

        # Enrol: the service picks the cohort.
        page.get_by_role("button", name="Enrol", exact=True).click()
        expect(page.locator(".alert-info")).to_contain_text("Every eligibility criterion is met")
        page.fill("#id_enrolment_date", "2025-01-13")
        _submit(page, "Enrol")
        expect(page.locator(".alert-success")).to_contain_text("S01-0001 enrolled in cohort 1 (1M/kg)")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Enrolled")

        # Infuse, with one mistake first: the service's message lands on its field.
        page.get_by_role("button", name="Record infusion").click()
        page.fill("#id_manufacturing_lot", "LOT-2025-017")
        page.fill("#id_apheresis_date", "2025-01-13")
        page.fill("#id_viability_pct", "92.5")
        page.fill("#id_total_viable_cells", "70000000")
        page.fill("#id_weight_kg", "70")
        page.fill("#id_start_at", "2025-02-03T09:00")
        page.fill("#id_end_at", "2025-02-03T09:45")
        page.fill("#id_premedication", "Paracetamol 1 g PO")
        _submit(page, "Record infusion")  # release not ticked
        expect(page.locator("#field-release_passed .field-error")).to_have_text(
            "The product lot has not passed release testing; it cannot be infused."
        )
        assert not participant.infusions.exists()
        page.check("#id_release_passed")
        _submit(page, "Record infusion")
        expect(page.locator(".alert-success")).to_contain_text("Infusion recorded: 1,000,000 cells/kg (+0.0%")
        expect(page.locator("[data-testid=dose-per-kg]")).to_have_text("1,000,000 cells/kg")
        expect(page.locator("#infusion")).to_contain_text("within tolerance")
        participant.refresh_from_db()
        assert participant.status == ParticipantStatus.IN_FOLLOW_UP
        assert participant.visits.count() == 7

        # Record the day 7 visit inline: htmx swaps the row, the page is not reloaded.
        d7 = participant.visits.get(definition__code="d7")
        row = page.locator(f"#visit-{d7.pk}")
        expect(row).to_contain_text("2025-02-10")  # planned date
        page.evaluate("window.__samePage = true")
        row.get_by_role("link", name="Record", exact=True).click()
        expect(row.get_by_role("button", name="Save visit")).to_be_visible()
        row.locator("input[name=actual_date]").fill("2025-02-10")
        row.locator("input[name=weight_kg]").fill("70.5")
        row.get_by_role("button", name="Save visit").click()
        expect(row.locator(".badge-done")).to_have_text("Done")
        expect(row).to_contain_text("in window")
        expect(row).to_contain_text("70.5 kg")
        assert page.evaluate("window.__samePage") is True, "the visit row should update in place"
        d7.refresh_from_db()
        assert (d7.actual_date, d7.weight_kg) == (dt.date(2025, 2, 10), Decimal("70.5"))

        # The list shows the participant in follow-up; the search filters in place.
        page.get_by_role("banner").get_by_role("link", name="Participants").click()
        expect(page.locator('[data-status="in_follow_up"]')).to_have_text("1")
        page.fill("#id_q", "9999")
        expect(page.locator("#participant-results")).to_contain_text("No participant matches these filters.")
        page.fill("#id_q", "0001")
        expect(page.locator("#participant-results")).to_contain_text("S01-0001")
