"""Data-cut extraction and the participant-level analysis frame (issue 5, DOMAIN.md §5 and Part B §2).

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
Censoring follows DOMAIN.md Part B §2 through ``analytics.derivations``: last adequate assessment,
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
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import groupby
from typing import Any

import pandas as pd
from django.db import connection
from psycopg import sql

from analytics.derivations import (
    DurabilityRules,
    EDSSAssessment,
    EpisodeRules,
    FollowUp,
    MissingVisitPolicy,
    MRIScan,
    NonResponderPolicy,
    NotEvaluableError,
    RemissionDefinition,
    TimeToEventRow,
    VisitRemission,
    administrative_cutoff,
    days_in_remission,
    duration_of_remission,
    in_remission,
    remission_episodes,
    time_to_relapse,
)
from analytics.units import UnitError

# Bump when a query or a derivation rule below changes: it is recorded in every manifest.
EXTRACTION_VERSION = 1

# Rules whose inputs the casebook collects. ``insulin_independence`` needs a daily insulin diary,
# which the casebook does not have, so it cannot be chosen for a study yet.
SUPPORTED_RULES: dict[str, str] = {
    "idaa1c": "disease_activity",
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
       d.kind AS disposition_kind, d.disposition_date, d.death_date
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


@dataclass
class DerivedCut:
    """The outcome of :func:`derive`: one record per participant (``None`` rows excluded by the SAP
    are counted, not listed) and counts for the result's summary."""

    records: list[dict[str, Any]] = field(default_factory=list)
    excluded: int = 0
    assessments: int = 0
    adequate: int = 0
    distinct_inputs_evaluated: int = 0


def _compact(derived: Mapping[str, Mapping[str, Any]], key: str) -> str:
    """The derived values of one assessment as stored: value and unit per name, plus the comparison.
    The raw inputs are not repeated: the row links to its assessment (and the cut's frames hold them)."""
    criterion = derived.get("in_remission", {}).get("inputs", {}).get("criterion", "")
    values = {name: [item["value"], item["unit"]] for name, item in derived.items() if name != "in_remission"}
    return json.dumps({"definition": key, "criterion": criterion, "values": values}, sort_keys=True)


# Distinct input tuples remembered per derivation: enough for coarse inputs (HbA1c to 0.1 %, insulin to
# 0.01 U/kg), bounded for near-continuous ones (RA: CRP x joint counts x two VAS rarely repeat).
MEMO_LIMIT = 200_000


class _Evaluator:
    """``in_remission`` with a memo on the raw input strings: the definition is a pure function of
    them, so equal inputs give equal outputs; NEDA-3 inputs span visits and are not memoised."""

    def __init__(self, definition: RemissionDefinition) -> None:
        self.definition = definition
        self.memo: dict[tuple, tuple[bool, bool | None, str, str]] = {}

    def __call__(self, key: tuple | None, inputs: Callable[[], dict[str, Any]]) -> tuple[bool, bool | None, str, str]:
        if key is not None:
            hit = self.memo.get(key)
            if hit is not None:
                return hit
        try:
            ok, derived = in_remission(self.definition, inputs())
            outcome = (True, bool(ok), _compact(derived, self.definition.key), "")
        except (NotEvaluableError, UnitError, ValueError, TypeError) as exc:
            outcome = (False, None, json.dumps({"definition": self.definition.key}), f"not evaluable: {exc}"[:300])
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
) -> DerivedCut:
    """Derive remission per assessment and one time-to-event row per participant.

    Streams the assessments frame participant by participant (it is sorted by participant), so memory
    stays proportional to one participant's visits plus the output records. ``on_assessment`` receives
    every derived assessment (the caller may store it). Records are in participant-id order.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    rule_form = SUPPORTED_RULES.get(definition.rule)
    if rule_form is None:
        raise ValueError(f"remission rule {definition.rule!r} cannot be derived from the casebook")
    participants = {
        info.participant_id: info for info in map(ParticipantInfo.from_record, frames["participants"].records())
    }
    mmtt = _grouped(frames.get("mmtt"), "visit_id")
    mri = _grouped(frames.get("mri"), "participant_id")
    relapses = _grouped(frames.get("relapses"), "participant_id")
    evaluate = _Evaluator(definition)
    fields = _INPUT_FIELDS[indication]
    result = DerivedCut()

    reader = csv.reader(io.TextIOWrapper(io.BytesIO(frames["assessments"].csv), encoding="utf-8", newline=""))
    header = next(reader)
    col = {name: i for i, name in enumerate(header)}
    i_pid = col["participant_id"]
    # Both frames are sorted by participant id: walk them together (a merge join), one participant's
    # assessments in memory at a time.
    groups = groupby(reader, key=lambda row: int(row[i_pid]))
    pending = next(groups, None)
    for pid in sorted(participants):
        while pending is not None and pending[0] < pid:
            pending = next(groups, None)  # assessments of a participant outside the cut (not infused)
        rows = list(pending[1]) if pending is not None and pending[0] == pid else []
        info = participants[pid]
        visits = _derive_visits(
            info, rows, col, rule_form, fields, evaluate, result, on_assessment, mmtt, mri, relapses, sap, indication
        )
        record = _participant_record(info, visits, sap, follow_up_days, cut_date, endpoint, relapses.get(pid, ()))
        if record is None:
            result.excluded += 1
        else:
            result.records.append(record)
    result.distinct_inputs_evaluated = len(evaluate.memo)
    return result


def _derive_visits(
    info: ParticipantInfo,
    rows: list[list[str]],
    col: Mapping[str, int],
    rule_form: str,
    fields: tuple[str, ...],
    evaluate: _Evaluator,
    result: DerivedCut,
    on_assessment: Callable[[RemissionRow], None] | None,
    mmtt: Mapping[int, list[dict[str, str]]],
    mri: Mapping[int, list[dict[str, str]]],
    relapses: Mapping[int, list[dict[str, str]]],
    sap: SAPOptions,
    indication: str,
) -> list[VisitRemission]:
    """Remission at each of one participant's assessment visits, in date order (one per date)."""
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
    visits: list[VisitRemission] = []
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
            result.adequate += 1
        result.assessments += 1
        if on_assessment is not None:
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
        if not baseline:
            visits.append(VisitRemission(visit_date, status, adequate))
    # Two inadequate rows on one date (e.g. an overdue visit and an empty unscheduled one) would make
    # the episode algorithm refuse the participant; one of them says the same as both.
    return _one_per_date(visits)


