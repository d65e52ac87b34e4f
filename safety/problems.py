"""Collect every problem of a safety write, then refuse it once.

Every write service checks all of its input before it saves anything and reports every problem it
found in one ``RuleViolation({field: [messages]})``, so a form shows all of its errors at once
instead of one per submission. ``Problems`` is the collector; the AE checks below are the largest
user of it (docs/domain.md §1.4, with the dictionary, single-infusion and participant-timeline rules),
and ``adverse_event_problems`` lets the AE page show the rule problems next to the form's own field
errors without saving anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils import timezone

from safety.ae_rules import AEFields, PartialDate, causality_is_related, check_ae_consistency, treatment_emergent
from safety.models import (
    DURING_INFUSION_ACTIONS,
    SERIOUSNESS_CRITERIA,
    AdverseEvent,
    AECategory,
    StudySafetyProfile,
)
from safety.rules_data import InputError, get_rules
from trials import rules
from trials.errors import ConflictError, LockedError, RuleViolation
from trials.guards import clinical_today, first_consent, first_infusion, require_role
from trials.models import DATA_ENTRY_ROLES, Disposition, Participant, Study
from trials.text import NAME_MAX, NARRATIVE_MAX, REASON_MAX, clean_identifier, clean_text

# Free-text bounds of the safety records (characters, after NFC normalisation).
TEXT_BOUNDS = {
    "verbatim_term": NAME_MAX,  # AETERM: one diagnosis, sign or symptom
    "action_other": NAME_MAX,  # AEACNOTH
    "treatment_details": REASON_MAX,  # drug, dose, dates
    "narrative": NARRATIVE_MAX,  # SAE narrative
    "rationale": REASON_MAX,
    "causality_rationale": REASON_MAX,
    "expectedness_rationale": REASON_MAX,
    "reason": REASON_MAX,
    "override_reason": REASON_MAX,
    "acknowledgement": 100,  # the regulator's reference ID (the model's column width)
}


class Problems(rules.Problems):
    """The casebook's problem collector (``trials.rules.Problems``) with what the safety services
    also need: renamed engine fields, a block whose refusal is kept, and text cleaning."""

    def merge(self, error: ValidationError | Mapping[str, Any], fields: Mapping[str, str] | None = None) -> None:
        """Add a refusal's messages (a ``ValidationError`` or a ``{field: message(s)}`` mapping);
        ``fields`` renames fields, e.g. an engine's input name to the form field."""
        if isinstance(error, ValidationError):
            if isinstance(error, ConflictError | LockedError):
                raise error  # not something the form can fix
            mapping: Mapping[str, Any] = (
                error.message_dict if hasattr(error, "error_dict") else {NON_FIELD_ERRORS: error.messages}
            )
        else:
            mapping = error
        for field, messages in mapping.items():
            for message in [messages] if isinstance(messages, str) else messages:
                self.add((fields or {}).get(field, field), message)

    @contextmanager
    def collect(self, fields: Mapping[str, str] | None = None) -> Iterator[None]:
        """Record a refusal raised inside the block (a ``RuleViolation`` or an engine's
        ``InputError``) instead of letting it end the checks. A stale version or a lock is not a
        field problem: it still ends the call at once."""
        try:
            yield
        except RuleViolation as error:
            self.merge(error, fields)
        except InputError as error:
            self.add((fields or {}).get(error.field, error.field), error.message)

    def has(self, field: str) -> bool:
        return field in self

    def as_dict(self) -> dict[str, list[str]]:
        return {field: list(messages) for field, messages in self.errors.items()}

    def text(self, field: str, value: Any, *, label: str, required: str = "", single_line: bool = False) -> str:
        """``value`` as it will be stored (NFC, stripped), or "" with the problem recorded.
        ``required`` is the message for an empty value (empty allowed when not given)."""
        clean = clean_identifier if single_line else clean_text
        try:
            text = clean(value, max_length=TEXT_BOUNDS[field], label=label)
        except ValidationError as error:
            self.merge({field: error.messages})
            return ""
        if not text and required:
            self.add(field, required)
        return text


# ---------------------------------------------------------------------------------------------
# Adverse events (docs/domain.md §1.1-1.4)
# ---------------------------------------------------------------------------------------------

CAUSALITY_FIELDS = {
    "product": "causality_product",
    "leukapheresis": "causality_leukapheresis",
    "procedures": "causality_procedures",
}


