"""Business rules and writes for the casebook. Forms and the API call these functions; nothing else
writes clinical rows.

Each function owns its transaction (``atomic(durable=True)``: it fails loudly if nested), checks
every rule before writing, and raises ``RuleViolation`` (a ``ValidationError`` keyed by field) so
that a refused call saves nothing. Every write happens inside ``audit_context`` so that its audit
event carries the acting user, the channel and, for edits, the reason for change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from trials.access_log import record_access
from trials.audit import audit_context
from trials.errors import ConflictError, LockedError, RuleViolation
from trials.models import (
    DATA_ENTRY_ROLES,
    AccessEvent,
    Consent,
    ConsentDocument,
    DiseaseAssessment,
    Disposition,
    DoseCohort,
    EligibilityAnswer,
    EligibilityCriterion,
    EmergencyUnblinding,
    Indication,
    Infusion,
    InsulinDoseChange,
    MMTTSample,
    MRIRead,
    Participant,
    ParticipantStatus,
    ProtocolDeviation,
    RandomizationSlot,
    Relapse,
    RescueTherapy,
    Role,
    Signature,
    Site,
    Study,
    StudyMembership,
    Visit,
)
from trials.selectors import has_role

# ---------------------------------------------------------------------------------------------
# Shared guards
# ---------------------------------------------------------------------------------------------


def clinical_today() -> dt.date:
    """The latest calendar date anywhere on Earth (UTC+14).

    Clinical dates are local to the site; checking "not in the future" against the UTC date would
    refuse a legitimate same-day entry at a site east of Greenwich.
    """
    return (timezone.now() + dt.timedelta(hours=14)).date()


def _not_future(field: str, value: dt.date | None, label: str) -> None:
    if value is not None and value > clinical_today():
        raise RuleViolation({field: f"{label} {value:%Y-%m-%d} is in the future."})


def _not_future_time(field: str, value: dt.datetime | None, label: str) -> None:
    if value is not None and value > timezone.now() + dt.timedelta(minutes=5):
        raise RuleViolation({field: f"{label} is in the future."})


def _ensure_writable(participant: Participant) -> None:
    study = participant.study
    if study.is_locked:
        raise LockedError(f"Study {study.code} is locked; no data can be changed.")
    if participant.is_locked:
        raise LockedError(f"The casebook of {participant.subject_code} is locked; no data can be changed.")


def _ensure_open(participant: Participant, what: str) -> None:
    """After disposition or screen failure only safety follow-up may still be recorded."""
    if participant.is_closed:
        raise RuleViolation(
            f"{participant.subject_code} is {participant.get_status_display().lower()}: "
            f"no {what} can be recorded, only safety follow-up."
        )


def _first_consent(participant: Participant) -> Consent | None:
    return participant.consents.order_by("consent_date").first()


def _ensure_consented_by(participant: Participant, field: str, when: dt.date, what: str) -> None:
    consent = _first_consent(participant)
    if consent is None:
        raise RuleViolation({field: f"{participant.subject_code} has not consented: no {what} before consent."})
    if when < consent.consent_date:
        raise RuleViolation(
            {field: f"The {what} date {when:%Y-%m-%d} is before consent on {consent.consent_date:%Y-%m-%d}."}
        )


def _first_infusion(participant: Participant) -> Infusion | None:
    return participant.infusions.order_by("number").first()


def _save(instance: Model) -> None:
    """Validate the fields, then save. Uniqueness and check constraints are not re-queried here:
    the services test each rule with its own message first, and PostgreSQL enforces the
    constraints in the same statement (re-checking them costs one query per constraint)."""
    instance.full_clean(validate_unique=False, validate_constraints=False)
    instance.save()


def record_update(
    instance: Model, *, actor, reason: str, expected_version: int | None, changes: dict, channel: str
) -> Model:
    """Apply ``changes`` to an existing clinical record: reason required, stale writes refused.

    The version check is a compare-and-set (healthchecks' conditional update): the row is updated
    only if its version is still the one the form was loaded with.
    """
    if not reason or not reason.strip():
        raise RuleViolation({"reason": "A reason for change is required to edit a saved record."})
    model = type(instance)
    current = model.objects.select_for_update().get(pk=instance.pk)
    if expected_version is not None and current.version != expected_version:
        raise ConflictError(
            "This record was changed by someone else since you opened it "
            f"(version {current.version}, yours {expected_version}). Reload it and enter your change again."
        )
    for field, value in changes.items():
        setattr(current, field, value)
    current.version += 1
    current.full_clean(validate_unique=False, validate_constraints=False)
    with audit_context(actor=actor, reason=reason.strip(), channel=channel):
        current.save()
    return current


# ---------------------------------------------------------------------------------------------
# Screening, consent, eligibility, enrolment
# ---------------------------------------------------------------------------------------------


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
    _require_role(actor, study=study, roles=set(DATA_ENTRY_ROLES), site=site, action=f"screen at site {site.code}")
    _not_future("screening_date", screening_date, "Screening date")
    age = screening_date.year - birth_year
    if not 0 <= age <= 110:
        raise RuleViolation({"birth_year": f"Year of birth {birth_year} gives an age of {age} at screening."})
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
        _save(participant)
    return participant


@transaction.atomic(durable=True)
def consent_record(
    *, actor, participant: Participant, document: ConsentDocument, consent_date: dt.date, channel: str = "web"
) -> Consent:
    """Record consent to a document version; a later version is a re-consent."""
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    _ensure_writable(participant)
    if participant.status == ParticipantStatus.SCREEN_FAILED:
        raise RuleViolation(f"{participant.subject_code} failed screening; consent cannot be recorded.")
    if document.study_id != participant.study_id:
        raise RuleViolation({"document": "This consent document belongs to another study."})
    _not_future("consent_date", consent_date, "Consent date")
    if consent_date < document.effective_date:
        raise RuleViolation(
            {
                "consent_date": f"Version {document.version} only took effect on "
                f"{document.effective_date:%Y-%m-%d}; consent dated {consent_date:%Y-%m-%d} cannot be to it."
            }
        )
    latest = participant.consents.select_related("document").order_by("-consent_date").first()
    if latest is not None:
        if latest.document_id == document.pk:
            raise RuleViolation({"document": f"{participant.subject_code} already consented to this version."})
        if document.effective_date <= latest.document.effective_date:
            raise RuleViolation({"document": f"Re-consent must be to a newer version than v{latest.document.version}."})
        if consent_date < latest.consent_date:
            raise RuleViolation(
                {"consent_date": f"Re-consent cannot predate the previous consent ({latest.consent_date:%Y-%m-%d})."}
            )
    in_force = (
        ConsentDocument.objects.filter(study_id=participant.study_id, effective_date__lte=consent_date)
        .order_by("-effective_date")
        .first()
    )
    if in_force is not None and in_force.pk != document.pk:
        raise RuleViolation(
            {
                "document": f"Version {in_force.version} was in force on {consent_date:%Y-%m-%d}; "
                f"consent must be to it, not to v{document.version}."
            }
        )
    consent = Consent(participant=participant, document=document, consent_date=consent_date)
    with audit_context(actor=actor, channel=channel):
        _save(consent)
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
    _ensure_writable(participant)
    if participant.status != ParticipantStatus.SCREENING:
        raise RuleViolation(
            f"Eligibility can only be recorded during screening ({participant.subject_code} is "
            f"{participant.get_status_display().lower()})."
        )
    _ensure_consented_by(participant, "__all__", clinical_today(), "eligibility assessment")
    criteria = {c.pk: c for c in EligibilityCriterion.objects.filter(study=participant.study, is_active=True)}
    unknown = set(answers) - set(criteria)
    if unknown:
        raise RuleViolation("An answer refers to a criterion that is not part of this study.")
    existing = {a.criterion_id: a for a in participant.eligibility_answers.all()}
    changed = [cid for cid, value in answers.items() if cid in existing and existing[cid].answer != value]
    if changed and not reason.strip():
        raise RuleViolation({"reason": "A reason for change is required to change an eligibility answer."})
    saved = []
    with audit_context(actor=actor, reason=reason.strip(), channel=channel):
        for cid, value in answers.items():
            answer = existing.get(cid)
            if answer is None:
                answer = EligibilityAnswer(participant=participant, criterion=criteria[cid], answer=value)
                _save(answer)
            elif answer.answer != value:
                answer.answer = value
                answer.version += 1
                _save(answer)
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
    _ensure_writable(participant)
    if participant.status != ParticipantStatus.SCREENING:
        raise RuleViolation(
            f"Only a participant in screening can fail screening ({participant.subject_code} is "
            f"{participant.get_status_display().lower()})."
        )
    if not reason.strip():
        raise RuleViolation({"reason": "Give the reason for the screen failure."})
    participant.status = ParticipantStatus.SCREEN_FAILED
    participant.screen_failure_reason = reason.strip()
    participant.version += 1
    with audit_context(actor=actor, reason="screen failure", channel=channel):
        _save(participant)
    return participant


def _cohort_enrolled(cohort: DoseCohort) -> int:
    return cohort.participants.exclude(status=ParticipantStatus.SCREEN_FAILED).count()


@transaction.atomic(durable=True)
def participant_enrol(*, actor, participant: Participant, enrolment_date: dt.date, channel: str = "web") -> Participant:
    """Enrol an eligible, consented participant into the next cohort that has room.

    Cohorts fill sequentially (dose escalation): the open cohort with the lowest number that is not
    yet full. The cohort rows are locked so two simultaneous enrolments cannot overfill one.
    """
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    _ensure_writable(participant)
    if participant.status != ParticipantStatus.SCREENING:
        raise RuleViolation(
            f"{participant.subject_code} is {participant.get_status_display().lower()}, "
            "not in screening; only a screened participant can be enrolled."
        )
    _not_future("enrolment_date", enrolment_date, "Enrolment date")
    _ensure_consented_by(participant, "enrolment_date", enrolment_date, "enrolment")
    if enrolment_date < participant.screening_date:
        raise RuleViolation({"enrolment_date": "Enrolment cannot precede screening."})
    problems = eligibility_unmet(participant)
    if problems:
        raise RuleViolation(f"{participant.subject_code} is not eligible: " + "; ".join(problems) + ".")
    cohorts = DoseCohort.objects.select_for_update().filter(study=participant.study, is_open=True).order_by("number")
    cohort = next((c for c in cohorts if _cohort_enrolled(c) < c.capacity), None)
    if cohort is None:
        raise RuleViolation("Every open cohort of this study is full; no participant can be enrolled.")
    participant.cohort = cohort
    participant.enrolment_date = enrolment_date
    participant.status = ParticipantStatus.ENROLLED
    participant.version += 1
    with audit_context(actor=actor, reason="enrolment", channel=channel):
        _save(participant)
        if participant.study.is_blinded:
            _allocate(participant, cohort)
    return participant


# ---------------------------------------------------------------------------------------------
# Infusion and the visit schedule it sets
# ---------------------------------------------------------------------------------------------


def dose_per_kg(total_viable_cells: Decimal, weight_kg: Decimal) -> Decimal:
    return (Decimal(total_viable_cells) / Decimal(weight_kg)).quantize(Decimal("1"), rounding=ROUND_HALF_UP)


def dose_deviation_pct(infusion: Infusion, cohort: DoseCohort) -> Decimal:
    """Signed % difference of the delivered dose from the cohort's planned dose (per kg if planned so)."""
    if cohort.planned_cells_per_kg is not None:
        planned, actual = cohort.planned_cells_per_kg, infusion.dose_cells_per_kg
    else:
        planned, actual = cohort.planned_total_cells, infusion.total_viable_cells
    return ((Decimal(actual) - Decimal(planned)) / Decimal(planned) * 100).quantize(Decimal("0.1"))


def _site_date(participant: Participant, moment: dt.datetime) -> dt.date:
    """The calendar date of ``moment`` at the participant's site: day 0 is the site's local date."""
    return moment.astimezone(ZoneInfo(participant.site.timezone)).date()


def _check_sentinel(participant: Participant, cohort: DoseCohort, start_at: dt.datetime) -> None:
    if not cohort.sentinel_interval_days:
        return
    sentinel = (
        Infusion.objects.filter(cohort=cohort, number=1).exclude(participant=participant).order_by("start_at").first()
    )
    if sentinel is None:
        return  # this participant is the sentinel
    earliest = sentinel.infusion_date + dt.timedelta(days=cohort.sentinel_interval_days)
    if _site_date(participant, start_at) < earliest:
        raise RuleViolation(
            {
                "start_at": f"Sentinel interval: {sentinel.participant.subject_code} was infused on "
                f"{sentinel.infusion_date:%Y-%m-%d}; the next participant of cohort {cohort.number} can be "
                f"infused from {earliest:%Y-%m-%d} ({cohort.sentinel_interval_days} days)."
            }
        )


def _create_schedule(participant: Participant, infusion_date: dt.date) -> None:
    visits = []
    for definition in participant.study.schedule.all():
        planned = infusion_date + dt.timedelta(days=definition.target_day)
        visits.append(
            Visit(
                participant=participant,
                definition=definition,
                kind=Visit.Kind.SCHEDULED,
                planned_date=planned,
                window_start=planned - dt.timedelta(days=definition.window_before),
                window_end=planned + dt.timedelta(days=definition.window_after),
            )
        )
    Visit.objects.bulk_create(visits)


@transaction.atomic(durable=True)
def infusion_record(
    *,
    actor,
    participant: Participant,
    apheresis_date: dt.date,
    manufacturing_lot: str,
    release_passed: bool,
    viability_pct: Decimal,
    total_viable_cells: Decimal,
    weight_kg: Decimal,
    start_at: dt.datetime,
    end_at: dt.datetime,
    interrupted: bool = False,
    interruption_reason: str = "",
    premedication: str = "",
    volume_ml: Decimal | None = None,
    channel: str = "web",
) -> Infusion:
    """Record a dosing event, compute the dose per kg, flag a dose deviation and, for the first
    infusion, set the participant's visit schedule from day 0 = the infusion date."""
    participant = (
        Participant.objects.select_for_update(of=("self",))
        .select_related("study", "cohort", "site")
        .get(pk=participant.pk)
    )
    _ensure_writable(participant)
    if participant.status not in (ParticipantStatus.ENROLLED, ParticipantStatus.IN_FOLLOW_UP):
        raise RuleViolation(
            f"{participant.subject_code} is {participant.get_status_display().lower()}: "
            "only an enrolled participant can be infused."
        )
    cohort = participant.cohort
    number = participant.infusions.count() + 1
    if number > cohort.infusions_planned:
        raise RuleViolation(
            f"Cohort {cohort.number} plans {cohort.infusions_planned} infusion(s); "
            f"{participant.subject_code} has had them all."
        )
    if not release_passed:
        raise RuleViolation({"release_passed": "The product lot has not passed release testing; it cannot be infused."})
    if start_at.tzinfo is None or end_at.tzinfo is None:
        raise RuleViolation({"start_at": "Infusion times must carry a time zone."})
    _not_future_time("start_at", start_at, "Infusion start")
    _not_future_time("end_at", end_at, "Infusion end")
    if end_at < start_at:
        raise RuleViolation({"end_at": "The infusion cannot end before it starts."})
    if end_at - start_at > dt.timedelta(hours=24):
        raise RuleViolation({"end_at": "An infusion lasting more than 24 hours is not plausible; check the times."})
    start_date = _site_date(participant, start_at)
    _ensure_consented_by(participant, "start_at", start_date, "infusion")
    if participant.enrolment_date and start_date < participant.enrolment_date:
        raise RuleViolation(
            {"start_at": f"The infusion cannot precede enrolment ({participant.enrolment_date:%Y-%m-%d})."}
        )
    if apheresis_date > start_date:
        raise RuleViolation({"apheresis_date": "The apheresis (cell collection) must come before the infusion."})
    _ensure_consented_by(participant, "apheresis_date", apheresis_date, "apheresis")
    if not 0 < Decimal(viability_pct) <= 100:
        raise RuleViolation({"viability_pct": "Viability must be between 0 and 100 %."})
    if not 20 <= Decimal(weight_kg) <= 250:
        raise RuleViolation({"weight_kg": "Weight used for dosing must be between 20 and 250 kg."})
    if Decimal(total_viable_cells) <= 0:
        raise RuleViolation({"total_viable_cells": "Total viable cells must be positive."})
    if interrupted and not interruption_reason.strip():
        raise RuleViolation({"interruption_reason": "Give the reason for the interruption."})
    previous = participant.infusions.order_by("-number").first()
    if previous and start_at <= previous.end_at:
        raise RuleViolation({"start_at": "This infusion starts before the previous one ended."})
    if number == 1:
        _check_sentinel(participant, cohort, start_at)

    infusion = Infusion(
        participant=participant,
        number=number,
        cohort=cohort,
        apheresis_date=apheresis_date,
        manufacturing_lot=manufacturing_lot.strip(),
        release_passed=release_passed,
        viability_pct=viability_pct,
        total_viable_cells=total_viable_cells,
        volume_ml=volume_ml,
        weight_kg=weight_kg,
        dose_cells_per_kg=dose_per_kg(total_viable_cells, weight_kg),
        start_at=start_at,
        end_at=end_at,
        infusion_date=start_date,
        interrupted=interrupted,
        interruption_reason=interruption_reason.strip(),
        premedication=premedication.strip(),
    )
    with audit_context(actor=actor, reason="infusion recorded", channel=channel):
        _save(infusion)
        deviation = dose_deviation_pct(infusion, cohort)
        if abs(deviation) > participant.study.dose_tolerance_pct:
            _save(
                ProtocolDeviation(
                    participant=participant,
                    category=ProtocolDeviation.Category.DOSE,
                    description=(
                        f"Infused dose {infusion.dose_cells_per_kg:,} cells/kg ({infusion.total_viable_cells:,} "
                        f"cells) is {deviation:+}% from cohort {cohort.number}'s planned dose "
                        f"(tolerance ±{participant.study.dose_tolerance_pct}%)."
                    ),
                    detected_on=start_date,
                    infusion=infusion,
                    system_detected=True,
                )
            )
        if number == 1:
            _create_schedule(participant, start_date)
            participant.status = ParticipantStatus.IN_FOLLOW_UP
            participant.version += 1
            _save(participant)
    return infusion


# ---------------------------------------------------------------------------------------------
# Visits
# ---------------------------------------------------------------------------------------------


def _visit_date_rules(participant: Participant, field: str, when: dt.date) -> None:
    _not_future(field, when, "Visit date")
    infusion = _first_infusion(participant)
    if infusion is None:
        raise RuleViolation(
            {field: f"{participant.subject_code} has not been infused; follow-up visits start at day 0."}
        )
    if when < infusion.infusion_date:
        raise RuleViolation(
            {field: f"The visit date {when:%Y-%m-%d} is before the infusion on {infusion.infusion_date:%Y-%m-%d}."}
        )
    _ensure_consented_by(participant, field, when, "visit")


@transaction.atomic(durable=True)
def visit_record(
    *,
    actor,
    visit: Visit,
    actual_date: dt.date,
    weight_kg: Decimal | None = None,
    reason: str = "",
    expected_version: int | None = None,
    channel: str = "web",
) -> Visit:
    """Record that a scheduled visit took place. A visit outside its window is kept and flagged as a
    protocol deviation. Editing a recorded visit needs a reason and the version it was loaded with."""
    participant = Participant.objects.select_related("study").get(pk=visit.participant_id)
    _ensure_writable(participant)
    already_recorded = Visit.objects.filter(pk=visit.pk, actual_date__isnull=False).exists()
    if visit.kind != Visit.Kind.SAFETY and not already_recorded:
        # A closed casebook takes no new visits, but a visit recorded before the disposition can
        # still be corrected (with a reason) during data cleaning.
        _ensure_open(participant, "visit")
    _visit_date_rules(participant, "actual_date", actual_date)
    if weight_kg is not None and not 20 <= Decimal(weight_kg) <= 250:
        raise RuleViolation({"weight_kg": "Weight must be between 20 and 250 kg."})
    changes = {"actual_date": actual_date, "weight_kg": weight_kg, "missed": False, "missed_reason": ""}
    # Decide between first entry and edit on the locked row, not on the caller's copy: a visit
    # recorded since the form was loaded must not be overwritten without a reason for change.
    current = Visit.objects.select_for_update().get(pk=visit.pk)
    if current.actual_date is None and not current.missed:
        if expected_version is not None and current.version != expected_version:
            raise ConflictError("This visit was changed by someone else since you opened it. Reload it.")
        for key, value in changes.items():
            setattr(current, key, value)
        current.version += 1
        # First entry of a planned visit: the row exists since the infusion, so this is an UPDATE
        # and the database wants a reason; the workflow step is the reason.
        with audit_context(actor=actor, reason="visit recorded", channel=channel):
            _save(current)
    else:
        current = record_update(
            current,
            actor=actor,
            reason=reason,
            expected_version=expected_version,
            changes=changes,
            channel=channel,
        )
    already_flagged = ProtocolDeviation.objects.filter(
        visit=current, category=ProtocolDeviation.Category.VISIT_WINDOW, system_detected=True
    ).exists()
    if current.in_window is False and not already_flagged:
        with audit_context(actor=actor, channel=channel):
            _save(
                ProtocolDeviation(
                    participant=participant,
                    category=ProtocolDeviation.Category.VISIT_WINDOW,
                    description=(
                        f"{current.label} done on {actual_date:%Y-%m-%d}, outside its window "
                        f"{current.window_start:%Y-%m-%d} to {current.window_end:%Y-%m-%d}."
                    ),
                    detected_on=actual_date,
                    visit=current,
                    system_detected=True,
                )
            )
    return current


@transaction.atomic(durable=True)
def visit_mark_missed(*, actor, visit: Visit, reason: str, channel: str = "web") -> Visit:
    participant = Participant.objects.select_related("study").get(pk=visit.participant_id)
    _ensure_writable(participant)
    if not reason.strip():
        raise RuleViolation({"missed_reason": "Say why the visit was missed."})
    _ensure_open(participant, "missed visit")
    current = Visit.objects.select_for_update().get(pk=visit.pk)
    if current.actual_date:
        raise RuleViolation("This visit took place; correct its date instead of marking it missed.")
    if current.kind != Visit.Kind.SCHEDULED:
        raise RuleViolation("Only a scheduled visit can be missed.")
    if current.missed:
        raise RuleViolation("This visit is already marked as missed.")
    if current.window_start and current.window_start > clinical_today():
        raise RuleViolation(
            f"The window of {current.label} only opens on {current.window_start:%Y-%m-%d}; it cannot be missed yet."
        )
    current.missed = True
    current.missed_reason = reason.strip()
    current.version += 1
    with audit_context(actor=actor, reason="visit missed", channel=channel):
        _save(current)
    return current


@transaction.atomic(durable=True)
def visit_add_unscheduled(
    *,
    actor,
    participant: Participant,
    actual_date: dt.date,
    reason: str,
    safety_follow_up: bool = False,
    weight_kg: Decimal | None = None,
    channel: str = "web",
) -> Visit:
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    _ensure_writable(participant)
    if not safety_follow_up:
        _ensure_open(participant, "unscheduled visit")
    if not reason.strip():
        raise RuleViolation({"reason": "Say why this unscheduled visit took place."})
    _visit_date_rules(participant, "actual_date", actual_date)
    if weight_kg is not None and not 20 <= Decimal(weight_kg) <= 250:
        raise RuleViolation({"weight_kg": "Weight must be between 20 and 250 kg."})
    visit = Visit(
        participant=participant,
        kind=Visit.Kind.SAFETY if safety_follow_up else Visit.Kind.UNSCHEDULED,
        actual_date=actual_date,
        reason=reason.strip(),
        weight_kg=weight_kg,
    )
    with audit_context(actor=actor, channel=channel):
        _save(visit)
    return visit


# ---------------------------------------------------------------------------------------------
# Disease-activity assessments
# ---------------------------------------------------------------------------------------------

# Physiological ranges, with the unit in the message (docs/domain.md §5). (min, max) inclusive.
RANGES: dict[str, tuple[Decimal, Decimal, str]] = {
    "edss": (Decimal("0"), Decimal("10"), "EDSS"),
    "hba1c:%": (Decimal("3"), Decimal("20"), "HbA1c (%)"),
    "hba1c:mmol/mol": (Decimal("9"), Decimal("195"), "HbA1c (mmol/mol)"),
    "insulin_u_per_kg_day": (Decimal("0"), Decimal("3"), "Daily insulin dose (U/kg/day)"),
    "tender_joints_28": (Decimal("0"), Decimal("28"), "Tender joint count (of 28)"),
    "swollen_joints_28": (Decimal("0"), Decimal("28"), "Swollen joint count (of 28)"),
    "crp:mg/L": (Decimal("0"), Decimal("500"), "CRP (mg/L)"),
    "crp:mg/dL": (Decimal("0"), Decimal("50"), "CRP (mg/dL)"),
    "esr_mm_h": (Decimal("0"), Decimal("150"), "ESR (mm/h)"),
    "patient_global_mm": (Decimal("0"), Decimal("100"), "Patient global assessment (mm)"),
    "evaluator_global_mm": (Decimal("0"), Decimal("100"), "Evaluator global assessment (mm)"),
    "c_peptide:nmol/L": (Decimal("0"), Decimal("10"), "C-peptide (nmol/L)"),
    "c_peptide:pmol/L": (Decimal("0"), Decimal("10000"), "C-peptide (pmol/L)"),
    "c_peptide:ng/mL": (Decimal("0"), Decimal("30"), "C-peptide (ng/mL)"),
    "mri_lesions": (Decimal("0"), Decimal("200"), "Lesion count"),
    "insulin_total_daily_units": (Decimal("0"), Decimal("300"), "Total daily insulin (U/day)"),
}

# Which assessment fields each indication requires.
REQUIRED_FIELDS = {
    Indication.MS: ["edss"],
    Indication.T1D: ["hba1c", "hba1c_unit", "insulin_u_per_kg_day"],
    Indication.RA: [
        "tender_joints_28",
        "swollen_joints_28",
        "crp",
        "crp_unit",
        "esr_mm_h",
        "patient_global_mm",
        "evaluator_global_mm",
    ],
}
ALL_ASSESSMENT_FIELDS = sorted({f for fields in REQUIRED_FIELDS.values() for f in fields})


def _check_range(field: str, key: str, value) -> None:
    low, high, label = RANGES[key]
    if not low <= Decimal(value) <= high:
        raise RuleViolation({field: f"{label} must be between {low} and {high}; {value} is outside that range."})


def _check_assessment_values(indication: str, values: dict) -> dict:
    required = REQUIRED_FIELDS[indication]
    missing = [f for f in required if values.get(f) in (None, "")]
    if missing:
        raise RuleViolation(dict.fromkeys(missing, "This field is required for this indication."))
    foreign = [f for f in ALL_ASSESSMENT_FIELDS if f not in required and values.get(f) not in (None, "")]
    if foreign:
        raise RuleViolation({f: f"Not collected for {Indication(indication).label}." for f in foreign})
    for field in required:
        if field.endswith("_unit"):
            continue
        key = f"{field}:{values[field + '_unit']}" if f"{field}_unit" in required else field
        if key not in RANGES:
            raise RuleViolation({f"{field}_unit": f"Unknown unit {values[field + '_unit']!r}."})
        _check_range(field, key, values[field])
    if indication == Indication.MS and (Decimal(values["edss"]) * 2) % 1 != 0:
        raise RuleViolation({"edss": "EDSS is scored in steps of 0.5."})
    return {f: values[f] for f in required}


def _ensure_visit_done(visit: Visit, participant: Participant) -> None:
    if visit.participant_id != participant.pk:
        raise RuleViolation("This visit belongs to another participant.")
    if not visit.actual_date:
        raise RuleViolation("Record the visit date before entering its assessments.")


@transaction.atomic(durable=True)
def assessment_record(
    *,
    actor,
    visit: Visit,
    values: dict,
    reason: str = "",
    expected_version: int | None = None,
    channel: str = "web",
) -> DiseaseAssessment:
    """Record (or, with a reason, correct) the disease-activity assessment of a visit."""
    participant = Participant.objects.select_related("study").get(pk=visit.participant_id)
    _ensure_writable(participant)
    if visit.kind != Visit.Kind.SAFETY:
        _ensure_open(participant, "assessment")
    _ensure_visit_done(visit, participant)
    clean = _check_assessment_values(participant.study.indication, values)
    existing = DiseaseAssessment.objects.filter(visit=visit).first()
    if existing is not None:
        clean["assessment_date"] = Visit.objects.get(pk=visit.pk).actual_date  # follows a corrected visit date
        return record_update(
            existing,
            actor=actor,
            reason=reason,
            expected_version=expected_version,
            changes=clean,
            channel=channel,
        )
    assessment = DiseaseAssessment(visit=visit, assessment_date=visit.actual_date, **clean)
    with audit_context(actor=actor, channel=channel):
        _save(assessment)
    return assessment


@transaction.atomic(durable=True)
def mri_record(
    *,
    actor,
    visit: Visit,
    scan_date: dt.date,
    new_or_enlarging_t2: int,
    gd_enhancing: int,
    reader: str = "",
    channel: str = "web",
) -> MRIRead:
    participant = Participant.objects.select_related("study").get(pk=visit.participant_id)
    _ensure_writable(participant)
    _ensure_open(participant, "MRI")
    if participant.study.indication != Indication.MS:
        raise RuleViolation("MRI reads are collected in multiple sclerosis studies only.")
    _ensure_visit_done(visit, participant)
    _not_future("scan_date", scan_date, "Scan date")
    _ensure_consented_by(participant, "scan_date", scan_date, "MRI")
    _check_range("new_or_enlarging_t2", "mri_lesions", new_or_enlarging_t2)
    _check_range("gd_enhancing", "mri_lesions", gd_enhancing)
    if MRIRead.objects.filter(visit=visit).exists():
        raise RuleViolation("This visit already has an MRI read.")
    read = MRIRead(
        visit=visit,
        scan_date=scan_date,
        new_or_enlarging_t2=new_or_enlarging_t2,
        gd_enhancing=gd_enhancing,
        reader=reader.strip(),
    )
    with audit_context(actor=actor, channel=channel):
        _save(read)
    return read


MMTT_MINUTES = (-10, 0, 15, 30, 60, 90, 120, 150, 180, 240)


@transaction.atomic(durable=True)
def mmtt_record(
    *, actor, visit: Visit, samples: Iterable[tuple[int, Decimal]], unit: str, channel: str = "web"
) -> list[MMTTSample]:
    """Record a mixed-meal tolerance test: C-peptide at its time points (minutes), in one unit."""
    participant = Participant.objects.select_related("study").get(pk=visit.participant_id)
    _ensure_writable(participant)
    _ensure_open(participant, "MMTT")
    if participant.study.indication != Indication.T1D:
        raise RuleViolation("MMTTs are collected in type 1 diabetes studies only.")
    _ensure_visit_done(visit, participant)
    samples = list(samples)
    if len(samples) < 2:
        raise RuleViolation({"samples": "An MMTT needs at least two time points."})
    minutes = [m for m, _ in samples]
    if len(set(minutes)) != len(minutes):
        raise RuleViolation({"samples": "A time point appears twice."})
    bad = [m for m in minutes if m not in MMTT_MINUTES]
    if bad:
        raise RuleViolation({"samples": f"Time points must be among {', '.join(map(str, MMTT_MINUTES))} min."})
    key = f"c_peptide:{unit}"
    if key not in RANGES:
        raise RuleViolation({"unit": f"Unknown C-peptide unit {unit!r}."})
    for minute, value in samples:
        _check_range(f"c_peptide_{minute}", key, value)
    if visit.mmtt_samples.exists():
        raise RuleViolation("This visit already has an MMTT.")
    rows = [MMTTSample(visit=visit, minute=m, c_peptide=v, unit=unit) for m, v in sorted(samples)]
    with audit_context(actor=actor, channel=channel):
        for row in rows:
            _save(row)
    return rows


@transaction.atomic(durable=True)
def relapse_record(
    *,
    actor,
    participant: Participant,
    onset_date: dt.date,
    steroid_treated: bool,
    confirmed_by_examination: bool,
    notes: str = "",
    channel: str = "web",
) -> Relapse:
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    _ensure_writable(participant)
    _ensure_open(participant, "relapse")
    if participant.study.indication != Indication.MS:
        raise RuleViolation("Relapses are recorded in multiple sclerosis studies only.")
    _not_future("onset_date", onset_date, "Relapse onset")
    _ensure_consented_by(participant, "onset_date", onset_date, "relapse")
    # docs/domain.md §5.1: a protocol-defined relapse starts >= 30 days after the previous one's onset.
    window = dt.timedelta(days=30)
    close = participant.relapses.filter(
        voided_at__isnull=True, onset_date__gt=onset_date - window, onset_date__lt=onset_date + window
    ).first()
    if close is not None:
        raise RuleViolation(
            {
                "onset_date": f"A relapse already started on {close.onset_date:%Y-%m-%d}; a new relapse must "
                "start at least 30 days after the previous one (otherwise it is the same relapse)."
            }
        )
    relapse = Relapse(
        participant=participant,
        onset_date=onset_date,
        steroid_treated=steroid_treated,
        confirmed_by_examination=confirmed_by_examination,
        notes=notes.strip(),
    )
    with audit_context(actor=actor, channel=channel):
        _save(relapse)
    return relapse


# ---------------------------------------------------------------------------------------------
# Intercurrent events and the T1D insulin log (read by the durability analyses)
# ---------------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def rescue_therapy_record(
    *,
    actor,
    participant: Participant,
    start_date: dt.date,
    stop_date: dt.date | None,
    category: str,
    agent: str,
    reason: str,
    channel: str = "web",
) -> RescueTherapy:
    """Record a rescue or new disease-modifying therapy started after the infusion, in any indication:
    an intercurrent event for remission durability (ICH E9(R1)). What a participant took before the
    infusion is prior medication, not rescue, so it is refused here."""
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    _ensure_writable(participant)
    # After withdrawal a new therapy is no longer collected as efficacy data, like a relapse.
    _ensure_open(participant, "rescue therapy")
    if category not in RescueTherapy.Category.values:
        raise RuleViolation({"category": f"Unknown rescue therapy category {category!r}."})
    if not agent or not agent.strip():
        raise RuleViolation({"agent": "Name the agent (the drug), e.g. methylprednisolone."})
    if not reason or not reason.strip():
        raise RuleViolation({"reason": "Say why the rescue therapy was started."})
    _not_future("start_date", start_date, "Rescue therapy start")
    _not_future("stop_date", stop_date, "Rescue therapy stop")
    _ensure_consented_by(participant, "start_date", start_date, "rescue therapy")
    infusion = _first_infusion(participant)
    if infusion is None:
        raise RuleViolation(
            {"start_date": f"{participant.subject_code} has not been infused: rescue therapy is recorded after day 0."}
        )
    if start_date < infusion.infusion_date:
        raise RuleViolation(
            {
                "start_date": f"The start {start_date:%Y-%m-%d} is before the infusion on "
                f"{infusion.infusion_date:%Y-%m-%d}: a therapy before dosing is prior medication, not rescue."
            }
        )
    if stop_date is not None and stop_date < start_date:
        raise RuleViolation(
            {"stop_date": f"The stop date {stop_date:%Y-%m-%d} is before the start on {start_date:%Y-%m-%d}."}
        )
    therapy = RescueTherapy(
        participant=participant,
        start_date=start_date,
        stop_date=stop_date,
        category=category,
        agent=agent.strip(),
        reason=reason.strip(),
    )
    with audit_context(actor=actor, channel=channel):
        _save(therapy)
    return therapy


