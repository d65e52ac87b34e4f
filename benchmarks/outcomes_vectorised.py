"""Benchmark: vectorised participant outcomes (analytics/outcomes_vectorised.py) against the scalar
reference (analytics.derivations.participant_outcome), on a synthetic trial.

    .venv/bin/python benchmarks/outcomes_vectorised.py [--participants 100000] [--scalar 10000] [--repeat 3]

Builds ``--participants`` participants with 12 disease-activity visits each (the schedule of
benchmarks/durability_job.py, a few days' jitter, missed visits, remission as a two-state Markov chain),
dated relapses, deaths, withdrawals, retreatments, rescue starts and staggered infusions against one
data-cut date. For each rule set and endpoint it prints the time of the scalar reference on the first
``--scalar`` participants (building the ``FollowUp`` objects is timed apart), the vectorised time on all
participants (median of ``--repeat``), the per-participant speed-up, and checks that both agree on
every column for the ``--scalar`` participants. No database needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.derivations import (  # noqa: E402  (after the path set-up)
    LANDMARK_DAYS,
    DurabilityRules,
    EpisodeRules,
    FollowUp,
    MissingVisitPolicy,
    NonResponderPolicy,
    RescueStrategy,
    VisitRemission,
    participant_outcome,
)
from analytics.outcomes_vectorised import participant_outcomes  # noqa: E402

VISIT_DAYS = np.array([28, 61, 91, 122, 152, 182, 243, 304, 365, 487, 608, 730])
CUT_DATE = dt.date(2026, 6, 30).toordinal()
FIRST_INFUSION = dt.date(2024, 1, 8).toordinal()

RULE_SETS = {
    "defaults (censor non-responders, rescue = event)": DurabilityRules(NonResponderPolicy.CENSOR),
    "confirmed onset+loss, missed = not in remission, rescue competing, composite death": DurabilityRules(
        NonResponderPolicy.EVENT_AT_FIRST_ASSESSMENT,
        episodes=EpisodeRules(
            confirm_onset=True,
            onset_confirmation_min_days=28,
            confirm_loss=True,
            loss_confirmation_min_days=28,
            missing_visits=MissingVisitPolicy.NOT_IN_REMISSION,
        ),
        death_is_event=True,
        retreatment_is_event=True,
        rescue=RescueStrategy.COMPETING,
    ),
    "exclude non-responders, rescue hypothetical, threshold 3": DurabilityRules(
        NonResponderPolicy.EXCLUDE, missed_visits_censor_threshold=3, rescue=RescueStrategy.CENSOR
    ),
}


def synthetic_trial(n: int, seed: int = 20260630) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    infusion = FIRST_INFUSION + rng.integers(0, 700, n)
    cutoff = np.minimum(infusion + 730, CUT_DATE)

    def sometimes(rate: float, low: int, high: int) -> np.ndarray:
        day = (infusion + rng.integers(low, high, n)).astype(np.float64)
        return np.where(rng.random(n) < rate, day, np.nan)

    participants = pd.DataFrame(
        {
            "participant_id": ids,
            "infusion": infusion,
            "cutoff": cutoff,
            "withdrawal": sometimes(0.08, 30, 700),
            "death": sometimes(0.03, 10, 760),
            "retreatment": sometimes(0.04, 120, 760),
            "rescue": sometimes(0.06, 60, 760),
        }
    )

    m = len(VISIT_DAYS)
    day = infusion[:, None] + VISIT_DAYS[None, :] + rng.integers(-3, 4, (n, m))
    adequate = rng.random((n, m)) > 0.08
    remission = np.empty((n, m), dtype=bool)
    state = rng.random(n) < 0.4
    for j in range(m):  # in remission stays so with p 0.85; not in remission enters it with p 0.3
        state = np.where(state, rng.random(n) < 0.85, rng.random(n) < 0.3)
        remission[:, j] = state
    # All 12 visits of everyone, also those after the participant's cut-off (the derivations ignore them).
    visits = pd.DataFrame(
        {
            "participant_id": np.repeat(ids, m),
            "day": day.ravel(),
            "adequate": adequate.ravel(),
            "in_remission": (remission & adequate).ravel(),
        }
    )

    count = rng.poisson(0.15, n)
    relapse_ids = np.repeat(ids, count)
    relapse_day = np.repeat(infusion, count) + rng.integers(20, 760, count.sum())
    relapses = pd.DataFrame({"participant_id": relapse_ids, "day": relapse_day})
    relapses = relapses.sample(frac=1.0, random_state=1)  # any order
    return participants, visits, relapses


def follow_ups(participants: pd.DataFrame, visits: pd.DataFrame, relapses: pd.DataFrame) -> list[FollowUp]:
    def date(value: float) -> dt.date | None:
        return None if math.isnan(value) else dt.date.fromordinal(int(value))

    by_visit = {
        pid: [
            VisitRemission(dt.date.fromordinal(d), bool(r) if a else None, adequate=bool(a))
            for d, a, r in zip(g["day"], g["adequate"], g["in_remission"], strict=True)
        ]
        for pid, g in visits.groupby("participant_id")
    }
    by_relapse = {pid: [dt.date.fromordinal(d) for d in g["day"]] for pid, g in relapses.groupby("participant_id")}
    result = []
    for p in participants.itertuples(index=False):
        result.append(
            FollowUp(
                infusion_date=dt.date.fromordinal(p.infusion),
                cutoff_date=dt.date.fromordinal(p.cutoff),
                visits=by_visit.get(p.participant_id, []),
                relapse_dates=by_relapse.get(p.participant_id, []),
                death_date=date(p.death),
                retreatment_date=date(p.retreatment),
                withdrawal_date=date(p.withdrawal),
                rescue_date=date(p.rescue),
            )
        )
    return result


def reference_frame(outcomes: list, ids: np.ndarray) -> pd.DataFrame:
    records = []
    for pid, outcome in zip(ids, outcomes, strict=True):
        if outcome is None:
            records.append({"participant_id": pid, "included": False})
            continue
        row = outcome.row
        record = {
            "participant_id": pid,
            "included": True,
            "origin": row.origin_date.toordinal(),
            "end": row.end_date.toordinal(),
            "duration": row.duration_days,
            "event": row.event,
            "event_code": row.event_code,
            "cr_end": row.cr_end_date.toordinal(),
            "cr_duration": row.cr_duration_days,
            "lower": row.interval_lower_days,
            "upper": math.inf if row.interval_upper_days is None else float(row.interval_upper_days),
            "reason": row.reason,
            "assessments": outcome.assessments,
            "adequate_assessments": outcome.adequate_assessments,
            "responder": outcome.responder,
            "days_in_remission": outcome.days_in_remission,
            "onset_day": math.nan if outcome.onset_day is None else float(outcome.onset_day),
            "exit_day": outcome.exit_day,
            "exit_event": outcome.exit_event,
        }
        record.update({f"landmark_{k}": s for k, s in enumerate(outcome.in_remission_at_landmark)})
        records.append(record)
    return pd.DataFrame.from_records(records)


def disagreements(reference: pd.DataFrame, vectorised: pd.DataFrame) -> int:
    """Participants on which any column differs (excluded participants: only ``included`` counts)."""
    vectorised = vectorised.reset_index(drop=True)
    differ = reference["included"].to_numpy() != vectorised["included"].to_numpy()
    both = reference["included"].to_numpy() & vectorised["included"].to_numpy()
    for column in reference.columns:
        left, right = reference[column].to_numpy(), vectorised[column].to_numpy()
        same = (left == right) | (pd.isna(left) & pd.isna(right))
        differ |= both & ~same
    return int(differ.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--scalar", type=int, default=10_000, help="participants given to the scalar reference")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    started = time.perf_counter()
    participants, visits, relapses = synthetic_trial(args.participants)
    print(
        f"synthetic trial: {len(participants):,} participants, {len(visits):,} visits, {len(relapses):,} dated "
        f"relapses ({time.perf_counter() - started:.1f} s to build)"
    )
    small = participants.iloc[: args.scalar]
    small_ids = set(small["participant_id"])
    small_visits = visits[visits["participant_id"].isin(small_ids)]
    small_relapses = relapses[relapses["participant_id"].isin(small_ids)]
    started = time.perf_counter()
    scalar_inputs = follow_ups(small, small_visits, small_relapses)
    print(f"FollowUp objects for {len(small):,} participants: {time.perf_counter() - started:.2f} s (not counted)")
    print()

    failed = False
    for label, rules in RULE_SETS.items():
        for endpoint in ("time_to_relapse", "duration_of_remission"):
            started = time.perf_counter()
            outcomes = [
                participant_outcome(f, rules, endpoint=endpoint, landmarks=LANDMARK_DAYS) for f in scalar_inputs
            ]
            scalar = time.perf_counter() - started
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                result = participant_outcomes(participants, visits, relapses, rules, endpoint=endpoint)
                times.append(time.perf_counter() - started)
            vectorised = statistics.median(times)
            check = participant_outcomes(small, small_visits, small_relapses, rules, endpoint=endpoint)
            wrong = disagreements(reference_frame(outcomes, small["participant_id"].to_numpy()), check)
            failed |= wrong > 0
            per_scalar = scalar / len(small) * 1e6
            per_vector = vectorised / len(participants) * 1e6
            print(f"{label} — {endpoint}")
            print(
                f"  scalar     {len(small):>9,} participants {scalar:7.3f} s  ({per_scalar:6.1f} µs/participant; "
                f"{per_scalar * len(participants) / 1e6:5.1f} s extrapolated to {len(participants):,})"
            )
            print(
                f"  vectorised {len(participants):>9,} participants {vectorised:7.3f} s  ({per_vector:6.2f} "
                f"µs/participant, median of {args.repeat}; {len(result):,} rows, {int(result['included'].sum()):,} "
                "included)"
            )
            print(f"  speed-up {per_scalar / per_vector:5.0f}×; disagreements on {len(small):,}: {wrong}")
    if failed:
        sys.exit("the vectorised outcomes disagree with the reference")


if __name__ == "__main__":
    main()
