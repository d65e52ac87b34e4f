"""Multiple sclerosis: confirmed disability worsening and NEDA-3 (docs/domain.md §5.1)."""

import datetime as dt
from decimal import Decimal

import pytest

from analytics.derivations import (
    CDWResult,
    EDSSAssessment,
    MRIScan,
    cdw_threshold,
    confirmed_disability_worsening,
    edss_value,
    neda3,
)

START = dt.date(2025, 1, 6)


def day(n: int) -> dt.date:
    return START + dt.timedelta(days=n)


def edss(*points: tuple[int, str]) -> list[EDSSAssessment]:
    return [EDSSAssessment(day(d), Decimal(score)) for d, score in points]


@pytest.mark.parametrize(
    ("baseline", "zero_rule", "threshold"),
    [
        ("0", Decimal("1.5"), "1.5"),  # common variant: ≥ 1.5 from 0
        ("0", None, "1.0"),
        ("1.0", Decimal("1.5"), "1.0"),
        ("5.5", Decimal("1.5"), "1.0"),  # ≤ 5.5: ≥ 1.0
        ("6.0", Decimal("1.5"), "0.5"),  # > 5.5: ≥ 0.5
    ],
)
def test_the_worsening_threshold_depends_on_baseline(baseline, zero_rule, threshold):
    assert cdw_threshold(baseline, zero_baseline_threshold=zero_rule) == Decimal(threshold)


@pytest.mark.parametrize("bad", ["0.5", "10.5", "3.25", "-1"])
def test_impossible_edss_scores_are_refused(bad):
    with pytest.raises(ValueError, match="EDSS"):
        edss_value(bad)


def test_worsening_confirmed_twelve_weeks_later():
    result = confirmed_disability_worsening(baseline_edss="2.0", assessments=edss((91, "3.0"), (182, "3.0")))
    assert result.worsened
    assert result.onset_date == day(91)  # the event date is the first worsened assessment
    assert result.confirmed_date == day(182)


def test_a_dip_in_between_breaks_the_confirmation():
    visits = edss((91, "3.0"), (120, "2.5"), (182, "3.0"), (273, "3.5"))
    result = confirmed_disability_worsening(baseline_edss="2.0", assessments=visits)
    assert (result.onset_date, result.confirmed_date) == (day(182), day(273))


def test_twenty_four_week_confirmation_needs_a_later_visit():
    visits = edss((91, "3.0"), (182, "3.0"))
    assert not confirmed_disability_worsening(baseline_edss="2.0", assessments=visits, confirmation_weeks=24).worsened
    visits += edss((273, "3.0"))
    result = confirmed_disability_worsening(baseline_edss="2.0", assessments=visits, confirmation_weeks=24)
    assert (result.onset_date, result.confirmed_date) == (day(91), day(273))  # 182 days ≥ 168


def test_confirmation_must_be_at_least_the_full_interval():
    visits = edss((91, "3.0"), (91 + 83, "3.0"))  # 83 days < 12 weeks
    assert not confirmed_disability_worsening(baseline_edss="2.0", assessments=visits).worsened
    visits = edss((91, "3.0"), (91 + 84, "3.0"))
    assert confirmed_disability_worsening(baseline_edss="2.0", assessments=visits).worsened


def test_edss_within_30_days_of_a_relapse_is_excluded():
    visits = edss((91, "3.0"), (182, "3.0"), (273, "2.0"))
    relapse = [day(80)]  # the day-91 EDSS is 11 days after onset
    result = confirmed_disability_worsening(baseline_edss="2.0", assessments=visits, relapse_onsets=relapse)
    assert result.excluded_dates == (day(91),)
    assert not result.worsened  # day 182 would need a confirmation ≥ 12 weeks later, and day 273 fell back
    result = confirmed_disability_worsening(
        baseline_edss="2.0", assessments=visits, relapse_onsets=[day(91 - 31)]
    )  # 31 days before: not excluded
    assert result.worsened


def test_a_high_baseline_needs_half_a_point_and_zero_needs_one_and_a_half():
    assert confirmed_disability_worsening(baseline_edss="6.0", assessments=edss((91, "6.5"), (182, "6.5"))).worsened
    from_zero = edss((91, "1.0"), (182, "1.0"))
    assert not confirmed_disability_worsening(baseline_edss="0", assessments=from_zero).worsened
    assert confirmed_disability_worsening(
        baseline_edss="0", assessments=from_zero, zero_baseline_threshold=None
    ).worsened


NO_CDW = CDWResult(False, None, None, Decimal("2.0"), Decimal("1.0"), 12, ())
CLEAN_MRI = [MRIScan(day(182), 0, 0), MRIScan(day(364), 0, 0)]


def test_neda3_holds_with_no_relapse_no_mri_activity_and_no_worsening():
    result = neda3(window_start=day(0), window_end=day(365), relapse_onsets=[], mri_scans=CLEAN_MRI, cdw=NO_CDW)
    assert result.neda is True
    assert result.mri_scans_evaluated == 2


@pytest.mark.parametrize(
    ("relapses", "scans", "cdw"),
    [
        ([day(200)], CLEAN_MRI, NO_CDW),
        ([], [MRIScan(day(182), 0, 1), MRIScan(day(364), 0, 0)], NO_CDW),  # one Gd+ lesion
        ([], [MRIScan(day(182), 0, 0), MRIScan(day(364), 2, 0)], NO_CDW),  # new T2 lesions
        ([], CLEAN_MRI, CDWResult(True, day(91), day(182), Decimal("2.0"), Decimal("1.0"), 12, ())),
    ],
)
def test_neda3_is_lost_by_any_single_component(relapses, scans, cdw):
    result = neda3(window_start=day(0), window_end=day(365), relapse_onsets=relapses, mri_scans=scans, cdw=cdw)
    assert result.neda is False


def test_neda3_ignores_activity_outside_the_window():
    outside = CDWResult(True, day(400), day(500), Decimal("2.0"), Decimal("1.0"), 12, ())
    result = neda3(
        window_start=day(0), window_end=day(365), relapse_onsets=[day(-10), day(366)], mri_scans=CLEAN_MRI, cdw=outside
    )
    assert result.neda is True


def test_rebaselining_ignores_mri_activity_up_to_the_new_reference_scan():
    scans = [MRIScan(day(91), 3, 2), MRIScan(day(182), 0, 0), MRIScan(day(364), 0, 0)]
    plain = neda3(window_start=day(0), window_end=day(365), relapse_onsets=[], mri_scans=scans, cdw=NO_CDW)
    assert plain.neda is False
    rebaselined = neda3(
        window_start=day(0),
        window_end=day(365),
        relapse_onsets=[],
        mri_scans=scans,
        cdw=NO_CDW,
        mri_rebaseline_date=day(91),
    )
    assert rebaselined.neda is True
    assert rebaselined.mri_reference_date == day(91)
    assert rebaselined.mri_scans_evaluated == 2


def test_neda3_without_an_mri_in_the_window_is_not_evaluable_unless_activity_is_already_shown():
    result = neda3(window_start=day(0), window_end=day(365), relapse_onsets=[], mri_scans=[], cdw=NO_CDW)
    assert result.neda is None
    assert result.mri_active is None
    result = neda3(window_start=day(0), window_end=day(365), relapse_onsets=[day(30)], mri_scans=[], cdw=NO_CDW)
    assert result.neda is False
