"""The audit trail: every write through a service leaves a pghistory event that says who acted,
through which channel and, for an edit, why; old and new values can be read back; writes that
bypass the services (a bulk ``update()``) are captured by the database triggers all the same."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection
from pghistory.models import Events

from tests.factories import consented, infused
from trials import services
from trials.audit import audit_context
from trials.errors import RuleViolation
from trials.models import EligibilityAnswer, Infusion, Participant, Visit

ParticipantEvent = Participant.pgh_event_model
VisitEvent = Visit.pgh_event_model


def _events(obj, label=None):
    qs = Events.objects.tracks(obj).order_by("pgh_created_at", "pgh_id")
    return list(qs.filter(pgh_label=label) if label else qs)


def test_screening_leaves_an_insert_event_with_the_actor_and_the_channel(study, sites, coordinator_site_a):
    participant = services.participant_screen(
        actor=coordinator_site_a,
        study=study,
        site=sites[0],
        sex="M",
        birth_year=1979,
        screening_date=dt.date(2025, 1, 6),
        channel="api",
    )

    event = ParticipantEvent.objects.get(pgh_obj=participant, pgh_label="insert")
    assert event.subject_code == "S01-0001"
    assert event.birth_year == 1979
    assert event.pgh_context.metadata["user"] == coordinator_site_a.pk
    assert event.pgh_context.metadata["username"] == "coord_a"
    assert event.pgh_context.metadata["channel"] == "api"


def test_the_aggregated_event_view_shows_the_same_context(study, sites, coordinator_site_a):
    participant = consented(study, sites[0], coordinator_site_a)
    consent = participant.consents.get()

    (insert,) = _events(consent)

    assert insert.pgh_label == "insert"
    assert insert.pgh_data["consent_date"] == "2025-01-06"
    assert insert.pgh_context["user"] == coordinator_site_a.pk
    assert insert.pgh_context["channel"] == "web"


def test_an_edit_with_a_reason_records_the_reason_and_the_old_and_new_values(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    visit = participant.visits.get(definition__code="d28")
    visit = services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 3, 3))

    services.visit_record(
        actor=coordinator_site_a,
        visit=visit,
        actual_date=dt.date(2025, 3, 4),
        weight_kg=Decimal("70.5"),
        reason="Transcription error",
        expected_version=2,
        channel="api",
    )

    edit = _events(visit, "update")[-1]
    assert edit.pgh_context["reason"] == "Transcription error"
    assert edit.pgh_context["user"] == coordinator_site_a.pk
    assert edit.pgh_context["channel"] == "api"
    assert edit.pgh_diff["actual_date"] == ["2025-03-03", "2025-03-04"]
    assert edit.pgh_diff["weight_kg"] == [None, 70.5]
    assert edit.pgh_diff["version"] == [2, 3]


def test_a_changed_eligibility_answer_records_its_reason_and_values(study, sites, coordinator_site_a):
    participant = consented(study, sites[0], coordinator_site_a)
    exclusion = study.criteria.get(kind="exclusion")
    services.eligibility_record(actor=coordinator_site_a, participant=participant, answers={exclusion.pk: False})

    services.eligibility_record(
        actor=coordinator_site_a, participant=participant, answers={exclusion.pk: True}, reason="Positive serology"
    )

    answer = EligibilityAnswer.objects.get(participant=participant, criterion=exclusion)
    insert, update = _events(answer)
    assert (insert.pgh_label, update.pgh_label) == ("insert", "update")
    assert insert.pgh_context["reason"] == ""
    assert update.pgh_context["reason"] == "Positive serology"
    assert update.pgh_diff["answer"] == [False, True]


def test_a_status_change_carries_the_action_as_its_reason(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)

    services.disposition_record(
        actor=coordinator_site_a,
        participant=participant,
        kind="withdrawn",
        disposition_date=dt.date(2025, 3, 10),
        reason="Moved abroad",
    )

    updates = _events(participant, "update")
    assert [(e.pgh_diff["status"], e.pgh_context["reason"]) for e in updates] == [
        (["screening", "enrolled"], "enrolment"),
        (["enrolled", "in_follow_up"], "infusion recorded"),
        (["in_follow_up", "withdrawn"], "disposition: withdrawn"),
    ]


def test_the_schedule_written_in_bulk_carries_the_infusion_context(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)

    inserts = VisitEvent.objects.filter(pgh_obj__participant=participant, pgh_label="insert").select_related(
        "pgh_context"
    )
    infusion_event = Infusion.pgh_event_model.objects.get(pgh_obj__participant=participant, pgh_label="insert")
    assert inserts.count() == 7
    assert {e.pgh_context_id for e in inserts} == {infusion_event.pgh_context_id}
    assert infusion_event.pgh_context.metadata["user"] == coordinator_site_a.pk


# Transactional: pghistory keeps its context in a transaction-local setting, so inside the usual
# test transaction the last service call's context would still be set when the update runs.
@pytest.mark.django_db(transaction=True)
def test_a_bulk_update_without_who_and_why_is_refused_by_the_database(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    before = VisitEvent.objects.filter(pgh_label="update").count()

    with pytest.raises(IntegrityError, match="must name the acting user"):
        Visit.objects.filter(participant=participant).update(weight_kg=Decimal("68.0"))

    assert VisitEvent.objects.filter(pgh_label="update").count() == before
    assert not participant.visits.filter(weight_kg=Decimal("68.0")).exists()


@pytest.mark.django_db(transaction=True)
def test_an_update_without_a_reason_is_refused_by_the_database(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    with pytest.raises(IntegrityError, match="must give a reason"), audit_context(actor=coordinator_site_a):
        Participant.objects.filter(pk=participant.pk).update(birth_year=1990)
    participant.refresh_from_db()
    assert participant.birth_year == 1985


@pytest.mark.django_db(transaction=True)
def test_a_raw_sql_update_outside_the_app_is_refused_by_the_database(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    with pytest.raises(IntegrityError, match="must name the acting user"), connection.cursor() as cursor:
        cursor.execute("UPDATE trials_participant SET birth_year = 1990 WHERE id = %s", [participant.pk])
    participant.refresh_from_db()
    assert participant.birth_year == 1985


def test_a_bulk_update_inside_an_audit_context_names_the_actor(study, sites, coordinator_site_a, data_manager):
    participant = infused(study, sites[0], coordinator_site_a)

    with audit_context(actor=data_manager, reason="Data correction DCF-12", channel="command"):
        Visit.objects.filter(participant=participant, definition__code="d7").update(weight_kg=Decimal("69.0"))

    (event,) = _events(participant.visits.get(definition__code="d7"), "update")
    assert event.pgh_context == {
        "user": data_manager.pk,
        "username": "dm",
        "reason": "Data correction DCF-12",
        "channel": "command",
    }
    assert event.pgh_diff["weight_kg"] == [None, 69.0]


def test_a_refused_write_leaves_no_event(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    visit = participant.visits.get(definition__code="d28")
    visit = services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 3, 3))
    count = VisitEvent.objects.count()

    with pytest.raises(RuleViolation):
        services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 3, 4), reason="")

    assert VisitEvent.objects.count() == count
    assert [e.pgh_label for e in _events(visit)] == ["insert", "update"]