@transaction.atomic(durable=True)
def insulin_dose_record(
    *,
    actor,
    participant: Participant,
    effective_date: dt.date,
    total_daily_units: Decimal,
    source: str,
    note: str = "",
    channel: str = "web",
) -> InsulinDoseChange:
    """Record a change of a T1D participant's total daily insulin from ``effective_date`` on (0 U/day:
    insulin stopped). The log is a step function with at most one current entry per date; a wrong
    entry is voided and entered again."""
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    _ensure_writable(participant)
    _ensure_open(participant, "insulin dose")
    if participant.study.indication != Indication.T1D:
        raise RuleViolation("Insulin dose logs are kept in type 1 diabetes studies only.")
    if source not in InsulinDoseChange.Source.values:
        raise RuleViolation({"source": f"Unknown source {source!r}."})
    _check_range("total_daily_units", "insulin_total_daily_units", total_daily_units)
    _not_future("effective_date", effective_date, "Insulin dose change")
    _ensure_consented_by(participant, "effective_date", effective_date, "insulin dose")
    same_day = participant.insulin_dose_changes.filter(voided_at__isnull=True, effective_date=effective_date).first()
    if same_day is not None:
        raise RuleViolation(
            {
                "effective_date": f"A dose of {same_day.total_daily_units} U/day from {effective_date:%Y-%m-%d} is "
                "already recorded; void it to enter a correction."
            }
        )
    change = InsulinDoseChange(
        participant=participant,
        effective_date=effective_date,
        total_daily_units=total_daily_units,
        source=source,
        note=note.strip(),
    )
    with audit_context(actor=actor, channel=channel):
        _save(change)
    return change


