"""Remission episodes and time-to-event rows (docs/domain.md §5 generic algorithm; Part B §2)."""

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.derivations import (
    DurabilityRules,
    EpisodeRules,
    EventCode,
    FollowUp,
    MissingVisitPolicy,
    NonResponderPolicy,
    VisitRemission,
    administrative_cutoff,
    days_in_remission,
    duration_of_remission,
    remission_episodes,
    time_to_relapse,
)
from analytics.survival import analysis_frame, cumulative_incidence, kaplan_meier

INFUSION = dt.date(2025, 1, 6)
CUTOFF = INFUSION + dt.timedelta(days=730)
# Protocol days of the scheduled assessments (Day 0 = infusion), through Month 24.
SCHEDULE = (28, 91, 182, 273, 364, 455, 546, 637, 728)
CENSOR_NON_RESPONDERS = DurabilityRules(non_responders=NonResponderPolicy.CENSOR)


def day(n: int) -> dt.date:
    return INFUSION + dt.timedelta(days=n)


def visits(pattern: str, schedule=SCHEDULE) -> list[VisitRemission]:
    """'R' in remission, 'N' not in remission, '-' missed (not adequate)."""
    return [
        VisitRemission(day(d), None, adequate=False) if s == "-" else VisitRemission(day(d), s == "R")
        for d, s in zip(schedule, pattern, strict=False)
    ]


def follow(pattern: str, **kwargs) -> FollowUp:
    return FollowUp(infusion_date=INFUSION, cutoff_date=CUTOFF, visits=visits(pattern), **kwargs)


def test_the_administrative_cut_off_is_infusion_plus_730_days_or_an_earlier_data_cut():
    assert administrative_cutoff(INFUSION) == dt.date(2027, 1, 6)
    assert administrative_cutoff(INFUSION, data_cut_date=dt.date(2026, 3, 1)) == dt.date(2026, 3, 1)
    assert administrative_cutoff(INFUSION, follow_up_days=365) == dt.date(2026, 1, 6)


def test_loss_of_remission_is_a_relapse_dated_at_the_visit_that_saw_it():
    row = time_to_relapse(follow("RRN"), CENSOR_NON_RESPONDERS)
    assert (row.paramcd, row.end_date, row.duration_days, row.event, row.event_code) == ("TTREL", day(182), 182, 1, 1)
    assert (row.aval, row.cnsr) == (183, 0)  # ADaM: AVAL = ADT − STARTDT + 1; CNSR = 1 means censored
    assert (row.interval_lower_days, row.interval_upper_days) == (91, 182)  # between the last two visits
    assert row.reason == "loss of remission"


def test_an_unconfirmed_dip_is_ignored_when_loss_needs_confirmation():
    rules = EpisodeRules(confirm_loss=True)
    [episode] = remission_episodes(visits("RNRNN"), rules)
    assert (episode.onset_date, episode.last_in_remission_date) == (day(28), day(182))
    assert (episode.loss_date, episode.loss_confirmed_on) == (day(273), day(364))
    row = time_to_relapse(follow("RNRNN"), DurabilityRules(NonResponderPolicy.CENSOR, episodes=rules))
    assert (row.end_date, row.event) == (day(273), 1)


def test_an_unconfirmed_loss_at_the_last_visit_leaves_the_episode_open():
    rules = EpisodeRules(confirm_loss=True)
    [episode] = remission_episodes(visits("RRN"), rules)
    assert episode.loss_date is None
    row = time_to_relapse(follow("RRN"), DurabilityRules(NonResponderPolicy.CENSOR, episodes=rules))
    assert (row.end_date, row.event) == (day(182), 0)  # censored at the last adequate assessment


def test_onset_can_require_confirmation_at_a_later_visit():
    rules = EpisodeRules(confirm_onset=True)
    [episode] = remission_episodes(visits("RNRR"), rules)
    assert (episode.onset_date, episode.onset_confirmed_on) == (day(182), day(273))


def test_onset_confirmation_respects_the_minimum_interval():
    rules = EpisodeRules(confirm_onset=True, onset_confirmation_min_days=56)
    schedule = (28, 56, 91)
    [episode] = remission_episodes(visits("RRR", schedule), rules)
    assert (episode.onset_date, episode.onset_confirmed_on) == (day(28), day(91))  # day 56 is too soon
    assert remission_episodes(visits("RRN", schedule), rules) == []


def test_a_new_episode_can_start_after_a_loss():
    episodes = remission_episodes(visits("RNNRR"))
    assert [(e.onset_date, e.loss_date) for e in episodes] == [(day(28), day(91)), (day(273), None)]
    assert days_in_remission(episodes, start=INFUSION, end=CUTOFF) == (91 - 28) + (364 - 273)


