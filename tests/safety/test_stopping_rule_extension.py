"""The Bayesian stopping rule past its designed maximum (docs/domain.md §3.8): a study with more
evaluable participants than the rule was designed for (an expansion cohort) still gets its posterior
probability, its boundary and a stop/continue status, computed by the same beta-binomial rule, and
the page says that n is past the design."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import betainc
from scipy.stats import beta

from safety import selectors, services
from safety.escalation import BetaBinomialRule, boundary_at, boundary_table, monitoring_status
from tests.factories import admin_change, build_study, infused, member
from tests.safety.conftest import ae_kwargs
from trials.models import DoseCohort, Role

EXAMPLE = BetaBinomialRule.from_rules()  # Beta(0.4, 1.6), theta0 0.20, cut-off 0.90, designed for 24
AFTER_WINDOW = dt.date(2025, 3, 10)


def _independent_boundary(n: int, *, a=0.4, b=1.6, theta0=0.2, cutoff=0.9) -> int | None:
    """Smallest x with P(theta > theta0 | x of n) > cutoff, by brute force over x with scipy's beta
    survival function, checked against the regularised incomplete beta function."""
    for x in range(n + 1):
        survival = beta.sf(theta0, a + x, b + n - x)
        assert survival == pytest.approx(1 - betainc(a + x, b + n - x, theta0), abs=1e-12)
        if survival > cutoff:
            return x
    return None


@pytest.mark.parametrize("n", [25, 30, 44, 60, 100, 250])
def test_the_boundary_past_the_design_is_the_same_posterior_rule(n):
    assert boundary_at(EXAMPLE, n) == _independent_boundary(n)


def test_the_extended_table_continues_the_designed_one():
    table = boundary_table(EXAMPLE, up_to=44)
    assert [table[n] for n in (22, 23, 24)] == [8, 8, 8]  # the designed table's last row
    assert list(table) == list(range(1, 45))
    assert all(table[n] == _independent_boundary(n) for n in range(25, 45))
    assert table[24] <= table[25] <= table[44]


@settings(database=None, derandomize=True, deadline=None, max_examples=40)
@given(
    prior_a=st.floats(min_value=0.1, max_value=5),
    prior_b=st.floats(min_value=0.1, max_value=10),
    theta0=st.floats(min_value=0.05, max_value=0.6),
    cutoff=st.floats(min_value=0.5, max_value=0.99),
    max_n=st.integers(min_value=1, max_value=30),
)
def test_the_extended_table_is_the_smallest_stopping_count_at_every_n(prior_a, prior_b, theta0, cutoff, max_n):
    rule = BetaBinomialRule(prior_a=prior_a, prior_b=prior_b, theta0=theta0, cutoff=cutoff, max_n=max_n)
    table = boundary_table(rule, up_to=max_n + 40)
    for n in range(max_n + 1, max_n + 41):
        expected = _independent_boundary(n, a=prior_a, b=prior_b, theta0=theta0, cutoff=cutoff)
        assert table[n] == expected, n


@pytest.mark.parametrize("x", [0, 2, 9, 13, 20])
def test_the_status_at_n_44_gives_the_posterior_and_says_the_design_is_exceeded(x):
    status = monitoring_status(EXAMPLE, x, 44)
    assert status.posterior_prob == pytest.approx(beta.sf(0.2, 0.4 + x, 1.6 + 44 - x), rel=1e-12)
    assert status.boundary == _independent_boundary(44)
    assert status.stop is (status.posterior_prob > 0.9)
    assert status.stop is (x >= status.boundary)
    assert status.past_design_max
    assert status.extension_note == (
        "n = 44 is past the designed maximum of 24; the boundary is extended by the same rule."
    )


def test_within_the_design_there_is_no_extension_note():
    status = monitoring_status(EXAMPLE, 2, 24)
    assert not status.past_design_max
    assert status.extension_note == ""


def test_past_the_design_a_cohort_look_rule_is_checked_at_every_n():
    looks = BetaBinomialRule(prior_a=0.4, prior_b=1.6, theta0=0.2, cutoff=0.9, max_n=9, looks=(3, 6, 9))
    status = monitoring_status(looks, 6, 11)
    assert (status.is_look, status.boundary, status.stop) == (True, _independent_boundary(11), True)


# ---------------------------------------------------------------------------------------------
# In the study: an expansion cohort takes the study past a small designed maximum
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def expanded_study(sites, now):
    """Two 3-participant escalation steps and an expansion cohort, every participant past the DLT
    window; the stopping rule is designed for 4 participants, so the 8 evaluable exceed it."""
    study = build_study(code="treg-exp-01", sites=list(sites))
    with admin_change("cohort 3 is the expansion cohort"):
        DoseCohort.objects.filter(study=study, number=3).update(capacity=40, label="IV 20 × 10⁶/kg (expansion)")
    coordinator = member("coord_exp", study, Role.COORDINATOR, sites[0])
    data_manager = member("dm_exp", study, Role.DATA_MANAGER)
    services.dlt_definition_create(
        actor=data_manager,
        study=study,
        config={"stopping_rule": {"prior_a": 0.4, "prior_b": 1.6, "theta0": 0.2, "cutoff": 0.9, "max_n": 4}},
        effective_from=dt.date(2024, 12, 1),
        reason="Protocol v1.0",
    )
    participants = [infused(study, sites[0], coordinator) for _ in range(8)]
    return study, coordinator, participants


def test_the_study_past_the_design_gets_a_status_not_a_note(expanded_study, ctcae):
    study, coordinator, participants = expanded_study
    services.adverse_event_record(
        actor=coordinator,
        participant=participants[7],
        **ae_kwargs(
            ctcae, verbatim_term="Exhaustion", ctcae_term=ctcae["Fatigue"], grade=3, causality_product="possibly"
        ),
    )
    view = selectors.stopping_rule_status(study=study, today=AFTER_WINDOW)
    assert (view.n, view.x) == (8, 1)
    assert view.status.posterior_prob == pytest.approx(beta.sf(0.2, 1.4, 8.6))
    assert view.status.boundary == _independent_boundary(8)
    assert view.status.stop is False
    assert view.extension_note == "n = 8 is past the designed maximum of 4; the boundary is extended by the same rule."
    assert [(row[0], row[2]) for row in view.boundary_rows][-1][1] is True  # the extended rows are marked


def test_the_escalation_page_shows_the_extension_and_the_expansion_cohort(client, expanded_study, time_machine):
    study, _, _ = expanded_study
    time_machine.move_to(dt.datetime(2025, 3, 10, 9, 0, tzinfo=dt.UTC), tick=False)
    client.force_login(member("medmon_exp", study, Role.MEDICAL_MONITOR))
    page = client.get(reverse("safety:escalation", args=[study.code]))
    text = page.content.decode()
    assert page.status_code == 200
    assert "n = 8 is past the designed maximum of 4; the boundary is extended by the same rule." in text
    assert "exceed the rule" not in text
    assert 'Status: <strong class="status-continue">continue</strong>' in text
    assert "Expansion cohort, not a dose-escalation step: 0 DLT(s) in 2 evaluable participants (0%)." in text
    assert "at most 6 evaluable" not in text
    assert "holds at most" not in text
    # Cohort 2 is the last escalation step: with 0/3 it is the highest planned dose (no MTD).
    assert "Highest planned dose reached without an MTD: cohort 2 (5 × 10⁶/kg)." in text


def test_a_dose_without_decimal_noise_is_named_in_engineering_notation():
    from safety.cohorts import cells_text

    assert [cells_text(Decimal(v)) for v in ("20000000", "2600000000", "1000000", "40000000", "500")] == [
        "20 × 10⁶",
        "2.6 × 10⁹",
        "1 × 10⁶",
        "40 × 10⁶",
        "500",
    ]


def test_no_safety_page_cites_an_internal_document(client, expanded_study, ctcae, time_machine):
    study, coordinator, participants = expanded_study
    ae = services.adverse_event_record(actor=coordinator, participant=participants[0], **ae_kwargs(ctcae))
    time_machine.move_to(dt.datetime(2025, 3, 10, 9, 0, tzinfo=dt.UTC), tick=False)
    client.force_login(member("medmon_docs", study, Role.MEDICAL_MONITOR))
    pages = [
        reverse("safety:escalation", args=[study.code]),
        reverse("safety:dashboard", args=[study.code]),
        reverse("safety:ae_detail", args=[ae.pk]),
        reverse("safety:dlt_adjudicate", args=[participants[0].pk]),
    ]
    for url in pages:
        text = client.get(url).content.decode()
        assert "§" not in text, url
        assert "docs/" not in text, url
        assert "domain.md" not in text, url


def test_a_tiny_posterior_probability_is_not_shown_as_zero():
    from safety.templatetags.safety_ui import percent

    tiny = monitoring_status(EXAMPLE, 1, 43).posterior_prob  # the demo's expansion: 1 DLT in 43
    assert 0 < tiny < 0.0005
    assert percent(tiny, 1) == "< 0.1%"
    assert (percent(0.0, 1), percent(0.1234), percent(0.9, 1)) == ("0.0%", "12%", "90.0%")
