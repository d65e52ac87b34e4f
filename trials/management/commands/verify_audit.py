"""Check the audit trail's hash chain, and with ``--anchors DIR`` the chain against the heads anchored
outside the database (trials/anchors.py). Exit code 0: intact; 1: a break was found (each printed)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from trials.anchors import AnchorError, anchors_verify
from trials.audit import audit_verify


class Command(BaseCommand):
    help = (
        "Verify the tamper-evident hash chain over every audit event. With --anchors DIR, also check that "
        "every chain head anchored in DIR (signed files written by Celery beat and at every data cut) is "
        "still in the chain with the same hash: this detects a rewrite whose seals were recomputed. The "
        "anchors' key is read from TOLERANCE_AUDIT_ANCHOR_KEY (or TOLERANCE_AUDIT_ANCHOR_KEY_FILE)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--anchors", metavar="DIR", type=Path, help="Directory of anchor files to check.")

    def handle(self, *args, anchors: Path | None, **options):
        checked, problems = audit_verify()
        summary = f"{checked} links"
        if anchors is not None:
            try:
                matched, anchor_problems = anchors_verify(directory=anchors)
            except AnchorError as exc:
                raise CommandError(str(exc)) from exc
            problems = [*problems, *anchor_problems]
            summary += f", {matched} anchors"
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"Audit trail verification FAILED: {len(problems)} problem(s) in {summary}.")
        self.stdout.write(f"Audit trail intact: {summary} verified.")
