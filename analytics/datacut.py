"""Data-cut extraction and the participant-level analysis frame (issue 5, docs/domain.md §5 and Part B §2).

Two steps, deliberately separate:

1. :func:`extract_frames` reads the casebook of one study as of a cut date with one ``COPY (SELECT …)
   TO STDOUT`` per frame (participants, assessments, and the indication's extra inputs), inside the
   caller's REPEATABLE READ transaction, so all frames come from one consistent snapshot. The CSV bytes
   PostgreSQL writes are already canonical (explicit ``ORDER BY``, ISO dates, numerics as stored), so
   their SHA-256 is the frame checksum and the bytes themselves are what the cut stores.
2. :func:`derive` turns a cut's frames into remission status per assessment (the study's versioned
   :class:`~analytics.derivations.RemissionDefinition`), episodes, and one time-to-event row per
   participant (:func:`~analytics.derivations.time_to_relapse` / ``duration_of_remission``), and
   :func:`analysis_frame` makes the participant-level pandas frame the survival module expects, with
   its own checksum (canonical CSV of the rows sorted by participant).

What is excluded: voided participants, infusions, visits, assessments, MRI reads, MMTT samples,
relapses and dispositions; anything dated after the cut date; participants not infused by the cut.
Censoring follows docs/domain.md Part B §2 through ``analytics.derivations``: last adequate assessment,
withdrawal or loss to follow-up at the last adequate assessment, an event after ≥ 2 consecutive missed
visits, and the administrative cut at infusion + follow-up days (730), or the cut date if earlier —
always an explicit date.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby
from typing import Any

import numpy as np
import pandas as pd
from django.db import connection
from psycopg import sql

from analytics.derivations import (
    LANDMARK_DAYS,
    DurabilityRules,
    EDSSAssessment,
    EpisodeRules,
    MissingVisitPolicy,
    MRIScan,
    NonResponderPolicy,
    RemissionDefinition,
    RescueStrategy,
    insulin_free_days_from_log,
)
from analytics.outcomes_vectorised import participant_outcomes
from analytics.rules_vectorised import RULE_INPUTS, UNIT_COLUMNS, VECTORISED_RULES, evaluate_frame, scalar_evaluator

# Bump when a query or a derivation rule below changes: it is recorded in every manifest.
EXTRACTION_VERSION = 2  # 2: rescue therapy start; the T1D insulin log

# Rules whose inputs the casebook collects, and the form that carries them. Insulin independence is
# evaluated at each disease-activity assessment (its HbA1c) from the insulin log (InsulinDoseChange).
SUPPORTED_RULES: dict[str, str] = {
    "idaa1c": "disease_activity",
    "insulin_independence": "disease_activity",
    "insulin_dose_below": "disease_activity",
    "mmtt_peak_c_peptide": "mmtt",
    "das28_crp4": "disease_activity",
    "das28_crp3": "disease_activity",
    "das28_esr4": "disease_activity",
    "sdai": "disease_activity",
    "cdai": "disease_activity",
    "acr_eular_boolean": "disease_activity",
    # NEDA-3 is assessed where an MRI is due: a visit with EDSS but no scan due (e.g. day 28) cannot
    # show "no MRI activity", and must not count as a missed assessment either.
    "neda3": "mri",
}

ENDPOINTS = {"time_to_relapse": "TTREL", "duration_of_remission": "DOR"}


# ---------------------------------------------------------------------------------------------
# SAP options of a remission definition version
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SAPOptions:
    """Episode and censoring options (the ``sap`` JSON of a definition version).

    Keys: ``non_responders`` (required: censor, event_at_first_assessment, event_at_origin, exclude),
    ``confirm_onset``/``onset_confirmation_min_days``, ``confirm_loss``/``loss_confirmation_min_days``,
    ``missing_visits`` (ignore, not_in_remission), ``missed_visits_censor_threshold`` (2),
    ``rescue_therapy`` (event, competing, censor, ignore: :class:`~analytics.derivations.RescueStrategy`),
    ``death_is_event``/``retreatment_is_event`` (composite TTREL, default false), ``dor_death_is_event``
    (true), and for NEDA-3 ``neda_window_days`` (365) and ``mri_rebaseline_day`` (none).
    """

    rules: DurabilityRules
    dor_death_is_event: bool = True
    neda_window_days: int = 365
    mri_rebaseline_day: int | None = None


_SAP_DEFAULTS: dict[str, Any] = {
    "confirm_onset": False,
    "onset_confirmation_min_days": 0,
    "confirm_loss": False,
    "loss_confirmation_min_days": 0,
    "missing_visits": MissingVisitPolicy.IGNORE.value,
    "missed_visits_censor_threshold": 2,
    "death_is_event": False,
    "retreatment_is_event": False,
    "rescue_therapy": RescueStrategy.EVENT.value,
    "dor_death_is_event": True,
    "neda_window_days": 365,
    "mri_rebaseline_day": None,
}


def _sap_bool(sap: Mapping[str, Any], key: str) -> bool:
    value = sap.get(key, _SAP_DEFAULTS[key])
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, not {value!r}")
    return value


def _sap_int(sap: Mapping[str, Any], key: str, *, minimum: int, optional: bool = False) -> int | None:
    value = sap.get(key, _SAP_DEFAULTS[key])
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be a whole number of at least {minimum}, not {value!r}")
    return value


def sap_options(sap: Mapping[str, Any]) -> SAPOptions:
    """Validate and parse the ``sap`` JSON; a ``ValueError`` names the offending key."""
    unknown = sorted(set(sap) - set(_SAP_DEFAULTS) - {"non_responders"})
    if unknown:
        raise ValueError(f"unknown SAP option(s): {', '.join(unknown)}")
    if "non_responders" not in sap:
        raise ValueError("non_responders is required (a SAP decision: " + ", ".join(NonResponderPolicy) + ")")
    try:
        policy = NonResponderPolicy(sap["non_responders"])
        missing = MissingVisitPolicy(sap.get("missing_visits", _SAP_DEFAULTS["missing_visits"]))
        rescue = RescueStrategy(sap.get("rescue_therapy", _SAP_DEFAULTS["rescue_therapy"]))
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    episodes = EpisodeRules(
        confirm_onset=_sap_bool(sap, "confirm_onset"),
        onset_confirmation_min_days=_sap_int(sap, "onset_confirmation_min_days", minimum=0),
        confirm_loss=_sap_bool(sap, "confirm_loss"),
        loss_confirmation_min_days=_sap_int(sap, "loss_confirmation_min_days", minimum=0),
        missing_visits=missing,
    )
    rules = DurabilityRules(
        non_responders=policy,
        episodes=episodes,
        missed_visits_censor_threshold=_sap_int(sap, "missed_visits_censor_threshold", minimum=1),
        death_is_event=_sap_bool(sap, "death_is_event"),
        retreatment_is_event=_sap_bool(sap, "retreatment_is_event"),
        rescue=rescue,
    )
    return SAPOptions(
        rules=rules,
        dor_death_is_event=_sap_bool(sap, "dor_death_is_event"),
        neda_window_days=_sap_int(sap, "neda_window_days", minimum=1),
        mri_rebaseline_day=_sap_int(sap, "mri_rebaseline_day", minimum=0, optional=True),
    )


# ---------------------------------------------------------------------------------------------
# Extraction: one COPY per frame, canonical CSV
# ---------------------------------------------------------------------------------------------

_PARTICIPANTS = """
SELECT p.id AS participant_id, p.subject_code, s.code AS site_code,
       c.number AS cohort_number, c.label AS cohort_label,
       c.planned_cells_per_kg, c.planned_total_cells,
       first.infusion_date,
       re.retreatment_date,
       d.kind AS disposition_kind, d.disposition_date, d.death_date,
       rs.rescue_date
