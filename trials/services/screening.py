"""Screening, consent, eligibility and screen failure."""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from trials.audit import audit_context
from trials.errors import LockedError, RuleViolation
from trials.guards import (
    clinical_today,
    ensure_consented_by,
    ensure_writable,
    not_future,
    require_role,
    save_validated,
    timeline_of,
)
from trials.models import (
    DATA_ENTRY_ROLES,
    Consent,
    ConsentDocument,
    EligibilityAnswer,
    EligibilityCriterion,
    Participant,
    ParticipantStatus,
    Site,
    Study,
)
from trials.rules import Problems, age_problem, timeline_problems
from trials.text import REASON_MAX, clean_text

# The oldest year of birth a form or the API accepts as a number at all; the protocol's age range
# (``Study.min_age_years``/``max_age_years``) is the real bound.
EARLIEST_BIRTH_YEAR = 1900


def study_start(study: Study) -> dt.date | None:
    """The first day anyone could be screened: the first consent form's effective date (screening
    procedures need consent)."""
    first = study.consent_documents.order_by("effective_date").first()
    return first.effective_date if first else None


@transaction.atomic(durable=True)
def participant_screen(
    *,
    actor,
    study: Study,
    site: Site,
    sex: str,
    birth_year: int,
    screening_date: dt.date,
    channel: str = "web",
) -> Participant:
    """Register a person for screening and give them the next pseudonymous subject code of the site."""
    # Read the lock flag from the database: the caller's instance may predate the study lock.
    study = Study.objects.get(pk=study.pk)
    if study.is_locked:
        raise LockedError(f"Study {study.code} is locked; no participant can be screened.")
    if not study.sites.filter(pk=site.pk).exists():
        raise RuleViolation({"site": f"Site {site.code} does not take part in {study.code}."})
    require_role(actor, study=study, roles=set(DATA_ENTRY_ROLES), site=site, action=f"screen at site {site.code}")
    problems = Problems()
    if sex not in Participant.Sex.values:
        problems.add("sex", f"Unknown sex {sex!r}.")
    problems.check(not_future, "screening_date", screening_date, "Screening date")
    start = study_start(study)
    if start is not None and screening_date < start:
        problems.add(
            "screening_date",
            f"The screening date {screening_date:%Y-%m-%d} is before the study started "
            f"(its first consent form took effect on {start:%Y-%m-%d}).",
        )
    if not isinstance(birth_year, int) or birth_year < EARLIEST_BIRTH_YEAR:
        problems.add("birth_year", f"Give a year of birth from {EARLIEST_BIRTH_YEAR} on.")
    else:
        problem = age_problem(
            birth_year=birth_year, on=screening_date, min_age=study.min_age_years, max_age=study.max_age_years
        )
        if problem:
            problems.add("birth_year", problem)
    problems.raise_if_any()
    # Lock the site row: two coordinators screening at once must not get the same number.
    Site.objects.select_for_update().get(pk=site.pk)
    last = Participant.objects.filter(study=study, site=site).order_by("-sequence").first()
    sequence = (last.sequence if last else 0) + 1
    participant = Participant(
        study=study,
        site=site,
        sequence=sequence,
        subject_code=f"{site.code}-{sequence:04d}",
        sex=sex,
        birth_year=birth_year,
        screening_date=screening_date,
    )
    with audit_context(actor=actor, channel=channel):
        save_validated(participant)
    return participant


@transaction.atomic(durable=True)
def consent_record(
    *, actor, participant: Participant, document: ConsentDocument, consent_date: dt.date, channel: str = "web"
) -> Consent:
    """Record consent to a document version; a later version is a re-consent."""
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    ensure_writable(participant)
    if participant.status == ParticipantStatus.SCREEN_FAILED:
        raise RuleViolation(f"{participant.subject_code} failed screening; consent cannot be recorded.")
    if document.study_id != participant.study_id:
        raise RuleViolation({"document": "This consent document belongs to another study."})
    problems = Problems()
    problems.check(not_future, "consent_date", consent_date, "Consent date")
    for message in timeline_problems(timeline_of(participant), consent_date, what="consent", after=()):
        problems.add("consent_date", message)
    if consent_date < document.effective_date:
        problems.add(
            "consent_date",
            f"Version {document.version} only took effect on {document.effective_date:%Y-%m-%d}; "
            f"consent dated {consent_date:%Y-%m-%d} cannot be to it.",
        )
    latest = participant.consents.select_related("document").order_by("-consent_date").first()
    if latest is not None:
        if latest.document_id == document.pk:
            problems.add("document", f"{participant.subject_code} already consented to this version.")
        elif document.effective_date <= latest.document.effective_date:
            problems.add("document", f"Re-consent must be to a newer version than v{latest.document.version}.")
        if consent_date < latest.consent_date:
            problems.add(
                "consent_date", f"Re-consent cannot predate the previous consent ({latest.consent_date:%Y-%m-%d})."
            )
    in_force = (
        ConsentDocument.objects.filter(study_id=participant.study_id, effective_date__lte=consent_date)
        .order_by("-effective_date")
        .first()
    )
    if in_force is not None and in_force.pk != document.pk and "document" not in problems:
        problems.add(
            "document",
            f"Version {in_force.version} was in force on {consent_date:%Y-%m-%d}; "
            f"consent must be to it, not to v{document.version}.",
        )
    problems.raise_if_any()
    consent = Consent(participant=participant, document=document, consent_date=consent_date)
    with audit_context(actor=actor, channel=channel):
        save_validated(consent)
    return consent


