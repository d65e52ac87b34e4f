"""Data cuts of type 1 diabetes (IDAA1c, MMTT peak C-peptide) and multiple sclerosis (NEDA-3) studies:
the extra frames each indication needs and remission derived from them with their units."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from analytics import datacut, services
from tests.factories import SiteFactory, build_study, infused, member
from trials import services as trial_services
from trials.models import Indication, Role

CUT = dt.date(2026, 6, 30)


def _study(indication: str, code: str):
    site = SiteFactory(code="S01")
    study = build_study(code=code, indication=indication, sites=[site], capacity=4)
    coordinator = member(f"{code}-coord", study, Role.COORDINATOR, site)
    statistician = member(f"{code}-stats", study, Role.STATISTICIAN)
    return study, site, coordinator, statistician


def _participant(study, site, coordinator, i: int):
    on = dt.date(2024, 1, 8) + dt.timedelta(days=7 * i)
    start = dt.datetime.combine(on + dt.timedelta(days=28), dt.time(9, 0), tzinfo=dt.UTC)
    participant = infused(study, site, coordinator, on=on, start=start)
    visits = [
        v
        for v in participant.visits.select_related("definition").order_by("planned_date")
        if "disease_activity" in v.definition.forms_due
    ]
    return participant, [
        trial_services.visit_record(actor=coordinator, visit=v, actual_date=v.planned_date) for v in visits
    ]


def _derive(cut):
    frames = services.datacut_frames(cut)
    rows = []
    derived = datacut.derive(
        frames,
        indication=cut.study.indication,
        definition=services.definition_of(cut.definition, cut.study.indication),
        sap=datacut.sap_options(cut.definition.sap),
        follow_up_days=730,
        cut_date=cut.cut_date,
        endpoint="time_to_relapse",
        on_assessment=rows.append,
    )
    return frames, derived, rows


class TestTypeOneDiabetes:
    def test_a_day_0_assessment_is_the_baseline_not_an_outcome(self, db):
        study, site, coordinator, statistician = _study(Indication.T1D, "treg-t1d-c")
        participant, visits = _participant(study, site, coordinator, 0)
        day0 = trial_services.visit_add_unscheduled(
            actor=coordinator,
            participant=participant,
            actual_date=participant.infusions.get().infusion_date,
            reason="pre-dose baseline",
        )
        for visit in [day0, *visits]:
            trial_services.assessment_record(
                actor=coordinator,
                visit=visit,
                values={"hba1c": Decimal("6.5"), "hba1c_unit": "%", "insulin_u_per_kg_day": Decimal("0.3")},
            )
        services.remission_definition_set(
            actor=statistician,
            study=study,
            name="IDAA1c",
            rule="idaa1c",
            parameters={},
            sap={"non_responders": "censor"},
            reason="SAP",
        )

        cut = services.datacut_create(actor=statistician, study=study, cut_date=CUT)
        _, derived, rows = _derive(cut)

        assert rows[0].study_day == 0
        assert rows[0].note == "baseline (day 0): the reference, not an outcome"
        assert rows[0].in_remission is True
        assert derived.adequate == 5
        (record,) = derived.records
        assert record["adequate_assessments"] == 5
        assert record["days_in_remission"] == 730 - 28  # from the first post-dose assessment

    def test_idaa1c_converts_ifcc_hba1c_before_the_threshold(self, db):
        study, site, coordinator, statistician = _study(Indication.T1D, "treg-t1d-a")
        participant, visits = _participant(study, site, coordinator, 0)
        # 53 mmol/mol = 7.0 % (DCCT); + 4 x 0.45 = 8.8 <= 9: partial remission. 7.0 mmol/mol is not allowed,
        # so the loss is a % value: 8.5 % + 4 x 0.3 = 9.7.
        values = [("53", "mmol/mol", "0.45")] * 3 + [("8.5", "%", "0.30"), ("6.5", "%", "0.40")]
        for visit, (hba1c, unit, dose) in zip(visits, values, strict=True):
            trial_services.assessment_record(
                actor=coordinator,
                visit=visit,
                values={"hba1c": Decimal(hba1c), "hba1c_unit": unit, "insulin_u_per_kg_day": Decimal(dose)},
            )
        services.remission_definition_set(
            actor=statistician,
            study=study,
            name="IDAA1c",
            rule="idaa1c",
            parameters={},
            sap={"non_responders": "censor"},
            reason="SAP",
        )

        cut = services.datacut_create(actor=statistician, study=study, cut_date=CUT)
        frames, derived, rows = _derive(cut)

        assert [r.in_remission for r in rows] == [True, True, True, False, True]
        assert '"hba1c_percent"' in rows[0].derived_json
        assert '"idaa1c": ["8.' in rows[0].derived_json
        (record,) = derived.records
        assert (record["duration"], record["event"]) == (365, 1)
        assert "mmtt" in frames

    def test_insulin_independence_is_derived_from_the_insulin_log(self, db):
        study, site, coordinator, statistician = _study(Indication.T1D, "treg-t1d-i")
        participant, visits = _participant(study, site, coordinator, 0)
        day0 = participant.infusions.get().infusion_date
        # 40 U/day at infusion, stopped on day 60, restarted on day 300 (a step function of changes).
        for day, units in ((0, "40"), (60, "0"), (300, "10")):
            trial_services.insulin_dose_record(
                actor=coordinator,
                participant=participant,
                effective_date=day0 + dt.timedelta(days=day),
                total_daily_units=Decimal(units),
                source="diary",
            )
        for visit in visits:
            trial_services.assessment_record(
                actor=coordinator,
                visit=visit,
                values={"hba1c": Decimal("6.5"), "hba1c_unit": "%", "insulin_u_per_kg_day": Decimal("0.1")},
            )
        services.remission_definition_set(
            actor=statistician,
            study=study,
            name="Insulin independence",
            rule="insulin_independence",
            parameters={"min_insulin_free_days": 14},
            sap={"non_responders": "censor"},
            reason="SAP",
        )

        cut = services.datacut_create(actor=statistician, study=study, cut_date=CUT)
        frames, derived, rows = _derive(cut)

        assert frames["insulin"].rows == 3
        days = [r.study_day for r in rows]
        # Insulin-free for >= 14 days (day 60 to day 299) with HbA1c 6.5 % < 7 %.
        assert [r.in_remission for r in rows] == [74 <= d < 300 for d in days]
        assert any(r.in_remission for r in rows)
        assert not all(r.in_remission for r in rows)
        free_row = next(r for r in rows if r.in_remission)
        assert f'"insulin_free_days": [{free_row.study_day - 60 + 1}, "days"]' in free_row.derived_json
        (record,) = derived.records
        assert record["responder"]

    def test_mmtt_peak_uses_each_sample_in_its_own_unit(self, db):
        study, site, coordinator, statistician = _study(Indication.T1D, "treg-t1d-b")
        participant, visits = _participant(study, site, coordinator, 0)
        for visit in visits:
            trial_services.assessment_record(
                actor=coordinator,
                visit=visit,
                values={"hba1c": Decimal("7.0"), "hba1c_unit": "%", "insulin_u_per_kg_day": Decimal("0.5")},
            )
        # Peak 0.7 ng/mL x 0.331 = 0.2317 nmol/L >= 0.2 at d28; 150 pmol/L = 0.15 nmol/L < 0.2 at month 3.
        trial_services.mmtt_record(
            actor=coordinator, visit=visits[0], samples=[(0, Decimal("0.3")), (90, Decimal("0.7"))], unit="ng/mL"
        )
        trial_services.mmtt_record(
            actor=coordinator, visit=visits[1], samples=[(0, Decimal("80")), (90, Decimal("150"))], unit="pmol/L"
        )
        services.remission_definition_set(
            actor=statistician,
            study=study,
            name="C-peptide",
            rule="mmtt_peak_c_peptide",
            parameters={},
            sap={"non_responders": "censor"},
            reason="SAP",
        )

        cut = services.datacut_create(actor=statistician, study=study, cut_date=CUT)
        frames, derived, rows = _derive(cut)

        assert frames["mmtt"].rows == 4
        assert [(r.visit_id, r.in_remission) for r in rows] == [(visits[0].pk, True), (visits[1].pk, False)]
        assert '"c_peptide_peak": ["0.2317' in rows[0].derived_json
        (record,) = derived.records
        assert (record["duration"], record["event"]) == (91, 1)


class TestMultipleSclerosis:
    def test_neda3_over_the_year_before_each_visit(self, db):
        study, site, coordinator, statistician = _study(Indication.MS, "treg-ms-a")
        participant, visits = _participant(study, site, coordinator, 0)
        infusion = participant.infusions.get().infusion_date
        for visit in visits:
            trial_services.assessment_record(actor=coordinator, visit=visit, values={"edss": Decimal("2.0")})
            trial_services.mri_record(
                actor=coordinator,
                visit=visit,
                scan_date=visit.actual_date,
                new_or_enlarging_t2=0,
                gd_enhancing=0,
            )
        # A relapse on day 300: NEDA lost at month 12 (day 365) and regained by month 24 (window 365-730).
        trial_services.relapse_record(
            actor=coordinator,
            participant=participant,
            onset_date=infusion + dt.timedelta(days=300),
            steroid_treated=True,
            confirmed_by_examination=True,
        )
        services.remission_definition_set(
            actor=statistician,
            study=study,
            name="NEDA-3",
            rule="neda3",
            parameters={"confirmation_weeks": 24},
            sap={"non_responders": "censor", "neda_window_days": 365},
            reason="SAP",
        )

        cut = services.datacut_create(actor=statistician, study=study, cut_date=CUT)
        frames, derived, rows = _derive(cut)

        assert (frames["mri"].rows, frames["relapses"].rows) == (5, 1)
        assert [r.in_remission for r in rows] == [True, True, True, False, True]
        assert '"relapse_free": [false' in rows[3].derived_json
        (record,) = derived.records
        # The dated relapse is the event, before the visit that showed it.
        assert (record["duration"], record["event"], record["reason"]) == (300, 1, "relapse")

    def test_a_visit_without_mri_in_its_window_is_not_evaluable(self, db):
        from tests.factories import admin_change
        from trials.models import VisitDefinition

        study, site, coordinator, statistician = _study(Indication.MS, "treg-ms-b")
        with admin_change("MRI due at every disease-activity visit"):
            for definition in VisitDefinition.objects.filter(study=study, forms_due__contains=["disease_activity"]):
                definition.forms_due = [*definition.forms_due, "mri"]
                definition.save()
        participant, visits = _participant(study, site, coordinator, 0)
        for visit in visits:
            trial_services.assessment_record(actor=coordinator, visit=visit, values={"edss": Decimal("1.5")})
        services.remission_definition_set(
            actor=statistician,
            study=study,
            name="NEDA-3",
            rule="neda3",
            parameters={},
            sap={"non_responders": "event_at_first_assessment"},
            reason="SAP",
        )

        cut = services.datacut_create(actor=statistician, study=study, cut_date=CUT)
        _, derived, rows = _derive(cut)

        assert len(rows) == 5
        assert all(not r.adequate for r in rows)
        assert rows[0].note.startswith("not evaluable: no MRI")
        (record,) = derived.records
        assert record["adequate_assessments"] == 0

    def test_neda3_is_assessed_where_an_mri_is_due_and_day_0_is_the_baseline(self, db):
        from tests.factories import admin_change
        from trials.models import VisitDefinition

        study, site, coordinator, statistician = _study(Indication.MS, "treg-ms-c")
        with admin_change("MRI at months 6, 12 and 24"):
            for definition in VisitDefinition.objects.filter(study=study, code__in=["m6", "m12", "m24"]):
                definition.forms_due = [*definition.forms_due, "mri"]
                definition.save()
        participant, visits = _participant(study, site, coordinator, 0)
        infusion = participant.infusions.get().infusion_date
        day0 = trial_services.visit_add_unscheduled(
            actor=coordinator, participant=participant, actual_date=infusion, reason="baseline EDSS"
        )
        trial_services.assessment_record(actor=coordinator, visit=day0, values={"edss": Decimal("2.0")})
        for visit in visits:
            trial_services.assessment_record(actor=coordinator, visit=visit, values={"edss": Decimal("2.0")})
            if visit.definition.code in ("m6", "m12", "m24"):
                trial_services.mri_record(
                    actor=coordinator, visit=visit, scan_date=visit.actual_date, new_or_enlarging_t2=0, gd_enhancing=0
                )
        trial_services.relapse_record(
            actor=coordinator,
            participant=participant,
            onset_date=infusion + dt.timedelta(days=100),
            steroid_treated=False,
            confirmed_by_examination=True,
        )
        services.remission_definition_set(
            actor=statistician,
            study=study,
            name="NEDA-3",
            rule="neda3",
            parameters={},
            sap={"non_responders": "censor"},
            reason="SAP",
        )

        cut = services.datacut_create(actor=statistician, study=study, cut_date=CUT)
        _, derived, rows = _derive(cut)

        # The three MRI visits; the day-0 EDSS (baseline), day 28 and month 3 owe no scan and are not rows.
        assert [r.study_day for r in rows] == [182, 365, 730]
        assert [r.in_remission for r in rows] == [False, False, True]
        assert derived.adequate == 3
        (record,) = derived.records
        # The relapse on day 100 is an event: the visits without a scan due are not missed visits.
        assert (record["duration"], record["event"], record["reason"]) == (100, 1, "relapse")
