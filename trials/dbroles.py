"""Database-side protection of the audit trail (docs/reliability.md #4, #5).

pghistory's append-only trigger alone can be bypassed by any session (``pgtrigger.ignore``) and by
the table owner. So:

* the application runs as ``tolerance_app``, a role that does not own the tables. It reads audit
  events but never writes them itself: INSERT, UPDATE, DELETE and TRUNCATE on event tables and on
  pghistory's context table are revoked. Events are written only by pghistory's triggers, whose
  functions run as their owner (SECURITY DEFINER, re-applied here after every ``migrate``), in the
  transaction that made the change. So the app cannot forge, backdate or re-attribute an event
  (docs/decisions/0001-audit-anchoring.md). It may not DELETE clinical rows either (records are
  voided, never removed). Migrations and the demo reset run as the owner.
* in production the app logs in as that role (``DATABASE_URL``) and migrations log in as the owner
  (``DATABASE_OWNER_URL``). Logging in as the owner and switching with ``SET ROLE`` is for
  development only: a ``RESET ROLE`` undoes it, and ``check --deploy`` warns (trials/checks.py).
* every UPDATE of a clinical row must carry the acting user and a reason in its pghistory context;
  a trigger refuses it otherwise, whichever path wrote it.
* every audit event is sealed into a hash chain (``trials_auditseal``) by an AFTER INSERT trigger,
  which also refuses an event dated outside its transaction or attached to a context that is not
  the current one; ``manage.py verify_audit`` walks the chain and reports any altered, removed or
  unsealed event, and with ``--anchors`` checks it against heads anchored outside the database
  (trials/anchors.py).

``apply_database_protection`` runs after every ``migrate`` (post_migrate), so event tables added by
later migrations are protected without anyone remembering to do it.
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from psycopg import sql

SEAL_LOCK_KEY = 7_200_001  # pg_advisory_xact_lock key serialising the hash chain
# How far an event's pgh_created_at may lie before its transaction's start or after the seal's clock:
# room for an NTP step of the server clock, far too little to backdate anything that matters.
SEAL_CLOCK_SKEW = "5 minutes"

SEAL_FUNCTION = """
CREATE OR REPLACE FUNCTION tolerance_audit_seal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    last_hash text;
    last_seq bigint;
    payload text;
    current_context uuid;
BEGIN
    -- Second layer behind the revoked INSERT: a genuine event is written by a pghistory trigger in
    -- the transaction that made the change, so it is dated within that transaction and carries the
    -- context that is current now. Anything else was written by hand; refuse to seal it.
    IF NEW.pgh_created_at < now() - interval '%(skew)s'
       OR NEW.pgh_created_at > clock_timestamp() + interval '%(skew)s' THEN
        RAISE EXCEPTION 'audit event refused: %% dated %%, outside the transaction that writes it (started %%)',
            TG_TABLE_NAME, NEW.pgh_created_at, now() USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.pgh_context_id IS NOT NULL THEN
        BEGIN
            current_context := nullif(current_setting('pghistory.context_id', true), '')::uuid;
        EXCEPTION WHEN others THEN
            current_context := NULL;
        END;
        IF NEW.pgh_context_id IS DISTINCT FROM current_context THEN
            RAISE EXCEPTION 'audit event refused: %% claims context %%, which is not the current one',
                TG_TABLE_NAME, NEW.pgh_context_id USING ERRCODE = 'check_violation';
        END IF;
    END IF;
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
    # One transaction: the blanket GRANT below is never visible without the REVOKEs that follow it.
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
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
        # The app reads the chain, the events and their contexts, but only the SECURITY DEFINER
        # triggers write them: a hand-written event (forged, backdated, or attributed to another
        # user's context) is refused by the privilege system itself.
        for table in [*events, "trials_auditseal", _context_table()]:
            _execute(
                cursor,
                sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(sql.Identifier(table), ident),
            )
        # %% in the template: SEAL_FUNCTION is a Python %-template (RAISE's own % are doubled).
        _execute(cursor, SEAL_FUNCTION % {"lock": SEAL_LOCK_KEY, "skew": SEAL_CLOCK_SKEW})
        _execute(cursor, REQUIRE_CONTEXT_FUNCTION)
        for table in clinical:
            # An UPDATE of a clinical row must carry who and why, whatever path it takes (ORM, bulk,
            # raw SQL): the database refuses it otherwise (docs/reliability.md #3).
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
        _run_event_triggers_as_owner(cursor)


def _context_table() -> str:
    from pghistory.models import Context

    return Context._meta.db_table


