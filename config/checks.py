"""Start-up checks: configuration that would otherwise fail one request at a time, or quietly.

Registered by ``config.apps.ProjectConfig`` under the tag ``tolerance``; ``manage.py check``,
``runserver`` and ``migrate`` run them, and the WSGI/ASGI entry points run them before serving
(``fail_on_errors``), so a production server refuses to start instead of answering 500 on every page.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

TAG = "tolerance"
# collectstatic's default ignore patterns: files it never copies, so never in the manifest.
_IGNORED = ["CVS", ".*", "*~"]


@checks.register(TAG)
def debug_in_production(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """DEBUG pages show settings, SQL and source to anyone who triggers an error."""
    if getattr(settings, "PRODUCTION", False) and settings.DEBUG:
        return [
            checks.Error(
                "DJANGO_DEBUG=True with TOLERANCE_PRODUCTION=True: debug pages would show settings, SQL and "
                "source code to any user who triggers an error.",
                hint="Unset DJANGO_DEBUG (production defaults to False).",
                id="tolerance.E001",
            )
        ]
    return []


# Not tagged "staticfiles": collectstatic runs those checks first, and it is the command that fixes this.
@checks.register(TAG)
def static_manifest_complete(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """With manifest storage (production), every ``{% static %}`` of a file missing from the manifest
    raises, so every page answers 500: refuse to start instead."""
    if not isinstance(staticfiles_storage, ManifestFilesMixin):
        return []
    paths, _hash = staticfiles_storage.load_manifest()
    manifest = set(paths)
    hint = "Run `manage.py collectstatic --noinput` with the production settings before starting the server."
    if not manifest:
        path = staticfiles_storage.path(staticfiles_storage.manifest_name)
        return [
            checks.Error(
                f"No static files manifest at {path}: every page would answer 500.", hint=hint, id="tolerance.E002"
            )
        ]
    expected = {path for finder in finders.get_finders() for path, _storage in finder.list(_IGNORED)}
    missing = sorted(expected - manifest)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        return [
            checks.Error(
                f"The static files manifest lacks {len(missing)} file(s) the code ships ({shown}): pages using them "
                "would answer 500. The manifest is older than the code.",
                hint=hint,
                id="tolerance.E003",
            )
        ]
    return []


def fail_on_errors() -> None:
    """Run the checks above and stop the process on any error (the WSGI/ASGI start-up)."""
    errors = [m for m in checks.run_checks(tags=[TAG]) if m.is_serious()]
    if errors:
        raise ImproperlyConfigured("\n".join(f"{m.id}: {m.msg} {m.hint or ''}".strip() for m in errors))