def test_missed_visits_can_be_imputed_as_not_in_remission():
    ignored = remission_episodes(visits("R-R"))
    assert [(e.onset_date, e.loss_date) for e in ignored] == [(day(28), None)]
    imputed = remission_episodes(visits("R-R"), EpisodeRules(missing_visits=MissingVisitPolicy.NOT_IN_REMISSION))
    assert [(e.onset_date, e.loss_date) for e in imputed] == [(day(28), day(91)), (day(182), None)]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (NonResponderPolicy.CENSOR, (day(182), 182, 0, 0)),
        (NonResponderPolicy.EVENT_AT_FIRST_ASSESSMENT, (day(28), 28, 1, 1)),
        (NonResponderPolicy.EVENT_AT_ORIGIN, (INFUSION, 0, 1, 1)),
    ],
)
def test_participants_never_in_remission_follow_the_sap_policy(policy, expected):
    row = time_to_relapse(follow("NNN"), DurabilityRules(non_responders=policy))
    assert (row.end_date, row.duration_days, row.event, row.event_code) == expected


def test_non_responders_can_be_excluded():
    assert time_to_relapse(follow("NNN"), DurabilityRules(NonResponderPolicy.EXCLUDE)) is None
    assert duration_of_remission(follow("NNN"), CENSOR_NON_RESPONDERS) is None


def test_no_event_censors_at_the_last_adequate_assessment():
    row = time_to_relapse(follow("RRR-"), CENSOR_NON_RESPONDERS)
    assert (row.end_date, row.event, row.event_code) == (day(182), 0, 0)
    assert row.interval_upper_days is None
    assert row.reason.startswith("censored at last adequate assessment")


def test_an_event_after_two_consecutive_missed_visits_is_censored_before_the_gap():
    row = time_to_relapse(follow("RR--N"), CENSOR_NON_RESPONDERS)
    assert (row.end_date, row.event, row.event_code) == (day(91), 0, 0)
    assert "after 2 consecutive missed visits" in row.reason
    # One missed visit is not enough to censor …
    assert time_to_relapse(follow("RR-N"), CENSOR_NON_RESPONDERS).event == 1
    # … and the threshold is a SAP option.
    lenient = DurabilityRules(NonResponderPolicy.CENSOR, missed_visits_censor_threshold=3)
    assert time_to_relapse(follow("RR--N"), lenient).event == 1


def test_withdrawal_censors_at_the_last_adequate_assessment_not_the_withdrawal_date():
    row = time_to_relapse(follow("RRRRN", withdrawal_date=day(200)), CENSOR_NON_RESPONDERS)
    assert (row.end_date, row.event) == (day(182), 0)  # the day-273/364 visits come after withdrawal
    assert "withdrawn" in row.reason


def test_nothing_after_the_administrative_cut_off_is_used():
    late = [*visits("RRRRRRRRR"), VisitRemission(day(760), False)]
    row = time_to_relapse(FollowUp(INFUSION, CUTOFF, late), CENSOR_NON_RESPONDERS)
    assert (row.end_date, row.duration_days, row.event) == (day(728), 728, 0)
    assert "administrative cut-off 2027-01-06" in row.reason
    assert time_to_relapse(FollowUp(INFUSION, CUTOFF, late, death_date=day(800)), CENSOR_NON_RESPONDERS).event_code == 0


def test_death_is_a_competing_event_unless_the_endpoint_is_composite():
    row = time_to_relapse(follow("RR", death_date=day(150)), CENSOR_NON_RESPONDERS)
    # KM: censored at the last adequate assessment; Aalen–Johansen: death (code 2) at its date.
    assert (row.end_date, row.event) == (day(91), 0)
    assert (row.event_code, row.cr_end_date, row.cr_duration_days) == (EventCode.DEATH, day(150), 150)
    composite = DurabilityRules(NonResponderPolicy.CENSOR, death_is_event=True)
    row = time_to_relapse(follow("RR", death_date=day(150)), composite)
    assert (row.end_date, row.event, row.event_code) == (day(150), 1, EventCode.DEATH)
    assert (row.interval_lower_days, row.interval_upper_days) == (150, 150)


def test_retreatment_is_coded_for_aalen_johansen():
    row = time_to_relapse(follow("RRR", retreatment_date=day(200)), CENSOR_NON_RESPONDERS)
    assert (row.event, row.event_code, row.cr_duration_days) == (0, EventCode.RETREATMENT, 200)
    composite = DurabilityRules(NonResponderPolicy.CENSOR, retreatment_is_event=True)
    assert time_to_relapse(follow("RRR", retreatment_date=day(200)), composite).event == 1


