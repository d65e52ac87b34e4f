"""Load CTCAE terms: the shipped v5.0 subset, or the full NCI spreadsheet saved as CSV.

    manage.py load_ctcae                                   # the shipped v5.0 subset (idempotent)
    manage.py load_ctcae --ctcae-version 5.0 CTCAE_v5.0.csv      # the full file downloaded from NCI CTEP
    manage.py load_ctcae --ctcae-version 6.0 CTCAE_v6.0.csv      # v6.0 coexists with v5.0

Download the spreadsheet from https://ctep.cancer.gov/protocolDevelopment/electronic_applications/ctc.htm,
accept NCI's terms, and save it as CSV (UTF-8). The MedDRA code column is not imported.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from safety.dictionaries import SHIPPED_CTCAE, SHIPPED_CTCAE_VERSION, DictionaryError, ctcae_load_file


class Command(BaseCommand):
    help = "Load CTCAE terms and grade texts (the shipped v5.0 subset, or an NCI spreadsheet saved as CSV)."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", help="CSV file; omit to load the shipped v5.0 subset.")
        parser.add_argument("--ctcae-version", dest="ctcae_version", help="CTCAE version of the file, e.g. 5.0 or 6.0.")
        parser.add_argument("--encoding", default="utf-8-sig")

    def handle(self, *args, path=None, ctcae_version=None, encoding="utf-8-sig", **options):
        if path is None:
            path, ctcae_version = SHIPPED_CTCAE, ctcae_version or SHIPPED_CTCAE_VERSION
        elif not ctcae_version:
            raise CommandError("Give the CTCAE version of the file with --ctcae-version (e.g. 5.0).")
        try:
            result = ctcae_load_file(path, version=ctcae_version, encoding=encoding)
        except (OSError, UnicodeDecodeError, DictionaryError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"CTCAE v{ctcae_version}: {result.created} terms added, {result.updated} updated, "
            f"{result.unchanged} unchanged."
        )
