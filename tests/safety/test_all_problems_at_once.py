"""Every safety write service checks all of its input and refuses it once, naming every bad field
(never one field per submission), and a refused call saves nothing: AE update, CRS and ICANS
assessments, SAE reports, the sponsor assessment, expedited report submission, DLT definition and
DLT adjudication. The pages show the same messages on their fields."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse

from safety import services
from safety.models import DLTAdjudication, Outcome, SAECase
from tests.safety.conftest import ae_kwargs, serious_kwargs
from trials.errors import RuleViolation
from trials.models import AccessEvent

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory
LATER = dt.datetime(2025, 3, 10, 9, 0, tzinfo=dt.UTC)  # after the pinned "now"


def _refusal(call, **kwargs) -> dict[str, list[str]]:
    with pytest.raises(RuleViolation) as error:
        call(**kwargs)
    return error.value.message_dict


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
            verbatim_term="Confusion",
            ctcae_term=ctcae["Encephalopathy"],
            onset="2025-03-01",
            end="",
            ongoing=True,
            outcome=Outcome.RECOVERING,
        ),
    )


@pytest.fixture
def case(participant, coordinator_site_a, ctcae):
    ae = services.adverse_event_record(actor=coordinator_site_a, participant=participant, **serious_kwargs(ctcae))
    return SAECase.objects.get(adverse_event=ae)


@pytest.fixture
def sent_case(case, coordinator_site_a):
    services.sae_report_to_sponsor(actor=coordinator_site_a, case=case, narrative="Admitted with CRS on day 26.")
    case.refresh_from_db()
    return case


def test_an_ae_correction_names_the_missing_reason_and_every_broken_rule(
    participant, coordinator_site_a, ctcae, safety_counts
):
    ae = services.adverse_event_record(actor=coordinator_site_a, participant=participant, **ae_kwargs(ctcae))
    before = safety_counts()
    problems = _refusal(
        services.adverse_event_update,
        actor=coordinator_site_a,
        adverse_event=ae,
        changes={"end": "2025-02-01", "grade": 5, "verbatim_term": "x\u202ey", "treatment_details": "y" * 3000},
        reason="",
        expected_version=1,
    )
    assert {"reason", "end", "outcome", "death", "verbatim_term", "treatment_details"} <= set(problems)
    assert safety_counts() == before


def test_a_crs_assessment_names_every_bad_finding(crs_ae, coordinator_site_a, safety_counts):
    before = safety_counts()
    problems = _refusal(
        services.crs_assessment_record,
        actor=coordinator_site_a,
        adverse_event=crs_ae,
        assessed_at=LATER,
        max_temperature_c=Decimal("47.5"),
        vasopressors=1,
        hypotension=False,
        oxygen_device="nasal_cannula",
        oxygen_flow_l_min=None,
        override_reason="\x00",
    )
    assert problems["assessed_at"] == ["The assessment time is in the future."]
    assert set(problems) >= {"assessed_at", "max_temperature_c", "hypotension", "oxygen_flow_l_min", "override_reason"}
    assert safety_counts() == before


def test_an_icans_assessment_names_every_bad_finding(icans_ae, coordinator_site_a, safety_counts):
    before = safety_counts()
    problems = _refusal(
        services.icans_assessment_record,
        actor=coordinator_site_a,
        adverse_event=icans_ae,
        assessed_at=dt.datetime(2025, 2, 20, 9, 0, tzinfo=dt.UTC),  # before the onset
        age_years=40,
        ice_orientation=4,
        ice_naming=3,
        override_reason="a\u202eb",
    )
    assert problems["assessed_at"] == ["The assessment cannot precede the onset (2025-03-01)."]
    assert {"ice_commands", "ice_writing", "ice_attention", "override_reason"} <= set(problems)
    assert safety_counts() == before


def test_an_sae_report_names_a_hostile_narrative(case, coordinator_site_a, safety_counts):
    before = safety_counts()
    problems = _refusal(
        services.sae_report_to_sponsor, actor=coordinator_site_a, case=case, narrative="Admitted\x00" + "x" * 20_000
    )
    assert problems["narrative"][0].startswith("The narrative contains a control character")
    assert safety_counts() == before
    too_long = _refusal(services.sae_report_to_sponsor, actor=coordinator_site_a, case=case, narrative="x" * 20_000)
    assert too_long["narrative"] == ["The narrative is too long: 20,000 characters, at most 10,000 are allowed."]


def test_the_sponsor_assessment_names_every_missing_judgement(sent_case, medical_monitor, safety_counts):
    before = safety_counts()
    problems = _refusal(
        services.sae_sponsor_assess,
        actor=medical_monitor,
        case=sent_case,
        sponsor_causality="",
        expected=None,
        causality_rationale="a\u202eb",
    )
    assert problems["sponsor_causality"] == ["Give the sponsor's causality assessment."]
    assert problems["expected"] == ["No reference safety information is on file: state whether the event is expected."]
    assert "causality_rationale" in problems
    assert safety_counts() == before


def test_the_sponsor_assessment_names_a_downgrade_and_a_missing_expectedness_rationale_together(
    sent_case, medical_monitor
):
    problems = _refusal(
        services.sae_sponsor_assess, actor=medical_monitor, case=sent_case, sponsor_causality="unlikely", expected=True
    )
    assert set(problems) == {"sponsor_causality", "expectedness_rationale"}


def test_a_report_submission_names_the_time_and_the_reference(sent_case, medical_monitor, safety_counts):
    services.sae_sponsor_assess(
        actor=medical_monitor,
        case=sent_case,
        sponsor_causality="possibly",
        expected=False,
        expectedness_rationale="Not in the IB",
    )
    report = sent_case.reports.get(kind="fifteen_day")
    before = safety_counts()
    problems = _refusal(
        services.expedited_report_submit,
        actor=medical_monitor,
        report=report,
        submitted_at=LATER,
        acknowledgement="ACK\u202e-1",
    )
    assert problems["submitted_at"] == ["The submission time is in the future."]
    assert problems["acknowledgement"][0].startswith("The acknowledgement / reference ID contains a bidirectional")
    assert safety_counts() == before


def test_a_dlt_definition_names_every_bad_part(study, data_manager, safety_counts):
    before = safety_counts()
    problems = _refusal(
        services.dlt_definition_create,
        actor=data_manager,
        study=study,
        config={"window_days": 0},
        effective_from=None,
        reason=" ",
    )
    assert set(problems) == {"reason", "config", "effective_from"}
    assert safety_counts() == before


def test_a_dlt_adjudication_names_every_problem_and_checks_the_password_once(
    participant, medical_monitor, data_manager, safety_counts
):
    services.dlt_definition_create(
        actor=data_manager, study=participant.study, config={}, effective_from=dt.date(2024, 12, 1), reason="v1"
    )
    before = safety_counts()
    problems = _refusal(
        services.dlt_adjudicate,
        actor=medical_monitor,
        participant=participant,
        evaluable=False,
        is_dlt=True,
        rationale="",
        password="wrong",
    )
    assert set(problems) == {"rationale", "evaluable", "adverse_event", "password"}
    assert safety_counts() == before
    assert not DLTAdjudication.objects.exists()
    assert AccessEvent.objects.filter(kind="signature_failed", user=medical_monitor).count() == 1


def test_the_grading_page_shows_every_bad_finding(client, coordinator_site_a, crs_ae):
    client.force_login(coordinator_site_a)
    response = client.post(
        reverse("safety:crs_assess", args=[crs_ae.pk]),
        {
            "time_zone": "UTC",
            "assessed_at": "2025-03-10T09:00",
            "max_temperature_c": "47.5",
            "vasopressors": "1",
            "oxygen_device": "nasal_cannula",
            "oxygen_flow_l_min": "",
        },
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert {"assessed_at", "max_temperature_c", "hypotension", "oxygen_flow_l_min"} <= set(errors)
    assert not crs_ae.crs_assessments.exists()


def test_the_report_page_marks_the_narrative_required_and_refuses_it_empty(client, coordinator_site_a, case):
    client.force_login(coordinator_site_a)
    url = reverse("safety:sae_report", args=[case.pk])
    assert client.get(url).context["form"]["narrative"].field.required
    assert 'maxlength="10000" required' in client.get(url).content.decode()
    response = client.post(url, {})
    assert response.status_code == 200
    assert response.context["form"].errors["narrative"] == [
        "Describe the event: what happened, treatment, current status."
    ]
    case.refresh_from_db()
    assert case.sponsor_received_at is None
