"""A record's history and a study's audit export: field, old -> new, who, when (UTC), why."""

import datetime as dt
import json

from tests.factories import admin_change, build_study, enrolled, infused, member
from trials import services
from trials.audit import record_history
from trials.audit_export import study_audit_rows
from trials.models import RandomizationSlot, Role, Visit


def test_a_record_history_shows_each_change_with_who_when_and_why(study, sites, coordinator_site_a):
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
    history = record_history(Visit.objects.get(pk=visit.pk))
    changes = [(row["field"], row["old"], row["new"]) for row in history if row["field"] == "actual_date"]
    assert changes == [("actual_date", "", "2025-02-10"), ("actual_date", "2025-02-10", "2025-02-11")]
    correction = history[-1]
    assert correction["user"] == "coord_a"
    assert correction["user_id"] == coordinator_site_a.pk
    assert correction["reason"] == "source document says the 11th"
    assert correction["at"].utcoffset() == dt.timedelta(0)


def test_the_study_export_covers_the_casebook_and_only_this_study(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    other = build_study(code="OTHER-STUDY", sites=list(sites))
    coordinator_other = member("coord_other", other, Role.COORDINATOR, sites[0])
    other_participant = enrolled(other, sites[0], coordinator_other)
    rows = list(study_audit_rows(study, unblinded=False))
    models = {row["model"] for row in rows}
    assert {"trials.participant", "trials.infusion", "trials.visit", "trials.consent", "trials.study"} <= models
    participant_ids = {int(row["object_id"]) for row in rows if row["model"] == "trials.participant"}
    assert participant_ids == {participant.pk}
    assert other_participant.pk not in participant_ids


def test_blinded_exports_never_contain_the_allocation(sites):
    study = build_study(code="BLIND-EXPORT", sites=list(sites))
    with admin_change("randomized, blinded design"):
        study.is_blinded = True
        study.save()
    cohort = study.cohorts.get(number=1)
    RandomizationSlot.objects.create(study=study, cohort=cohort, sequence=1, arm="ARM-ZX81Q")
    coordinator = member("coord_blind", study, Role.COORDINATOR, sites[0])
    enrolled(study, sites[0], coordinator)
    blinded = list(study_audit_rows(study, unblinded=False))
    assert blinded
    assert not any("ARM-ZX81Q" in str(value) for row in blinded for value in row.values())
    unblinded = list(study_audit_rows(study, unblinded=True))
    assert any(json.loads(row["new"]).get("arm") == "ARM-ZX81Q" for row in unblinded)
