"""Rescue therapy as an intercurrent event (each ICH E9(R1) strategy the SAP may choose), and the
participant outcome the analyses use: remission onset for the probability-in-remission curve and the
status at the 3- and 6-month landmarks."""

import dataclasses

import pytest

from analytics.derivations import (
    DurabilityRules,
    EventCode,
    NonResponderPolicy,
    RescueStrategy,
    participant_outcome,
    time_to_relapse,
)
from tests.analytics.test_episodes import day, follow

RULES = DurabilityRules(non_responders=NonResponderPolicy.CENSOR)


def rules(strategy: RescueStrategy) -> DurabilityRules:
    return dataclasses.replace(RULES, rescue=strategy)


def test_rescue_is_an_event_under_the_composite_strategy():
    # In remission from day 28; rescue started on day 200, before the loss seen on day 273.
    row = time_to_relapse(follow("RRRNN", rescue_date=day(200)), rules(RescueStrategy.EVENT))
    assert (row.end_date, row.event, row.event_code, row.reason) == (day(200), 1, EventCode.RESCUE, "rescue therapy")


def test_rescue_competes_while_on_treatment():
    row = time_to_relapse(follow("RRRNN", rescue_date=day(200)), rules(RescueStrategy.COMPETING))
    # KM: censored at the last adequate assessment before it; Aalen–Johansen: rescue on its own date.
    assert (row.end_date, row.event) == (day(182), 0)
    assert (row.event_code, row.cr_end_date) == (EventCode.RESCUE, day(200))


def test_rescue_ends_follow_up_under_the_hypothetical_strategy():
    row = time_to_relapse(follow("RRRNN", rescue_date=day(200)), rules(RescueStrategy.CENSOR))
    assert (row.end_date, row.event, row.event_code) == (day(182), 0, EventCode.CENSORED)
    assert row.reason.endswith("(rescue therapy: hypothetical strategy)")


def test_rescue_is_ignored_under_the_treatment_policy():
    row = time_to_relapse(follow("RRRNN", rescue_date=day(200)), rules(RescueStrategy.IGNORE))
    assert (row.end_date, row.event, row.reason) == (day(273), 1, "loss of remission")


def test_a_loss_on_the_rescue_day_counts_as_relapse():
    row = time_to_relapse(follow("RRRN", rescue_date=day(273)), rules(RescueStrategy.EVENT))
    assert (row.end_date, row.event_code) == (day(273), EventCode.RELAPSE)


def test_rescue_before_the_infusion_window_is_not_counted():
    row = time_to_relapse(follow("RRRN", rescue_date=day(800)), rules(RescueStrategy.EVENT))
    assert row.event_code == EventCode.RELAPSE


def test_the_outcome_gives_onset_exit_and_landmark_status():
    outcome = participant_outcome(follow("NRRN"), RULES)
    assert outcome.onset_day == 91
    assert (outcome.exit_day, outcome.exit_event) == (273, 1)
    assert outcome.in_remission_at_landmark == (True, True)  # day 91 and day 182
    assert outcome.days_in_remission == 273 - 91


def test_the_probability_curve_ignores_the_non_responder_policy():
    failed_at_first = dataclasses.replace(RULES, non_responders=NonResponderPolicy.EVENT_AT_FIRST_ASSESSMENT)
    outcome = participant_outcome(follow("NNNN"), failed_at_first)
    assert (outcome.row.event, outcome.row.end_date) == (1, day(28))  # the endpoint: failure at day 28
    assert (outcome.onset_day, outcome.exit_day, outcome.exit_event) == (None, 273, 0)  # the curve: censored


def test_rescue_ends_the_time_in_remission_unless_ignored():
    ended = participant_outcome(follow("RRRR", rescue_date=day(100)), rules(RescueStrategy.COMPETING))
    kept = participant_outcome(follow("RRRR", rescue_date=day(100)), rules(RescueStrategy.IGNORE))
    # An open episode counts up to its last visit in remission: day 91 before the rescue, day 273 without.
    assert ended.days_in_remission == 91 - 28
    assert kept.days_in_remission == 273 - 28


@pytest.mark.parametrize("endpoint", ["time_to_relapse", "duration_of_remission"])
def test_an_unknown_endpoint_is_refused(endpoint):
    assert participant_outcome(follow("RN"), RULES, endpoint=endpoint) is not None
    with pytest.raises(ValueError, match="unknown endpoint"):
        participant_outcome(follow("RN"), RULES, endpoint="time_to_nothing")
