"""Benchmark: the study audit export (``/studies/<code>/audit.csv``) against PostgreSQL's ``COPY`` of the
same audit events, with the export's memory.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/audit_export.py [--participants 5000] [--repeat 5] [--reuse]

1. Creates ``tolerance_bench_audit_export`` on the server of ``DATABASE_URL`` (dropped and re-created),
   migrates it and writes a trial through the real audit triggers (pghistory events, hash-chain
   seals, the who-and-why check): per participant the casebook (screening, consent, eligibility,
   enrolment, infusion, 12 scheduled visits, 10 of them done with a disease assessment, MRI reads),
   status changes, an adverse event, and for 2% of them a serious one with its SAE case, case
   version, expedited report and CRS grading; about 43 events per participant. ``--reuse`` measures
   the database an earlier run built instead (building 5,000 participants takes minutes).
2. Floor: ``COPY (SELECT * FROM <event table> WHERE <this study>) TO STDOUT`` for every audited
   table, in one REPEATABLE READ transaction, the bytes read the way the export reads them.
3. Export: the view itself, called as the study's data manager, its streamed body consumed. Floor
   and export alternate ``--repeat`` times (a busy moment on the machine hits both); the best and the
   median are printed. Memory is the Python allocation peak while streaming (tracemalloc, a separate
   run) and the growth of the resident set.

Prints both times, the ratio, the events and bytes, and the memory figures. Run it with two
``--participants`` values to see that the export's memory does not grow with the study.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "tolerance_bench_audit_export"
VISIT_DAYS = [7, 14, 28, 61, 91, 122, 182, 243, 304, 365, 547, 730]
DONE_VISITS = 10
MRI_VISITS = (3, 6, 9)


def _scratch_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{BENCH_DB}"))


def _create_database(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


def _rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(participants: int):
    """Write the trial through the audit triggers; return (study, data manager)."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.db.models import F

    from safety.dictionaries import ctcae_load_shipped
    from safety.models import AdverseEvent, CRSAssessment, CTCAETerm, ExpeditedReport, SAECase, SAECaseVersion
    from trials.audit import audit_context
    from trials.models import (
        Consent,
        ConsentDocument,
        DiseaseAssessment,
        DoseCohort,
        EligibilityAnswer,
        EligibilityCriterion,
        Infusion,
        MRIRead,
        Participant,
        Role,
        Site,
        Study,
        StudyMembership,
        Visit,
        VisitDefinition,
    )

    user_model = get_user_model()
    coordinator = user_model.objects.create(username="bench_coordinator", first_name="Bea", last_name="Bench")
    manager = user_model.objects.create(username="bench_dm")
    ctcae_load_shipped()
    headache = CTCAETerm.objects.get(version="5.0", term="Headache")
    crs_term = CTCAETerm.objects.get(version="5.0", term="Cytokine release syndrome")
    day0 = dt.datetime(2025, 3, 3, 9, tzinfo=dt.UTC)

    with audit_context(actor=coordinator, reason="benchmark build", channel="benchmark"), transaction.atomic():
        sites = [Site.objects.create(code=f"B{i:02d}", name=f"Bench hospital {i}", country="GB") for i in range(1, 6)]
        study = Study.objects.create(code="bench-audit", title="Audit export benchmark", indication="MS")
        study.sites.set(sites)
        StudyMembership.objects.create(user=manager, study=study, role=Role.DATA_MANAGER)
        cohort = DoseCohort.objects.create(
            study=study, number=1, label="1M/kg", planned_cells_per_kg=1_000_000, capacity=participants
        )
        definitions = [
            VisitDefinition.objects.create(
                study=study, code=f"d{day}", name=f"Day {day}", target_day=day, window_before=3, window_after=3
            )
            for day in VISIT_DAYS
        ]
        criteria = [
            EligibilityCriterion.objects.create(study=study, kind="inclusion", number=1, text="Aged 18 to 65 years"),
            EligibilityCriterion.objects.create(study=study, kind="exclusion", number=1, text="Active infection"),
        ]
        document = ConsentDocument.objects.create(study=study, version="1.0", effective_date=dt.date(2024, 1, 1))

        people = Participant.objects.bulk_create(
            Participant(
                study=study,
                site=sites[i % len(sites)],
                sequence=i // len(sites) + 1,
                subject_code=f"{sites[i % len(sites)].code}-{i // len(sites) + 1:05d}",
                sex="FM"[i % 2],
                birth_year=1960 + i % 40,
                screening_date=dt.date(2025, 1, 6),
            )
            for i in range(participants)
        )
        Consent.objects.bulk_create(
            Consent(participant=p, document=document, consent_date=dt.date(2025, 1, 6)) for p in people
        )
        EligibilityAnswer.objects.bulk_create(
            EligibilityAnswer(participant=p, criterion=c, answer=c.kind == "inclusion")
            for p in people
            for c in criteria
        )
        Infusion.objects.bulk_create(
            Infusion(
                participant=p,
                cohort=cohort,
                apheresis_date=dt.date(2025, 2, 1),
                manufacturing_lot=f"LOT-{p.pk:06d}",
                release_passed=True,
                viability_pct=Decimal("92.5"),
                total_viable_cells=Decimal(70_000_000),
                weight_kg=Decimal("70.0"),
                dose_cells_per_kg=Decimal(1_000_000),
                start_at=day0,
                end_at=day0 + dt.timedelta(minutes=30),
                infusion_date=day0.date(),
            )
            for p in people
        )
        visits = Visit.objects.bulk_create(
            Visit(
                participant=p,
                definition=d,
                planned_date=day0.date() + dt.timedelta(days=d.target_day),
                window_start=day0.date() + dt.timedelta(days=d.target_day - 3),
                window_end=day0.date() + dt.timedelta(days=d.target_day + 3),
            )
            for p in people
            for d in definitions
        )
        adverse_events = AdverseEvent.objects.bulk_create(
            AdverseEvent(
                participant=p,
                sequence=1,
                verbatim_term="Headache",
                ctcae_term=headache,
                ctcae_version="5.0",
                grade=1,
                onset="2025-03-10",
                end="2025-03-11",
                outcome="RECOVERED/RESOLVED",
                action_taken="NOT APPLICABLE",
                causality_product="unlikely",
                causality_rules="bench",
                treatment_emergent=True,
            )
            for p in people
        )

    done = [v for i, v in enumerate(visits) if i % len(VISIT_DAYS) < DONE_VISITS]
    mri = [v for i, v in enumerate(visits) if i % len(VISIT_DAYS) in MRI_VISITS]
    with audit_context(actor=coordinator, reason="visit done", channel="benchmark"), transaction.atomic():
        Participant.objects.filter(study=study).update(
            status="enrolled", cohort=cohort, enrolment_date=dt.date(2025, 1, 20)
        )
        Participant.objects.filter(study=study).update(status="in_follow_up")
        Visit.objects.filter(pk__in=[v.pk for v in done]).update(
            actual_date=F("planned_date"), weight_kg=Decimal("70.5")
        )
        DiseaseAssessment.objects.bulk_create(
            DiseaseAssessment(visit=v, assessment_date=v.planned_date, edss=Decimal("2.5")) for v in done
        )
        MRIRead.objects.bulk_create(
            MRIRead(visit=v, scan_date=v.planned_date, new_or_enlarging_t2=0, gd_enhancing=0, reader="Dr Read")
            for v in mri
        )

    serious = adverse_events[:: max(1, 50)]  # 2% of the participants
    with audit_context(actor=coordinator, reason="follow-up information", channel="benchmark"), transaction.atomic():
        aware = dt.datetime(2025, 3, 12, 8, tzinfo=dt.UTC)
        sae_events = AdverseEvent.objects.bulk_create(
            AdverseEvent(
                participant_id=ae.participant_id,
                sequence=2,
                category="CRS",
                verbatim_term="Cytokine release syndrome",
                ctcae_term=crs_term,
                ctcae_version="5.0",
                grade=3,
                onset="2025-03-11",
                ongoing=True,
                outcome="RECOVERING/RESOLVING",
                serious=True,
                hospitalisation=True,
                site_aware_at=aware,
                action_taken="NOT APPLICABLE",
                causality_product="probably",
                causality_rules="bench",
                treatment_emergent=True,
            )
            for ae in serious
        )
        cases = SAECase.objects.bulk_create(
            SAECase(adverse_event=ae, case_number=f"BENCH-{ae.pk}", site_aware_at=aware, sponsor_received_at=aware)
            for ae in sae_events
        )
        versions = SAECaseVersion.objects.bulk_create(
            SAECaseVersion(
                case=case,
                number=0,
                received_at=aware,
                reported_by=coordinator,
                narrative="Fever and hypotension on day 8.",
                snapshot={"grade": 3},
                fatal_or_life_threatening=False,
            )
            for case in cases
        )
        ExpeditedReport.objects.bulk_create(
            ExpeditedReport(
                case=case,
                kind="site_24h",
                recipient="Sponsor",
                case_version=version,
                started_at=aware,
                due_at=aware + dt.timedelta(hours=24),
                rule_version="bench",
            )
            for case, version in zip(cases, versions, strict=True)
        )
        CRSAssessment.objects.bulk_create(
            CRSAssessment(
                adverse_event=ae,
                assessed_at=aware,
                computed_grade=2,
                computed_reason="fever with hypotension without vasopressors",
                scale="ASTCT",
                rule_version="bench",
                final_grade=2,
                max_temperature_c=Decimal("39.2"),
                hypotension=True,
            )
            for ae in sae_events
        )
        AdverseEvent.objects.filter(pk__in=[ae.pk for ae in adverse_events[::5]]).update(grade=2)
    return study, manager


