"""Participant outcomes for a whole trial at once: the same results as calling
:func:`analytics.derivations.participant_outcome` once per participant, in NumPy.

Dates are integer day numbers (``date.toordinal()``). The visits are pivoted into a padded
(visit slot × participant) grid and every derivation loops over the *visit slots* (a dozen or two), each
step one vectorised operation across all participants:

1. The analysis window (:func:`~analytics.derivations._in_follow_up`): infusion to the cut-off,
   withdrawal or — rescue under the hypothetical strategy — rescue start.
2. Remission episodes (:func:`~analytics.derivations.remission_episodes`). A backward pass gives, for
   each visit, the last day of the run of equal statuses it starts; a visit is confirmed when that run
   reaches a later visit at least N days on. A forward pass then runs the episode state machine
   (searching for an onset / in an episode). An unconfirmed dip needs no look-ahead: every later visit of
   the same not-in-remission run is unconfirmed too, so staying "in the episode" until a visit in
   remission (or the end) is what the reference's jump to the resumed visit does.
3. Time-to-event rows (:func:`~analytics.derivations._row`): candidates in the reference's list order,
   the first by (day, list position) — the event codes never decrease along that order, so it is the
   reference's ``min`` by (day, code) with the same tie-breaking — then one pass for the last adequate
   assessments and the consecutive missed visits before it.
4. Reasons: a small integer key per row (template, description, missed visits, cut-off), one Python
   string per distinct key.

Visits outside the window still count in ``assessments`` and in the "administrative cut-off" note, as
in the reference. Unlike the reference, which only refuses two visits on one date inside the window,
any duplicate (participant, day) raises.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.derivations import (
    LANDMARK_DAYS,
    DurabilityRules,
    EpisodeRules,
    EventCode,
    MissingVisitPolicy,
    NonResponderPolicy,
    RescueStrategy,
)

ENDPOINTS = ("time_to_relapse", "duration_of_remission")

# Candidate slots, in the order the reference appends them to its candidate list.
_LOSS, _RELAPSE, _AT_ORIGIN, _AT_FIRST, _DEATH, _RETREATMENT, _RESCUE = range(7)
_DESCRIPTIONS = (
    "loss of remission",
    "relapse",
    "never in remission: failure at origin",
    "never in remission: failure at first adequate assessment",
    "death",
    "retreatment",
    "rescue therapy",
)
_SLOT_CODES = np.array(
    [EventCode.RELAPSE] * 4 + [EventCode.DEATH, EventCode.RETREATMENT, EventCode.RESCUE], dtype=np.int64
)
assert np.all(np.diff(_SLOT_CODES) >= 0), "slot order must not break the reference's (day, code) order"

# Reason templates (the ``kind`` of a row) and the censoring notes of ``_censor_note``.
_CENSORED, _GAP, _EVENT, _COMPETING = range(4)
_NOTE_NONE, _NOTE_WITHDRAWN, _NOTE_RESCUE, _NOTE_CUT = range(4)

_PARTICIPANT_COLUMNS = ("infusion", "cutoff", "withdrawal", "death", "retreatment", "rescue")


@dataclass(frozen=True)
class _Grid:
    """Visits as (slot, participant) arrays; slot j is a participant's j-th visit by date."""

    day: np.ndarray  # float64, +inf where the participant has fewer visits
    adequate: np.ndarray  # bool
    remission: np.ndarray  # bool: adequate and in remission
    count: np.ndarray  # visits per participant
    adequate_count: np.ndarray


@dataclass(frozen=True)
class _Episodes:
    any: np.ndarray
    first_onset: np.ndarray  # NaN: no episode
    first_loss: np.ndarray  # NaN: no episode, or the first is still open
    days_in_remission: np.ndarray
    at_landmark: np.ndarray  # (landmark, participant)


@dataclass(frozen=True)
class _Row:
    end: np.ndarray
    event: np.ndarray
    event_code: np.ndarray
    cr_end: np.ndarray
    lower: np.ndarray
    upper: np.ndarray  # days from origin, +inf when right-censored
    kind: np.ndarray
    slot: np.ndarray
    missed: np.ndarray


