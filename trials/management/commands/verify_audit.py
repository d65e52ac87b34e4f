"""Check the audit trail's hash chain. Exit code 0: intact; 1: a break was found (each printed)."""

from django.core.management.base import BaseCommand, CommandError

from trials.audit import audit_verify


class Command(BaseCommand):
    help = "Verify the tamper-evident hash chain over every audit event."

    def handle(self, *args, **options):
        checked, problems = audit_verify()
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"Audit trail verification FAILED: {len(problems)} problem(s) in {checked} links.")
        self.stdout.write(f"Audit trail intact: {checked} links verified.")
