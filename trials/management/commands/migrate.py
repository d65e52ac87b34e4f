"""``migrate`` runs as the table owner: the app role cannot create tables (trials/dbroles.py)."""

from django.core.management.commands.migrate import Command as DjangoMigrate

from trials.dbroles import use_owner_role


class Command(DjangoMigrate):
    def handle(self, *args, **options):
        use_owner_role(options["database"])
        return super().handle(*args, **options)
