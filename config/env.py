"""The one place that reads the process environment.

Every setting comes through these helpers so that a badly formatted value stops the process with a
message naming the variable, instead of being read as a silent default (healthchecks' ``envbool``).
"""

from __future__ import annotations

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

_UNSET = object()
_env = environ.Env()


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        # Docker/Kubernetes secrets: NAME_FILE points at a file that holds the value.
        path = os.environ.get(f"{name}_FILE")
        if path:
            value = Path(path).read_text().strip()
    return value


def env_str(name: str, default: object = _UNSET) -> str:
    value = _raw(name)
    if value is None or value == "":
        if default is _UNSET:
            raise ImproperlyConfigured(f"The environment variable {name} is required.")
        return default  # type: ignore[return-value]
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    if value in ("True", "true", "1"):
        return True
    if value in ("False", "false", "0"):
        return False
    raise ImproperlyConfigured(f"{name} must be True or False (or 1/0), not {value!r}.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_database(name: str) -> dict | None:
    """Parse a PostgreSQL URL; anything but PostgreSQL is refused (one engine everywhere)."""
    value = _raw(name)
    if not value:
        return None
    if not value.startswith(("postgres://", "postgresql://", "pgsql://")):
        raise ImproperlyConfigured(f"{name} must be a PostgreSQL URL (postgres://...), not {value.split(':')[0]}.")
    config = _env.db_url_config(value)
    config["ENGINE"] = "django.db.backends.postgresql"
    return config