def reconsent_due(participant: Participant) -> ConsentDocument | None:
    """The newer consent version the participant still has to sign, if any."""
    if participant.is_closed:
        return None
    today = clinical_today()
    current = (
        ConsentDocument.objects.filter(study_id=participant.study_id, effective_date__lte=today)
        .order_by("-effective_date")
        .first()
    )
    if current is None or participant.consents.filter(document=current).exists():
        return None
    return current if participant.consents.exists() else None


@transaction.atomic(durable=True)
def eligibility_record(
    *, actor, participant: Participant, answers: dict[int, bool], reason: str = "", channel: str = "web"
) -> list[EligibilityAnswer]:
    """Answer the study's eligibility checklist item by item (criterion id -> yes/no).

    Changing an answer already given needs a reason for change.
    """
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    ensure_writable(participant)
    if participant.status != ParticipantStatus.SCREENING:
        raise RuleViolation(
            f"Eligibility can only be recorded during screening ({participant.subject_code} is "
            f"{participant.get_status_display().lower()})."
        )
    ensure_consented_by(participant, "__all__", clinical_today(), "eligibility assessment")
    criteria = {c.pk: c for c in EligibilityCriterion.objects.filter(study=participant.study, is_active=True)}
    unknown = set(answers) - set(criteria)
    if unknown:
        raise RuleViolation("An answer refers to a criterion that is not part of this study.")
    problems = Problems()
    reason = problems.check(clean_text, reason, max_length=REASON_MAX, label="The reason for change", field="reason")
    existing = {a.criterion_id: a for a in participant.eligibility_answers.all()}
    changed = [cid for cid, value in answers.items() if cid in existing and existing[cid].answer != value]
    if changed and reason == "":
        problems.add("reason", "A reason for change is required to change an eligibility answer.")
    problems.raise_if_any()
    saved = []
    with audit_context(actor=actor, reason=reason, channel=channel):
        for cid, value in answers.items():
            answer = existing.get(cid)
            if answer is None:
                answer = EligibilityAnswer(participant=participant, criterion=criteria[cid], answer=value)
                save_validated(answer)
            elif answer.answer != value:
                answer.answer = value
                answer.version += 1
                save_validated(answer)
            saved.append(answer)
    return saved


def eligibility_unmet(participant: Participant) -> list[str]:
    """Why the participant is not (yet) eligible: unanswered or unmet criteria, by label."""
    problems = []
    answers = {a.criterion_id: a.answer for a in participant.eligibility_answers.all()}
    for criterion in EligibilityCriterion.objects.filter(study_id=participant.study_id, is_active=True):
        label = f"{'Inclusion' if criterion.kind == criterion.Kind.INCLUSION else 'Exclusion'} {criterion.number}"
        if criterion.pk not in answers:
            problems.append(f"{label} is not answered")
        elif not criterion.is_met_by(answers[criterion.pk]):
            problems.append(f"{label} is not met")
    return problems


@transaction.atomic(durable=True)
def participant_screen_fail(*, actor, participant: Participant, reason: str, channel: str = "web") -> Participant:
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    ensure_writable(participant)
    if participant.status != ParticipantStatus.SCREENING:
        raise RuleViolation(
            f"Only a participant in screening can fail screening ({participant.subject_code} is "
            f"{participant.get_status_display().lower()})."
        )
    problems = Problems()
    reason = problems.check(
        clean_text, reason, max_length=REASON_MAX, label="The reason for the screen failure", field="reason"
    )
    if reason == "":
        problems.add("reason", "Give the reason for the screen failure.")
    problems.raise_if_any()
    participant.status = ParticipantStatus.SCREEN_FAILED
    participant.screen_failure_reason = reason
    participant.version += 1
    with audit_context(actor=actor, reason="screen failure", channel=channel):
        save_validated(participant)
    return participant
