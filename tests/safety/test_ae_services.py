"""Adverse-event capture through the services (docs/domain.md Part A §1.1-1.4): derived fields, every
consistency refusal naming its field and saving nothing, edits with a reason and a version, access,
and the database constraints that back the rules."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from safety import services
from safety.models import AdverseEvent, ExpeditedReport, Outcome, SAECase
from tests.factories import enrolled, infused, member
from tests.safety.conftest import ae_kwargs, serious_kwargs
from trials.audit import audit_context
from trials.errors import ConflictError, LockedError, RuleViolation
from trials.models import Role
from trials.services import casebook_set_locked, disposition_record


def _record(actor, participant, ctcae, **overrides):
    return services.adverse_event_record(actor=actor, participant=participant, **ae_kwargs(ctcae, **overrides))


class TestAdverseEventRecord:
    def test_it_records_a_coded_treatment_emergent_ae(self, participant, coordinator_site_a, ctcae):
        ae = _record(coordinator_site_a, participant, ctcae)
        ae.refresh_from_db()
        assert ae.sequence == 1
        assert ae.ctcae_version == "5.0"
        assert ae.ctcae_term.soc == "Nervous system disorders"
        assert ae.treatment_emergent is True
        assert ae.infusion is None
        assert ae.causality_rules == "causality-5pt-2025.1"
        assert not SAECase.objects.exists()

    def test_the_audit_event_names_the_actor(self, participant, coordinator_site_a, ctcae):
        ae = _record(coordinator_site_a, participant, ctcae)
        event = AdverseEvent.pgh_event_model.objects.get(pgh_obj_id=ae.pk)
        assert event.pgh_label == "insert"
        assert event.pgh_context.metadata["user"] == coordinator_site_a.pk

    def test_sequences_count_up_per_participant(self, participant, coordinator_site_a, ctcae):
        first = _record(coordinator_site_a, participant, ctcae)
        second = _record(coordinator_site_a, participant, ctcae, verbatim_term="Tired", ctcae_term=ctcae["Fatigue"])
        assert (first.sequence, second.sequence) == (1, 2)

    def test_an_ae_before_the_infusion_is_not_treatment_emergent(self, participant, coordinator_site_a, ctcae):
        ae = _record(coordinator_site_a, participant, ctcae, onset="2025-01-20", end="2025-01-21")
        assert ae.treatment_emergent is False

    def test_an_onset_on_the_infusion_day_or_a_partial_onset_counts_as_emergent(
        self, participant, coordinator_site_a, ctcae
    ):
        same_day = _record(coordinator_site_a, participant, ctcae, onset="2025-02-03", end="2025-02-03")
        partial = _record(coordinator_site_a, participant, ctcae, onset="2025-02", end="2025-02-20")
        assert same_day.treatment_emergent
        assert partial.treatment_emergent

    def test_an_infusion_reaction_is_linked_to_the_infusion(self, participant, coordinator_site_a, ctcae):
        ae = _record(
            coordinator_site_a,
            participant,
            ctcae,
            category="INFUSION REACTION",
            verbatim_term="Rigors during infusion",
            ctcae_term=ctcae["Infusion related reaction"],
            grade=2,
            onset="2025-02-03",
            end="2025-02-03",
            action_taken="DRUG INTERRUPTED",
        )
        assert ae.infusion == participant.infusions.get()

    def test_causality_is_stored_in_the_scales_spelling(self, participant, coordinator_site_a, ctcae):
        ae = _record(coordinator_site_a, participant, ctcae, causality_product="  Possibly ", causality_procedures="")
        assert (ae.causality_product, ae.causality_procedures) == ("possibly", "")

    def test_an_ae_can_be_recorded_after_the_participant_left_the_study(self, participant, coordinator_site_a, ctcae):
        disposition_record(
            actor=coordinator_site_a,
            participant=participant,
            kind="withdrawn",
            disposition_date=dt.date(2025, 2, 20),
            reason="Moved abroad",
        )
        ae = _record(coordinator_site_a, participant, ctcae, onset="2025-02-25", end="2025-02-26")
        assert ae.pk is not None

    def test_a_serious_ae_opens_its_sae_case_and_the_24_hour_clock(self, participant, coordinator_site_a, ctcae):
        ae = services.adverse_event_record(actor=coordinator_site_a, participant=participant, **serious_kwargs(ctcae))
        case = SAECase.objects.get(adverse_event=ae)
        report = ExpeditedReport.objects.get(case=case)
        assert case.case_number == f"TREG-MS-01-{participant.subject_code}-AE001"
        assert report.kind == "site_24h"
        assert report.due_at == dt.datetime(2025, 3, 3, 8, 30, tzinfo=dt.UTC)


REFUSALS = [
    (
        "serious_without_criterion",
        {"serious": True, "site_aware_at": dt.datetime(2025, 2, 10, tzinfo=dt.UTC)},
        "serious",
    ),
    ("criterion_without_serious", {"hospitalisation": True}, "serious"),
    ("grade_5_not_fatal", {"ctcae_term": "Hypotension", "grade": 5}, "outcome"),
    ("fatal_but_grade_3", {"ctcae_term": "Hypotension", "grade": 3, "outcome": Outcome.FATAL}, "grade"),
    ("end_before_onset", {"onset": "2025-02-10", "end": "2025-02-09"}, "end"),
    ("end_month_before_onset", {"onset": "2025-02-10", "end": "2025-01"}, "end"),
    ("ongoing_with_end", {"ongoing": True, "outcome": Outcome.RECOVERING}, "end"),
    ("ended_without_end_date", {"end": ""}, "end"),
    ("ongoing_but_recovered", {"ongoing": True, "end": ""}, "outcome"),
    ("ended_but_not_recovered", {"outcome": Outcome.NOT_RECOVERED}, "outcome"),
    ("onset_before_consent", {"onset": "2025-01-05", "end": "2025-01-07"}, "onset"),
    ("onset_in_the_future", {"onset": "2025-04-01", "end": ""}, "onset"),
    ("not_a_date", {"onset": "2025-13"}, "onset"),
    ("grade_the_term_lacks", {"grade": 4}, "grade"),
    ("grade_6", {"grade": 6}, "grade"),
    ("causality_off_the_scale", {"causality_product": "maybe"}, "causality_product"),
    (
        "serious_without_awareness",
        {"serious": True, "hospitalisation": True},
        "site_aware_at",
    ),
    ("awareness_in_the_future", {"site_aware_at": dt.datetime(2025, 3, 4, tzinfo=dt.UTC)}, "site_aware_at"),
    ("interrupted_after_the_infusion", {"action_taken": "DRUG INTERRUPTED"}, "action_taken"),
    (
        "infusion_reaction_before_infusion",
        {"category": "INFUSION REACTION", "onset": "2025-01-20", "end": "2025-01-21"},
        "category",
    ),
    ("treatment_details_without_flag", {"treatment_details": "Paracetamol"}, "treatment_given"),
    ("no_verbatim_term", {"verbatim_term": "  "}, "verbatim_term"),
    ("no_outcome", {"outcome": ""}, "outcome"),
]


@pytest.mark.parametrize(("overrides", "field"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_every_refusal_names_the_field_and_saves_nothing(
    participant, coordinator_site_a, ctcae, safety_counts, overrides, field
):
    if isinstance(overrides.get("ctcae_term"), str):
        overrides = {**overrides, "ctcae_term": ctcae[overrides["ctcae_term"]]}
    before = safety_counts()
    with pytest.raises(RuleViolation) as refused:
        _record(coordinator_site_a, participant, ctcae, **overrides)
    assert field in refused.value.message_dict, refused.value.message_dict
    assert safety_counts() == before


def test_all_problems_are_reported_at_once(participant, coordinator_site_a, ctcae):
    with pytest.raises(RuleViolation) as refused:
        _record(coordinator_site_a, participant, ctcae, hospitalisation=True, end="2025-02-01", grade=4)
    assert {"serious", "end", "grade"} <= set(refused.value.message_dict)


def test_a_term_from_another_ctcae_version_is_refused(participant, coordinator_site_a, ctcae):
    v6 = type(ctcae["Headache"]).objects.create(
        version="6.0", term="Headache", soc="Nervous system disorders", grade_1="Mild"
    )
    with pytest.raises(RuleViolation) as refused:
        _record(coordinator_site_a, participant, ctcae, ctcae_term=v6)
    assert "CTCAE v5.0" in refused.value.message_dict["ctcae_term"][0]


class TestAccess:
    def test_a_coordinator_of_another_site_cannot_record(self, participant, coordinator_site_b, ctcae):
        with pytest.raises(PermissionDenied):
            _record(coordinator_site_b, participant, ctcae)
        assert not AdverseEvent.objects.exists()

    def test_a_monitor_cannot_record(self, participant, monitor, ctcae):
        with pytest.raises(PermissionDenied):
            _record(monitor, participant, ctcae)

    def test_a_locked_casebook_refuses_new_aes(self, participant, coordinator_site_a, data_manager, ctcae):
        casebook_set_locked(actor=data_manager, participant=participant, locked=True, reason="Interim analysis")
        with pytest.raises(LockedError):
            _record(coordinator_site_a, participant, ctcae)

    def test_aes_are_collected_from_consent_only(self, study, sites, coordinator_site_a, ctcae, now):
        not_infused = enrolled(study, sites[0], coordinator_site_a)
        ae = _record(coordinator_site_a, not_infused, ctcae, onset="2025-01-20", end="2025-01-21")
        assert ae.treatment_emergent is False


class TestAdverseEventUpdate:
    def test_it_needs_a_reason(self, participant, coordinator_site_a, ctcae):
        ae = _record(coordinator_site_a, participant, ctcae)
        with pytest.raises(RuleViolation) as refused:
            services.adverse_event_update(
                actor=coordinator_site_a, adverse_event=ae, changes={"grade": 2}, reason=" ", expected_version=1
            )
        assert "reason" in refused.value.message_dict

    def test_a_stale_version_is_refused(self, participant, coordinator_site_a, ctcae):
        ae = _record(coordinator_site_a, participant, ctcae)
        services.adverse_event_update(
            actor=coordinator_site_a,
            adverse_event=ae,
            changes={"grade": 2},
            reason="Source checked",
            expected_version=1,
        )
        with pytest.raises(ConflictError):
            services.adverse_event_update(
                actor=coordinator_site_a, adverse_event=ae, changes={"grade": 3}, reason="Again", expected_version=1
            )
        ae.refresh_from_db()
        assert (ae.grade, ae.version) == (2, 2)

    def test_the_edit_is_audited_with_its_reason(self, participant, coordinator_site_a, ctcae):
        ae = _record(coordinator_site_a, participant, ctcae)
        services.adverse_event_update(
            actor=coordinator_site_a,
            adverse_event=ae,
            changes={"grade": 2, "causality_product": "possibly"},
            reason="Investigator review",
            expected_version=1,
        )
        event = AdverseEvent.pgh_event_model.objects.filter(pgh_obj_id=ae.pk, pgh_label="update").get()
        assert event.grade == 2
        assert event.pgh_context.metadata["reason"] == "Investigator review"

    def test_an_inconsistent_edit_saves_nothing(self, participant, coordinator_site_a, ctcae, safety_counts):
        ae = _record(coordinator_site_a, participant, ctcae)
        before = safety_counts()
        with pytest.raises(RuleViolation) as refused:
            services.adverse_event_update(
                actor=coordinator_site_a,
                adverse_event=ae,
                changes={"ongoing": True},
                reason="Still there",
                expected_version=1,
            )
        assert {"end", "outcome"} <= set(refused.value.message_dict)
        assert safety_counts() == before
        ae.refresh_from_db()
        assert (ae.ongoing, ae.version) == (False, 1)

    def test_only_entered_fields_can_be_changed(self, participant, coordinator_site_a, ctcae):
        ae = _record(coordinator_site_a, participant, ctcae)
        with pytest.raises(RuleViolation):
            services.adverse_event_update(
                actor=coordinator_site_a,
                adverse_event=ae,
                changes={"treatment_emergent": False},
                reason="x",
                expected_version=1,
            )

    def test_marking_an_ae_serious_opens_the_case(self, participant, coordinator_site_a, ctcae):
        ae = _record(coordinator_site_a, participant, ctcae, grade=3, end="", ongoing=True, outcome=Outcome.RECOVERING)
        aware = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
        services.adverse_event_update(
            actor=coordinator_site_a,
            adverse_event=ae,
            changes={"serious": True, "hospitalisation": True, "site_aware_at": aware},
            reason="Admitted overnight",
            expected_version=1,
        )
        assert SAECase.objects.get(adverse_event=ae).site_aware_at == aware

    def test_a_case_keeps_its_ae_serious(self, participant, coordinator_site_a, ctcae):
        ae = services.adverse_event_record(actor=coordinator_site_a, participant=participant, **serious_kwargs(ctcae))
        with pytest.raises(RuleViolation) as refused:
            services.adverse_event_update(
                actor=coordinator_site_a,
                adverse_event=ae,
                changes={"serious": False, "hospitalisation": False},
                reason="Not admitted after all",
                expected_version=1,
            )
        assert "serious" in refused.value.message_dict

    def test_a_monitor_cannot_edit(self, participant, coordinator_site_a, monitor, ctcae):
        ae = _record(coordinator_site_a, participant, ctcae)
        with pytest.raises(PermissionDenied):
            services.adverse_event_update(
                actor=monitor, adverse_event=ae, changes={"grade": 2}, reason="x", expected_version=1
            )


class TestDatabaseConstraint:
    """The database holds the rules even for a write that bypasses the services."""

    @pytest.fixture
    def ae(self, participant, coordinator_site_a, ctcae):
        return _record(coordinator_site_a, participant, ctcae)

    @pytest.mark.parametrize(
        "changes",
        [
            {"grade": 6},
            {"hospitalisation": True},
            {"serious": True, "hospitalisation": True},  # no awareness time
            {"ongoing": True},
            {"end": "2025-02-09"},
            {"end": "2025-01"},
            {"grade": 5},
            {"outcome": Outcome.FATAL},
            {"treatment_details": "Paracetamol"},
        ],
    )
    def test_inconsistent_rows_are_refused(self, ae, changes, coordinator_site_a):
        # With the audit context the database requires, so that only the constraint can refuse.
        with (
            pytest.raises(IntegrityError, match="violates check constraint"),
            transaction.atomic(),
            audit_context(actor=coordinator_site_a, reason="bypassing the service"),
        ):
            AdverseEvent.objects.filter(pk=ae.pk).update(**changes)

    def test_partial_end_in_the_onset_month_is_allowed(self, ae, coordinator_site_a):
        with audit_context(actor=coordinator_site_a, reason="bypassing the service"):
            AdverseEvent.objects.filter(pk=ae.pk).update(end="2025-02")
        ae.refresh_from_db()
        assert ae.end == "2025-02"


def test_only_data_entry_roles_record(study, participant, ctcae):
    statistician = member("stat2", study, Role.STATISTICIAN)
    with pytest.raises(PermissionDenied):
        _record(statistician, participant, ctcae)


def test_day_0_is_the_infusions_local_date_at_the_site(study, sites, coordinator_site_a, ctcae, now):
    """An infusion at 20:00 UTC on 3 February is on 4 February in Tokyo: an AE that started on the 3rd
    began before the infusion there (docs/domain.md §1.6)."""
    site = sites[0]
    site.timezone = "Asia/Tokyo"
    with audit_context(actor=coordinator_site_a, reason="site is in Japan"):
        site.save()
    tokyo = infused(study, site, coordinator_site_a, start=dt.datetime(2025, 2, 3, 20, 0, tzinfo=dt.UTC))
    before = _record(coordinator_site_a, tokyo, ctcae, onset="2025-02-03", end="2025-02-03")
    day0 = _record(coordinator_site_a, tokyo, ctcae, onset="2025-02-04", end="2025-02-04")
    assert before.treatment_emergent is False
    assert day0.treatment_emergent is True
