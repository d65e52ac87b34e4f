"""Zero-setup database: an embedded PostgreSQL from the ``pgserver`` wheel.

Used by the demo and by tests on a machine without a database server. It is a real PostgreSQL
(same triggers, constraints and locks as production), started once in a local data folder and left
running for later processes. Never used in production: ``DATABASE_URL`` switches it off.

It has the production's two logins (trials/dbroles.py): the app logs in as the app role, which owns
nothing, and migrations and the demo reset log in as ``postgres``, the owner. Both are trusted on the
server's own Unix socket, inside the data folder, so neither has a password.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

DB_NAME = "tolerance"
OWNER = "postgres"
# Creates the database and the app's login if missing; {db} is a constant, {role} a validated name.
_SETUP = """\\set ON_ERROR_STOP on
SELECT 'CREATE DATABASE {db}' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{db}') \\gexec
SELECT format('CREATE ROLE %I LOGIN', '{role}') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') \\gexec
SELECT format('ALTER ROLE %I LOGIN', '{role}')
 WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}' AND NOT rolcanlogin) \\gexec
"""


def embedded_database(data_dir: Path, *, app_role: str) -> tuple[dict, dict]:
    """Start (or reuse) the server; return (the app's database settings, the owner's login)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", app_role):
        raise ImproperlyConfigured(f"TOLERANCE_DB_APP_ROLE must be a lower-case SQL name, not {app_role!r}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(str(data_dir), cleanup_mode=None)
    # One psql run: each \gexec executes the statement its query returns, if it returns one.
    server.psql(_SETUP.format(db=DB_NAME, role=app_role))
    # pgserver listens on a Unix socket inside its data folder.
    owner = {"USER": OWNER, "PASSWORD": "", "HOST": str(data_dir), "PORT": ""}
    app = {"ENGINE": "django.db.backends.postgresql", "NAME": DB_NAME, **owner, "USER": app_role}
    return app, owner