FROM trials_participant p
JOIN trials_site s ON s.id = p.site_id
JOIN LATERAL (
    -- Day 0: the site-local date of the first (non-voided) infusion.
    SELECT i.infusion_date, i.cohort_id FROM trials_infusion i
    WHERE i.participant_id = p.id AND i.voided_at IS NULL ORDER BY i.number LIMIT 1
) first ON true
JOIN trials_dosecohort c ON c.id = first.cohort_id
LEFT JOIN LATERAL (
    -- Retreatment: an infusion beyond the number the participant's cohort plans.
    SELECT min(i.infusion_date) AS retreatment_date
    FROM trials_infusion i JOIN trials_dosecohort ic ON ic.id = i.cohort_id
    WHERE i.participant_id = p.id AND i.voided_at IS NULL AND i.number > ic.infusions_planned
      AND i.infusion_date <= {cut}
) re ON true
LEFT JOIN LATERAL (
    -- The first rescue therapy or new disease-modifying therapy started after the infusion.
    SELECT min(rt.start_date) AS rescue_date FROM trials_rescuetherapy rt
    WHERE rt.participant_id = p.id AND rt.voided_at IS NULL
      AND rt.start_date >= first.infusion_date AND rt.start_date <= {cut}
) rs ON true
LEFT JOIN trials_disposition d
    ON d.participant_id = p.id AND d.voided_at IS NULL AND d.disposition_date <= {cut}
WHERE p.study_id = {study} AND p.voided_at IS NULL AND first.infusion_date <= {cut}
ORDER BY p.id
"""

# One row per visit that carries (or should carry) the inputs of a remission definition: every
# visit with a disease-activity assessment or an MMTT, and every scheduled visit whose form list asks
# for one and that is done, missed, or past its window at the cut (overdue counts as missing).
_ASSESSMENTS = """
SELECT v.participant_id, v.id AS visit_id, a.id AS assessment_id, v.kind,
       COALESCE(a.assessment_date, v.actual_date, v.planned_date) AS visit_date,
       CASE WHEN v.actual_date IS NOT NULL THEN 'done' WHEN v.missed THEN 'missed' ELSE 'overdue' END
           AS visit_status,
       COALESCE('disease_activity' = ANY(vd.forms_due), false) AS activity_due,
       COALESCE('mmtt' = ANY(vd.forms_due), false) AS mmtt_due,
       COALESCE('mri' = ANY(vd.forms_due), false) AS mri_due,
       {has_mmtt} AS has_mmtt,
       a.edss, a.hba1c, a.hba1c_unit, a.insulin_u_per_kg_day,
       a.tender_joints_28, a.swollen_joints_28, a.crp, a.crp_unit, a.esr_mm_h,
       a.patient_global_mm, a.evaluator_global_mm
FROM trials_visit v
JOIN trials_participant p ON p.id = v.participant_id
LEFT JOIN trials_visitdefinition vd ON vd.id = v.definition_id
LEFT JOIN trials_diseaseassessment a
    ON a.visit_id = v.id AND a.voided_at IS NULL AND a.assessment_date <= {cut}
WHERE p.study_id = {study} AND p.voided_at IS NULL AND v.voided_at IS NULL
  AND COALESCE(a.assessment_date, v.actual_date, v.planned_date) <= {cut}
  AND (
      a.id IS NOT NULL OR {has_mmtt}
      OR (v.kind = 'scheduled' AND vd.forms_due && ARRAY['disease_activity', 'mmtt', 'mri']::varchar[]
          AND (v.actual_date IS NOT NULL OR v.missed OR v.window_end < {cut}))
  )
