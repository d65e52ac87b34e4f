"""The study audit export: every audited table of every app, only this study's events, one line per
event with its changed fields, streamed in blocks."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import Counter
from decimal import Decimal

import pytest

from analytics import services as analytics_services
from safety import services as safety_services
from safety.models import ReferenceSafetyInformation, StudySafetyProfile
from tests.factories import admin_change, build_study, enrolled, infused, member
from tests.safety import conftest as safety_fixtures
from tests.safety.conftest import ae_kwargs, serious_kwargs
from trials import audit_export, services
from trials.audit import scope_filter
from trials.audit_export import COLUMNS, study_audit_csv, study_audit_rows
from trials.dbroles import event_models
from trials.models import (
    Disposition,
    EmergencyUnblinding,
    InsulinDoseChange,
    MMTTSample,
    ProtocolDeviation,
    RandomizationSlot,
    Relapse,
    RescueTherapy,
    Role,
)

PASSWORD = "correct-horse-battery"
ASSESSED = dt.datetime(2025, 3, 1, 22, 0, tzinfo=dt.UTC)

ctcae = safety_fixtures.ctcae  # the CTCAE subset, as in the safety tests


@pytest.fixture
def full_study(study, sites, coordinator_site_a, ctcae, time_machine):
    """A study with at least one row in every audited table: the casebook through the services, the
    safety chain (AE, SAE case, report to the sponsor, CRS and ICANS grading, DLT), the analytics
    set-up, and the records no service of this study's indication writes, made directly."""
    time_machine.move_to(dt.datetime(2025, 3, 3, 10, tzinfo=dt.UTC), tick=False)
    participant = infused(study, sites[0], coordinator_site_a)
    visit = participant.visits.get(definition__code="d28")
    services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=visit.planned_date)
    visit.refresh_from_db()
    services.assessment_record(actor=coordinator_site_a, visit=visit, values={"edss": Decimal("2.5")})
    services.mri_record(
        actor=coordinator_site_a, visit=visit, scan_date=visit.planned_date, new_or_enlarging_t2=0, gd_enhancing=0
    )
    crs = safety_services.adverse_event_record(
        actor=coordinator_site_a, participant=participant, **serious_kwargs(ctcae)
    )
    safety_services.crs_assessment_record(
        actor=coordinator_site_a, adverse_event=crs, assessed_at=ASSESSED, max_temperature_c=Decimal("39.2")
    )
    safety_services.sae_report_to_sponsor(actor=coordinator_site_a, case=crs.sae_case, narrative="Fever on day 26.")
    icans = safety_services.adverse_event_record(
        actor=coordinator_site_a,
        participant=participant,
        **ae_kwargs(
            ctcae,
            category="ICANS",
            verbatim_term="Confusion",
            ctcae_term=ctcae["Encephalopathy"],
            onset="2025-03-01",
            end="",
            ongoing=True,
            outcome="RECOVERING/RESOLVING",
        ),
    )
    safety_services.icans_assessment_record(
        actor=coordinator_site_a,
        adverse_event=icans,
        assessed_at=ASSESSED,
        age_years=40,
        consciousness="awakens_spontaneously",
    )
    data_manager = member("dm_full", study, Role.DATA_MANAGER)
    medical_monitor = member("mm_full", study, Role.MEDICAL_MONITOR)
    statistician = member("stats_full", study, Role.STATISTICIAN)
    safety_services.dlt_definition_create(
        actor=data_manager, study=study, config={}, effective_from=dt.date(2024, 12, 1), reason="Protocol v1.0"
    )
    safety_services.dlt_adjudicate(
        actor=medical_monitor,
        participant=participant,
        evaluable=True,
        is_dlt=False,
        rationale="No DLT in the window.",
        password=PASSWORD,
    )
    analytics_services.remission_definition_set(
        actor=statistician,
        study=study,
        name="NEDA-3",
        rule="neda3",
        parameters={},
        sap={"non_responders": "censor"},
        reason="SAP v1",
    )
    analytics_services.datacut_create(actor=statistician, study=study, cut_date=dt.date(2025, 3, 1))
    with admin_change("records this indication's services do not write"):
        StudySafetyProfile.objects.create(study=study)
        ReferenceSafetyInformation.objects.create(
            study=study, version="IB 1", effective_from=dt.date(2024, 1, 1), expected_terms={"Headache": 2}
        )
        RandomizationSlot.objects.create(study=study, cohort=participant.cohort, sequence=1, arm="ARM-ZX81Q")
        EmergencyUnblinding.objects.create(participant=participant, user=data_manager, reason="test")
        ProtocolDeviation.objects.create(
            participant=participant, category="other", description="test", detected_on=dt.date(2025, 3, 1)
        )
        MMTTSample.objects.create(visit=visit, minute=0, c_peptide=Decimal("0.2"), unit="nmol/L")
        Relapse.objects.create(participant=participant, onset_date=dt.date(2025, 3, 1))
        RescueTherapy.objects.create(
            participant=participant,
            start_date=dt.date(2025, 3, 1),
            category="corticosteroid",
            agent="methylprednisolone",
            reason="relapse",
        )
        InsulinDoseChange.objects.create(
            participant=participant, effective_date=dt.date(2025, 3, 1), total_daily_units=Decimal("10"), source="diary"
        )
        Disposition.objects.create(participant=participant, kind="completed", disposition_date=dt.date(2025, 3, 2))
    return participant