def event_trigger_functions() -> list[str]:
    """Names of the functions of pghistory's event triggers (insert, update, delete) on every
    tracked table."""
    import pgtrigger
    from pghistory.trigger import Event

    return sorted({trigger.get_pgid(model) for model, trigger in pgtrigger.registered() if isinstance(trigger, Event)})


def _run_event_triggers_as_owner(cursor) -> None:
    """Make pghistory's trigger functions SECURITY DEFINER: they write the event (and its context)
    with their owner's rights, which the app role no longer has.

    Re-applied after every ``migrate``: pgtrigger installs a trigger with ``CREATE OR REPLACE
    FUNCTION``, which resets these attributes. Until then a rewritten trigger fails closed (the app's
    write is refused for want of INSERT on the event table), never open. ``pgtrigger.ignore`` is
    pinned to empty inside the function, so no session can skip writing the event by naming the
    trigger in that setting (any session may set it)."""
    _execute(cursor, "SELECT current_schema()")
    schema = cursor.fetchone()[0]
    for function in event_trigger_functions():
        _execute(cursor, "SELECT to_regprocedure(%s) IS NOT NULL", [f"{schema}.{function}()"])
        if not cursor.fetchone()[0]:
            continue  # its model's migration is not applied yet (migrate to an earlier state)
        _execute(
            cursor,
            sql.SQL(
                "ALTER FUNCTION {schema}.{function}() SECURITY DEFINER "
                "SET search_path = {schema}, pg_temp SET \"pgtrigger.ignore\" = '{{}}'"
            ).format(schema=sql.Identifier(schema), function=sql.Identifier(function)),
        )


_owner_mode = False


def assume_app_role(sender, connection, **kwargs) -> None:
    """``connection_created`` hook: a connection that logged in as another role (development: the
    owner, or a superuser) switches to the app role, unless this process runs an owner-only command.
    Before the first ``migrate`` the role does not exist yet; the connection then stays as it logged
    in. This switch is reversible (``RESET ROLE``); production logs in as the app role instead."""
    if _owner_mode or not settings.TOLERANCE_DB_ASSUME_APP_ROLE or connection.vendor != "postgresql":
        return
    if connection.settings_dict.get("USER") == app_role():
        return  # logged in as the app role itself: nothing to switch
    with connection.cursor() as cursor:
        _execute(
            cursor,
            sql.SQL(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN SET ROLE {role}; "
                "END IF; END $$"
            ).format(name=sql.Literal(app_role()), role=sql.Identifier(app_role())),
        )


def use_owner_role(using: str = DEFAULT_DB_ALIAS) -> None:
    """For owner-only commands (migrate, the demo reset, create_app_login): work as the table owner.

    With an owner login configured (``DATABASE_OWNER_URL``, or the embedded demo database) the
    connection is closed and the next one logs in with it; otherwise the one login is the owner's,
    and the connection stops assuming the app role."""
    global _owner_mode
    _owner_mode = True
    connection = connections[using]
    owner = settings.TOLERANCE_DB_OWNER_LOGIN if using == DEFAULT_DB_ALIAS else None
    if owner and any(connection.settings_dict.get(key) != value for key, value in owner.items()):
        if connection.in_atomic_block:
            raise RuntimeError("Cannot switch to the owner's login inside a transaction.")
        connection.close()
        connection.settings_dict.update(owner)
        return
    if connection.settings_dict.get("USER") == app_role():
        raise ImproperlyConfigured(
            f"This command must run as the table owner, but the database login is the app role {app_role()}: "
            "set DATABASE_OWNER_URL to the owner's URL."
        )
    if connection.connection is not None:
        with connection.cursor() as cursor:
            _execute(cursor, "RESET ROLE")


def app_login_create(*, password: str | None, using: str = DEFAULT_DB_ALIAS) -> None:
    """As the owner: let the app role log in (with ``password`` if given; a server that trusts its
    clients or checks certificates needs none), without any power to become another role, then
    (re)apply its privileges. Needs CREATEROLE (or a superuser) on the owner's login."""
    role = sql.Identifier(app_role())
    attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    with connections[using].cursor() as cursor:
        _execute(cursor, "SELECT 1 FROM pg_roles WHERE rolname = %s", [app_role()])
        verb = "ALTER" if cursor.fetchone() else "CREATE"
        statement = sql.SQL("{} ROLE {} " + attributes).format(sql.SQL(verb), role)
        if password is not None:
            statement = sql.SQL("{} PASSWORD {}").format(statement, sql.Literal(password))
        _execute(cursor, statement)
    apply_database_protection(using)
