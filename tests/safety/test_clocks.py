"""Expedited reporting clocks and SUSAR determination (docs/domain.md Part A §1.1-1.2, §2.1-2.2).

Times are pinned at the exact boundaries (docs/style.md §16): the last on-time instant, one second (or
microsecond) before and after.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety.clocks import (
    ClockKind,
    ClockState,
    RSIVersion,
    assess_expectedness,
    clock_status,
    determine_susar,
    earliest_clock,
    follow_up_clock,
    lateness_days,
    site_report_clock,
    susar_report_clock,
    upgrade_clock,
)
from safety.rules_data import InputError

PROPERTY = settings(database=None, derandomize=True, deadline=None, max_examples=200)
UTC = dt.UTC
LONDON = ZoneInfo("Europe/London")
TOKYO = ZoneInfo("Asia/Tokyo")
SECOND = dt.timedelta(seconds=1)


# ---------------------------------------------------------------------------------------------
# Site -> sponsor, 24 h
# ---------------------------------------------------------------------------------------------

SITE_AWARE = dt.datetime(2025, 3, 4, 10, 15, 0, tzinfo=UTC)


def test_the_site_must_report_an_sae_within_24_hours_of_awareness():
    clock = site_report_clock(SITE_AWARE)
    assert clock.kind is ClockKind.SITE_TO_SPONSOR
    assert clock.due_at == dt.datetime(2025, 3, 5, 10, 15, 0, tzinfo=UTC)
    assert clock.rule_version == "clocks-ich-fda-eu-2025.1"


def test_a_site_report_at_exactly_24_hours_is_on_time_and_one_second_later_is_late():
    clock = site_report_clock(SITE_AWARE)
    due = SITE_AWARE + dt.timedelta(hours=24)
    assert clock.is_on_time(due - SECOND)
    assert clock.is_on_time(due)
    assert not clock.is_on_time(due + SECOND)
    assert lateness_days(clock, due) == 0
    assert lateness_days(clock, due + SECOND) == 1
    assert lateness_days(clock, due + dt.timedelta(hours=24)) == 1
    assert lateness_days(clock, due + dt.timedelta(hours=24) + SECOND) == 2


def test_the_24_hour_clock_is_an_exact_duration_across_a_dst_change():
    aware = dt.datetime(2025, 3, 29, 12, 0, tzinfo=LONDON)  # clocks go forward at 01:00 on 30 March
    clock = site_report_clock(aware)
    assert clock.due_at - aware == dt.timedelta(hours=24)
    assert clock.due_at.astimezone(LONDON).hour == 13


# ---------------------------------------------------------------------------------------------
# Sponsor -> regulators, 7 / 15 calendar days
# ---------------------------------------------------------------------------------------------

RECEIPT = dt.datetime(2025, 3, 3, 14, 0, tzinfo=LONDON)  # day 0 = Monday 3 March 2025


def test_a_fatal_or_life_threatening_susar_is_due_by_the_end_of_day_7():
    clock = susar_report_clock(first_receipt_at=RECEIPT, fatal_or_life_threatening=True, sponsor_tz=LONDON)
    assert clock.kind is ClockKind.SEVEN_DAY
    assert clock.day0 == dt.date(2025, 3, 3)
    assert clock.due_date == dt.date(2025, 3, 10)
    end_of_day_7 = dt.datetime(2025, 3, 10, 23, 59, 59, tzinfo=LONDON)
    assert clock.is_on_time(end_of_day_7)
    assert not clock.is_on_time(end_of_day_7 + SECOND)  # 00:00:00 on day 8
    assert lateness_days(clock, end_of_day_7 + SECOND) == 1
    assert lateness_days(clock, dt.datetime(2025, 3, 12, 9, 0, tzinfo=LONDON)) == 2


def test_other_susars_are_due_by_the_end_of_day_15():
    clock = susar_report_clock(first_receipt_at=RECEIPT, fatal_or_life_threatening=False, sponsor_tz=LONDON)
    assert clock.kind is ClockKind.FIFTEEN_DAY
    assert clock.due_date == dt.date(2025, 3, 18)
    assert clock.is_on_time(dt.datetime(2025, 3, 18, 23, 59, 59, tzinfo=LONDON))
    assert not clock.is_on_time(dt.datetime(2025, 3, 19, 0, 0, 0, tzinfo=LONDON))


def test_receipt_just_before_midnight_still_counts_that_day_as_day_0():
    late = dt.datetime(2025, 3, 3, 23, 59, 59, tzinfo=LONDON)
    clock = susar_report_clock(first_receipt_at=late, fatal_or_life_threatening=True, sponsor_tz=LONDON)
    assert clock.day0 == dt.date(2025, 3, 3)
    assert clock.due_date == dt.date(2025, 3, 10)


def test_day_0_is_the_calendar_date_in_the_sponsors_time_zone():
    receipt = dt.datetime(2025, 3, 3, 23, 30, tzinfo=UTC)  # 4 March 08:30 in Tokyo
    assert susar_report_clock(first_receipt_at=receipt, fatal_or_life_threatening=True, sponsor_tz=UTC).day0 == dt.date(
        2025, 3, 3
    )
    tokyo = susar_report_clock(first_receipt_at=receipt, fatal_or_life_threatening=True, sponsor_tz=TOKYO)
    assert tokyo.day0 == dt.date(2025, 3, 4)
    assert tokyo.due_at == dt.datetime(2025, 3, 11, 23, 59, 59, 999999, tzinfo=TOKYO)


def test_the_due_date_ends_at_local_midnight_after_a_dst_change():
    # Day 0 = 25 March (GMT), due 1 April (BST, UTC+1): the deadline is 22:59:59.999999 UTC.
    clock = susar_report_clock(
        first_receipt_at=dt.datetime(2025, 3, 25, 9, 0, tzinfo=LONDON),
        fatal_or_life_threatening=True,
        sponsor_tz=LONDON,
    )
    assert clock.due_at.astimezone(UTC) == dt.datetime(2025, 4, 1, 22, 59, 59, 999999, tzinfo=UTC)
    assert not clock.is_on_time(dt.datetime(2025, 4, 1, 23, 30, tzinfo=UTC))  # 00:30 on 2 April in London


@pytest.mark.parametrize(
    ("due_date_day0", "day_end_utc"),
    [
        # Santiago falls back at 24:00 on 5 April 2025 (23:00-24:00 happens twice): the day ends at 04:00 UTC.
        (dt.date(2025, 3, 29), dt.datetime(2025, 4, 6, 4, 0, tzinfo=UTC)),
        # Santiago springs forward at 00:00 on 7 September 2025 (00:00 does not exist): 6 September ends at 04:00 UTC.
        (dt.date(2025, 8, 30), dt.datetime(2025, 9, 7, 4, 0, tzinfo=UTC)),
    ],
)
def test_the_due_date_ends_at_the_true_end_of_the_local_day_when_dst_changes_at_midnight(due_date_day0, day_end_utc):
    santiago = ZoneInfo("America/Santiago")
    receipt = dt.datetime.combine(due_date_day0, dt.time(12, 0), tzinfo=santiago)
    clock = susar_report_clock(first_receipt_at=receipt, fatal_or_life_threatening=True, sponsor_tz=santiago)
    assert clock.due_at == day_end_utc - dt.timedelta(microseconds=1)
    assert clock.is_on_time(day_end_utc - SECOND)
    assert not clock.is_on_time(day_end_utc)


def test_day_0_is_the_earlier_of_first_receipt_and_qualification():
    earlier = dt.datetime(2025, 3, 1, 8, 0, tzinfo=LONDON)
    clock = susar_report_clock(
        first_receipt_at=RECEIPT, qualification_at=earlier, fatal_or_life_threatening=False, sponsor_tz=LONDON
    )
    assert clock.day0 == dt.date(2025, 3, 1)
    assert clock.started_at == earlier
    later = dt.datetime(2025, 3, 6, 8, 0, tzinfo=LONDON)
    clock = susar_report_clock(
        first_receipt_at=RECEIPT, qualification_at=later, fatal_or_life_threatening=False, sponsor_tz=LONDON
    )
    assert clock.day0 == dt.date(2025, 3, 3)


def test_an_upgrade_to_fatal_starts_a_new_7_day_clock_from_the_day_the_sponsor_learns_of_it():
    original = susar_report_clock(
        first_receipt_at=dt.datetime(2025, 3, 1, 10, 0, tzinfo=LONDON),
        fatal_or_life_threatening=False,
        sponsor_tz=LONDON,
    )
    assert original.due_date == dt.date(2025, 3, 16)
    early = upgrade_clock(upgrade_known_at=dt.datetime(2025, 3, 3, 16, 0, tzinfo=LONDON), sponsor_tz=LONDON)
    assert early.kind is ClockKind.UPGRADE_SEVEN_DAY
    assert early.due_date == dt.date(2025, 3, 10)
    assert earliest_clock([original, early]) is early
    late = upgrade_clock(upgrade_known_at=dt.datetime(2025, 3, 12, 16, 0, tzinfo=LONDON), sponsor_tz=LONDON)
    assert late.due_date == dt.date(2025, 3, 19)
    assert earliest_clock([original, late]) is original


def test_a_follow_up_report_is_due_15_days_after_new_significant_information():
    clock = follow_up_clock(new_information_at=dt.datetime(2025, 4, 2, 11, 0, tzinfo=LONDON), sponsor_tz=LONDON)
    assert clock.kind is ClockKind.FOLLOW_UP
    assert clock.due_date == dt.date(2025, 4, 17)


def test_earliest_clock_needs_a_clock():
    with pytest.raises(InputError):
        earliest_clock([])


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda naive: site_report_clock(naive), "site_aware_at"),
        (
            lambda naive: susar_report_clock(first_receipt_at=naive, fatal_or_life_threatening=True, sponsor_tz=UTC),
            "first_receipt_at",
        ),
        (
            lambda naive: susar_report_clock(
                first_receipt_at=RECEIPT, qualification_at=naive, fatal_or_life_threatening=True, sponsor_tz=UTC
            ),
            "qualification_at",
        ),
        (lambda naive: upgrade_clock(upgrade_known_at=naive, sponsor_tz=UTC), "upgrade_known_at"),
        (lambda naive: follow_up_clock(new_information_at=naive, sponsor_tz=UTC), "new_information_at"),
        (lambda naive: clock_status(site_report_clock(SITE_AWARE), now=naive), "now"),
        (lambda naive: lateness_days(site_report_clock(SITE_AWARE), naive), "submitted_at"),
    ],
)
def test_naive_datetimes_are_refused_with_the_field_named(call, field):
    naive = dt.datetime(2025, 3, 4, 10, 0)  # noqa: DTZ001
    with pytest.raises(InputError) as error:
        call(naive)
    assert error.value.field == field


def test_a_regulatory_clock_needs_the_sponsors_time_zone():
    with pytest.raises(InputError) as error:
        susar_report_clock(first_receipt_at=RECEIPT, fatal_or_life_threatening=True, sponsor_tz="Europe/London")
    assert error.value.field == "sponsor_tz"


@PROPERTY
@given(
    receipt=st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2027, 1, 1), timezones=st.just(UTC)),
    zone=st.sampled_from(["Europe/London", "America/New_York", "Asia/Tokyo", "Pacific/Auckland", "UTC"]),
    fatal=st.booleans(),
    offset=st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=40)),
)
def test_the_due_date_is_day_0_plus_7_or_15_and_lateness_grows_with_time(receipt, zone, fatal, offset):
    tz = ZoneInfo(zone)
    clock = susar_report_clock(first_receipt_at=receipt, fatal_or_life_threatening=fatal, sponsor_tz=tz)
    assert clock.day0 == receipt.astimezone(tz).date()
    assert (clock.due_date - clock.day0).days == (7 if fatal else 15)
    assert clock.due_at.astimezone(tz).date() == clock.due_date
    submitted = receipt + offset
    later = submitted + dt.timedelta(hours=5)
    assert lateness_days(clock, later) >= lateness_days(clock, submitted)
    assert clock.is_on_time(submitted) == (submitted.astimezone(tz).date() <= clock.due_date)


# ---------------------------------------------------------------------------------------------
# Status at "now"
# ---------------------------------------------------------------------------------------------

SEVEN_DAY = susar_report_clock(first_receipt_at=RECEIPT, fatal_or_life_threatening=True, sponsor_tz=LONDON)


def test_a_clock_is_not_due_until_48_hours_remain_then_due_soon_then_overdue():
    due = SEVEN_DAY.due_at
    micro = dt.timedelta(microseconds=1)
    assert clock_status(SEVEN_DAY, now=RECEIPT).state is ClockState.NOT_DUE
    assert clock_status(SEVEN_DAY, now=due - dt.timedelta(hours=48) - micro).state is ClockState.NOT_DUE
    assert clock_status(SEVEN_DAY, now=due - dt.timedelta(hours=48)).state is ClockState.DUE_SOON
    assert clock_status(SEVEN_DAY, now=due).state is ClockState.DUE_SOON
    overdue = clock_status(SEVEN_DAY, now=due + micro)
    assert overdue.state is ClockState.OVERDUE
    assert overdue.days_late == 1
    assert overdue.remaining < dt.timedelta(0)


def test_the_site_clock_is_due_soon_in_its_last_6_hours_by_default_and_the_threshold_can_be_set():
    clock = site_report_clock(SITE_AWARE)
    six_before = clock.due_at - dt.timedelta(hours=6)
    assert clock_status(clock, now=six_before - SECOND).state is ClockState.NOT_DUE
    assert clock_status(clock, now=six_before).state is ClockState.DUE_SOON
    assert clock_status(clock, now=six_before - SECOND, due_soon=dt.timedelta(hours=12)).state is ClockState.DUE_SOON


def test_a_submitted_report_is_on_time_or_late_whatever_now_is():
    due = SEVEN_DAY.due_at
    on_time = clock_status(SEVEN_DAY, now=due + dt.timedelta(days=30), submitted_at=due)
    assert (on_time.state, on_time.days_late) == (ClockState.SUBMITTED_ON_TIME, 0)
    late = clock_status(SEVEN_DAY, now=due + dt.timedelta(days=30), submitted_at=due + dt.timedelta(days=2))
    assert (late.state, late.days_late) == (ClockState.SUBMITTED_LATE, 2)


# ---------------------------------------------------------------------------------------------
# SUSAR determination and expectedness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serious", "investigator", "sponsor", "expected", "is_susar"),
    [
        (True, "possibly", None, False, True),
        (True, "possibly", "not related", False, True),  # the sponsor cannot downgrade
        (True, "unlikely", "probably", False, True),  # the sponsor can upgrade
        (True, "unlikely", "not related", False, False),
        (True, "definitely", None, True, False),  # expected: not a SUSAR
        (False, "definitely", "definitely", False, False),  # not serious
    ],
)
def test_a_susar_is_serious_related_by_either_assessor_and_unexpected(
    serious, investigator, sponsor, expected, is_susar
):
    result = determine_susar(
        serious=serious, investigator_causality=investigator, sponsor_causality=sponsor, expected=expected
    )
    assert result.is_susar is is_susar


def test_missing_investigator_causality_is_treated_as_related_until_it_arrives():
    result = determine_susar(serious=True, investigator_causality=None, sponsor_causality="not related", expected=False)
    assert result.is_susar
    assert result.causality_pending
    assert "pending" in result.reason


def test_an_unknown_causality_is_refused_on_the_assessors_field():
    with pytest.raises(InputError) as error:
        determine_susar(serious=True, investigator_causality="possibly", sponsor_causality="perhaps", expected=False)
    assert error.value.field == "sponsor_causality"


RSI = [
    RSIVersion("IB v1", dt.date(2024, 1, 1), {"Infusion related reaction": 2}),
    RSIVersion("IB v2", dt.date(2025, 6, 1), {"Infusion related reaction": 2, "Headache": None}),
]


@pytest.mark.parametrize(
    ("term", "grade", "fatal", "onset", "expected", "versions"),
    [
        ("Headache", 1, False, "2025-03-10", False, ("IB v1",)),  # listed only from v2 on
        ("headache", 3, False, "2025-07-01", True, ("IB v2",)),
        ("Headache", 1, False, "2025-06", True, ("IB v2",)),  # June lies wholly under v2
        ("Headache", 1, False, "2025-05", False, ("IB v1",)),
        ("Headache", 1, False, "2025", False, ("IB v1", "IB v2")),  # may fall under v1: unexpected
        ("Infusion related reaction", 2, False, "2025", True, ("IB v1", "IB v2")),
        ("Infusion related reaction", 3, False, "2025-07-01", False, ("IB v2",)),  # more severe than listed
        ("Headache", 5, True, "2025-07-01", False, ("IB v2",)),  # fatal outcome not listed
        ("Headache", 1, False, "2023-12-31", False, ()),  # before any RSI
    ],
)
def test_expectedness_uses_the_rsi_in_force_at_onset(term, grade, fatal, onset, expected, versions):
    result = assess_expectedness(term=term, grade=grade, fatal=fatal, onset=onset, rsi_versions=RSI)
    assert result.expected is expected
    assert result.rsi_versions == versions
