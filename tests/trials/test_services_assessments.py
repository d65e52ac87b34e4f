"""Disease-activity assessments per indication (MS, T1D, RA), MRI reads, MMTTs and relapses: required
fields, physiological ranges at their boundaries, and forms that belong to another indication."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tests.factories import admin_change, consented, infused, screened
from tests.trials.conftest import CLINICAL_TODAY
from trials import services
from trials.errors import LockedError, RuleViolation
from trials.models import (
    DiseaseAssessment,
    Indication,
    MMTTSample,
    MRIRead,
    Participant,
    Relapse,
    Study,
    Visit,
)

VISIT_DATE = dt.date(2025, 3, 3)  # day 28 of a participant infused on 2025-02-03

VALID = {
    Indication.MS: {"edss": Decimal("3.5")},
    Indication.T1D: {"hba1c": Decimal("7.2"), "hba1c_unit": "%", "insulin_u_per_kg_day": Decimal("0.45")},
    Indication.RA: {
        "tender_joints_28": 8,
        "swollen_joints_28": 5,
        "crp": Decimal("12.5"),
        "crp_unit": "mg/L",
        "esr_mm_h": 30,
        "patient_global_mm": 55,
        "evaluator_global_mm": 40,
    },
}


def _done_visit(study, site, actor) -> Visit:
    participant = infused(study, site, actor)
    visit = participant.visits.get(definition__code="d28")
    return services.visit_record(actor=actor, visit=visit, actual_date=VISIT_DATE)


class _VisitsByIndication(dict):
    """A done day-28 visit in a study of the indication asked for, built on first use."""

    def __init__(self, studies, site, actor):
        super().__init__()
        self.studies, self.site, self.actor = studies, site, actor

    def __missing__(self, indication):
        self[indication] = _done_visit(self.studies[indication](), self.site, self.actor)
        return self[indication]


@pytest.fixture
def visits(request, sites, coordinator_site_a):
    studies = {
        Indication.MS: lambda: request.getfixturevalue("study"),
        Indication.T1D: lambda: request.getfixturevalue("t1d_study"),
        Indication.RA: lambda: request.getfixturevalue("ra_study"),
    }
    return _VisitsByIndication(studies, sites[0], coordinator_site_a)


@pytest.fixture
def ms_visit(study, sites, coordinator_site_a):
    return _done_visit(study, sites[0], coordinator_site_a)


@pytest.fixture
def t1d_visit(t1d_study, sites, coordinator_site_a):
    return _done_visit(t1d_study, sites[0], coordinator_site_a)


def _assess(visit, actor, values, **kwargs):
    return services.assessment_record(actor=actor, visit=visit, values=values, **kwargs)


# ---------------------------------------------------------------------------------------------
# Required fields and fields of another indication
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("indication", [Indication.MS, Indication.T1D, Indication.RA])
def test_it_records_the_assessment_of_each_indication(visits, coordinator_site_a, indication):
    assessment = _assess(visits[indication], coordinator_site_a, VALID[indication])

    assessment.refresh_from_db()
    assert assessment.assessment_date == VISIT_DATE
    for field, value in VALID[indication].items():
        assert getattr(assessment, field) == value


@pytest.mark.parametrize(
    ("indication", "missing"),
    [
        (Indication.MS, ["edss"]),
        (Indication.T1D, ["hba1c_unit"]),
        (Indication.T1D, ["insulin_u_per_kg_day"]),
        (Indication.RA, ["crp", "crp_unit"]),
        (Indication.RA, ["tender_joints_28", "evaluator_global_mm"]),
    ],
)
def test_it_refuses_an_assessment_missing_a_required_field(visits, coordinator_site_a, row_counts, indication, missing):
    visit = visits[indication]
    values = {k: v for k, v in VALID[indication].items() if k not in missing}
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _assess(visit, coordinator_site_a, values)

    assert exc.value.message_dict == dict.fromkeys(missing, ["This field is required for this indication."])
    assert row_counts() == before


@pytest.mark.parametrize(
    ("indication", "foreign", "label"),
    [
        (Indication.MS, {"hba1c": Decimal("7")}, "Multiple sclerosis"),
        (Indication.MS, {"tender_joints_28": 3}, "Multiple sclerosis"),
        (Indication.T1D, {"edss": Decimal("2")}, "Type 1 diabetes"),
        (Indication.T1D, {"crp": Decimal("4"), "crp_unit": "mg/L"}, "Type 1 diabetes"),
        (Indication.RA, {"edss": Decimal("2")}, "Rheumatoid arthritis"),
        (Indication.RA, {"insulin_u_per_kg_day": Decimal("0.5")}, "Rheumatoid arthritis"),
    ],
)
def test_it_refuses_fields_of_another_indication(visits, coordinator_site_a, row_counts, indication, foreign, label):
    visit = visits[indication]
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _assess(visit, coordinator_site_a, {**VALID[indication], **foreign})

    assert exc.value.message_dict == dict.fromkeys(foreign, [f"Not collected for {label}."])
    assert row_counts() == before


# ---------------------------------------------------------------------------------------------
# Physiological ranges, at each boundary
# ---------------------------------------------------------------------------------------------

ACCEPTED = [
    (Indication.MS, {"edss": Decimal("0")}),
    (Indication.MS, {"edss": Decimal("10")}),
    (Indication.MS, {"edss": Decimal("6.5")}),
    (Indication.T1D, {"hba1c": Decimal("3"), "hba1c_unit": "%"}),
    (Indication.T1D, {"hba1c": Decimal("20"), "hba1c_unit": "%"}),
    (Indication.T1D, {"hba1c": Decimal("9"), "hba1c_unit": "mmol/mol"}),
    (Indication.T1D, {"hba1c": Decimal("195"), "hba1c_unit": "mmol/mol"}),
    (Indication.T1D, {"insulin_u_per_kg_day": Decimal("0")}),
    (Indication.T1D, {"insulin_u_per_kg_day": Decimal("3")}),
    (Indication.RA, {"tender_joints_28": 0, "swollen_joints_28": 0}),
    (Indication.RA, {"tender_joints_28": 28, "swollen_joints_28": 28}),
    (Indication.RA, {"crp": Decimal("0"), "crp_unit": "mg/L"}),
    (Indication.RA, {"crp": Decimal("500"), "crp_unit": "mg/L"}),
    (Indication.RA, {"crp": Decimal("50"), "crp_unit": "mg/dL"}),
    (Indication.RA, {"esr_mm_h": 0}),
    (Indication.RA, {"esr_mm_h": 150}),
    (Indication.RA, {"patient_global_mm": 0, "evaluator_global_mm": 100}),
    (Indication.RA, {"patient_global_mm": 100, "evaluator_global_mm": 0}),
]


@pytest.mark.parametrize(("indication", "values"), ACCEPTED)
def test_it_accepts_a_value_at_the_edge_of_its_range(visits, coordinator_site_a, indication, values):
    assessment = _assess(visits[indication], coordinator_site_a, {**VALID[indication], **values})

    assessment.refresh_from_db()
    for field, value in values.items():
        assert getattr(assessment, field) == value


REFUSED = [
    (Indication.MS, {"edss": Decimal("10.5")}, "edss", "EDSS must be between 0 and 10; 10.5 is outside that range."),
    (Indication.MS, {"edss": Decimal("-0.5")}, "edss", "EDSS must be between 0 and 10; -0.5 is outside that range."),
    (Indication.MS, {"edss": Decimal("3.25")}, "edss", "EDSS is scored in steps of 0.5."),
    (Indication.MS, {"edss": Decimal("9.9")}, "edss", "EDSS is scored in steps of 0.5."),
    (
        Indication.T1D,
        {"hba1c": Decimal("2.9"), "hba1c_unit": "%"},
        "hba1c",
        "HbA1c (%) must be between 3 and 20; 2.9 is outside that range.",
    ),
    (
        Indication.T1D,
        {"hba1c": Decimal("20.1"), "hba1c_unit": "%"},
        "hba1c",
        "HbA1c (%) must be between 3 and 20; 20.1 is outside that range.",
    ),
    (
        Indication.T1D,
        {"hba1c": Decimal("8.9"), "hba1c_unit": "mmol/mol"},
        "hba1c",
        "HbA1c (mmol/mol) must be between 9 and 195; 8.9 is outside that range.",
    ),
    (
        Indication.T1D,
        {"hba1c": Decimal("195.1"), "hba1c_unit": "mmol/mol"},
        "hba1c",
        "HbA1c (mmol/mol) must be between 9 and 195; 195.1 is outside that range.",
    ),
    (
        Indication.T1D,
        {"hba1c": Decimal("53"), "hba1c_unit": "mg/dL"},
        "hba1c_unit",
        "Unknown unit 'mg/dL'.",
    ),
    (
        Indication.T1D,
        {"insulin_u_per_kg_day": Decimal("3.01")},
        "insulin_u_per_kg_day",
        "Daily insulin dose (U/kg/day) must be between 0 and 3; 3.01 is outside that range.",
    ),
    (
        Indication.RA,
        {"tender_joints_28": 29},
        "tender_joints_28",
        "Tender joint count (of 28) must be between 0 and 28; 29 is outside that range.",
    ),
    (
        Indication.RA,
        {"tender_joints_28": -1},
        "tender_joints_28",
        "Tender joint count (of 28) must be between 0 and 28; -1 is outside that range.",
    ),
    (
        Indication.RA,
        {"swollen_joints_28": 29},
        "swollen_joints_28",
        "Swollen joint count (of 28) must be between 0 and 28; 29 is outside that range.",
    ),
    (
        Indication.RA,
        {"crp": Decimal("500.01"), "crp_unit": "mg/L"},
        "crp",
        "CRP (mg/L) must be between 0 and 500; 500.01 is outside that range.",
    ),
    (
        Indication.RA,
        {"crp": Decimal("-0.01"), "crp_unit": "mg/L"},
        "crp",
        "CRP (mg/L) must be between 0 and 500; -0.01 is outside that range.",
    ),
    (
        Indication.RA,
        {"crp": Decimal("50.01"), "crp_unit": "mg/dL"},
        "crp",
        "CRP (mg/dL) must be between 0 and 50; 50.01 is outside that range.",
    ),
    (Indication.RA, {"crp": Decimal("5"), "crp_unit": "nmol/L"}, "crp_unit", "Unknown unit 'nmol/L'."),
    (Indication.RA, {"esr_mm_h": 151}, "esr_mm_h", "ESR (mm/h) must be between 0 and 150; 151 is outside that range."),
    (
        Indication.RA,
        {"patient_global_mm": 101},
        "patient_global_mm",
        "Patient global assessment (mm) must be between 0 and 100; 101 is outside that range.",
    ),
    (
        Indication.RA,
        {"evaluator_global_mm": 101},
        "evaluator_global_mm",
        "Evaluator global assessment (mm) must be between 0 and 100; 101 is outside that range.",
    ),
]


@pytest.mark.parametrize(("indication", "values", "field", "message"), REFUSED)
def test_it_refuses_a_value_outside_its_range(
    visits, coordinator_site_a, row_counts, indication, values, field, message
):
    visit = visits[indication]
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _assess(visit, coordinator_site_a, {**VALID[indication], **values})

    assert exc.value.message_dict == {field: [message]}
    assert row_counts() == before


# ---------------------------------------------------------------------------------------------
# When an assessment can be recorded, and corrections
# ---------------------------------------------------------------------------------------------


def test_it_refuses_an_assessment_before_the_visit_took_place(study, sites, coordinator_site_a, row_counts):
    participant = infused(study, sites[0], coordinator_site_a)
    visit = participant.visits.get(definition__code="d28")
    before = row_counts()

    with pytest.raises(RuleViolation, match="Record the visit date before entering its assessments"):
        _assess(visit, coordinator_site_a, VALID[Indication.MS])

    assert row_counts() == before


def test_it_requires_a_reason_to_correct_an_assessment(ms_visit, coordinator_site_a, row_counts):
    _assess(ms_visit, coordinator_site_a, VALID[Indication.MS])
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _assess(ms_visit, coordinator_site_a, {"edss": Decimal("4")}, expected_version=1)

    assert exc.value.message_dict == {"reason": ["A reason for change is required to edit a saved record."]}
    assert row_counts() == before
    assessment = DiseaseAssessment.objects.get(visit=ms_visit)
    assert (assessment.edss, assessment.version) == (Decimal("3.5"), 1)


def test_it_corrects_an_assessment_with_a_reason(ms_visit, coordinator_site_a):
    _assess(ms_visit, coordinator_site_a, VALID[Indication.MS])

    _assess(ms_visit, coordinator_site_a, {"edss": Decimal("4")}, reason="Re-scored by the rater", expected_version=1)

    assessment = DiseaseAssessment.objects.get(visit=ms_visit)
    assert (assessment.edss, assessment.version) == (Decimal("4"), 2)


def test_it_refuses_a_correction_made_on_a_stale_version(ms_visit, coordinator_site_a, row_counts):
    _assess(ms_visit, coordinator_site_a, VALID[Indication.MS])
    _assess(ms_visit, coordinator_site_a, {"edss": Decimal("4")}, reason="Re-scored", expected_version=1)
    before = row_counts()

    with pytest.raises(services.ConflictError):
        _assess(ms_visit, coordinator_site_a, {"edss": Decimal("5")}, reason="My correction", expected_version=1)

    assert row_counts() == before
    assert DiseaseAssessment.objects.get(visit=ms_visit).edss == Decimal("4")


def test_after_withdrawal_an_assessment_at_a_scheduled_visit_is_refused(
    study, ms_visit, coordinator_site_a, row_counts
):
    services.disposition_record(
        actor=coordinator_site_a,
        participant=ms_visit.participant,
        kind="withdrawn",
        disposition_date=dt.date(2025, 3, 10),
        reason="Moved abroad",
    )
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _assess(ms_visit, coordinator_site_a, VALID[Indication.MS])

    assert exc.value.messages == ["S01-0001 is withdrawn: no assessment can be recorded, only safety follow-up."]
    assert row_counts() == before


def test_after_withdrawal_an_assessment_at_a_safety_visit_is_accepted(ms_visit, coordinator_site_a):
    participant = ms_visit.participant
    services.disposition_record(
        actor=coordinator_site_a,
        participant=participant,
        kind="withdrawn",
        disposition_date=dt.date(2025, 3, 10),
        reason="Moved abroad",
    )
    safety = services.visit_add_unscheduled(
        actor=coordinator_site_a,
        participant=participant,
        actual_date=dt.date(2025, 3, 20),
        reason="Neurological follow-up",
        safety_follow_up=True,
    )

    assessment = _assess(safety, coordinator_site_a, {"edss": Decimal("4.5")})

    assert assessment.visit == safety


# ---------------------------------------------------------------------------------------------
# MRI (MS only)
# ---------------------------------------------------------------------------------------------


def _mri(visit, actor, **overrides):
    kwargs = {"scan_date": VISIT_DATE, "new_or_enlarging_t2": 2, "gd_enhancing": 0, "reader": "Dr Reader"}
    kwargs.update(overrides)
    return services.mri_record(actor=actor, visit=visit, **kwargs)


def test_it_records_an_mri_read_in_ms(ms_visit, coordinator_site_a):
    read = _mri(ms_visit, coordinator_site_a, new_or_enlarging_t2=200, gd_enhancing=0)

    read.refresh_from_db()
    assert (read.scan_date, read.new_or_enlarging_t2, read.gd_enhancing, read.reader) == (
        VISIT_DATE,
        200,
        0,
        "Dr Reader",
    )


def test_it_refuses_an_mri_read_outside_ms(t1d_visit, coordinator_site_a, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation, match="MRI reads are collected in multiple sclerosis studies only"):
        _mri(t1d_visit, coordinator_site_a)

    assert row_counts() == before


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"new_or_enlarging_t2": 201}, "new_or_enlarging_t2", "Lesion count must be between 0 and 200; 201 is outside"),
        ({"gd_enhancing": -1}, "gd_enhancing", "Lesion count must be between 0 and 200; -1 is outside"),
        ({"scan_date": dt.date(2025, 1, 5)}, "scan_date", "The MRI date 2025-01-05 is before consent on 2025-01-06."),
    ],
)
def test_it_refuses_an_implausible_mri_read(ms_visit, coordinator_site_a, row_counts, overrides, field, message):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _mri(ms_visit, coordinator_site_a, **overrides)

    assert list(exc.value.message_dict) == [field]
    assert exc.value.message_dict[field][0].startswith(message)
    assert row_counts() == before


def test_it_refuses_an_mri_scan_dated_in_the_future(ms_visit, coordinator_site_a, frozen_now, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _mri(ms_visit, coordinator_site_a, scan_date=CLINICAL_TODAY + dt.timedelta(days=1))

    assert exc.value.message_dict == {"scan_date": ["Scan date 2025-06-03 is in the future."]}
    assert row_counts() == before


def test_it_refuses_a_second_mri_read_for_a_visit(ms_visit, coordinator_site_a, row_counts):
    _mri(ms_visit, coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation, match="already has an MRI read"):
        _mri(ms_visit, coordinator_site_a, new_or_enlarging_t2=5)

    assert row_counts() == before
    assert MRIRead.objects.get().new_or_enlarging_t2 == 2


# ---------------------------------------------------------------------------------------------
# MMTT (T1D only)
# ---------------------------------------------------------------------------------------------

SAMPLES = [(0, Decimal("0.20")), (30, Decimal("0.45")), (60, Decimal("0.60")), (120, Decimal("0.40"))]


def test_it_records_an_mmtt_in_t1d(t1d_visit, coordinator_site_a):
    rows = services.mmtt_record(
        actor=coordinator_site_a, visit=t1d_visit, samples=list(reversed(SAMPLES)), unit="nmol/L"
    )

    assert [r.minute for r in rows] == [0, 30, 60, 120]
    assert list(t1d_visit.mmtt_samples.values_list("minute", "c_peptide", "unit")) == [
        (m, v, "nmol/L") for m, v in SAMPLES
    ]


@pytest.mark.parametrize("minutes", [(-10, 240), (15, 90, 150, 180)])
def test_it_accepts_every_protocol_time_point(t1d_visit, coordinator_site_a, minutes):
    services.mmtt_record(
        actor=coordinator_site_a, visit=t1d_visit, samples=[(m, Decimal("100")) for m in minutes], unit="pmol/L"
    )

    assert sorted(t1d_visit.mmtt_samples.values_list("minute", flat=True)) == sorted(minutes)


@pytest.mark.parametrize(
    ("samples", "unit", "field", "message"),
    [
        ([(0, Decimal("0.2")), (45, Decimal("0.5"))], "nmol/L", "samples", "Time points must be among"),
        ([(0, Decimal("0.2")), (0, Decimal("0.3"))], "nmol/L", "samples", "A time point appears twice."),
        ([(0, Decimal("0.2"))], "nmol/L", "samples", "An MMTT needs at least two time points."),
        ([(0, Decimal("0.2")), (30, Decimal("0.5"))], "mmol/L", "unit", "Unknown C-peptide unit 'mmol/L'."),
        (
            [(0, Decimal("0.2")), (30, Decimal("10.1"))],
            "nmol/L",
            "c_peptide_30",
            "C-peptide (nmol/L) must be between 0 and 10; 10.1 is outside that range.",
        ),
        (
            [(0, Decimal("-1")), (30, Decimal("300"))],
            "pmol/L",
            "c_peptide_0",
            "C-peptide (pmol/L) must be between 0 and 10000; -1 is outside that range.",
        ),
    ],
    ids=["invalid-minute", "duplicate-minute", "single-point", "unknown-unit", "above-range", "below-range"],
)
def test_it_refuses_an_invalid_mmtt(t1d_visit, coordinator_site_a, row_counts, samples, unit, field, message):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.mmtt_record(actor=coordinator_site_a, visit=t1d_visit, samples=samples, unit=unit)

    assert list(exc.value.message_dict) == [field]
    assert exc.value.message_dict[field][0].startswith(message)
    assert row_counts() == before


def test_it_refuses_an_mmtt_outside_t1d(ms_visit, coordinator_site_a, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation, match="MMTTs are collected in type 1 diabetes studies only"):
        services.mmtt_record(actor=coordinator_site_a, visit=ms_visit, samples=SAMPLES, unit="nmol/L")

    assert row_counts() == before


def test_it_refuses_a_second_mmtt_for_a_visit(t1d_visit, coordinator_site_a, row_counts):
    services.mmtt_record(actor=coordinator_site_a, visit=t1d_visit, samples=SAMPLES, unit="nmol/L")
    before = row_counts()

    with pytest.raises(RuleViolation, match="already has an MMTT"):
        services.mmtt_record(actor=coordinator_site_a, visit=t1d_visit, samples=SAMPLES, unit="nmol/L")

    assert row_counts() == before


# ---------------------------------------------------------------------------------------------
# Relapses (MS only)
# ---------------------------------------------------------------------------------------------


def _relapse(participant, actor, onset_date=dt.date(2025, 4, 1)):
    return services.relapse_record(
        actor=actor,
        participant=participant,
        onset_date=onset_date,
        steroid_treated=True,
        confirmed_by_examination=True,
        notes=" Optic neuritis ",
    )


def test_it_records_a_relapse_in_ms(ms_visit, coordinator_site_a):
    relapse = _relapse(ms_visit.participant, coordinator_site_a)

    relapse.refresh_from_db()
    assert (relapse.onset_date, relapse.steroid_treated, relapse.notes) == (dt.date(2025, 4, 1), True, "Optic neuritis")


def test_it_refuses_a_relapse_outside_ms(t1d_visit, coordinator_site_a, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation, match="Relapses are recorded in multiple sclerosis studies only"):
        _relapse(t1d_visit.participant, coordinator_site_a)

    assert row_counts() == before


def test_it_refuses_a_relapse_before_consent(study, sites, coordinator_site_a, row_counts):
    participant = consented(study, sites[0], coordinator_site_a, on=dt.date(2025, 1, 6))
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _relapse(participant, coordinator_site_a, onset_date=dt.date(2025, 1, 5))

    assert exc.value.message_dict == {"onset_date": ["The relapse date 2025-01-05 is before consent on 2025-01-06."]}
    assert row_counts() == before


def test_it_refuses_a_relapse_without_any_consent(study, sites, coordinator_site_a, row_counts):
    participant = screened(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _relapse(participant, coordinator_site_a)

    assert exc.value.message_dict == {"onset_date": ["S01-0001 has not consented: no relapse before consent."]}
    assert row_counts() == before


def test_it_refuses_a_relapse_onset_in_the_future(ms_visit, coordinator_site_a, frozen_now, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _relapse(ms_visit.participant, coordinator_site_a, onset_date=CLINICAL_TODAY + dt.timedelta(days=1))

    assert exc.value.message_dict == {"onset_date": ["Relapse onset 2025-06-03 is in the future."]}
    assert row_counts() == before


# ---------------------------------------------------------------------------------------------
# Locking
# ---------------------------------------------------------------------------------------------


def _lock(lock: str, participant: Participant) -> None:
    if lock == "study":
        with admin_change():
            Study.objects.filter(pk=participant.study_id).update(is_locked=True)
    else:
        with admin_change():
            Participant.objects.filter(pk=participant.pk).update(is_locked=True)


@pytest.mark.parametrize("lock", ["study", "participant"])
@pytest.mark.parametrize("form", ["assessment", "mri", "mmtt", "relapse"])
def test_it_refuses_every_assessment_form_when_locked(visits, coordinator_site_a, row_counts, lock, form):
    visit = visits[Indication.T1D if form == "mmtt" else Indication.MS]
    _lock(lock, visit.participant)
    before = row_counts()

    write = {
        "assessment": lambda: _assess(visit, coordinator_site_a, VALID[Indication.MS]),
        "mri": lambda: _mri(visit, coordinator_site_a),
        "mmtt": lambda: services.mmtt_record(actor=coordinator_site_a, visit=visit, samples=SAMPLES, unit="nmol/L"),
        "relapse": lambda: _relapse(visit.participant, coordinator_site_a),
    }[form]

    with pytest.raises(LockedError):
        write()

    assert row_counts() == before
    for model in (DiseaseAssessment, MRIRead, MMTTSample, Relapse):
        assert not model.objects.exists()


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_it_refuses_to_correct_an_assessment_when_locked(ms_visit, coordinator_site_a, row_counts, lock):
    _assess(ms_visit, coordinator_site_a, VALID[Indication.MS])
    _lock(lock, ms_visit.participant)
    before = row_counts()

    with pytest.raises(LockedError):
        _assess(ms_visit, coordinator_site_a, {"edss": Decimal("4")}, reason="Re-scored", expected_version=1)

    assert row_counts() == before
    assert DiseaseAssessment.objects.get().edss == Decimal("3.5")


def test_a_relapse_within_30_days_of_the_previous_one_is_refused(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    first = dt.date(2025, 3, 1)
    services.relapse_record(
        actor=coordinator_site_a,
        participant=participant,
        onset_date=first,
        steroid_treated=True,
        confirmed_by_examination=True,
    )
    with pytest.raises(RuleViolation) as exc:
        services.relapse_record(
            actor=coordinator_site_a,
            participant=participant,
            onset_date=first + dt.timedelta(days=29),
            steroid_treated=False,
            confirmed_by_examination=True,
        )
    assert "at least 30 days after the previous one" in exc.value.message_dict["onset_date"][0]
    services.relapse_record(
        actor=coordinator_site_a,
        participant=participant,
        onset_date=first + dt.timedelta(days=30),
        steroid_treated=False,
        confirmed_by_examination=True,
    )
    assert participant.relapses.count() == 2
