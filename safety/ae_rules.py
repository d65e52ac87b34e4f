"""AE record consistency checks, treatment-emergence and causality mapping (docs/domain.md Part A §1.2, §1.4).

Pure functions over a plain ``AEFields`` dataclass; the later model layer maps its rows onto it and
turns the returned ``{field: message}`` dict into a ``RuleViolation``.

Partial dates. SDTM allows ``--DTC`` values of "YYYY", "YYYY-MM" or "YYYY-MM-DD". Two partial dates
are compared at their common precision (the coarser of the two): "2025-02" is before "2025-03-04",
but "2025-03" vs "2025-03-04" cannot be ordered. A check that needs an order it cannot establish
accepts the record (we only refuse what is provably wrong); treatment-emergence resolves the same
uncertainty the conservative way (see ``treatment_emergent``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from safety.rules_data import InputError, get_rules

# ASCII digits only (``\d`` would take any script's digits) and nothing after the day (``$`` would
# accept a trailing newline).
_PARTIAL = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", re.ASCII)


@dataclass(frozen=True, order=False)
class PartialDate:
    """An ISO 8601 date truncated to year, month or day precision."""

    year: int
    month: int | None = None
    day: int | None = None

    @classmethod
    def parse(cls, text: str, *, field: str = "date") -> PartialDate:
        match = _PARTIAL.fullmatch(text.strip()) if isinstance(text, str) else None
        if not match:
            raise InputError(field, f"{text!r} is not a date of the form YYYY, YYYY-MM or YYYY-MM-DD.")
        year, month, day = (int(part) if part else None for part in match.groups())
        try:
            dt.date(year, month or 1, day or 1)
        except ValueError:
            raise InputError(field, f"{text!r} is not a real calendar date.") from None
        return cls(year, month, day)

    @classmethod
    def from_date(cls, value: dt.date) -> PartialDate:
        return cls(value.year, value.month, value.day)

    @property
    def precision(self) -> int:
        """1 = year, 2 = month, 3 = day."""
        return 1 if self.month is None else 2 if self.day is None else 3

    @property
    def is_complete(self) -> bool:
        return self.precision == 3

    def _parts(self, precision: int) -> tuple[int, ...]:
        return (self.year, self.month or 0, self.day or 0)[:precision]

    def compare(self, other: PartialDate) -> int | None:
        """-1, 0 or 1 when the order is decidable at the common precision; None when it is not.

        0 is returned only when both dates are complete and equal.
        """
        precision = min(self.precision, other.precision)
        mine, theirs = self._parts(precision), other._parts(precision)
        if mine < theirs:
            return -1
        if mine > theirs:
            return 1
        return 0 if precision == 3 else None

    def earliest(self) -> dt.date:
        return dt.date(self.year, self.month or 1, self.day or 1)

    def latest(self) -> dt.date:
        if self.month is None:
            return dt.date(self.year, 12, 31)
        if self.day is None:
            first_of_next = dt.date(self.year + self.month // 12, self.month % 12 + 1, 1)
            return first_of_next - dt.timedelta(days=1)
        return dt.date(self.year, self.month, self.day)

    def __str__(self) -> str:
        text = f"{self.year:04d}"
        if self.month is not None:
            text += f"-{self.month:02d}"
        if self.day is not None:
            text += f"-{self.day:02d}"
        return text


def is_definitely_before(first: PartialDate, second: PartialDate) -> bool:
    """True only when ``first`` is provably earlier than ``second``."""
    return first.compare(second) == -1


# ---------------------------------------------------------------------------------------------
# Consistency checks (docs/domain.md §1.4)
# ---------------------------------------------------------------------------------------------

CRITERIA = (
    "death",
    "life_threatening",
    "hospitalisation",
    "disability",
    "congenital_anomaly",
    "important_medical_event",
)


@dataclass(frozen=True)
class AEFields:
    """The AE fields the consistency checks read (SDTM names in comments)."""

    onset: str | None  # AESTDTC, partial ISO date
    serious: bool = False  # AESER
    death: bool = False  # AESDTH
    life_threatening: bool = False  # AESLIFE
    hospitalisation: bool = False  # AESHOSP
    disability: bool = False  # AESDISAB
    congenital_anomaly: bool = False  # AESCONG
    important_medical_event: bool = False  # AESMIE
    grade: int | None = None  # AETOXGR; None when the protocol grades by AESEV
    outcome: str | None = None  # AEOUT, CDISC CT "OUT"
    end: str | None = None  # AEENDTC, partial ISO date
    ongoing: bool = False  # AEONGO
    consent_date: dt.date | None = None  # RFICDTC
    death_date: dt.date | None = None  # DTHDTC
    infusion_at: dt.datetime | None = None  # RFXSTDTC, first infusion start

    @property
    def criteria(self) -> tuple[str, ...]:
        return tuple(name for name in CRITERIA if getattr(self, name))


def check_ae_consistency(ae: AEFields, *, rules: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Every consistency violation, as ``{field: message}``; an empty dict means consistent.

    Rules (docs/domain.md §1.4):
    1. serious <=> at least one of the six seriousness criteria;
    2. grade 5 <=> outcome FATAL <=> "results in death" criterion (grade part only when graded);
    3. end date >= onset (partial dates compared at their common precision; undecidable accepted);
    4. ongoing <=> no end date, and ongoing <=> outcome in {NOT RECOVERED/NOT RESOLVED,
       RECOVERING/RESOLVING, UNKNOWN};
    5. onset not provably before the informed-consent date (earlier events are medical history);
    6. onset and end not provably after the participant's death.
    """
    rules = rules or get_rules("ae_consistency")
    problems: dict[str, list[str]] = {}

    def refuse(field: str, message: str) -> None:
        problems.setdefault(field, []).append(message)

    # 1. Seriousness
    criteria = ae.criteria
    if ae.serious and not criteria:
        refuse("serious", "A serious AE needs at least one seriousness criterion.")
    if not ae.serious and criteria:
        refuse("serious", f"The AE meets seriousness criteria ({', '.join(criteria)}) so it must be marked serious.")

    # 2. Grade, outcome and death
    low, high = rules["grade_range"]
    grade = ae.grade
    if grade is not None and (isinstance(grade, bool) or not isinstance(grade, int) or not low <= grade <= high):
        refuse("grade", f"Grade must be a whole number from {low} to {high}.")
        grade = None
    fatal = rules["fatal_outcome"]
    outcome = ae.outcome
    if outcome is None or not str(outcome).strip():
        refuse("outcome", "Outcome is required.")
        outcome = None
    elif outcome not in rules["outcomes"]:
        refuse("outcome", f"Unknown outcome {outcome!r}.")
        outcome = None
    is_fatal = outcome == fatal
    if grade == high and outcome is not None and not is_fatal:
        refuse("outcome", f"A grade {high} AE has outcome {fatal}.")
    if grade == high and not ae.death:
        refuse("death", f"A grade {high} AE meets the 'results in death' criterion.")
    if is_fatal and grade is not None and grade != high:
        refuse("grade", f"An AE with outcome {fatal} is grade {high}.")
    if is_fatal and not ae.death:
        refuse("death", f"An AE with outcome {fatal} meets the 'results in death' criterion.")
    if ae.death and outcome is not None and not is_fatal:
        refuse("outcome", f"An AE that results in death has outcome {fatal}.")

    # 3-5. Dates and ongoing status
    onset = end = None
    if ae.onset is None or not str(ae.onset).strip():
        refuse("onset", "Onset date is required.")
    else:
        try:
            onset = PartialDate.parse(ae.onset, field="onset")
        except InputError as error:
            refuse("onset", error.message)
    if ae.end is not None and str(ae.end).strip():
        try:
            end = PartialDate.parse(ae.end, field="end")
        except InputError as error:
            refuse("end", error.message)
    has_end = ae.end is not None and bool(str(ae.end).strip())
    if ae.ongoing and has_end:
        refuse("end", "An ongoing AE has no end date.")
    if not ae.ongoing and not has_end:
        refuse("end", "End date is required unless the AE is ongoing.")
    ongoing_outcomes = rules["ongoing_outcomes"]
    if outcome is not None:
        if ae.ongoing and outcome not in ongoing_outcomes:
            refuse("outcome", f"An ongoing AE has outcome {' or '.join(ongoing_outcomes)}, not {outcome}.")
        if not ae.ongoing and outcome in ongoing_outcomes:
            refuse("outcome", f"An AE that has ended cannot have outcome {outcome}.")
    if onset is not None and end is not None and is_definitely_before(end, onset):
        refuse("end", f"End date {end} is before onset {onset}.")
    if onset is not None and ae.consent_date is not None:
        consent = PartialDate.from_date(ae.consent_date)
        if is_definitely_before(onset, consent):
            refuse(
                "onset",
                f"Onset {onset} is before informed consent on {ae.consent_date:%Y-%m-%d}; record it as medical history.",
            )
    if ae.death_date is not None:
        death = PartialDate.from_date(ae.death_date)
        for field, date in (("onset", onset), ("end", end)):
            if date is not None and is_definitely_before(death, date):
                label = "Onset" if field == "onset" else "End date"
                refuse(field, f"{label} {date} is after the participant's death on {ae.death_date:%Y-%m-%d}.")
    return {field: " ".join(messages) for field, messages in problems.items()}