def normalise_causality(value: Any, rules: Mapping[str, Any], field: str, problems: Problems) -> str:
    """Blank (not yet assessed) or a value of the study's causality scale, in its canonical spelling."""
    text = " ".join(str(value or "").strip().lower().split())
    if not text:
        return ""
    with problems.collect():
        causality_is_related(text, rules=rules, field=field)
        return text
    return ""


def _death_date(participant: Participant) -> dt.date | None:
    return (
        Disposition.objects.filter(participant=participant, kind=Disposition.Kind.DEATH, voided_at=None)
        .values_list("death_date", flat=True)
        .first()
    )


def _clean_entered_fields(ae: AdverseEvent, profile: StudySafetyProfile, problems: Problems) -> None:
    """Normalise what a person typed (text, causality) in place, recording what cannot be stored."""
    ae.verbatim_term = problems.text(
        "verbatim_term",
        ae.verbatim_term,
        label="The verbatim term",
        required="Enter the adverse event as reported (the verbatim term).",
        single_line=True,
    )
    ae.action_other = problems.text("action_other", ae.action_other, label="Other action taken", single_line=True)
    ae.treatment_details = problems.text("treatment_details", ae.treatment_details, label="The treatment details")
    for name in ("onset", "end"):
        # Dates are SDTM text; anything but ASCII digits and dashes is refused by the date parser.
        value = getattr(ae, name)
        setattr(ae, name, value.strip() if isinstance(value, str) else "")
    rules = get_rules("causality", ae.causality_rules or profile.causality_rules)
    ae.causality_rules = rules["version"]
    for name in CAUSALITY_FIELDS.values():
        setattr(ae, name, normalise_causality(getattr(ae, name), rules, name, problems))
    if ae.ctcae_term_id is not None:
        ae.ctcae_version = ae.ctcae_term.version


def _check_rules(ae: AdverseEvent, participant: Participant, profile: StudySafetyProfile, problems: Problems) -> None:
    """Every rule the AE breaks; derives ``treatment_emergent`` and the infusion link on the way."""
    consent = first_consent(participant)
    problems.merge(
        check_ae_consistency(
            AEFields(
                onset=ae.onset or None,
                serious=ae.serious,
                grade=ae.grade,
                outcome=ae.outcome or None,
                end=ae.end or None,
                ongoing=ae.ongoing,
                consent_date=consent.consent_date if consent else None,
                death_date=_death_date(participant),
                **{name: getattr(ae, name) for name in SERIOUSNESS_CRITERIA},
            )
        )
    )
    if consent is None:
        problems.add(
            "onset", f"{participant.subject_code} has not consented: adverse events are collected from consent."
        )
    if ae.grade is None:
        problems.add("grade", "Choose the grade.")
    today = clinical_today()
    onset = None
    if not problems.has("onset"):
        onset = PartialDate.parse(ae.onset)
        if onset.earliest() > today:
            problems.add("onset", f"Onset {onset} is in the future.")
    if ae.end and not problems.has("end"):
        end = PartialDate.parse(ae.end)
        if end.earliest() > today:
            problems.add("end", f"End date {end} is in the future.")
    # The FK is not nullable: reading ``ae.ctcae_term`` with no term set raises, so test the id.
    term = ae.ctcae_term if ae.ctcae_term_id is not None else None
    if term is None:
        problems.add("ctcae_term", "Choose the CTCAE term.")
    else:
        if term.version != profile.ctcae_version:
            problems.add(
                "ctcae_term", f"The study codes with CTCAE v{profile.ctcae_version}; this term is from v{term.version}."
            )
        if (
            ae.grade_scale == "CTCAE"
            and isinstance(ae.grade, int)
            and 1 <= ae.grade <= 5
            and not term.grade_text(ae.grade)
        ):
            available = ", ".join(str(g) for g, _ in term.grades) or "none"
            problems.add(
                "grade", f"{term.term} has no grade {ae.grade} in CTCAE v{term.version} (grades: {available})."
            )
    now = timezone.now()
    if ae.serious and ae.site_aware_at is None:
        problems.add(
            "site_aware_at",
            "Give the date and time the site became aware of the serious event (starts the 24 h clock).",
        )
    if ae.site_aware_at is not None:
        if ae.site_aware_at.tzinfo is None:
            problems.add("site_aware_at", "The awareness time must carry a time zone.")
        elif ae.site_aware_at > now + dt.timedelta(minutes=5):
            problems.add("site_aware_at", "The awareness time is in the future.")
        elif onset is not None and ae.site_aware_at.astimezone(dt.UTC).date() < onset.earliest() - dt.timedelta(days=1):
            problems.add("site_aware_at", f"The site cannot have become aware before the onset ({onset}).")
    if ae.treatment_details and not ae.treatment_given:
        problems.add("treatment_given", "Treatment details are given, so tick 'treatment given'.")
    _check_infusion(ae, participant, onset, problems)


