"""The database itself protects the audit trail: the app role cannot alter or remove audit events
or delete clinical rows, and any tampering by the owner is detected by the hash chain."""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from tests.factories import consented
from trials.audit import audit_context, audit_verify
from trials.models import AuditSeal, Participant

APP_ROLE = "tolerance_app"


def _as_app_role(statement: str, params=None) -> None:
    """Run one statement as the application role inside a savepoint (rolled back on error)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {APP_ROLE}")
        cursor.execute(statement, params)


def _as_owner_bypassing_triggers(statement: str, params=None) -> None:
    """What a table owner or superuser could do: disable triggers (pghistory's protect included)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(statement, params)


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    return consented(study, sites[0], coordinator_site_a)


def test_the_app_role_cannot_update_delete_or_truncate_audit_events(participant):
    event_table = Participant.pgh_event_model._meta.db_table
    for statement in (
        f"UPDATE {event_table} SET sex = 'M'",
        f"DELETE FROM {event_table}",
        f"TRUNCATE {event_table}",
        "UPDATE trials_auditseal SET hash = 'x'",
        "DELETE FROM trials_auditseal",
        "INSERT INTO trials_auditseal (seq, event_table, event_id, prev_hash, hash, sealed_at) "
        "VALUES (999, 'x', 1, '', '', now())",
    ):
        with pytest.raises(ProgrammingError, match="permission denied"):
            _as_app_role(statement)
    assert Participant.pgh_event_model.objects.filter(pgh_obj_id=participant.pk).count() == 1


def test_the_app_role_cannot_hard_delete_clinical_records(participant):
    for table in ("trials_participant", "trials_consent", "trials_study", "trials_site"):
        with pytest.raises(ProgrammingError, match="permission denied"):
            _as_app_role(f"DELETE FROM {table}")
    assert Participant.objects.filter(pk=participant.pk).exists()


def test_the_app_role_can_do_its_normal_work(participant, coordinator_site_a):
    """Reading and writing clinical rows, and the audit events and seals they produce, work."""
    seals_before = AuditSeal.objects.count()
    with (
        transaction.atomic(),
        audit_context(actor=coordinator_site_a, reason="year of birth corrected"),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"SET LOCAL ROLE {APP_ROLE}")
        cursor.execute("UPDATE trials_participant SET birth_year = 1986 WHERE id = %s", [participant.pk])
        cursor.execute("SELECT count(*) FROM trials_auditseal")
        assert cursor.fetchone()[0] == seals_before + 1  # the update was sealed by the trigger
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == APP_ROLE
    participant.refresh_from_db()
    assert participant.birth_year == 1986
    assert audit_verify()[1] == []


def test_an_intact_chain_verifies(participant):
    checked, problems = audit_verify()
    assert problems == []
    assert checked == AuditSeal.objects.count() > 0
    call_command("verify_audit")  # exits 0


def test_an_event_altered_by_the_owner_is_detected(participant):
    event = Participant.pgh_event_model.objects.get(pgh_obj_id=participant.pk)
    _as_owner_bypassing_triggers(
        f"UPDATE {event._meta.db_table} SET birth_year = 1950 WHERE pgh_id = %s", [event.pgh_id]
    )
    _, problems = audit_verify()
    assert problems == [
        f"link #{_seal_of(event).seq}: event {event._meta.db_table}:{event.pgh_id} was altered after sealing"
    ]
    with pytest.raises(CommandError, match="FAILED: 1 problem"):
        call_command("verify_audit")


def test_a_deleted_event_and_an_unsealed_event_are_detected(participant):
    event = Participant.pgh_event_model.objects.get(pgh_obj_id=participant.pk)
    table = event._meta.db_table
    columns = ", ".join(f.column for f in event._meta.concrete_fields if f.column != "pgh_id")
    # A forged copy written with the triggers bypassed, then the genuine event removed.
    _as_owner_bypassing_triggers(
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} WHERE pgh_id = %s", [event.pgh_id]
    )
    _as_owner_bypassing_triggers(f"DELETE FROM {table} WHERE pgh_id = %s", [event.pgh_id])
    _, problems = audit_verify()
    assert any("is missing (deleted)" in p and f"{table}:{event.pgh_id}" in p for p in problems)
    assert any("has no seal" in p for p in problems)


def test_a_cut_chain_is_detected(participant):
    first = AuditSeal.objects.order_by("seq").first()
    _as_owner_bypassing_triggers("DELETE FROM trials_auditseal WHERE id = %s", [first.pk])
    _, problems = audit_verify()
    assert any(p.startswith("chain gap") for p in problems)
    assert any("has no seal" in p for p in problems)


def _seal_of(event):
    return AuditSeal.objects.get(event_table=event._meta.db_table, event_id=event.pgh_id)


def test_connections_switch_to_the_app_role_inside_a_request_audit_context(
    settings, monkeypatch, participant, coordinator_site_a
):
    """A connection opened during a request is opened inside pghistory's context, whose statement
    hook reads each SQL statement as text (it failed on a psycopg ``Composed`` before)."""
    from trials import dbroles
    from trials.dbroles import assume_app_role

    settings.TOLERANCE_DB_ASSUME_APP_ROLE = True
    monkeypatch.setattr(dbroles, "_owner_mode", False)  # the test database was migrated in this process
    connection.force_debug_cursor = True
    try:
        with transaction.atomic(), audit_context(actor=coordinator_site_a, reason="request"):
            assume_app_role(sender=None, connection=connection)
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_user")
                assert cursor.fetchone()[0] == APP_ROLE
                cursor.execute("RESET ROLE")
    finally:
        connection.force_debug_cursor = False