def floor_copy(study) -> tuple[float, int, int]:
    """``COPY`` of the study's audit events, table by table: (seconds, rows, bytes)."""
    from django.db import connection, transaction

    from trials.audit import scoped_event_models
    from trials.audit_export import scope_condition

    start = time.perf_counter()
    rows = size = 0
    with transaction.atomic(), connection.cursor() as wrapper:
        cursor = wrapper.cursor
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for event_model, filters in scoped_event_models(study, unblinded=True):
            where = scope_condition(event_model, filters, cursor)
            query = f"SELECT e.* FROM {event_model._meta.db_table} AS e WHERE {where}"  # noqa: S608
            block = bytearray()
            with cursor.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)") as copy:
                for data in copy:
                    rows += 1
                    block += data
                    if len(block) >= 256 * 1024:
                        size += len(block)
                        block.clear()
            size += len(block)
    return time.perf_counter() - start, rows, size


def export(study, manager) -> tuple[float, int, int]:
    """The export view, its streamed body consumed: (seconds, lines, bytes)."""
    from django.test import RequestFactory

    from trials.views import study_audit_export

    request = RequestFactory().get(f"/studies/{study.code}/audit.csv")
    request.user = manager
    start = time.perf_counter()
    response = study_audit_export(request, study_code=study.code)
    lines = size = 0
    for block in response.streaming_content:
        size += len(block)
        lines += block.count(b"\n")
    response.close()
    return time.perf_counter() - start, lines, size