# ---------------------------------------------------------------------------------------------
# Disposition
# ---------------------------------------------------------------------------------------------

_DISPOSITION_STATUS = {
    Disposition.Kind.COMPLETED: ParticipantStatus.COMPLETED,
    Disposition.Kind.WITHDRAWN: ParticipantStatus.WITHDRAWN,
    Disposition.Kind.LOST: ParticipantStatus.LOST,
    Disposition.Kind.DEATH: ParticipantStatus.DIED,
}


@transaction.atomic(durable=True)
def disposition_record(
    *,
    actor,
    participant: Participant,
    kind: str,
    disposition_date: dt.date,
    reason: str = "",
    death_date: dt.date | None = None,
    channel: str = "web",
) -> Disposition:
    """End a participant's study participation and update their status accordingly."""
    participant = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    _ensure_writable(participant)
    if participant.status not in (ParticipantStatus.ENROLLED, ParticipantStatus.IN_FOLLOW_UP):
        raise RuleViolation(
            f"{participant.subject_code} is {participant.get_status_display().lower()}; "
            "only an enrolled participant has a disposition."
        )
    if kind not in _DISPOSITION_STATUS:
        raise RuleViolation({"kind": f"Unknown disposition {kind!r}."})
    _not_future("disposition_date", disposition_date, "Disposition date")
    if participant.enrolment_date and disposition_date < participant.enrolment_date:
        raise RuleViolation({"disposition_date": "Disposition cannot precede enrolment."})
    if kind in (Disposition.Kind.WITHDRAWN, Disposition.Kind.LOST) and not reason.strip():
        raise RuleViolation({"reason": "Give the reason for the withdrawal or loss to follow-up."})
    if kind == Disposition.Kind.DEATH:
        if death_date is None:
            raise RuleViolation({"death_date": "The date of death is required."})
        _not_future("death_date", death_date, "Date of death")
        if death_date > disposition_date:
            raise RuleViolation({"death_date": "The date of death cannot follow the disposition date."})
    elif death_date is not None:
        raise RuleViolation({"death_date": "A date of death is only recorded with a death disposition."})
    if kind == Disposition.Kind.COMPLETED:
        infusion = _first_infusion(participant)
        end = infusion.infusion_date + dt.timedelta(days=participant.study.follow_up_days) if infusion else None
        if end is None or disposition_date < end:
            raise RuleViolation(
                {
                    "kind": "Completion is only possible at the end of follow-up"
                    + (f" ({end:%Y-%m-%d})." if end else " after the infusion.")
                }
            )
    last_visit = participant.visits.exclude(actual_date=None).order_by("-actual_date").first()
    if last_visit and disposition_date < last_visit.actual_date and kind != Disposition.Kind.DEATH:
        raise RuleViolation(
            {"disposition_date": f"A visit took place after this date ({last_visit.actual_date:%Y-%m-%d})."}
        )
    disposition = Disposition(
        participant=participant,
        kind=kind,
        disposition_date=disposition_date,
        reason=reason.strip(),
        death_date=death_date,
    )
    participant.status = _DISPOSITION_STATUS[kind]
    participant.version += 1
    with audit_context(actor=actor, reason=f"disposition: {kind}", channel=channel):
        _save(disposition)
        _save(participant)
    return disposition