ORDER BY v.participant_id, 5, (v.kind <> 'scheduled'), v.id
"""

_HAS_MMTT = "EXISTS (SELECT 1 FROM trials_mmttsample m WHERE m.visit_id = v.id AND m.voided_at IS NULL)"

_MMTT = """
SELECT v.participant_id, m.visit_id, m.minute, m.c_peptide, m.unit
FROM trials_mmttsample m
JOIN trials_visit v ON v.id = m.visit_id
JOIN trials_participant p ON p.id = v.participant_id
WHERE p.study_id = {study} AND p.voided_at IS NULL AND v.voided_at IS NULL AND m.voided_at IS NULL
  AND v.actual_date <= {cut}
ORDER BY v.participant_id, m.visit_id, m.minute
"""

_MRI = """
SELECT v.participant_id, r.visit_id, r.id AS mri_id, r.scan_date, r.new_or_enlarging_t2, r.gd_enhancing
FROM trials_mriread r
JOIN trials_visit v ON v.id = r.visit_id
JOIN trials_participant p ON p.id = v.participant_id
WHERE p.study_id = {study} AND p.voided_at IS NULL AND v.voided_at IS NULL AND r.voided_at IS NULL
  AND r.scan_date <= {cut}
ORDER BY v.participant_id, r.scan_date, r.id
"""

_INSULIN = """
SELECT c.participant_id, c.effective_date, c.total_daily_units
FROM trials_insulindosechange c
JOIN trials_participant p ON p.id = c.participant_id
WHERE p.study_id = {study} AND p.voided_at IS NULL AND c.voided_at IS NULL AND c.effective_date <= {cut}
ORDER BY c.participant_id, c.effective_date, c.id
"""

_RELAPSES = """
SELECT r.participant_id, r.id AS relapse_id, r.onset_date
FROM trials_relapse r
JOIN trials_participant p ON p.id = r.participant_id
WHERE p.study_id = {study} AND p.voided_at IS NULL AND r.voided_at IS NULL AND r.onset_date <= {cut}
ORDER BY r.participant_id, r.onset_date, r.id
"""

# The randomized arm, for blinded studies. Stored apart from the other frames and read only for an
# analysis grouped by arm, which only unblinded users may request (analytics/selectors.py).
_ALLOCATION = """
SELECT r.participant_id, r.arm
FROM trials_randomizationslot r
JOIN trials_participant p ON p.id = r.participant_id
WHERE r.study_id = {study} AND p.voided_at IS NULL
ORDER BY r.participant_id
"""

ALLOCATION_FRAME = "allocation"


def frame_queries(*, indication: str, blinded: bool) -> dict[str, str]:
    """The extraction query of each frame of a cut, for a study of ``indication``."""
    queries = {
        "participants": _PARTICIPANTS,
        "assessments": _ASSESSMENTS.replace("{has_mmtt}", _HAS_MMTT if indication == "T1D" else "false"),
    }
    if indication == "T1D":
        queries["mmtt"] = _MMTT
        queries["insulin"] = _INSULIN
    if indication == "MS":
        queries["mri"] = _MRI
        queries["relapses"] = _RELAPSES
    if blinded:
        queries[ALLOCATION_FRAME] = _ALLOCATION
    return queries


@dataclass(frozen=True)
class Frame:
    """One extracted frame: canonical CSV bytes (header + rows), row count and SHA-256."""

    name: str
    csv: bytes
    rows: int
    sha256: str

    @classmethod
    def of(cls, name: str, data: bytes) -> Frame:
        rows = max(data.count(b"\n") - 1, 0)
        return cls(name=name, csv=data, rows=rows, sha256=hashlib.sha256(data).hexdigest())

    def compressed(self) -> bytes:
        # mtime=0: the same frame always compresses to the same bytes.
        return gzip.compress(self.csv, compresslevel=3, mtime=0)

    @classmethod
    def from_compressed(cls, name: str, content: bytes) -> Frame:
        return cls.of(name, gzip.decompress(bytes(content)))

    def records(self) -> Iterator[dict[str, str]]:
        yield from csv.DictReader(io.StringIO(self.csv.decode()))


def copy_csv(query: str) -> bytes:
    """Run ``COPY (query) TO STDOUT`` as CSV with a header on the default connection."""
    statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(sql.SQL(query))
    buffer = io.BytesIO()
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for chunk in copy:
            buffer.write(chunk)
    return buffer.getvalue()


def extract_frames(*, study_id: int, indication: str, blinded: bool, cut_date: dt.date) -> dict[str, Frame]:
    """Read every frame of a cut. Call inside one transaction (the caller makes it REPEATABLE READ),
    so the frames and the audit chain head come from the same snapshot."""
    with connection.cursor() as cursor:
        # Output formats that make the CSV canonical whatever the server's or session's defaults.
        cursor.execute("SET LOCAL DateStyle TO 'ISO, YMD'")
        cursor.execute("SET LOCAL TimeZone TO 'UTC'")
    literals = {"study": str(int(study_id)), "cut": f"DATE '{cut_date.isoformat()}'"}
    frames = {}
    for name, template in frame_queries(indication=indication, blinded=blinded).items():
        query = template.replace("{study}", literals["study"]).replace("{cut}", literals["cut"])
        frames[name] = Frame.of(name, copy_csv(query))
    return frames


def combined_checksum(frames: Mapping[str, str]) -> str:
    """SHA-256 over ``name:sha256`` lines in name order: the cut's checksum."""
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(frames.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Derivation: remission per assessment, episodes, time-to-event rows
# ---------------------------------------------------------------------------------------------

_INPUT_FIELDS = {
    "RA": (
        "tender_joints_28",
        "swollen_joints_28",
        "crp",
        "crp_unit",
        "esr_mm_h",
        "patient_global_mm",
        "evaluator_global_mm",
    ),
    "T1D": ("hba1c", "hba1c_unit", "insulin_u_per_kg_day"),
    "MS": ("edss",),
}


def _date(value: str) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


@dataclass(frozen=True)
class ParticipantInfo:
    participant_id: int
    subject_code: str
    site_code: str
    cohort_number: int
    cohort_label: str
    dose_per_kg: Decimal | None
    dose_total: Decimal | None
    infusion_date: dt.date
    retreatment_date: dt.date | None
    disposition_kind: str
    disposition_date: dt.date | None
    death_date: dt.date | None
    rescue_date: dt.date | None = None

    @classmethod
    def from_record(cls, r: Mapping[str, str]) -> ParticipantInfo:
        return cls(
            participant_id=int(r["participant_id"]),
            subject_code=r["subject_code"],
            site_code=r["site_code"],
            cohort_number=int(r["cohort_number"]),
            cohort_label=r["cohort_label"],
            dose_per_kg=Decimal(r["planned_cells_per_kg"]) if r["planned_cells_per_kg"] else None,
            dose_total=Decimal(r["planned_total_cells"]) if r["planned_total_cells"] else None,
            infusion_date=dt.date.fromisoformat(r["infusion_date"]),
            retreatment_date=_date(r["retreatment_date"]),
            disposition_kind=r["disposition_kind"],
            disposition_date=_date(r["disposition_date"]),
            death_date=_date(r["death_date"]),
            rescue_date=_date(r.get("rescue_date", "")),
        )

    @property
    def withdrawal_date(self) -> dt.date | None:
        return self.disposition_date if self.disposition_kind in ("withdrawn", "lost_to_follow_up") else None


@dataclass(frozen=True)
class RemissionRow:
    """One derived assessment, ready for ``RemissionAssessment``."""

    participant_id: int
    visit_id: int
    assessment_id: int | None
    visit_date: dt.date
    study_day: int
    adequate: bool
    in_remission: bool | None
    derived_json: str
    note: str


ASSESSMENT_COLUMNS = [
    "participant_id",
    "visit_id",
    "assessment_id",
    "visit_date",
    "study_day",
    "adequate",
    "in_remission",
    "derived",
    "note",
]


@dataclass
class DerivedCut:
    """The outcome of :func:`derive`.

    ``table``: one row per participant the SAP keeps (:data:`RECORD_COLUMNS`), in participant-id
    order; excluded participants are counted, not listed. ``assessments_table``: every derived
    assessment (:data:`ASSESSMENT_COLUMNS`, ``in_remission`` as 1/0/empty), when asked for.
    ``fallback_rows``: assessments the vectorised rules handed to the scalar reference.
    """

    table: pd.DataFrame
    assessments_table: pd.DataFrame | None = None
    excluded: int = 0
    assessments: int = 0
    adequate: int = 0
    fallback_rows: int = 0

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.table.to_dict("records")


# Distinct input tuples remembered per derivation (the rules without a vectorised form: MMTT).
MEMO_LIMIT = 200_000


class _Evaluator:
    """``in_remission`` with a memo on the raw input strings: the definition is a pure function of
    them, so equal inputs give equal outputs; NEDA-3 inputs span visits and are not memoised."""

    def __init__(self, definition: RemissionDefinition) -> None:
        self.scalar = scalar_evaluator(definition)
        self.memo: dict[tuple, tuple[bool, bool | None, str, str]] = {}

    def __call__(self, key: tuple | None, inputs: Callable[[], dict[str, Any]]) -> tuple[bool, bool | None, str, str]:
        if key is not None:
            hit = self.memo.get(key)
            if hit is not None:
                return hit
        outcome = self.scalar(inputs())
        if key is not None and len(self.memo) < MEMO_LIMIT:
            self.memo[key] = outcome
        return outcome


def _grouped(frame: Frame | None, key: str) -> dict[int, list[dict[str, str]]]:
    if frame is None:
        return {}
    result: dict[int, list[dict[str, str]]] = {}
    for record in frame.records():
        result.setdefault(int(record[key]), []).append(record)
    return result


_ORDINAL_OF_EPOCH = dt.date(1970, 1, 1).toordinal()


def _ordinals(values: pd.Series) -> np.ndarray:
    """ISO dates (empty for none) as proleptic ordinals (``date.toordinal``), NaN for none."""
    parsed = pd.to_datetime(values.replace("", None), format="%Y-%m-%d", errors="raise")
    days = parsed.to_numpy(dtype="datetime64[D]").astype("int64").astype(float)
    days[parsed.isna().to_numpy()] = np.nan
    return days + _ORDINAL_OF_EPOCH


def _dates(ordinals: np.ndarray) -> list[dt.date | None]:
    return [None if math.isnan(o) else dt.date.fromordinal(int(o)) for o in ordinals]


def _participants_table(frame: Frame, *, follow_up_days: int, cut_date: dt.date) -> pd.DataFrame:
    """The participants frame with day numbers (ordinals) for the outcome derivation."""
    table = pd.read_csv(io.BytesIO(frame.csv), dtype=str, keep_default_na=False)
    out = pd.DataFrame({"participant_id": table["participant_id"].astype("int64")})
    out["infusion"] = _ordinals(table["infusion_date"])
    out["cutoff"] = np.minimum(out["infusion"] + follow_up_days, cut_date.toordinal())
    withdrawn = table["disposition_kind"].isin(["withdrawn", "lost_to_follow_up"]).to_numpy()
    out["withdrawal"] = np.where(withdrawn, _ordinals(table["disposition_date"]), np.nan)
    out["death"] = _ordinals(table["death_date"])
    out["retreatment"] = _ordinals(table["retreatment_date"])
    out["rescue"] = _ordinals(table["rescue_date"]) if "rescue_date" in table else np.nan
    for name in ("subject_code", "site_code", "cohort_label"):
        out[name] = table[name]
    out["cohort_number"] = table["cohort_number"].astype("int64")
    out["dose_per_kg"] = pd.to_numeric(table["planned_cells_per_kg"].replace("", None), errors="raise").astype(float)
    return out.sort_values("participant_id", kind="mergesort").reset_index(drop=True)


_ASSESSMENT_DTYPES = {
    "participant_id": "int64",
    "visit_id": "int64",
    "assessment_id": "float64",
    "kind": "category",
    "visit_date": str,
    "visit_status": "category",
    "activity_due": "category",
    "crp_unit": str,
    "hba1c_unit": str,
}


def _table_rule_assessments(
    frame: Frame, participants: pd.DataFrame, definition: RemissionDefinition, *, texts: bool = True
) -> tuple[pd.DataFrame, int]:
    """Remission at every visit that has or owes a disease-activity assessment, for a rule with a
    vectorised form: the same rows, statuses and notes as the per-row path (``_derive_visits``)."""
    inputs = list(RULE_INPUTS[definition.rule])
    usecols = ["participant_id", "visit_id", "assessment_id", "kind", "visit_date", "visit_status", "activity_due"]
    dtypes = {name: _ASSESSMENT_DTYPES.get(name, "float64") for name in usecols + inputs}
    table = pd.read_csv(io.BytesIO(frame.csv), usecols=usecols + inputs, dtype=dtypes, keep_default_na=True)
    for name in UNIT_COLUMNS.intersection(inputs):
        table[name] = table[name].fillna("")
    pids = table["participant_id"].to_numpy()
    infusion_of = pd.Series(participants["infusion"].to_numpy(), index=participants["participant_id"].to_numpy())
    has_input = table["assessment_id"].notna().to_numpy()
    owed = ((table["kind"] == "scheduled") & (table["activity_due"] == "t")).to_numpy()
    keep = np.isin(pids, participants["participant_id"].to_numpy()) & (has_input | owed)
    table = table[keep].reset_index(drop=True)
    has_input = has_input[keep]
    n = len(table)
    day = _ordinals(table["visit_date"])
    infusion = infusion_of.reindex(table["participant_id"].to_numpy()).to_numpy()
    adequate = np.zeros(n, dtype=bool)
    status = np.full(n, -1, dtype=np.int8)
    derived = np.full(n, "{}", dtype=object)
    note = ("no assessment: visit " + table["visit_status"].astype(str)).to_numpy(dtype=object)
    fallback = 0
    if has_input.any():
        evaluated = evaluate_frame(definition, table.loc[has_input, inputs], texts=texts)
        adequate[has_input], status[has_input] = evaluated.adequate, evaluated.status
        derived[has_input], note[has_input] = evaluated.derived, evaluated.note
        fallback = evaluated.fallback_rows
    baseline = day <= infusion
    base_note = "baseline (day 0): the reference, not an outcome"
    note[baseline] = np.where(note[baseline] == "", base_note, base_note + "; " + note[baseline].astype(str))
    # A second adequate assessment on a date already used (frame order: scheduled visits first).
    candidates = adequate & ~baseline
    keys = pd.DataFrame({"p": table["participant_id"].to_numpy()[candidates], "d": day[candidates]})
    repeated = np.zeros(n, dtype=bool)
    repeated[np.flatnonzero(candidates)[keys.duplicated().to_numpy()]] = True
    adequate[repeated], status[repeated] = False, -1
    note[repeated] = "another assessment on the same date is used"
    result = pd.DataFrame(
        {
            "participant_id": table["participant_id"].to_numpy(),
            "visit_id": table["visit_id"].to_numpy(),
            "assessment_id": table["assessment_id"].astype("Int64"),
            "visit_date": table["visit_date"].to_numpy(),
            "study_day": (day - infusion).astype("int64"),
            "adequate": adequate,
            "status": status,
            "derived": derived,
            "note": note,
            "day": day,
            "baseline": baseline,
        }
    )
    return result, fallback


def _per_row_assessments(
    frames: Mapping[str, Frame],
    participants: pd.DataFrame,
    *,
    indication: str,
    definition: RemissionDefinition,
    sap: SAPOptions,
) -> pd.DataFrame:
    """The same table for the rules evaluated row by row (NEDA-3 spans visits; MMTT spans samples)."""
    rule_form = SUPPORTED_RULES[definition.rule]
    infos = {info.participant_id: info for info in map(ParticipantInfo.from_record, frames["participants"].records())}
    mmtt = _grouped(frames.get("mmtt"), "visit_id")
    mri = _grouped(frames.get("mri"), "participant_id")
    relapses = _grouped(frames.get("relapses"), "participant_id")
    insulin = (
        {
            pid: [(dt.date.fromisoformat(r["effective_date"]), r["total_daily_units"]) for r in changes]
            for pid, changes in _grouped(frames.get("insulin"), "participant_id").items()
        }
        if definition.rule == "insulin_independence"
        else None
    )
    evaluate = _Evaluator(definition)
    fields = _INPUT_FIELDS[indication]
    rows: list[RemissionRow] = []
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(frames["assessments"].csv), encoding="utf-8", newline=""))
    header = next(reader)
    col = {name: i for i, name in enumerate(header)}
    i_pid = col["participant_id"]
    # Both frames are sorted by participant id: walk them together (a merge join).
    groups = groupby(reader, key=lambda row: int(row[i_pid]))
    pending = next(groups, None)
    for pid in participants["participant_id"].tolist():
        while pending is not None and pending[0] < pid:
            pending = next(groups, None)  # assessments of a participant outside the cut (not infused)
        visit_rows = list(pending[1]) if pending is not None and pending[0] == pid else []
        _derive_visits(
            infos[pid],
            visit_rows,
            col,
            rule_form,
            fields,
            evaluate,
            rows.append,
            mmtt,
            mri,
            relapses,
            sap,
            indication,
            None if insulin is None else insulin.get(pid, []),
        )
    table = pd.DataFrame(
        [
            (
                r.participant_id,
                r.visit_id,
                r.assessment_id,
                r.visit_date.isoformat(),
                r.study_day,
                r.adequate,
                -1 if r.in_remission is None else int(r.in_remission),
                r.derived_json,
                r.note,
                r.visit_date.toordinal(),
                r.study_day <= 0,
            )
            for r in rows
        ],
        columns=[*ASSESSMENT_COLUMNS[:6], "status", "derived", "note", "day", "baseline"],
    )
    table["assessment_id"] = table["assessment_id"].astype("Int64")
    return table


