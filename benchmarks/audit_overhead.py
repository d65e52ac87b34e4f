"""Audit-trail cost and integrity figures (docs/reliability.md (c)).

Builds a scratch database, writes clinical rows through the real audit triggers (pghistory events,
the hash-chain seal, the who-and-why check) and prints:

* median ms per single-row UPDATE with the audit triggers vs with every trigger disabled (the floor);
* a bulk UPDATE of N rows, tracked vs untracked;
* bytes per audit event;
* audit completeness (updates written vs update events stored);
* ``verify_audit`` time and rate (events per second), extrapolated to one million events.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python benchmarks/audit_overhead.py [--rows 10000]
The database named in DATABASE_URL is only used to create and drop ``tolerance_bench_audit``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "tolerance_bench_audit"


def _scratch_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{BENCH_DB}"))


def _create_database(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000, help="visit rows for the bulk update")
    parser.add_argument("--single", type=int, default=300, help="single-row updates timed per mode")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        sys.exit("Set DATABASE_URL to a PostgreSQL server (the benchmark creates its own database there).")
    _create_database(base_url)
    os.environ["DATABASE_URL"] = _scratch_url(base_url)
    os.environ["TOLERANCE_DB_ASSUME_APP_ROLE"] = "False"  # the benchmark also needs to disable triggers
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    call_command("migrate", verbosity=0)

    import datetime as dt
    from decimal import Decimal

    from django.contrib.auth import get_user_model

    from trials.audit import audit_context, audit_verify
    from trials.models import (
        ConsentDocument,
        DoseCohort,
        EligibilityCriterion,
        Participant,
        Site,
        Study,
        Visit,
        VisitDefinition,
    )

    user = get_user_model().objects.create(username="bench")
    site = Site.objects.create(code="B01", name="Bench", country="GB")
    study = Study.objects.create(code="bench", title="Benchmark", indication="MS")
    study.sites.add(site)
    DoseCohort.objects.create(study=study, number=1, label="1M/kg", planned_cells_per_kg=1_000_000, capacity=30_000)
    VisitDefinition.objects.create(study=study, code="d7", name="Day 7", target_day=7)
    EligibilityCriterion.objects.create(study=study, kind="inclusion", number=1, text="Adult")
    ConsentDocument.objects.create(study=study, version="1", effective_date=dt.date(2024, 1, 1))

    # Rows are created in bulk (one statement each); their insert events and seals are real.
    with audit_context(actor=user, channel="benchmark"), transaction.atomic():
        participants = Participant.objects.bulk_create(
            Participant(
                study=study,
                site=site,
                sequence=i,
                subject_code=f"B01-{i:06d}",
                sex="F",
                birth_year=1980,
                screening_date=dt.date(2025, 1, 1),
            )
            for i in range(1, args.rows + 1)
        )
        Visit.objects.bulk_create(
            Visit(participant=p, kind="unscheduled", actual_date=dt.date(2025, 2, 1), reason="bench")
            for p in participants
        )
    visit_ids = list(Visit.objects.values_list("pk", flat=True))

    def single_updates(disable_triggers: bool, offset: int) -> list[float]:
        timings = []
        for i, pk in enumerate(visit_ids[offset : offset + args.single]):
            start = time.perf_counter()
            with transaction.atomic(), audit_context(actor=user, reason="benchmark edit", channel="benchmark"):
                if disable_triggers:
                    with connection.cursor() as cursor:
                        cursor.execute("SET LOCAL session_replication_role = replica")
                Visit.objects.filter(pk=pk).update(weight_kg=Decimal(60 + i % 40))
            timings.append((time.perf_counter() - start) * 1000)
        return timings

    single_updates(False, 0)  # warm-up
    tracked = statistics.median(single_updates(False, args.single))
    floor = statistics.median(single_updates(True, 2 * args.single))

    def bulk(disable_triggers: bool, weight: int) -> float:
        start = time.perf_counter()
        with transaction.atomic(), audit_context(actor=user, reason="benchmark bulk edit", channel="benchmark"):
            if disable_triggers:
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL session_replication_role = replica")
            Visit.objects.update(weight_kg=Decimal(weight))
        return time.perf_counter() - start

    # pghistory records an update only when the row really changes: count the rows the bulk changes.
    changed_by_bulk = Visit.objects.exclude(weight_kg=Decimal(70)).count()
    bulk_tracked = bulk(False, 70)
    bulk_floor = bulk(True, 71)

    event_model = Visit.pgh_event_model
    update_events = event_model.objects.filter(pgh_label="update").count()
    expected_updates = 2 * args.single + changed_by_bulk  # warm-up + tracked singles + tracked bulk
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s)", [event_model._meta.db_table])
        event_bytes = cursor.fetchone()[0]
    total_events = event_model.objects.count()

    start = time.perf_counter()
    checked, problems = audit_verify()
    verify_seconds = time.perf_counter() - start

    print(f"rows: {args.rows} visits, {args.rows} participants; single-row samples: {args.single} per mode")
    print(
        f"single-row UPDATE, median: {tracked:.2f} ms audited vs {floor:.2f} ms without triggers "
        f"(overhead {100 * (tracked - floor) / floor:+.0f}%)"
    )
    print(
        f"bulk UPDATE of {args.rows} rows: {bulk_tracked:.2f} s audited vs {bulk_floor:.2f} s without triggers "
        f"(x{bulk_tracked / bulk_floor:.1f})"
    )
    print(f"bytes per visit audit event: {event_bytes / total_events:.0f}")
    print(
        f"audit completeness: {update_events} update events for {expected_updates} audited updates "
        f"({100 * update_events / expected_updates:.1f}%)"
    )
    print(
        f"verify_audit: {checked} links in {verify_seconds:.2f} s ({checked / verify_seconds:,.0f} links/s; "
        f"~{1_000_000 / (checked / verify_seconds) / 60:.1f} min per million); problems: {len(problems)}"
    )


if __name__ == "__main__":
    main()
