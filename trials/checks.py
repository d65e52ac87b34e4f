"""Deployment checks (``manage.py check --deploy``) of what protects the audit trail: the database
login the app uses, and anchoring outside the database (trials/dbroles.py, trials/anchors.py)."""

from __future__ import annotations

import os

from django.conf import settings
from django.core import checks
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from trials.dbroles import app_role

_LOGIN_FACTS = """
SELECT session_user,
       r.rolsuper OR EXISTS (
           SELECT 1 FROM pg_roles s WHERE s.rolsuper AND pg_has_role(session_user, s.oid, 'MEMBER')
       ),
       r.rolcreaterole,
       (SELECT count(*) FROM pg_class c
         WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
           AND pg_has_role(session_user, c.relowner, 'MEMBER')),
       pg_has_role(session_user, n.nspowner, 'MEMBER')
FROM pg_roles r, pg_namespace n
WHERE r.rolname = session_user AND n.nspname = current_schema()
"""


def login_role_warnings(connection) -> list[checks.CheckMessage]:
    """What is wrong with the role ``connection`` logs in as, for an app that must not be able to
    change the audit trail: a superuser (or a role that can become one, or can grant itself any role:
    CREATEROLE), or the owner of the tables or of their schema (an owner may disable triggers, and a
    schema owner may drop and replace tables). Any of these survives a ``SET ROLE`` to the app role,
    because ``RESET ROLE`` undoes it."""
    with connection.cursor() as cursor:
        cursor.execute(_LOGIN_FACTS)
        row = cursor.fetchone()
    if row is None:
        return []  # no current schema: nothing is installed yet
    login, superuser, createrole, tables_owned, schema_owner = row
    hint = (
        f"Log in as the app role itself: DATABASE_URL=postgres://{app_role()}:<password>@<host>/<db> "
        "(manage.py create_app_login, run by the owner, lets it log in), and give migrate the owner's "
        "login in DATABASE_OWNER_URL."
    )
    warnings: list[checks.CheckMessage] = []
    if superuser or createrole:
        what = "a superuser (or can become one)" if superuser else "allowed to create roles (CREATEROLE)"
        warnings.append(
            checks.Warning(
                f"The application logs in to PostgreSQL as {login}, which is {what}: switching to "
                f"{app_role()} with SET ROLE is undone by RESET ROLE, so the database does not protect "
                "the audit trail from the application.",
                hint=hint,
                id="trials.W001",
            )
        )
    elif tables_owned or schema_owner:
        owned = f"owns {tables_owned} table(s)" if tables_owned else "owns the schema"
        warnings.append(
            checks.Warning(
                f"The application logs in to PostgreSQL as {login}, which {owned} (or can become their owner): "
                "an owner can disable the audit triggers and rewrite the audit trail.",
                hint=hint,
                id="trials.W002",
            )
        )
    return warnings


@checks.register(checks.Tags.security, deploy=True)
def database_login_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        return login_role_warnings(connection)
    except DatabaseError as exc:
        return [
            checks.Warning(
                f"Could not check the application's database login: {exc}".strip(),
                hint="check --deploy connects to DATABASE_URL to check that the app does not log in as the "
                "owner or a superuser.",
                id="trials.W003",
            )
        ]


@checks.register(checks.Tags.security, deploy=True)
def audit_anchoring_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    directory = settings.TOLERANCE_AUDIT_ANCHOR_DIR
    if not directory:
        return [
            checks.Warning(
                "Audit anchoring is off: a database superuser could rewrite the audit trail and recompute its "
                "hash chain undetected.",
                hint="Set TOLERANCE_AUDIT_ANCHOR_DIR (a directory the database's administrators cannot write, "
                "e.g. write-once storage) and TOLERANCE_AUDIT_ANCHOR_KEY (or _FILE), and run Celery beat.",
                id="trials.W004",
            )
        ]
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        return [
            checks.Warning(
                f"The audit anchor directory {directory} does not exist or is not writable by this process.",
                id="trials.W005",
            )
        ]
    return []