def _derive_visits(
    info: ParticipantInfo,
    rows: list[list[str]],
    col: Mapping[str, int],
    rule_form: str,
    fields: tuple[str, ...],
    evaluate: _Evaluator,
    on_assessment: Callable[[RemissionRow], None],
    mmtt: Mapping[int, list[dict[str, str]]],
    mri: Mapping[int, list[dict[str, str]]],
    relapses: Mapping[int, list[dict[str, str]]],
    sap: SAPOptions,
    indication: str,
    insulin_log: list[tuple[dt.date, str]] | None = None,
) -> None:
    """Remission at each of one participant's visits that has or owes the inputs, in frame order."""
    pid = info.participant_id
    i_vid, i_aid, i_date, i_status, i_kind = (
        col["visit_id"],
        col["assessment_id"],
        col["visit_date"],
        col["visit_status"],
        col["kind"],
    )
    i_due = col[{"disease_activity": "activity_due", "mmtt": "mmtt_due", "mri": "mri_due"}[rule_form]]
    i_input = col["has_mmtt"] if rule_form == "mmtt" else col["assessment_id"]
    scanned = {int(r["visit_id"]) for r in mri.get(pid, ())} if rule_form == "mri" else set()
    i_fields = [col[name] for name in fields]
    ms_context = (
        _ms_context(info, rows, col, mri.get(pid, ()), relapses.get(pid, ()), sap) if indication == "MS" else None
    )
    used_dates: set[dt.date] = set()
    for row in rows:
        has_input = row[i_input] not in ("", "f")
        if rule_form == "mri" and row[i_due] != "t" and int(row[i_vid]) not in scanned:
            continue  # an EDSS without a scan: history for confirmed worsening, not a NEDA assessment
        if not has_input and not (row[i_kind] == "scheduled" and row[i_due] == "t"):
            continue  # a visit that neither has nor owes this definition's inputs
        visit_date = dt.date.fromisoformat(row[i_date])
        if not has_input:
            adequate, status, derived, note = False, None, "{}", f"no assessment: visit {row[i_status]}"
        elif rule_form == "mmtt":
            samples = mmtt.get(int(row[i_vid]), ())
            key = ("mmtt", *((s["minute"], s["c_peptide"], s["unit"]) for s in samples))
            adequate, status, derived, note = evaluate(
                key, lambda samples=samples: {"mmtt_samples": _mmtt_inputs(samples)}
            )
        elif ms_context is not None:
            adequate, status, derived, note = evaluate(None, lambda day=visit_date: ms_context.inputs(day))
        elif insulin_log is not None:
            free = insulin_free_days_from_log(insulin_log, as_of=visit_date)
            key = (*(row[i] for i in i_fields), free)
            adequate, status, derived, note = evaluate(
                key,
                lambda key=key: {
                    **{name: (value or None) for name, value in zip(fields, key[:-1], strict=True)},
                    "insulin_free_days": key[-1],
                },
            )
        else:
            key = tuple([row[i] for i in i_fields])
            adequate, status, derived, note = evaluate(
                key, lambda key=key: {name: (value or None) for name, value in zip(fields, key, strict=True)}
            )
        baseline = visit_date <= info.infusion_date
        if baseline:
            # Day 0 (before the dose) is the reference, not an outcome: kept, but not an episode visit.
            note = "baseline (day 0): the reference, not an outcome" + (f"; {note}" if note else "")
        elif adequate and visit_date in used_dates:
            adequate, status, note = False, None, "another assessment on the same date is used"
        if adequate and not baseline:
            used_dates.add(visit_date)
        on_assessment(
            RemissionRow(
                participant_id=pid,
                visit_id=int(row[i_vid]),
                assessment_id=int(row[i_aid]) if row[i_aid] else None,
                visit_date=visit_date,
                study_day=(visit_date - info.infusion_date).days,
                adequate=adequate,
                in_remission=status,
                derived_json=derived,
                note=note,
            )
        )


