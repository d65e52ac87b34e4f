"""The Celery app of the worker tests: the project's app, plus a test-only hold.

``celery -A tests.analytics.held_worker worker`` runs the real tasks against Redis and the test
database. An analysis of a data cut labelled ``hold N s`` waits N seconds after loading its cut,
reporting progress (and so heartbeats) every second, so a test can watch its progress bar or kill the
worker mid-analysis. The hold lives here, in the tests, so the production code carries no test switch.
"""

from __future__ import annotations

import math
import re
import time

from config.celery_app import app  # noqa: F401 - the app this module exposes to ``celery -A``

HOLD_LABEL = re.compile(r"\bhold (\d+) s\b")
HELD_PERCENT = 6


def hold_label(seconds: int) -> str:
    """The data-cut label that holds its analyses for ``seconds`` on this worker."""
    return f"hold {seconds} s"


def _install() -> None:
    import django

    django.setup()
    from analytics import services
    from analytics.models import AnalysisJob

    report = services._Progress.__call__

    def held(self, percent: int, stage: str) -> None:
        report(self, percent, stage)
        if percent != 5:  # "loading the data cut": the first stage after the claim
            return
        label = AnalysisJob.objects.filter(pk=self.job_id).values_list("data_cut__label", flat=True).first() or ""
        match = HOLD_LABEL.search(label)
        if not match:
            return
        deadline = time.monotonic() + int(match.group(1))
        while (left := deadline - time.monotonic()) > 0:
            report(self, HELD_PERCENT, f"held by the test ({math.ceil(left)} s)")
            time.sleep(min(1.0, left))

    services._Progress.__call__ = held


_install()