def _check_infusion(ae: AdverseEvent, participant: Participant, onset: PartialDate | None, problems: Problems) -> None:
    infusion = first_infusion(participant)
    ae.infusion = None
    ae.treatment_emergent = False
    if onset is not None and infusion is not None:
        # Day 0 is the infusion's local date at the site (docs/domain.md §1.6), as in trials.
        emergence = treatment_emergent(ae.onset, infusion.start_at, tz=ZoneInfo(participant.site.timezone))
        ae.treatment_emergent = emergence.emergent
        on_infusion_day = onset.compare(PartialDate.from_date(infusion.infusion_date)) == 0
        if ae.category == AECategory.INFUSION_REACTION:
            if not emergence.emergent:
                problems.add(
                    "category",
                    f"An infusion reaction cannot start before the infusion ({infusion.infusion_date:%Y-%m-%d}).",
                )
            ae.infusion = infusion
        # Single-infusion product: interrupting or slowing it only applies during the infusion (docs/domain.md §1.4).
        if ae.action_taken in DURING_INFUSION_ACTIONS and not on_infusion_day:
            problems.add(
                "action_taken",
                f"'{ae.get_action_taken_display()}' applies only to an event during the infusion "
                f"(on {infusion.infusion_date:%Y-%m-%d}); use 'Not applicable' for a single-infusion product.",
            )
    elif infusion is None:
        if ae.category == AECategory.INFUSION_REACTION:
            problems.add(
                "category", f"{participant.subject_code} has not been infused: this cannot be an infusion reaction."
            )
        if ae.action_taken in DURING_INFUSION_ACTIONS:
            problems.add("action_taken", "There was no infusion to interrupt or slow down.")


def ae_rule_problems(ae: AdverseEvent, participant: Participant, profile: StudySafetyProfile) -> Problems:
    """The rules an AE with already-cleaned fields breaks (used again when a grading changes its grade)."""
    problems = Problems()
    _check_rules(ae, participant, profile, problems)
    return problems


def ae_problems(ae: AdverseEvent, participant: Participant, profile: StudySafetyProfile) -> Problems:
    """Clean the entered fields, derive the rest, and gather every problem of the AE: the entered
    text, the rules, and the model's own field checks on fields the rules did not already flag."""
    problems = Problems()
    _clean_entered_fields(ae, profile, problems)
    _check_rules(ae, participant, profile, problems)
    try:
        ae.full_clean(exclude=["participant", "sequence"], validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        for field, messages in error.message_dict.items():
            if not problems.has(field):
                problems.merge({field: messages})
    return problems


def safety_profile(study: Study) -> StudySafetyProfile:
    """The study's safety settings; an unsaved default profile when the data manager set none."""
    profile = StudySafetyProfile.objects.filter(study=study).first()
    return profile if profile is not None else StudySafetyProfile(study=study)


def adverse_event_problems(
    *, actor, participant: Participant, fields: Mapping[str, Any], adverse_event: AdverseEvent | None = None
) -> dict[str, list[str]]:
    """What recording these AE fields (or, with ``adverse_event``, changing that AE to them) would be
    refused for, without saving anything. A page whose form already refused some fields shows these
    next to its own messages, so the user sees every problem in one answer."""
    require_role(
        actor,
        study=participant.study,
        roles=set(DATA_ENTRY_ROLES),
        site=participant.site,
        action="record adverse events",
    )
    if adverse_event is None:
        ae = AdverseEvent(participant=participant, **fields)
    else:
        ae = AdverseEvent.objects.select_related("ctcae_term").get(pk=adverse_event.pk)
        for name, value in fields.items():
            setattr(ae, name, value)
    return ae_problems(ae, participant, safety_profile(participant.study)).as_dict()


def ae_prepare(ae: AdverseEvent, participant: Participant, profile: StudySafetyProfile) -> None:
    """Normalise and derive the AE's fields, or refuse it with every problem at once."""
    ae_problems(ae, participant, profile).raise_if_any()