# ---------------------------------------------------------------------------------------------
# Integrity: locking, voiding, e-signatures, blinding (docs/reliability.md §B, §C)
# ---------------------------------------------------------------------------------------------


def _require_role(actor, *, study, roles: set[str], site=None, action: str) -> None:
    """Refuse unless ``actor`` holds one of ``roles`` in ``study`` (at ``site`` for site-bound roles)."""
    # Fresh memberships: the actor object may carry a cache from earlier in the request.
    if hasattr(actor, "_tolerance_memberships"):
        del actor._tolerance_memberships
    if not has_role(actor, study=study, roles=roles, site=site):
        raise PermissionDenied(f"Your role does not allow you to {action}.")


def _required_reason(reason: str, field: str = "reason") -> str:
    if not reason or not reason.strip():
        raise RuleViolation({field: "A reason is required."})
    return reason.strip()


@transaction.atomic(durable=True)
def casebook_set_locked(*, actor, participant: Participant, locked: bool, reason: str, channel: str = "web"):
    """Lock or unlock one participant's casebook (data managers). Unlocking needs a reason too."""
    reason = _required_reason(reason)
    _require_role(actor, study=participant.study, roles={Role.DATA_MANAGER}, action="lock casebooks")
    current = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
    if current.is_locked == locked:
        raise RuleViolation(f"The casebook of {current.subject_code} is already {'locked' if locked else 'unlocked'}.")
    current.is_locked = locked
    current.version += 1
    with audit_context(actor=actor, reason=f"{'lock' if locked else 'unlock'}: {reason}", channel=channel):
        current.save(update_fields=["is_locked", "version", "updated_at"])
    return current


