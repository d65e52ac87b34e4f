import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
application = get_asgi_application()

# Refuse to serve on a configuration that would fail every request (config/checks.py).
from config.checks import fail_on_errors  # noqa: E402 - needs the apps loaded

fail_on_errors()
