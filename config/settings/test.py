"""Test settings: the same as base, with a fast password hasher (docs/style.md §17)."""

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Tests run as the owner so that transactional tests can reset tables between tests; the tests of
# the app role's privileges switch to it explicitly (tests/trials/test_db_protection.py).
TOLERANCE_DB_ASSUME_APP_ROLE = False
if TOLERANCE_DB_OWNER_LOGIN:  # noqa: F405
    # With two logins (the embedded database, or DATABASE_OWNER_URL), the tests log in as the owner.
    DATABASES["default"].update(TOLERANCE_DB_OWNER_LOGIN)  # noqa: F405