@transaction.atomic(durable=True)
def study_set_locked(*, actor, study: Study, locked: bool, reason: str, channel: str = "web") -> Study:
    """Database lock of a whole study (e.g. before an interim analysis), and its reasoned unlock."""
    reason = _required_reason(reason)
    _require_role(actor, study=study, roles={Role.DATA_MANAGER}, action="lock a study")
    current = Study.objects.select_for_update().get(pk=study.pk)
    if current.is_locked == locked:
        raise RuleViolation(f"Study {current.code} is already {'locked' if locked else 'unlocked'}.")
    current.is_locked = locked
    with audit_context(actor=actor, reason=f"{'lock' if locked else 'unlock'}: {reason}", channel=channel):
        current.save(update_fields=["is_locked"])
    return current


def _participant_of(record) -> Participant:
    if isinstance(record, Participant):
        return record
    if hasattr(record, "participant_id"):
        return Participant.objects.select_related("study", "site").get(pk=record.participant_id)
    if hasattr(record, "visit_id"):
        return Participant.objects.select_related("study", "site").get(visits__pk=record.visit_id)
    raise TypeError(f"{type(record).__name__} is not part of a casebook")


@transaction.atomic(durable=True)
def record_void(*, actor, record, reason: str, channel: str = "web"):
    """Void a clinical record instead of deleting it: it stays in the database and the audit trail,
    visible to data managers and auditors, and drops out of analyses and exports."""
    reason = _required_reason(reason)
    participant = _participant_of(record)
    _ensure_writable(participant)
    _require_role(
        actor,
        study=participant.study,
        roles=set(DATA_ENTRY_ROLES) | {Role.DATA_MANAGER},
        site=participant.site,
        action="void records",
    )
    model = type(record)
    current = model.objects.select_for_update().get(pk=record.pk)
    if current.voided_at is not None:
        raise RuleViolation("This record is already voided.")
    current.voided_at = timezone.now()
    current.voided_by = actor
    current.void_reason = reason
    current.version += 1
    with audit_context(actor=actor, reason=f"void: {reason}", channel=channel):
        current.save(update_fields=["voided_at", "voided_by", "void_reason", "version", "updated_at"])
    return current


