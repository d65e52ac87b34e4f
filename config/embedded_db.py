"""Zero-setup database: an embedded PostgreSQL from the ``pgserver`` wheel.

Used by the demo and by tests on a machine without a database server. It is a real PostgreSQL
(same triggers, constraints and locks as production), started once in a local data folder and left
running for later processes. Never used in production: ``DATABASE_URL`` switches it off.
"""

from __future__ import annotations

import warnings
from pathlib import Path

DB_NAME = "tolerance"


def embedded_database(data_dir: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(str(data_dir), cleanup_mode=None)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}';")  # noqa: S608 (constant)
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DB_NAME};")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DB_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        # pgserver listens on a Unix socket inside its data folder.
        "HOST": str(data_dir),
        "PORT": "",
    }