def test_a_dated_relapse_between_visits_is_an_exact_event():
    row = time_to_relapse(follow("RRRR", relapse_dates=[day(200)]), CENSOR_NON_RESPONDERS)
    assert (row.end_date, row.event, row.event_code, row.reason) == (day(200), 1, 1, "relapse")
    assert (row.interval_lower_days, row.interval_upper_days) == (200, 200)


def test_relapse_and_death_on_the_same_day_count_as_relapse():
    row = time_to_relapse(follow("RR", relapse_dates=[day(150)], death_date=day(150)), CENSOR_NON_RESPONDERS)
    assert (row.event, row.event_code) == (1, EventCode.RELAPSE)


def test_duration_of_remission_runs_from_onset_to_loss_or_death():
    row = duration_of_remission(follow("NRRRN"), CENSOR_NON_RESPONDERS)
    assert (row.paramcd, row.origin_date, row.end_date, row.duration_days, row.event) == (
        "DOR",
        day(91),
        day(364),
        273,
        1,
    )
    row = duration_of_remission(follow("NRR", death_date=day(200)), CENSOR_NON_RESPONDERS)
    assert (row.end_date, row.event, row.event_code) == (day(200), 1, EventCode.DEATH)
    row = duration_of_remission(follow("NRR", death_date=day(200)), CENSOR_NON_RESPONDERS, death_is_event=False)
    assert (row.end_date, row.event, row.event_code) == (day(182), 0, EventCode.DEATH)


def test_rows_serialise_to_json_with_the_adam_fields():
    record = time_to_relapse(follow("RRN"), CENSOR_NON_RESPONDERS).as_record()
    assert json.loads(json.dumps(record)) == record
    assert (record["origin_date"], record["aval"], record["cnsr"]) == ("2025-01-06", 183, 0)


def test_visits_on_the_same_date_are_refused():
    with pytest.raises(ValueError, match="share a date"):
        remission_episodes([VisitRemission(day(28), True), VisitRemission(day(28), False)])
    with pytest.raises(ValueError, match="no remission status"):
        VisitRemission(day(28), None)


def test_rows_feed_the_survival_module():
    followups = [
        follow("RRN"),
        follow("RRRRRRRRR"),
        follow("RRRN"),
        follow("RR", death_date=day(150)),
        follow("RRRRR", retreatment_date=day(400)),
        follow("RRRRRN"),
    ]
    records = [time_to_relapse(f, CENSOR_NON_RESPONDERS).as_record() for f in followups]
    frame = analysis_frame(records)
    km = kaplan_meier(frame)
    assert km["groups"][0]["events"] == 3
    cif = cumulative_incidence(frame)
    assert (cif["events_of_interest"], cif["competing"], cif["censored"]) == (3, 2, 1)
    json.dumps(km, allow_nan=False)
    json.dumps(cif, allow_nan=False)


@given(
    pattern=st.text(alphabet="RN-", min_size=0, max_size=len(SCHEDULE)),
    death=st.one_of(st.none(), st.integers(min_value=1, max_value=800)),
    confirm_loss=st.booleans(),
    policy=st.sampled_from(list(NonResponderPolicy)),
)
def test_time_to_relapse_invariants(pattern, death, confirm_loss, policy):
    rules = DurabilityRules(policy, episodes=EpisodeRules(confirm_loss=confirm_loss))
    follow_up = follow(pattern, death_date=day(death) if death else None)
    row = time_to_relapse(follow_up, rules)
    if row is None:
        assert policy == NonResponderPolicy.EXCLUDE
        return
    adequate = {v.visit_date: v.in_remission for v in follow_up.visits if v.adequate}
    assert 0 <= row.duration_days <= 730
    assert row.duration_days == (row.end_date - INFUSION).days
    assert row.cnsr == 1 - row.event
    assert row.cr_duration_days >= row.duration_days
    if row.event == 0:
        # Censored rows end at an adequate assessment, or at the origin when there is none.
        assert row.end_date in adequate or row.end_date == INFUSION
        assert row.interval_upper_days is None
    else:
        assert row.interval_lower_days <= row.interval_upper_days == row.duration_days
        if row.event_code == EventCode.RELAPSE and row.end_date != INFUSION:
            assert adequate.get(row.end_date) is False  # seen at a visit not in remission
    episodes = remission_episodes(follow_up.visits, rules.episodes)
    for earlier, later in zip(episodes, episodes[1:], strict=False):
        assert earlier.loss_date is not None
        assert earlier.loss_date < later.onset_date
