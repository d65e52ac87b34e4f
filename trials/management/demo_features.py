"""Two situations the demo trial stages so that newer features have something to show
(``manage.py seed_demo``, docs/reliability.md #31, docs/domain.md §1.5):

- a locked-out account (``LOCKED_USERNAME``): a coordinator whose sign-in django-axes has locked after
  too many failed attempts, which the demo data manager releases with a reason under Admin → Axes →
  Access attempts (``trials.accounts.lockout_release``);
- an infusion outside the release criteria (``release_exception``): one participant's product was below
  the study's minimum viability and was infused with the coordinator's confirmation, so the casebook
  shows the protocol deviation "Product outside release criteria".
"""

from __future__ import annotations

from decimal import Decimal

from axes.models import AccessAttempt, AccessFailureLog
from django.conf import settings
from django.db import transaction

LOCKED_USERNAME = "coordinator_s02_locked"
LOCKED_NOTE = "locked: ask the data manager"
LOCKOUT_IP = "127.0.0.1"
LOCKOUT_USER_AGENT = "Mozilla/5.0 (demo: mistyped password)"
LOGIN_PATH = "/login/"

# (study code, site code): the first participant in follow-up at that site, in screening order, gets the
# out-of-specification product. The London coordinator, the demo's first login, sees it.
RELEASE_EXCEPTION_AT = ("treg-ms-01", "S01")
VIABILITY_BELOW_MINIMUM = Decimal("6.0")  # percentage points under the study's minimum


def lock_out(username: str = LOCKED_USERNAME) -> AccessAttempt:
    """Store ``username``'s lockout as axes' database handler does after a run of failed sign-ins: one
    access attempt for (username, IP, browser) whose ``failures_since_start`` has reached
    ``AXES_FAILURE_LIMIT``, and a failure log row per attempt, the last one marked as the lockout.

    Axes counts only attempts newer than ``AXES_COOLOFF_TIME``: the lockout lasts that long after the
    seeding (``./dev.sh demo`` lengthens it so the demo keeps it). Rerunning replaces the rows."""
    limit = settings.AXES_FAILURE_LIMIT
    with transaction.atomic():
        AccessAttempt.objects.filter(username=username).delete()
        AccessFailureLog.objects.filter(username=username).delete()
        AccessFailureLog.objects.bulk_create(
            AccessFailureLog(
                username=username,
                ip_address=LOCKOUT_IP,
                user_agent=LOCKOUT_USER_AGENT,
                http_accept="text/html",
                path_info=LOGIN_PATH,
                locked_out=n == limit,
            )
            for n in range(1, limit + 1)
        )
        return AccessAttempt.objects.create(
            username=username,
            ip_address=LOCKOUT_IP,
            user_agent=LOCKOUT_USER_AGENT,
            http_accept="text/html",
            path_info=LOGIN_PATH,
            get_data="",
            post_data=f"username={username}\npassword=********************",  # masked, as axes stores it
            failures_since_start=limit,
        )


def release_exception(study_code: str, in_follow_up: list) -> object | None:
    """Of the plans of participants who stay in follow-up, the one whose infusion is recorded outside
    the release criteria in this study (None: no one)."""
    code, site = RELEASE_EXCEPTION_AT
    if study_code != code:
        return None
    return next((p for p in sorted(in_follow_up, key=lambda p: p.index) if p.site_code == site), None)


def viability(drawn: Decimal, study, *, outside_release_criteria: bool) -> Decimal:
    """The product's viability: ``drawn`` (inside the criteria), or below the study's minimum for the
    release exception, whose infusion the coordinator confirms and the service records as a deviation."""
    if not outside_release_criteria:
        return drawn
    return study.release_min_viability_pct - VIABILITY_BELOW_MINIMUM
