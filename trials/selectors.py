"""Reads, scoped by the requesting user. Every view and API endpoint fetches clinical objects here.

One chokepoint per object type (docs/style.md §2): ``participant_get`` returns the participant or raises
404 when it is outside the user's scope, so nobody can learn whether an id exists at another site.
``participant_get(..., write=True)`` additionally requires a data-entry role (403 otherwise).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404

from trials.models import (
    DATA_ENTRY_ROLES,
    SITE_BOUND_ROLES,
    Consent,
    ConsentDocument,
    Disposition,
    EligibilityCriterion,
    FormCode,
    Indication,
    Infusion,
    InsulinDoseChange,
    Participant,
    ProtocolDeviation,
    Relapse,
    RescueTherapy,
    Role,
    Site,
    Study,
    StudyMembership,
    Visit,
)


def _memberships(user) -> list[StudyMembership]:
    if not user.is_authenticated or not user.is_active:
        return []
    cache = getattr(user, "_tolerance_memberships", None)
    if cache is None:
        cache = list(StudyMembership.objects.filter(user=user, is_active=True).select_related("study", "site"))
        user._tolerance_memberships = cache
    return cache


def _scope(user, *, write: bool, prefix: str = "") -> Q:
    """The Q that limits participant-level rows to what ``user`` may read (or write)."""
    scope = Q(pk__in=[])  # matches nothing
    for membership in _memberships(user):
        if membership.role == Role.SPONSOR_ADMIN:
            continue  # user administration only: no clinical data
        if write and membership.role not in DATA_ENTRY_ROLES:
            continue
        condition = Q(**{f"{prefix}study_id": membership.study_id})
        if membership.role in SITE_BOUND_ROLES:
            # A site-bound role without a site sees nothing rather than everything.
            condition &= Q(**{f"{prefix}site_id": membership.site_id})
        scope |= condition
    return scope


def participant_scope(user, *, prefix: str = "") -> Q:
    """The read scope of ``_scope`` for other modules (the admin's read-only casebook): a Q over
    participant-level rows, ``prefix`` leading from the queried model to its participant."""
    return _scope(user, write=False, prefix=prefix)


def user_roles(user, study: Study) -> set[str]:
    return {m.role for m in _memberships(user) if m.study_id == study.pk}


def can_enter_data(user, participant: Participant) -> bool:
    return Participant.objects.filter(_scope(user, write=True), pk=participant.pk).exists()


def studies_visible_to(user) -> QuerySet[Study]:
    ids = {m.study_id for m in _memberships(user) if m.role != Role.SPONSOR_ADMIN}
    return Study.objects.filter(pk__in=ids)


def sites_for_entry(user, study: Study) -> QuerySet[Site]:
    """Sites where ``user`` may screen new participants in ``study``."""
    site_ids = set()
    all_sites = False
    for m in _memberships(user):
        if m.study_id != study.pk or m.role not in DATA_ENTRY_ROLES:
            continue
        if m.site_id is not None:
            site_ids.add(m.site_id)
        elif m.role not in SITE_BOUND_ROLES:
            all_sites = True
        # A site-bound role without a site screens nowhere, as it sees nothing (``_scope``).
    sites = study.sites.all()
    return sites if all_sites else sites.filter(pk__in=site_ids)


def participant_list(*, user, study: Study | None = None, filters: dict | None = None) -> QuerySet[Participant]:
    qs = Participant.objects.filter(_scope(user, write=False)).select_related("study", "site", "cohort")
    if study is not None:
        qs = qs.filter(study=study)
    filters = filters or {}
    if filters.get("site"):
        qs = qs.filter(site__code=filters["site"])
    if filters.get("status"):
        qs = qs.filter(status=filters["status"])
    if filters.get("cohort"):
        qs = qs.filter(cohort__number=filters["cohort"])
    if filters.get("q"):
        qs = qs.filter(subject_code__icontains=filters["q"])
    return qs


def participant_get(*, user, pk: int, write: bool = False) -> Participant:
    """The access chokepoint for participants (and, through them, their casebook records)."""
    participant = (
        Participant.objects.filter(_scope(user, write=False), pk=pk).select_related("study", "site", "cohort").first()
    )
    if participant is None:
        raise Http404("No such participant.")
    if write and not can_enter_data(user, participant):
        raise PermissionDenied("Your role is read-only for this casebook.")
    return participant


def visit_get(*, user, pk: int, write: bool = False) -> Visit:
    visit = Visit.objects.filter(pk=pk).only("participant_id").first()
    if visit is None:
        raise Http404("No such visit.")
    participant = participant_get(user=user, pk=visit.participant_id, write=write)
    visit = Visit.objects.select_related("definition").get(pk=pk)
    visit.participant = participant
    return visit


def infusion_get(*, user, pk: int, write: bool = False) -> Infusion:
    """An infusion through its participant's chokepoint (404 outside scope, 403 read-only on write)."""
    infusion = Infusion.objects.filter(pk=pk).only("participant_id").first()
    if infusion is None:
        raise Http404("No such infusion.")
    participant = participant_get(user=user, pk=infusion.participant_id, write=write)
    infusion = Infusion.objects.select_related("cohort").get(pk=pk)
    infusion.participant = participant
    return infusion


def status_counts(*, user, study: Study) -> dict[str, int]:
    rows = participant_list(user=user, study=study).values("status").annotate(n=Count("pk"))
    return {row["status"]: row["n"] for row in rows}


@dataclass(frozen=True)
class TimelineVisit:
    visit: Visit
    status: str
    protocol_day: int | None
    forms_due: list[tuple[str, str, bool]]  # (code, label, done)


def _forms_done(visit: Visit) -> set[str]:
    done: set[str] = set()
    if visit.actual_date:
        if visit.weight_kg is not None:
            done.add(FormCode.VITALS)
        if hasattr(visit, "assessment"):
            done.add(FormCode.DISEASE_ACTIVITY)
        if hasattr(visit, "mri"):
            done.add(FormCode.MRI)
        if visit.mmtt_samples.all():
            done.add(FormCode.MMTT)
    return done


def participant_timeline(*, participant: Participant, today: dt.date) -> list[TimelineVisit]:
    """The participant's visits in order with their status on ``today`` and the forms due/done."""
    visits = (
        participant.visits.select_related("definition", "assessment", "mri")
        .prefetch_related("mmtt_samples")
        .order_by("planned_date", "actual_date", "pk")
    )
    infusion = participant.infusions.order_by("number").first()
    day0 = infusion.infusion_date if infusion else None
    labels = dict(FormCode.choices)
    rows = []
    for visit in visits:
        done = _forms_done(visit)
        due = visit.definition.forms_due if visit.definition_id else []
        when = visit.actual_date or visit.planned_date
        rows.append(
            TimelineVisit(
                visit=visit,
                status=visit.status_on(today),
                protocol_day=(when - day0).days if (when and day0) else None,
                forms_due=[(code, labels.get(code, code), code in done) for code in due],
            )
        )
    return rows


def indication_forms(indication: str) -> list[str]:
    """The assessment forms that exist for an indication."""
    return {
        Indication.MS: [FormCode.DISEASE_ACTIVITY, FormCode.MRI],
        Indication.T1D: [FormCode.DISEASE_ACTIVITY, FormCode.MMTT],
        Indication.RA: [FormCode.DISEASE_ACTIVITY],
    }[indication]


# ---------------------------------------------------------------------------------------------
# Reads for the coordinators' web pages (appended; the functions above are unchanged)
# ---------------------------------------------------------------------------------------------


def study_get(*, user, code: str) -> Study:
    """A study the user has a (clinical) role in, by its code; 404 otherwise."""
    study = studies_visible_to(user).filter(code=code).first()
    if study is None:
        raise Http404("No such study.")
    return study


def memberships_in(*, user, study: Study) -> list[StudyMembership]:
    """The user's roles in ``study`` (for the page header: who am I, where)."""
    return [m for m in _memberships(user) if m.study_id == study.pk]


def studies_with_roles(*, user) -> list[tuple[Study, list[StudyMembership]]]:
    """Every study ``user`` has a role in, each with those roles (the start page), including roles that
    see no clinical data (sponsor admin). A superuser administers every study, with or without a role."""
    by_study: dict[int, list[StudyMembership]] = {}
    for m in _memberships(user):
        by_study.setdefault(m.study_id, []).append(m)
    studies = Study.objects.all() if user.is_superuser else Study.objects.filter(pk__in=by_study)
    return [(study, by_study.get(study.pk, [])) for study in studies.order_by("code")]


def sites_visible_to(*, user, study: Study) -> QuerySet[Site]:
    """Sites whose participants ``user`` may read in ``study``: the same rule as ``_scope``."""
    site_ids = set()
    all_sites = False
    for m in _memberships(user):
        if m.study_id != study.pk or m.role == Role.SPONSOR_ADMIN:
            continue
        if m.role not in SITE_BOUND_ROLES:
            all_sites = True
        elif m.site_id is not None:
            site_ids.add(m.site_id)
    sites = study.sites.all()
    return sites if all_sites else sites.filter(pk__in=site_ids)


def eligibility_checklist(*, participant: Participant) -> list[tuple[EligibilityCriterion, bool | None]]:
    """The study's active criteria in order, each with the participant's answer (None: unanswered)."""
    answers = {a.criterion_id: a.answer for a in participant.eligibility_answers.all()}
    # Inclusion criteria first, as on the protocol's checklist ("inclusion" sorts after "exclusion").
    criteria = EligibilityCriterion.objects.filter(study_id=participant.study_id, is_active=True).order_by(
        "-kind", "number"
    )
    return [(criterion, answers.get(criterion.pk)) for criterion in criteria]


@dataclass(frozen=True)
class InfusionSummary:
    infusion: Infusion
    deviation_pct: Decimal | None  # None in a placebo cohort: no planned dose to deviate from
    outside_tolerance: bool


@dataclass(frozen=True)
class Casebook:
    """Everything the participant page shows, read in a fixed number of queries."""

    participant: Participant
    consents: list[Consent]
    reconsent_due: ConsentDocument | None
    eligibility: list[tuple[EligibilityCriterion, bool | None]]
    eligibility_problems: list[str]
    infusions: list[InfusionSummary]
    visits: list[TimelineVisit]
    deviations: list[ProtocolDeviation]
    relapses: list[Relapse]
    rescue_therapies: list[RescueTherapy]
    insulin_doses: list[InsulinDoseChange]  # T1D only; voided entries included (the page marks them)
    disposition: Disposition | None

    @property
    def insulin_free_since(self) -> dt.date | None:
        """The first day of the current run of 0 U/day, if the latest (non-voided) entry stopped insulin."""
        since = None
        for change in reversed([c for c in self.insulin_doses if c.voided_at is None]):
            if change.total_daily_units != 0:
                break
            since = change.effective_date
        return since


def participant_casebook(*, participant: Participant, today: dt.date) -> Casebook:
    """The whole casebook of a participant already fetched through ``participant_get``."""
    # Read helpers that live with the rules they mirror; imported here to keep this module's
    # top-level imports free of the write layer.
    from trials.services import dose_deviation_pct, eligibility_unmet, reconsent_due

    tolerance = participant.study.dose_tolerance_pct
    infusions = []
    for infusion in participant.infusions.select_related("cohort").order_by("number"):
        deviation = dose_deviation_pct(infusion, infusion.cohort)
        infusions.append(InfusionSummary(infusion, deviation, deviation is not None and abs(deviation) > tolerance))
    return Casebook(
        participant=participant,
        consents=list(participant.consents.select_related("document").order_by("consent_date")),
        reconsent_due=reconsent_due(participant),
        eligibility=eligibility_checklist(participant=participant),
        eligibility_problems=eligibility_unmet(participant),
        infusions=infusions,
        visits=participant_timeline(participant=participant, today=today),
        deviations=list(
            participant.deviations.select_related("visit__definition", "infusion").order_by("detected_on", "pk")
        ),
        relapses=list(participant.relapses.order_by("onset_date")),
        rescue_therapies=list(participant.rescue_therapies.order_by("start_date", "pk")),
        insulin_doses=list(participant.insulin_dose_changes.order_by("effective_date", "pk"))
        if participant.study.indication == Indication.T1D
        else [],
        disposition=Disposition.objects.filter(participant=participant).first(),
    )


def visit_row(*, visit: Visit, today: dt.date) -> TimelineVisit:
    """One row of ``participant_timeline`` (for redrawing a single visit after an inline edit)."""
    for row in participant_timeline(participant=visit.participant, today=today):
        if row.visit.pk == visit.pk:
            return row
    raise Http404("No such visit.")


# ---------------------------------------------------------------------------------------------
# Roles and blinding
# ---------------------------------------------------------------------------------------------


def has_role(user, *, study: Study, roles, site: Site | None = None) -> bool:
    """Whether ``user`` holds one of ``roles`` in ``study`` (at ``site``, for site-bound roles)."""
    for m in _memberships(user):
        if m.study_id != study.pk or m.role not in roles:
            continue
        if m.role not in SITE_BOUND_ROLES or site is None or m.site_id == site.pk:
            return True
    return False


def is_unblinded(user, study: Study) -> bool:
    return any(m.study_id == study.pk and m.unblinded for m in _memberships(user))


def allocation_for(*, user, participant: Participant) -> str | None:
    """The randomized arm, only for unblinded members of a blinded study; None for everyone else.
    The one read path to ``RandomizationSlot`` (docs/reliability.md §3, blinding)."""
    from trials.models import RandomizationSlot

    if not participant.study.is_blinded or not is_unblinded(user, participant.study):
        return None
    slot = RandomizationSlot.objects.filter(participant=participant).only("arm").first()
    return slot.arm if slot else None