def participant_outcomes(
    participants: pd.DataFrame,
    visits: pd.DataFrame,
    relapses: pd.DataFrame,
    rules: DurabilityRules,
    *,
    endpoint: str,
    dor_death_is_event: bool = True,
    landmarks: Sequence[float] = LANDMARK_DAYS,
) -> pd.DataFrame:
    """:func:`~analytics.derivations.participant_outcome` for every participant at once.

    * ``participants``: one row per participant, sorted by a unique ``participant_id``; ``infusion`` and
      ``cutoff`` (int days), ``withdrawal``, ``death``, ``retreatment``, ``rescue`` (float days, NaN for
      none).
    * ``visits``: ``participant_id``, ``day``, ``adequate``, ``in_remission`` (ignored when not adequate);
      at most one row per (participant, day). Rows of unknown participants are ignored.
    * ``relapses``: ``participant_id``, ``day`` (dated relapses, any order).

    Returns one row per participant, in input order: ``included`` (False where the reference returns
    ``None``; the other columns are then meaningless), the endpoint row as day numbers (``origin``,
    ``end``, ``cr_end``) and days from origin (``duration``, ``cr_duration``, ``lower``, ``upper`` with
    ``inf`` for right-censored), ``event``, ``event_code``, ``reason``, then ``assessments``,
    ``adequate_assessments``, ``responder``, ``days_in_remission``, ``onset_day`` (NaN for none),
    ``exit_day``, ``exit_event`` and one ``landmark_<i>`` column per landmark.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    ids = participants["participant_id"].to_numpy()
    n = len(ids)
    if n > 1 and not np.all(ids[1:] > ids[:-1]):
        raise ValueError("participants must be sorted by a unique participant_id")
    p = {name: participants[name].to_numpy(dtype=np.float64, na_value=np.nan) for name in _PARTICIPANT_COLUMNS}
    infusion, cutoff = p["infusion"], p["cutoff"]
    withdrawal, death, retreatment, rescue = p["withdrawal"], p["death"], p["retreatment"], p["rescue"]

    grid = _grid(ids, visits)
    rel_pos, rel_day = _relapses(ids, relapses)

    # The analysis window (_in_follow_up) and the censoring note (_censor_note).
    rescue_ends = (rules.rescue == RescueStrategy.CENSOR) & (infusion <= rescue) & (rescue <= cutoff)
    last_day = np.fmin(cutoff, withdrawal)
    last_day = np.where(rescue_ends, np.fmin(last_day, rescue), last_day)
    window = (grid.day >= infusion) & (grid.day <= last_day)
    last_visit = np.full(n, -np.inf)  # of every visit, in the window or not
    if grid.day.shape[0]:
        last_visit = np.where(grid.count > 0, grid.day[np.maximum(grid.count - 1, 0), np.arange(n)], -np.inf)
    cut = (last_visit > cutoff) | (_group_max(rel_pos, rel_day, n) > cutoff)
    cut |= (death > cutoff) | (retreatment > cutoff) | (rescue > cutoff)
    withdrawn = withdrawal <= cutoff
    note = np.select(
        [withdrawn & (~rescue_ends | (withdrawal < rescue)), rescue_ends, cut],
        [_NOTE_WITHDRAWN, _NOTE_RESCUE, _NOTE_CUT],
        _NOTE_NONE,
    )

    landmark_days = infusion[None, :] + np.floor(np.asarray(landmarks, dtype=np.float64))[:, None]
    end_of_remission = cutoff
    if rules.rescue != RescueStrategy.IGNORE:
        end_of_remission = np.fmin(cutoff, rescue)
    # E1: the episodes of the endpoint rows; E2: those of the outcome, which end at any rescue start.
    # When rescue is an event or a competing event the endpoint uses E2 too (derivations._endpoint_episodes).
    if rules.rescue != RescueStrategy.IGNORE:
        window2 = window & ~(grid.day > rescue)  # NaN rescue keeps every visit
        ep2 = _episodes(
            grid, window2, rules.episodes, start=infusion, end=end_of_remission, landmark_days=landmark_days
        )
    if rules.rescue in (RescueStrategy.EVENT, RescueStrategy.COMPETING):
        ep1 = ep2
    else:
        ep1 = _episodes(grid, window, rules.episodes, start=infusion, end=end_of_remission, landmark_days=landmark_days)
    if rules.rescue == RescueStrategy.IGNORE:
        ep2 = ep1

    # Per-window summaries: first adequate assessment; last adequate one before the first loss.
    first_adequate = np.full(n, np.nan)
    before_loss = np.full(n, np.nan)
    for j in range(grid.day.shape[0]):
        ok = window[j] & grid.adequate[j]
        d = grid.day[j]
        first_adequate = np.where(ok & np.isnan(first_adequate), d, first_adequate)
        before_loss = np.where(ok & (d < ep1.first_loss), d, before_loss)

    def competing(start: np.ndarray) -> dict[int, np.ndarray]:
        def within(day: np.ndarray) -> np.ndarray:
            return np.where((start <= day) & (day <= last_day), day, np.nan)

        found = {_DEATH: within(death), _RETREATMENT: within(retreatment)}
        if rules.rescue in (RescueStrategy.EVENT, RescueStrategy.COMPETING):
            found[_RESCUE] = within(rescue)
        return found

    def event_slots(*, death_is_event: bool) -> np.ndarray:
        slots = np.zeros(7, dtype=bool)
        slots[[_LOSS, _RELAPSE, _AT_ORIGIN, _AT_FIRST]] = True
        slots[_DEATH] = death_is_event
        slots[_RETREATMENT] = rules.retreatment_is_event
        slots[_RESCUE] = rules.rescue == RescueStrategy.EVENT
        return slots

    # Time to relapse, with non-responders censored: the outcome's exit, and the TTREL row itself
    # unless the SAP adds an event for non-responders.
    relapse_ttrel = _group_min(rel_pos, rel_day, n, (rel_day >= infusion[rel_pos]) & (rel_day <= last_day[rel_pos]))
    ttrel_days = {_LOSS: ep1.first_loss, _RELAPSE: relapse_ttrel, **competing(infusion)}
    ttrel_after = {_LOSS: before_loss}
    ttrel_slots = event_slots(death_is_event=rules.death_is_event)
    itt = _row(grid, window, infusion, ttrel_days, ttrel_after, ttrel_slots, rules.missed_visits_censor_threshold)

    if endpoint == "time_to_relapse":
        origin = infusion
        included = ~((rules.non_responders == NonResponderPolicy.EXCLUDE) & ~ep1.any & np.isnan(relapse_ttrel))
        if rules.non_responders == NonResponderPolicy.EVENT_AT_ORIGIN:
            ttrel_days[_AT_ORIGIN] = np.where(ep1.any, np.nan, infusion)
        elif rules.non_responders == NonResponderPolicy.EVENT_AT_FIRST_ASSESSMENT:
            ttrel_days[_AT_FIRST] = np.where(ep1.any, np.nan, first_adequate)
            ttrel_after[_AT_FIRST] = infusion
        if _AT_ORIGIN in ttrel_days or _AT_FIRST in ttrel_days:
            row = _row(
                grid, window, infusion, ttrel_days, ttrel_after, ttrel_slots, rules.missed_visits_censor_threshold
            )
        else:
            row = itt
    else:
        included = ep1.any.copy()
        origin = np.where(included, ep1.first_onset, infusion)  # anything finite for the excluded
        relapse_dor = _group_min(rel_pos, rel_day, n, (rel_day > origin[rel_pos]) & (rel_day <= last_day[rel_pos]))
        row = _row(
            grid,
            window & (grid.day >= origin),
            origin,
            {_LOSS: ep1.first_loss, _RELAPSE: relapse_dor, **competing(origin)},
            {_LOSS: before_loss},
            event_slots(death_is_event=dor_death_is_event),
            rules.missed_visits_censor_threshold,
        )

    exit_day = itt.end - infusion
    onset_day = ep2.first_onset - infusion
    left_before = (onset_day > exit_day) | ((onset_day == exit_day) & (itt.event == 1))
    onset_day = np.where(left_before, np.nan, onset_day)

    columns: dict[str, object] = {
        "participant_id": ids,
        "included": included,
        "origin": origin.astype(np.int64),
        "end": row.end.astype(np.int64),
        "duration": (row.end - origin).astype(np.int64),
        "event": row.event,
        "event_code": row.event_code,
        "cr_end": row.cr_end.astype(np.int64),
        "cr_duration": (row.cr_end - origin).astype(np.int64),
        "lower": (row.lower - origin).astype(np.int64),
        "upper": row.upper - origin,
        "reason": _reasons(row, note, cutoff),
        "assessments": grid.count,
        "adequate_assessments": grid.adequate_count,
        "responder": ep2.any,
        "days_in_remission": ep2.days_in_remission.astype(np.int64),
        "onset_day": onset_day,
        "exit_day": exit_day.astype(np.int64),
        "exit_event": itt.event,
    }
    for k in range(len(landmarks)):
        columns[f"landmark_{k}"] = ep2.at_landmark[k]
    return pd.DataFrame(columns, index=participants.index)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _positions(ids: np.ndarray, participant_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's participant position, and which rows belong to a known participant."""
    if len(ids) == 0:
        return np.zeros(len(participant_id), dtype=np.int64), np.zeros(len(participant_id), dtype=bool)
    pos = np.searchsorted(ids, participant_id)
    pos = np.minimum(pos, len(ids) - 1)
    return pos, ids[pos] == participant_id


