"""Load a licensed MedDRA ASCII release (LLT -> PT -> SOC, versioned) from the user's own copy.

    manage.py load_meddra /path/to/MedDRA_27_0_English/MedAscii
    manage.py load_meddra /path/to/release --meddra-version 27.0 --language English

Reads soc.asc, pt.asc, llt.asc and mdhier.asc ($-separated). Tolerance ships no MedDRA content: a
MedDRA subscription (MSSO) is required to hold and use the dictionary (docs/domain.md Part A §7).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from safety.dictionaries import DictionaryError, meddra_load


class Command(BaseCommand):
    help = "Load a MedDRA ASCII release (soc.asc, pt.asc, llt.asc, mdhier.asc) as a new, immutable version."

    def add_arguments(self, parser):
        parser.add_argument("folder")
        parser.add_argument("--meddra-version", dest="meddra_version", help="Overrides meddra_release.asc.")
        parser.add_argument("--language", help="Overrides meddra_release.asc (default English).")
        parser.add_argument("--encoding", default="utf-8")

    def handle(self, *args, folder, meddra_version=None, language=None, encoding="utf-8", **options):
        try:
            result = meddra_load(folder, version=meddra_version, language=language, encoding=encoding)
        except (OSError, UnicodeDecodeError, DictionaryError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"{result.release}: {result.socs} SOCs, {result.pts} PTs, {result.llts} LLTs, "
            f"{result.paths} hierarchy paths loaded."
        )
