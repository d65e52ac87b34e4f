"""``manage.py create_app_login``: let the app role log in, so production never logs in as the owner."""

import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from trials.dbroles import app_login_create, use_owner_role


class Command(BaseCommand):
    help = (
        "Run as the table owner (DATABASE_OWNER_URL, or a DATABASE_URL that logs in as the owner). Creates the "
        "app role (TOLERANCE_DB_APP_ROLE) if needed, lets it log in without any power to become another role "
        "(NOSUPERUSER NOCREATEROLE NOCREATEDB), and grants it its privileges. The web app and the workers then "
        "log in as it: DATABASE_URL=postgres://<app role>:<password>@host/db, with the owner's URL in "
        "DATABASE_OWNER_URL for migrate. With --password-stdin the password is read from the first line of "
        "standard input; without it the password is left as it is (servers that authenticate by certificate "
        "or trust need none)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--password-stdin", action="store_true", help="Read the app role's new password from standard input."
        )

    def execute(self, *args, **options):
        # Before the system checks, which connect too: the app's login may not exist yet.
        use_owner_role()
        return super().execute(*args, **options)

    def handle(self, *args, password_stdin: bool, **options):
        password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
        app_login_create(password=password)
        role = settings.TOLERANCE_DB_APP_ROLE
        self.stdout.write(
            f"{role} can log in. Set DATABASE_URL=postgres://{role}:<password>@<host>/<db> for the web app and "
            "workers, and DATABASE_OWNER_URL to the owner's URL for migrate."
        )