def _check_password(actor, password: str, http_request=None) -> None:
    """Re-authentication for signatures and unblinding; a failure is audited as an access event."""
    if not password or not actor.check_password(password):
        # Callers run this outside their atomic block so the failed attempt is never rolled back.
        record_access(kind=AccessEvent.Kind.SIGNATURE_FAILED, request=http_request, user=actor)
        raise RuleViolation({"password": "The password is not correct; nothing was signed."})


def record_sign(*, actor, record, password: str, meaning: str, http_request=None, channel: str = "web"):
    """An investigator signs a record by re-entering their password and choosing what the signature
    means. The signature holds the record's version: a later change invalidates it."""
    participant = _participant_of(record)
    _require_role(
        actor, study=participant.study, roles={Role.INVESTIGATOR}, site=participant.site, action="sign records"
    )
    if meaning not in Signature.Meaning.values:
        raise RuleViolation({"meaning": "Choose what your signature means."})
    # The failed attempt must stay recorded, so the password check runs before the atomic block.
    _check_password(actor, password, http_request)
    with transaction.atomic(durable=True):
        current = type(record).objects.select_for_update().get(pk=record.pk)
        name = actor.get_full_name() or actor.get_username()
        return Signature.objects.create(
            content_type=ContentType.objects.get_for_model(current),
            object_id=current.pk,
            record_version=current.version,
            meaning=meaning,
            signer=actor,
            signer_name=name,
        )


