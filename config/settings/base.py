"""Settings for every environment. Differences come from environment flags, never from a module
with logic of its own (HackSoft §Settings); ``config/env.py`` is the only reader of the environment.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.embedded_db import embedded_database
from config.env import env_bool, env_database, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# TOLERANCE_PRODUCTION=True turns on every production safeguard; the secret key then has no default.
PRODUCTION = env_bool("TOLERANCE_PRODUCTION", False)
DEBUG = env_bool("DJANGO_DEBUG", not PRODUCTION)
if PRODUCTION:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY")
else:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY", "insecure-development-key-not-for-production-use-0123456789")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "csp",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "django_htmx",
    "axes",
    "pgtrigger",
    "pghistory",
    "trials",
    "safety",
    "analytics",
    "config.apps.ProjectConfig",  # start-up checks (config/checks.py)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy and Permissions-Policy on every response (see "Security headers" below).
    "csp.middleware.CSPMiddleware",
    "config.security.PermissionsPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last among authentication middleware, as django-axes requires.
    "axes.middleware.AxesMiddleware",
    # Attaches the acting user and URL to every audit event written during the request.
    "pghistory.middleware.HistoryMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # What each role may open in a study: the header, the safety sub-navigation, the start page.
            "libraries": {"navigation": "config.navigation"},
        },
    },
]

# --- Database: PostgreSQL only. DATABASE_URL, or the embedded pgserver for the zero-setup demo.
# Two logins (trials/dbroles.py). The web app and workers log in as TOLERANCE_DB_APP_ROLE, a role
# that does not own the tables and cannot write the audit trail or delete clinical rows: DATABASE_URL.
# Owner-only commands (migrate, the demo reset, create_app_login) log in with DATABASE_OWNER_URL.
# Without an owner URL the one login must be the owner's, and connections switch to the app role
# with SET ROLE, which a RESET ROLE undoes: development only (check --deploy warns).
TOLERANCE_DB_APP_ROLE = env_str("TOLERANCE_DB_APP_ROLE", "tolerance_app")
TOLERANCE_DB_ASSUME_APP_ROLE = env_bool("TOLERANCE_DB_ASSUME_APP_ROLE", True)
_database, _owner = env_database("DATABASE_URL"), env_database("DATABASE_OWNER_URL")
if _database is None:
    if _owner is not None:
        raise ImproperlyConfigured("DATABASE_OWNER_URL is set but DATABASE_URL (the app's login) is not.")
    _database, _owner = embedded_database(
        Path(env_str("TOLERANCE_PGDATA", str(BASE_DIR / ".pgdata"))), app_role=TOLERANCE_DB_APP_ROLE
    )
elif _owner is not None and _owner["NAME"] != _database["NAME"]:
    raise ImproperlyConfigured("DATABASE_OWNER_URL must name the same database as DATABASE_URL.")
DATABASES = {"default": _database}
# The owner's credentials and address; the database name is always DATABASE_URL's.
TOLERANCE_DB_OWNER_LOGIN = (
    {key: _owner[key] for key in ("USER", "PASSWORD", "HOST", "PORT", "OPTIONS") if key in _owner} if _owner else None
)
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Outside production, whitenoise serves straight from the app folders (no collectstatic needed).
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = not PRODUCTION
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # lockout after repeated failures; state in PostgreSQL
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("TOLERANCE_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = datetime.timedelta(minutes=env_int("TOLERANCE_LOGIN_LOCKOUT_MINUTES", 30, minimum=1))
# Lock the account, not the address: a hospital's staff share one NAT address, so an IP lockout
# would lock out a whole site. Rotating user agents or cookies does not reset a username lockout,
# which is what axes.W006 warns about for other parameter sets.
AXES_LOCKOUT_PARAMETERS = ["username"]
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "trials:home"
LOGOUT_REDIRECT_URL = "login"

# Sessions live in PostgreSQL so that Redis being down never blocks a login (docs/architecture.md §4).
SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_COOKIE_AGE = env_int("TOLERANCE_SESSION_IDLE_SECONDS", 30 * 60, minimum=60)
SESSION_SAVE_EVERY_REQUEST = True  # idle timeout: the clock restarts on every request
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# --- Security headers. A strict Content-Security-Policy: everything from this origin, nothing inline
# (no inline script, no <style> element, no style attribute), no plug-ins, no framing. Pages keep
# their CSS and JavaScript in static files; htmx needs no inline code; Swagger UI loads its start-up
# script from a URL of its own; plots are SVG images (data: URIs). Django 5.2 has no built-in CSP
# (Django 6.0 adds SECURE_CSP, modelled on django-csp), so django-csp sets the header: it also gives
# per-request nonces (``request.csp_nonce``) and per-view overrides should a page ever need one.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# Browser features no page of Tolerance uses are switched off for this origin and any frame
# (config/security.py).
PERMISSIONS_POLICY = {
    feature: []
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "usb",
    )
}

if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- REST framework. Shared strictness (JSON bodies only, capped pages, the error answers in the
# schema) is trials/rest.py and trials/rest_input.py.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so that an unauthenticated call answers 401 with a WWW-Authenticate header.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["trials.rest_input.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "trials.rest_input.Pagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "config.exception_handler.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "trials.rest.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tolerance API",
    "DESCRIPTION": (
        "Casebook, safety and analytics API. Every query is scoped by the caller's role and site.\n\n"
        "**Sign-in.** `POST /api/v1/auth/token/` with your username and password returns a token, shown "
        "once; send it as `Authorization: Token <token>`. `DELETE /api/v1/auth/token/` revokes it. Failed "
        "exchanges count towards the same lockout as the sign-in page.\n\n"
        "**Writes.** Bodies are JSON. Every POST takes an optional `Idempotency-Key` header: a repeat with "
        "the same key returns the first answer instead of acting twice; the same key with a different "
        "body is a 422. Edits of a saved record send the `version` they loaded; a stale one is a 409.\n\n"
        "**Errors** are JSON objects: `detail`, or a list of messages per field. Unknown query "
        "parameters are a 400.\n\n"
        "**Lists** are pages: `?limit=` 1 to 500 (default 100) and `?offset=`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery: Redis when CELERY_BROKER_URL is set, otherwise eager (zero-setup demo only).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", CELERY_BROKER_URL or "cache+memory://")
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 25 * 60
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Long analyses: a worker takes one message at a time (no analysis waits behind another in a prefetch
# buffer), and an unacknowledged message (acks_late; its worker died) is redelivered after the Redis
# visibility timeout, which must exceed the longest task (the hard time limit above).
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_SECONDS", 45 * 60, minimum=CELERY_TASK_TIME_LIMIT + 60),
    # A broker that is down must not hold a web request: connecting gives up after a second, a
    # broker that accepts but does not answer after two (kombu waits forever by default), and the
    # message waits in the outbox for the relay (analytics/outbox.py, docs/reliability.md #34-35).
    # Consumers are not affected: BRPOP answers within a second on a live broker.
    "socket_connect_timeout": 1,
    "socket_timeout": 2,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 1
# One attempt: each outbox publish opens a fresh connection, and the relay retries what failed.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 0}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A running analysis touches its heartbeat at least this often; one silent for the stale bound is
# re-queued by beat (analytics/job_recovery.py). The bound must leave room for missed beats.
TOLERANCE_JOB_HEARTBEAT_SECONDS = env_int("TOLERANCE_JOB_HEARTBEAT_SECONDS", 30, minimum=1)
TOLERANCE_JOB_STALE_SECONDS = env_int("TOLERANCE_JOB_STALE_SECONDS", 180, minimum=3 * TOLERANCE_JOB_HEARTBEAT_SECONDS)
# How often beat looks for silent analyses, and publishes the outbox's unsent messages.
TOLERANCE_STALE_CHECK_SECONDS = env_int("TOLERANCE_STALE_CHECK_SECONDS", 60, minimum=1)
TOLERANCE_OUTBOX_RELAY_SECONDS = env_int("TOLERANCE_OUTBOX_RELAY_SECONDS", 15, minimum=1)
CELERY_TIMEZONE = "UTC"
# Reporting clocks are database rows scanned by beat; the task is idempotent (safety/services.py).
CELERY_BEAT_SCHEDULE = {
    "safety-clock-monitor": {
        "task": "safety.clock_monitor",
        "schedule": datetime.timedelta(minutes=15),
        "options": {"expires": 14 * 60},
    },
    # Analytics messages left unsent while the broker was down, and analyses whose worker died.
    "analytics-outbox-relay": {
        "task": "analytics.outbox_relay",
        "schedule": datetime.timedelta(seconds=TOLERANCE_OUTBOX_RELAY_SECONDS),
        "options": {"expires": TOLERANCE_OUTBOX_RELAY_SECONDS},
    },
    "analytics-requeue-stale-jobs": {
        "task": "analytics.requeue_stale_jobs",
        "schedule": datetime.timedelta(seconds=TOLERANCE_STALE_CHECK_SECONDS),
        "options": {"expires": TOLERANCE_STALE_CHECK_SECONDS},
    },
}

# --- Audit (django-pghistory): events carry the real wall-clock time, not the transaction start.
PGHISTORY_CREATED_AT_FUNCTION = "clock_timestamp()"
PGHISTORY_APPEND_ONLY = True

# --- Audit anchors (trials/anchors.py): the hash chain's head, signed with an HMAC whose key never
# enters the database, written as one never-overwritten file per anchor to a directory the database's
# administrators cannot write: every TOLERANCE_AUDIT_ANCHOR_MINUTES (Celery beat) and at every data
# cut. ``verify_audit --anchors DIR`` checks the chain against them. Unset: no anchors (development
# and the demo); check --deploy warns. The key may come from a file: TOLERANCE_AUDIT_ANCHOR_KEY_FILE.
_anchor_dir = env_str("TOLERANCE_AUDIT_ANCHOR_DIR", "")
TOLERANCE_AUDIT_ANCHOR_DIR = Path(_anchor_dir) if _anchor_dir else None
TOLERANCE_AUDIT_ANCHOR_KEY = env_str("TOLERANCE_AUDIT_ANCHOR_KEY", "")
if bool(TOLERANCE_AUDIT_ANCHOR_DIR) != bool(TOLERANCE_AUDIT_ANCHOR_KEY):
    raise ImproperlyConfigured("Set both TOLERANCE_AUDIT_ANCHOR_DIR and TOLERANCE_AUDIT_ANCHOR_KEY, or neither.")
if TOLERANCE_AUDIT_ANCHOR_KEY and len(TOLERANCE_AUDIT_ANCHOR_KEY) < 32:
    raise ImproperlyConfigured(
        "TOLERANCE_AUDIT_ANCHOR_KEY must be at least 32 characters of random text (e.g. openssl rand -hex 32)."
    )
_anchor_minutes = env_int("TOLERANCE_AUDIT_ANCHOR_MINUTES", 60, minimum=1)
CELERY_BEAT_SCHEDULE["trials-audit-anchor"] = {
    "task": "trials.audit_anchor",
    "schedule": datetime.timedelta(minutes=_anchor_minutes),
    "options": {"expires": max(30, _anchor_minutes * 60 - 30)},  # a late run is superseded by the next
}

EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "tolerance@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    # The embedded PostgreSQL logs every process's start and exit ("exiting N remaining pids") at INFO.
    "loggers": {"pgserver": {"level": "WARNING"}},
}