def _grid(ids: np.ndarray, visits: pd.DataFrame) -> _Grid:
    n = len(ids)
    pos, known = _positions(ids, visits["participant_id"].to_numpy())
    day = visits["day"].to_numpy(dtype=np.int64)
    adequate = visits["adequate"].to_numpy(dtype=bool)
    remission = visits["in_remission"].to_numpy(dtype=bool, na_value=False) & adequate
    if not known.all():
        pos, day, adequate, remission = pos[known], day[known], adequate[known], remission[known]
    step_pos, step_day = np.diff(pos), np.diff(day)
    if np.any((step_pos < 0) | ((step_pos == 0) & (step_day < 0))):
        order = np.lexsort((day, pos))
        pos, day, adequate, remission = pos[order], day[order], adequate[order], remission[order]
        step_pos, step_day = np.diff(pos), np.diff(day)
    if np.any((step_pos == 0) & (step_day == 0)):
        raise ValueError("two visits share a date")
    count = np.bincount(pos, minlength=n)
    starts = np.concatenate(([0], np.cumsum(count)[:-1])) if n else np.zeros(0, dtype=np.int64)
    slot = np.arange(len(pos)) - starts[pos]
    m = int(count.max()) if n else 0
    grid_day = np.full((m, n), np.inf)
    grid_day[slot, pos] = day
    grid_adequate = np.zeros((m, n), dtype=bool)
    grid_adequate[slot, pos] = adequate
    grid_remission = np.zeros((m, n), dtype=bool)
    grid_remission[slot, pos] = remission
    return _Grid(grid_day, grid_adequate, grid_remission, count, np.bincount(pos[adequate], minlength=n))


