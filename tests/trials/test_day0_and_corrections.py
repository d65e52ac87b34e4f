"""Day 0 is the site's local date; corrections after disposition; missed-visit guards."""

import datetime as dt

import pytest

from tests.factories import admin_change, enrolled, infused, infusion_kwargs
from trials import services
from trials.errors import RuleViolation
from trials.models import Visit


def test_day_0_is_the_local_date_at_the_site_not_the_utc_date(study, sites, coordinator_site_a):
    with admin_change("site is in Warsaw"):
        sites[0].timezone = "Europe/Warsaw"
        sites[0].save()
    participant = enrolled(study, sites[0], coordinator_site_a)
    # 23:30 UTC on 2 Feb is 00:30 on 3 Feb in Warsaw: day 0 is 3 Feb there.
    start = dt.datetime(2025, 2, 2, 23, 30, tzinfo=dt.UTC)
    infusion = services.infusion_record(
        actor=coordinator_site_a, participant=participant, **infusion_kwargs(participant, start=start)
    )
    assert infusion.infusion_date == dt.date(2025, 2, 3)
    assert participant.visits.get(definition__code="d7").planned_date == dt.date(2025, 2, 10)
    services.visit_record(
        actor=coordinator_site_a, visit=participant.visits.get(definition__code="d0"), actual_date=dt.date(2025, 2, 3)
    )


def test_an_unknown_time_zone_is_refused_on_the_site(sites):
    sites[0].timezone = "Mars/Olympus"
    with pytest.raises(Exception, match="not an IANA time zone"):
        sites[0].full_clean()


@pytest.fixture
def withdrawn(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    d7 = participant.visits.get(definition__code="d7")
    services.visit_record(actor=coordinator_site_a, visit=d7, actual_date=dt.date(2025, 2, 10))
    services.disposition_record(
        actor=coordinator_site_a,
        participant=participant,
        kind="withdrawn",
        disposition_date=dt.date(2025, 3, 1),
        reason="moved away",
    )
    return participant


def test_a_visit_recorded_before_withdrawal_can_still_be_corrected_with_a_reason(withdrawn, coordinator_site_a):
    d7 = withdrawn.visits.get(definition__code="d7")
    services.visit_record(
        actor=coordinator_site_a,
        visit=d7,
        actual_date=dt.date(2025, 2, 11),
        reason="source shows the 11th",
        expected_version=d7.version,
    )
    assert Visit.objects.get(pk=d7.pk).actual_date == dt.date(2025, 2, 11)


def test_no_new_scheduled_visit_and_no_missed_mark_after_withdrawal(withdrawn, coordinator_site_a):
    d28 = withdrawn.visits.get(definition__code="d28")
    with pytest.raises(RuleViolation, match="only safety follow-up"):
        services.visit_record(actor=coordinator_site_a, visit=d28, actual_date=dt.date(2025, 3, 3))
    with pytest.raises(RuleViolation, match="only safety follow-up"):
        services.visit_mark_missed(actor=coordinator_site_a, visit=d28, reason="withdrawn")
    d28.refresh_from_db()
    assert (d28.actual_date, d28.missed) == (None, False)


def test_a_visit_cannot_be_missed_twice_or_before_its_window_opens(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a, start=dt.datetime(2025, 2, 3, 9, tzinfo=dt.UTC))
    d7 = participant.visits.get(definition__code="d7")
    services.visit_mark_missed(actor=coordinator_site_a, visit=d7, reason="flu")
    with pytest.raises(RuleViolation, match="already marked as missed"):
        services.visit_mark_missed(actor=coordinator_site_a, visit=d7, reason="other reason")
    assert Visit.objects.get(pk=d7.pk).missed_reason == "flu"
    # Push the Month 24 window into the future relative to the clinical today.
    m24 = participant.visits.get(definition__code="m24")
    with admin_change("schedule moved for this test"):
        Visit.objects.filter(pk=m24.pk).update(window_start=services.clinical_today() + dt.timedelta(days=2))
    with pytest.raises(RuleViolation, match="cannot be missed yet"):
        services.visit_mark_missed(actor=coordinator_site_a, visit=m24, reason="will not come")
    assert not Visit.objects.get(pk=m24.pk).missed
