"""Data: the shipped CTCAE v5.0 subset (safety/data/ctcae_v5_subset.csv), so the demo can code AEs
without a download. Reads the CSV inline (no app code in migrations); rerunnable; no-op reverse.
The full NCI file is loaded with ``manage.py load_ctcae --ctcae-version 5.0 <file.csv>``."""

import csv
from pathlib import Path

from django.db import migrations

CSV = Path(__file__).resolve().parent.parent / "data" / "ctcae_v5_subset.csv"
FIELDS = ("soc", "nci_code", "definition", "grade_1", "grade_2", "grade_3", "grade_4", "grade_5")


def load(apps, schema_editor):
    CTCAETerm = apps.get_model("safety", "CTCAETerm")
    with open(CSV, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    existing = set(CTCAETerm.objects.filter(version="5.0").values_list("term", flat=True))
    CTCAETerm.objects.bulk_create(
        CTCAETerm(version="5.0", term=row["term"], **{name: row[name] for name in FIELDS})
        for row in rows
        if row["term"] not in existing
    )


class Migration(migrations.Migration):
    dependencies = [("safety", "0001_adverse_events_sae_reporting_dlt")]

    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
