"""``migrate`` runs as the table owner: the app role cannot create tables (trials/dbroles.py)."""

from django.core.management.commands.migrate import Command as DjangoMigrate

from trials.dbroles import use_owner_role


class Command(DjangoMigrate):
    def execute(self, *args, **options):
        # Before the system checks, which connect too: the app's login may not exist yet.
        use_owner_role(options["database"])
        return super().execute(*args, **options)
