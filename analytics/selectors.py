"""Reads for the durability pages and API, scoped by the requesting user (docs/style.md §2).

Who sees analytics: statisticians, data managers and medical monitors of the study (all sites, as
their roles do in ``trials.selectors``). Coordinators, investigators and monitors do not: a study they
belong to answers 403, anything in a study they do not belong to answers 404.

Blinding (docs/reliability.md §3): an analysis grouped by randomized arm exists only for users with an
unblinded analytics role in a blinded study. For everybody else such a job is not found (404) and is
left out of every list; they can request pooled or by-cohort analyses only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db.models import Exists, Min, OuterRef, Q, QuerySet
from django.http import Http404

from analytics.models import AnalysisJob, DataCut, RemissionAssessment, RemissionDefinitionConfig, TaskOutbox
from trials.models import ConsentDocument, Participant, Role, Study
from trials.selectors import _memberships, studies_visible_to

ANALYTICS_ROLES = frozenset({Role.STATISTICIAN, Role.DATA_MANAGER, Role.MEDICAL_MONITOR})
# Who may change the remission definition and freeze data cuts (the statistical analysis plan's owners).
DEFINITION_ROLES = frozenset({Role.STATISTICIAN, Role.DATA_MANAGER})
CUT_ROLES = frozenset({Role.STATISTICIAN, Role.DATA_MANAGER})


@dataclass(frozen=True)
class AnalyticsAccess:
    """What ``user`` may do with the analytics of one study."""

    study: Study
    roles: frozenset[str]
    unblinded: bool

    @property
    def can_view(self) -> bool:
        return bool(self.roles & ANALYTICS_ROLES)

    @property
    def can_request(self) -> bool:
        return self.can_view

    @property
    def can_define(self) -> bool:
        return bool(self.roles & DEFINITION_ROLES)

    @property
    def can_cut(self) -> bool:
        return bool(self.roles & CUT_ROLES)

    @property
    def sees_arm(self) -> bool:
        """Arm-level results: a blinded study and an unblinded analytics role."""
        return self.study.is_blinded and self.unblinded


def analytics_access(*, user, study: Study) -> AnalyticsAccess:
    memberships = [m for m in _memberships(user) if m.study_id == study.pk]
    roles = frozenset(m.role for m in memberships)
    unblinded = any(m.unblinded for m in memberships if m.role in ANALYTICS_ROLES)
    return AnalyticsAccess(study=study, roles=roles, unblinded=unblinded)


def study_for_analytics(*, user, code: str) -> AnalyticsAccess:
    """The access chokepoint for a study's durability pages: 404 outside the user's studies,
    403 for a role without access to analyses."""
    study = studies_visible_to(user).filter(code=code).first()
    if study is None:
        raise Http404("No such study.")
    access = analytics_access(user=user, study=study)
    if not access.can_view:
        raise PermissionDenied("Your role does not give access to the durability analyses.")
    return access


def _analytics_study_ids(user) -> tuple[set[int], set[int]]:
    """(studies where the user has an analytics role, those of them where arm results are visible)."""
    visible, arm = set(), set()
    for membership in _memberships(user):
        if membership.role not in ANALYTICS_ROLES:
            continue
        visible.add(membership.study_id)
        if membership.unblinded and membership.study.is_blinded:
            arm.add(membership.study_id)
    return visible, arm


def definition_current(*, study: Study) -> RemissionDefinitionConfig | None:
    return RemissionDefinitionConfig.objects.filter(study=study).order_by("-version").first()


def study_start_date(*, study: Study) -> dt.date | None:
    """When the study started: its first consent form version coming into effect, or its first
    screening if that is earlier; ``None`` before either (the earliest date a data cut may have)."""
    consent = ConsentDocument.objects.filter(study=study).aggregate(first=Min("effective_date"))["first"]
    screening = Participant.objects.filter(study=study, voided_at=None).aggregate(first=Min("screening_date"))["first"]
    dates = [d for d in (consent, screening) if d is not None]
    return min(dates) if dates else None


def _unsent(**subject) -> Exists:
    return Exists(TaskOutbox.objects.filter(sent_at=None, **subject))


def data_cut_list(*, user, study: Study | None = None) -> QuerySet[DataCut]:
    """``waiting_for_queue``: the cut's derivation task could not be published yet (broker down)."""
    visible, _ = _analytics_study_ids(user)
    cuts = (
        DataCut.objects.filter(study_id__in=visible)
        .select_related("study", "definition", "created_by")
        .annotate(waiting_for_queue=_unsent(data_cut=OuterRef("pk")))
    )
    return cuts.filter(study=study) if study is not None else cuts


def data_cut_get(*, user, pk: int) -> DataCut:
    cut = data_cut_list(user=user).filter(pk=pk).first()
    if cut is None:
        raise Http404("No such data cut.")
    return cut


def job_list(*, user, study: Study | None = None) -> QuerySet[AnalysisJob]:
    """``waiting_for_queue``: the job's message could not be published yet (the broker is down; the
    outbox relay sends it when it is back)."""
    visible, arm = _analytics_study_ids(user)
    scope = Q(data_cut__study_id__in=visible) & (~Q(spec__grouping="arm") | Q(data_cut__study_id__in=arm))
    jobs = (
        AnalysisJob.objects.filter(scope)
        .select_related("data_cut__study", "requested_by")
        .annotate(waiting_for_queue=_unsent(job=OuterRef("pk")))
    )
    return jobs.filter(data_cut__study=study) if study is not None else jobs


def job_get(*, user, pk: int) -> AnalysisJob:
    """The access chokepoint for one analysis (and its result): 404 when out of scope, including an
    arm-level analysis asked for by a blinded user."""
    job = job_list(user=user).select_related("data_cut__definition").filter(pk=pk).first()
    if job is None:
        raise Http404("No such analysis.")
    return job


def timeline_participants(*, data_cut: DataCut) -> QuerySet:
    """The participants with derived assessments in ``data_cut``, by subject code (for paging)."""
    ids = RemissionAssessment.objects.filter(data_cut=data_cut).values("participant_id")
    return Participant.objects.filter(pk__in=ids).order_by("subject_code").values("pk", "subject_code")


def cut_waiting_for_queue(*, data_cut: DataCut) -> bool:
    """The cut's derivation task is still in the outbox (the broker was unreachable)."""
    return TaskOutbox.objects.filter(data_cut=data_cut, sent_at=None).exists()


def remission_timeline(*, data_cut: DataCut, participants: list[dict]) -> list[dict]:
    """Per participant (a page of :func:`timeline_participants`), the derived remission status at
    each assessment of the cut, in date order. One query."""
    rows = (
        RemissionAssessment.objects.filter(data_cut=data_cut, participant_id__in=[p["pk"] for p in participants])
        .order_by("participant_id", "visit_date", "visit_id")
        .values("participant_id", "visit_date", "study_day", "adequate", "in_remission", "note")
    )
    by_participant: dict[int, list[dict]] = {p["pk"]: [] for p in participants}
    for row in rows:
        by_participant[row["participant_id"]].append(row)
    return [
        {"participant_id": p["pk"], "subject_code": p["subject_code"], "assessments": by_participant[p["pk"]]}
        for p in participants
    ]