def _relapses(ids: np.ndarray, relapses: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    pos, known = _positions(ids, relapses["participant_id"].to_numpy())
    return pos[known], relapses["day"].to_numpy(dtype=np.float64)[known]


def _group_min(pos: np.ndarray, values: np.ndarray, n: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-participant minimum (NaN for none) of ``values[mask]``."""
    if mask is not None:
        pos, values = pos[mask], values[mask]
    result = np.full(n, np.inf)
    np.minimum.at(result, pos, values)
    return np.where(np.isinf(result), np.nan, result)


def _group_max(pos: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    result = np.full(n, -np.inf)
    np.maximum.at(result, pos, values)
    return result


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------


def _confirmations(grid: _Grid, in_seq: np.ndarray, rules: EpisodeRules) -> tuple[np.ndarray, np.ndarray]:
    """Whether each visit would be confirmed as an onset / a loss (``_confirming_index`` is not None).

    Walking backwards, ``run_in``/``run_out`` hold the last day of the run of in-remission / not-in-
    remission visits that starts at the next visit of the sequence (NaN if that visit has the other
    status). A visit is confirmed when its run reaches a later visit at least N days after it."""
    m, n = grid.day.shape
    onset_ok = np.zeros((m, n), dtype=bool)
    loss_ok = np.zeros((m, n), dtype=bool)
    run_in = np.full(n, np.nan)
    run_out = np.full(n, np.nan)
    for j in range(m - 1, -1, -1):
        valid, status, d = in_seq[j], grid.remission[j], grid.day[j]
        end_in = np.fmax(run_in, d)  # a run continued by the next visit ends later than this one
        end_out = np.fmax(run_out, d)
        onset_ok[j] = valid & status & (end_in > d) & (end_in >= d + rules.onset_confirmation_min_days)
        loss_ok[j] = valid & ~status & (end_out > d) & (end_out >= d + rules.loss_confirmation_min_days)
        run_in = np.where(valid, np.where(status, end_in, np.nan), run_in)
        run_out = np.where(valid, np.where(status, np.nan, end_out), run_out)
    return onset_ok, loss_ok


def _episodes(
    grid: _Grid,
    window: np.ndarray,
    rules: EpisodeRules,
    *,
    start: np.ndarray,
    end: np.ndarray,
    landmark_days: np.ndarray,
) -> _Episodes:
    """``remission_episodes`` on the visits in ``window``, reduced to what the outcome needs."""
    in_seq = window if rules.missing_visits == MissingVisitPolicy.NOT_IN_REMISSION else window & grid.adequate
    onset_ok, loss_ok = (
        _confirmations(grid, in_seq, rules) if rules.confirm_onset or rules.confirm_loss else (None, None)
    )
    m, n = grid.day.shape
    in_episode = np.zeros(n, dtype=bool)
    any_episode = np.zeros(n, dtype=bool)
    onset = np.full(n, np.nan)
    last_in = np.full(n, np.nan)
    first_onset = np.full(n, np.nan)
    first_loss = np.full(n, np.nan)
    total = np.zeros(n)
    at_landmark = np.zeros(landmark_days.shape, dtype=bool)
    for j in range(m):
        valid, status, d = in_seq[j], grid.remission[j], grid.day[j]
        seen_in = valid & status
        begin = seen_in & ~in_episode
        if onset_ok is not None and rules.confirm_onset:
            begin &= onset_ok[j]
        lose = valid & ~status & in_episode
        if loss_ok is not None and rules.confirm_loss:
            lose &= loss_ok[j]
        if begin.any():
            first_onset = np.where(begin & ~any_episode, d, first_onset)
            any_episode |= begin
            onset = np.where(begin, d, onset)
        in_episode |= begin
        last_in = np.where(seen_in & in_episode, d, last_in)
        if lose.any():
            first_loss = np.where(lose & np.isnan(first_loss), d, first_loss)
            counted = np.maximum(np.minimum(d, end) - np.maximum(onset, start), 0)
            total += np.where(lose, counted, 0)
            at_landmark |= lose & (onset <= landmark_days) & (d > landmark_days)
            in_episode &= ~lose
    # Open episodes count up to their last visit in remission, and at every landmark after the onset.
    counted = np.maximum(np.minimum(last_in, end) - np.maximum(onset, start), 0)
    total += np.where(in_episode, counted, 0)
    at_landmark |= in_episode & (onset <= landmark_days)
    return _Episodes(any_episode, first_onset, first_loss, total, at_landmark)


# ---------------------------------------------------------------------------------------------
# Time-to-event rows
# ---------------------------------------------------------------------------------------------


def _row(
    grid: _Grid,
    visits: np.ndarray,
    origin: np.ndarray,
    candidate_days: dict[int, np.ndarray],
    detected_after: dict[int, np.ndarray],
    event_slots: np.ndarray,
    threshold: int,
) -> _Row:
    """``_row``: ``visits`` marks the grid cells in the row's visit list; candidates absent are NaN.
    Dates stay day numbers; the caller subtracts ``origin``."""
    n = len(origin)
    first_day = np.full(n, np.inf)
    first_slot = np.full(n, -1, dtype=np.int64)
    for slot in sorted(candidate_days):  # ties keep the earlier slot, as ``min`` keeps the earlier item
        days = candidate_days[slot]
        earlier = days < first_day
        first_day = np.where(earlier, days, first_day)
        first_slot = np.where(earlier, slot, first_slot)
    after = np.full(n, np.nan)
    for slot, days in detected_after.items():
        after = np.where(first_slot == slot, days, after)

    censor_day = origin.copy()  # last adequate assessment
    gap_day = origin.copy()  # last adequate assessment before the first candidate
    on_day = origin.copy()  # last adequate assessment on or before it
    missed = np.zeros(n, dtype=np.int64)  # consecutive missed visits just before it
    for j in range(grid.day.shape[0]):
        d, adequate = grid.day[j], grid.adequate[j]
        present = visits[j]
        ok = present & adequate
        before = present & (d < first_day)
        censor_day = np.where(ok, d, censor_day)
        gap_day = np.where(ok & before, d, gap_day)
        on_day = np.where(ok & (d <= first_day), d, on_day)
        missed = np.where(before, np.where(adequate, 0, missed + 1), missed)

    found = first_slot >= 0
    slot = np.maximum(first_slot, 0)
    gap = found & (missed >= threshold)
    event = found & ~gap & event_slots[slot]
    competing = found & ~gap & ~event
    kind = np.select([gap, event, competing], [_GAP, _EVENT, _COMPETING], _CENSORED)
    end = np.select([gap, event, competing], [gap_day, first_day, on_day], censor_day)
    cr_end = np.where(event | competing, first_day, end)
    lower = np.where(event, np.where(np.isnan(after), first_day, after), end)
    return _Row(
        end=end,
        event=event.astype(np.int64),
        event_code=np.where(event | competing, _SLOT_CODES[slot], 0),
        cr_end=cr_end,
        lower=lower,
        upper=np.where(event, first_day, np.inf),
        kind=kind,
        slot=slot,
        missed=missed,
    )


def _reasons(row: _Row, note: np.ndarray, cutoff: np.ndarray) -> np.ndarray:
    """The reference's reason strings, built once per distinct (template, description, number)."""
    cutoffs, cutoff_index = np.unique(cutoff, return_inverse=True)
    censored = row.kind == _CENSORED
    detail = np.where(censored, note, row.slot)
    number = np.where(row.kind == _GAP, row.missed, 0)
    number = np.where(censored & (note == _NOTE_CUT), cutoff_index, number)
    key = row.kind + 4 * (detail + 8 * number.astype(np.int64))
    keys, inverse = np.unique(key, return_inverse=True)
    notes = ("", " (withdrawn or lost to follow-up)", " (rescue therapy: hypothetical strategy)")
    texts = []
    for value in keys.tolist():
        kind, rest = value % 4, value // 4
        detail_value, number_value = rest % 8, rest // 8
        if kind == _CENSORED:
            if detail_value == _NOTE_CUT:
                date = dt.date.fromordinal(int(cutoffs[number_value]))
                text = f" (administrative cut-off {date.isoformat()})"
            else:
                text = notes[detail_value]
            texts.append(f"censored at last adequate assessment{text}")
        elif kind == _GAP:
            texts.append(
                f"{_DESCRIPTIONS[detail_value]} after {number_value} consecutive missed visits: "
                "censored at last adequate assessment"
            )
        elif kind == _EVENT:
            texts.append(_DESCRIPTIONS[detail_value])
        else:
            texts.append(f"{_DESCRIPTIONS[detail_value]}: censored at last adequate assessment")
    return np.array(texts, dtype=object)[inverse.reshape(-1)] if len(key) else np.array([], dtype=object)