def signature_state(record) -> dict | None:
    """The latest signature of a record and whether it still holds (None: never signed)."""
    signature = (
        Signature.objects.filter(content_type=ContentType.objects.get_for_model(record), object_id=record.pk)
        .order_by("-signed_at")
        .first()
    )
    if signature is None:
        return None
    valid = signature.record_version == record.version
    return {
        "signature": signature,
        "valid": valid,
        "invalidated_on": None if valid else record.updated_at,
    }


def _allocate(participant: Participant, cohort: DoseCohort) -> None:
    """Blinded studies: give the participant the next free slot of the cohort's allocation list."""
    slot = (
        RandomizationSlot.objects.select_for_update()
        .filter(cohort=cohort, participant__isnull=True)
        .order_by("sequence")
        .first()
    )
    if slot is None:
        raise RuleViolation(f"The allocation list of cohort {cohort.number} is exhausted; ask the data manager.")
    slot.participant = participant
    slot.allocated_at = timezone.now()
    slot.save(update_fields=["participant", "allocated_at"])


def participant_unblind(
    *, actor, participant: Participant, password: str, reason: str, http_request=None, channel: str = "web"
) -> str:
    """Emergency unblinding of one participant by an investigator: re-authenticated, reasoned,
    audited and notified to the medical monitors. Returns the arm."""
    reason = _required_reason(reason)
    _require_role(actor, study=participant.study, roles={Role.INVESTIGATOR}, site=participant.site, action="unblind")
    slot = RandomizationSlot.objects.filter(participant=participant).first()
    if slot is None:
        raise RuleViolation(f"{participant.subject_code} has no randomized allocation.")
    _check_password(actor, password, http_request)
    with (
        transaction.atomic(durable=True),
        audit_context(actor=actor, reason=f"emergency unblinding: {reason}", channel=channel),
    ):
        unblinding = EmergencyUnblinding.objects.create(participant=participant, user=actor, reason=reason)
        transaction.on_commit(lambda: _notify_unblinding(unblinding.pk))
    return slot.arm


def _notify_unblinding(unblinding_id: int) -> None:
    unblinding = EmergencyUnblinding.objects.select_related("participant__study", "user").get(pk=unblinding_id)
    study = unblinding.participant.study
    recipients = sorted(
        {
            m.user.email
            for m in StudyMembership.objects.filter(study=study, role=Role.MEDICAL_MONITOR).select_related("user")
            if m.user.email
        }
    )
    if recipients:
        # The arm itself is never put in the message: it goes to people who may be blinded.
        send_mail(
            subject=f"[{study.code}] Emergency unblinding of {unblinding.participant.subject_code}",
            message=(
                f"{unblinding.user.get_full_name() or unblinding.user.get_username()} unblinded "
                f"{unblinding.participant.subject_code} at {unblinding.at:%Y-%m-%d %H:%M} UTC.\n"
                f"Reason: {unblinding.reason}"
            ),
            from_email=None,
            recipient_list=recipients,
        )
