"""Cohorts on the escalation page and the safety dashboard: 3+3 decisions name the MTD by cohort and
dose, expansion cohorts are no escalation steps, and a placebo cohort (0 cells) is labelled as such,
left out of the dose-escalation sequence and of the pooled stopping rule, with no dose arithmetic."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse

from safety import selectors, services
from safety.cohorts import CohortKind, cohort_kind, cohort_label, dose_text, is_placebo
from safety.escalation import Decision
from tests.factories import admin_change, build_study, infused, member
from tests.safety.conftest import ae_kwargs
from trials.models import DoseCohort, Role

AFTER_WINDOW = dt.date(2025, 3, 10)


def _dlt(actor, participant, ctcae):
    return services.adverse_event_record(
        actor=actor,
        participant=participant,
        **ae_kwargs(
            ctcae, verbatim_term="Exhaustion", ctcae_term=ctcae["Fatigue"], grade=3, causality_product="possibly"
        ),
    )


@pytest.mark.parametrize(
    ("per_kg", "total", "placebo", "dose"),
    [
        (Decimal("0"), None, True, "placebo"),
        (None, Decimal("0"), True, "placebo"),
        (Decimal("0"), Decimal("0"), True, "placebo"),
        (Decimal("20000000"), None, False, "20 × 10⁶/kg"),
        (None, Decimal("2600000000"), False, "2.6 × 10⁹ total"),
    ],
)
def test_a_cohort_at_zero_cells_is_placebo_and_needs_no_dose_arithmetic(per_kg, total, placebo, dose):
    cohort = DoseCohort(number=4, label="Saline", planned_cells_per_kg=per_kg, planned_total_cells=total, capacity=3)
    assert is_placebo(cohort) is placebo
    assert dose_text(cohort) == dose
    assert (cohort_kind(cohort) is CohortKind.PLACEBO) is placebo
    if placebo:
        assert cohort_label(cohort) == "Cohort 4 (Saline, placebo)"


def test_a_cohort_labelled_placebo_keeps_its_label():
    cohort = DoseCohort(number=0, label="Placebo", planned_cells_per_kg=Decimal("0"), capacity=3)
    assert cohort_label(cohort) == "Cohort 0 (Placebo)"


def test_a_cohort_planned_for_more_than_a_3_plus_3_step_is_an_expansion_cohort():
    cohort = DoseCohort(number=3, label="IV 20 × 10⁶/kg", planned_cells_per_kg=Decimal("20000000"), capacity=40)
    assert cohort_kind(cohort) is CohortKind.EXPANSION
    step = DoseCohort(number=2, label="IV 5 × 10⁶/kg", planned_cells_per_kg=Decimal("5000000"), capacity=6)
    assert cohort_kind(step) is CohortKind.ESCALATION
    assert cohort_kind(step, treated=7) is CohortKind.EXPANSION


@pytest.fixture
def six_then_toxic(sites, now):
    """Cohort 1 (1 × 10⁶/kg) holds 6 participants without DLT; cohort 2 (5 × 10⁶/kg) has 2 DLTs in 3."""
    study = build_study(code="treg-mtd-01", sites=list(sites))
    with admin_change("cohort 1 holds six"):
        DoseCohort.objects.filter(study=study, number=1).update(capacity=6)
    coordinator = member("coord_mtd", study, Role.COORDINATOR, sites[0])
    participants = [infused(study, sites[0], coordinator) for _ in range(9)]
    return study, coordinator, participants


def test_the_mtd_is_named_by_its_cohort_and_dose(six_then_toxic, ctcae):
    study, coordinator, participants = six_then_toxic
    _dlt(coordinator, participants[6], ctcae)
    _dlt(coordinator, participants[7], ctcae)
    first, second, third = selectors.cohort_escalation(study=study, today=AFTER_WINDOW)
    assert (first.counts.evaluable, second.counts.dlts) == (6, 2)
    assert first.decision.decision is Decision.MTD_IDENTIFIED
    assert first.summary == "MTD: cohort 1 (1 × 10⁶/kg)."
    assert second.decision.decision is Decision.MTD_EXCEEDED_DEESCALATE
    assert second.summary == "MTD: cohort 1 (1 × 10⁶/kg)."
    assert "maximum tolerated dose" in second.decision.rule
    assert (third.decision, third.note) == (None, "No participant dosed at this level yet.")


@pytest.fixture
def with_placebo(sites, now):
    """Cohort 1 is a placebo cohort (0 cells/kg) with 2 DLT-like events in its 3 participants; the
    first dose cohort (cohort 2, 5 × 10⁶/kg) has 3 participants without DLT."""
    study = build_study(code="treg-pbo-01", sites=list(sites))
    with admin_change("cohort 1 is the placebo cohort"):
        DoseCohort.objects.filter(study=study, number=1).update(planned_cells_per_kg=Decimal("0"), label="Placebo")
    coordinator = member("coord_pbo", study, Role.COORDINATOR, sites[0])
    participants = [infused(study, sites[0], coordinator) for _ in range(6)]
    return study, coordinator, participants


def test_a_placebo_cohort_is_left_out_of_the_escalation_and_the_stopping_rule(with_placebo, ctcae):
    study, coordinator, participants = with_placebo
    assert [p.cohort.number for p in participants] == [1, 1, 1, 2, 2, 2]
    _dlt(coordinator, participants[0], ctcae)
    _dlt(coordinator, participants[1], ctcae)
    placebo, first_dose, top = selectors.cohort_escalation(study=study, today=AFTER_WINDOW)
    assert placebo.kind is CohortKind.PLACEBO
    assert placebo.name == "Cohort 1 (Placebo)"
    assert (placebo.decision, placebo.counts.dlts, placebo.counts.evaluable) == (None, 2, 3)
    assert (
        placebo.note == "Placebo cohort, not part of the dose escalation: 2 DLT(s) in 3 evaluable participants (67%)."
    )
    # Cohort 2 is the lowest dose level: the placebo DLTs neither stop the trial nor sit "below" it.
    assert first_dose.decision.decision is Decision.ESCALATE
    assert first_dose.summary == "Escalate to cohort 3 (20 × 10⁶/kg)."
    assert top.note == "No participant dosed at this level yet."
    stopping = selectors.stopping_rule_status(study=study, today=AFTER_WINDOW)
    assert (stopping.n, stopping.x, stopping.placebo_excluded) == (3, 0, 3)
    assert stopping.status.stop is False


def test_the_pages_show_the_placebo_cohort_by_its_label(client, with_placebo, ctcae, time_machine):
    study, coordinator, participants = with_placebo
    _dlt(coordinator, participants[0], ctcae)
    _dlt(coordinator, participants[4], ctcae)
    time_machine.move_to(dt.datetime(2025, 3, 10, 9, 0, tzinfo=dt.UTC), tick=False)
    medical_monitor = member("medmon_pbo", study, Role.MEDICAL_MONITOR)
    board = selectors.safety_dashboard(user=medical_monitor, study=study, now=dt.datetime.now(dt.UTC))
    assert [label for label, _, _ in board.by_cohort] == ["Cohort 1 (Placebo)", "Cohort 2 (5M/kg)"]
    assert [counts for _, counts, _ in board.by_cohort] == [[0, 0, 1, 0, 0], [0, 0, 1, 0, 0]]
    client.force_login(medical_monitor)
    escalation = client.get(reverse("safety:escalation", args=[study.code])).content.decode()
    assert "Placebo cohort, not part of the dose escalation: 1 DLT(s) in 3 evaluable participants (33%)." in escalation
    assert "placebo cohorts are not counted: 3 evaluable participants" in escalation
    dashboard = client.get(reverse("safety:dashboard", args=[study.code]))
    assert dashboard.status_code == 200
    assert "Cohort 1 (Placebo)" in dashboard.content.decode()