@pytest.fixture
def other_study(sites):
    other = build_study(code="OTHER-STUDY", sites=list(sites))
    coordinator = member("coord_other", other, Role.COORDINATOR, sites[0])
    return enrolled(other, sites[0], coordinator)


def _lines_per_model(study, *, unblinded: bool) -> Counter:
    return Counter(row["model"] for row in study_audit_rows(study, unblinded=unblinded))


def test_every_audited_table_of_every_app_is_in_the_study_export_event_for_event(study, full_study, other_study):
    exported = _lines_per_model(study, unblinded=True)
    checked = []
    for event_model in event_models():
        label = event_model.pgh_tracked_model._meta.label_lower
        filters = scope_filter(event_model, study)
        assert filters is not None, f"{label}: no link to a study; the export cannot place its events"
        expected = event_model.objects.filter(**filters).count()
        assert expected > 0, f"{label}: the test study has no {label} row; add one to full_study"
        assert exported[label] == expected, label
        checked.append(label)
    assert {"safety.saecase", "safety.saecaseversion", "safety.expeditedreport"} <= set(checked)
    assert {"safety.crsassessment", "safety.icansassessment", "analytics.datacut"} <= set(checked)
    assert len(checked) == len(event_models())


def test_the_safety_events_of_sae_cases_are_in_the_export(study, full_study):
    exported = _lines_per_model(study, unblinded=False)
    for label in ("safety.saecase", "safety.saecaseversion", "safety.expeditedreport"):
        assert exported[label] >= 1, label
    assert exported["safety.crsassessment"] >= 1
    assert exported["safety.icansassessment"] >= 1


def test_another_studys_events_stay_out(study, full_study, other_study):
    rows = list(study_audit_rows(study, unblinded=True))

    def ids(model: str) -> set[int]:
        return {int(row["object_id"]) for row in rows if row["model"] == model}

    assert ids("trials.study") == {study.pk}
    assert ids("trials.participant") == {full_study.pk}
    assert other_study.consents.get().pk not in ids("trials.consent")


def test_the_allocation_list_is_only_in_an_unblinded_export(study, full_study):
    blinded = b"".join(study_audit_csv(study, unblinded=False))
    assert b"ARM-ZX81Q" not in blinded
    assert b"trials.randomizationslot" not in blinded
    assert b"ARM-ZX81Q" in b"".join(study_audit_csv(study, unblinded=True))


def test_a_line_lists_the_changed_fields_old_and_new_with_who_and_why(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    visit = participant.visits.get(definition__code="d7")
    services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 2, 10))
    visit.refresh_from_db()
    services.visit_record(
        actor=coordinator_site_a,
        visit=visit,
        actual_date=dt.date(2025, 2, 11),
        reason="source document says the 11th",
        expected_version=visit.version,
    )
    lines = [
        r
        for r in study_audit_rows(study, unblinded=False)
        if r["model"] == "trials.visit" and r["object_id"] == str(visit.pk)
    ]
    created, recorded, corrected = lines
    assert created["action"] == "insert"
    assert created["subject"] == participant.subject_code
    assert created["old"] == ""
    assert "actual_date" not in json.loads(created["new"])  # empty at creation
    assert json.loads(created["new"])["kind"] == "scheduled"
    assert json.loads(created["new"])["planned_date"] == "2025-02-10"
    assert json.loads(recorded["old"]) == {"actual_date": None}
    assert json.loads(recorded["new"])["actual_date"] == "2025-02-10"
    assert json.loads(corrected["old"]) == {"actual_date": "2025-02-10"}
    assert json.loads(corrected["new"]) == {"actual_date": "2025-02-11"}
    assert corrected["reason"] == "source document says the 11th"
    assert (corrected["user"], corrected["user_id"]) == ("coord_a", str(coordinator_site_a.pk))
    assert dt.datetime.fromisoformat(corrected["at"]).utcoffset() == dt.timedelta(0)


def test_the_export_streams_in_blocks_of_whole_lines(study, full_study, monkeypatch):
    monkeypatch.setattr(audit_export, "BLOCK_BYTES", 2048)
    blocks = list(study_audit_csv(study, unblinded=True))
    assert len(blocks) > 3
    assert all(block.endswith(b"\n") for block in blocks)
    header, *rows = csv.reader(io.StringIO(b"".join(blocks).decode()))
    assert header == COLUMNS
    assert len(rows) == sum(_lines_per_model(study, unblinded=True).values())
    assert all(len(row) == len(COLUMNS) for row in rows)
