"""SAE cases and expedited reports (docs/domain.md Part A §1.1-1.2, §2.1-2.2), with time pinned at the
clock boundaries (docs/style.md §16): the site's 24 h clock, the sponsor's assessment (never downgrading
the investigator's causality), the 7/15-day SUSAR reports, the upgrade clock and follow-ups."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied

from safety import services
from safety.models import (
    ExpeditedReport,
    Outcome,
    ReferenceSafetyInformation,
    ReportKind,
    SAECase,
    SAECaseVersion,
    StudySafetyProfile,
)
from tests.safety.conftest import ae_kwargs, serious_kwargs
from trials.errors import ConflictError, RuleViolation

UTC = dt.UTC
SECOND = dt.timedelta(seconds=1)


def _reports(case) -> dict[str, ExpeditedReport]:
    return {r.kind: r for r in ExpeditedReport.objects.filter(case=case)}


@pytest.fixture
def sae(participant, coordinator_site_a, ctcae):
    """A serious (hospitalised) grade 3 CRS, related per the investigator; site aware 2025-03-02 08:30 UTC."""
    ae = services.adverse_event_record(actor=coordinator_site_a, participant=participant, **serious_kwargs(ctcae))
    return ae, SAECase.objects.get(adverse_event=ae)


@pytest.fixture
def sent(sae, coordinator_site_a, time_machine):
    """The site reports the case to the sponsor on 2025-03-03 at 07:00 UTC (on time)."""
    ae, case = sae
    time_machine.move_to(dt.datetime(2025, 3, 3, 7, 0, tzinfo=UTC), tick=False)
    services.sae_report_to_sponsor(actor=coordinator_site_a, case=case, narrative="Admitted with CRS on day 26.")
    case.refresh_from_db()
    return ae, case


def _assess(actor, case, **kwargs):
    values = {"sponsor_causality": "possibly", "expected": False, "expectedness_rationale": "Not in the IB"}
    values.update(kwargs)
    return services.sae_sponsor_assess(actor=actor, case=case, **values)


class TestGradeThreeCRSBecomesSerious:
    """The issue's main path: a grade 3 CRS becomes serious, the SAE and its reports appear."""

    def test_the_case_the_clocks_and_the_reports(
        self, participant, coordinator_site_a, medical_monitor, ctcae, time_machine
    ):
        ae = services.adverse_event_record(
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
        services.crs_assessment_record(
            actor=coordinator_site_a,
            adverse_event=ae,
            assessed_at=dt.datetime(2025, 3, 2, 22, 0, tzinfo=UTC),
            max_temperature_c=Decimal("39.4"),
            hypotension=True,
            vasopressors=1,
            oxygen_device="blow_by",
        )
        ae.refresh_from_db()
        assert ae.grade == 3
        aware = dt.datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
        services.adverse_event_update(
            actor=coordinator_site_a,
            adverse_event=ae,
            changes={"serious": True, "hospitalisation": True, "site_aware_at": aware},
            reason="Transferred to ICU for pressors",
            expected_version=ae.version,
        )
        case = SAECase.objects.get(adverse_event=ae)
        site = _reports(case)[ReportKind.SITE_24H]
        assert site.due_at == aware + dt.timedelta(hours=24)
        assert site.status == "pending"

        time_machine.move_to(dt.datetime(2025, 3, 4, 8, 0, tzinfo=UTC), tick=False)
        services.sae_report_to_sponsor(actor=coordinator_site_a, case=case, narrative="CRS grade 3 on day 26.")
        site.refresh_from_db()
        assert (site.status, site.days_late) == ("submitted", 0)

        StudySafetyProfile.objects.create(study=participant.study, sponsor_time_zone="America/New_York")
        _assess(medical_monitor, case)
        case.refresh_from_db()
        assert case.is_susar is True
        fifteen = _reports(case)[ReportKind.FIFTEEN_DAY]
        # Day 0 = 2025-03-04 in New York (03:00 EST); due 15 calendar days later, on 2025-03-19, the
        # last on-time instant being New York midnight (EDT since 9 March) minus 1 microsecond.
        assert (fifteen.day0, fifteen.due_date) == (dt.date(2025, 3, 4), dt.date(2025, 3, 19))
        assert fifteen.due_at == dt.datetime(2025, 3, 20, 3, 59, 59, 999999, tzinfo=UTC)
        assert fifteen.time_zone == "America/New_York"


class TestSiteClock:
    def test_the_24_hour_clock_starts_at_site_awareness(self, sae):
        _, case = sae
        report = _reports(case)[ReportKind.SITE_24H]
        assert report.started_at == dt.datetime(2025, 3, 2, 8, 30, tzinfo=UTC)
        assert report.due_at == dt.datetime(2025, 3, 3, 8, 30, tzinfo=UTC)
        assert report.recipient.startswith("Sponsor")

    @pytest.mark.parametrize(
        ("at", "days_late"),
        [
            (dt.datetime(2025, 3, 3, 8, 30, tzinfo=UTC), 0),  # exactly 24 h: on time
            (dt.datetime(2025, 3, 3, 8, 30, 1, tzinfo=UTC), 1),  # one second later: late
            (dt.datetime(2025, 3, 4, 8, 30, 1, tzinfo=UTC), 2),
        ],
    )
    def test_the_initial_report_stops_it_on_time_or_late(self, sae, coordinator_site_a, time_machine, at, days_late):
        _, case = sae
        time_machine.move_to(at, tick=False)
        version = services.sae_report_to_sponsor(actor=coordinator_site_a, case=case, narrative="Details.")
        report = _reports(case)[ReportKind.SITE_24H]
        assert (report.status, report.submitted_at, report.days_late) == ("submitted", at, days_late)
        case.refresh_from_db()
        assert case.sponsor_received_at == at == version.received_at
        assert version.number == 0
        assert version.previous is None
        assert version.snapshot["ctcae_term"] == "Cytokine release syndrome"

    def test_the_initial_report_needs_a_narrative_and_goes_once(self, sae, coordinator_site_a):
        _, case = sae
        with pytest.raises(RuleViolation) as refused:
            services.sae_report_to_sponsor(actor=coordinator_site_a, case=case, narrative=" ")
        assert "narrative" in refused.value.message_dict
        services.sae_report_to_sponsor(actor=coordinator_site_a, case=case, narrative="Details.")
        with pytest.raises(RuleViolation):
            services.sae_report_to_sponsor(actor=coordinator_site_a, case=case, narrative="Again.")
        assert SAECaseVersion.objects.count() == 1

    def test_another_sites_coordinator_cannot_report_it(self, sae, coordinator_site_b):
        with pytest.raises(PermissionDenied):
            services.sae_report_to_sponsor(actor=coordinator_site_b, case=sae[1], narrative="x")


class TestSponsorAssessment:
    def test_a_related_unexpected_serious_event_is_a_susar_with_a_15_day_report(self, sent, medical_monitor):
        _, case = sent
        _assess(medical_monitor, case)
        case.refresh_from_db()
        assert (case.is_susar, case.sponsor_causality, case.expected) == (True, "possibly", False)
        report = _reports(case)[ReportKind.FIFTEEN_DAY]
        assert (report.day0, report.due_date) == (dt.date(2025, 3, 3), dt.date(2025, 3, 18))
        assert report.due_at == dt.datetime(2025, 3, 18, 23, 59, 59, 999999, tzinfo=UTC)
        assert report.recipient == "Regulatory authorities"

    def test_a_life_threatening_susar_is_due_in_7_days(
        self, participant, coordinator_site_a, medical_monitor, ctcae, time_machine
    ):
        ae = services.adverse_event_record(
            actor=coordinator_site_a,
            participant=participant,
            **serious_kwargs(ctcae, grade=4, life_threatening=True),
        )
        case = SAECase.objects.get(adverse_event=ae)
        services.sae_report_to_sponsor(actor=coordinator_site_a, case=case, narrative="Intubated.")
        _assess(medical_monitor, case)
        report = _reports(case)[ReportKind.SEVEN_DAY]
        assert (report.day0, report.due_date) == (dt.date(2025, 3, 3), dt.date(2025, 3, 10))
        assert ReportKind.FIFTEEN_DAY not in _reports(case)

    def test_the_sponsor_cannot_downgrade_the_investigators_causality(self, sent, medical_monitor, safety_counts):
        ae, case = sent
        before = safety_counts()
        with pytest.raises(RuleViolation) as refused:
            _assess(medical_monitor, case, sponsor_causality="unlikely")
        assert "cannot downgrade" in refused.value.message_dict["sponsor_causality"][0]
        assert safety_counts() == before
        case.refresh_from_db()
        assert case.assessed_at is None

    def test_a_disagreement_with_its_rationale_keeps_both_opinions_and_the_case_related(self, sent, medical_monitor):
        ae, case = sent
        _assess(
            medical_monitor, case, sponsor_causality="unlikely", causality_rationale="Concurrent sepsis explains it"
        )
        case.refresh_from_db()
        ae.refresh_from_db()
        assert (ae.causality_product, case.sponsor_causality) == ("probably", "unlikely")
        assert case.is_susar is True
        assert "related" in case.susar_reason
        assert ReportKind.FIFTEEN_DAY in _reports(case)

    def test_the_sponsor_may_upgrade_causality(self, participant, coordinator_site_a, medical_monitor, ctcae):
        ae = services.adverse_event_record(
            actor=coordinator_site_a, participant=participant, **serious_kwargs(ctcae, causality_product="unlikely")
        )
        case = SAECase.objects.get(adverse_event=ae)
        services.sae_report_to_sponsor(actor=coordinator_site_a, case=case, narrative="Details.")
        _assess(medical_monitor, case, sponsor_causality="possibly")
        case.refresh_from_db()
        assert case.is_susar is True

    def test_an_event_expected_by_the_rsi_in_force_is_not_a_susar(self, sent, medical_monitor, study):
        _, case = sent
        ReferenceSafetyInformation.objects.create(
            study=study,
            version="IB 3.0",
            effective_from=dt.date(2024, 12, 1),
            expected_terms={"Cytokine release syndrome": 3},
        )
        services.sae_sponsor_assess(actor=medical_monitor, case=case, sponsor_causality="possibly")
        case.refresh_from_db()
        assert (case.expected, case.rsi_expected, case.rsi_versions, case.is_susar) == (True, True, "IB 3.0", False)
        assert set(_reports(case)) == {ReportKind.SITE_24H}

    def test_an_rsi_that_took_effect_after_onset_does_not_apply(self, sent, medical_monitor, study):
        _, case = sent
        ReferenceSafetyInformation.objects.create(
            study=study,
            version="IB 4.0",
            effective_from=dt.date(2025, 3, 2),
            expected_terms={"Cytokine release syndrome": 3},
        )
        services.sae_sponsor_assess(actor=medical_monitor, case=case, sponsor_causality="possibly")
        case.refresh_from_db()
        assert (case.rsi_expected, case.is_susar) == (False, True)

    def test_disagreeing_with_the_rsi_needs_a_rationale(self, sent, medical_monitor, study):
        _, case = sent
        ReferenceSafetyInformation.objects.create(
            study=study,
            version="IB 3.0",
            effective_from=dt.date(2024, 12, 1),
            expected_terms={"Cytokine release syndrome": 3},
        )
        with pytest.raises(RuleViolation) as refused:
            services.sae_sponsor_assess(actor=medical_monitor, case=case, sponsor_causality="possibly", expected=False)
        assert "expectedness_rationale" in refused.value.message_dict

    def test_without_an_rsi_the_monitor_states_expectedness(self, sent, medical_monitor):
        with pytest.raises(RuleViolation) as refused:
            services.sae_sponsor_assess(actor=medical_monitor, case=sent[1], sponsor_causality="possibly")
        assert "expected" in refused.value.message_dict

    @pytest.mark.parametrize("who", ["coordinator_site_a", "monitor"])
    def test_only_the_medical_monitor_assesses(self, sent, request, who):
        with pytest.raises(PermissionDenied):
            _assess(request.getfixturevalue(who), sent[1])

    def test_nothing_is_assessed_before_the_sponsor_received_it(self, sae, medical_monitor):
        with pytest.raises(RuleViolation):
            _assess(medical_monitor, sae[1])

    def test_a_reassessment_needs_a_reason_and_the_current_version(self, sent, medical_monitor):
        _, case = sent
        _assess(medical_monitor, case)
        case.refresh_from_db()
        with pytest.raises(RuleViolation) as refused:
            _assess(medical_monitor, case, expected=True)
        assert "reason" in refused.value.message_dict
        with pytest.raises(ConflictError):
            _assess(medical_monitor, case, expected=True, reason="IB update", expected_version=case.version - 1)

    def test_a_case_that_is_no_longer_a_susar_cancels_its_pending_report_and_reinstates_it_later(
        self, sent, medical_monitor
    ):
        _, case = sent
        _assess(medical_monitor, case)
        case.refresh_from_db()
        _assess(
            medical_monitor, case, expected=True, reason="Listed in the IB after all", expected_version=case.version
        )
        report = _reports(case)[ReportKind.FIFTEEN_DAY]
        assert report.status == "cancelled"
        assert "Not a SUSAR" in report.note
        case.refresh_from_db()
        _assess(
            medical_monitor,
            case,
            expected=False,
            reason="IB listing is for grade 1-2 only",
            expected_version=case.version,
        )
        report.refresh_from_db()
        assert report.status == "pending"
        assert report.due_date == dt.date(2025, 3, 18)


class TestUpgradeAndFollowUp:
    def test_an_upgrade_to_life_threatening_starts_a_new_7_day_clock(
        self, sent, coordinator_site_a, medical_monitor, time_machine
    ):
        ae, case = sent
        _assess(medical_monitor, case)
        time_machine.move_to(dt.datetime(2025, 3, 8, 12, 0, tzinfo=UTC), tick=False)
        services.adverse_event_update(
            actor=coordinator_site_a,
            adverse_event=ae,
            changes={"life_threatening": True},
            reason="Intubated on 7 March",
            expected_version=ae.version,
        )
        version = services.sae_follow_up_submit(actor=coordinator_site_a, case=case, narrative="Intubated, ICU.")
        reports = _reports(case)
        upgrade = reports[ReportKind.UPGRADE_SEVEN_DAY]
        assert (upgrade.day0, upgrade.due_date) == (dt.date(2025, 3, 8), dt.date(2025, 3, 15))
        assert upgrade.case_version == version
        # The original 15-day clock still runs; the case is due at the earlier of the two.
        assert reports[ReportKind.FIFTEEN_DAY].status == "pending"
        assert min(r.due_at for r in reports.values() if r.status == "pending") == upgrade.due_at
        assert ReportKind.FOLLOW_UP not in reports

    def test_new_information_after_the_initial_report_needs_a_15_day_follow_up(
        self, sent, coordinator_site_a, medical_monitor, time_machine
    ):
        ae, case = sent
        _assess(medical_monitor, case)
        time_machine.move_to(dt.datetime(2025, 3, 10, 9, 0, tzinfo=UTC), tick=False)
        services.expedited_report_submit(actor=medical_monitor, report=_reports(case)[ReportKind.FIFTEEN_DAY])
        time_machine.move_to(dt.datetime(2025, 3, 12, 16, 0, tzinfo=UTC), tick=False)
        services.adverse_event_update(
            actor=coordinator_site_a,
            adverse_event=ae,
            changes={"ongoing": False, "end": "2025-03-11", "outcome": Outcome.RECOVERED},
            reason="Resolved",
            expected_version=ae.version,
        )
        services.sae_follow_up_submit(actor=coordinator_site_a, case=case, narrative="Resolved on 11 March.")
        follow_up = _reports(case)[ReportKind.FOLLOW_UP]
        assert (follow_up.day0, follow_up.due_date) == (dt.date(2025, 3, 12), dt.date(2025, 3, 27))

    def test_follow_ups_form_a_chain(self, sent, coordinator_site_a):
        _, case = sent
        first = services.sae_follow_up_submit(actor=coordinator_site_a, case=case, narrative="Labs.")
        second = services.sae_follow_up_submit(actor=coordinator_site_a, case=case, narrative="Discharged.")
        initial = SAECaseVersion.objects.get(case=case, number=0)
        assert (first.number, first.previous, second.number, second.previous) == (1, initial, 2, first)
        # No SUSAR report went out yet, so the new information joins the initial report: no follow-up clock.
        assert ReportKind.FOLLOW_UP not in _reports(case)

    def test_a_follow_up_needs_the_initial_report(self, sae, coordinator_site_a):
        with pytest.raises(RuleViolation):
            services.sae_follow_up_submit(actor=coordinator_site_a, case=sae[1], narrative="x")


class TestReportSubmission:
    @pytest.fixture
    def fifteen(self, sent, medical_monitor):
        _assess(medical_monitor, sent[1])
        return _reports(sent[1])[ReportKind.FIFTEEN_DAY]

    @pytest.mark.parametrize(
        ("at", "days_late"),
        [
            (dt.datetime(2025, 3, 18, 23, 59, 59, tzinfo=UTC), 0),
            (dt.datetime(2025, 3, 19, 0, 0, 0, tzinfo=UTC), 1),
            (dt.datetime(2025, 3, 21, 10, 0, tzinfo=UTC), 3),
        ],
    )
    def test_it_records_the_lateness(self, fifteen, medical_monitor, time_machine, at, days_late):
        time_machine.move_to(at, tick=False)
        services.expedited_report_submit(actor=medical_monitor, report=fifteen, acknowledgement="EV-123")
        fifteen.refresh_from_db()
        assert (fifteen.status, fifteen.submitted_at, fifteen.days_late, fifteen.acknowledgement) == (
            "submitted",
            at,
            days_late,
            "EV-123",
        )

    def test_it_is_submitted_once(self, fifteen, medical_monitor):
        services.expedited_report_submit(actor=medical_monitor, report=fifteen)
        with pytest.raises(RuleViolation):
            services.expedited_report_submit(actor=medical_monitor, report=fifteen)

    def test_a_coordinator_cannot_submit_regulatory_reports(self, fifteen, coordinator_site_a):
        with pytest.raises(PermissionDenied):
            services.expedited_report_submit(actor=coordinator_site_a, report=fifteen)

    def test_the_site_report_is_not_submitted_here(self, sae, medical_monitor):
        with pytest.raises(RuleViolation):
            services.expedited_report_submit(actor=medical_monitor, report=_reports(sae[1])[ReportKind.SITE_24H])

    def test_a_submission_time_in_the_future_is_refused(self, fifteen, medical_monitor):
        with pytest.raises(RuleViolation) as refused:
            services.expedited_report_submit(
                actor=medical_monitor, report=fifteen, submitted_at=dt.datetime(2025, 4, 1, tzinfo=UTC)
            )
        assert "submitted_at" in refused.value.message_dict
