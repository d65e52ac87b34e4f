"""Benchmark: how long an analysis stays stuck after its worker is killed, and how long a request
waits when the broker is down (issues 16 and 17).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres CELERY_BROKER_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python benchmarks/stuck_job_recovery.py [--participants 5000] [--runs 2] \\
        [--heartbeat 30 --stale 180 --check 60]

1. Creates a separate database (``--database``, default ``tolerance_stuck_bench``; dropped and
   re-created) and loads the durability benchmark's synthetic trial (benchmarks/durability_job.py),
   large enough that an analysis runs for several seconds; freezes one data cut.
2. Starts a real Celery worker (prefork, one child) with beat embedded (``-B``), in a process group
   of its own, with the given heartbeat interval, stale bound and stale-check interval (the
   production defaults unless told otherwise). The Redis database named is emptied first.
3. Per run: requests a new analysis; as soon as it is computing, SIGKILLs the whole group (worker,
   its pool child running the analysis, and beat: "kill -9 the worker and its child"); restarts the
   worker and beat at once, as a supervisor would; and times, from the kill: the job re-queued (beat
   saw its heartbeat go stale), running again, and its result stored.
4. Then points publishing at a dead broker and times an analysis request and the outbox relay.

The recovery time is bounded by stale bound + stale-check interval + worker start + the analysis.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from benchmarks.durability_job import CUT_DATE, _create_database, _database_url  # noqa: E402


def _worker(env: dict, log: Path, schedule: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-B",
        "-s",
        str(schedule),
        "--pool=prefork",
        "-c",
        "1",
        "--prefetch-multiplier=1",
        "-Q",
        "celery",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "INFO",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - fixed command line
            command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_ready(process: subprocess.Popen, log: Path, offset: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the worker exited:\n{log.read_text()[-3000:]}")
        with log.open("rb") as fh:
            fh.seek(offset)
            if b" ready." in fh.read():
                return
        time.sleep(0.2)
    raise SystemExit(f"the worker did not start:\n{log.read_text()[-3000:]}")


def _kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _poll(job_id: int, until, timeout: float):
    from analytics.models import AnalysisJob

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = AnalysisJob.objects.get(pk=job_id)
        if until(job):
            return job, time.monotonic()
        time.sleep(0.2)
    raise SystemExit(f"analysis {job_id} stuck: {job.status} {job.stage} {job.error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--heartbeat", type=int, default=30, help="TOLERANCE_JOB_HEARTBEAT_SECONDS")
    parser.add_argument("--stale", type=int, default=180, help="TOLERANCE_JOB_STALE_SECONDS")
    parser.add_argument("--check", type=int, default=60, help="TOLERANCE_STALE_CHECK_SECONDS (beat)")
    parser.add_argument("--database", default="tolerance_stuck_bench")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    args = parser.parse_args()

    base_url, broker = os.environ.get("DATABASE_URL", ""), os.environ.get("CELERY_BROKER_URL", "")
    if not base_url or not broker.startswith("redis://"):
        raise SystemExit("Set DATABASE_URL (any database on the server) and CELERY_BROKER_URL (a Redis db to empty).")
    database_url = _database_url(base_url, args.database)
    _create_database(base_url, args.database)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DJANGO_DEBUG": "False",
        "TOLERANCE_DB_ASSUME_APP_ROLE": "False",
        "TOLERANCE_JOB_HEARTBEAT_SECONDS": str(args.heartbeat),
        "TOLERANCE_JOB_STALE_SECONDS": str(args.stale),
        "TOLERANCE_STALE_CHECK_SECONDS": str(args.check),
    }
    os.environ.update(env)
    import django

    django.setup()
    import redis
    from django.contrib.auth import get_user_model

    from analytics import services
    from analytics.models import TaskOutbox
    from benchmarks.durability_job import build
    from trials.models import Study

    print(f"loading {args.participants} participants ...", flush=True)
    info = build(args.participants, "RA", 20240101)
    redis.Redis.from_url(broker).flushdb()
    study = Study.objects.get(pk=info["study_id"])
    actor = get_user_model().objects.get(pk=info["statistician_id"])
    cut = services.datacut_create(actor=actor, study=study, cut_date=CUT_DATE)
    redis.Redis.from_url(broker).flushdb()  # the cut's derivation task is not what is timed

    log = Path(tempfile.mkstemp(prefix="stuck-bench-worker-", suffix=".log")[1])
    schedule = Path(tempfile.mkdtemp(prefix="stuck-bench-beat-")) / "schedule"
    worker = _worker(env, log, schedule)
    _wait_ready(worker, log, 0)
    rows = []
    try:
        for run in range(1, args.runs + 1):
            job = services.analysis_request(actor=actor, data_cut=cut, spec={"grouping": "cohort", "seed": run})
            running, _ = _poll(job.pk, lambda j: j.status == "running" and j.progress >= 10, 600)
            _kill_group(worker)
            killed = time.monotonic()
            offset = log.stat().st_size
            worker = _worker(env, log, schedule)
            _wait_ready(worker, log, offset)
            started = time.monotonic() - killed
            first = running.attempts
            _, requeued = _poll(job.pk, lambda j, first=first: j.status != "running" or j.attempts > first, 1800)
            _, rerunning = _poll(job.pk, lambda j, first=first: j.status == "running" and j.attempts > first, 1800)
            done, finished = _poll(job.pk, lambda j: j.status in ("succeeded", "failed"), 1800)
            if done.status != "succeeded":
                raise SystemExit(f"run {run}: {done.status} {done.error}")
            compute = (done.finished_at - done.started_at).total_seconds()
            rows.append(
                {
                    "worker_restart": started,
                    "requeued": requeued - killed,
                    "running_again": rerunning - killed,
                    "recovered": finished - killed,
                    "compute": compute,
                    "attempts": done.attempts,
                }
            )
            print(
                f"run {run}: worker back {started:.1f} s; re-queued {requeued - killed:.1f} s; running again "
                f"{rerunning - killed:.1f} s; result stored {finished - killed:.1f} s after the kill "
                f"(the analysis itself {compute:.1f} s; attempts {done.attempts})",
                flush=True,
            )
    finally:
        _kill_group(worker)

    recovered = [row["recovered"] for row in rows]
    requeued = [row["requeued"] for row in rows]
    print()
    print(f"heartbeat {args.heartbeat} s, stale bound {args.stale} s, stale check every {args.check} s (beat)")
    print(
        f"kill -> re-queued: median {statistics.median(requeued):.1f} s (bound: stale + check = {args.stale + args.check} s)"
    )
    print(f"kill -> result stored: median {statistics.median(recovered):.1f} s, max {max(recovered):.1f} s")
    print("before the fix: nothing re-queued it; a new request for it did, once it was 10 minutes silent")

    # The broker down: an analysis request and the relay, timed against a refused connection.
    from celery import current_app

    current_app.conf.update(broker_write_url="redis://127.0.0.1:1/0")
    t0 = time.monotonic()
    job = services.analysis_request(actor=actor, data_cut=cut, spec={"grouping": "pooled"})
    answered = time.monotonic() - t0
    waiting = TaskOutbox.objects.filter(job=job, sent_at=None).exists()
    print(f"dead broker: analysis request answered in {answered:.2f} s; message waiting in the outbox: {waiting}")
    log.unlink(missing_ok=True)
    if not args.keep:
        import psycopg
        from django.db import connections
        from psycopg import sql

        connections.close_all()
        with psycopg.connect(_database_url(base_url, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(args.database)))


if __name__ == "__main__":
    main()