def export_memory(study, manager) -> tuple[float, float, int]:
    """(tracemalloc peak MiB while streaming, resident-set growth MiB, blocks)."""
    from django.test import RequestFactory

    from trials.views import study_audit_export

    request = RequestFactory().get(f"/studies/{study.code}/audit.csv")
    request.user = manager
    rss_before = _rss_mib()
    tracemalloc.start()
    response = study_audit_export(request, study_code=study.code)
    blocks = 0
    for _block in response.streaming_content:
        blocks += 1
    response.close()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, _rss_mib() - rss_before, blocks


def _database_exists(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone() is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="measure the database a previous run built")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        sys.exit("Set DATABASE_URL to a PostgreSQL server (the benchmark creates its own database there).")
    reuse = args.reuse and _database_exists(base_url)
    if not reuse:
        _create_database(base_url)
    os.environ["DATABASE_URL"] = _scratch_url(base_url)
    os.environ["TOLERANCE_DB_ASSUME_APP_ROLE"] = "False"  # bulk loading as the owner; reads are the same
    os.environ["DJANGO_DEBUG"] = "False"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from trials.models import Study

    call_command("migrate", verbosity=0)  # a reused database may predate the latest migrations
    if reuse:
        study, manager = Study.objects.get(code="bench-audit"), get_user_model().objects.get(username="bench_dm")
        print(f"reusing {BENCH_DB}: {study.participants.count()} participants")
    else:
        started = time.perf_counter()
        study, manager = build(args.participants)
        print(f"built {args.participants} participants in {time.perf_counter() - started:.0f} s")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # the planner sees the sizes a live database would show

    floor_copy(study)  # warm the cache for both
    floors, exports = [], []
    for _ in range(args.repeat):  # alternated, so a busy moment on the machine hits both
        floors.append(floor_copy(study))
        exports.append(export(study, manager))
    floor_times, export_times = [t for t, _, _ in floors], [t for t, _, _ in exports]
    _, events, floor_bytes = floors[0]
    _, lines, export_bytes = exports[0]
    peak, rss_growth, blocks = export_memory(study, manager)

    print(f"audit events of the study: {events:,} ({floor_bytes / 2**20:.1f} MiB as COPY CSV)")
    print(f"export: {export_bytes / 2**20:.1f} MiB in {blocks} blocks, {lines:,} line ends")
    for name, pick in (("best", min), ("median", statistics.median)):
        floor_s, export_s = pick(floor_times), pick(export_times)
        print(
            f"{name} of {args.repeat}: COPY of the event tables {floor_s:.2f} s; "
            f"export {export_s:.2f} s (x{export_s / floor_s:.2f})"
        )
    print(f"export memory: Python peak {peak:.2f} MiB while streaming; resident set grew {rss_growth:.1f} MiB")


if __name__ == "__main__":
    main()
