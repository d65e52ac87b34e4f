"""Database-side protection of the audit trail (docs/reliability.md (b), steps 2 and 4).

pghistory's append-only trigger alone can be bypassed by any session (``pgtrigger.ignore``) and by
the table owner. So:

* the application runs as ``tolerance_app``, a role that does not own the tables: it may read and
  insert audit events but never UPDATE, DELETE or TRUNCATE them, and it may not DELETE clinical rows
  (records are voided, never removed). Migrations and the demo reset run as the owner.
* every UPDATE of a clinical row must carry the acting user and a reason in its pghistory context;
  a trigger refuses it otherwise, whichever path wrote it.
* every audit event is sealed into a hash chain (``trials_auditseal``) by an AFTER INSERT trigger;
  ``manage.py verify_audit`` walks it and reports any altered, removed or unsealed event.

``apply_database_protection`` runs after every ``migrate`` (post_migrate), so event tables added by
later migrations are protected without anyone remembering to do it.
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.db import connections
from psycopg import sql

SEAL_LOCK_KEY = 7_200_001  # pg_advisory_xact_lock key serialising the hash chain

SEAL_FUNCTION = """
CREATE OR REPLACE FUNCTION tolerance_audit_seal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public SET timezone = 'UTC' AS $$
DECLARE
    last_hash text;
    last_seq bigint;
    payload text;
BEGIN
    PERFORM pg_advisory_xact_lock(%(lock)s);
    SELECT s.hash, s.seq INTO last_hash, last_seq FROM trials_auditseal s ORDER BY s.seq DESC LIMIT 1;
    last_hash := coalesce(last_hash, '');
    payload := row_to_json(NEW)::text;
    INSERT INTO trials_auditseal (seq, event_table, event_id, prev_hash, hash, sealed_at)
    VALUES (
        coalesce(last_seq, 0) + 1, TG_TABLE_NAME, NEW.pgh_id, last_hash,
        encode(sha256(convert_to(last_hash || '|' || TG_TABLE_NAME || '|' || NEW.pgh_id::text || '|' || payload,
                                 'UTF8')), 'hex'),
        clock_timestamp()
    );
    RETURN NULL;
END;
$$;
"""


REQUIRE_CONTEXT_FUNCTION = """
CREATE OR REPLACE FUNCTION tolerance_require_audit_context() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    metadata jsonb;
BEGIN
    BEGIN
        metadata := nullif(current_setting('pghistory.context_metadata', true), '')::jsonb;
    EXCEPTION WHEN others THEN
        metadata := NULL;
    END;
    IF metadata IS NULL OR coalesce(metadata->>'user', '') = '' THEN
        RAISE EXCEPTION 'audit context required: an update of % must name the acting user', TG_TABLE_NAME
            USING ERRCODE = 'check_violation';
    END IF;
    IF coalesce(btrim(metadata->>'reason'), '') = '' THEN
        RAISE EXCEPTION 'audit context required: an update of % must give a reason for change', TG_TABLE_NAME
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
"""


def _execute(cursor, statement, params=None) -> None:
    """Run a statement that may be a psycopg ``sql.Composed``: rendered to text first, because
    Django's debug cursor (DEBUG=True) logs the SQL as a string."""
    if isinstance(statement, sql.Composable):
        statement = statement.as_string(cursor.cursor.connection)
    cursor.execute(statement, params)


def app_role() -> str:
    return settings.TOLERANCE_DB_APP_ROLE


def event_models() -> list:
    from pghistory.models import Event

    return [m for m in apps.get_models() if issubclass(m, Event) and not m._meta.abstract and m._meta.managed]


def protected_tables() -> tuple[list[str], list[str]]:
    """(clinical tables: no DELETE for the app, event tables: SELECT and INSERT only)."""
    events = event_models()
    clinical = sorted({m.pgh_tracked_model._meta.db_table for m in events})
    return clinical, sorted(m._meta.db_table for m in events)


def apply_database_protection(using: str = "default") -> None:
    """Create the app role if needed, (re)grant its privileges, and install the seal triggers."""
    role = app_role()
    clinical, events = protected_tables()
    with connections[using].cursor() as cursor:
        _execute(cursor, "SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        if cursor.fetchone() is None:
            _execute(cursor, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        ident = sql.Identifier(role)
        _execute(cursor, sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
        _execute(
            cursor, sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(ident)
        )
        _execute(cursor, sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(ident))
        _execute(cursor, sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON django_migrations FROM {}").format(ident))
        for table in clinical:
            _execute(cursor, sql.SQL("REVOKE DELETE, TRUNCATE ON {} FROM {}").format(sql.Identifier(table), ident))
        for table in [*events, "trials_auditseal", "trials_accessevent", "trials_signature", "trials_accountevent"]:
            _execute(
                cursor, sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(sql.Identifier(table), ident)
            )
        # The app reads the chain but only the SECURITY DEFINER trigger writes it.
        _execute(cursor, sql.SQL("REVOKE INSERT ON trials_auditseal FROM {}").format(ident))
        _execute(cursor, SEAL_FUNCTION % {"lock": SEAL_LOCK_KEY})
        _execute(cursor, REQUIRE_CONTEXT_FUNCTION)
        for table in clinical:
            # An UPDATE of a clinical row must carry who and why, whatever path it takes (ORM, bulk,
            # raw SQL): the database refuses it otherwise (docs/reliability.md (b) step 3).
            _execute(
                cursor,
                sql.SQL(
                    "CREATE OR REPLACE TRIGGER tolerance_require_context BEFORE UPDATE ON {} "
                    "FOR EACH ROW EXECUTE FUNCTION tolerance_require_audit_context()"
                ).format(sql.Identifier(table)),
            )
        for table in events:
            _execute(
                cursor,
                sql.SQL(
                    "CREATE OR REPLACE TRIGGER tolerance_seal AFTER INSERT ON {} "
                    "FOR EACH ROW EXECUTE FUNCTION tolerance_audit_seal()"
                ).format(sql.Identifier(table)),
            )


_owner_mode = False


def assume_app_role(sender, connection, **kwargs) -> None:
    """``connection_created`` hook: every connection of the web app and the workers switches to the
    app role, unless this process runs an owner-only command. Before the first ``migrate`` the role
    does not exist yet; the connection then stays as it logged in."""
    if _owner_mode or not settings.TOLERANCE_DB_ASSUME_APP_ROLE or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        _execute(
            cursor,
            sql.SQL(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN SET ROLE {role}; "
                "END IF; END $$"
            ).format(name=sql.Literal(app_role()), role=sql.Identifier(app_role())),
        )


def use_owner_role(using: str = "default") -> None:
    """For owner-only commands (migrate, the demo reset): stop assuming the app role."""
    global _owner_mode
    _owner_mode = True
    connection = connections[using]
    if connection.connection is not None:
        with connection.cursor() as cursor:
            _execute(cursor, "RESET ROLE")
