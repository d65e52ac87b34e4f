"""Pure derivations behind the remission-durability analyses: scores, remission definitions, episodes
and time-to-event rows. No Django, no database: inputs are plain values, as read from the casebook.

Sections follow docs/domain.md:

* Type 1 diabetes (§5.2): IDAA1c, MMTT C-peptide AUC/peak, insulin independence.
* Rheumatoid arthritis (§5.3): DAS28-CRP(4), DAS28-CRP(3), DAS28-ESR(4), SDAI, CDAI, ACR/EULAR Boolean
  2011/2022 and the activity categories. Every RA function takes CRP and the global assessments *with
  their unit*, and converts inside, so the mg/L-vs-mg/dL and mm-vs-cm traps cannot leak out.
* Multiple sclerosis (§5.1): confirmed disability worsening (CDW) and NEDA-3.
* :class:`RemissionDefinition` + :func:`in_remission`: a versioned, data-driven definition that returns
  the boolean together with every derived value and the raw inputs it came from.
* Episodes and time-to-event rows (§5 "Generic durability algorithm", Part B §2): onset/loss of
  remission with optional confirmation, time to relapse from infusion, duration of remission, competing
  events coded for Aalen–Johansen, and the censoring rules of Part B §2.

Scores are computed in :class:`~decimal.Decimal` (28 significant digits) and compared with the published
thresholds *unrounded*; see :mod:`analytics.units` for why floats are not used.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Any, TypeAlias, TypedDict

from analytics.units import (
    Number,
    c_peptide_nmol_l,
    crp_mg_dl,
    crp_mg_l,
    hba1c_percent,
    non_negative,
    to_decimal,
    vas_cm,
    vas_mm,
)

# A fixed context, so a caller changing the thread's decimal context cannot change a score.
_DECIMAL_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)


class NotEvaluableError(ValueError):
    """The inputs do not allow the definition to be evaluated (a value is missing, or the MRI window is
    empty). The caller records the assessment as not adequate rather than as "not in remission"."""


def _require(inputs: Mapping[str, Any], key: str) -> Any:
    value = inputs.get(key)
    if value is None or value == "":
        raise NotEvaluableError(f"{key} is missing")
    return value


# =============================================================================================
# Type 1 diabetes (docs/domain.md §5.2)
# =============================================================================================

IDAA1C_PARTIAL_REMISSION_MAX = Decimal("9")
C_PEPTIDE_PEAK_MEANINGFUL_NMOL_L = Decimal("0.2")
C_PEPTIDE_90_MEANINGFUL_NMOL_L = Decimal("0.2")
C_PEPTIDE_FASTING_MEANINGFUL_NMOL_L = Decimal("0.1")
MAREK_TRZONKOWSKA_INSULIN_MAX_U_PER_KG_DAY = Decimal("0.5")


def idaa1c(*, hba1c: Number, hba1c_unit: str, insulin_u_per_kg_day: Number) -> Decimal:
    """Insulin-dose-adjusted HbA1c (Mortensen 2009; docs/domain.md §5.2).

    ``IDAA1c = HbA1c (DCCT %) + 4 × insulin dose (U/kg/24 h)``. HbA1c stored in IFCC mmol/mol is
    converted to % first. The dose is the protocol's mean daily total over the preceding 3-7 days.
    """
    with localcontext(_DECIMAL_CONTEXT):
        return hba1c_percent(hba1c, hba1c_unit) + 4 * non_negative(insulin_u_per_kg_day, "insulin dose")


def idaa1c_partial_remission(value: Number, *, maximum: Number = IDAA1C_PARTIAL_REMISSION_MAX) -> bool:
    """Partial remission ⇔ IDAA1c ≤ 9 (inclusive; docs/domain.md §5.2)."""
    return to_decimal(value) <= to_decimal(maximum)


@dataclass(frozen=True)
class CPeptideSample:
    """One MMTT draw as stored in ``MMTTSample``: minute relative to the meal, value and its unit."""

    minute: int
    c_peptide: Number
    unit: str


@dataclass(frozen=True)
class MMTTSummary:
    """C-peptide response to a mixed-meal tolerance test, all concentrations in nmol/L.

    ``auc_nmol_min_l`` is the trapezoidal area from ``start_minute`` to ``end_minute`` (nmol/L·min);
    ``mean_auc_nmol_l`` = AUC / ``duration_min`` (docs/domain.md §5.2 "mean AUC = AUC / duration").
    """

    auc_nmol_min_l: Decimal
    mean_auc_nmol_l: Decimal
    start_minute: int
    end_minute: int
    duration_min: int
    peak_nmol_l: Decimal
    fasting_nmol_l: Decimal | None
    c_peptide_90_nmol_l: Decimal | None
    samples_used: int

    @property
    def peak_meaningful(self) -> bool:
        """Peak stimulated C-peptide ≥ 0.2 nmol/L, the clinically meaningful level (docs/domain.md §5.2)."""
        return self.peak_nmol_l >= C_PEPTIDE_PEAK_MEANINGFUL_NMOL_L

    @property
    def c_peptide_90_meaningful(self) -> bool | None:
        """90-min C-peptide ≥ 0.2 nmol/L, the validated surrogate for peak or AUC (§5.2)."""
        return None if self.c_peptide_90_nmol_l is None else self.c_peptide_90_nmol_l >= C_PEPTIDE_90_MEANINGFUL_NMOL_L

    @property
    def fasting_meaningful(self) -> bool | None:
        """Fasting C-peptide ≥ 0.1 nmol/L, the fasting equivalent (§5.2)."""
        return None if self.fasting_nmol_l is None else self.fasting_nmol_l >= C_PEPTIDE_FASTING_MEANINGFUL_NMOL_L


def mmtt_summary(samples: Sequence[CPeptideSample], *, average_pre_meal_baseline: bool = False) -> MMTTSummary:
    """Trapezoidal AUC, mean AUC, peak, fasting and 90-min C-peptide of one MMTT (docs/domain.md §5.2).

    Choice of integration range: the AUC runs from the first sample at minute ≥ 0 (normally 0, the
    meal) to the last sample. Pre-meal draws (the −10 min sample of the TrialNet schedule −10, 0, 15,
    30, 60, 90, 120) are fasting values and do not extend the curve. With
    ``average_pre_meal_baseline=True`` the minute-0 value used in the AUC and reported as fasting is the
    mean of all draws at minute ≤ 0 (a sample at minute 0 is then required). Peak is the maximum over
    minutes ≥ 0. Each value is converted to nmol/L from its own unit.
    """
    by_minute: dict[int, Decimal] = {}
    for sample in samples:
        if isinstance(sample.minute, bool) or not isinstance(sample.minute, int):
            raise TypeError(f"MMTT minute must be an integer, got {sample.minute!r}")
        if sample.minute in by_minute:
            raise ValueError(f"MMTT has two samples at minute {sample.minute}")
        by_minute[sample.minute] = c_peptide_nmol_l(sample.c_peptide, sample.unit)
    curve = sorted((m, v) for m, v in by_minute.items() if m >= 0)
    if len(curve) < 2:
        raise NotEvaluableError("MMTT needs at least two samples at minute ≥ 0 to integrate")
    with localcontext(_DECIMAL_CONTEXT):
        fasting = by_minute.get(0)
        if average_pre_meal_baseline:
            if 0 not in by_minute:
                raise NotEvaluableError("averaging the pre-meal baseline needs a sample at minute 0")
            pre_meal = [v for m, v in by_minute.items() if m <= 0]
            fasting = sum(pre_meal, Decimal(0)) / len(pre_meal)
            curve[0] = (0, fasting)
        auc = Decimal(0)
        for (m0, v0), (m1, v1) in zip(curve, curve[1:], strict=False):
            auc += (v0 + v1) * (m1 - m0) / 2
        start, end = curve[0][0], curve[-1][0]
        return MMTTSummary(
            auc_nmol_min_l=auc,
            mean_auc_nmol_l=auc / (end - start),
            start_minute=start,
            end_minute=end,
            duration_min=end - start,
            peak_nmol_l=max(v for _, v in curve),
            fasting_nmol_l=fasting,
            c_peptide_90_nmol_l=by_minute.get(90),
            samples_used=len(curve),
        )


@dataclass(frozen=True)
class InsulinIndependenceRule:
    """Protocol-defined insulin independence (docs/domain.md §5.2 suggested configurable rule): no exogenous
    insulin for ≥ ``min_insulin_free_days`` consecutive days, with HbA1c below (or, if
    ``hba1c_max_inclusive``, at or below) ``hba1c_max_percent``; ``None`` drops the HbA1c condition."""

    min_insulin_free_days: int = 14
    hba1c_max_percent: Decimal | None = Decimal("7.0")
    hba1c_max_inclusive: bool = False


def consecutive_insulin_free_days(daily_doses: Mapping[dt.date, Number], *, as_of: dt.date) -> int:
    """Number of consecutive diary days ending on ``as_of`` with a total insulin dose of zero.

    A day missing from the diary ends the run: an unrecorded day is not evidence of no insulin.
    """
    days = 0
    day = as_of
    while day in daily_doses and non_negative(daily_doses[day], "insulin dose") == 0:
        days += 1
        day -= dt.timedelta(days=1)
    return days


def insulin_free_days_from_log(changes: Sequence[tuple[dt.date, Number]], *, as_of: dt.date) -> int | None:
    """Consecutive insulin-free days ending on ``as_of`` (inclusive) from a dose log kept as dated
    changes of the total daily dose (a step function: each change holds until the next one; 0 means
    insulin stopped). ``None`` when nothing is logged on or before ``as_of`` (unknown, not zero).
    Equals :func:`consecutive_insulin_free_days` on the log expanded to one entry per day."""
    logged = sorted((day, non_negative(units, "insulin dose")) for day, units in changes if day <= as_of)
    if not logged:
        return None
    if logged[-1][1] != 0:
        return 0
    start = logged[-1][0]
    for day, units in reversed(logged):
        if units != 0:
            break
        start = day
    return (as_of - start).days + 1


def insulin_independent(
    *,
    insulin_free_days: int,
    hba1c: Number | None,
    hba1c_unit: str | None,
    rule: InsulinIndependenceRule = InsulinIndependenceRule(),
) -> bool:
    """Whether the participant meets the configurable insulin-independence rule (docs/domain.md §5.2)."""
    if insulin_free_days < rule.min_insulin_free_days:
        return False
    if rule.hba1c_max_percent is None:
        return True
    if hba1c is None or hba1c_unit is None:
        raise NotEvaluableError("hba1c is missing")
    percent = hba1c_percent(hba1c, hba1c_unit)
    limit = to_decimal(rule.hba1c_max_percent)
    return percent <= limit if rule.hba1c_max_inclusive else percent < limit


# =============================================================================================
# Rheumatoid arthritis (docs/domain.md §5.3)
# =============================================================================================


class DiseaseActivity(StrEnum):
    REMISSION = "remission"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"


# docs/domain.md §5.3 cut-offs: DAS28 remission is strict (< 2.6); SDAI and CDAI remission are inclusive.
DAS28_REMISSION_BELOW = Decimal("2.6")
DAS28_LOW_MAX = Decimal("3.2")
DAS28_MODERATE_MAX = Decimal("5.1")
SDAI_REMISSION_MAX, SDAI_LOW_MAX, SDAI_MODERATE_MAX = Decimal("3.3"), Decimal("11"), Decimal("26")
CDAI_REMISSION_MAX, CDAI_LOW_MAX, CDAI_MODERATE_MAX = Decimal("2.8"), Decimal("10"), Decimal("22")
# ACR/EULAR Boolean remission: PtGA ≤ 1 cm in the 2011 definition, ≤ 2 cm in the 2022 revision.
BOOLEAN_PTGA_MAX_CM = MappingProxyType({"2011": Decimal(1), "2022": Decimal(2)})


def _joint_count(value: Number, name: str) -> Decimal:
    count = to_decimal(value, name=name)
    if count != count.to_integral_value() or not 0 <= count <= 28:
        raise ValueError(f"{name} must be a whole number of joints between 0 and 28, got {value!r}")
    return count


def _das28_joints_crp(tender_28: Number, swollen_28: Number, crp_in_mg_l: Decimal) -> Decimal:
    tjc = _joint_count(tender_28, "tender joint count")
    sjc = _joint_count(swollen_28, "swollen joint count")
    return Decimal("0.56") * tjc.sqrt() + Decimal("0.28") * sjc.sqrt() + Decimal("0.36") * (crp_in_mg_l + 1).ln()


def das28_crp4(
    *,
    tender_28: Number,
    swollen_28: Number,
    crp: Number,
    crp_unit: str,
    patient_global: Number,
    patient_global_unit: str,
) -> Decimal:
    """DAS28-CRP(4) = 0.56·√TJC28 + 0.28·√SJC28 + 0.36·ln(CRP[mg/L] + 1) + 0.014·GH[mm] + 0.96 (§5.3)."""
    with localcontext(_DECIMAL_CONTEXT):
        joints_crp = _das28_joints_crp(tender_28, swollen_28, crp_mg_l(crp, crp_unit))
        return joints_crp + Decimal("0.014") * vas_mm(patient_global, patient_global_unit) + Decimal("0.96")


def das28_crp3(*, tender_28: Number, swollen_28: Number, crp: Number, crp_unit: str) -> Decimal:
    """DAS28-CRP(3) = [0.56·√TJC28 + 0.28·√SJC28 + 0.36·ln(CRP[mg/L] + 1)]·1.10 + 1.15 (§5.3)."""
    with localcontext(_DECIMAL_CONTEXT):
        return _das28_joints_crp(tender_28, swollen_28, crp_mg_l(crp, crp_unit)) * Decimal("1.10") + Decimal("1.15")


def das28_esr4(
    *, tender_28: Number, swollen_28: Number, esr_mm_h: Number, patient_global: Number, patient_global_unit: str
) -> Decimal:
    """DAS28-ESR(4) = 0.56·√TJC28 + 0.28·√SJC28 + 0.70·ln(ESR[mm/h]) + 0.014·GH[mm] (§5.3).

    ESR must be > 0 mm/h: ln(0) is undefined, and the formula has no "+1" guard.
    """
    esr = to_decimal(esr_mm_h, name="ESR")
    if esr <= 0:
        raise ValueError(f"ESR must be > 0 mm/h for DAS28-ESR, got {esr}")
    with localcontext(_DECIMAL_CONTEXT):
        tjc = _joint_count(tender_28, "tender joint count")
        sjc = _joint_count(swollen_28, "swollen joint count")
        return (
            Decimal("0.56") * tjc.sqrt()
            + Decimal("0.28") * sjc.sqrt()
            + Decimal("0.70") * esr.ln()
            + Decimal("0.014") * vas_mm(patient_global, patient_global_unit)
        )


def cdai(
    *,
    tender_28: Number,
    swollen_28: Number,
    patient_global: Number,
    patient_global_unit: str,
    evaluator_global: Number,
    evaluator_global_unit: str,
) -> Decimal:
    """CDAI = TJC28 + SJC28 + PtGA[0-10 cm] + PhGA[0-10 cm] (docs/domain.md §5.3)."""
    with localcontext(_DECIMAL_CONTEXT):
        return (
            _joint_count(tender_28, "tender joint count")
            + _joint_count(swollen_28, "swollen joint count")
            + vas_cm(patient_global, patient_global_unit)
            + vas_cm(evaluator_global, evaluator_global_unit)
        )


def sdai(
    *,
    tender_28: Number,
    swollen_28: Number,
    patient_global: Number,
    patient_global_unit: str,
    evaluator_global: Number,
    evaluator_global_unit: str,
    crp: Number,
    crp_unit: str,
) -> Decimal:
    """SDAI = TJC28 + SJC28 + PtGA[cm] + PhGA[cm] + CRP[mg/dL] (docs/domain.md §5.3)."""
    clinical = cdai(
        tender_28=tender_28,
        swollen_28=swollen_28,
        patient_global=patient_global,
        patient_global_unit=patient_global_unit,
        evaluator_global=evaluator_global,
        evaluator_global_unit=evaluator_global_unit,
    )
    with localcontext(_DECIMAL_CONTEXT):
        return clinical + crp_mg_dl(crp, crp_unit)


def acr_eular_boolean_remission(
    *,
    tender_28: Number,
    swollen_28: Number,
    crp: Number,
    crp_unit: str,
    patient_global: Number,
    patient_global_unit: str,
    version: str,
) -> bool:
    """ACR/EULAR Boolean remission (docs/domain.md §5.3): TJC ≤ 1, SJC ≤ 1, CRP ≤ 1 mg/dL and PtGA ≤ 1 cm
    (``version="2011"``) or ≤ 2 cm (``version="2022"``). The version has no default on purpose."""
    if version not in BOOLEAN_PTGA_MAX_CM:
        raise ValueError(f"Unknown ACR/EULAR Boolean version {version!r}; expected 2011 or 2022")
    return (
        _joint_count(tender_28, "tender joint count") <= 1
        and _joint_count(swollen_28, "swollen joint count") <= 1
        and crp_mg_dl(crp, crp_unit) <= 1
        and vas_cm(patient_global, patient_global_unit) <= BOOLEAN_PTGA_MAX_CM[version]
    )


def das28_category(score: Number) -> DiseaseActivity:
    """DAS28: remission < 2.6; low ≤ 3.2; moderate > 3.2 to ≤ 5.1; high > 5.1 (docs/domain.md §5.3)."""
    value = to_decimal(score)
    if value < DAS28_REMISSION_BELOW:
        return DiseaseActivity.REMISSION
    if value <= DAS28_LOW_MAX:
        return DiseaseActivity.LOW
    return DiseaseActivity.MODERATE if value <= DAS28_MODERATE_MAX else DiseaseActivity.HIGH


def _inclusive_category(value: Decimal, remission: Decimal, low: Decimal, moderate: Decimal) -> DiseaseActivity:
    if value <= remission:
        return DiseaseActivity.REMISSION
    if value <= low:
        return DiseaseActivity.LOW
    return DiseaseActivity.MODERATE if value <= moderate else DiseaseActivity.HIGH


def sdai_category(score: Number) -> DiseaseActivity:
    """SDAI: remission ≤ 3.3; low ≤ 11; moderate ≤ 26; high > 26 (docs/domain.md §5.3)."""
    return _inclusive_category(to_decimal(score), SDAI_REMISSION_MAX, SDAI_LOW_MAX, SDAI_MODERATE_MAX)


def cdai_category(score: Number) -> DiseaseActivity:
    """CDAI: remission ≤ 2.8; low ≤ 10; moderate ≤ 22; high > 22 (docs/domain.md §5.3)."""
    return _inclusive_category(to_decimal(score), CDAI_REMISSION_MAX, CDAI_LOW_MAX, CDAI_MODERATE_MAX)


# =============================================================================================
# Multiple sclerosis (docs/domain.md §5.1)
# =============================================================================================

DEFAULT_ZERO_BASELINE_THRESHOLD = Decimal("1.5")


def edss_value(value: Number) -> Decimal:
    """A valid EDSS score: 0, then 1.0 to 10.0 in steps of 0.5 (the scale has no 0.5)."""
    score = to_decimal(value, name="EDSS")
    if not 0 <= score <= 10 or (score * 2) != (score * 2).to_integral_value() or score == Decimal("0.5"):
        raise ValueError(f"EDSS must be 0 or 1.0-10.0 in steps of 0.5, got {value!r}")
    return score


def cdw_threshold(
    baseline_edss: Number, *, zero_baseline_threshold: Number | None = DEFAULT_ZERO_BASELINE_THRESHOLD
) -> Decimal:
    """EDSS increase that counts as worsening (docs/domain.md §5.1): ≥ 1.0 if baseline ≤ 5.5, ≥ 0.5 if
    baseline > 5.5, and (common variant, on by default) ≥ 1.5 from a baseline of 0. Pass
    ``zero_baseline_threshold=None`` to use 1.0 from 0 as well."""
    baseline = edss_value(baseline_edss)
    if baseline == 0 and zero_baseline_threshold is not None:
        return to_decimal(zero_baseline_threshold)
    return Decimal("1.0") if baseline <= Decimal("5.5") else Decimal("0.5")


@dataclass(frozen=True)
class EDSSAssessment:
    assessment_date: dt.date
    edss: Number


@dataclass(frozen=True)
class CDWResult:
    """Outcome of :func:`confirmed_disability_worsening`. ``onset_date`` is the first worsened EDSS of the
    confirmed run (the event date for time-to-CDW); ``confirmed_date`` is the confirming assessment."""

    worsened: bool
    onset_date: dt.date | None
    confirmed_date: dt.date | None
    baseline_edss: Decimal
    threshold: Decimal
    confirmation_weeks: int
    excluded_dates: tuple[dt.date, ...]


def _within_relapse_window(day: dt.date, relapse_onsets: Sequence[dt.date], days: int) -> bool:
    return any(dt.timedelta(0) <= day - onset <= dt.timedelta(days=days) for onset in relapse_onsets)


def confirmed_disability_worsening(
    *,
    baseline_edss: Number,
    assessments: Sequence[EDSSAssessment],
    relapse_onsets: Sequence[dt.date] = (),
    confirmation_weeks: int = 12,
    zero_baseline_threshold: Number | None = DEFAULT_ZERO_BASELINE_THRESHOLD,
    relapse_exclusion_days: int = 30,
) -> CDWResult:
    """Confirmed disability worsening from a fixed baseline (docs/domain.md §5.1).

    1. EDSS taken 0-``relapse_exclusion_days`` days after a relapse onset is excluded.
    2. A candidate is an assessment with EDSS − baseline ≥ :func:`cdw_threshold`.
    3. It is confirmed by the first remaining assessment ≥ ``confirmation_weeks`` (12 or 24 per
       protocol; EMA recommends 24) later, provided that assessment and every assessment in between
       still meet the threshold. Otherwise the next candidate is tried.

    A candidate with no assessment far enough ahead is not confirmed (no carry-forward at the end).
    """
    if confirmation_weeks < 1:
        raise ValueError("confirmation_weeks must be at least 1")
    baseline = edss_value(baseline_edss)
    threshold = cdw_threshold(baseline, zero_baseline_threshold=zero_baseline_threshold)
    ordered = sorted(assessments, key=lambda a: a.assessment_date)
    dates = [a.assessment_date for a in ordered]
    if len(set(dates)) != len(dates):
        raise ValueError("two EDSS assessments share a date")
    valid: list[tuple[dt.date, Decimal]] = []
    excluded: list[dt.date] = []
    for assessment in ordered:
        score = edss_value(assessment.edss)
        if _within_relapse_window(assessment.assessment_date, relapse_onsets, relapse_exclusion_days):
            excluded.append(assessment.assessment_date)
        else:
            valid.append((assessment.assessment_date, score))
    target = baseline + threshold
    window = dt.timedelta(weeks=confirmation_weeks)
    for i, (onset, score) in enumerate(valid):
        if score < target:
            continue
        for later, later_score in valid[i + 1 :]:
            if later_score < target:
                break
            if later - onset >= window:
                return CDWResult(True, onset, later, baseline, threshold, confirmation_weeks, tuple(excluded))
    return CDWResult(False, None, None, baseline, threshold, confirmation_weeks, tuple(excluded))


@dataclass(frozen=True)
class MRIScan:
    """One MRI read as stored in ``MRIRead``: counts relative to the comparison scan."""

    scan_date: dt.date
    new_or_enlarging_t2: int
    gd_enhancing: int


@dataclass(frozen=True)
class NEDAResult:
    """NEDA-3 over ``[window_start, window_end]``. ``neda`` is ``None`` when no component shows activity
    but no MRI after the reference date lies in the window, so "no MRI activity" cannot be claimed."""

    neda: bool | None
    relapse_free: bool
    mri_active: bool | None
    cdw: bool
    mri_reference_date: dt.date
    mri_scans_evaluated: int
    window_start: dt.date
    window_end: dt.date


def neda3(
    *,
    window_start: dt.date,
    window_end: dt.date,
    relapse_onsets: Sequence[dt.date],
    mri_scans: Sequence[MRIScan],
    cdw: CDWResult,
    mri_rebaseline_date: dt.date | None = None,
) -> NEDAResult:
    """No evidence of disease activity (NEDA-3, docs/domain.md §5.1) over a window, usually one year:
    no protocol-defined relapse, no new/enlarging T2 and no Gd+ lesions, no CDW.

    * A relapse or a CDW onset on any day of the closed window counts.
    * MRI: scans dated after the reference date and up to ``window_end`` count. The reference is the
      window start, or the rebaselining date (e.g. Month 3-6, §5.1 "Rebaselining") if that is later;
      the scan on the reference date is the new baseline and its lesions do not count.
    """
    if window_end < window_start:
        raise ValueError("window_end is before window_start")
    relapse_free = not any(window_start <= onset <= window_end for onset in relapse_onsets)
    reference = max(window_start, mri_rebaseline_date) if mri_rebaseline_date else window_start
    scans = [s for s in mri_scans if reference < s.scan_date <= window_end]
    for scan in scans:
        if scan.new_or_enlarging_t2 < 0 or scan.gd_enhancing < 0:
            raise ValueError(f"lesion counts must not be negative (scan {scan.scan_date})")
    mri_active = any(s.new_or_enlarging_t2 > 0 or s.gd_enhancing > 0 for s in scans) if scans else None
    worsened = cdw.worsened and cdw.onset_date is not None and window_start <= cdw.onset_date <= window_end
    if not relapse_free or worsened or mri_active:
        neda: bool | None = False
    else:
        neda = None if mri_active is None else True
    return NEDAResult(neda, relapse_free, mri_active, worsened, reference, len(scans), window_start, window_end)


# =============================================================================================
# Versioned remission definitions
# =============================================================================================

JSONScalar: TypeAlias = str | int | bool | None


class DerivedValue(TypedDict):
    """One derived number (or flag), kept with the raw inputs it was computed from."""

    value: JSONScalar
    unit: str
    inputs: dict[str, Any]
    definition: str


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return str(to_decimal(value))
    return str(value)


def _parse_decimal(value: Any) -> Decimal:
    return to_decimal(value)


def _parse_optional_decimal(value: Any) -> Decimal | None:
    return None if value is None else to_decimal(value)


def _parse_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _parse_boolean_version(value: Any) -> str:
    if value not in BOOLEAN_PTGA_MAX_CM:
        raise ValueError(f"expected 2011 or 2022, got {value!r}")
    return str(value)


_Evaluator: TypeAlias = Callable[[Mapping[str, Any], Mapping[str, Any], str], tuple[bool, dict[str, DerivedValue]]]


@dataclass(frozen=True)
class _Rule:
    indication: str
    parameters: Mapping[str, tuple[Any, Callable[[Any], Any]]]
    evaluate: _Evaluator
    description: str


def _dv(value: Any, unit: str, inputs: Mapping[str, Any], definition: str) -> DerivedValue:
    return DerivedValue(value=_json(value), unit=unit, inputs=_json(dict(inputs)), definition=definition)


def _picked(inputs: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: inputs.get(k) for k in keys}


def _vas_input(inputs: Mapping[str, Any], name: str) -> tuple[Any, str, dict[str, Any]]:
    """A VAS given as ``<name>_mm`` (the casebook field) or as ``<name>`` with ``<name>_unit``."""
    if inputs.get(f"{name}_mm") is not None:
        return inputs[f"{name}_mm"], "mm", {f"{name}_mm": inputs[f"{name}_mm"]}
    value, unit = _require(inputs, name), _require(inputs, f"{name}_unit")
    return value, unit, {name: value, f"{name}_unit": unit}


def _criterion(ok: bool, comparison: str, key: str, derived: Mapping[str, DerivedValue]) -> dict[str, DerivedValue]:
    result = dict(derived)
    result["in_remission"] = DerivedValue(
        value=ok,
        unit="",
        inputs={"criterion": comparison, **{k: v["value"] for k, v in derived.items()}},
        definition=key,
    )
    return result


def _eval_idaa1c(p: Mapping[str, Any], inputs: Mapping[str, Any], key: str) -> tuple[bool, dict[str, DerivedValue]]:
    hba1c, unit = _require(inputs, "hba1c"), _require(inputs, "hba1c_unit")
    dose = _require(inputs, "insulin_u_per_kg_day")
    raw = _picked(inputs, "hba1c", "hba1c_unit", "insulin_u_per_kg_day")
    percent = hba1c_percent(hba1c, unit)
    value = idaa1c(hba1c=hba1c, hba1c_unit=unit, insulin_u_per_kg_day=dose)
    ok = value <= p["maximum"]
    derived = {
        "hba1c_percent": _dv(percent, "%", {"hba1c": hba1c, "hba1c_unit": unit}, key),
        "idaa1c": _dv(value, "", raw, key),
    }
    return ok, _criterion(ok, f"idaa1c <= {p['maximum']}", key, derived)


def _eval_insulin_dose(
    p: Mapping[str, Any], inputs: Mapping[str, Any], key: str
) -> tuple[bool, dict[str, DerivedValue]]:
    dose = non_negative(_require(inputs, "insulin_u_per_kg_day"), "insulin dose")
    ok = dose < p["below"]
    derived = {"insulin_u_per_kg_day": _dv(dose, "U/kg/day", _picked(inputs, "insulin_u_per_kg_day"), key)}
    return ok, _criterion(ok, f"insulin_u_per_kg_day < {p['below']}", key, derived)


def _eval_insulin_independence(
    p: Mapping[str, Any], inputs: Mapping[str, Any], key: str
) -> tuple[bool, dict[str, DerivedValue]]:
    days = _parse_int(_require(inputs, "insulin_free_days"))
    rule = InsulinIndependenceRule(p["min_insulin_free_days"], p["hba1c_max_percent"], p["hba1c_max_inclusive"])
    ok = insulin_independent(
        insulin_free_days=days, hba1c=inputs.get("hba1c"), hba1c_unit=inputs.get("hba1c_unit"), rule=rule
    )
    derived = {"insulin_free_days": _dv(days, "days", _picked(inputs, "insulin_free_days"), key)}
    if rule.hba1c_max_percent is not None:
        derived["hba1c_percent"] = _dv(
            hba1c_percent(_require(inputs, "hba1c"), _require(inputs, "hba1c_unit")),
            "%",
            _picked(inputs, "hba1c", "hba1c_unit"),
            key,
        )
    comparison = f"insulin_free_days >= {rule.min_insulin_free_days}"
    if rule.hba1c_max_percent is not None:
        comparison += f" and hba1c_percent {'<=' if rule.hba1c_max_inclusive else '<'} {rule.hba1c_max_percent}"
    return ok, _criterion(ok, comparison, key, derived)


def _mmtt_samples(inputs: Mapping[str, Any]) -> list[CPeptideSample]:
    raw = _require(inputs, "mmtt_samples")
    samples = []
    for item in raw:
        if isinstance(item, CPeptideSample):
            samples.append(item)
        else:
            samples.append(CPeptideSample(item["minute"], item["c_peptide"], item["unit"]))
    return samples


def _eval_mmtt_peak(p: Mapping[str, Any], inputs: Mapping[str, Any], key: str) -> tuple[bool, dict[str, DerivedValue]]:
    samples = _mmtt_samples(inputs)
    summary = mmtt_summary(samples, average_pre_meal_baseline=p["average_pre_meal_baseline"])
    raw = {"mmtt_samples": [{"minute": s.minute, "c_peptide": s.c_peptide, "unit": s.unit} for s in samples]}
    ok = summary.peak_nmol_l >= p["minimum_nmol_l"]
    derived = {
        "c_peptide_peak": _dv(summary.peak_nmol_l, "nmol/L", raw, key),
        "c_peptide_auc": _dv(
            summary.auc_nmol_min_l,
            "nmol/L*min",
            {**raw, "start_minute": summary.start_minute, "end_minute": summary.end_minute},
            key,
        ),
        "c_peptide_mean_auc": _dv(
            summary.mean_auc_nmol_l, "nmol/L", {**raw, "duration_min": summary.duration_min}, key
        ),
        "c_peptide_fasting": _dv(summary.fasting_nmol_l, "nmol/L", raw, key),
        "c_peptide_90": _dv(summary.c_peptide_90_nmol_l, "nmol/L", raw, key),
    }
    return ok, _criterion(ok, f"c_peptide_peak >= {p['minimum_nmol_l']}", key, derived)


def _ra_inputs(inputs: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: _require(inputs, k) for k in keys}


def _eval_das28(formula: str) -> _Evaluator:
    def evaluate(p: Mapping[str, Any], inputs: Mapping[str, Any], key: str) -> tuple[bool, dict[str, DerivedValue]]:
        raw = _ra_inputs(inputs, "tender_joints_28", "swollen_joints_28")
        joints = {"tender_28": raw["tender_joints_28"], "swollen_28": raw["swollen_joints_28"]}
        if formula == "das28_crp3":
            raw.update(_ra_inputs(inputs, "crp", "crp_unit"))
            score = das28_crp3(**joints, crp=raw["crp"], crp_unit=raw["crp_unit"])
        else:
            gh, gh_unit, gh_raw = _vas_input(inputs, "patient_global")
            raw.update(gh_raw)
            if formula == "das28_crp4":
                raw.update(_ra_inputs(inputs, "crp", "crp_unit"))
                score = das28_crp4(
                    **joints, crp=raw["crp"], crp_unit=raw["crp_unit"], patient_global=gh, patient_global_unit=gh_unit
                )
            else:
                raw["esr_mm_h"] = _require(inputs, "esr_mm_h")
                score = das28_esr4(**joints, esr_mm_h=raw["esr_mm_h"], patient_global=gh, patient_global_unit=gh_unit)
        ok = score < p["below"]
        derived = {formula: _dv(score, "", raw, key), f"{formula}_category": _dv(das28_category(score), "", raw, key)}
        return ok, _criterion(ok, f"{formula} < {p['below']}", key, derived)

    return evaluate


def _eval_index(index: str) -> _Evaluator:
    def evaluate(p: Mapping[str, Any], inputs: Mapping[str, Any], key: str) -> tuple[bool, dict[str, DerivedValue]]:
        joints = _ra_inputs(inputs, "tender_joints_28", "swollen_joints_28")
        ptga, ptga_unit, ptga_raw = _vas_input(inputs, "patient_global")
        phga, phga_unit, phga_raw = _vas_input(inputs, "evaluator_global")
        raw: dict[str, Any] = {**joints, **ptga_raw, **phga_raw}
        common = {
            "tender_28": joints["tender_joints_28"],
            "swollen_28": joints["swollen_joints_28"],
            "patient_global": ptga,
            "patient_global_unit": ptga_unit,
            "evaluator_global": phga,
            "evaluator_global_unit": phga_unit,
        }
        if index == "sdai":
            raw.update(_ra_inputs(inputs, "crp", "crp_unit"))
            score = sdai(**common, crp=raw["crp"], crp_unit=raw["crp_unit"])
            category = sdai_category(score)
        else:
            score = cdai(**common)
            category = cdai_category(score)
        ok = score <= p["maximum"]
        derived = {index: _dv(score, "", raw, key), f"{index}_category": _dv(category, "", raw, key)}
        return ok, _criterion(ok, f"{index} <= {p['maximum']}", key, derived)

    return evaluate


def _eval_boolean(p: Mapping[str, Any], inputs: Mapping[str, Any], key: str) -> tuple[bool, dict[str, DerivedValue]]:
    raw = _ra_inputs(inputs, "tender_joints_28", "swollen_joints_28", "crp", "crp_unit")
    ptga, ptga_unit, ptga_raw = _vas_input(inputs, "patient_global")
    raw.update(ptga_raw)
    ok = acr_eular_boolean_remission(
        tender_28=raw["tender_joints_28"],
        swollen_28=raw["swollen_joints_28"],
        crp=raw["crp"],
        crp_unit=raw["crp_unit"],
        patient_global=ptga,
        patient_global_unit=ptga_unit,
        version=p["version"],
    )
    derived = {
        "crp_mg_dl": _dv(crp_mg_dl(raw["crp"], raw["crp_unit"]), "mg/dL", _picked(raw, "crp", "crp_unit"), key),
        "patient_global_cm": _dv(vas_cm(ptga, ptga_unit), "cm", ptga_raw, key),
    }
    limit = BOOLEAN_PTGA_MAX_CM[p["version"]]
    comparison = f"tender <= 1 and swollen <= 1 and crp_mg_dl <= 1 and patient_global_cm <= {limit} ({p['version']})"
    return ok, _criterion(ok, comparison, key, derived)


def _as_date(value: Any, name: str) -> dt.date:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise ValueError(f"{name} must be a date, got {value!r}")
    return value


def _eval_neda3(p: Mapping[str, Any], inputs: Mapping[str, Any], key: str) -> tuple[bool, dict[str, DerivedValue]]:
    start = _as_date(_require(inputs, "window_start"), "window_start")
    end = _as_date(_require(inputs, "window_end"), "window_end")
    relapses = [_as_date(d, "relapse onset") for d in inputs.get("relapse_onsets") or ()]
    edss = [
        a if isinstance(a, EDSSAssessment) else EDSSAssessment(a["assessment_date"], a["edss"])
        for a in inputs.get("edss_assessments") or ()
    ]
    scans = [
        s if isinstance(s, MRIScan) else MRIScan(s["scan_date"], s["new_or_enlarging_t2"], s["gd_enhancing"])
        for s in inputs.get("mri_scans") or ()
    ]
    cdw = confirmed_disability_worsening(
        baseline_edss=_require(inputs, "baseline_edss"),
        assessments=edss,
        relapse_onsets=relapses,
        confirmation_weeks=p["confirmation_weeks"],
        zero_baseline_threshold=p["zero_baseline_threshold"],
        relapse_exclusion_days=p["relapse_exclusion_days"],
    )
    result = neda3(
        window_start=start,
        window_end=end,
        relapse_onsets=relapses,
        mri_scans=scans,
        cdw=cdw,
        mri_rebaseline_date=(
            _as_date(inputs["mri_rebaseline_date"], "mri_rebaseline_date")
            if inputs.get("mri_rebaseline_date")
            else None
        ),
    )
    if result.neda is None:
        raise NotEvaluableError(f"no MRI after {result.mri_reference_date} within the NEDA window ending {end}")
    window = {"window_start": start, "window_end": end}
    edss_raw = {
        "baseline_edss": inputs.get("baseline_edss"),
        "edss_assessments": [{"assessment_date": a.assessment_date, "edss": a.edss} for a in edss],
        "relapse_onsets": relapses,
    }
    derived = {
        "relapse_free": _dv(result.relapse_free, "", {**window, "relapse_onsets": relapses}, key),
        "mri_active": _dv(
            result.mri_active,
            "",
            {
                **window,
                "mri_reference_date": result.mri_reference_date,
                "mri_scans": [
                    {
                        "scan_date": s.scan_date,
                        "new_or_enlarging_t2": s.new_or_enlarging_t2,
                        "gd_enhancing": s.gd_enhancing,
                    }
                    for s in scans
                ],
            },
            key,
        ),
        "cdw": _dv(result.cdw, "", {**window, **edss_raw, "cdw_threshold": cdw.threshold}, key),
        "cdw_onset_date": _dv(cdw.onset_date, "date", edss_raw, key),
        "cdw_confirmed_date": _dv(cdw.confirmed_date, "date", edss_raw, key),
    }
    return bool(result.neda), _criterion(bool(result.neda), "relapse_free and not mri_active and not cdw", key, derived)


_RULES: Mapping[str, _Rule] = MappingProxyType(
    {
        "idaa1c": _Rule(
            "T1D", {"maximum": (Decimal("9"), _parse_decimal)}, _eval_idaa1c, "IDAA1c ≤ maximum (Mortensen 2009)"
        ),
        "insulin_dose_below": _Rule(
            "T1D",
            {"below": (MAREK_TRZONKOWSKA_INSULIN_MAX_U_PER_KG_DAY, _parse_decimal)},
            _eval_insulin_dose,
            "Total insulin < below U/kg/day (Marek-Trzonkowska)",
        ),
        "insulin_independence": _Rule(
            "T1D",
            {
                "min_insulin_free_days": (14, _parse_int),
                "hba1c_max_percent": (Decimal("7.0"), _parse_optional_decimal),
                "hba1c_max_inclusive": (False, _parse_bool),
            },
            _eval_insulin_independence,
            "No exogenous insulin for N days with HbA1c below a limit",
        ),
        "mmtt_peak_c_peptide": _Rule(
            "T1D",
            {
                "minimum_nmol_l": (C_PEPTIDE_PEAK_MEANINGFUL_NMOL_L, _parse_decimal),
                "average_pre_meal_baseline": (False, _parse_bool),
            },
            _eval_mmtt_peak,
            "Peak stimulated C-peptide ≥ minimum nmol/L",
        ),
        "das28_crp4": _Rule(
            "RA", {"below": (DAS28_REMISSION_BELOW, _parse_decimal)}, _eval_das28("das28_crp4"), "DAS28-CRP(4) < below"
        ),
        "das28_crp3": _Rule(
            "RA", {"below": (DAS28_REMISSION_BELOW, _parse_decimal)}, _eval_das28("das28_crp3"), "DAS28-CRP(3) < below"
        ),
        "das28_esr4": _Rule(
            "RA", {"below": (DAS28_REMISSION_BELOW, _parse_decimal)}, _eval_das28("das28_esr4"), "DAS28-ESR(4) < below"
        ),
        "sdai": _Rule("RA", {"maximum": (SDAI_REMISSION_MAX, _parse_decimal)}, _eval_index("sdai"), "SDAI ≤ maximum"),
        "cdai": _Rule("RA", {"maximum": (CDAI_REMISSION_MAX, _parse_decimal)}, _eval_index("cdai"), "CDAI ≤ maximum"),
        "acr_eular_boolean": _Rule(
            "RA",
            {"version": ("2011", _parse_boolean_version)},
            _eval_boolean,
            "ACR/EULAR Boolean remission (2011: PtGA ≤ 1 cm; 2022: PtGA ≤ 2 cm)",
        ),
        "neda3": _Rule(
            "MS",
            {
                "confirmation_weeks": (12, _parse_int),
                "zero_baseline_threshold": (DEFAULT_ZERO_BASELINE_THRESHOLD, _parse_optional_decimal),
                "relapse_exclusion_days": (30, _parse_int),
            },
            _eval_neda3,
            "NEDA-3: no relapse, no new/enlarging T2 or Gd+ lesion, no CDW over the window",
        ),
    }
)

REMISSION_RULES: tuple[str, ...] = tuple(_RULES)


def rule_description(rule: str) -> str:
    """The rule in words, e.g. "SDAI ≤ maximum" (its thresholds are the rule's parameters)."""
    return _RULES[rule].description


@dataclass(frozen=True)
class RemissionDefinition:
    """A versioned remission definition, storable as JSON (``to_dict``/``from_dict``).

    ``rule`` selects the algorithm (one of :data:`REMISSION_RULES`); ``parameters`` override its
    defaults (thresholds as strings or Decimals, so JSON round-trips exactly). Unknown rules, a rule of
    another indication and unknown or malformed parameters raise ``ValueError`` at construction, so a
    bad definition is refused when it is saved, not when the first participant is evaluated.
    """

    indication: str
    name: str
    version: str
    rule: str
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = _RULES.get(self.rule)
        if spec is None:
            raise ValueError(f"Unknown remission rule {self.rule!r}; expected one of {', '.join(_RULES)}")
        if self.indication != spec.indication:
            raise ValueError(f"Rule {self.rule!r} applies to {spec.indication}, not {self.indication}")
        unknown = sorted(set(self.parameters) - set(spec.parameters))
        if unknown:
            raise ValueError(f"Unknown parameter(s) for {self.rule}: {', '.join(unknown)}")
        for name, value in self.parameters.items():
            try:
                spec.parameters[name][1](value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"Parameter {name!r} of {self.rule}: {exc}") from None
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))

    @property
    def key(self) -> str:
        """Stable identifier stored next to every derived value, e.g. ``RA/SDAI remission@1``."""
        return f"{self.indication}/{self.name}@{self.version}"

    def resolved_parameters(self) -> dict[str, Any]:
        """Defaults of the rule, overridden by ``parameters``, parsed to their types."""
        spec = _RULES[self.rule]
        return {name: parse(self.parameters.get(name, default)) for name, (default, parse) in spec.parameters.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "indication": self.indication,
            "name": self.name,
            "version": self.version,
            "rule": self.rule,
            "parameters": _json(dict(self.parameters)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RemissionDefinition:
        return cls(data["indication"], data["name"], data["version"], data["rule"], dict(data.get("parameters") or {}))


def in_remission(
    definition: RemissionDefinition, assessment_inputs: Mapping[str, Any]
) -> tuple[bool, dict[str, DerivedValue]]:
    """Evaluate ``definition`` on one assessment.

    ``assessment_inputs`` uses the casebook field names (``hba1c``, ``hba1c_unit``,
    ``insulin_u_per_kg_day``, ``tender_joints_28``, ``swollen_joints_28``, ``crp``, ``crp_unit``,
    ``esr_mm_h``, ``patient_global_mm``, ``evaluator_global_mm``; a VAS may instead be given as
    ``patient_global`` + ``patient_global_unit``), plus ``mmtt_samples``, ``insulin_free_days`` and, for
    NEDA-3, ``window_start``, ``window_end``, ``baseline_edss``, ``edss_assessments``,
    ``relapse_onsets``, ``mri_scans`` and optionally ``mri_rebaseline_date``.

    Returns the boolean and a dict of derived values; each carries its unit, the raw inputs it was
    computed from and ``definition.key``. The ``in_remission`` entry records the comparison made.
    Raises :class:`NotEvaluableError` when a needed input is missing.
    """
    spec = _RULES[definition.rule]
    return spec.evaluate(definition.resolved_parameters(), assessment_inputs, definition.key)


# =============================================================================================
# Episodes and time-to-event rows (docs/domain.md §5 generic algorithm; Part B §2)
# =============================================================================================

DEFAULT_FOLLOW_UP_DAYS = 730


def administrative_cutoff(
    infusion_date: dt.date, *, follow_up_days: int = DEFAULT_FOLLOW_UP_DAYS, data_cut_date: dt.date | None = None
) -> dt.date:
    """The administrative censoring date: infusion + ``follow_up_days`` (24 months = 730 days,
    docs/domain.md Part B §2), or the data-cut date if earlier. Always explicit: never "today"."""
    end = infusion_date + dt.timedelta(days=follow_up_days)
    return min(end, data_cut_date) if data_cut_date is not None else end


@dataclass(frozen=True)
class VisitRemission:
    """A scheduled assessment. A missed or non-evaluable visit has ``adequate=False``; it still
    counts towards the "≥ 2 consecutive missed visits" censoring rule."""

    visit_date: dt.date
    in_remission: bool | None
    adequate: bool = True

    def __post_init__(self) -> None:
        if self.adequate and self.in_remission is None:
            raise ValueError(f"adequate visit on {self.visit_date} has no remission status")


class MissingVisitPolicy(StrEnum):
    """How a non-adequate visit enters the episode algorithm (docs/domain.md §5: a SAP option)."""

    IGNORE = "ignore"
    NOT_IN_REMISSION = "not_in_remission"


@dataclass(frozen=True)
class EpisodeRules:
    """Confirmation options. A confirming visit is the first later visit at least
    ``*_confirmation_min_days`` after the candidate; it and every visit in between must agree."""

    confirm_onset: bool = False
    onset_confirmation_min_days: int = 0
    confirm_loss: bool = False
    loss_confirmation_min_days: int = 0
    missing_visits: MissingVisitPolicy = MissingVisitPolicy.IGNORE


@dataclass(frozen=True)
class RemissionEpisode:
    """One remission episode. ``loss_date`` is the first visit not in remission (the relapse date);
    ``None`` means the episode was still open at the last visit."""

    onset_date: dt.date
    onset_confirmed_on: dt.date | None
    last_in_remission_date: dt.date
    loss_date: dt.date | None
    loss_confirmed_on: dt.date | None


def _statuses(visits: Sequence[VisitRemission], policy: MissingVisitPolicy) -> list[tuple[dt.date, bool]]:
    ordered = sorted(visits, key=lambda v: v.visit_date)
    dates = [v.visit_date for v in ordered]
    if len(set(dates)) != len(dates):
        raise ValueError("two visits share a date")
    result = []
    for visit in ordered:
        if visit.adequate:
            result.append((visit.visit_date, bool(visit.in_remission)))
        elif policy == MissingVisitPolicy.NOT_IN_REMISSION:
            result.append((visit.visit_date, False))
    return result


def _confirming_index(seq: list[tuple[dt.date, bool]], i: int, status: bool, min_days: int) -> int | None:
    due = seq[i][0] + dt.timedelta(days=min_days)
    for j in range(i + 1, len(seq)):
        if seq[j][1] != status:
            return None
        if seq[j][0] >= due:
            return j
    return None


def remission_episodes(
    visits: Sequence[VisitRemission], rules: EpisodeRules = EpisodeRules()
) -> list[RemissionEpisode]:
    """Remission episodes from a participant's per-visit remission booleans (docs/domain.md §5).

    * Onset = first visit in remission; with ``confirm_onset`` the next visit ≥ N days later must
      also be in remission (the onset date stays the first visit).
    * Loss = first visit not in remission after onset; with ``confirm_loss`` it must be confirmed the
      same way. An unconfirmed dip is ignored; an unconfirmed dip at the last visit leaves the episode
      open (censored at the last visit in remission).
    * After a loss a new episode may start.
    """
    seq = _statuses(visits, rules.missing_visits)
    episodes: list[RemissionEpisode] = []
    i = 0
    while i < len(seq):
        onset, status = seq[i]
        if not status:
            i += 1
            continue
        onset_confirmed_on = None
        if rules.confirm_onset:
            j = _confirming_index(seq, i, True, rules.onset_confirmation_min_days)
            if j is None:
                i += 1
                continue
            onset_confirmed_on = seq[j][0]
        last_in, loss, loss_confirmed_on, loss_index = onset, None, None, None
        k = i + 1
        while k < len(seq):
            day, status = seq[k]
            if status:
                last_in = day
                k += 1
                continue
            if rules.confirm_loss:
                m = _confirming_index(seq, k, False, rules.loss_confirmation_min_days)
                if m is None:
                    resumed = next((n for n in range(k + 1, len(seq)) if seq[n][1]), None)
                    if resumed is None:
                        break
                    k = resumed
                    continue
                loss_confirmed_on = seq[m][0]
            loss, loss_index = day, k
            break
        episodes.append(RemissionEpisode(onset, onset_confirmed_on, last_in, loss, loss_confirmed_on))
        if loss_index is None:
            break
        i = loss_index + 1
    return episodes


def days_in_remission(episodes: Sequence[RemissionEpisode], *, start: dt.date, end: dt.date) -> int:
    """Cumulative days in remission within ``[start, end)`` (e.g. infusion to infusion + 730 days).

    A closed episode counts from its onset up to (not including) its loss visit; an open one up to its
    last visit in remission. Between visits the status is assumed unchanged.
    """
    total = 0
    for episode in episodes:
        stop = episode.loss_date or episode.last_in_remission_date
        lo, hi = max(episode.onset_date, start), min(stop, end)
        total += max((hi - lo).days, 0)
    return total


class NonResponderPolicy(StrEnum):
    """Time to relapse (ITT) for a participant never in remission: a SAP decision, so no default.

    ``EVENT_AT_ORIGIN`` mirrors the FDA EFS convention (induction failure is an event on day 0/1);
    ``EVENT_AT_FIRST_ASSESSMENT`` dates the failure at the first adequate assessment; ``CENSOR`` censors
    at the last adequate assessment; ``EXCLUDE`` returns no row.
    """

    CENSOR = "censor"
    EVENT_AT_FIRST_ASSESSMENT = "event_at_first_assessment"
    EVENT_AT_ORIGIN = "event_at_origin"
    EXCLUDE = "exclude"


class EventCode(IntEnum):
    """``event_observed`` coding for Aalen–Johansen (docs/domain.md Part B §1): 0 censored, then causes."""

    CENSORED = 0
    RELAPSE = 1
    DEATH = 2
    RETREATMENT = 3
    RESCUE = 4


class RescueStrategy(StrEnum):
    """How the start of a rescue therapy (or a new disease-modifying therapy) enters the durability
    endpoints: an intercurrent event, handled per ICH E9(R1) as the SAP says.

    * ``EVENT`` (composite): rescue ends remission; it is an event of time to relapse (coded 4).
    * ``COMPETING`` (while on treatment): the KM row is censored at the last adequate assessment on or
      before the rescue start; Aalen–Johansen sees rescue as a competing event (coded 4) at its date.
    * ``CENSOR`` (hypothetical): follow-up ends at the rescue start, like a withdrawal: censored at the
      last adequate assessment on or before it, for both KM and Aalen–Johansen.
    * ``IGNORE`` (treatment policy): assessments after rescue count like any other.
    """

    EVENT = "event"
    COMPETING = "competing"
    CENSOR = "censor"
    IGNORE = "ignore"


@dataclass(frozen=True)
class FollowUp:
    """One participant's follow-up, as dates. ``cutoff_date`` is the administrative cut (see
    :func:`administrative_cutoff`); nothing after it is used. ``relapse_dates`` are events dated outside
    the visit grid (e.g. MS ``Relapse.onset_date``). ``retreatment_date`` is a further infusion of the
    cell product; ``rescue_date`` the first start of a rescue therapy or new DMT (see
    :class:`RescueStrategy`)."""

    infusion_date: dt.date
    cutoff_date: dt.date
    visits: Sequence[VisitRemission]
    relapse_dates: Sequence[dt.date] = ()
    death_date: dt.date | None = None
    retreatment_date: dt.date | None = None
    withdrawal_date: dt.date | None = None
    rescue_date: dt.date | None = None


@dataclass(frozen=True)
class DurabilityRules:
    """SAP options for the time-to-event derivations (docs/domain.md Part B §2)."""

    non_responders: NonResponderPolicy
    episodes: EpisodeRules = EpisodeRules()  # frozen, so sharing the default instance is safe
    missed_visits_censor_threshold: int = 2
    death_is_event: bool = False
    retreatment_is_event: bool = False
    rescue: RescueStrategy = RescueStrategy.EVENT


@dataclass(frozen=True)
class TimeToEventRow:
    """One ADTTE-style row.

    * ``duration_days`` = ``end_date − origin_date`` on the protocol-day clock (origin = Day 0), so the
      24-month horizon (730 days) coincides with the administrative cut. ``aval`` is the ADaM
      ``ADT − STARTDT + 1`` (docs/domain.md Part B §2) for export.
    * ``event`` (1/0) is for Kaplan–Meier and Cox; ``cnsr`` = 1 − ``event`` (ADaM: 1 = censored).
    * ``event_code``/``cr_duration_days`` are for Aalen–Johansen: follow-up ends at the first of relapse,
      death or retreatment, which may be later than the KM censoring date (a death not counted as an
      event censors the KM row at the last adequate assessment, but is a competing event at its date).
    * ``interval_lower_days``/``interval_upper_days`` bracket the event for the Turnbull sensitivity
      analysis (relapse is seen only at visits); upper ``None`` means right-censored.
    """

    paramcd: str
    origin_date: dt.date
    end_date: dt.date
    duration_days: int
    event: int
    event_code: int
    cr_end_date: dt.date
    cr_duration_days: int
    interval_lower_days: int
    interval_upper_days: int | None
    reason: str

    @property
    def aval(self) -> int:
        return self.duration_days + 1

    @property
    def cnsr(self) -> int:
        return 1 - self.event

    def as_record(self) -> dict[str, Any]:
        """JSON-ready dict with the derived ADaM fields, for a DataFrame or a result row."""
        record = {name: _json(getattr(self, name)) for name in self.__dataclass_fields__}
        record.update(aval=self.aval, cnsr=self.cnsr)
        return record


@dataclass(frozen=True)
class _Candidate:
    day: dt.date
    code: EventCode
    description: str
    # The last visit known event-free, when the event was detected at a visit (interval censoring).
    detected_after: dt.date | None = None


def _consecutive_missed_before(visits: Sequence[VisitRemission], day: dt.date) -> int:
    missed = 0
    for visit in sorted((v for v in visits if v.visit_date < day), key=lambda v: v.visit_date, reverse=True):
        if visit.adequate:
            break
        missed += 1
    return missed


def _last_adequate(visits: Sequence[VisitRemission], *, on_or_before: dt.date, origin: dt.date) -> dt.date:
    dates = [v.visit_date for v in visits if v.adequate and v.visit_date <= on_or_before]
    return max(dates) if dates else origin


def _row(
    *,
    paramcd: str,
    origin: dt.date,
    visits: Sequence[VisitRemission],
    candidates: Sequence[_Candidate],
    rules: DurabilityRules,
    event_codes: frozenset[EventCode],
    censor_note: str,
) -> TimeToEventRow:
    def days(day: dt.date) -> int:
        return (day - origin).days

    last_visit = max((v.visit_date for v in visits), default=origin)
    censor_day = _last_adequate(visits, on_or_before=last_visit, origin=origin)
    first = min(candidates, key=lambda c: (c.day, c.code), default=None)
    if first is None:
        reason = f"censored at last adequate assessment{censor_note}"
        return TimeToEventRow(
            paramcd,
            origin,
            censor_day,
            days(censor_day),
            0,
            0,
            censor_day,
            days(censor_day),
            days(censor_day),
            None,
            reason,
        )
    missed = _consecutive_missed_before(visits, first.day)
    if missed >= rules.missed_visits_censor_threshold:
        day = _last_adequate(visits, on_or_before=first.day - dt.timedelta(days=1), origin=origin)
        reason = f"{first.description} after {missed} consecutive missed visits: censored at last adequate assessment"
        return TimeToEventRow(paramcd, origin, day, days(day), 0, 0, day, days(day), days(day), None, reason)
    if first.code in event_codes:
        lower = days(first.detected_after) if first.detected_after is not None else days(first.day)
        return TimeToEventRow(
            paramcd,
            origin,
            first.day,
            days(first.day),
            1,
            int(first.code),
            first.day,
            days(first.day),
            lower,
            days(first.day),
            first.description,
        )
    # A competing event that is not part of this endpoint: censor the KM row at the last adequate
    # assessment before it; Aalen–Johansen sees the competing event at its own date.
    day = _last_adequate(visits, on_or_before=first.day, origin=origin)
    reason = f"{first.description}: censored at last adequate assessment"
    return TimeToEventRow(
        paramcd, origin, day, days(day), 0, int(first.code), first.day, days(first.day), days(day), None, reason
    )


def _rescue_ends_follow_up(follow_up: FollowUp, rules: DurabilityRules) -> bool:
    return (
        rules.rescue == RescueStrategy.CENSOR
        and follow_up.rescue_date is not None
        and follow_up.infusion_date <= follow_up.rescue_date <= follow_up.cutoff_date
    )


def _in_follow_up(follow_up: FollowUp, rules: DurabilityRules) -> tuple[list[VisitRemission], dt.date, bool]:
    """Visits inside the analysis window, the last day of the window, and whether anything was cut.
    The window ends at the cut-off, at withdrawal, and at a rescue start under the hypothetical
    strategy (assessments on that day are kept: they are what prompted the rescue)."""
    last_day = follow_up.cutoff_date
    if follow_up.withdrawal_date is not None:
        last_day = min(last_day, follow_up.withdrawal_date)
    if _rescue_ends_follow_up(follow_up, rules):
        last_day = min(last_day, follow_up.rescue_date)
    visits = [v for v in follow_up.visits if follow_up.infusion_date <= v.visit_date <= last_day]
    dated = [v.visit_date for v in follow_up.visits] + list(follow_up.relapse_dates)
    dated += [d for d in (follow_up.death_date, follow_up.retreatment_date, follow_up.rescue_date) if d is not None]
    cut = any(d > follow_up.cutoff_date for d in dated)
    return visits, last_day, cut


def _censor_note(follow_up: FollowUp, cut: bool, rules: DurabilityRules) -> str:
    withdrawn = follow_up.withdrawal_date is not None and follow_up.withdrawal_date <= follow_up.cutoff_date
    rescued = _rescue_ends_follow_up(follow_up, rules)
    if withdrawn and (not rescued or follow_up.withdrawal_date < follow_up.rescue_date):
        return " (withdrawn or lost to follow-up)"
    if rescued:
        return " (rescue therapy: hypothetical strategy)"
    return f" (administrative cut-off {follow_up.cutoff_date.isoformat()})" if cut else ""


def _competing(follow_up: FollowUp, start: dt.date, last_day: dt.date, rules: DurabilityRules) -> list[_Candidate]:
    result = []
    if follow_up.death_date is not None and start <= follow_up.death_date <= last_day:
        result.append(_Candidate(follow_up.death_date, EventCode.DEATH, "death"))
    if follow_up.retreatment_date is not None and start <= follow_up.retreatment_date <= last_day:
        result.append(_Candidate(follow_up.retreatment_date, EventCode.RETREATMENT, "retreatment"))
    rescue = follow_up.rescue_date
    counted = rules.rescue in (RescueStrategy.EVENT, RescueStrategy.COMPETING)
    if counted and rescue is not None and start <= rescue <= last_day:
        result.append(_Candidate(rescue, EventCode.RESCUE, "rescue therapy"))
    return result


def _endpoint_episodes(follow_up: FollowUp, visits: list[VisitRemission], rules: DurabilityRules):
    """The remission episodes an endpoint is built on. When rescue is an event or a competing event,
    a remission that starts after the rescue is the rescue's effect, not the infusion's: only the
    visits up to the rescue start count (the hypothetical strategy already ends the window there)."""
    rescue = follow_up.rescue_date
    if rescue is not None and rules.rescue in (RescueStrategy.EVENT, RescueStrategy.COMPETING):
        visits = [v for v in visits if v.visit_date <= rescue]
    return remission_episodes(visits, rules.episodes)


def _event_codes(rules: DurabilityRules, *, death_is_event: bool) -> frozenset[EventCode]:
    codes = {EventCode.RELAPSE}
    if death_is_event:
        codes.add(EventCode.DEATH)
    if rules.retreatment_is_event:
        codes.add(EventCode.RETREATMENT)
    if rules.rescue == RescueStrategy.EVENT:
        codes.add(EventCode.RESCUE)
    return frozenset(codes)


def _previous_adequate(visits: Sequence[VisitRemission], day: dt.date) -> dt.date | None:
    dates = [v.visit_date for v in visits if v.adequate and v.visit_date < day]
    return max(dates) if dates else None


def time_to_relapse(follow_up: FollowUp, rules: DurabilityRules) -> TimeToEventRow | None:
    """TTREL: time from infusion to first relapse, ITT (docs/domain.md Part B §2).

    Event: loss of the first remission episode (confirmed if the rules say so) or a dated relapse,
    whichever is first; for a participant never in remission, :class:`NonResponderPolicy` decides.
    Death and retreatment are events only if ``rules.death_is_event``/``retreatment_is_event``
    (composite strategy); otherwise they censor the KM row and are coded 2/3 for Aalen–Johansen.

    Censoring: the last adequate assessment — also for withdrawal or loss to follow-up (not the
    withdrawal date), and when the first event follows ≥ ``missed_visits_censor_threshold``
    consecutive missed visits (then the last adequate assessment before the gap). Nothing after
    ``cutoff_date`` is used, so the censoring date is min(last assessment, cut-off).
    Relapse and a competing event on the same day count as relapse.
    """
    origin = follow_up.infusion_date
    visits, last_day, cut = _in_follow_up(follow_up, rules)
    episodes = _endpoint_episodes(follow_up, visits, rules)
    candidates: list[_Candidate] = []
    if episodes and episodes[0].loss_date is not None:
        loss = episodes[0].loss_date
        candidates.append(_Candidate(loss, EventCode.RELAPSE, "loss of remission", _previous_adequate(visits, loss)))
    relapse = min((d for d in follow_up.relapse_dates if origin <= d <= last_day), default=None)
    if relapse is not None:
        candidates.append(_Candidate(relapse, EventCode.RELAPSE, "relapse"))
    if not episodes:
        policy = rules.non_responders
        if policy == NonResponderPolicy.EXCLUDE and relapse is None:
            return None
        if policy == NonResponderPolicy.EVENT_AT_ORIGIN:
            candidates.append(_Candidate(origin, EventCode.RELAPSE, "never in remission: failure at origin"))
        elif policy == NonResponderPolicy.EVENT_AT_FIRST_ASSESSMENT:
            first = min((v.visit_date for v in visits if v.adequate), default=None)
            if first is not None:
                candidates.append(
                    _Candidate(
                        first, EventCode.RELAPSE, "never in remission: failure at first adequate assessment", origin
                    )
                )
    candidates += _competing(follow_up, origin, last_day, rules)
    return _row(
        paramcd="TTREL",
        origin=origin,
        visits=visits,
        candidates=candidates,
        rules=rules,
        event_codes=_event_codes(rules, death_is_event=rules.death_is_event),
        censor_note=_censor_note(follow_up, cut, rules),
    )


def duration_of_remission(
    follow_up: FollowUp, rules: DurabilityRules, *, death_is_event: bool = True
) -> TimeToEventRow | None:
    """DOR: from the onset of the first remission episode to its loss or death (docs/domain.md Part B §2),
    responders only (``None`` otherwise). Descriptive: responder-only comparisons between arms are
    biased (Part B §2). Censoring as for :func:`time_to_relapse`; retreatment is an event only if
    ``rules.retreatment_is_event``, rescue per ``rules.rescue``."""
    visits, last_day, cut = _in_follow_up(follow_up, rules)
    episodes = _endpoint_episodes(follow_up, visits, rules)
    if not episodes:
        return None
    onset = episodes[0].onset_date
    after_onset = [v for v in visits if v.visit_date >= onset]
    candidates: list[_Candidate] = []
    if episodes[0].loss_date is not None:
        loss = episodes[0].loss_date
        candidates.append(_Candidate(loss, EventCode.RELAPSE, "loss of remission", _previous_adequate(visits, loss)))
    relapse = min((d for d in follow_up.relapse_dates if onset < d <= last_day), default=None)
    if relapse is not None:
        candidates.append(_Candidate(relapse, EventCode.RELAPSE, "relapse"))
    candidates += _competing(follow_up, onset, last_day, rules)
    return _row(
        paramcd="DOR",
        origin=onset,
        visits=after_onset,
        candidates=candidates,
        rules=rules,
        event_codes=_event_codes(rules, death_is_event=death_is_event),
        censor_note=_censor_note(follow_up, cut, rules),
    )


# Landmarks of docs/domain.md Part B §2 (3 and 6 months, on the protocol-day clock).
LANDMARK_DAYS: tuple[float, ...] = (91.3125, 182.625)


@dataclass(frozen=True)
class ParticipantOutcome:
    """Everything the analyses need of one participant, besides who they are.

    * ``row``: the endpoint's time-to-event row.
    * ``onset_day``/``exit_day``/``exit_event``: the progressive three-state history used for the
      probability of being in remission (0 "not yet in remission" → 1 "in remission" → 2 "relapsed"):
      first remission onset (days from infusion; ``None`` if never, or not before leaving), and the
      time-to-relapse row with non-responders censored (so the curve does not depend on that SAP
      choice).
    * ``in_remission_at_landmark``: in a remission episode at each of :data:`LANDMARK_DAYS` (the last
      adequate assessment on or before it was in an episode).
    * ``days_in_remission``: observed days in remission from infusion to the cut-off (descriptive; the
      estimator that handles censoring is the area under the probability-in-remission curve).
    """

    row: TimeToEventRow
    assessments: int
    adequate_assessments: int
    responder: bool
    days_in_remission: int
    onset_day: int | None
    exit_day: int
    exit_event: int
    in_remission_at_landmark: tuple[bool, ...]


def participant_outcome(
    follow_up: FollowUp,
    rules: DurabilityRules,
    *,
    endpoint: str = "time_to_relapse",
    dor_death_is_event: bool = True,
    landmarks: Sequence[float] = LANDMARK_DAYS,
) -> ParticipantOutcome | None:
    """One participant's outcome for ``endpoint`` (``time_to_relapse`` or ``duration_of_remission``);
    ``None`` when the SAP excludes them (a non-responder under ``exclude``, anyone without remission
    for DOR)."""
    if endpoint == "time_to_relapse":
        row = time_to_relapse(follow_up, rules)
    elif endpoint == "duration_of_remission":
        row = duration_of_remission(follow_up, rules, death_is_event=dor_death_is_event)
    else:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    if row is None:
        return None
    visits, last_day, _cut = _in_follow_up(follow_up, rules)
    end = follow_up.cutoff_date
    if rules.rescue != RescueStrategy.IGNORE and follow_up.rescue_date is not None:
        # Remission "while on treatment" ends when rescue starts, whatever the endpoint's strategy.
        end = min(end, follow_up.rescue_date)
        visits = [v for v in visits if v.visit_date <= follow_up.rescue_date]
    episodes = remission_episodes(visits, rules.episodes)
    itt = row
    if endpoint != "time_to_relapse" or (not episodes and rules.non_responders != NonResponderPolicy.CENSOR):
        itt = time_to_relapse(follow_up, replace(rules, non_responders=NonResponderPolicy.CENSOR))
    origin = follow_up.infusion_date
    onset_day = (episodes[0].onset_date - origin).days if episodes else None
    if onset_day is not None and (onset_day > itt.duration_days or (onset_day == itt.duration_days and itt.event)):
        onset_day = None  # left "not yet in remission" for good before the onset (e.g. a dated relapse)
    status = []
    for landmark in landmarks:
        day = origin + dt.timedelta(days=math.floor(landmark))
        status.append(any(e.onset_date <= day and (e.loss_date is None or e.loss_date > day) for e in episodes))
    return ParticipantOutcome(
        row=row,
        assessments=len(follow_up.visits),
        adequate_assessments=sum(1 for v in follow_up.visits if v.adequate),
        responder=bool(episodes),
        days_in_remission=days_in_remission(episodes, start=origin, end=end),
        onset_day=onset_day,
        exit_day=itt.duration_days,
        exit_event=itt.event,
        in_remission_at_landmark=tuple(status),
    )
