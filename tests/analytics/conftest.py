"""A small durability trial built through the real services, for the data-cut, job, page and API
tests: an RA study (SDAI remission), three dose cohorts, 24 months of assessments per participant
following a scripted remission pattern, a withdrawal and a death."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.db import transaction

from analytics import services as analytics_services
from tests.factories import SiteFactory, build_study, infused, member
from trials import services
from trials.models import Indication, Participant, Role, Study

# SDAI = TJC + SJC + PtGA(cm) + PhGA(cm) + CRP(mg/dL): 0 + 0 + 1 + 1 + 0.5 = 2.5 (remission, <= 3.3)
IN_REMISSION = {
    "tender_joints_28": 0,
    "swollen_joints_28": 0,
    "crp": Decimal("5.0"),
    "crp_unit": "mg/L",
    "esr_mm_h": 8,
    "patient_global_mm": 10,
    "evaluator_global_mm": 10,
}
# 4 + 3 + 4.5 + 4 + 2.1 = 17.6 (moderate activity)
ACTIVE = {
    "tender_joints_28": 4,
    "swollen_joints_28": 3,
    "crp": Decimal("2.1"),
    "crp_unit": "mg/dL",
    "esr_mm_h": 30,
    "patient_global_mm": 45,
    "evaluator_global_mm": 40,
}

# Disease-activity visits of the factory schedule: d28, m3, m6, m12, m24. True: in remission,
# False: active, None: missed.
PATTERNS = [
    [True, True, True, True, True],  # durable remission
    [True, True, False, False, True],  # relapse at month 6
    [False, True, True, True, False],  # late responder, relapse at month 24
    [False, False, False, False, False],  # never in remission
    [True, True, True, False, False],  # relapse at month 12
    [True, None, None, False, True],  # relapse after two missed visits: censored
    [True, True, True, True, None],  # month 24 missed
    [True, False, True, True, True],  # early loss
    [False, True, True, None, True],  # one missed visit
    [True, True, None, None, None],  # dies on day 250 (a competing event)
]
WITHDRAWN, DIED = 6, 9


@dataclass
class Trial:
    study: Study
    statistician: object
    data_manager: object
    medical_monitor: object
    coordinator: object
    participants: list[Participant]


def _record_visits(participant: Participant, coordinator, pattern: list[bool | None]) -> None:
    visits = [
        v
        for v in participant.visits.select_related("definition").order_by("planned_date")
        if "disease_activity" in v.definition.forms_due
    ]
    for visit, status in zip(visits, pattern, strict=True):
        if status is None:
            services.visit_mark_missed(actor=coordinator, visit=visit, reason="participant unwell")
            continue
        visit = services.visit_record(actor=coordinator, visit=visit, actual_date=visit.planned_date)
        services.assessment_record(actor=coordinator, visit=visit, values=dict(IN_REMISSION if status else ACTIVE))


def build_trial(*, code: str = "treg-ra-dur", blinded: bool = False, patterns=PATTERNS) -> Trial:
    """The scripted trial; with other ``patterns`` (fewer participants) there are no dispositions."""
    site_a, site_b = SiteFactory(code="S01"), SiteFactory(code="S02")
    study = build_study(code=code, indication=Indication.RA, sites=[site_a, site_b], capacity=4)
    coordinator_a = member(f"{code}-coord-a", study, Role.COORDINATOR, site_a)
    coordinator_b = member(f"{code}-coord-b", study, Role.COORDINATOR, site_b)
    statistician = member(f"{code}-stats", study, Role.STATISTICIAN)
    data_manager = member(f"{code}-dm", study, Role.DATA_MANAGER)
    medical_monitor = member(f"{code}-mm", study, Role.MEDICAL_MONITOR)
    if blinded:
        _make_blinded(study)
    participants = []
    for i, pattern in enumerate(patterns):
        site, coordinator = (site_a, coordinator_a) if i % 2 == 0 else (site_b, coordinator_b)
        on = dt.date(2024, 1, 8) + dt.timedelta(days=7 * i)
        start = dt.datetime.combine(on + dt.timedelta(days=28), dt.time(9, 0), tzinfo=dt.UTC)
        participant = infused(study, site, coordinator, on=on, start=start)
        _record_visits(participant, coordinator, pattern)
        participants.append(participant)
    if patterns is PATTERNS:
        _record_dispositions(participants, coordinator_a, coordinator_b)
    analytics_services.remission_definition_set(
        actor=statistician,
        study=study,
        name="SDAI remission",
        rule="sdai",
        parameters={},
        sap={"non_responders": "censor"},
        reason="SAP version 1",
    )
    return Trial(study, statistician, data_manager, medical_monitor, coordinator_a, participants)


def _record_dispositions(participants, coordinator_a, coordinator_b) -> None:
    """A withdrawal a month after the month-12 visit, and a death on day 250."""
    withdrawn = participants[WITHDRAWN]
    services.disposition_record(
        actor=coordinator_a if WITHDRAWN % 2 == 0 else coordinator_b,
        participant=withdrawn,
        kind="withdrawn",
        disposition_date=withdrawn.visits.exclude(actual_date=None).order_by("-actual_date").first().actual_date
        + dt.timedelta(days=30),
        reason="moved away",
    )
    died = participants[DIED]
    death_date = died.infusions.get().infusion_date + dt.timedelta(days=250)
    services.disposition_record(
        actor=coordinator_a if DIED % 2 == 0 else coordinator_b,
        participant=died,
        kind="death",
        disposition_date=death_date,
        death_date=death_date,
    )


def _make_blinded(study: Study) -> None:
    from tests.factories import admin_change
    from trials.models import RandomizationSlot

    with admin_change("blinded randomized design for this test"):
        Study.objects.filter(pk=study.pk).update(is_blinded=True)
        study.refresh_from_db()
        for cohort in study.cohorts.all():
            for sequence, arm in enumerate(["TREG", "PLACEBO", "TREG", "PLACEBO"], start=1):
                RandomizationSlot.objects.create(study=study, cohort=cohort, sequence=sequence, arm=arm)


@pytest.fixture(scope="module")
def _module_trial(django_db_setup, django_db_blocker):
    """One trial per test module, inside a transaction rolled back after the module (what Django's
    ``TestCase.setUpTestData`` does): building it through the services takes seconds. Each test still
    runs in its own savepoint, so what a test writes is undone before the next one."""
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        # Marks the block as the test framework's, so the services' durable atomics may nest in it.
        atomic._from_testcase = True
        atomic.__enter__()
        try:
            yield build_trial()
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@pytest.fixture
def trial(_module_trial, db) -> Trial:
    for user in (_module_trial.statistician, _module_trial.data_manager, _module_trial.medical_monitor):
        user.__dict__.pop("_tolerance_memberships", None)  # a test may change memberships
    return _module_trial


CUT_DATE = dt.date(2026, 6, 30)


# ---------------------------------------------------------------------------------------------
# A study with a definition and an empty cut (fast: no casebook), for the job-state and outbox tests
# ---------------------------------------------------------------------------------------------

DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once


@dataclass
class BareCut:
    study: Study
    statistician: object
    cut: object


def build_bare_cut(code: str = "treg-ms-bare") -> BareCut:
    study = build_study(code=code, indication=Indication.MS)
    statistician = member(f"{code}-stats", study, Role.STATISTICIAN)
    analytics_services.remission_definition_set(
        actor=statistician,
        study=study,
        name="NEDA-3",
        rule="neda3",
        parameters={},
        sap={"non_responders": "censor"},
        reason="SAP version 1",
    )
    cut = analytics_services.datacut_create(actor=statistician, study=study, cut_date=CUT_DATE)
    return BareCut(study, statistician, cut)


@pytest.fixture
def bare(db) -> BareCut:
    return build_bare_cut()


def _point_celery_at(url: str) -> dict:
    from config.celery_app import app

    # broker_write_url: Celery reads CELERY_BROKER_URL from the environment before broker_url.
    saved = {key: app.conf.get(key) for key in ("task_always_eager", "broker_write_url")}
    app.conf.update(task_always_eager=False, broker_write_url=url)
    app.close()  # drop pooled connections to the previous broker
    return saved


def _restore_celery(saved: dict) -> None:
    from config.celery_app import app

    app.conf.update(saved)
    app.close()


@pytest.fixture
def dead_broker():
    """This process publishes to a broker that refuses connections (Redis down)."""
    saved = _point_celery_at(DEAD_BROKER)
    yield DEAD_BROKER
    _restore_celery(saved)


@pytest.fixture
def live_broker():
    """This process publishes to the tests' Redis (``CELERY_BROKER_URL``, emptied first); no worker
    consumes it, so what was published can be read back from the ``celery`` list."""
    import os

    import redis

    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith(("redis://", "rediss://")):
        pytest.fail("CELERY_BROKER_URL must name a Redis database reserved for the tests (it is emptied).")
    client = redis.Redis.from_url(url)
    client.flushdb()
    saved = _point_celery_at(url)
    yield client
    _restore_celery(saved)
    client.flushdb()
