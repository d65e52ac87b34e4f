"""Data cuts: what the extraction keeps and drops, the checksums and manifest, and the time-to-event
rows the derivation makes from a scripted trial (tests/analytics/conftest.py)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied

from analytics import datacut, services
from analytics.models import DataCut, DataCutFrame, RemissionDefinitionConfig
from tests.analytics.conftest import CUT_DATE, DIED, WITHDRAWN
from trials import services as trial_services
from trials.errors import RuleViolation
from trials.models import AuditSeal, DiseaseAssessment


def _derive(cut, endpoint="time_to_relapse"):
    frames = services.datacut_frames(cut)
    rows = []
    derived = datacut.derive(
        frames,
        indication=cut.study.indication,
        definition=services.definition_of(cut.definition, cut.study.indication),
        sap=datacut.sap_options(cut.definition.sap),
        follow_up_days=730,
        cut_date=cut.cut_date,
        endpoint=endpoint,
        on_assessment=rows.append,
    )
    return derived, rows


class TestDataCutCreate:
    def test_it_stores_every_frame_with_its_checksum(self, trial):
        cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE, label="interim")

        stored = {f.name: f for f in DataCutFrame.objects.filter(data_cut=cut)}
        assert set(stored) == {"participants", "assessments"}
        for name, frame in stored.items():
            csv = gzip.decompress(bytes(frame.content))
            assert hashlib.sha256(csv).hexdigest() == frame.sha256 == cut.manifest["frames"][name]["sha256"]
            assert frame.rows == cut.manifest["frames"][name]["rows"] == csv.count(b"\n") - 1
        assert cut.manifest["frames"]["participants"]["rows"] == 10
        # 10 participants x 5 disease-activity visits (d28, m3, m6, m12, m24); missed visits included.
        assert cut.manifest["frames"]["assessments"]["rows"] == 50
        assert cut.checksum == datacut.combined_checksum({n: f.sha256 for n, f in stored.items()})

    def test_the_manifest_records_the_audit_chain_head_and_the_definition(self, trial):
        head = AuditSeal.objects.order_by("-seq").first()

        cut = services.datacut_create(actor=trial.data_manager, study=trial.study, cut_date=CUT_DATE)

        assert cut.audit_chain_head == head.hash
        assert cut.manifest["audit_chain"] == {"seq": head.seq, "hash": head.hash}
        assert cut.manifest["definition"]["key"] == "RA/SDAI remission@1"
        assert cut.manifest["definition"]["sap"] == {"non_responders": "censor"}
        assert cut.manifest["cut_date"] == "2026-06-30"
        assert cut.manifest["extraction_version"] == datacut.EXTRACTION_VERSION
        assert cut.definition.version == 1

    def test_the_same_casebook_gives_the_same_checksum(self, trial):
        first = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
        second = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)

        assert first.pk != second.pk
        assert first.checksum == second.checksum

    def test_voided_assessments_drop_out_and_change_the_checksum(self, trial):
        before = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
        assessment = DiseaseAssessment.objects.filter(visit__participant=trial.participants[0]).earliest(
            "assessment_date"
        )
        trial_services.record_void(actor=trial.data_manager, record=assessment, reason="entered for wrong visit")

        after = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)

        assert after.checksum != before.checksum
        _, rows = _derive(after)
        row = next(r for r in rows if r.visit_id == assessment.visit_id)
        assert row.assessment_id is None
        assert row.adequate is False
        assert row.note == "no assessment: visit done"
        # The earlier cut is frozen: its frames still hold the assessment.
        _, old_rows = _derive(before)
        assert next(r for r in old_rows if r.visit_id == assessment.visit_id).assessment_id == assessment.pk

    def test_anything_after_the_cut_date_is_left_out(self, trial):
        cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=dt.date(2024, 9, 30))

        derived, rows = _derive(cut)

        assert max(r.visit_date for r in rows) <= dt.date(2024, 9, 30)
        first = derived.records[0]
        # Administrative cut: the cut date, earlier than infusion + 730 days.
        assert first["cutoff_date"] == dt.date(2024, 9, 30)
        assert first["duration"] <= (dt.date(2024, 9, 30) - first["infusion_date"]).days

    def test_a_coordinator_cannot_make_a_cut(self, trial):
        with pytest.raises(PermissionDenied):
            services.datacut_create(actor=trial.coordinator, study=trial.study, cut_date=CUT_DATE)
        assert not DataCut.objects.exists()

    def test_a_medical_monitor_cannot_make_a_cut(self, trial):
        with pytest.raises(PermissionDenied):
            services.datacut_create(actor=trial.medical_monitor, study=trial.study, cut_date=CUT_DATE)

    def test_it_refuses_a_cut_date_in_the_future(self, trial):
        with pytest.raises(RuleViolation) as refused:
            services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=dt.date(2999, 1, 1))
        assert "cut_date" in refused.value.message_dict
        assert not DataCut.objects.exists()

    def test_it_refuses_a_cut_date_before_the_study_started(self, trial):
        """Issue 10 (14): a cut dated 0003-02-02 was accepted. The study started when its first
        consent form version took effect (2024-01-01 here)."""
        for day in (dt.date(3, 2, 2), dt.date(2023, 12, 31)):
            with pytest.raises(RuleViolation) as refused:
                services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=day)
            message = refused.value.message_dict["cut_date"][0]
            assert f"The cut date {day.isoformat()} is before the study started (2024-01-01)" in message
        assert not DataCut.objects.exists()
        first_day = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=dt.date(2024, 1, 1))
        assert first_day.manifest["frames"]["participants"]["rows"] == 0

    def test_the_form_and_the_api_show_the_cut_date_error(self, trial):
        from django.test import Client
        from rest_framework.test import APIClient

        client = Client()
        client.force_login(trial.data_manager)
        page = client.post(f"/analytics/studies/{trial.study.code}/cuts/", {"cut_date": "0003-02-02"})
        assert page.status_code == 400
        assert "The cut date 0003-02-02 is before the study started (2024-01-01)" in page.content.decode()
        api = APIClient()
        api.force_authenticate(trial.data_manager)
        answer = api.post("/api/v1/data-cuts/", {"study": trial.study.code, "cut_date": "0003-02-02"}, format="json")
        assert answer.status_code == 400
        assert "before the study started" in answer.json()["cut_date"][0]
        assert not DataCut.objects.exists()

    def test_it_refuses_a_study_without_a_remission_definition(self, trial):
        from tests.factories import build_study, member
        from trials.models import Role

        other = build_study(code="treg-ra-empty", indication="RA", sites=list(trial.study.sites.all()))
        statistician = member("stats-empty", other, Role.STATISTICIAN)
        with pytest.raises(RuleViolation, match="remission definition"):
            services.datacut_create(actor=statistician, study=other, cut_date=CUT_DATE)


class TestDerivation:
    """The time-to-relapse rows of the scripted participants (docs/domain.md Part B §2)."""

    @pytest.fixture
    def rows(self, trial):
        cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
        derived, _ = _derive(cut)
        by_code = {r["subject_code"]: r for r in derived.records}
        return [by_code[p.subject_code] for p in trial.participants]

    def test_durable_remission_is_censored_at_month_24(self, rows):
        assert (rows[0]["duration"], rows[0]["event"]) == (730, 0)
        assert rows[0]["reason"] == "censored at last adequate assessment"

    def test_loss_of_remission_is_an_event_at_the_first_visit_not_in_remission(self, rows):
        assert (rows[1]["duration"], rows[1]["event"], rows[1]["event_code"]) == (182, 1, 1)
        # Interval censoring for the Turnbull analysis: relapse happened after month 3, by month 6.
        assert (rows[1]["lower"], rows[1]["upper"]) == (91, 182)
        assert (rows[7]["duration"], rows[7]["event"]) == (91, 1)

    def test_a_late_responder_counts_from_infusion(self, rows):
        assert (rows[2]["duration"], rows[2]["event"], rows[2]["lower"]) == (730, 1, 365)

    def test_a_non_responder_is_censored_under_the_censor_policy(self, rows):
        assert (rows[3]["duration"], rows[3]["event"], rows[3]["responder"]) == (730, 0, False)

    def test_an_event_after_two_missed_visits_is_censored_before_the_gap(self, rows):
        assert (rows[5]["duration"], rows[5]["event"]) == (28, 0)
        assert "2 consecutive missed visits" in rows[5]["reason"]

    def test_withdrawal_censors_at_the_last_adequate_assessment(self, rows):
        assert (rows[WITHDRAWN]["duration"], rows[WITHDRAWN]["event"]) == (365, 0)
        assert "withdrawn" in rows[WITHDRAWN]["reason"]

    def test_death_censors_the_km_row_and_competes_in_the_cumulative_incidence(self, rows):
        died = rows[DIED]
        assert (died["duration"], died["event"]) == (91, 0)
        assert (died["event_code"], died["cr_duration"]) == (2, 250)

    def test_days_in_remission_over_24_months(self, rows):
        assert rows[0]["days_in_remission"] == 730 - 28
        assert rows[1]["days_in_remission"] == 182 - 28

    def test_duration_of_remission_counts_responders_only(self, trial):
        cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
        derived, _ = _derive(cut, endpoint="duration_of_remission")
        assert derived.excluded == 1  # the participant never in remission
        dor = {r["subject_code"]: r for r in derived.records}[trial.participants[1].subject_code]
        assert (dor["origin_date"], dor["duration"], dor["event"]) == (
            trial.participants[1].infusions.get().infusion_date + dt.timedelta(days=28),
            182 - 28,
            1,
        )

    def test_each_assessment_keeps_its_derived_scores_and_link(self, trial):
        cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
        derived, rows = _derive(cut)
        assert derived.assessments == 50
        assert derived.adequate == 43
        first = next(r for r in rows if r.participant_id == trial.participants[0].pk)
        assert first.adequate
        assert first.in_remission
        assert first.study_day == 28
        assert DiseaseAssessment.objects.get(pk=first.assessment_id).visit_id == first.visit_id
        assert '"sdai": ["2.5000", ""]' in first.derived_json
        assert "sdai <= 3.3" in first.derived_json


class TestRemissionDefinition:
    def test_a_new_definition_is_the_next_version(self, trial):
        config = services.remission_definition_set(
            actor=trial.data_manager,
            study=trial.study,
            name="Boolean remission",
            rule="acr_eular_boolean",
            parameters={"version": "2022"},
            sap={"non_responders": "event_at_first_assessment", "confirm_loss": True},
            reason="SAP amendment 2",
        )
        assert config.version == 2
        assert services.definition_of(config, "RA").key == "RA/Boolean remission@2"

    def test_it_refuses_parameters_the_rule_does_not_have(self, trial):
        with pytest.raises(RuleViolation) as refused:
            services.remission_definition_set(
                actor=trial.statistician,
                study=trial.study,
                name="SDAI",
                rule="sdai",
                parameters={"threshold": "3"},
                sap={"non_responders": "censor"},
                reason="typo",
            )
        assert "parameters" in refused.value.message_dict
        assert RemissionDefinitionConfig.objects.filter(study=trial.study).count() == 1

    def test_it_refuses_a_rule_of_another_indication(self, trial):
        with pytest.raises(RuleViolation, match="applies to T1D"):
            services.remission_definition_set(
                actor=trial.statistician,
                study=trial.study,
                name="IDAA1c",
                rule="idaa1c",
                parameters={},
                sap={"non_responders": "censor"},
                reason="wrong study",
            )

    def test_the_sap_must_say_how_non_responders_count(self, trial):
        with pytest.raises(RuleViolation) as refused:
            services.remission_definition_set(
                actor=trial.statistician,
                study=trial.study,
                name="SDAI",
                rule="sdai",
                parameters={},
                sap={},
                reason="no policy",
            )
        assert "non_responders" in str(refused.value.message_dict["sap"])

    def test_insulin_independence_is_for_type_1_diabetes_studies(self, trial):
        with pytest.raises(RuleViolation, match="applies to T1D"):
            services.remission_definition_set(
                actor=trial.statistician,
                study=trial.study,
                name="Insulin free",
                rule="insulin_independence",
                parameters={},
                sap={"non_responders": "censor"},
                reason="x",
            )

    def test_a_coordinator_cannot_change_the_definition(self, trial):
        with pytest.raises(PermissionDenied):
            services.remission_definition_set(
                actor=trial.coordinator,
                study=trial.study,
                name="SDAI",
                rule="sdai",
                parameters={},
                sap={"non_responders": "censor"},
                reason="x",
            )


class TestRescueTherapyInTheCut:
    def test_a_rescue_start_ends_remission_as_the_sap_says(self, trial):
        durable = trial.participants[0]  # in remission at every visit
        start = durable.infusions.get().infusion_date + dt.timedelta(days=100)
        coordinator = get_user_model().objects.get(
            username=f"{trial.study.code}-coord-{'a' if durable.site.code == 'S01' else 'b'}"
        )
        trial_services.rescue_therapy_record(
            actor=coordinator,
            participant=durable,
            start_date=start,
            stop_date=None,
            category="corticosteroid",
            agent="prednisolone",
            reason="flare of symptoms",
        )
        cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
        frames = services.datacut_frames(cut)
        (row,) = [r for r in frames["participants"].records() if r["participant_id"] == str(durable.pk)]
        assert row["rescue_date"] == start.isoformat()

        derived, _ = _derive(cut)  # the study's SAP leaves rescue_therapy at its default: an event
        record = next(r for r in derived.records if r["participant_id"] == durable.pk)
        assert (record["duration"], record["event"], record["event_code"]) == (100, 1, 4)
        assert record["reason"] == "rescue therapy"
        assert record["days_in_remission"] < 100
