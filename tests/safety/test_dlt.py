"""Dose-limiting toxicity (docs/domain.md Part A §3.6-3.8): the versioned DLT definition, each
participant's DLT state, the SRC's signed adjudication, the 3+3 decision per cohort and the Bayesian
stopping rule with its boundary table and operating characteristics."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import PermissionDenied
from scipy.stats import beta

from safety import selectors, services
from safety.dlt import DEFAULT_DLT_CONFIG, DLTEvent, DLTState, evaluate_participant, validate_dlt_config
from safety.escalation import Decision
from safety.models import DLTAdjudication
from safety.rules_data import InputError
from tests.factories import infused
from tests.safety.conftest import INFUSION_DAY, ae_kwargs
from trials.errors import RuleViolation
from trials.models import AccessEvent
from trials.services import disposition_record

AFTER_WINDOW = dt.date(2025, 3, 10)  # the 28-day window of a 2025-02-03 infusion ends 2025-03-03
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory


# ---------------------------------------------------------------------------------------------
# The definition and one participant's events (pure)
# ---------------------------------------------------------------------------------------------


def _event(grade=3, category="OTHER", serious=False, onset="2025-02-10", product=True):
    return DLTEvent(1, "AE 1", category, grade, serious, onset, {"product": product})


def _evaluate(*events, today=AFTER_WINDOW, config=None, left=None):
    return evaluate_participant(
        list(events),
        config=config or validate_dlt_config({}),
        infusion_date=INFUSION_DAY,
        window_days=28,
        today=today,
        left_study_on=left,
    )


class TestDefinition:
    @pytest.mark.parametrize(
        ("event", "is_dlt"),
        [
            (_event(grade=3, product=True), True),
            (_event(grade=2, product=True), False),
            (_event(grade=3, product=False), False),
            (_event(grade=3, product=None), True),  # causality pending: counted until assessed
            (_event(grade=3, category="CRS", product=False), True),
            (_event(grade=2, category="CRS", product=True), False),
            (_event(grade=2, category="ICANS", product=False), True),
            (_event(grade=2, serious=True, product=True), True),
            (_event(grade=2, serious=True, product=False), False),
            (_event(grade=4, onset="2025-03-03", product=True), True),  # day 28: last day of the window
            (_event(grade=4, onset="2025-03-04", product=True), False),
            (_event(grade=4, onset="2025-03", product=True), True),  # partial onset may be in the window
            (_event(grade=4, onset="2025-02-02", product=True), False),  # before the infusion
        ],
    )
    def test_the_default_definition(self, event, is_dlt):
        assert _evaluate(event).is_dlt is is_dlt

    def test_a_completed_window_without_dlt_is_evaluable(self):
        status = _evaluate(_event(grade=1))
        assert (status.state, status.is_dlt, status.window_end) == (DLTState.EVALUABLE, False, dt.date(2025, 3, 3))

    def test_inside_the_window_it_waits(self):
        assert _evaluate(today=dt.date(2025, 3, 3)).state is DLTState.IN_WINDOW

    def test_leaving_inside_the_window_without_dlt_is_not_evaluable(self):
        assert _evaluate(left=dt.date(2025, 2, 20)).state is DLTState.NOT_EVALUABLE

    def test_a_dlt_makes_the_participant_evaluable_even_inside_the_window(self):
        status = _evaluate(_event(), today=dt.date(2025, 2, 11))
        assert (status.state, status.is_dlt, status.provisional) == (DLTState.EVALUABLE, True, True)

    def test_criteria_can_be_switched_off_and_the_window_changed(self):
        config = validate_dlt_config({"icans_grade_min": None, "window_days": 14})
        assert not _evaluate(_event(grade=2, category="ICANS"), config=config).is_dlt
        assert not _evaluate(_event(onset="2025-02-20"), config=config).is_dlt

    @pytest.mark.parametrize(
        ("config", "field"),
        [
            ({"crs_grade_min": 6}, "crs_grade_min"),
            ({"related_to": ["vector"]}, "related_to"),
            ({"window_days": 0}, "window_days"),
            ({"dlt_if_tuesday": True}, "config"),
            ({"stopping_rule": {**DEFAULT_DLT_CONFIG["stopping_rule"], "cutoff": 1.5}}, "cutoff"),
        ],
    )
    def test_a_malformed_definition_names_its_key(self, config, field):
        with pytest.raises(InputError) as refused:
            validate_dlt_config(config)
        assert refused.value.field == field

    def test_a_stored_definition_carries_no_document_citation(self):
        # The config is stored with each definition and may reach users: no "docs/..." source in it,
        # and one sent back from an older definition is dropped rather than refused.
        assert "source" not in validate_dlt_config({})
        assert "source" not in validate_dlt_config({"source": "docs/domain.md Part A §3.6"})


# ---------------------------------------------------------------------------------------------
# Cohorts in the database
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cohort_one(study, sites, coordinator_site_a, now):
    """Three participants infused on 2025-02-03 in dose cohort 1."""
    return [infused(study, sites[0], coordinator_site_a) for _ in range(3)]


def _ae(actor, participant, ctcae, **overrides):
    values = ae_kwargs(
        ctcae, verbatim_term="Exhaustion", ctcae_term=ctcae["Fatigue"], grade=3, causality_product="possibly"
    )
    values.update(overrides)
    return services.adverse_event_record(actor=actor, participant=participant, **values)


def _level(study, number=1, today=AFTER_WINDOW):
    return selectors.cohort_escalation(study=study, today=today)[number - 1]


class TestThreePlusThree:
    def test_no_dlt_in_three_escalates(self, study, cohort_one):
        level = _level(study)
        assert (level.counts.treated, level.counts.evaluable, level.counts.dlts) == (3, 3, 0)
        assert level.decision.decision is Decision.ESCALATE
        assert _level(study, 2).note == "No participant dosed at this level yet."

    def test_one_dlt_in_three_expands_to_six(self, study, cohort_one, coordinator_site_a, ctcae):
        _ae(coordinator_site_a, cohort_one[0], ctcae)
        level = _level(study)
        assert (level.counts.dlts, level.provisional_dlts) == (1, 1)
        assert level.decision.decision is Decision.EXPAND_TO_6

    def test_two_dlts_at_the_lowest_dose_stop_the_trial(self, study, cohort_one, coordinator_site_a, ctcae):
        _ae(coordinator_site_a, cohort_one[0], ctcae)
        _ae(
            coordinator_site_a,
            cohort_one[1],
            ctcae,
            category="CRS",
            ctcae_term=ctcae["Cytokine release syndrome"],
            causality_product="unlikely",
        )
        assert _level(study).decision.decision is Decision.STOP_NO_TOLERABLE_DOSE

    def test_it_waits_for_the_dlt_window(self, study, cohort_one):
        assert _level(study, today=dt.date(2025, 3, 1)).decision.decision is Decision.WAIT

    def test_a_participant_who_left_early_is_replaced(self, study, cohort_one, coordinator_site_a):
        disposition_record(
            actor=coordinator_site_a,
            participant=cohort_one[2],
            kind="withdrawn",
            disposition_date=dt.date(2025, 2, 15),
            reason="Withdrew consent",
        )
        level = _level(study)
        assert level.counts.not_evaluable == 1
        assert (level.decision.decision, level.decision.subjects_needed) == (Decision.WAIT, 1)

    def test_an_unrelated_grade_3_ae_or_one_after_the_window_is_no_dlt(
        self, study, cohort_one, coordinator_site_a, ctcae
    ):
        _ae(coordinator_site_a, cohort_one[0], ctcae, causality_product="unlikely")
        _ae(coordinator_site_a, cohort_one[1], ctcae, onset="2025-03-04", end="2025-03-04")  # day 29
        assert _level(study).counts.dlts == 0

    def test_voided_aes_do_not_count(self, study, cohort_one, coordinator_site_a, ctcae):
        from trials.services import record_void

        ae = _ae(coordinator_site_a, cohort_one[0], ctcae)
        record_void(actor=coordinator_site_a, record=ae, reason="Entered for the wrong participant")
        assert _level(study).counts.dlts == 0


class TestAdjudication:
    @pytest.fixture
    def definition(self, study, data_manager):
        return services.dlt_definition_create(
            actor=data_manager, study=study, config={}, effective_from=dt.date(2024, 12, 1), reason="Protocol v1.0"
        )

    def test_adjudicating_leaves_the_investigators_signature_valid(
        self, study, sites, cohort_one, coordinator_site_a, medical_monitor, ctcae, definition
    ):
        """The committee's decision is the sponsor's record, not site data the PI signed."""
        from tests.factories import member
        from trials import services as trials_services
        from trials.models import Participant, Role

        participant = cohort_one[0]
        _ae(coordinator_site_a, participant, ctcae)
        investigator = member("pi_dlt", study, Role.INVESTIGATOR, sites[0])
        trials_services.record_sign(actor=investigator, record=participant, password=PASSWORD, meaning="casebook")

        services.dlt_adjudicate(
            actor=medical_monitor,
            participant=participant,
            evaluable=True,
            is_dlt=False,
            rationale="Completed the window without a DLT",
            password=PASSWORD,
        )

        assert trials_services.signature_state(Participant.objects.get(pk=participant.pk))["valid"] is True

    def test_the_committee_overrules_a_provisional_dlt(
        self, study, cohort_one, coordinator_site_a, medical_monitor, ctcae, definition
    ):
        ae = _ae(coordinator_site_a, cohort_one[0], ctcae)
        adjudication = services.dlt_adjudicate(
            actor=medical_monitor,
            participant=cohort_one[0],
            evaluable=True,
            is_dlt=False,
            adverse_event=ae,
            rationale="Fatigue due to intercurrent influenza",
            password=PASSWORD,
        )
        assert (adjudication.signer_name, adjudication.definition) == ("Mara Monitor", definition)
        level = _level(study)
        assert (level.counts.dlts, level.provisional_dlts) == (0, 0)
        assert level.decision.decision is Decision.ESCALATE
        row = next(r for r in level.participants if r.participant == cohort_one[0])
        assert row.status.adjudicated
        assert "Mara Monitor" in row.status.reason

    def test_a_wrong_password_signs_nothing_and_is_logged(self, cohort_one, medical_monitor, definition):
        with pytest.raises(RuleViolation) as refused:
            services.dlt_adjudicate(
                actor=medical_monitor,
                participant=cohort_one[0],
                evaluable=True,
                is_dlt=False,
                rationale="x",
                password="nope",
            )
        assert "password" in refused.value.message_dict
        assert not DLTAdjudication.objects.exists()
        assert AccessEvent.objects.filter(kind="signature_failed", user=medical_monitor).count() == 1

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"is_dlt": True}, "adverse_event"),
            ({"is_dlt": True, "evaluable": False}, "evaluable"),
            ({"rationale": " "}, "rationale"),
        ],
    )
    def test_an_incomplete_decision_is_refused(self, cohort_one, medical_monitor, definition, kwargs, field):
        values = {"evaluable": True, "is_dlt": False, "rationale": "Reviewed", "password": PASSWORD, **kwargs}
        with pytest.raises(RuleViolation) as refused:
            services.dlt_adjudicate(actor=medical_monitor, participant=cohort_one[0], **values)
        assert field in refused.value.message_dict

    def test_a_changed_decision_needs_a_reason(self, cohort_one, medical_monitor, definition):
        kwargs = {"actor": medical_monitor, "participant": cohort_one[0], "evaluable": True, "password": PASSWORD}
        services.dlt_adjudicate(is_dlt=False, rationale="Completed window", **kwargs)
        with pytest.raises(RuleViolation) as refused:
            services.dlt_adjudicate(is_dlt=False, rationale="Re-review", **kwargs)
        assert "reason" in refused.value.message_dict
        again = services.dlt_adjudicate(
            is_dlt=False, rationale="Re-review", reason="SRC meeting 2", expected_version=1, **kwargs
        )
        assert again.version == 2

    def test_only_the_medical_monitor_adjudicates(self, cohort_one, coordinator_site_a, definition):
        with pytest.raises(PermissionDenied):
            services.dlt_adjudicate(
                actor=coordinator_site_a,
                participant=cohort_one[0],
                evaluable=True,
                is_dlt=False,
                rationale="x",
                password=PASSWORD,
            )

    def test_there_is_no_adjudication_without_a_definition(self, cohort_one, medical_monitor):
        with pytest.raises(RuleViolation, match="no DLT definition"):
            services.dlt_adjudicate(
                actor=medical_monitor,
                participant=cohort_one[0],
                evaluable=True,
                is_dlt=False,
                rationale="x",
                password=PASSWORD,
            )


class TestDefinitionVersions:
    def test_versions_count_up_and_the_latest_applies(self, study, cohort_one, data_manager, coordinator_site_a, ctcae):
        first = services.dlt_definition_create(
            actor=data_manager, study=study, config={}, effective_from=dt.date(2024, 12, 1), reason="Protocol v1.0"
        )
        second = services.dlt_definition_create(
            actor=data_manager,
            study=study,
            config={"related_grade_min": 4},
            effective_from=dt.date(2025, 2, 1),
            reason="Amendment 1",
        )
        assert (first.number, second.number) == (1, 2)
        _ae(coordinator_site_a, cohort_one[0], ctcae)
        assert _level(study).counts.dlts == 0  # grade 3 is no longer a DLT under version 2
        assert "grade >= 4" in " ".join(selectors.dlt_definition_text(study))

    def test_a_malformed_definition_is_refused_on_config(self, study, data_manager):
        with pytest.raises(RuleViolation) as refused:
            services.dlt_definition_create(
                actor=data_manager,
                study=study,
                config={"crs_grade_min": 0},
                effective_from=dt.date(2025, 1, 1),
                reason="x",
            )
        assert "crs_grade_min" in refused.value.message_dict["config"][0]

    def test_a_coordinator_cannot_define_dlts(self, study, coordinator_site_a):
        with pytest.raises(PermissionDenied):
            services.dlt_definition_create(
                actor=coordinator_site_a, study=study, config={}, effective_from=dt.date(2025, 1, 1), reason="x"
            )


class TestStoppingRule:
    def test_the_boundary_table_reproduces_domain_3_8(self, study):
        view = selectors.stopping_rule_status(study=study, today=AFTER_WINDOW)
        assert view.boundary_rows == [
            ("1", None, False),
            ("2–3", 2, False),
            ("4–6", 3, False),
            ("7–9", 4, False),
            ("10–13", 5, False),
            ("14–17", 6, False),
            ("18–21", 7, False),
            ("22–24", 8, False),
        ]
        assert [round(p_stop, 2) for _, p_stop, _ in view.operating] == [0.01, 0.04, 0.25, 0.62, 0.89, 0.98]
        assert view.note == "No DLT-evaluable participant yet: the probability shown is the prior's."
        # Even with nobody evaluable the monitor sees a probability (the prior's) and a status.
        assert view.status.posterior_prob == pytest.approx(beta.sf(0.2, 0.4, 1.6))
        assert view.status.stop is False

    def test_two_dlts_in_three_cross_the_boundary(self, study, cohort_one, coordinator_site_a, ctcae):
        _ae(coordinator_site_a, cohort_one[0], ctcae)
        _ae(coordinator_site_a, cohort_one[1], ctcae)
        view = selectors.stopping_rule_status(study=study, today=AFTER_WINDOW)
        assert (view.n, view.x, view.provisional) == (3, 2, 2)
        assert view.status.stop
        assert view.status.boundary == 2

    def test_one_dlt_in_three_does_not(self, study, cohort_one, coordinator_site_a, ctcae):
        _ae(coordinator_site_a, cohort_one[0], ctcae)
        view = selectors.stopping_rule_status(study=study, today=AFTER_WINDOW)
        assert not view.status.stop
        assert view.status.events_to_boundary == 1
