"""Fixtures shared by the casebook service, selector and audit tests."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.factories import build_study
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
    ProtocolDeviation,
    Relapse,
    RescueTherapy,
    Visit,
)

# 12:00 UTC, so clinical_today() (now + 14 h) is the next calendar day: 2025-06-02.
FROZEN_NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
CLINICAL_TODAY = dt.date(2025, 6, 2)

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


@pytest.fixture
def frozen_now(time_machine):
    """Pin the clock at FROZEN_NOW (no ticking) for rules that compare against today."""
    time_machine.move_to(FROZEN_NOW, tick=False)
    return FROZEN_NOW


@pytest.fixture
def row_counts(db):
    """A callable snapshot of every casebook table and its audit-event table: a refused write must
    leave both unchanged."""

    def snapshot() -> dict[str, int]:
        counts = {}
        for model in CASEBOOK_MODELS:
            counts[model.__name__] = model.objects.count()
            counts[f"{model.__name__} events"] = model.pgh_event_model.objects.count()
        return counts

    return snapshot


@pytest.fixture
def t1d_study(sites):
    return build_study(code="TREG-T1D-01", indication=Indication.T1D, sites=list(sites))


@pytest.fixture
def ra_study(sites):
    return build_study(code="TREG-RA-01", indication=Indication.RA, sites=list(sites))
