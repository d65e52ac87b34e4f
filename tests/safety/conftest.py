"""Fixtures for the safety tests that need the database: the CTCAE subset, the safety personas, an
infused participant at site A, a pinned clock, and a snapshot of every safety table (a refused write
must leave rows and audit events unchanged)."""

from __future__ import annotations

import datetime as dt

import pytest

from safety.dictionaries import ctcae_load_shipped
from safety.models import (
    AdverseEvent,
    CRSAssessment,
    CTCAETerm,
    DLTAdjudication,
    DLTDefinition,
    ExpeditedReport,
    ICANSAssessment,
    Notification,
    Outcome,
    SAECase,
    SAECaseVersion,
)
from tests.factories import infused, member
from trials.models import Role

# Day 0: the factories infuse on 2025-02-03 09:00 UTC; consent is 2025-01-06.
INFUSION_DAY = dt.date(2025, 2, 3)
NOW = dt.datetime(2025, 3, 3, 10, 0, tzinfo=dt.UTC)

SAFETY_MODELS = (
    AdverseEvent,
    CRSAssessment,
    ICANSAssessment,
    SAECase,
    SAECaseVersion,
    ExpeditedReport,
    DLTDefinition,
    DLTAdjudication,
)


@pytest.fixture
def now(time_machine):
    """Pin the clock (no ticking) at NOW, a month after the infusion."""
    time_machine.move_to(NOW, tick=False)
    return NOW


@pytest.fixture
def ctcae(db) -> dict[str, CTCAETerm]:
    ctcae_load_shipped()
    return {term.term: term for term in CTCAETerm.objects.filter(version="5.0")}


@pytest.fixture
def medical_monitor(study):
    user = member("medmon", study, Role.MEDICAL_MONITOR)
    user.email = "medmon@sponsor.example"
    user.first_name, user.last_name = "Mara", "Monitor"
    user.save()
    return user


@pytest.fixture
def participant(study, sites, coordinator_site_a, now):
    return infused(study, sites[0], coordinator_site_a)


@pytest.fixture
def safety_counts(db):
    def snapshot() -> dict[str, int]:
        counts = {"Notification": Notification.objects.count()}
        for model in SAFETY_MODELS:
            counts[model.__name__] = model.objects.count()
            counts[f"{model.__name__} events"] = model.pgh_event_model.objects.count()
        return counts

    return snapshot


def ae_kwargs(ctcae: dict[str, CTCAETerm], **overrides) -> dict:
    """A consistent, non-serious grade 1 headache a week after the infusion."""
    values = {
        "verbatim_term": "Headache",
        "ctcae_term": ctcae["Headache"],
        "grade": 1,
        "onset": "2025-02-10",
        "end": "2025-02-11",
        "outcome": Outcome.RECOVERED,
        "action_taken": "NOT APPLICABLE",
        "causality_product": "unlikely",
    }
    values.update(overrides)
    return values


def serious_kwargs(ctcae: dict[str, CTCAETerm], **overrides) -> dict:
    """A grade 3 CRS needing hospitalisation, ongoing, related to the product."""
    values = ae_kwargs(
        ctcae,
        verbatim_term="Cytokine release syndrome",
        ctcae_term=ctcae["Cytokine release syndrome"],
        category="CRS",
        grade=3,
        onset="2025-03-01",
        end="",
        ongoing=True,
        outcome=Outcome.RECOVERING,
        serious=True,
        hospitalisation=True,
        site_aware_at=dt.datetime(2025, 3, 2, 8, 30, tzinfo=dt.UTC),
        causality_product="probably",
        treatment_given=True,
        treatment_details="Tocilizumab 8 mg/kg IV",
    )
    values.update(overrides)
    return values
