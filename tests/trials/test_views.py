"""The coordinators' pages, through the Django test client: each POST is followed by a look at the
database (docs/style.md §15), refusals show the service's own message and save nothing, and access is
404 outside the user's sites, 403 on write pages for read-only roles, a login redirect for anonymous
users."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils.html import escape

from tests.factories import build_study, consented, eligible, enrolled, infused, member, screened
from trials import services
from trials.models import (
    Consent,
    DiseaseAssessment,
    Disposition,
    EligibilityAnswer,
    Indication,
    Infusion,
    InsulinDoseChange,
    MMTTSample,
    MRIRead,
    Participant,
    ParticipantStatus,
    ProtocolDeviation,
    Relapse,
    RescueTherapy,
    Role,
    Visit,
)

CASEBOOK_MODELS = (
    Participant,
    Consent,
    EligibilityAnswer,
    Infusion,
    ProtocolDeviation,
    Visit,
    DiseaseAssessment,
    MRIRead,
    MMTTSample,
    Relapse,
    RescueTherapy,
    InsulinDoseChange,
    Disposition,
)


def _row_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in CASEBOOK_MODELS}


def _url(name: str, *args) -> str:
    return reverse(f"trials:{name}", args=args)


def _html(response) -> str:
    return response.content.decode()


def _infusion_post(**overrides) -> dict:
    data = {
        "manufacturing_lot": "LOT-2025-017",
        "apheresis_date": "2025-01-13",
        "release_passed": "on",
        "viability_pct": "92.5",
        "total_viable_cells": "70000000",
        "volume_ml": "100.0",
        "weight_kg": "70.0",
        "time_zone": "UTC",
        "start_at": "2025-02-03T09:00",
        "end_at": "2025-02-03T09:45",
        "premedication": "Paracetamol 1 g PO 08:30",
    }
    data.update(overrides)
    return data


@pytest.fixture
def coordinator_client(client, coordinator_site_a):
    client.force_login(coordinator_site_a)
    return client


@pytest.fixture
def participant_a(study, sites, coordinator_site_a):
    """A participant in follow-up at site A (infused 2025-02-03, schedule created)."""
    return infused(study, sites[0], coordinator_site_a)


# ---------------------------------------------------------------------------------------------
# The full coordinator path
# ---------------------------------------------------------------------------------------------


def test_a_coordinator_takes_a_participant_from_screening_to_a_recorded_follow_up_visit(
    coordinator_client, study, sites
):
    client = coordinator_client

    response = client.get("/", follow=True)
    assert response.redirect_chain[-1][0] == _url("participant_list", study.code)
    assert "Screen a new participant" in _html(response)

    # Screen
    response = client.post(
        _url("participant_screen", study.code),
        {"site": sites[0].pk, "sex": "F", "birth_year": "1985", "screening_date": "2025-01-06"},
    )
    participant = Participant.objects.get(study=study)
    assert response.status_code == 302
    assert response.url == _url("participant_detail", participant.pk)
    assert (participant.subject_code, participant.status, participant.site) == ("S01-0001", "screening", sites[0])

    # Consent
    document = study.consent_documents.get()
    response = client.post(
        _url("consent_record", participant.pk), {"document": document.pk, "consent_date": "2025-01-06"}
    )
    assert response.status_code == 302
    consent = participant.consents.get()
    assert (consent.document, consent.consent_date) == (document, dt.date(2025, 1, 6))

    # Eligibility, item by item
    inclusion = study.criteria.get(kind="inclusion")
    exclusion = study.criteria.get(kind="exclusion")
    response = client.get(_url("eligibility_record", participant.pk))
    assert inclusion.text in _html(response)
    assert exclusion.text in _html(response)
    response = client.post(
        _url("eligibility_record", participant.pk),
        {f"criterion_{inclusion.pk}": "yes", f"criterion_{exclusion.pk}": "no"},
    )
    assert response.status_code == 302
    answers = dict(participant.eligibility_answers.values_list("criterion__kind", "answer"))
    assert answers == {"inclusion": True, "exclusion": False}

    # Enrol: the service assigns the cohort
    response = client.post(_url("participant_enrol", participant.pk), {"enrolment_date": "2025-01-13"})
    assert response.status_code == 302
    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.ENROLLED
    assert participant.cohort.number == 1
    assert participant.enrolment_date == dt.date(2025, 1, 13)
    page = _html(client.get(_url("participant_detail", participant.pk)))
    assert "enrolled in cohort 1" in page

    # Infuse
    response = client.post(_url("infusion_record", participant.pk), _infusion_post())
    assert response.status_code == 302
    infusion = participant.infusions.get()
    assert infusion.manufacturing_lot == "LOT-2025-017"
    assert infusion.dose_cells_per_kg == Decimal("1000000")
    assert infusion.start_at == dt.datetime(2025, 2, 3, 9, 0, tzinfo=dt.UTC)
    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.IN_FOLLOW_UP
    assert participant.visits.count() == 7
    page = _html(client.get(_url("participant_detail", participant.pk)))
    assert "1,000,000 cells/kg" in page
    assert "within tolerance" in page
    assert "LOT-2025-017" in page

    # Record the day 7 visit (planned 2025-02-10, window 02-09 to 02-11)
    d7 = participant.visits.get(definition__code="d7")
    response = client.post(
        _url("visit_record", d7.pk), {"actual_date": "2025-02-10", "weight_kg": "70.5", "version": d7.version}
    )
    assert response.status_code == 302
    assert response.url.endswith(f"#visit-{d7.pk}")
    d7.refresh_from_db()
    assert (d7.actual_date, d7.weight_kg, d7.version) == (dt.date(2025, 2, 10), Decimal("70.5"), 2)
    assert not participant.deviations.exists()
    page = _html(client.get(_url("participant_detail", participant.pk)))
    assert 'badge badge-done">Done' in page
    assert "in window" in page


def test_the_infusion_times_are_read_in_the_chosen_time_zone(coordinator_client, study, sites, coordinator_site_a):
    participant = enrolled(study, sites[0], coordinator_site_a)
    response = coordinator_client.post(
        _url("infusion_record", participant.pk),
        _infusion_post(time_zone="Europe/Warsaw", start_at="2025-02-03T10:00", end_at="2025-02-03T10:45"),
    )
    assert response.status_code == 302
    infusion = participant.infusions.get()
    assert infusion.start_at == dt.datetime(2025, 2, 3, 9, 0, tzinfo=dt.UTC)
    assert infusion.end_at == dt.datetime(2025, 2, 3, 9, 45, tzinfo=dt.UTC)


def test_an_infused_dose_outside_tolerance_is_shown_as_a_deviation(
    coordinator_client, study, sites, coordinator_site_a
):
    participant = enrolled(study, sites[0], coordinator_site_a)
    response = coordinator_client.post(
        _url("infusion_record", participant.pk), _infusion_post(total_viable_cells="7e7", weight_kg="50.0"), follow=True
    )
    assert participant.infusions.get().dose_cells_per_kg == Decimal("1400000")
    deviation = participant.deviations.get()
    assert deviation.category == ProtocolDeviation.Category.DOSE
    page = _html(response)
    assert "1,400,000 cells/kg" in page
    assert "+40.0%" in page
    assert "dose deviation" in page
    assert escape(deviation.description) in page


# ---------------------------------------------------------------------------------------------
# Refusals: the service's message on its field, nothing saved
# ---------------------------------------------------------------------------------------------


def test_a_refused_consent_shows_the_service_message_on_its_field_and_saves_nothing(
    coordinator_client, study, sites, coordinator_site_a
):
    participant = screened(study, sites[0], coordinator_site_a)
    before = _row_counts()
    document = study.consent_documents.get()
    response = coordinator_client.post(
        _url("consent_record", participant.pk), {"document": document.pk, "consent_date": "2023-12-01"}
    )
    assert response.status_code == 200
    message = "Version 1.0 only took effect on 2024-01-01; consent dated 2023-12-01 cannot be to it."
    assert f'<small class="field-error">{message}</small>' in _html(response)
    assert 'aria-invalid="true"' in _html(response)
    assert _row_counts() == before


def test_an_infusion_of_a_lot_that_failed_release_is_refused(coordinator_client, study, sites, coordinator_site_a):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = _row_counts()
    data = _infusion_post()
    del data["release_passed"]
    response = coordinator_client.post(_url("infusion_record", participant.pk), data)
    assert response.status_code == 200
    assert "The product lot has not passed release testing; it cannot be infused." in _html(response)
    assert _row_counts() == before
    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.ENROLLED


def test_enrolment_of_a_participant_who_is_not_eligible_is_refused_above_the_form(
    coordinator_client, study, sites, coordinator_site_a
):
    participant = consented(study, sites[0], coordinator_site_a)
    before = _row_counts()
    response = coordinator_client.post(_url("participant_enrol", participant.pk), {"enrolment_date": "2025-01-13"})
    assert response.status_code == 200
    assert "S01-0001 is not eligible: Exclusion 1 is not answered; Inclusion 1 is not answered." in _html(response)
    assert _row_counts() == before
    participant.refresh_from_db()
    assert (participant.status, participant.cohort) == (ParticipantStatus.SCREENING, None)


def test_a_malformed_post_is_refused_by_the_form_without_calling_the_service(
    coordinator_client, study, sites, coordinator_site_a
):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = _row_counts()
    response = coordinator_client.post(_url("infusion_record", participant.pk), _infusion_post(weight_kg="heavy"))
    assert response.status_code == 200
    assert "Enter a number." in _html(response)
    assert _row_counts() == before


def test_a_locked_casebook_shows_it_and_refuses_entry(coordinator_client, participant_a, data_manager):
    services.casebook_set_locked(actor=data_manager, participant=participant_a, locked=True, reason="Interim cut")
    page = _html(coordinator_client.get(_url("participant_detail", participant_a.pk)))
    assert "this casebook is locked" in page
    assert "Add visit" not in page
    before = _row_counts()
    d7 = participant_a.visits.get(definition__code="d7")
    response = coordinator_client.post(
        _url("visit_record", d7.pk), {"actual_date": "2025-02-10", "version": d7.version}
    )
    assert response.status_code == 200
    assert "The casebook of S01-0001 is locked; no data can be changed." in _html(response)
    assert _row_counts() == before


# ---------------------------------------------------------------------------------------------
# Edits: reason for change and the version the form was loaded with
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def recorded_d7(participant_a, coordinator_client):
    d7 = participant_a.visits.get(definition__code="d7")
    coordinator_client.post(_url("visit_record", d7.pk), {"actual_date": "2025-02-10", "version": d7.version})
    d7.refresh_from_db()
    assert d7.actual_date == dt.date(2025, 2, 10)
    return d7


def test_editing_a_recorded_visit_asks_for_a_reason_for_change(coordinator_client, recorded_d7):
    page = _html(coordinator_client.get(_url("visit_record", recorded_d7.pk)))
    assert "Reason for change" in page
    assert f'name="version" value="{recorded_d7.version}"' in page

    response = coordinator_client.post(
        _url("visit_record", recorded_d7.pk), {"actual_date": "2025-02-11", "version": recorded_d7.version}
    )
    assert response.status_code == 200
    assert "A reason for change is required to edit a saved record." in _html(response)
    recorded_d7.refresh_from_db()
    assert recorded_d7.actual_date == dt.date(2025, 2, 10)

    response = coordinator_client.post(
        _url("visit_record", recorded_d7.pk),
        {"actual_date": "2025-02-11", "version": recorded_d7.version, "reason": "Transcription error"},
    )
    assert response.status_code == 302
    old_version = recorded_d7.version
    recorded_d7.refresh_from_db()
    assert (recorded_d7.actual_date, recorded_d7.version) == (dt.date(2025, 2, 11), old_version + 1)


def test_a_stale_edit_is_refused_with_a_conflict_message(coordinator_client, recorded_d7):
    stale = recorded_d7.version - 1
    response = coordinator_client.post(
        _url("visit_record", recorded_d7.pk),
        {"actual_date": "2025-02-11", "version": stale, "reason": "Transcription error"},
    )
    assert response.status_code == 409
    page = _html(response)
    assert "was changed by someone else since you opened it" in page
    assert 'class="alert alert-error"' in page
    assert 'value="2025-02-11"' in page  # the user's input is kept
    recorded_d7.refresh_from_db()
    assert recorded_d7.actual_date == dt.date(2025, 2, 10)

    # Inline (htmx), the same conflict comes back inside the visit's row
    response = coordinator_client.post(
        _url("visit_record", recorded_d7.pk),
        {"actual_date": "2025-02-11", "version": stale, "reason": "Transcription error"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 409
    fragment = _html(response)
    assert fragment.lstrip().startswith(f'<tr id="visit-{recorded_d7.pk}"')
    assert "was changed by someone else since you opened it" in fragment


def test_an_assessment_is_recorded_and_corrected_with_a_reason(coordinator_client, recorded_d7):
    url = _url("assessment_record", recorded_d7.pk)
    page = _html(coordinator_client.get(url))
    assert "EDSS" in page
    assert "HbA1c" not in page

    response = coordinator_client.post(url, {"edss": "10.5"})
    assert "EDSS must be between 0 and 10; 10.5 is outside that range." in _html(response)
    assert not DiseaseAssessment.objects.exists()

    assert coordinator_client.post(url, {"edss": "2.5"}).status_code == 302
    assessment = DiseaseAssessment.objects.get(visit=recorded_d7)
    assert assessment.edss == Decimal("2.5")

    page = _html(coordinator_client.get(url))
    assert "Reason for change" in page
    assert 'value="2.5"' in page
    response = coordinator_client.post(url, {"edss": "3.0", "version": assessment.version, "reason": "Re-scored"})
    assert response.status_code == 302
    assessment.refresh_from_db()
    assert (assessment.edss, assessment.version) == (Decimal("3.0"), 2)


# ---------------------------------------------------------------------------------------------
# The rest of the casebook
# ---------------------------------------------------------------------------------------------


def test_a_screen_failure_is_recorded_with_its_reason(coordinator_client, study, sites, coordinator_site_a):
    participant = screened(study, sites[0], coordinator_site_a)
    url = _url("screen_failure", participant.pk)
    response = coordinator_client.post(url, {"reason": "  "})
    assert "Give the reason for the screen failure." in _html(response)
    response = coordinator_client.post(url, {"reason": "HbA1c above the protocol limit"}, follow=True)
    participant.refresh_from_db()
    assert (participant.status, participant.screen_failure_reason) == (
        "screen_failed",
        "HbA1c above the protocol limit",
    )
    assert "HbA1c above the protocol limit" in _html(response)


def test_a_visit_is_marked_missed_and_an_unscheduled_visit_added(coordinator_client, participant_a):
    m3 = participant_a.visits.get(definition__code="m3")
    response = coordinator_client.post(_url("visit_missed", m3.pk), {"missed_reason": "Participant in hospital"})
    assert response.status_code == 302
    m3.refresh_from_db()
    assert (m3.missed, m3.missed_reason) == (True, "Participant in hospital")

    response = coordinator_client.post(
        _url("visit_add", participant_a.pk),
        {"kind": "safety", "actual_date": "2025-03-01", "reason": "Fever after infusion", "weight_kg": "69.0"},
    )
    assert response.status_code == 302
    visit = participant_a.visits.get(kind=Visit.Kind.SAFETY)
    assert (visit.actual_date, visit.reason, visit.weight_kg) == (
        dt.date(2025, 3, 1),
        "Fever after infusion",
        Decimal("69.0"),
    )
    page = _html(coordinator_client.get(_url("participant_detail", participant_a.pk)))
    assert "Safety follow-up visit" in page
    assert "Missed: Participant in hospital" in page


def test_a_relapse_an_mri_read_and_a_disposition_are_recorded(coordinator_client, recorded_d7, participant_a):
    response = coordinator_client.post(
        _url("relapse_record", participant_a.pk),
        {"onset_date": "2025-02-20", "steroid_treated": "on", "notes": "Optic neuritis"},
    )
    assert response.status_code == 302
    relapse = participant_a.relapses.get()
    assert (relapse.onset_date, relapse.steroid_treated, relapse.confirmed_by_examination) == (
        dt.date(2025, 2, 20),
        True,
        False,
    )

    response = coordinator_client.post(
        _url("mri_record", recorded_d7.pk),
        {"scan_date": "2025-02-10", "new_or_enlarging_t2": "1", "gd_enhancing": "0", "reader": "Dr Neuro"},
    )
    assert response.status_code == 302
    assert MRIRead.objects.get(visit=recorded_d7).new_or_enlarging_t2 == 1

    url = _url("disposition_record", participant_a.pk)
    response = coordinator_client.post(url, {"kind": "withdrawn", "disposition_date": "2025-03-01"})
    assert "Give the reason for the withdrawal or loss to follow-up." in _html(response)
    assert not Disposition.objects.exists()
    response = coordinator_client.post(
        url, {"kind": "withdrawn", "disposition_date": "2025-03-01", "reason": "Moved abroad"}, follow=True
    )
    participant_a.refresh_from_db()
    assert participant_a.status == ParticipantStatus.WITHDRAWN
    assert participant_a.disposition.reason == "Moved abroad"
    assert "Moved abroad" in _html(response)


@pytest.fixture
def t1d_coordinator(sites):
    study = build_study(code="TREG-T1D-01", indication=Indication.T1D, sites=list(sites))
    return study, member("coord_t1d", study, Role.COORDINATOR, sites[0])


def test_a_t1d_assessment_and_an_mmtt_are_recorded(client, sites, t1d_coordinator):
    study, user = t1d_coordinator
    participant = infused(study, sites[0], user)
    client.force_login(user)
    d28 = participant.visits.get(definition__code="d28")
    client.post(_url("visit_record", d28.pk), {"actual_date": "2025-03-03", "version": d28.version})

    url = _url("assessment_record", d28.pk)
    page = _html(client.get(url))
    assert "HbA1c" in page
    assert "EDSS" not in page
    response = client.post(url, {"hba1c": "7.1", "insulin_u_per_kg_day": "0.40"})
    assert "This field is required for this indication." in _html(response)
    response = client.post(url, {"hba1c": "7.1", "hba1c_unit": "%", "insulin_u_per_kg_day": "0.40"})
    assert response.status_code == 302
    assessment = DiseaseAssessment.objects.get(visit=d28)
    assert (assessment.hba1c, assessment.hba1c_unit) == (Decimal("7.1"), "%")

    url = _url("mmtt_record", d28.pk)
    response = client.post(url, {"unit": "nmol/L", "c_peptide_-10": "0.2"})
    assert "An MMTT needs at least two time points." in _html(response)
    response = client.post(url, {"unit": "nmol/L", "c_peptide_-10": "0.2", "c_peptide_0": "0.25", "c_peptide_30": "11"})
    assert "C-peptide (nmol/L) must be between 0 and 10; 11 is outside that range." in _html(response)
    assert not MMTTSample.objects.exists()
    samples = {"c_peptide_-10": "0.20", "c_peptide_0": "0.25", "c_peptide_30": "0.61", "c_peptide_120": "0.48"}
    assert client.post(url, {"unit": "nmol/L", **samples}).status_code == 302
    assert list(d28.mmtt_samples.values_list("minute", flat=True)) == [-10, 0, 30, 120]


def test_an_ra_assessment_has_the_joint_counts_and_crp(client, sites):
    study = build_study(code="TREG-RA-01", indication=Indication.RA, sites=list(sites))
    user = member("coord_ra", study, Role.COORDINATOR, sites[0])
    participant = infused(study, sites[0], user)
    client.force_login(user)
    d28 = participant.visits.get(definition__code="d28")
    client.post(_url("visit_record", d28.pk), {"actual_date": "2025-03-03", "version": d28.version})
    values = {
        "tender_joints_28": "6",
        "swollen_joints_28": "4",
        "crp": "12.5",
        "crp_unit": "mg/L",
        "esr_mm_h": "30",
        "patient_global_mm": "55",
        "evaluator_global_mm": "40",
    }
    assert client.post(_url("assessment_record", d28.pk), values).status_code == 302
    assessment = DiseaseAssessment.objects.get(visit=d28)
    assert (assessment.tender_joints_28, assessment.crp, assessment.crp_unit) == (6, Decimal("12.5"), "mg/L")


# ---------------------------------------------------------------------------------------------
# htmx: the participant list filters and one visit row redraw in place
# ---------------------------------------------------------------------------------------------


def test_the_participant_list_filters_and_counts_by_status(coordinator_client, study, sites, coordinator_site_a):
    screened(study, sites[0], coordinator_site_a)
    eligible(study, sites[0], coordinator_site_a)
    enrolled(study, sites[0], coordinator_site_a)
    url = _url("participant_list", study.code)

    page = _html(coordinator_client.get(url))
    assert '<strong data-status="screening">2</strong>' in page
    assert '<strong data-status="enrolled">1</strong>' in page
    assert all(code in page for code in ("S01-0001", "S01-0002", "S01-0003"))

    response = coordinator_client.get(url, {"status": "enrolled"}, HTTP_HX_REQUEST="true")
    fragment = _html(response)
    assert "<html" not in fragment
    assert 'id="participant-results"' in fragment
    assert "S01-0003" in fragment
    assert "S01-0001" not in fragment
    assert "HX-Request" in response["Vary"]

    fragment = _html(coordinator_client.get(url, {"q": "0002"}, HTTP_HX_REQUEST="true"))
    assert "S01-0002" in fragment
    assert "S01-0001" not in fragment


def test_a_visit_row_is_recorded_inline_with_htmx(coordinator_client, participant_a):
    d7 = participant_a.visits.get(definition__code="d7")
    url = _url("visit_record", d7.pk)
    fragment = _html(coordinator_client.get(url, HTTP_HX_REQUEST="true"))
    assert fragment.lstrip().startswith(f'<tr id="visit-{d7.pk}"')
    assert f'hx-post="{url}"' in fragment

    fragment = _html(
        coordinator_client.post(url, {"actual_date": "2025-02-20", "version": d7.version}, HTTP_HX_REQUEST="true")
    )
    assert fragment.lstrip().startswith(f'<tr id="visit-{d7.pk}"')
    assert "Done" in fragment
    assert "out of window" in fragment
    d7.refresh_from_db()
    assert d7.actual_date == dt.date(2025, 2, 20)
    assert participant_a.deviations.get().category == ProtocolDeviation.Category.VISIT_WINDOW

    # A refusal comes back as the inline form with the service's message
    m3 = participant_a.visits.get(definition__code="m3")
    fragment = _html(
        coordinator_client.post(
            _url("visit_record", m3.pk), {"actual_date": "2025-01-01", "version": m3.version}, HTTP_HX_REQUEST="true"
        )
    )
    assert "is before the infusion on 2025-02-03" in fragment
    assert "<form" in fragment


# ---------------------------------------------------------------------------------------------
# Access: 404 outside the user's sites, 403 for read-only roles, login for anonymous users
# ---------------------------------------------------------------------------------------------


def _write_pages(participant: Participant) -> list[tuple[str, dict]]:
    visit = participant.visits.get(definition__code="d7")
    document = participant.study.consent_documents.get()
    return [
        (_url("consent_record", participant.pk), {"document": document.pk, "consent_date": "2025-01-06"}),
        (_url("eligibility_record", participant.pk), {}),
        (_url("screen_failure", participant.pk), {"reason": "x"}),
        (_url("participant_enrol", participant.pk), {"enrolment_date": "2025-01-13"}),
        (_url("infusion_record", participant.pk), _infusion_post()),
        (
            _url("infusion_correct", participant.infusions.get().pk),
            {**_infusion_post(), "reason": "x", "version": participant.infusions.get().version},
        ),
        (_url("visit_add", participant.pk), {"kind": "safety", "actual_date": "2025-03-01", "reason": "x"}),
        (_url("relapse_record", participant.pk), {"onset_date": "2025-02-20"}),
        (
            _url("rescue_therapy_record", participant.pk),
            {"category": "corticosteroid", "agent": "prednisolone", "start_date": "2025-02-20", "reason": "x"},
        ),
        (
            _url("insulin_dose_record", participant.pk),
            {"effective_date": "2025-02-20", "total_daily_units": "20", "source": "diary"},
        ),
        (
            _url("disposition_record", participant.pk),
            {"kind": "withdrawn", "disposition_date": "2025-03-01", "reason": "x"},
        ),
        (_url("visit_record", visit.pk), {"actual_date": "2025-02-10", "version": visit.version}),
        (_url("visit_missed", visit.pk), {"missed_reason": "x"}),
        (_url("assessment_record", visit.pk), {"edss": "2.0"}),
        (_url("mri_record", visit.pk), {"scan_date": "2025-02-10", "new_or_enlarging_t2": "0", "gd_enhancing": "0"}),
        (_url("mmtt_record", visit.pk), {"unit": "nmol/L", "c_peptide_0": "0.2", "c_peptide_30": "0.3"}),
    ]


def test_a_coordinator_of_another_site_gets_404_on_every_page_of_the_participant(
    client, participant_a, coordinator_site_b
):
    client.force_login(coordinator_site_b)
    visit = participant_a.visits.get(definition__code="d7")
    before = _row_counts()
    assert client.get(_url("participant_detail", participant_a.pk)).status_code == 404
    assert client.get(_url("visit_row", visit.pk)).status_code == 404
    for url, data in _write_pages(participant_a):
        assert client.get(url).status_code == 404, url
        assert client.post(url, data).status_code == 404, url
    assert _row_counts() == before
    # ... and the list does not show it
    page = _html(client.get(_url("participant_list", participant_a.study.code)))
    assert _url("participant_detail", participant_a.pk) not in page
    assert "No participant matches these filters." in page


def test_a_monitor_reads_but_gets_403_on_every_write_page(client, participant_a, monitor):
    client.force_login(monitor)
    before = _row_counts()
    assert client.get(_url("participant_list", participant_a.study.code)).status_code == 200
    page = _html(client.get(_url("participant_detail", participant_a.pk)))
    assert participant_a.subject_code in page
    assert "Record infusion" not in page
    assert "Add visit" not in page
    assert ">Record</a>" not in page
    assert "Monitor (CRA)" in page  # the header says who is looking
    for url, data in _write_pages(participant_a):
        assert client.get(url).status_code == 403, url
        assert client.post(url, data).status_code == 403, url
    screen_url = _url("participant_screen", participant_a.study.code)
    assert client.get(screen_url).status_code == 403
    assert client.post(screen_url, {"site": participant_a.site_id, "sex": "F", "birth_year": "1980"}).status_code == 403
    assert _row_counts() == before


def test_a_user_without_a_role_in_the_study_gets_404(client, participant_a, outsider):
    client.force_login(outsider)
    assert client.get(_url("participant_list", participant_a.study.code)).status_code == 404
    assert client.get(_url("participant_detail", participant_a.pk)).status_code == 404
    assert "no role in any study" in _html(client.get("/"))


@pytest.mark.parametrize("name", ["home", "participant_list", "participant_detail", "infusion_record", "visit_record"])
def test_anonymous_users_are_sent_to_the_login_page(client, participant_a, name):
    args = {
        "home": [],
        "participant_list": [participant_a.study.code],
        "participant_detail": [participant_a.pk],
        "infusion_record": [participant_a.pk],
        "visit_record": [participant_a.visits.first().pk],
    }[name]
    url = _url(name, *args)
    response = client.get(url)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={url}"


def test_the_login_page_renders_and_logs_in(client, coordinator_site_a, study):
    page = _html(client.get(reverse("login")))
    assert "Log in" in page
    assert "/static/vendor/pico/pico.min.css" in page
    response = client.post(reverse("login"), {"username": "coord_a", "password": "correct-horse-battery"}, follow=True)
    assert response.redirect_chain[-1][0] == _url("participant_list", study.code)
    assert "Site coordinator · S01 Royal Infirmary" in _html(response)


def test_the_vendored_assets_are_served_without_a_cdn(client, coordinator_site_a, study):
    client.force_login(coordinator_site_a)
    page = _html(client.get(_url("participant_list", study.code)))
    assert "/static/vendor/htmx/htmx.min.js" in page
    assert "https://" not in page


# ---------------------------------------------------------------------------------------------
# Query counts do not grow with the data (docs/style.md §16)
# ---------------------------------------------------------------------------------------------


def _queries(django_assert_max_num_queries, client, url) -> int:
    with django_assert_max_num_queries(100) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


def test_the_participant_list_costs_the_same_queries_for_more_participants(
    coordinator_client, study, sites, coordinator_site_a, django_assert_max_num_queries
):
    url = _url("participant_list", study.code)
    enrolled(study, sites[0], coordinator_site_a)
    few = _queries(django_assert_max_num_queries, coordinator_client, url)
    for _ in range(4):
        enrolled(study, sites[0], coordinator_site_a)
    assert _queries(django_assert_max_num_queries, coordinator_client, url) == few


def test_the_participant_page_costs_the_same_queries_with_more_visits_recorded(
    coordinator_client, participant_a, coordinator_site_a, django_assert_max_num_queries
):
    url = _url("participant_detail", participant_a.pk)
    before = _queries(django_assert_max_num_queries, coordinator_client, url)
    for code, day in (("d7", "2025-02-10"), ("d28", "2025-03-03")):
        visit = participant_a.visits.get(definition__code=code)
        services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date.fromisoformat(day))
    assert _queries(django_assert_max_num_queries, coordinator_client, url) == before
