import datetime as dt

from tests.factories import infused
from trials.models import ParticipantStatus


def test_an_infused_participant_has_a_schedule(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    assert participant.status == ParticipantStatus.IN_FOLLOW_UP
    assert participant.subject_code == "S01-0001"
    assert participant.visits.count() == 7
    m3 = participant.visits.get(definition__code="m3")
    assert m3.planned_date == dt.date(2025, 2, 3) + dt.timedelta(days=91)
