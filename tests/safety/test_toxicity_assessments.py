"""CRS and ICANS assessments through the services (docs/domain.md Part A §3.1-3.2): the grade is computed
from the structured findings, the AE carries the worst final grade, and the investigator may
override only with a reason. The grading boundaries themselves are tested in test_grading.py."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from safety import services
from safety.models import AdverseEvent, CRSAssessment, ICANSAssessment, Outcome
from tests.safety.conftest import ae_kwargs
from trials.errors import RuleViolation

ASSESSED = dt.datetime(2025, 3, 1, 22, 0, tzinfo=dt.UTC)


@pytest.fixture
def crs_ae(participant, coordinator_site_a, ctcae):
    return services.adverse_event_record(
        actor=coordinator_site_a,
        participant=participant,
        **ae_kwargs(
            ctcae,
            category="CRS",
            verbatim_term="CRS",
            ctcae_term=ctcae["Cytokine release syndrome"],
            onset="2025-03-01",
            end="",
            ongoing=True,
            outcome=Outcome.RECOVERING,
            causality_product="probably",
        ),
    )


@pytest.fixture
def icans_ae(participant, coordinator_site_a, ctcae):
    return services.adverse_event_record(
        actor=coordinator_site_a,
        participant=participant,
        **ae_kwargs(
            ctcae,
            category="ICANS",
            verbatim_term="Confusion, word-finding difficulty",
            ctcae_term=ctcae["Encephalopathy"],
            onset="2025-03-01",
            end="",
            ongoing=True,
            outcome=Outcome.RECOVERING,
        ),
    )


def _crs(actor, ae, **findings):
    values = {"assessed_at": ASSESSED, "max_temperature_c": Decimal("39.2")}
    values.update(findings)
    return services.crs_assessment_record(actor=actor, adverse_event=ae, **values)


class TestCRSAssessment:
    def test_one_pressor_and_low_flow_oxygen_is_grade_3_and_regrades_the_ae(self, crs_ae, coordinator_site_a):
        assessment = _crs(
            coordinator_site_a,
            crs_ae,
            hypotension=True,
            vasopressors=1,
            oxygen_device="nasal_cannula",
            oxygen_flow_l_min=Decimal("4"),
        )
        assert (assessment.computed_grade, assessment.final_grade) == (3, 3)
        assert assessment.rule_version == "crs-astct-2019.1"
        assert "hypotension" in assessment.computed_reason
        crs_ae.refresh_from_db()
        assert (crs_ae.grade, crs_ae.version) == (3, 2)
        assert crs_ae.grade_scale.startswith("ASTCT CRS")
        event = AdverseEvent.pgh_event_model.objects.filter(pgh_obj_id=crs_ae.pk, pgh_label="update").get()
        assert "computed by ASTCT" in event.pgh_context.metadata["reason"]

    def test_fever_alone_is_grade_1(self, crs_ae, coordinator_site_a):
        assert _crs(coordinator_site_a, crs_ae).final_grade == 1

    def test_high_flow_cannula_above_6_l_min_is_grade_3(self, crs_ae, coordinator_site_a):
        six = _crs(coordinator_site_a, crs_ae, oxygen_device="nasal_cannula", oxygen_flow_l_min=Decimal("6.0"))
        seven = _crs(coordinator_site_a, crs_ae, oxygen_device="nasal_cannula", oxygen_flow_l_min=Decimal("6.5"))
        assert (six.computed_grade, seven.computed_grade) == (2, 3)

    def test_the_ae_keeps_its_worst_grade(self, crs_ae, coordinator_site_a):
        _crs(coordinator_site_a, crs_ae, oxygen_device="cpap")
        _crs(coordinator_site_a, crs_ae)
        crs_ae.refresh_from_db()
        assert crs_ae.grade == 4

    def test_an_override_needs_a_reason_and_saves_nothing_without(self, crs_ae, coordinator_site_a, safety_counts):
        before = safety_counts()
        with pytest.raises(RuleViolation) as refused:
            _crs(coordinator_site_a, crs_ae, investigator_grade=2)
        assert "override_reason" in refused.value.message_dict
        assert safety_counts() == before

    def test_an_override_with_a_reason_sets_the_final_grade(self, crs_ae, coordinator_site_a):
        assessment = _crs(
            coordinator_site_a, crs_ae, investigator_grade=2, override_reason="Hypoxia from pneumonia, not CRS"
        )
        assert (assessment.computed_grade, assessment.final_grade, assessment.overridden) == (1, 2, True)
        crs_ae.refresh_from_db()
        assert crs_ae.grade == 2

    def test_no_fever_means_no_crs_and_is_refused(self, crs_ae, coordinator_site_a):
        with pytest.raises(RuleViolation) as refused:
            _crs(coordinator_site_a, crs_ae, max_temperature_c=Decimal("37.6"))
        assert "grade is 0" in refused.value.messages[0]
        assert not CRSAssessment.objects.exists()

    def test_a_masked_fever_still_grades_from_hypotension(self, crs_ae, coordinator_site_a):
        assessment = _crs(
            coordinator_site_a, crs_ae, max_temperature_c=Decimal("37.0"), fever_masked=True, hypotension=True
        )
        assert assessment.computed_grade == 2

    @pytest.mark.parametrize(
        ("findings", "field"),
        [
            ({"oxygen_device": "nasal_cannula"}, "oxygen_flow_l_min"),
            ({"vasopressors": 1}, "hypotension"),
            ({"max_temperature_c": Decimal("47.0")}, "max_temperature_c"),
            ({"oxygen_device": "tent"}, "oxygen_device"),
            ({"investigator_grade": 7, "override_reason": "x"}, "investigator_grade"),
            ({"assessed_at": dt.datetime(2025, 4, 1, tzinfo=dt.UTC)}, "assessed_at"),
            ({"assessed_at": dt.datetime(2025, 2, 20, tzinfo=dt.UTC)}, "assessed_at"),
        ],
    )
    def test_bad_findings_are_refused_on_their_field(self, crs_ae, coordinator_site_a, findings, field):
        with pytest.raises(RuleViolation) as refused:
            _crs(coordinator_site_a, crs_ae, **findings)
        assert field in refused.value.message_dict
        assert not CRSAssessment.objects.exists()

    def test_only_a_crs_ae_is_graded_as_crs(self, participant, coordinator_site_a, ctcae):
        headache = services.adverse_event_record(actor=coordinator_site_a, participant=participant, **ae_kwargs(ctcae))
        with pytest.raises(RuleViolation):
            _crs(coordinator_site_a, headache)

    def test_the_grade_of_a_graded_ae_is_not_edited_by_hand(self, crs_ae, coordinator_site_a):
        _crs(coordinator_site_a, crs_ae)
        crs_ae.refresh_from_db()
        with pytest.raises(RuleViolation) as refused:
            services.adverse_event_update(
                actor=coordinator_site_a,
                adverse_event=crs_ae,
                changes={"grade": 3},
                reason="worse",
                expected_version=crs_ae.version,
            )
        assert "grade" in refused.value.message_dict

    def test_death_due_to_crs_needs_the_ae_to_be_fatal_first(self, crs_ae, coordinator_site_a):
        with pytest.raises(RuleViolation) as refused:
            _crs(coordinator_site_a, crs_ae, death_due_to_crs=True)
        assert "grade 5" in refused.value.messages[0]
        assert not CRSAssessment.objects.exists()
        crs_ae.refresh_from_db()
        assert crs_ae.grade == 1


class TestICANSAssessment:
    def _icans(self, actor, ae, **findings):
        values = {"assessed_at": ASSESSED, "age_years": 40}
        values.update(findings)
        return services.icans_assessment_record(actor=actor, adverse_event=ae, **values)

    def test_an_ice_score_of_5_is_grade_2(self, icans_ae, coordinator_site_a):
        assessment = self._icans(
            coordinator_site_a,
            icans_ae,
            ice_orientation=2,
            ice_naming=2,
            ice_commands=1,
            ice_writing=0,
            ice_attention=0,
            consciousness="awakens_spontaneously",
        )
        assert (assessment.ice_score, assessment.computed_grade) == (5, 2)
        icans_ae.refresh_from_db()
        assert icans_ae.grade == 2
        assert icans_ae.grade_scale.startswith("ASTCT ICANS")

    def test_an_unarousable_adult_is_grade_4_with_ice_0(self, icans_ae, coordinator_site_a):
        assessment = self._icans(coordinator_site_a, icans_ae, consciousness="unarousable")
        assert (assessment.ice_score, assessment.computed_grade) == (0, 4)

    def test_a_child_is_assessed_with_capd(self, icans_ae, coordinator_site_a):
        assessment = self._icans(coordinator_site_a, icans_ae, age_years=10, capd_score=9)
        assert assessment.computed_grade == 3

    def test_a_seizure_is_grade_3(self, icans_ae, coordinator_site_a):
        assert self._icans(coordinator_site_a, icans_ae, seizure="rapidly_resolving").computed_grade == 3

    def test_ice_items_are_scored_all_or_none(self, icans_ae, coordinator_site_a):
        with pytest.raises(RuleViolation) as refused:
            self._icans(coordinator_site_a, icans_ae, ice_orientation=4, ice_naming=3)
        assert {"ice_commands", "ice_writing", "ice_attention"} <= set(refused.value.message_dict)
        assert not ICANSAssessment.objects.exists()

    def test_an_ice_item_above_its_maximum_is_refused(self, icans_ae, coordinator_site_a):
        with pytest.raises(RuleViolation) as refused:
            self._icans(
                coordinator_site_a,
                icans_ae,
                ice_orientation=5,
                ice_naming=3,
                ice_commands=1,
                ice_writing=1,
                ice_attention=1,
            )
        assert "ice_orientation" in refused.value.message_dict

    def test_a_child_given_an_ice_score_is_refused(self, icans_ae, coordinator_site_a):
        with pytest.raises(RuleViolation) as refused:
            self._icans(
                coordinator_site_a,
                icans_ae,
                age_years=9,
                ice_orientation=4,
                ice_naming=3,
                ice_commands=1,
                ice_writing=1,
                ice_attention=0,
            )
        assert "ice_score" in refused.value.message_dict
