"""Test data: a complete small study built the way a data manager builds one, and participants
brought to a stage through the real services (so factories never produce states the rules forbid)."""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from trials import services
from trials.models import (
    ConsentDocument,
    DoseCohort,
    EligibilityCriterion,
    Indication,
    Participant,
    Role,
    Site,
    Study,
    StudyMembership,
    VisitDefinition,
)

User = get_user_model()

SCHEDULE = [
    ("d0", "Day 0", 0, 0, 0, ["vitals"]),
    ("d7", "Day 7", 7, 1, 1, ["vitals", "ae_review"]),
    ("d28", "Day 28", 28, 3, 3, ["vitals", "disease_activity", "labs"]),
    ("m3", "Month 3", 91, 14, 14, ["vitals", "disease_activity"]),
    ("m6", "Month 6", 182, 14, 14, ["vitals", "disease_activity"]),
    ("m12", "Month 12", 365, 28, 28, ["vitals", "disease_activity"]),
    ("m24", "Month 24", 730, 28, 28, ["vitals", "disease_activity"]),
]


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct-horse-battery")


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"S{n + 1:02d}")
    name = factory.LazyAttribute(lambda o: f"Hospital {o.code}")
    country = "GB"


def build_study(
    *, code: str = "TREG-MS-01", indication: str = Indication.MS, sites=None, sentinel_days: int = 0, capacity: int = 3
) -> Study:
    """A study with two sites, three dose cohorts, a schedule, two criteria and a consent version."""
    study = Study.objects.create(code=code.lower(), title=f"Treg infusion in {indication}", indication=indication)
    sites = sites or [SiteFactory(code="S01"), SiteFactory(code="S02")]
    study.sites.set(sites)
    for number, per_kg in enumerate([Decimal("1000000"), Decimal("5000000"), Decimal("20000000")], start=1):
        DoseCohort.objects.create(
            study=study,
            number=number,
            label=f"{per_kg / 1_000_000:g}M/kg",
            planned_cells_per_kg=per_kg,
            sentinel_interval_days=sentinel_days,
            capacity=capacity,
        )
    for code_, name, day, before, after, forms in SCHEDULE:
        VisitDefinition.objects.create(
            study=study,
            code=code_,
            name=name,
            target_day=day,
            window_before=before,
            window_after=after,
            forms_due=forms,
        )
    EligibilityCriterion.objects.create(study=study, kind="inclusion", number=1, text="Aged 18 to 65 years")
    EligibilityCriterion.objects.create(study=study, kind="exclusion", number=1, text="Active infection")
    ConsentDocument.objects.create(study=study, version="1.0", effective_date=dt.date(2024, 1, 1))
    return study


def member(username: str, study: Study, role: str, site: Site | None = None, unblinded: bool = False):
    user = UserFactory(username=username)
    StudyMembership.objects.get_or_create(
        user=user, study=study, site=site, defaults={"role": role, "unblinded": unblinded}
    )
    return user


def site_actor(study: Study, site: Site, actor):
    """``actor`` if they may enter data at ``site``; otherwise that site's own coordinator, because
    only site staff can screen there."""
    if StudyMembership.objects.filter(
        user=actor, study=study, role__in=[Role.COORDINATOR, Role.INVESTIGATOR], site__in=[site, None]
    ).exists():
        return actor
    return member(f"coord_{study.code}_{site.code}".lower()[:150], study, Role.COORDINATOR, site)


def screened(study: Study, site: Site, actor, *, screening_date: dt.date | None = None) -> Participant:
    return services.participant_screen(
        actor=site_actor(study, site, actor),
        study=study,
        site=site,
        sex="F",
        birth_year=1985,
        screening_date=screening_date or dt.date(2025, 1, 6),
    )


def consented(study, site, actor, *, on: dt.date | None = None) -> Participant:
    participant = screened(study, site, actor, screening_date=on)
    services.consent_record(
        actor=actor,
        participant=participant,
        document=study.consent_documents.first(),
        consent_date=on or dt.date(2025, 1, 6),
    )
    return participant


def eligible(study, site, actor, *, on: dt.date | None = None) -> Participant:
    participant = consented(study, site, actor, on=on)
    answers = {c.pk: c.kind == "inclusion" for c in study.criteria.all()}
    services.eligibility_record(actor=actor, participant=participant, answers=answers)
    return participant


def enrolled(study, site, actor, *, on: dt.date | None = None) -> Participant:
    on = on or dt.date(2025, 1, 6)
    participant = eligible(study, site, actor, on=on)
    return services.participant_enrol(actor=actor, participant=participant, enrolment_date=on + dt.timedelta(days=7))


def infusion_kwargs(
    participant: Participant, *, start: dt.datetime | None = None, weight=Decimal("70"), cells: Decimal | None = None
) -> dict:
    start = start or dt.datetime(2025, 2, 3, 9, 0, tzinfo=dt.UTC)
    planned = participant.cohort.planned_cells_per_kg
    return {
        "apheresis_date": start.date() - dt.timedelta(days=21),
        "manufacturing_lot": "LOT-0001",
        "release_passed": True,
        "viability_pct": Decimal("92.5"),
        "total_viable_cells": cells if cells is not None else planned * weight,
        "weight_kg": weight,
        "start_at": start,
        "end_at": start + dt.timedelta(minutes=45),
    }


def infused(study, site, actor, *, on: dt.date | None = None, start: dt.datetime | None = None) -> Participant:
    participant = enrolled(study, site, actor, on=on)
    services.infusion_record(actor=actor, participant=participant, **infusion_kwargs(participant, start=start))
    participant.refresh_from_db()
    return participant


def now() -> dt.datetime:
    return timezone.now()


__all__ = ["Role"]


@contextmanager
def admin_change(reason: str = "study configuration changed for this test"):
    """Test set-up changes made outside the services still need who and why: the database refuses an
    UPDATE of a clinical row without them."""
    from trials.audit import audit_context

    user = UserFactory(username="test-data-manager")
    with audit_context(actor=user, reason=reason, channel="test"):
        yield
