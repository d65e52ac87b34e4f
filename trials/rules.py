"""Pure casebook rules: no database, no request. Services and selectors of every app use them.

- ``Problems`` collects every refusal of a write before raising once, so a form shows all its
  errors together instead of one per submit;
- ``Timeline`` and ``timeline_problems`` check a clinical date against the participant's own
  history (year of birth, screening, consent, enrolment, day 0, last visit, death);
- ``age_problem`` checks the year of birth against the protocol's age range at screening;
- ``dose_deviation_pct`` compares a delivered dose with the cohort's plan, and has no answer for a
  placebo cohort (planned at 0 cells): there is no dose to deviate from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from trials.errors import ConflictError, LockedError, RuleViolation

# ---------------------------------------------------------------------------------------------
# Collecting refusals
# ---------------------------------------------------------------------------------------------


class Problems:
    """Every problem of one write, by field; ``raise_if_any`` raises them together.

    Checks that decide whether the write can be considered at all (locked casebook, wrong status,
    no permission) still raise at once; what is collected here is what the user can correct in the
    form they just sent.
    """

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def __bool__(self) -> bool:
        return bool(self.errors)

    def __contains__(self, field: str) -> bool:
        return field in self.errors

    def add(self, field: str | None, message: str) -> None:
        key = field or NON_FIELD_ERRORS
        if message not in self.errors.get(key, []):
            self.errors.setdefault(key, []).append(message)

    def add_error(self, exc: ValidationError, field: str | None = None) -> None:
        """Keep the messages of a refusal, on its own fields (or on ``field`` if it names none)."""
        if isinstance(exc, LockedError | ConflictError):
            raise exc  # not something the form can fix: stop here
        if hasattr(exc, "error_dict"):
            for key, errors in exc.error_dict.items():
                for error in errors:
                    self.add(key, _message(error))
        else:
            for error in exc.error_list:
                self.add(field, _message(error))

    def check(self, function: Callable[..., Any], *args, field: str | None = None, **kwargs) -> Any:
        """Call a check that raises ``ValidationError``; keep its messages and return None if it does."""
        try:
            return function(*args, **kwargs)
        except ValidationError as exc:
            self.add_error(exc, field)
            return None

    def raise_if_any(self) -> None:
        if self.errors:
            raise RuleViolation({key: list(messages) for key, messages in self.errors.items()})


def _message(error: ValidationError) -> str:
    message = error.message
    return message % error.params if error.params else message


# ---------------------------------------------------------------------------------------------
# The participant's timeline
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """The dates that bound every other date of a casebook (None: not reached yet)."""

    birth_year: int
    screening_date: dt.date
    consent_date: dt.date | None = None
    enrolment_date: dt.date | None = None
    infusion_date: dt.date | None = None
    last_visit_date: dt.date | None = None
    death_date: dt.date | None = None


_MILESTONES = {
    "screening": ("screening_date", "screening"),
    "consent": ("consent_date", "consent"),
    "enrolment": ("enrolment_date", "enrolment"),
    "infusion": ("infusion_date", "the infusion (day 0)"),
    "last_visit": ("last_visit_date", "the last recorded visit"),
}


def timeline_problems(
    timeline: Timeline, when: dt.date | None, *, what: str, after: Iterable[str] = ("screening",)
) -> list[str]:
    """Why ``when`` (the date of ``what``) cannot be on this participant's timeline.

    Always: not before the year of birth and not after the death. ``after`` names the milestones the
    date must not precede (``screening``, ``consent``, ``enrolment``, ``infusion``, ``last_visit``);
    milestones not reached yet are skipped, their own rules refuse the write if they are required.
    """
    if when is None:
        return []
    problems = []
    if when.year < timeline.birth_year:
        problems.append(
            f"The {what} date {when:%Y-%m-%d} is before the participant's year of birth ({timeline.birth_year})."
        )
    for name in after:
        attribute, label = _MILESTONES[name]
        milestone = getattr(timeline, attribute)
        if milestone is not None and when < milestone:
            problems.append(f"The {what} date {when:%Y-%m-%d} is before {label} on {milestone:%Y-%m-%d}.")
    if timeline.death_date is not None and when > timeline.death_date:
        problems.append(
            f"The {what} date {when:%Y-%m-%d} is after the participant's death on {timeline.death_date:%Y-%m-%d}."
        )
    return problems


def age_problem(*, birth_year: int, on: dt.date, min_age: int | None, max_age: int | None) -> str | None:
    """Whether a year of birth can give an age inside the protocol's range on ``on``.

    Only the year is known, so the age is ``on.year - birth_year`` or one less; refuse only when
    neither can be inside the range.
    """
    oldest = on.year - birth_year
    youngest = oldest - 1
    if oldest < 0:
        return f"Year of birth {birth_year} is after the screening date."
    if min_age is not None and oldest < min_age:
        return f"Year of birth {birth_year} gives an age of at most {oldest} at screening; the protocol needs {min_age} or older."
    if max_age is not None and youngest > max_age:
        return (
            f"Year of birth {birth_year} gives an age of at least {youngest} at screening; "
            f"the protocol allows at most {max_age}."
        )
    return None


# ---------------------------------------------------------------------------------------------
# Dose
# ---------------------------------------------------------------------------------------------


def dose_deviation_pct(infusion, cohort) -> Decimal | None:
    """Signed % difference of the delivered dose from the cohort's planned dose (per kg if planned
    so); None for a placebo cohort, where no dose was planned to deviate from."""
    if cohort.planned_cells_per_kg is not None:
        planned, actual = cohort.planned_cells_per_kg, infusion.dose_cells_per_kg
    else:
        planned, actual = cohort.planned_total_cells, infusion.total_viable_cells
    if planned is None or planned == 0:
        return None
    return ((Decimal(actual) - Decimal(planned)) / Decimal(planned) * 100).quantize(Decimal("0.1"))


def placebo_dose_problem(*, cohort, total_viable_cells) -> str | None:
    """A placebo carries no cells: viable cells given in a placebo cohort are a dose deviation."""
    if cohort.is_placebo and total_viable_cells is not None and Decimal(total_viable_cells) > 0:
        return f"Cohort {cohort.number} is a placebo cohort, but {total_viable_cells:,} viable cells were infused."
    return None
