"""Safety reads, scoped by the requesting user (docs/style.md §2).

AE rows reach their site through the participant, so every AE queryset is filtered with the
casebook's own scope (``trials.selectors.participant_scope(..., prefix="participant__")``): a coordinator sees
their site, monitors their assigned sites, medical monitors and data managers every site of their
studies. ``adverse_event_get`` is the one chokepoint for a single AE (404 outside the scope, 403 on
a write for a read-only role); SAE cases and reports are fetched through it.

Study-level aggregates that decide dose escalation (3+3, stopping rule) need every site's data, so
they are only for roles that see the whole study (``require_study_wide``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import Http404

from safety.cohorts import CohortKind, cohort_dose_name, cohort_kind, cohort_label
from safety.dlt import (
    DEFAULT_DLT_CONFIG,
    DLTEvent,
    DLTState,
    ParticipantDLT,
    describe_dlt_config,
    evaluate_participant,
)
from safety.escalation import (
    BetaBinomialRule,
    Decision,
    EscalationDecision,
    LevelCounts,
    MonitoringStatus,
    boundary_table,
    monitoring_status,
    operating_characteristics,
    three_plus_three,
)
from safety.models import (
    AdverseEvent,
    AECategory,
    CTCAETerm,
    DLTAdjudication,
    DLTDefinition,
    ExpeditedReport,
    Notification,
    SAECase,
)
from safety.rules_data import InputError, get_rules
from trials.models import SITE_BOUND_ROLES, Disposition, DoseCohort, Participant, Role, Study
from trials.selectors import can_enter_data, memberships_in, participant_scope
from trials.selectors import has_role as trials_has_role


def adverse_event_list(*, user, study: Study | None = None, participant: Participant | None = None) -> QuerySet:
    """The AEs ``user`` may read (voided ones included: the pages mark them)."""
    qs = AdverseEvent.objects.filter(participant_scope(user, prefix="participant__")).select_related(
        "participant__study", "participant__site", "participant__cohort", "ctcae_term"
    )
    if study is not None:
        qs = qs.filter(participant__study=study)
    if participant is not None:
        qs = qs.filter(participant=participant)
    return qs.order_by("participant__subject_code", "sequence")


def adverse_event_get(*, user, pk: int, write: bool = False) -> AdverseEvent:
    """The access chokepoint for an AE (and its CRS/ICANS assessments and SAE case)."""
    ae = (
        AdverseEvent.objects.filter(participant_scope(user, prefix="participant__"), pk=pk)
        .select_related("participant__study", "participant__site", "participant__cohort", "ctcae_term")
        .first()
    )
    if ae is None:
        raise Http404("No such adverse event.")
    if write and not can_enter_data(user, ae.participant):
        raise PermissionDenied("Your role is read-only for this casebook.")
    return ae


def sae_case_get(*, user, pk: int) -> SAECase:
    case = SAECase.objects.filter(pk=pk).only("adverse_event_id").first()
    if case is None:
        raise Http404("No such SAE case.")
    ae = adverse_event_get(user=user, pk=case.adverse_event_id)
    case = SAECase.objects.get(pk=pk)
    case.adverse_event = ae
    return case


def report_get(*, user, pk: int) -> ExpeditedReport:
    report = ExpeditedReport.objects.filter(pk=pk).only("case_id").first()
    if report is None:
        raise Http404("No such report.")
    case = sae_case_get(user=user, pk=report.case_id)
    report = ExpeditedReport.objects.get(pk=pk)
    report.case = case
    return report


def ctcae_terms(*, version: str) -> QuerySet[CTCAETerm]:
    return CTCAETerm.objects.filter(version=version).order_by("soc", "term")


def has_role(user, study: Study, roles: set[str]) -> bool:
    """Any membership with one of ``roles`` in ``study``, at any site (trials' selector decides)."""
    return trials_has_role(user, study=study, roles=roles)


def is_study_wide(user, study: Study) -> bool:
    """Whether ``user`` sees every site of ``study`` (not a site-bound role, not user admin)."""
    return any(
        m.role not in SITE_BOUND_ROLES and m.role != Role.SPONSOR_ADMIN for m in memberships_in(user=user, study=study)
    )


def require_study_wide(user, study: Study) -> None:
    if not is_study_wide(user, study):
        raise PermissionDenied("Dose-escalation decisions use every site's data; your role sees only your sites.")


# ---------------------------------------------------------------------------------------------
# SAE cases and reports
# ---------------------------------------------------------------------------------------------


def sae_case_list(*, user, study: Study) -> QuerySet[SAECase]:
    return (
        SAECase.objects.filter(
            participant_scope(user, prefix="adverse_event__participant__"),
            adverse_event__participant__study=study,
            adverse_event__voided_at=None,
        )
        .select_related("adverse_event__participant__site", "adverse_event__ctcae_term")
        .prefetch_related(
            Prefetch("reports", queryset=ExpeditedReport.objects.order_by("due_at")),
            Prefetch("versions"),
        )
        .order_by("-site_aware_at")
    )


def report_list(*, user, study: Study, status: str | None = None) -> QuerySet[ExpeditedReport]:
    qs = ExpeditedReport.objects.filter(
        participant_scope(user, prefix="case__adverse_event__participant__"),
        case__adverse_event__participant__study=study,
        case__adverse_event__voided_at=None,
        voided_at=None,
    ).select_related("case__adverse_event__participant__site", "case__adverse_event__ctcae_term")
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("due_at")


@dataclass(frozen=True)
class ReportRow:
    report: ExpeditedReport
    state: str
    remaining: dt.timedelta
    days_late: int


def report_rows(reports, *, now: dt.datetime) -> list[ReportRow]:
    rows = []
    for report in reports:
        if report.status == ExpeditedReport.Status.CANCELLED:
            rows.append(ReportRow(report, "cancelled", dt.timedelta(0), 0))
            continue
        status = report.status_at(now)
        rows.append(ReportRow(report, status.state.value, status.remaining, status.days_late))
    return rows


def notifications_recent(*, user, study: Study, limit: int = 20) -> list[Notification]:
    return list(
        Notification.objects.filter(
            participant_scope(user, prefix="report__case__adverse_event__participant__"),
            report__case__adverse_event__participant__study=study,
        )
        .select_related("report__case")
        .order_by("-created_at")[:limit]
    )


# ---------------------------------------------------------------------------------------------
# DLT, 3+3 and the stopping rule
# ---------------------------------------------------------------------------------------------


def dlt_definition(study: Study) -> DLTDefinition | None:
    return study.dlt_definitions.order_by("-number").first()


def dlt_config(study: Study) -> dict[str, Any]:
    definition = dlt_definition(study)
    config = dict(definition.config) if definition is not None else dict(DEFAULT_DLT_CONFIG)
    config.pop("source", None)  # a citation stored by earlier versions; never shown
    return config


def _dlt_event(ae: AdverseEvent) -> DLTEvent:
    rules = get_rules("causality", ae.causality_rules)
    related = {}
    for target, name in (
        ("product", "causality_product"),
        ("leukapheresis", "causality_leukapheresis"),
        ("procedures", "causality_procedures"),
    ):
        value = getattr(ae, name)
        related[target] = (value in rules["related"]) if value else None
    return DLTEvent(
        adverse_event_id=ae.pk,
        label=f"AE {ae.sequence} {ae.ctcae_term.term} grade {ae.grade}",
        category=ae.category,
        grade=ae.grade,
        serious=ae.serious,
        onset=ae.onset,
        related=related,
    )


@dataclass(frozen=True)
class ParticipantDLTRow:
    participant: Participant
    status: ParticipantDLT
    adjudication: DLTAdjudication | None


def participant_dlt_rows(
    participants: QuerySet[Participant], *, study: Study, today: dt.date
) -> list[ParticipantDLTRow]:
    """Each participant's DLT state: the SRC's adjudication when there is one, otherwise the system's
    provisional evaluation of the events against the current definition (fixed number of queries)."""
    config = dlt_config(study)
    participants = participants.select_related("cohort", "site").prefetch_related(
        Prefetch("infusions", queryset=participant_infusions()),
        Prefetch(
            "adverse_events",
            queryset=AdverseEvent.objects.filter(voided_at=None).select_related("ctcae_term"),
            to_attr="live_aes",
        ),
    )
    adjudications = {
        a.participant_id: a
        for a in DLTAdjudication.objects.filter(participant__in=participants, voided_at=None).select_related(
            "adverse_event"
        )
    }
    left = dict(
        Disposition.objects.filter(participant__in=participants, voided_at=None)
        .exclude(kind=Disposition.Kind.COMPLETED)
        .values_list("participant_id", "disposition_date")
    )
    rows = []
    for participant in participants:
        infusions = list(participant.infusions.all())
        infusion_date = infusions[0].infusion_date if infusions else None
        status = evaluate_participant(
            [_dlt_event(ae) for ae in participant.live_aes],
            config=config,
            infusion_date=infusion_date,
            window_days=study.dlt_window_days,
            today=today,
            left_study_on=left.get(participant.pk),
        )
        adjudication = adjudications.get(participant.pk)
        if adjudication is not None and infusion_date is not None:
            state = DLTState.EVALUABLE if adjudication.evaluable else DLTState.NOT_EVALUABLE
            status = ParticipantDLT(
                state,
                adjudication.is_dlt,
                status.window_start,
                status.window_end,
                status.candidates,
                adjudicated=True,
                reason=f"adjudicated by {adjudication.signer_name} on {adjudication.signed_at:%Y-%m-%d}",
            )
        rows.append(ParticipantDLTRow(participant, status, adjudication))
    return rows


def participant_infusions():
    from trials.models import Infusion

    return Infusion.objects.filter(voided_at=None).order_by("number")


@dataclass(frozen=True)
class CohortEscalation:
    cohort: DoseCohort
    counts: LevelCounts
    provisional_dlts: int
    decision: EscalationDecision | None
    note: str
    participants: list[ParticipantDLTRow] = field(default_factory=list)
    kind: CohortKind = CohortKind.ESCALATION
    summary: str = ""  # the decision in one plain sentence, naming cohorts by their dose

    @property
    def name(self) -> str:
        return cohort_label(self.cohort)

    @property
    def dlt_rate(self) -> float | None:
        return self.counts.dlts / self.counts.evaluable if self.counts.evaluable else None


def _counts(rows: list[ParticipantDLTRow]) -> tuple[LevelCounts, int]:
    treated = [r for r in rows if r.status.state is not DLTState.NOT_TREATED]
    return (
        LevelCounts(
            treated=len(treated),
            evaluable=sum(1 for r in treated if r.status.evaluable),
            dlts=sum(1 for r in treated if r.status.is_dlt),
            not_evaluable=sum(1 for r in treated if r.status.state is DLTState.NOT_EVALUABLE),
        ),
        sum(1 for r in treated if r.status.provisional),
    )


def _rate_text(counts: LevelCounts) -> str:
    if not counts.evaluable:
        return "no DLT-evaluable participant yet"
    return f"{counts.dlts} DLT(s) in {counts.evaluable} evaluable participants ({counts.dlts / counts.evaluable:.0%})"


def _summary(decision: EscalationDecision, cohort: DoseCohort, below: DoseCohort | None, above: DoseCohort | None):
    """The decision as one sentence that names the cohorts (docs/domain.md §3.7)."""
    here, lower = cohort_dose_name(cohort), cohort_dose_name(below) if below else ""
    match decision.decision:
        case Decision.ESCALATE:
            return f"Escalate to {cohort_dose_name(above)}." if above else "Escalate to the next dose."
        case Decision.EXPAND_TO_6:
            return f"Treat {decision.subjects_needed} more participant(s) in {here}."
        case Decision.MTD_EXCEEDED_DEESCALATE if decision.mtd_level_offset == -1:
            return f"MTD: {lower}."
        case Decision.MTD_EXCEEDED_DEESCALATE:
            return f"Above the MTD: go back to {lower} and treat {decision.subjects_needed} more there."
        case Decision.MTD_IDENTIFIED:
            return f"MTD: {here}."
        case Decision.STOP_NO_TOLERABLE_DOSE:
            return "Stop the trial: no dose is tolerable."
        case Decision.STOP_MAX_DOSE_REACHED:
            return f"Highest planned dose reached without an MTD: {here}."
    if decision.subjects_needed:
        return f"Treat {decision.subjects_needed} more participant(s) in {here}."
    return f"Wait until every participant in {here} has finished the DLT window."


def cohort_escalation(*, study: Study, today: dt.date) -> list[CohortEscalation]:
    """The 3+3 decision at every dose-escalation step (docs/domain.md §3.7), from the cohort's DLT
    counts. Expansion and placebo cohorts are not steps: they are shown with their DLT rate, and the
    escalation sequence (lowest, highest, the level below) runs over the steps only.

    A step whose counts the 3+3 rules cannot take (e.g. the level below already beyond the MTD)
    shows why instead of a decision.
    """
    cohorts = list(study.cohorts.order_by("number"))
    rows = participant_dlt_rows(Participant.objects.filter(study=study, cohort__isnull=False), study=study, today=today)
    by_cohort: dict[int, list[ParticipantDLTRow]] = defaultdict(list)
    for row in rows:
        by_cohort[row.participant.cohort_id].append(row)
    rules = get_rules("three_plus_three")
    counted = {c.pk: _counts(by_cohort[c.pk]) for c in cohorts}
    kinds = {c.pk: cohort_kind(c, treated=counted[c.pk][0].treated, rules=rules) for c in cohorts}
    steps = [c for c in cohorts if kinds[c.pk] is CohortKind.ESCALATION]
    result = []
    for cohort in cohorts:
        counts, provisional = counted[cohort.pk]
        kind = kinds[cohort.pk]
        decision, note, summary = None, "", ""
        if kind is CohortKind.EXPANSION:
            note = f"Expansion cohort, not a dose-escalation step: {_rate_text(counts)}."
        elif kind is CohortKind.PLACEBO:
            note = f"Placebo cohort, not part of the dose escalation: {_rate_text(counts)}."
        elif counts.treated == 0:
            note = "No participant dosed at this level yet."
        else:
            index = steps.index(cohort)
            below = steps[index - 1] if index > 0 else None
            above = steps[index + 1] if index + 1 < len(steps) else None
            try:
                decision = three_plus_three(
                    counts,
                    below=counted[below.pk][0] if below else None,
                    is_lowest=below is None,
                    is_highest=above is None,
                    above_exceeds_mtd=above is not None
                    and counted[above.pk][0].dlts > rules["tolerable_max_dlts_of_6"],
                    rules=rules,
                )
                summary = _summary(decision, cohort, below, above)
            except InputError as error:
                note = error.message
        result.append(
            CohortEscalation(cohort, counts, provisional, decision, note, by_cohort[cohort.pk], kind, summary)
        )
    return result


@dataclass(frozen=True)
class StoppingRuleView:
    rule: BetaBinomialRule
    status: MonitoringStatus
    boundaries: dict[int, int | None]
    boundary_rows: list[tuple[str, int | None, bool]]  # (n range, stop if DLTs >=, past the design), merged
    operating: list[tuple[float, float, float]]  # (true rate, P(stop), expected N)
    n: int
    x: int
    provisional: int
    note: str
    placebo_excluded: int = 0  # evaluable participants of placebo cohorts, not counted

    @property
    def extension_note(self) -> str:
        return self.status.extension_note


OC_RATES = (0.05, 0.10, 0.20, 0.30, 0.40, 0.50)


def _merged_boundaries(table: dict[int, int | None], design_max: int) -> list[tuple[str, int | None, bool]]:
    rows: list[tuple[list[int], int | None, bool]] = []
    for n, boundary in table.items():
        extended = n > design_max
        if rows and rows[-1][1] == boundary and rows[-1][0][-1] == n - 1 and rows[-1][2] == extended:
            rows[-1][0].append(n)
        else:
            rows.append(([n], boundary, extended))
    return [(f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}", boundary, ext) for ns, boundary, ext in rows]


def stopping_rule_status(
    *, study: Study, today: dt.date, cohorts: list[CohortEscalation] | None = None
) -> StoppingRuleView:
    """The Bayesian beta-binomial stopping rule over the study's DLT-evaluable participants given the
    product (pooled over escalation and expansion cohorts; placebo cohorts are not counted), with its
    boundary table and operating characteristics (docs/domain.md §3.8). The current posterior
    probability and stop/continue status are always given, also past the design's maximum n."""
    config = dlt_config(study)
    definition = dlt_definition(study)
    rule = BetaBinomialRule(
        **config["stopping_rule"], version=f"dlt-definition-{definition.number if definition else 'default'}"
    )
    cohorts = cohorts if cohorts is not None else cohort_escalation(study=study, today=today)
    dosed = [c for c in cohorts if c.kind is not CohortKind.PLACEBO]
    n = sum(c.counts.evaluable for c in dosed)
    x = sum(c.counts.dlts for c in dosed)
    provisional = sum(c.provisional_dlts for c in dosed)
    placebo = sum(c.counts.evaluable for c in cohorts if c.kind is CohortKind.PLACEBO)
    status = monitoring_status(rule, x, n)
    note = "No DLT-evaluable participant yet: the probability shown is the prior's." if n == 0 else ""
    table = boundary_table(rule, up_to=n)
    operating = [
        (rate, oc.p_stop, oc.expected_n) for rate in OC_RATES for oc in [operating_characteristics(rule, rate)]
    ]
    return StoppingRuleView(
        rule, status, table, _merged_boundaries(table, rule.max_n), operating, n, x, provisional, note, placebo
    )


# ---------------------------------------------------------------------------------------------
# The safety dashboard
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    study: Study
    grades: list[int]
    by_cohort: list[tuple[str, list[int], int]]  # (cohort label, count per grade 1-5, total)
    subjects_by_cohort: list[tuple[str, list[int], int]]  # subjects at their worst grade
    saes: list[tuple[SAECase, list[ReportRow]]]
    overdue: list[ReportRow]
    due_soon: list[ReportRow]
    escalation: list[CohortEscalation] | None
    stopping: StoppingRuleView | None
    notifications: list[Notification]
    aesi_counts: dict[str, int]


def safety_dashboard(*, user, study: Study, now: dt.datetime) -> Dashboard:
    """What the monitors' safety dashboard shows (docs/domain.md §6), within the user's scope. The dose
    escalation panels need the whole study, so they are left out for site-bound roles."""
    aes = list(
        adverse_event_list(user=user, study=study)
        .filter(voided_at=None, treatment_emergent=True)
        .values("grade", "participant_id", "participant__cohort_id", "category")
    )
    # Cohorts in escalation order, each labelled once (a placebo cohort says so); "Not enrolled" last.
    cohorts = {c.pk: c for c in study.cohorts.order_by("number")}
    order = {cohort_label(c): index for index, c in enumerate(cohorts.values())}
    grades = [1, 2, 3, 4, 5]
    events: dict[str, list[int]] = defaultdict(lambda: [0] * 5)
    worst: dict[tuple[str, int], int] = {}
    aesi: dict[str, int] = defaultdict(int)
    for row in aes:
        cohort = cohorts.get(row["participant__cohort_id"])
        label = cohort_label(cohort) if cohort is not None else "Not enrolled"
        events[label][row["grade"] - 1] += 1
        key = (label, row["participant_id"])
        worst[key] = max(worst.get(key, 0), row["grade"])
        aesi[AECategory(row["category"]).label] += 1
    subjects: dict[str, list[int]] = defaultdict(lambda: [0] * 5)
    for (label, _), grade in worst.items():
        subjects[label][grade - 1] += 1

    def in_order(table: dict[str, list[int]]) -> list[tuple[str, list[int], int]]:
        labels = sorted(table, key=lambda label: order.get(label, len(order)))
        return [(label, table[label], sum(table[label])) for label in labels]

    by_cohort = in_order(events)
    subjects_by_cohort = in_order(subjects)

    cases = list(sae_case_list(user=user, study=study).filter(voided_at=None))
    saes = [(case, report_rows(case.reports.all(), now=now)) for case in cases]
    pending = report_rows(report_list(user=user, study=study, status=ExpeditedReport.Status.PENDING), now=now)
    escalation = stopping = None
    if is_study_wide(user, study):
        today = now.date()
        escalation = cohort_escalation(study=study, today=today)
        stopping = stopping_rule_status(study=study, today=today, cohorts=escalation)
    return Dashboard(
        study=study,
        grades=grades,
        by_cohort=by_cohort,
        subjects_by_cohort=subjects_by_cohort,
        saes=saes,
        overdue=[r for r in pending if r.state == "overdue"],
        due_soon=[r for r in pending if r.state == "due_soon"],
        escalation=escalation,
        stopping=stopping,
        notifications=notifications_recent(user=user, study=study),
        aesi_counts=dict(aesi),
    )


def dlt_definition_text(study: Study) -> list[str]:
    return describe_dlt_config(dlt_config(study), study.dlt_window_days)
