"""Only the audit triggers write audit events, and the app cannot undo its switch to the app role.

The app role cannot insert an event (a forged, backdated change that would verify and show in the
history as real), rewrite who and why of a past change, or skip the event trigger; the seal refuses a
hand-written event even from a role allowed to insert; the app logs in as its own role, which a
RESET ROLE does not turn into the owner; and ``check --deploy`` warns about a login that could.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from io import StringIO
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import IntegrityError, connection, connections, transaction
from django.db.utils import ProgrammingError
from pghistory.models import Context

from tests.factories import consented
from trials.audit import audit_context, audit_verify, record_history
from trials.checks import login_role_warnings
from trials.models import Participant

APP_ROLE = "tolerance_app"
BACKDATED = "2024-01-01T09:00:00+00:00"


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    return consented(study, sites[0], coordinator_site_a)


@contextmanager
def app_role_cursor():
    """A cursor working as the app role inside a savepoint: an error rolls the savepoint back (and
    the SET LOCAL with it); success resets the role before the savepoint is released."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {APP_ROLE}")
        yield cursor
        cursor.execute("RESET ROLE")


def _forged_copy_sql(event_model, *, created_at: str, context: str = "pgh_context_id") -> str:
    """INSERT a copy of one genuine event (by pgh_id), as an 'update' dated ``created_at`` that sets
    the participant's birth year to 1950, attached to ``context``."""
    table = event_model._meta.db_table
    kept = [
        f.column
        for f in event_model._meta.concrete_fields
        if f.column not in {"pgh_id", "pgh_created_at", "pgh_label", "pgh_context_id", "birth_year"}
    ]
    columns = ", ".join(kept)
    return (
        f"INSERT INTO {table} ({columns}, pgh_created_at, pgh_label, pgh_context_id, birth_year) "  # noqa: S608
        f"SELECT {columns}, '{created_at}', 'update', {context}, 1950 FROM {table} WHERE pgh_id = %s"
    )


def _history_shows_1950(participant) -> bool:
    return any(row["field"] == "birth_year" and row["new"] == "1950" for row in record_history(participant))


def test_a_backdated_event_forged_by_the_app_role_is_refused(participant):
    event_model = Participant.pgh_event_model
    genuine = event_model.objects.get(pgh_obj_id=participant.pk)
    events_before = event_model.objects.count()
    with pytest.raises(ProgrammingError, match="permission denied"), app_role_cursor() as cursor:
        cursor.execute(_forged_copy_sql(event_model, created_at=BACKDATED), [genuine.pgh_id])
    assert event_model.objects.count() == events_before
    assert not _history_shows_1950(participant)
    assert audit_verify()[1] == []


def test_the_app_role_cannot_rewrite_who_and_why_of_a_past_change(participant):
    context = Context.objects.get(pk=Participant.pgh_event_model.objects.get(pgh_obj_id=participant.pk).pgh_context_id)
    for statement in (
        'UPDATE pghistory_context SET metadata = metadata || \'{"reason": "forged"}\'',
        "DELETE FROM pghistory_context",
        "INSERT INTO pghistory_context (id, metadata, created_at, updated_at) "
        "VALUES (gen_random_uuid(), '{}', now(), now())",
    ):
        with pytest.raises(ProgrammingError, match="permission denied"), app_role_cursor() as cursor:
            cursor.execute(statement)
    context.refresh_from_db()
    assert "forged" not in str(context.metadata)


def test_the_app_roles_own_changes_are_still_audited_sealed_and_attributed(participant, coordinator_site_a):
    """The triggers write events and contexts with their owner's rights: the app's normal work is
    unchanged although it may no longer write either table itself."""
    event_model = Participant.pgh_event_model
    with (
        audit_context(actor=coordinator_site_a, reason="birth year from the source document"),
        app_role_cursor() as cursor,
    ):
        cursor.execute("UPDATE trials_participant SET birth_year = 1987 WHERE id = %s", [participant.pk])
    latest = event_model.objects.filter(pgh_obj_id=participant.pk).select_related("pgh_context").latest("pgh_id")
    assert (latest.pgh_label, latest.birth_year) == ("update", 1987)
    assert latest.pgh_context.metadata["reason"] == "birth year from the source document"
    assert latest.pgh_context.metadata["user"] == coordinator_site_a.pk
    assert audit_verify()[1] == []


def test_the_app_role_cannot_skip_the_event_trigger_with_pgtrigger_ignore(participant, coordinator_site_a):
    event_model = Participant.pgh_event_model
    before = event_model.objects.filter(pgh_obj_id=participant.pk).count()
    with connection.cursor() as cursor:
        cursor.execute("SELECT array_agg(tgname)::text FROM pg_trigger WHERE tgrelid = 'trials_participant'::regclass")
        every_trigger = cursor.fetchone()[0]
    with audit_context(actor=coordinator_site_a, reason="quiet change"), app_role_cursor() as cursor:
        cursor.execute("SELECT set_config('pgtrigger.ignore', %s, true)", [every_trigger])
        cursor.execute("UPDATE trials_participant SET birth_year = 1988 WHERE id = %s", [participant.pk])
        cursor.execute("SELECT set_config('pgtrigger.ignore', '{}', true)")
    assert event_model.objects.filter(pgh_obj_id=participant.pk).count() == before + 1
    assert event_model.objects.filter(pgh_obj_id=participant.pk).latest("pgh_id").birth_year == 1988


