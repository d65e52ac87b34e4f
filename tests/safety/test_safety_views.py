"""The safety pages through the Django test client (docs/style.md §15): each POST is followed by a look at
the database; refusals show the service's message on the field and save nothing; access is 404
outside the user's sites and 403 on write pages for read-only roles."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from safety import services
from safety.models import AdverseEvent, CRSAssessment, DLTAdjudication, ExpeditedReport, SAECase, SAECaseVersion
from tests.factories import infused
from tests.safety.conftest import ae_kwargs, serious_kwargs


def _url(name: str, *args) -> str:
    return reverse(f"safety:{name}", args=args)


def _html(response) -> str:
    return response.content.decode()


def _ae_post(ctcae, **overrides) -> dict:
    data = {
        "category": "OTHER",
        "verbatim_term": "Headache after infusion",
        "ctcae_term": str(ctcae["Headache"].pk),
        "grade": "2",
        "onset": "2025-02-10",
        "end": "2025-02-12",
        "outcome": "RECOVERED/RESOLVED",
        "time_zone": "UTC",
        "site_aware_at": "",
        "causality_product": "possibly",
        "causality_leukapheresis": "",
        "causality_procedures": "not related",
        "action_taken": "NOT APPLICABLE",
        "action_other": "",
        "treatment_details": "",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


@pytest.fixture
def ae(participant, coordinator_site_a, ctcae):
    return services.adverse_event_record(actor=coordinator_site_a, participant=participant, **ae_kwargs(ctcae))


@pytest.fixture
def sae(participant, coordinator_site_a, ctcae):
    ae = services.adverse_event_record(actor=coordinator_site_a, participant=participant, **serious_kwargs(ctcae))
    return SAECase.objects.get(adverse_event=ae)


class TestAdverseEventForm:
    def test_the_form_shows_the_grade_texts_of_the_chosen_term(self, client, coordinator_site_a, participant, ctcae):
        client.force_login(coordinator_site_a)
        page = client.get(_url("ae_create", participant.pk))
        assert page.status_code == 200
        assert 'hx-get="/safety/ctcae/grades/"' in _html(page)
        partial = client.get(_url("ctcae_grades"), {"ctcae_term": ctcae["Fatigue"].pk}, HTTP_HX_REQUEST="true")
        html = _html(partial)
        assert "Fatigue not relieved by rest; limiting instrumental ADL" in html
        assert html.count("Not available for this term") == 2  # Fatigue has no grade 4 or 5

    def test_a_coordinator_records_an_ae(self, client, coordinator_site_a, participant, ctcae):
        client.force_login(coordinator_site_a)
        response = client.post(_url("ae_create", participant.pk), _ae_post(ctcae))
        ae = AdverseEvent.objects.get()
        assert response.status_code == 302
        assert response["Location"] == _url("ae_detail", ae.pk)
        assert (ae.grade, ae.causality_product, ae.causality_procedures) == (2, "possibly", "not related")
        detail = client.get(response["Location"])
        assert "Headache after infusion" in _html(detail)

    def test_a_refusal_is_shown_on_its_field_and_saves_nothing(self, client, coordinator_site_a, participant, ctcae):
        client.force_login(coordinator_site_a)
        response = client.post(
            _url("ae_create", participant.pk), _ae_post(ctcae, onset="2025-01-02", end="2025-01-03", grade="4")
        )
        assert response.status_code == 200
        html = _html(response)
        assert "before informed consent" in html
        assert "Headache has no grade 4" in html
        assert 'id="field-onset"' in html
        assert not AdverseEvent.objects.exists()

    def test_a_serious_ae_opens_the_case_and_says_when_to_report(self, client, coordinator_site_a, participant, ctcae):
        client.force_login(coordinator_site_a)
        response = client.post(
            _url("ae_create", participant.pk),
            _ae_post(
                ctcae,
                end="",
                ongoing="on",
                outcome="RECOVERING/RESOLVING",
                grade="3",
                serious="on",
                hospitalisation="on",
                site_aware_at="2025-03-03T09:00",
                time_zone="Europe/Berlin",
            ),
            follow=True,
        )
        case = SAECase.objects.get()
        assert case.site_aware_at == dt.datetime(2025, 3, 3, 8, 0, tzinfo=dt.UTC)
        assert "Report it to the sponsor by 2025-03-04 08:00 UTC" in _html(response)

    def test_a_correction_needs_a_reason_and_a_current_version(self, client, coordinator_site_a, ae, ctcae):
        client.force_login(coordinator_site_a)
        url = _url("ae_update", ae.pk)
        page = client.get(url)
        assert 'name="version" value="1"' in _html(page)
        no_reason = client.post(url, _ae_post(ctcae, grade="2", version="1", reason=""))
        assert "A reason for change is required" in _html(no_reason)
        saved = client.post(url, _ae_post(ctcae, grade="2", version="1", reason="Source document review"))
        assert saved.status_code == 302
        stale = client.post(url, _ae_post(ctcae, grade="3", version="1", reason="Again"))
        assert stale.status_code == 409
        ae.refresh_from_db()
        assert (ae.grade, ae.version) == (2, 2)


class TestAccess:
    def test_another_sites_coordinator_gets_404(self, client, coordinator_site_b, participant, ae, sae):
        client.force_login(coordinator_site_b)
        for url in (
            _url("ae_detail", ae.pk),
            _url("ae_update", ae.pk),
            _url("ae_list", participant.pk),
            _url("ae_create", participant.pk),
            _url("crs_assess", ae.pk),
            _url("sae_report", sae.pk),
        ):
            assert client.get(url).status_code == 404, url

    def test_a_monitor_reads_but_cannot_write(self, client, monitor, participant, ae, sae, ctcae):
        client.force_login(monitor)
        assert client.get(_url("ae_detail", ae.pk)).status_code == 200
        assert client.get(_url("ae_list", participant.pk)).status_code == 200
        assert client.get(_url("ae_create", participant.pk)).status_code == 403
        assert client.post(_url("ae_create", participant.pk), _ae_post(ctcae)).status_code == 403
        assert client.post(_url("ae_update", ae.pk), _ae_post(ctcae, reason="x", version="1")).status_code == 403
        assert client.post(_url("crs_assess", ae.pk), {}).status_code == 403
        assert client.post(_url("sae_report", sae.pk), {"narrative": "x"}).status_code == 403
        assert client.post(_url("sae_assess", sae.pk), {}).status_code == 403
        assert AdverseEvent.objects.count() == 2
        assert not SAECaseVersion.objects.exists()

    def test_anonymous_users_are_sent_to_login(self, client, ae):
        response = client.get(_url("ae_detail", ae.pk))
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")

    def test_the_escalation_page_is_for_study_wide_roles(self, client, coordinator_site_a, medical_monitor, study):
        client.force_login(coordinator_site_a)
        assert client.get(_url("escalation", study.code)).status_code == 403
        client.force_login(medical_monitor)
        assert client.get(_url("escalation", study.code)).status_code == 200


class TestGrading:
    @pytest.fixture
    def crs_ae(self, participant, coordinator_site_a, ctcae):
        return services.adverse_event_record(
            actor=coordinator_site_a,
            participant=participant,
            **serious_kwargs(
                ctcae,
                serious=False,
                hospitalisation=False,
                site_aware_at=None,
                grade=1,
                treatment_given=False,
                treatment_details="",
            ),
        )

    def _findings(self, **overrides):
        data = {
            "time_zone": "UTC",
            "assessed_at": "2025-03-02T21:00",
            "max_temperature_c": "39.1",
            "hypotension": "on",
            "vasopressors": "1",
            "oxygen_device": "nasal_cannula",
            "oxygen_flow_l_min": "3",
            "override_reason": "",
        }
        data.update(overrides)
        return data

    def test_the_form_previews_the_computed_grade_without_saving(self, client, coordinator_site_a, crs_ae):
        client.force_login(coordinator_site_a)
        response = client.post(
            _url("crs_assess", crs_ae.pk), {**self._findings(), "preview": "1"}, HTTP_HX_REQUEST="true"
        )
        html = _html(response)
        assert "Computed grade 3" in html
        assert "Hypotension: one vasopressor" in html
        assert not CRSAssessment.objects.exists()

    def test_a_preview_explains_a_bad_finding(self, client, coordinator_site_a, crs_ae):
        client.force_login(coordinator_site_a)
        response = client.post(
            _url("crs_assess", crs_ae.pk),
            {**self._findings(oxygen_flow_l_min=""), "preview": "1"},
            HTTP_HX_REQUEST="true",
        )
        assert "needs a flow rate" in _html(response)

    def test_saving_grades_the_ae(self, client, coordinator_site_a, crs_ae):
        client.force_login(coordinator_site_a)
        response = client.post(_url("crs_assess", crs_ae.pk), self._findings(), follow=True)
        assert "grade 3" in _html(response)
        crs_ae.refresh_from_db()
        assert crs_ae.grade == 3

    def test_an_override_without_reason_is_shown_on_its_field(self, client, coordinator_site_a, crs_ae):
        client.force_login(coordinator_site_a)
        response = client.post(_url("crs_assess", crs_ae.pk), self._findings(investigator_grade="2"))
        assert response.status_code == 200
        assert "record the reason for the override" in _html(response)
        assert not CRSAssessment.objects.exists()


class TestSAEPages:
    def test_the_site_reports_and_the_medical_monitor_assesses(
        self, client, coordinator_site_a, medical_monitor, sae, study
    ):
        client.force_login(coordinator_site_a)
        response = client.post(_url("sae_report", sae.pk), {"narrative": "Admitted with CRS."})
        assert response.status_code == 302
        sae.refresh_from_db()
        assert sae.sponsor_received_at is not None
        client.force_login(medical_monitor)
        refused = client.post(_url("sae_assess", sae.pk), {"sponsor_causality": "not related", "expected": "no"})
        assert "cannot downgrade" in _html(refused)
        response = client.post(
            _url("sae_assess", sae.pk),
            {"sponsor_causality": "possibly", "expected": "no", "expectedness_rationale": "Not in the IB"},
        )
        assert response.status_code == 302
        report = ExpeditedReport.objects.get(kind="fifteen_day")
        listing = _html(client.get(_url("reports", study.code)))
        assert sae.case_number in listing
        assert "15-day SUSAR report" in listing
        assert f"{report.due_date:%Y-%m-%d}" in listing
        submitted = client.post(
            _url("report_submit", report.pk), {"time_zone": "UTC", "acknowledgement": "EV-1", "version": "1"}
        )
        assert submitted.status_code == 302
        report.refresh_from_db()
        assert (report.status, report.days_late) == ("submitted", 0)

    def test_the_coordinator_cannot_assess_or_submit(self, client, coordinator_site_a, sae):
        client.force_login(coordinator_site_a)
        assert client.get(_url("sae_assess", sae.pk)).status_code == 403
        report = ExpeditedReport.objects.get(case=sae)
        assert client.get(_url("report_submit", report.pk)).status_code == 403


class TestDashboard:
    def test_the_medical_monitor_sees_every_site_with_the_escalation_panels(
        self, client, medical_monitor, coordinator_site_b, study, sites, sae, ctcae, django_assert_max_num_queries
    ):
        other = infused(study, sites[1], coordinator_site_b)
        services.adverse_event_record(actor=coordinator_site_b, participant=other, **ae_kwargs(ctcae))
        client.force_login(medical_monitor)
        with django_assert_max_num_queries(40):
            response = client.get(_url("dashboard", study.code))
        html = _html(response)
        assert sae.case_number in html
        assert "Bayesian stopping rule" in html
        assert "3+3" in html
        assert "Site to sponsor (24 h)" in html

    def test_a_coordinator_sees_only_their_site(self, client, coordinator_site_b, study, sae):
        client.force_login(coordinator_site_b)
        html = _html(client.get(_url("dashboard", study.code)))
        assert sae.case_number not in html
        assert "No serious adverse events." in html
        assert "Bayesian stopping rule" not in html

    def test_the_escalation_page_shows_the_boundary_table_and_operating_characteristics(
        self, client, medical_monitor, study, participant
    ):
        client.force_login(medical_monitor)
        html = _html(client.get(_url("escalation", study.code)))
        assert "22–24" in html
        assert "Operating characteristics" in html
        assert "0.62" in html  # P(stop) at a true DLT rate of 30 % (docs/domain.md §3.8)
        assert participant.subject_code in html

    def test_the_medical_monitor_signs_a_dlt_adjudication(
        self, client, medical_monitor, data_manager, study, participant
    ):
        services.dlt_definition_create(
            actor=data_manager, study=study, config={}, effective_from=dt.date(2025, 1, 1), reason="Protocol v1"
        )
        client.force_login(medical_monitor)
        response = client.post(
            _url("dlt_adjudicate", participant.pk),
            {
                "evaluable": "on",
                "rationale": "Completed the window without toxicity",
                "password": "correct-horse-battery",
            },
        )
        assert response.status_code == 302
        assert DLTAdjudication.objects.get().signer_name == "Mara Monitor"
