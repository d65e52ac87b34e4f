"""Start-up checks (config/checks.py): configurations that would fail every request, or expose debug
pages in production, stop the process before it serves anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from config.checks import debug_in_production, fail_on_errors, static_manifest_complete

BASE_DIR = Path(settings.BASE_DIR)
MANIFEST_STORAGE = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}


def _ids(messages) -> list[str]:
    return [m.id for m in messages]


@pytest.mark.parametrize(
    ("production", "debug", "expected"),
    [(True, True, ["tolerance.E001"]), (True, False, []), (False, True, []), (False, False, [])],
)
def test_debug_is_an_error_in_production_only(production, debug, expected):
    with override_settings(PRODUCTION=production, DEBUG=debug):
        assert _ids(debug_in_production()) == expected


def test_manage_py_refuses_to_start_with_debug_in_production():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "TOLERANCE_PRODUCTION": "True",
        "DJANGO_DEBUG": "True",
        "DJANGO_SECRET_KEY": "x" * 64,
        "DJANGO_ALLOWED_HOSTS": "tolerance.example.org",
    }
    result = subprocess.run(  # noqa: S603 - fixed command line
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "tolerance.E001" in result.stderr
    assert "DJANGO_DEBUG=True with TOLERANCE_PRODUCTION=True" in result.stderr


def _shipped_files() -> list[str]:
    return sorted({path for finder in finders.get_finders() for path, _ in finder.list(["CVS", ".*", "*~"])})


def _write_manifest(root: Path, paths: list[str]) -> None:
    manifest = {"paths": {p: p for p in paths}, "version": "1.1", "hash": "test"}
    (root / "staticfiles.json").write_text(json.dumps(manifest))


def test_a_missing_manifest_stops_the_start_up(tmp_path):
    with override_settings(STORAGES=MANIFEST_STORAGE, STATIC_ROOT=tmp_path):
        assert _ids(static_manifest_complete()) == ["tolerance.E002"]
        with pytest.raises(ImproperlyConfigured, match="collectstatic"):
            fail_on_errors()


def test_a_manifest_older_than_the_code_stops_the_start_up(tmp_path):
    shipped = _shipped_files()
    assert "trials/app.css" in shipped
    _write_manifest(tmp_path, [p for p in shipped if p != "trials/app.css"])
    with override_settings(STORAGES=MANIFEST_STORAGE, STATIC_ROOT=tmp_path):
        errors = static_manifest_complete()
        assert _ids(errors) == ["tolerance.E003"]
        assert "trials/app.css" in errors[0].msg


def test_a_complete_manifest_passes(tmp_path):
    _write_manifest(tmp_path, _shipped_files())
    with override_settings(STORAGES=MANIFEST_STORAGE, STATIC_ROOT=tmp_path):
        assert static_manifest_complete() == []
        fail_on_errors()


def test_without_manifest_storage_nothing_is_required(tmp_path):
    with override_settings(STATIC_ROOT=tmp_path):
        assert static_manifest_complete() == []