# ---------------------------------------------------------------------------------------------
# Treatment-emergence (ADaM TRTEMFL; docs/domain.md §1.4, §6)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreatmentEmergence:
    emergent: bool
    decided_by_convention: bool  # True when a partial or same-day onset was resolved conservatively
    reason: str


def treatment_emergent(
    onset: str, infusion_at: dt.datetime | None, *, tz: dt.tzinfo | None = None
) -> TreatmentEmergence:
    """Whether an AE is treatment-emergent: onset on or after the first-infusion date.

    The infusion date is the calendar date of ``infusion_at`` in ``tz`` (the site's time zone) or,
    without ``tz``, in the datetime's own time zone; ``infusion_at`` must be time-zone aware.

    Conservative convention for uncertain onsets (an AE is counted as treatment-emergent unless it
    is provably pre-treatment, so a possible product toxicity is never hidden):
    - a partial onset ("2025", "2025-03") that is not provably before the infusion date is emergent;
    - a complete onset on the infusion day is emergent (onset dates carry no time, so an event the
      same day cannot be shown to precede the infusion).
    No infusion yet: not emergent.
    """
    start = PartialDate.parse(onset, field="onset")
    if infusion_at is None:
        return TreatmentEmergence(False, False, "no infusion: not treatment-emergent")
    if infusion_at.tzinfo is None or infusion_at.utcoffset() is None:
        raise InputError("infusion_at", "The infusion datetime must be time-zone aware.")
    local = infusion_at.astimezone(tz) if tz is not None else infusion_at
    infusion_date = PartialDate.from_date(local.date())
    order = start.compare(infusion_date)
    if order == -1:
        return TreatmentEmergence(False, False, f"onset {start} is before the infusion on {infusion_date}")
    if order == 1:
        return TreatmentEmergence(True, False, f"onset {start} is after the infusion on {infusion_date}")
    if order == 0:
        return TreatmentEmergence(True, True, f"onset on the infusion day {infusion_date}: counted as emergent")
    return TreatmentEmergence(
        True, True, f"partial onset {start} may be on or after the infusion on {infusion_date}: counted as emergent"
    )


# ---------------------------------------------------------------------------------------------
# Causality (docs/domain.md §1.2)
# ---------------------------------------------------------------------------------------------


def causality_is_related(value: str, *, rules: Mapping[str, Any] | None = None, field: str = "causality") -> bool:
    """Map an ordinal causality assessment to the binary regulatory decision by the study's rule
    (default: 5-point scale, related = possibly, probably, definitely). Case-insensitive."""
    rules = rules or get_rules("causality")
    normalised = " ".join(str(value).strip().lower().split()) if value is not None else ""
    if normalised not in rules["scale"]:
        raise InputError(field, f"{value!r} is not on the causality scale ({', '.join(rules['scale'])}).")
    return normalised in rules["related"]
