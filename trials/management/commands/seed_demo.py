"""``manage.py seed_demo``: build (or rebuild) the synthetic demo trial. See the help text."""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections, transaction
from django.utils import timezone
from pghistory.models import Context

from trials.dbroles import event_models, use_owner_role
from trials.management import demo_trial
from trials.models import Participant, ParticipantStatus, Site, Study, StudyMembership

DEMO_STUDY_CODES = tuple(spec.code for spec in demo_trial.STUDIES)


class Command(BaseCommand):
    help = (
        "Build the synthetic demo trial: three Treg studies (treg-ms-01, treg-t1d-01, treg-ra-01) at three "
        "sites, ~60 participants each at every stage of follow-up, and one demo user per role (logins "
        "printed at the end). Clinical data are written through trials.services, so they obey every rule "
        "and are audited. Dates are relative to today; --seed fixes the randomness, so the same seed on "
        "the same day gives the same demo. "
        "RESET: if the demo studies already exist, the command first empties, with TRUNCATE ... CASCADE, "
        "every table of the trials app (study build, casebook, memberships, access log, signatures), "
        "every audit event table, the audit hash chain and the pghistory context table, then rebuilds. "
        "This destroys ALL trial and audit data in the database, so it runs as the table owner and refuses "
        "to run when the database holds a study that is not one of the demo studies, or when "
        "TOLERANCE_PRODUCTION is set, unless --force is given. User accounts are kept; the demo users' "
        "passwords are reset. "
        "SPEED: the three studies are seeded in parallel worker processes (--jobs); the records are the "
        "same whatever --jobs is, but with more than one job database ids and the order of audit events "
        "interleave differently from run to run. If the command fails half-way, run it again: it resets."
    )

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=20150101, help="Random seed (default: %(default)s).")
        parser.add_argument(
            "--force",
            action="store_true",
            help="Reset even a database holding non-demo studies, or a production one. Destroys their data.",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            # More workers than cores only adds contention, chiefly on the audit chain's lock.
            default=min(len(DEMO_STUDY_CODES), os.cpu_count() or 1),
            help="Worker processes seeding one study each, at most this many at once (default: %(default)s; "
            "1 seeds in this process).",
        )

    def handle(self, *args, seed: int, force: bool, jobs: int, **options):
        started = time.monotonic()
        # TRUNCATE of audit tables is refused to the application role: work as the owner, like migrate.
        use_owner_role()
        self._check_safe(force)
        if Study.objects.exists() or Site.objects.exists():
            self.stdout.write(
                self.style.WARNING("Demo data found: resetting the demo (TRUNCATE of trial and audit tables).")
            )
            self._reset()

        today = timezone.now().date()  # the UTC date: never after clinical_today(), so nothing is "in the future"
        builder = demo_trial.DemoBuilder(seed=seed, today=today)
        with transaction.atomic():
            builder.build_users()
            studies = builder.build_studies()
        # Not inside one transaction: every service owns its own (atomic(durable=True)).
        if jobs > 1:
            self._seed_in_processes(builder, studies, jobs)
        else:
            passwords = builder.hash_passwords()
            with relaxed_commits():
                for study, spec in zip(studies, demo_trial.STUDIES, strict=True):
                    builder.seed_study(study, spec)
            builder.save_passwords(passwords)

        self._print_counts(studies)
        self._print_logins()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo built in {time.monotonic() - started:.1f} s (seed {seed}, today {today}, jobs {jobs})."
            )
        )

    def _seed_in_processes(self, builder: demo_trial.DemoBuilder, studies: list[Study], jobs: int) -> None:
        """Each study in a forked worker, at most ``jobs`` at a time: the services' validation queries
        are CPU-bound in Python, so this is what puts a second core to work. The studies share no
        row the services write (only the audit chain, which its trigger serialises)."""
        context = multiprocessing.get_context("fork")
        connections.close_all()  # a forked child must open its own connection, never share ours
        pending = list(zip(studies, demo_trial.STUDIES, strict=True))
        running: list[tuple[multiprocessing.Process, Connection]] = []
        failures: list[str] = []
        passwords = None
        while pending or running:
            while pending and len(running) < jobs:
                study, spec = pending.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(
                    target=_seed_study_in_child, args=(builder, study, spec, sender), name=study.code
                )
                process.start()
                sender.close()
                running.append((process, receiver))
            if not pending and passwords is None:
                passwords = builder.hash_passwords()  # threads only once every fork is done
            wait([process.sentinel for process, _ in running])
            for process, receiver in [w for w in running if not w[0].is_alive()]:
                running.remove((process, receiver))
                try:
                    error = receiver.recv()
                except EOFError:  # the worker died without a word (killed); its exit code says so
                    error = None
                process.join()
                if error or process.exitcode != 0:
                    failures.append(f"{process.name}: {error or f'exit code {process.exitcode}'}")
        builder.save_passwords(passwords)
        if failures:
            raise CommandError("Seeding failed; run seed_demo again to reset and rebuild.\n" + "\n".join(failures))

    def _check_safe(self, force: bool) -> None:
        if force:
            return
        if settings.PRODUCTION:
            raise CommandError(
                "TOLERANCE_PRODUCTION is set: seed_demo would destroy trial data. Use --force to insist."
            )
        others = list(Study.objects.exclude(code__in=DEMO_STUDY_CODES).values_list("code", flat=True))
        if others:
            raise CommandError(
                f"This database holds non-demo studies ({', '.join(sorted(others))}); seed_demo resets every "
                "trial table. Use another database, or --force to destroy them."
            )

    def _reset(self) -> None:
        models = [*apps.get_app_config("trials").get_models(include_auto_created=True), *event_models(), Context]
        existing = set(connection.introspection.table_names())
        tables = sorted({m._meta.db_table for m in models} & existing)
        quoted = ", ".join(connection.ops.quote_name(t) for t in tables)
        with transaction.atomic(), connection.cursor() as cursor:
            # CASCADE also empties tables of other apps that point at these (e.g. adverse events).
            cursor.execute(f"TRUNCATE TABLE {quoted} RESTART IDENTITY CASCADE")  # noqa: S608 - table names from the app registry

    def _print_counts(self, studies: list[Study]) -> None:
        statuses = list(ParticipantStatus)
        rows = Participant.objects.filter(study__in=studies).values_list("study__code", "status")
        counts = Counter(rows)
        width = max(len(s.label) for s in statuses)
        header = f"{'':{width}}  " + "  ".join(f"{s.code:>12}" for s in studies)
        self.stdout.write("\nParticipants by status")
        self.stdout.write(header)
        for status in statuses:
            self.stdout.write(
                f"{status.label:{width}}  " + "  ".join(f"{counts[(s.code, status.value)]:>12}" for s in studies)
            )
        totals = Counter(code for code, _ in rows)
        self.stdout.write(f"{'Total':{width}}  " + "  ".join(f"{totals[s.code]:>12}" for s in studies))

    def _print_logins(self) -> None:
        memberships = StudyMembership.objects.filter(study__code=DEMO_STUDY_CODES[0]).select_related("site", "user")
        where: dict[str, list[str]] = {}
        for m in memberships:
            where.setdefault(m.user.username, []).append(m.site.code if m.site else "all sites")
        width = max(18, *(len(spec.username) for spec in demo_trial.USERS))
        self.stdout.write("\nDemo logins (demo data only: never use these passwords elsewhere)")
        self.stdout.write(f"{'username':{width}}  {'password':20}  {'role':18}  sites (in all three studies)")
        for spec in demo_trial.USERS:
            role = spec.role.label if spec.role else "superuser (admin)"
            sites = ", ".join(sorted(where.get(spec.username, []))) or "-"
            unblinded = ", unblinded" if spec.unblinded else ""
            note = f" ({spec.note})" if spec.note else ""
            self.stdout.write(f"{spec.username:{width}}  {spec.password:20}  {role:18}  {sites}{unblinded}{note}")


@contextmanager
def relaxed_commits() -> Iterator[None]:
    """Do not wait for each of the ~3000 service commits to reach the disk. Safe here: it risks only
    the last few commits on a server crash (never consistency), and a lost demo is rebuilt by rerunning."""
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO OFF")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


def _seed_study_in_child(builder: demo_trial.DemoBuilder, study: Study, spec, sender) -> None:
    """Body of a worker process: seed one study, report a traceback (or None) to the parent."""
    try:
        with relaxed_commits():
            builder.seed_study(study, spec)
    except BaseException:
        sender.send(traceback.format_exc())
        raise SystemExit(1) from None
    else:
        sender.send(None)
    finally:
        connections.close_all()
