"""Benchmark: the durability analysis job end to end on a large synthetic trial, against the floor.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/durability_job.py [--participants 100000] [--indication RA|T1D]

1. Creates a separate database (``--database``, default ``tolerance_bench``; dropped and re-created)
   on the server of ``DATABASE_URL``, migrates it, and loads a synthetic trial with PostgreSQL COPY:
   ``--participants`` infused participants in three dose cohorts, 12 disease-activity visits each over
   24 months (about 1.2 million assessment rows for 100,000 participants), missed visits, withdrawals
   and deaths. The load is synthetic and bypasses the audit triggers (``session_replication_role``).
2. Job (a fresh process): ``datacut_create`` (one COPY per frame, checksums, stored snapshot) and
   ``analysis_request`` with Celery eager, so the task runs inline: derivation of remission per
   assessment (stored with COPY), time-to-event rows, every analysis, the plots, the stored result.
3. Floor (a fresh process): one raw SQL read of the columns the analysis needs, plus the lifelines
   fits (KM, log-rank, Cox with ``batch_mode=True``, Aalen-Johansen, RMST, Turnbull) on the prepared
   participant-level frame the job made.

It prints both times, the ratio, the job's stages and each process's peak resident memory (VmHWM, or ``getrusage``;
``--tracemalloc`` adds the Python allocation peak, at some cost in speed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

CUT_DATE = dt.date(2026, 6, 30)
VISIT_DAYS = [28, 61, 91, 122, 152, 182, 243, 304, 365, 487, 608, 730]


def _database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _setup_django(database_url: str, *, owner: bool) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    os.environ["DJANGO_DEBUG"] = "False"
    os.environ["CELERY_BROKER_URL"] = ""  # eager: the task runs inline in this process
    os.environ["TOLERANCE_DB_ASSUME_APP_ROLE"] = "False" if owner else "True"
    import django

    django.setup()


def _peak_rss_mib() -> float:
    """Peak resident memory of this process. Linux's VmHWM belongs to the process image (ru_maxrss
    would carry over the driver's peak through fork and exec); getrusage elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# Build: a synthetic trial loaded with COPY
# ---------------------------------------------------------------------------------------------