def _one_per_date(visits: list[VisitRemission]) -> list[VisitRemission]:
    chosen: dict[dt.date, VisitRemission] = {}
    for visit in visits:
        current = chosen.get(visit.visit_date)
        if current is None or (visit.adequate and not current.adequate):
            chosen[visit.visit_date] = visit
    return sorted(chosen.values(), key=lambda v: v.visit_date)


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


def _participant_record(
    info: ParticipantInfo,
    visits: list[VisitRemission],
    sap: SAPOptions,
    follow_up_days: int,
    cut_date: dt.date,
    endpoint: str,
    relapses: Iterable[Mapping[str, str]],
) -> dict[str, Any] | None:
    cutoff = administrative_cutoff(info.infusion_date, follow_up_days=follow_up_days, data_cut_date=cut_date)
    follow_up = FollowUp(
        infusion_date=info.infusion_date,
        cutoff_date=cutoff,
        visits=visits,
        relapse_dates=tuple(dt.date.fromisoformat(r["onset_date"]) for r in relapses),
        death_date=info.death_date,
        retreatment_date=info.retreatment_date,
        withdrawal_date=info.withdrawal_date,
    )
    if endpoint == "time_to_relapse":
        row: TimeToEventRow | None = time_to_relapse(follow_up, sap.rules)
    else:
        row = duration_of_remission(follow_up, sap.rules, death_is_event=sap.dor_death_is_event)
    if row is None:
        return None
    last_day = min(cutoff, info.withdrawal_date) if info.withdrawal_date else cutoff
    window = [v for v in visits if info.infusion_date <= v.visit_date <= last_day]
    episodes = remission_episodes(window, sap.rules.episodes)
    return {
        "participant_id": info.participant_id,
        "subject_code": info.subject_code,
        "site_code": info.site_code,
        "cohort_number": info.cohort_number,
        "cohort_label": info.cohort_label,
        "dose_per_kg": float(info.dose_per_kg) if info.dose_per_kg is not None else None,
        "infusion_date": info.infusion_date,
        "cutoff_date": cutoff,
        "paramcd": row.paramcd,
        "origin_date": row.origin_date,
        "end_date": row.end_date,
        "duration": row.duration_days,
        "event": row.event,
        "event_code": row.event_code,
        "cr_duration": row.cr_duration_days,
        "lower": row.interval_lower_days,
        "upper": math.inf if row.interval_upper_days is None else row.interval_upper_days,
        "reason": row.reason,
        "assessments": len(visits),
        "adequate_assessments": sum(1 for v in visits if v.adequate),
        "responder": bool(episodes),
        "days_in_remission": days_in_remission(episodes, start=info.infusion_date, end=cutoff),
    }


# ---------------------------------------------------------------------------------------------
# The participant-level analysis frame
# ---------------------------------------------------------------------------------------------

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
]


def cohort_group_label(number: int, label: str) -> str:
    return f"Cohort {number} ({label})"


def analysis_frame(
    records: list[dict[str, Any]], *, grouping: str, allocation: Mapping[int, str] | None = None
) -> pd.DataFrame:
    """The participant-level frame for ``analytics.survival``, one row per participant, sorted by id.

    ``group`` is empty (pooled), the dose cohort, or the randomized arm (``allocation``: participant id
    → arm; only for unblinded users). ``log10_dose`` is the Cox covariate (planned cells/kg).
    """
    frame = pd.DataFrame.from_records(records, columns=[c for c in FRAME_COLUMNS if c not in ("group", "log10_dose")])
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
