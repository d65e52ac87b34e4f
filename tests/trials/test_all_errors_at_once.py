"""A refused form shows every problem at once: the services collect them before raising, and the
page answers 200 with each message on its field and saves nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils.html import escape

from tests.factories import build_study, enrolled, infused, infusion_kwargs, member
from trials import services
from trials.errors import RuleViolation
from trials.models import DiseaseAssessment, Indication, Infusion, Participant, Role

DAY0 = dt.datetime(2025, 2, 3, 9, 0, tzinfo=dt.UTC)

INFUSION_PROBLEMS = {
    "viability_pct": ["Viability must be between 0 and 100 %."],
    "weight_kg": ["Weight used for dosing must be between 20 and 250 kg."],
    "end_at": ["The infusion cannot end before it starts."],
}


def _bad_infusion(participant) -> dict:
    kwargs = infusion_kwargs(participant, start=DAY0)
    kwargs.update(viability_pct=Decimal("150"), weight_kg=Decimal("900"), end_at=DAY0 - dt.timedelta(minutes=10))
    return kwargs


def test_the_infusion_service_reports_viability_weight_and_times_together(study, sites, coordinator_site_a, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.infusion_record(actor=coordinator_site_a, participant=participant, **_bad_infusion(participant))

    assert exc.value.message_dict == INFUSION_PROBLEMS
    assert row_counts() == before


def test_the_infusion_page_shows_every_error_at_once_and_saves_nothing(client, study, sites, coordinator_site_a):
    participant = enrolled(study, sites[0], coordinator_site_a)
    client.force_login(coordinator_site_a)
    data = {
        "manufacturing_lot": "LOT-2025-017",
        "apheresis_date": "2025-01-13",
        "release_passed": "on",
        "viability_pct": "150",
        "total_viable_cells": "70000000",
        "weight_kg": "900",
        "time_zone": "UTC",
        "start_at": "2025-02-03T09:00",
        "end_at": "2025-02-03T08:50",
    }

    response = client.post(f"/participants/{participant.pk}/infusion/", data)

    assert response.status_code == 200
    page = response.content.decode()
    for messages in INFUSION_PROBLEMS.values():
        assert escape(messages[0]) in page
    assert not Infusion.objects.exists()


@pytest.fixture
def ra_visit(sites):
    study = build_study(code="TREG-RA-01", indication=Indication.RA, sites=list(sites))
    user = member("coord_ra", study, Role.COORDINATOR, sites[0])
    participant = infused(study, sites[0], user)
    visit = participant.visits.get(definition__code="d28")
    return services.visit_record(actor=user, visit=visit, actual_date=dt.date(2025, 3, 3)), user


RA_VALUES = {
    "tender_joints_28": 30,
    "swollen_joints_28": 40,
    "crp": Decimal("12.5"),
    "crp_unit": "mg/%",
    "esr_mm_h": 30,
    "patient_global_mm": 55,
    "evaluator_global_mm": 40,
}
RA_PROBLEMS = {
    "tender_joints_28": ["Tender joint count (of 28) must be between 0 and 28; 30 is outside that range."],
    "swollen_joints_28": ["Swollen joint count (of 28) must be between 0 and 28; 40 is outside that range."],
    "crp_unit": ["Unknown unit 'mg/%'."],
}


def test_the_ra_assessment_reports_the_unit_and_both_joint_counts_together(ra_visit):
    visit, user = ra_visit

    with pytest.raises(RuleViolation) as exc:
        services.assessment_record(actor=user, visit=visit, values=RA_VALUES)

    assert exc.value.message_dict == RA_PROBLEMS
    assert not DiseaseAssessment.objects.exists()


def test_the_ra_assessment_page_shows_every_error_at_once(client, ra_visit):
    visit, user = ra_visit
    client.force_login(user)
    data = {key: str(value) for key, value in RA_VALUES.items()} | {"crp_unit": "mg/dL", "crp": "99"}

    response = client.post(f"/visits/{visit.pk}/assessment/", data)

    assert response.status_code == 200
    page = response.content.decode()
    assert escape("Tender joint count (of 28) must be between 0 and 28; 30 is outside that range.") in page
    assert escape("Swollen joint count (of 28) must be between 0 and 28; 40 is outside that range.") in page
    assert escape("CRP (mg/dL) must be between 0 and 50; 99 is outside that range.") in page
    assert not DiseaseAssessment.objects.exists()


def test_screening_reports_the_date_and_the_age_together(study, sites, coordinator_site_a, frozen_now, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.participant_screen(
            actor=coordinator_site_a,
            study=study,
            site=sites[0],
            sex="F",
            birth_year=2020,
            screening_date=dt.date(2025, 6, 30),
        )

    assert set(exc.value.message_dict) == {"screening_date", "birth_year"}
    assert row_counts() == before


def test_the_screening_page_shows_every_error_at_once(client, study, sites, coordinator_site_a):
    client.force_login(coordinator_site_a)

    response = client.post(
        f"/studies/{study.code}/participants/screen/",
        {"site": sites[0].pk, "sex": "F", "birth_year": "2020", "screening_date": "1928-01-01"},
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "is before the study started" in page
    assert "the protocol needs 18 or older" not in page  # born 2020: not yet born in 1928
    assert "Year of birth 2020 is after the screening date." in page
    assert not Participant.objects.exists()


def test_a_disposition_reports_every_problem_at_once(study, sites, coordinator_site_a, row_counts):
    participant = infused(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.disposition_record(
            actor=coordinator_site_a,
            participant=participant,
            kind="withdrawn",
            disposition_date=dt.date(2025, 1, 1),
            reason="",
            death_date=dt.date(2025, 1, 1),
        )

    assert set(exc.value.message_dict) == {"disposition_date", "reason", "death_date"}
    assert row_counts() == before