def test_the_seal_refuses_a_backdated_event_even_from_a_role_allowed_to_insert(participant):
    """Second layer: should INSERT ever be granted back, a hand-written, backdated event still fails."""
    event_model = Participant.pgh_event_model
    genuine = event_model.objects.get(pgh_obj_id=participant.pk)
    # The tests log in as the owner, who may insert.
    with (
        pytest.raises(IntegrityError, match="outside the transaction"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(_forged_copy_sql(event_model, created_at=BACKDATED), [genuine.pgh_id])
    assert not _history_shows_1950(participant)


def test_the_seal_refuses_an_event_borrowing_another_changes_context(participant):
    """Dated now, but attributed to an earlier change's user and reason: refused too."""
    event_model = Participant.pgh_event_model
    genuine = event_model.objects.get(pgh_obj_id=participant.pk)
    assert genuine.pgh_context_id is not None
    forged = _forged_copy_sql(event_model, created_at="now", context=f"'{genuine.pgh_context_id}'::uuid")
    with (
        pytest.raises(IntegrityError, match="not the current one"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(forged, [genuine.pgh_id])
    assert not _history_shows_1950(participant)


@pytest.fixture
def app_login(db):
    """A second connection to the test database that logs in as the app role itself. Its LOGIN
    attribute is committed by an owner connection of its own: a role is cluster-wide, and a login
    must see it committed (the test's transaction is never committed)."""
    owner = connections.create_connection("default")
    try:
        with owner.cursor() as cursor:
            cursor.execute(f"ALTER ROLE {APP_ROLE} LOGIN")
    finally:
        owner.close()
    wrapper = connections.create_connection("default")
    wrapper.settings_dict = {**wrapper.settings_dict, "USER": APP_ROLE, "PASSWORD": ""}
    yield wrapper
    wrapper.close()


def test_create_app_login_lets_the_app_role_log_in_without_powers_over_other_roles(db):
    call_command("create_app_login", stdout=StringIO())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s", [APP_ROLE]
        )
        assert cursor.fetchone() == (True, False, False, False)


def test_the_app_login_stays_the_app_role_after_reset_role(app_login):
    with app_login.cursor() as cursor:
        cursor.execute("RESET ROLE")
        cursor.execute("SELECT session_user, current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (APP_ROLE, APP_ROLE, False)
    for statement, refusal in (
        ("SET ROLE postgres", "permission denied"),
        ("ALTER TABLE trials_participantevent DISABLE TRIGGER ALL", "must be owner"),
        ("INSERT INTO trials_participantevent (pgh_created_at, pgh_label) VALUES (now(), 'x')", "permission denied"),
    ):
        with pytest.raises(ProgrammingError, match=refusal), app_login.cursor() as cursor:
            cursor.execute(statement)


@contextmanager
def logged_in_as(role: str):
    """This connection's session user becomes ``role`` (as if it had logged in as it) until the
    savepoint ends: only a superuser login can do this, and undo it."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL SESSION AUTHORIZATION {role}")
        yield
        cursor.execute("RESET SESSION AUTHORIZATION")


def test_the_deploy_check_warns_when_the_app_logs_in_as_a_superuser_but_not_as_the_app_role(app_login):
    superuser = login_role_warnings(connection)  # the tests log in as postgres
    assert [w.id for w in superuser] == ["trials.W001"]
    assert "RESET ROLE" in superuser[0].msg
    assert login_role_warnings(app_login) == []


def test_the_deploy_check_warns_when_the_app_logs_in_as_the_table_owner_or_a_role_maker(db):
    with connection.cursor() as cursor:
        cursor.execute("CREATE ROLE tolerance_test_owner")
        cursor.execute("ALTER TABLE trials_participant OWNER TO tolerance_test_owner")
        cursor.execute("CREATE ROLE tolerance_test_rolemaker CREATEROLE")
        cursor.execute(f"CREATE ROLE tolerance_test_app IN ROLE {APP_ROLE}")
    with logged_in_as("tolerance_test_owner"):
        owner = login_role_warnings(connection)
    with logged_in_as("tolerance_test_rolemaker"):
        rolemaker = login_role_warnings(connection)
    with logged_in_as("tolerance_test_app"):
        member_of_the_app_role = login_role_warnings(connection)
    assert [w.id for w in owner] == ["trials.W002"]
    assert "owns 1 table(s)" in owner[0].msg
    assert [w.id for w in rolemaker] == ["trials.W001"]
    assert member_of_the_app_role == []


def test_check_deploy_fails_at_warning_level_for_a_superuser_login(db, settings, tmp_path):
    settings.TOLERANCE_AUDIT_ANCHOR_DIR = tmp_path
    settings.TOLERANCE_AUDIT_ANCHOR_KEY = "k" * 32
    with pytest.raises(SystemCheckError, match="trials.W001"):
        call_command("check", "--deploy", "--fail-level", "WARNING", "--tag", "security")


def test_migrate_logs_in_with_the_owner_url_while_the_app_logs_in_as_its_role(app_login):
    """The two-URL configuration end to end, in a fresh process: the app's connection is the app
    role's login, and an owner-only command switches to the owner's."""
    db = settings.DATABASES["default"]
    host = quote(db["HOST"], safe="") + (f":{db['PORT']}" if db["PORT"] else "")
    script = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "from trials.dbroles import use_owner_role\n"
        "with connection.cursor() as c:\n"
        "    c.execute('SELECT session_user'); print(c.fetchone()[0])\n"
        "use_owner_role()\n"
        "with connection.cursor() as c:\n"
        "    c.execute('SELECT session_user'); print(c.fetchone()[0])\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"postgres://{APP_ROLE}@{host}/{db['NAME']}",
        "DATABASE_OWNER_URL": f"postgres://{db['USER']}@{host}/{db['NAME']}",
    }
    result = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [APP_ROLE, db["USER"]]
