"""Expedited safety reporting clocks and SUSAR determination (docs/domain.md Part A §1.1-1.2, §2.1-2.2).

Boundary conventions (all datetimes must be time-zone aware; a naive one raises ``InputError``):

- **Site -> sponsor (24 h).** An exact duration: due at ``site_aware_at + 24 h``. A report made at
  that instant is on time; one second later is late.
- **Sponsor -> regulators (7 / 15 calendar days).** Day 0 is the *calendar date, in the sponsor's time
  zone,* on which the sponsor first holds the minimum information (identifiable patient, reporter,
  event, suspect product). When both a first-receipt and a qualification datetime are given, Day 0 is
  the earlier of the two dates (docs/domain.md §2.2 "default due dates to the earlier (conservative) one").
  The due date is Day 0 + 7 or + 15 calendar days, with no business-day adjustment (UK wording:
  counted "beginning with the day after the sponsor was first aware"), and the report is on time
  if it is submitted at any time on or before the due date in the sponsor's time zone. ``due_at``
  is the last representable instant of that date (local midnight starting the next day, minus one
  microsecond), so ``submitted_at <= due_at`` is exactly "submitted on or before the due date";
  00:00:00 the next day is late. Taking the next local midnight (not 23:59:59.999999 on the due
  date) gives the true end of the day in zones whose DST change happens at midnight.
- **Upgrade** to fatal/life-threatening: a new 7-day clock with Day 0 = the day the sponsor learns of
  it. The original clock is not cancelled; the case is due at the earlier of the open clocks.
- **Follow-up**: due 15 calendar days after the sponsor receives new significant information, same
  day convention.

Arithmetic and comparisons are done in UTC: Python adds a timedelta to an aware datetime in wall-clock
time, so ``local + 24 h`` across a DST change would be 23 or 25 real hours. Clock datetimes
(``started_at``, ``due_at``) are therefore stored in UTC; ``tz`` keeps the zone for display.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from safety.ae_rules import PartialDate, causality_is_related
from safety.rules_data import InputError, get_rules


class ClockKind(StrEnum):
    SITE_TO_SPONSOR = "site_to_sponsor"  # SAE, site -> sponsor, 24 h
    SEVEN_DAY = "seven_day"  # fatal/life-threatening SUSAR
    FIFTEEN_DAY = "fifteen_day"  # other SUSAR
    UPGRADE_SEVEN_DAY = "upgrade_seven_day"  # upgraded to fatal/life-threatening
    FOLLOW_UP = "follow_up"  # new significant information


class ClockState(StrEnum):
    NOT_DUE = "not_due"
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"
    SUBMITTED_ON_TIME = "submitted_on_time"
    SUBMITTED_LATE = "submitted_late"


@dataclass(frozen=True)
class Clock:
    kind: ClockKind
    started_at: dt.datetime  # the triggering awareness/receipt datetime
    day0: dt.date | None  # calendar clocks only, in ``tz``
    due_date: dt.date | None  # calendar clocks only, in ``tz``
    due_at: dt.datetime  # the last instant at which a report is still on time
    tz: dt.tzinfo
    calendar_days: bool
    rule_version: str

    def is_on_time(self, submitted_at: dt.datetime) -> bool:
        return _utc("submitted_at", submitted_at) <= self.due_at


def _utc(field: str, value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; refuses anything but a time-zone aware datetime."""
    if not isinstance(value, dt.datetime):
        raise InputError(field, f"Expected a datetime, got {value!r}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(field, "The datetime must be time-zone aware.")
    return value.astimezone(dt.UTC)


def _tz(value: dt.tzinfo) -> dt.tzinfo:
    if not isinstance(value, dt.tzinfo):
        raise InputError("sponsor_tz", "The sponsor's time zone is required (e.g. ZoneInfo('Europe/London')).")
    return value


def _calendar_clock(
    kind: ClockKind, started_at: dt.datetime, day0: dt.date, days: int, tz: dt.tzinfo, version: str
) -> Clock:
    due_date = day0 + dt.timedelta(days=days)
    # fold=0 at a non-existent midnight (DST gap) resolves to the transition instant itself, and at
    # an ambiguous one to its first occurrence: both are the true start of the next day.
    next_midnight = dt.datetime.combine(due_date + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    due_at = next_midnight.astimezone(dt.UTC) - dt.timedelta(microseconds=1)
    return Clock(kind, started_at, day0, due_date, due_at, tz, True, version)


def site_report_clock(site_aware_at: dt.datetime, *, rules: Mapping[str, Any] | None = None) -> Clock:
    """Site -> sponsor SAE report: due 24 h after the site became aware (EU CTR Art 41(2))."""
    rules = rules or get_rules("clocks")
    aware = _utc("site_aware_at", site_aware_at)
    due_at = aware + dt.timedelta(hours=rules["site_to_sponsor_hours"])
    return Clock(ClockKind.SITE_TO_SPONSOR, aware, None, None, due_at, site_aware_at.tzinfo, False, rules["version"])


def susar_report_clock(
    *,
    first_receipt_at: dt.datetime,
    fatal_or_life_threatening: bool,
    sponsor_tz: dt.tzinfo,
    qualification_at: dt.datetime | None = None,
    rules: Mapping[str, Any] | None = None,
) -> Clock:
    """Initial SUSAR report to regulators: 7 calendar days for a fatal or life-threatening SUSAR,
    15 otherwise, from Day 0 (see the module docstring)."""
    rules = rules or get_rules("clocks")
    tz = _tz(sponsor_tz)
    receipt = _utc("first_receipt_at", first_receipt_at)
    started, day0 = receipt, receipt.astimezone(tz).date()
    if qualification_at is not None:
        qualified = _utc("qualification_at", qualification_at)
        if qualified.astimezone(tz).date() < day0:
            started, day0 = qualified, qualified.astimezone(tz).date()
    if fatal_or_life_threatening:
        return _calendar_clock(
            ClockKind.SEVEN_DAY, started, day0, rules["fatal_or_life_threatening_days"], tz, rules["version"]
        )
    return _calendar_clock(ClockKind.FIFTEEN_DAY, started, day0, rules["other_susar_days"], tz, rules["version"])


def upgrade_clock(
    *, upgrade_known_at: dt.datetime, sponsor_tz: dt.tzinfo, rules: Mapping[str, Any] | None = None
) -> Clock:
    """A SUSAR first reported as non-fatal/non-life-threatening turns out to be fatal or
    life-threatening: a new 7-day clock from the day the sponsor learns of it (EU CTR Art 42)."""
    rules = rules or get_rules("clocks")
    tz = _tz(sponsor_tz)
    known = _utc("upgrade_known_at", upgrade_known_at)
    return _calendar_clock(
        ClockKind.UPGRADE_SEVEN_DAY, known, known.astimezone(tz).date(), rules["upgrade_days"], tz, rules["version"]
    )


def follow_up_clock(
    *, new_information_at: dt.datetime, sponsor_tz: dt.tzinfo, rules: Mapping[str, Any] | None = None
) -> Clock:
    """Follow-up report: due 15 calendar days after the sponsor receives new significant information
    (21 CFR 312.32(d))."""
    rules = rules or get_rules("clocks")
    tz = _tz(sponsor_tz)
    received = _utc("new_information_at", new_information_at)
    return _calendar_clock(
        ClockKind.FOLLOW_UP, received, received.astimezone(tz).date(), rules["follow_up_days"], tz, rules["version"]
    )


def earliest_clock(clocks: Iterable[Clock]) -> Clock:
    """The open clock that falls due first (e.g. an upgrade clock inside the original 15 days)."""
    ordered = sorted(clocks, key=lambda clock: clock.due_at)
    if not ordered:
        raise InputError("clocks", "At least one clock is needed.")
    return ordered[0]


def lateness_days(clock: Clock, submitted_at: dt.datetime) -> int:
    """Days late (0 when on time).

    Calendar clocks: calendar days between the due date and the submission date in the clock's time
    zone. The 24 h clock: every started 24 h past the deadline counts as a day (1 s late = 1 day).
    """
    submitted = _utc("submitted_at", submitted_at)
    if submitted <= clock.due_at:
        return 0
    if clock.calendar_days:
        assert clock.due_date is not None
        return (submitted.astimezone(clock.tz).date() - clock.due_date).days
    return math.ceil((submitted - clock.due_at) / dt.timedelta(days=1))


@dataclass(frozen=True)
class ClockStatus:
    state: ClockState
    due_at: dt.datetime
    remaining: dt.timedelta  # negative when overdue; time to spare (or lateness) when submitted
    days_late: int


def clock_status(
    clock: Clock,
    *,
    now: dt.datetime,
    submitted_at: dt.datetime | None = None,
    due_soon: dt.timedelta | None = None,
    rules: Mapping[str, Any] | None = None,
) -> ClockStatus:
    """The clock's state at ``now``.

    Submitted: on time or late. Otherwise OVERDUE after ``due_at``; DUE_SOON when ``due_soon`` or
    less remains (``due_at`` itself is still DUE_SOON); NOT_DUE before that. The default
    ``due_soon`` is 6 h for the site clock and 48 h for regulatory clocks (rule data).
    """
    rules = rules or get_rules("clocks")
    now = _utc("now", now)
    if due_soon is None:
        hours = (
            rules["site_due_soon_hours"]
            if clock.kind is ClockKind.SITE_TO_SPONSOR
            else rules["regulatory_due_soon_hours"]
        )
        due_soon = dt.timedelta(hours=hours)
    if submitted_at is not None:
        submitted = _utc("submitted_at", submitted_at)
        late = lateness_days(clock, submitted)
        state = ClockState.SUBMITTED_LATE if submitted > clock.due_at else ClockState.SUBMITTED_ON_TIME
        return ClockStatus(state, clock.due_at, clock.due_at - submitted, late)
    remaining = clock.due_at - now
    if now > clock.due_at:
        return ClockStatus(ClockState.OVERDUE, clock.due_at, remaining, lateness_days(clock, now))
    if remaining <= due_soon:
        return ClockStatus(ClockState.DUE_SOON, clock.due_at, remaining, 0)
    return ClockStatus(ClockState.NOT_DUE, clock.due_at, remaining, 0)


# ---------------------------------------------------------------------------------------------
# SUSAR determination (docs/domain.md §1.1-1.2)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RSIVersion:
    """A version of the Reference Safety Information (usually the IB section).

    ``expected`` maps an expected reaction term to the highest grade at which it is expected
    (None: expected at any grade short of death). A fatal outcome is unexpected unless the term's
    grade allows 5.
    """

    version: str
    effective_from: dt.date
    expected: Mapping[str, int | None]


@dataclass(frozen=True)
class Expectedness:
    expected: bool
    rsi_versions: tuple[str, ...]  # every RSI version that may have been in force at onset
    reason: str


def _normalise_term(term: str) -> str:
    return " ".join(term.strip().lower().split())


def assess_expectedness(
    *, term: str, grade: int | None, fatal: bool, onset: str, rsi_versions: Sequence[RSIVersion]
) -> Expectedness:
    """Expectedness against the RSI in force at the time of the event (docs/domain.md §1.1).

    The RSI in force on a date is the latest version effective on or before it. For a partial onset
    every version that may have been in force during the onset period is considered, and the event
    is expected only if *every* one lists it (conservative). An onset before the first RSI version
    is unexpected.
    """
    if not term or not term.strip():
        raise InputError("term", "The event term is required.")
    start = PartialDate.parse(onset, field="onset")
    ordered = sorted(rsi_versions, key=lambda rsi: rsi.effective_from)
    first_day, last_day = start.earliest(), start.latest()
    candidates = [
        rsi
        for index, rsi in enumerate(ordered)
        if rsi.effective_from <= last_day
        and (index + 1 == len(ordered) or ordered[index + 1].effective_from > first_day)
    ]
    if not candidates:
        return Expectedness(False, (), f"no RSI was in force at onset {start}: unexpected")
    key = _normalise_term(term)
    versions = tuple(rsi.version for rsi in candidates)
    for rsi in candidates:
        listed = {_normalise_term(name): limit for name, limit in rsi.expected.items()}
        if key not in listed:
            return Expectedness(False, versions, f"{term!r} is not listed in RSI {rsi.version}")
        limit = listed[key]
        if fatal and (limit is None or limit < 5):
            return Expectedness(False, versions, f"a fatal outcome of {term!r} is not listed in RSI {rsi.version}")
        if grade is not None and limit is not None and grade > limit:
            return Expectedness(
                False, versions, f"grade {grade} {term!r} exceeds grade {limit} listed in RSI {rsi.version}"
            )
    return Expectedness(True, versions, f"{term!r} is listed in RSI {', '.join(versions)}")


@dataclass(frozen=True)
class SusarDetermination:
    is_susar: bool
    serious: bool
    related: bool
    unexpected: bool
    causality_pending: bool  # no investigator causality yet: treated as related until it arrives
    reason: str


def determine_susar(
    *,
    serious: bool,
    investigator_causality: str | None,
    sponsor_causality: str | None,
    expected: bool,
    causality_rules: Mapping[str, Any] | None = None,
) -> SusarDetermination:
    """SUSAR = serious AND suspected-related AND unexpected.

    Related if either the investigator or the sponsor judges it related: the sponsor can upgrade
    but never downgrade the investigator's causality (EU CTR Annex III §2.1). While the investigator's
    causality is missing the sponsor must ask for it, and the event is treated as related meanwhile
    (conservative). ``serious`` is the combined judgement (investigator or sponsor, docs/domain.md §1.1);
    ``expected`` comes from ``assess_expectedness`` against the RSI in force at onset.
    """
    if not isinstance(serious, bool) or not isinstance(expected, bool):
        raise InputError("serious" if not isinstance(serious, bool) else "expected", "Expected True or False.")
    pending = investigator_causality is None or not str(investigator_causality).strip()
    investigator_related = (
        True
        if pending
        else causality_is_related(investigator_causality, rules=causality_rules, field="investigator_causality")
    )
    sponsor_related = (
        sponsor_causality is not None
        and bool(str(sponsor_causality).strip())
        and causality_is_related(sponsor_causality, rules=causality_rules, field="sponsor_causality")
    )
    related = investigator_related or sponsor_related
    unexpected = not expected
    is_susar = serious and related and unexpected
    parts = [
        "serious" if serious else "not serious",
        ("related (investigator causality pending)" if pending else "related") if related else "not related",
        "unexpected" if unexpected else "expected",
    ]
    return SusarDetermination(is_susar, serious, related, unexpected, pending, ", ".join(parts))
