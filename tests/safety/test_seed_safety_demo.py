"""``manage.py seed_safety_demo``: realistic safety data for the demo, written through the services."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command

from safety.models import AdverseEvent, DLTDefinition, ExpeditedReport, SAECase
from tests.factories import infused


@pytest.fixture
def demo_like_study(study, sites, coordinator_site_a, coordinator_site_b, medical_monitor, data_manager, now):
    """Four participants infused at two sites, two of them long enough ago for the infection SAEs."""
    early = dt.datetime(2024, 11, 4, 9, 0, tzinfo=dt.UTC)
    infused(study, sites[0], coordinator_site_a, on=dt.date(2024, 10, 1), start=early)
    infused(study, sites[1], coordinator_site_b, on=dt.date(2024, 10, 1), start=early)
    infused(study, sites[0], coordinator_site_a)
    infused(study, sites[1], coordinator_site_b)
    return study


def test_it_seeds_the_events_the_dashboards_need(demo_like_study):
    out = io.StringIO()
    call_command("seed_safety_demo", stdout=out)
    aes = AdverseEvent.objects.filter(participant__study=demo_like_study)
    assert aes.filter(category="INFUSION REACTION", infusion__isnull=False).count() == 1
    crs = aes.get(category="CRS")
    assert (crs.grade, crs.serious) == (3, True)
    assert crs.grade_scale.startswith("ASTCT")
    assert SAECase.objects.get(adverse_event=crs).is_susar is True
    assert ExpeditedReport.objects.filter(case__adverse_event=crs, kind="fifteen_day", status="pending").exists()
    assert aes.filter(category="INFECTION", serious=True).count() == 2
    assert DLTDefinition.objects.filter(study=demo_like_study).count() == 1
    assert "treg-ms-01:" in out.getvalue()
    again = io.StringIO()
    call_command("seed_safety_demo", stdout=again)
    assert "already has adverse events" in again.getvalue()


def test_it_needs_the_demo_studies(db):
    with pytest.raises(CommandError, match="seed_demo"):
        call_command("seed_safety_demo")