def _mmtt_inputs(samples: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    return [{"minute": int(s["minute"]), "c_peptide": s["c_peptide"], "unit": s["unit"]} for s in samples]


@dataclass(frozen=True)
class _MSContext:
    """A participant's MS history, from which NEDA-3 is evaluated over the window ending at a visit."""

    infusion_date: dt.date
    baseline_edss: str | None
    edss: tuple[tuple[dt.date, str], ...]
    scans: tuple[MRIScan, ...]
    relapses: tuple[dt.date, ...]
    window_days: int
    rebaseline_date: dt.date | None

    def inputs(self, visit_date: dt.date) -> dict[str, Any]:
        return {
            "window_start": max(self.infusion_date, visit_date - dt.timedelta(days=self.window_days)),
            "window_end": visit_date,
            "baseline_edss": self.baseline_edss,
            "edss_assessments": [EDSSAssessment(day, value) for day, value in self.edss if day <= visit_date],
            "relapse_onsets": [day for day in self.relapses if day <= visit_date],
            "mri_scans": [scan for scan in self.scans if scan.scan_date <= visit_date],
            "mri_rebaseline_date": self.rebaseline_date,
        }


def _ms_context(
    info: ParticipantInfo,
    rows: list[list[str]],
    col: Mapping[str, int],
    scans: Iterable[Mapping[str, str]],
    relapses: Iterable[Mapping[str, str]],
    sap: SAPOptions,
) -> _MSContext:
    # The baseline EDSS is the participant's earliest recorded EDSS in the cut.
    edss = tuple((dt.date.fromisoformat(r[col["visit_date"]]), r[col["edss"]]) for r in rows if r[col["assessment_id"]])
    rebaseline = (
        info.infusion_date + dt.timedelta(days=sap.mri_rebaseline_day) if sap.mri_rebaseline_day is not None else None
    )
    return _MSContext(
        infusion_date=info.infusion_date,
        baseline_edss=edss[0][1] if edss else None,
        edss=edss,
        scans=tuple(
            MRIScan(dt.date.fromisoformat(s["scan_date"]), int(s["new_or_enlarging_t2"]), int(s["gd_enhancing"]))
            for s in scans
        ),
        relapses=tuple(dt.date.fromisoformat(r["onset_date"]) for r in relapses),
        window_days=sap.neda_window_days,
        rebaseline_date=rebaseline,
    )


def _relapses_table(frame: Frame | None) -> pd.DataFrame:
    if frame is None or frame.rows == 0:
        return pd.DataFrame({"participant_id": np.array([], dtype="int64"), "day": np.array([], dtype="int64")})
    table = pd.read_csv(io.BytesIO(frame.csv), dtype=str, keep_default_na=False)
    return pd.DataFrame(
        {
            "participant_id": table["participant_id"].astype("int64"),
            "day": _ordinals(table["onset_date"]).astype("int64"),
        }
    )


def _outcome_visits(rows: pd.DataFrame) -> pd.DataFrame:
    """The post-baseline visits of each participant, one per date: an adequate assessment if that
    date has one (an overdue visit and an empty unscheduled one on the same date say the same)."""
    post = rows.loc[~rows["baseline"].to_numpy(), ["participant_id", "day", "adequate", "status"]]
    post = post.assign(_inadequate=~post["adequate"], _order=np.arange(len(post)))
    post = post.sort_values(["participant_id", "day", "_inadequate", "_order"], kind="mergesort")
    post = post.drop_duplicates(["participant_id", "day"], keep="first")
    return pd.DataFrame(
        {
            "participant_id": post["participant_id"].to_numpy(),
            "day": post["day"].to_numpy().astype("int64"),
            "adequate": post["adequate"].to_numpy(),
            "in_remission": (post["status"] == 1).to_numpy(),
        }
    )


def derive(
    frames: Mapping[str, Frame],
    *,
    indication: str,
    definition: RemissionDefinition,
    sap: SAPOptions,
    follow_up_days: int,
    cut_date: dt.date,
    endpoint: str,
    on_assessment: Callable[[RemissionRow], None] | None = None,
    with_assessments: bool = False,
) -> DerivedCut:
    """Derive remission per assessment and one time-to-event row per participant.

    The table rules (RA indices, IDAA1c, insulin dose) are evaluated for the whole frame at once
    (:mod:`analytics.rules_vectorised`); NEDA-3 and MMTT row by row. The participant-level outcomes
    come from :func:`analytics.outcomes_vectorised.participant_outcomes`, which equals the scalar
    reference :func:`analytics.derivations.participant_outcome`. ``with_assessments`` keeps the
    per-assessment table (for ``RemissionAssessment``); ``on_assessment`` receives each row.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    if definition.rule not in SUPPORTED_RULES:
        raise ValueError(f"remission rule {definition.rule!r} cannot be derived from the casebook")
    participants = _participants_table(frames["participants"], follow_up_days=follow_up_days, cut_date=cut_date)
    if definition.rule in VECTORISED_RULES:
        texts = with_assessments or on_assessment is not None  # the stored rows need them; analyses do not
        rows, fallback = _table_rule_assessments(frames["assessments"], participants, definition, texts=texts)
    else:
        rows = _per_row_assessments(frames, participants, indication=indication, definition=definition, sap=sap)
        fallback = 0
    outcomes = participant_outcomes(
        participants,
        _outcome_visits(rows),
        _relapses_table(frames.get("relapses")),
        sap.rules,
        endpoint=endpoint,
        dor_death_is_event=sap.dor_death_is_event,
        landmarks=LANDMARK_DAYS,
    )
    included = outcomes["included"].to_numpy(dtype=bool)
    kept, out = participants[included], outcomes[included]
    table = pd.DataFrame(
        {
            "participant_id": kept["participant_id"].to_numpy(),
            "subject_code": kept["subject_code"].to_numpy(),
            "site_code": kept["site_code"].to_numpy(),
            "cohort_number": kept["cohort_number"].to_numpy(),
            "cohort_label": kept["cohort_label"].to_numpy(),
            "dose_per_kg": kept["dose_per_kg"].to_numpy(),
            "infusion_date": _dates(kept["infusion"].to_numpy()),
            "cutoff_date": _dates(kept["cutoff"].to_numpy()),
            "paramcd": ENDPOINTS[endpoint],
            "origin_date": _dates(out["origin"].to_numpy(dtype=float)),
            "end_date": _dates(out["end"].to_numpy(dtype=float)),
            "duration": out["duration"].to_numpy(dtype="int64"),
            "event": out["event"].to_numpy(dtype="int64"),
            "event_code": out["event_code"].to_numpy(dtype="int64"),
            "cr_duration": out["cr_duration"].to_numpy(dtype="int64"),
            "lower": out["lower"].to_numpy(dtype="int64"),
            "upper": out["upper"].to_numpy(dtype=float),
            "reason": out["reason"].to_numpy(dtype=object),
            "assessments": out["assessments"].to_numpy(dtype="int64"),
            "adequate_assessments": out["adequate_assessments"].to_numpy(dtype="int64"),
            "responder": out["responder"].to_numpy(dtype=bool),
            "days_in_remission": out["days_in_remission"].to_numpy(dtype="int64"),
            "onset_day": pd.array(out["onset_day"].to_numpy(dtype=float), dtype="Int64"),
            "exit_day": out["exit_day"].to_numpy(dtype="int64"),
            "exit_event": out["exit_event"].to_numpy(dtype="int64"),
        }
    )
    for i, column in enumerate(LANDMARK_COLUMNS):
        table[column] = out[f"landmark_{i}"].to_numpy(dtype=bool)
    result = DerivedCut(
        table=table,
        excluded=int((~included).sum()),
        assessments=len(rows),
        adequate=int((rows["adequate"] & ~rows["baseline"]).sum()),
        fallback_rows=fallback,
    )
    if with_assessments or on_assessment is not None:
        stored = rows[ASSESSMENT_COLUMNS[:6] + ["derived", "note"]].copy()
        stored.insert(6, "in_remission", pd.array(np.where(rows["status"] < 0, None, rows["status"] == 1), "boolean"))
        result.assessments_table = stored if with_assessments else None
        if on_assessment is not None:
            for r in stored.itertuples(index=False):
                on_assessment(
                    RemissionRow(
                        participant_id=int(r.participant_id),
                        visit_id=int(r.visit_id),
                        assessment_id=None if pd.isna(r.assessment_id) else int(r.assessment_id),
                        visit_date=dt.date.fromisoformat(r.visit_date),
                        study_day=int(r.study_day),
                        adequate=bool(r.adequate),
                        in_remission=None if pd.isna(r.in_remission) else bool(r.in_remission),
                        derived_json=r.derived,
                        note=r.note,
                    )
                )
    return result


# ---------------------------------------------------------------------------------------------
# The participant-level analysis frame
# ---------------------------------------------------------------------------------------------

# In remission at 3 and 6 months (derivations.LANDMARK_DAYS), for the landmark analyses.
LANDMARK_COLUMNS = ("remission_at_3m", "remission_at_6m")

FRAME_COLUMNS = [
    "participant_id",
    "subject_code",
    "site_code",
    "cohort_number",
    "cohort_label",
    "dose_per_kg",
    "log10_dose",
    "group",
    "infusion_date",
    "cutoff_date",
    "paramcd",
    "origin_date",
    "end_date",
    "duration",
    "event",
    "event_code",
    "cr_duration",
    "lower",
    "upper",
    "reason",
    "assessments",
    "adequate_assessments",
    "responder",
    "days_in_remission",
    "onset_day",
    "exit_day",
    "exit_event",
    *LANDMARK_COLUMNS,
]


def cohort_group_label(number: int, label: str) -> str:
    return f"Cohort {number} ({label})"


def analysis_frame(
    records: pd.DataFrame | list[dict[str, Any]], *, grouping: str, allocation: Mapping[int, str] | None = None
) -> pd.DataFrame:
    """The participant-level frame for ``analytics.survival``, one row per participant, sorted by id.

    ``group`` is empty (pooled), the dose cohort, or the randomized arm (``allocation``: participant id
    → arm; only for unblinded users). ``log10_dose`` is the Cox covariate (planned cells/kg).
    """
    columns = [c for c in FRAME_COLUMNS if c not in ("group", "log10_dose")]
    frame = (
        records[columns].copy()
        if isinstance(records, pd.DataFrame)
        else pd.DataFrame.from_records(records, columns=columns)
    )
    frame = frame.sort_values("participant_id", kind="mergesort").reset_index(drop=True)
    frame["log10_dose"] = [math.log10(d) if d and d > 0 else math.nan for d in frame["dose_per_kg"]]
    if grouping == "pooled":
        frame["group"] = "All participants"
    elif grouping == "cohort":
        frame["group"] = [
            cohort_group_label(n, label) for n, label in zip(frame["cohort_number"], frame["cohort_label"], strict=True)
        ]
    elif grouping == "arm":
        if allocation is None:
            raise ValueError("grouping by arm needs the allocation frame")
        frame["group"] = [allocation.get(pid, "not allocated") for pid in frame["participant_id"]]
    else:
        raise ValueError(f"unknown grouping {grouping!r}")
    return frame[FRAME_COLUMNS]


def frame_checksum(frame: pd.DataFrame) -> str:
    """SHA-256 of the canonical CSV of ``frame`` (rows already sorted; fixed columns, ``\\n`` line
    ends, ISO dates, empty for missing, Python's shortest float repr)."""
    data = frame.to_csv(index=False, lineterminator="\n", na_rep="", date_format="%Y-%m-%d")
    return hashlib.sha256(data.encode()).hexdigest()