def _create_database(base_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(_database_url(base_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _copy(cursor, table: str, columns: list[str], rows) -> int:
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    count = 0
    with cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def build(participants: int, indication: str, seed: int) -> dict:
    """Load the synthetic trial; returns the ids the job needs."""
    import numpy as np
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from analytics import services as analytics_services
    from trials.models import DoseCohort, Role, Site, Study, StudyMembership, VisitDefinition

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    statistician = get_user_model().objects.create_user("bench-stats")  # no password: cannot sign in
    sites = [Site.objects.create(code=f"B{n:02d}", name=f"Bench site {n}", country="GB") for n in range(1, 11)]
    study = Study.objects.create(code="bench", title="Synthetic durability benchmark", indication=indication)
    study.sites.set(sites)
    StudyMembership.objects.create(user=statistician, study=study, role=Role.STATISTICIAN)
    cohorts = [
        DoseCohort.objects.create(
            study=study, number=n, label=f"{dose}M/kg", planned_cells_per_kg=dose * 1_000_000, capacity=30_000
        )
        for n, dose in ((1, 1), (2, 5), (3, 20))
    ]
    definitions = [VisitDefinition.objects.create(study=study, code="d0", name="Day 0", target_day=0)]
    for day in VISIT_DAYS:
        definitions.append(
            VisitDefinition.objects.create(
                study=study,
                code=f"v{day}",
                name=f"Day {day}",
                target_day=day,
                window_before=7,
                window_after=7,
                forms_due=["vitals", "disease_activity"],
            )
        )
    rule = "sdai" if indication == "RA" else "idaa1c"
    analytics_services.remission_definition_set(
        actor=statistician,
        study=study,
        name="SDAI remission" if indication == "RA" else "IDAA1c partial remission",
        rule=rule,
        parameters={},
        sap={"non_responders": "censor"},
        reason="benchmark",
    )

    rng = np.random.default_rng(seed)
    n = participants
    now = timezone.now()
    ids = np.arange(1, n + 1)
    cohort_index = rng.integers(0, 3, n)
    site_index = rng.integers(0, len(sites), n)
    infusion = np.datetime64("2021-06-01") + rng.integers(0, 1100, n).astype("timedelta64[D]")
    infusion_dates = infusion.astype(dt.date)
    # Disposition: 5 % withdraw, 1 % die, at a random point of follow-up.
    fate = rng.random(n)
    fate_day = rng.integers(40, 700, n)
    base = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)

    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        cursor.execute("SET session_replication_role = replica")  # synthetic load: no audit/FK triggers
        _copy(
            cursor,
            "trials_participant",
            [
                "id",
                "version",
                "created_at",
                "updated_at",
                "void_reason",
                "study_id",
                "site_id",
                "subject_code",
                "sequence",
                "sex",
                "birth_year",
                "screening_date",
                "status",
                "screen_failure_reason",
                "cohort_id",
                "enrolment_date",
                "is_locked",
            ],
            (
                (
                    int(pid),
                    1,
                    now,
                    now,
                    "",
                    study.pk,
                    sites[site_index[i]].pk,
                    f"BN-{pid:06d}",
                    int(pid),
                    "F" if pid % 2 else "M",
                    1980,
                    infusion_dates[i] - dt.timedelta(days=40),
                    "in_follow_up",
                    "",
                    cohorts[cohort_index[i]].pk,
                    infusion_dates[i] - dt.timedelta(days=30),
                    False,
                )
                for i, pid in enumerate(ids)
            ),
        )
        _copy(
            cursor,
            "trials_infusion",
            [
                "id",
                "version",
                "created_at",
                "updated_at",
                "void_reason",
                "participant_id",
                "number",
                "cohort_id",
                "apheresis_date",
                "manufacturing_lot",
                "release_passed",
                "viability_pct",
                "total_viable_cells",
                "weight_kg",
                "dose_cells_per_kg",
                "start_at",
                "end_at",
                "infusion_date",
                "interrupted",
                "interruption_reason",
                "premedication",
            ],
            (
                (
                    int(pid),
                    1,
                    now,
                    now,
                    "",
                    int(pid),
                    1,
                    cohorts[cohort_index[i]].pk,
                    infusion_dates[i] - dt.timedelta(days=21),
                    "LOT",
                    True,
                    "92.5",
                    "70000000",
                    "70.0",
                    "1000000",
                    base + dt.timedelta(days=(infusion_dates[i] - base.date()).days, hours=9),
                    base + dt.timedelta(days=(infusion_dates[i] - base.date()).days, hours=10),
                    infusion_dates[i],
                    False,
                    "",
                    "",
                )
                for i, pid in enumerate(ids)
            ),
        )
        visits, assessments, dispositions = _visit_rows(
            rng, n, cohort_index, infusion_dates, fate, fate_day, definitions, indication, now
        )
        _copy(cursor, "trials_visit", VISIT_COLUMNS, visits)
        _copy(cursor, "trials_diseaseassessment", ASSESSMENT_COLUMNS, assessments)
        _copy(cursor, "trials_disposition", DISPOSITION_COLUMNS, dispositions)
        for table in ("trials_participant", "trials_infusion", "trials_visit", "trials_diseaseassessment"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        cursor.execute("SET session_replication_role = origin")
        cursor.execute("ANALYZE")
        cursor.execute("SELECT count(*) FROM trials_diseaseassessment")
        assessments_loaded = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM trials_visit")
        visits_loaded = cursor.fetchone()[0]
    return {
        "study_id": study.pk,
        "statistician_id": statistician.pk,
        "participants": n,
        "visits": visits_loaded,
        "assessments": assessments_loaded,
        "build_seconds": time.perf_counter() - started,
    }


VISIT_COLUMNS = [
    "id",
    "version",
    "created_at",
    "updated_at",
    "void_reason",
    "participant_id",
    "definition_id",
    "kind",
    "planned_date",
    "window_start",
    "window_end",
    "actual_date",
    "missed",
    "missed_reason",
    "reason",
]
ASSESSMENT_COLUMNS = [
    "id",
    "version",
    "created_at",
    "updated_at",
    "void_reason",
    "visit_id",
    "assessment_date",
    "hba1c",
    "hba1c_unit",
    "insulin_u_per_kg_day",
    "tender_joints_28",
    "swollen_joints_28",
    "crp",
    "crp_unit",
    "esr_mm_h",
    "patient_global_mm",
    "evaluator_global_mm",
]
DISPOSITION_COLUMNS = [
    "id",
    "version",
    "created_at",
    "updated_at",
    "void_reason",
    "participant_id",
    "kind",
    "disposition_date",
    "reason",
    "death_date",
]


def _values(rng, remission: bool, indication: str, mg_dl: bool):
    """Raw inputs in the casebook's units: (hba1c, unit, insulin, tjc, sjc, crp, crp_unit, esr, pga, ega)."""
    if indication == "T1D":
        if remission:
            hba1c, dose = rng.uniform(5.5, 7.0), rng.uniform(0.1, 0.45)
        else:
            hba1c, dose = rng.uniform(7.0, 10.5), rng.uniform(0.5, 1.2)
        return (f"{hba1c:.1f}", "%", f"{dose:.2f}", None, None, None, "", None, None, None)
    if remission:
        tjc, sjc, crp, pga, ega = rng.integers(0, 2), rng.integers(0, 2), rng.uniform(0.5, 6), 0, 0
        pga, ega = rng.integers(0, 15), rng.integers(0, 12)
    else:
        tjc, sjc, crp = rng.integers(2, 16), rng.integers(1, 11), rng.uniform(4, 60)
        pga, ega = rng.integers(25, 90), rng.integers(20, 80)
    crp_text, unit = (f"{crp / 10:.2f}", "mg/dL") if mg_dl else (f"{crp:.1f}", "mg/L")
    return (None, "", None, int(tjc), int(sjc), crp_text, unit, int(rng.integers(5, 60)), int(pga), int(ega))


def _visit_rows(rng, n, cohort_index, infusion_dates, fate, fate_day, definitions, indication, now):
    visits, assessments, dispositions = [], [], []
    visit_id = assessment_id = 0
    scheduled = definitions[1:]
    relapse_rate = (0.10, 0.07, 0.04)
    onset_rate = (0.35, 0.45, 0.55)
    for i in range(n):
        pid = i + 1
        day0 = infusion_dates[i]
        cohort = cohort_index[i]
        withdrawn = fate[i] < 0.05
        died = 0.05 <= fate[i] < 0.06
        end_day = int(fate_day[i]) if (withdrawn or died) else 10_000
        mg_dl = pid % 3 == 0
        in_remission = False
        last_done = day0
        for definition in scheduled:
            visit_id += 1
            planned = day0 + dt.timedelta(days=definition.target_day)
            row_end = planned + dt.timedelta(days=7)
            if definition.target_day > end_day:
                visits.append(
                    (
                        visit_id,
                        1,
                        now,
                        now,
                        "",
                        pid,
                        definition.pk,
                        "scheduled",
                        planned,
                        planned - dt.timedelta(7),
                        row_end,
                        None,
                        False,
                        "",
                        "",
                    )
                )
                continue
            if rng.random() < 0.04:
                visits.append(
                    (
                        visit_id,
                        1,
                        now,
                        now,
                        "",
                        pid,
                        definition.pk,
                        "scheduled",
                        planned,
                        planned - dt.timedelta(7),
                        row_end,
                        None,
                        True,
                        "unwell",
                        "",
                    )
                )
                continue
            actual = planned + dt.timedelta(days=int(rng.integers(-3, 4)))
            last_done = actual
            visits.append(
                (
                    visit_id,
                    1,
                    now,
                    now,
                    "",
                    pid,
                    definition.pk,
                    "scheduled",
                    planned,
                    planned - dt.timedelta(7),
                    row_end,
                    actual,
                    False,
                    "",
                    "",
                )
            )
            if in_remission:
                in_remission = rng.random() >= relapse_rate[cohort]
            else:
                in_remission = rng.random() < onset_rate[cohort]
            assessment_id += 1
            assessments.append(
                (assessment_id, 1, now, now, "", visit_id, actual, *_values(rng, in_remission, indication, mg_dl))
            )
        if withdrawn:
            dispositions.append(
                (
                    len(dispositions) + 1,
                    1,
                    now,
                    now,
                    "",
                    pid,
                    "withdrawn",
                    last_done + dt.timedelta(days=1),
                    "moved",
                    None,
                )
            )
        elif died:
            death = day0 + dt.timedelta(days=end_day)
            dispositions.append((len(dispositions) + 1, 1, now, now, "", pid, "death", death, "", death))
    return visits, assessments, dispositions


# ---------------------------------------------------------------------------------------------
# The job, end to end
# ---------------------------------------------------------------------------------------------


def run_job(info: dict, frame_path: str) -> dict:
    from django.contrib.auth import get_user_model

    from analytics import datacut, services
    from analytics.models import AnalysisJob
    from trials.models import Study

    baseline = _peak_rss_mib()
    stages: list[tuple[str, float]] = []
    original_progress = services._Progress.__call__

    def timed_progress(self, percent, stage):
        stages.append((stage, time.perf_counter()))
        return original_progress(self, percent, stage)

    services._Progress.__call__ = timed_progress
    # The cut's per-assessment table is stored by its own task, on another worker in production: here
    # it is not run inline but in a phase (a process) of its own, timed apart ("materialise").
    materialised = {}
    original_outbox_add = services.outbox_add

    def outbox_add(*, task, args, **subject):
        if task == services.MATERIALISE_TASK:  # kept for its own phase, not run inline here
            materialised.setdefault("cut_id", args[0])
            return None
        return original_outbox_add(task=task, args=args, **subject)

    services.outbox_add = outbox_add
    captured = {}
    original_checksum = datacut.frame_checksum

    def capture(frame):
        captured["frame"] = frame
        return original_checksum(frame)

    datacut.frame_checksum = capture

    study = Study.objects.get(pk=info["study_id"])
    actor = get_user_model().objects.get(pk=info["statistician_id"])
    t0 = time.perf_counter()
    cut = services.datacut_create(actor=actor, study=study, cut_date=CUT_DATE)
    t1 = time.perf_counter()
    cut_seconds = t1 - t0
    job = services.analysis_request(actor=actor, data_cut=cut, spec={"grouping": "cohort"})
    t2 = time.perf_counter()
    job = AnalysisJob.objects.get(pk=job.pk)
    if job.status != "succeeded":
        raise SystemExit(f"the job did not succeed: {job.status} {job.error}")
    marks = [("job: claimed", t1)] + stages + [("done", t2)]
    breakdown = [("data cut (frames, checksums, stored)", round(cut_seconds, 3))]
    breakdown += [(name, round(marks[k + 1][1] - at, 3)) for k, (name, at) in enumerate(marks[:-1])]
    with open(frame_path, "wb") as fh:
        pickle.dump(captured["frame"], fh)
    numbers = job.result.numbers
    return {
        "end_to_end_seconds": cut_seconds + (t2 - t1),
        "data_cut_seconds": cut_seconds,
        "cut_id": materialised.get("cut_id"),
        "job_seconds": t2 - t1,
        "breakdown": breakdown,
        "cut_rows": {name: f["rows"] for name, f in cut.manifest["frames"].items()},
        "analysed": numbers["input"]["participants_analysed"],
        "events": numbers["events"],
        "peak_rss_mib": _peak_rss_mib(),
        "baseline_rss_mib": baseline,
        "medians": {g["group"]: g["median"]["median"] for g in numbers["kaplan_meier"]["groups"]},
    }


# ---------------------------------------------------------------------------------------------
# The floor: one raw SQL read + the lifelines fits on the prepared frame
# ---------------------------------------------------------------------------------------------

FLOOR_QUERY = """
COPY (
  SELECT v.participant_id, c.number AS cohort, i.infusion_date,
         COALESCE(a.assessment_date, v.actual_date, v.planned_date) AS visit_date, v.missed,
         {columns}, d.kind, d.disposition_date, d.death_date
  FROM trials_visit v
  JOIN trials_participant p ON p.id = v.participant_id
  JOIN trials_infusion i ON i.participant_id = p.id AND i.number = 1 AND i.voided_at IS NULL
  JOIN trials_dosecohort c ON c.id = i.cohort_id
  LEFT JOIN trials_diseaseassessment a ON a.visit_id = v.id AND a.voided_at IS NULL
  LEFT JOIN trials_disposition d ON d.participant_id = p.id AND d.voided_at IS NULL
  WHERE p.study_id = {study} AND p.voided_at IS NULL AND v.voided_at IS NULL
) TO STDOUT WITH (FORMAT csv, HEADER true)
"""
FLOOR_COLUMNS = {
    "RA": "a.tender_joints_28, a.swollen_joints_28, a.crp, a.crp_unit, a.patient_global_mm, a.evaluator_global_mm",
    "T1D": "a.hba1c, a.hba1c_unit, a.insulin_u_per_kg_day",
}


def run_materialise(cut_id: int) -> dict:
    """The separate task that stores a cut's per-assessment derivations (RemissionAssessment)."""
    from analytics import services

    baseline = _peak_rss_mib()
    started = time.perf_counter()
    rows = services.remission_assessments_materialise(cut_id=cut_id)
    return {
        "seconds": time.perf_counter() - started,
        "rows": rows,
        "peak_rss_mib": _peak_rss_mib(),
        "baseline_rss_mib": baseline,
    }


def run_floor(info: dict, frame_path: str, indication: str) -> dict:
    import numpy as np
    import pandas as pd
    from django.db import connection
    from lifelines import AalenJohansenFitter, CoxPHFitter, KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test
    from lifelines.utils import restricted_mean_survival_time

    from analytics.compute import TURNBULL_TOLERANCE

    with open(frame_path, "rb") as fh:
        frame = pickle.load(fh)  # noqa: S301 - our own file, written by the job phase
    baseline = _peak_rss_mib()
    t0 = time.perf_counter()
    query = FLOOR_QUERY.format(columns=FLOOR_COLUMNS[indication], study=int(info["study_id"]))
    buffer = io.BytesIO()
    with connection.cursor() as cursor, cursor.cursor.copy(query) as copy:
        for chunk in copy:
            buffer.write(chunk)
    buffer.seek(0)
    rows = pd.read_csv(buffer)
    t1 = time.perf_counter()
    # The same fits as the job: KM (overall and per group), RMST, Aalen-Johansen and Turnbull (same
    # tolerance) per group, log-rank across groups, Cox on log10 dose with its PH test.
    with np.errstate(all="ignore"):
        KaplanMeierFitter().fit(frame["duration"], frame["event"])
        for label in sorted(frame["group"].unique()):
            part = frame[frame["group"] == label]
            kmf = KaplanMeierFitter().fit(part["duration"], part["event"])
            restricted_mean_survival_time(kmf, t=730)
            codes = part["event_code"].to_numpy()
            if (codes == 1).any():
                AalenJohansenFitter(seed=1).fit(part["cr_duration"].to_numpy() + 1.0, codes, event_of_interest=1)
            upper = part["upper"].astype(float).to_numpy()
            KaplanMeierFitter().fit_interval_censoring(
                part["lower"].astype(float).to_numpy(), upper, tol=TURNBULL_TOLERANCE
            )
        multivariate_logrank_test(frame["duration"], frame["group"], frame["event"])
        cox_frame = frame[["duration", "event", "log10_dose"]].astype(float)
        cph = CoxPHFitter().fit(cox_frame, "duration", "event", batch_mode=True)
        proportional_hazard_test(cph, cox_frame, time_transform="rank")
    t2 = time.perf_counter()
    return {
        "floor_seconds": t2 - t0,
        "read_seconds": t1 - t0,
        "fits_seconds": t2 - t1,
        "rows_read": len(rows),
        "frame_rows": len(frame),
        "peak_rss_mib": _peak_rss_mib(),
        "baseline_rss_mib": baseline,
        "numpy": np.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _phase(args, phase: str, info_path: str, frame_path: str) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--info", info_path, "--frame", frame_path]
    command += ["--indication", args.indication, "--database", args.database]
    if args.tracemalloc:
        command.append("--tracemalloc")
    out = subprocess.run(command, check=False, capture_output=True, text=True, env=os.environ.copy())  # noqa: S603
    if out.returncode != 0:
        raise SystemExit(f"the {phase} phase failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--indication", choices=["RA", "T1D"], default="RA")
    parser.add_argument("--database", default="tolerance_bench")
    parser.add_argument("--seed", type=int, default=20240101)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the Python allocation peak")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    parser.add_argument("--build-only", action="store_true", help="load the trial and stop (implies --keep)")
    parser.add_argument("--phase", choices=["job", "floor", "materialise"], help=argparse.SUPPRESS)
    parser.add_argument("--info", help=argparse.SUPPRESS)
    parser.add_argument("--frame", help=argparse.SUPPRESS)
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        raise SystemExit("Set DATABASE_URL to a PostgreSQL server (the benchmark creates its own database there).")

    if args.phase:
        _setup_django(os.environ["TOLERANCE_BENCH_URL"], owner=True)
        info = json.loads(Path(args.info).read_text())
        if args.tracemalloc:
            tracemalloc.start()
        if args.phase == "job":
            result = run_job(info, args.frame)
        elif args.phase == "materialise":
            result = run_materialise(int(info["cut_id"]))
        else:
            result = run_floor(info, args.frame, args.indication)
        if args.tracemalloc:
            result["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        print(json.dumps(result, default=str))
        return

    bench_url = _database_url(base_url, args.database)
    os.environ["TOLERANCE_BENCH_URL"] = bench_url
    print(
        f"building {args.participants:,} participants ({args.indication}) in database {args.database} ...", flush=True
    )
    _create_database(base_url, args.database)
    _setup_django(bench_url, owner=True)
    info = build(args.participants, args.indication, args.seed)
    print(
        f"  loaded {info['participants']:,} participants, {info['visits']:,} visits, "
        f"{info['assessments']:,} assessments in {info['build_seconds']:.1f} s",
        flush=True,
    )
    from django.db import connections

    connections.close_all()
    if args.build_only:
        print(json.dumps(info))
        return
    with tempfile.TemporaryDirectory() as tmp:
        info_path, frame_path = str(Path(tmp) / "info.json"), str(Path(tmp) / "frame.pickle")
        Path(info_path).write_text(json.dumps(info))
        job = _phase(args, "job", info_path, frame_path)
        Path(info_path).write_text(json.dumps({**info, "cut_id": job["cut_id"]}))
        stored = _phase(args, "materialise", info_path, frame_path)
        floor = _phase(args, "floor", info_path, frame_path)

    ratio = job["end_to_end_seconds"] / floor["floor_seconds"]
    print(
        f"\njob end to end      {job['end_to_end_seconds']:8.2f} s  (data cut {job['data_cut_seconds']:.2f} s, job {job['job_seconds']:.2f} s)"
    )
    for name, seconds in job["breakdown"]:
        print(f"    {name:<42} {seconds:8.2f} s")
    print(
        f"floor               {floor['floor_seconds']:8.2f} s  (one SQL read {floor['read_seconds']:.2f} s of {floor['rows_read']:,} rows, lifelines fits {floor['fits_seconds']:.2f} s)"
    )
    print(f"ratio job / floor   {ratio:8.2f}")
    print(
        f"separate task       {stored['seconds']:8.2f} s  storing the cut's {stored['rows']:,} "
        "per-assessment derivations (RemissionAssessment; its own worker process in production), "
        f"peak memory {stored['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"peak memory (VmHWM) analysis {job['peak_rss_mib']:.0f} MiB (after imports {job['baseline_rss_mib']:.0f} MiB), floor {floor['peak_rss_mib']:.0f} MiB"
    )
    if args.tracemalloc:
        print(
            f"tracemalloc peak    job {job['tracemalloc_peak_mib']:.0f} MiB, floor {floor['tracemalloc_peak_mib']:.0f} MiB"
        )
    print(f"cut frames          {job['cut_rows']}; analysed {job['analysed']:,} participants, {job['events']:,} events")
    print(f"KM medians (days)   {job['medians']}")
    if not args.keep:
        import psycopg
        from psycopg import sql

        with psycopg.connect(_database_url(base_url, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(args.database)))


if __name__ == "__main__":
    main()
