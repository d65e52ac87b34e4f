"""A small study for the API tests: participants at every stage at two sites, a recorded visit, a
data cut and a queued analysis, and API tokens for a coordinator, a monitor and a statistician."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from analytics import services as analytics_services
from tests.factories import consented, eligible, infused, screened
from tests.safety.conftest import ctcae, now, participant  # noqa: F401 - the safety fixtures, for the AE form tests
from trials import services
from trials.models import Participant, Visit


@dataclass
class ApiWorld:
    study: object
    participants: list[Participant]
    visits: list[Visit]
    data_cuts: list[int]
    analyses: list[int]
    tokens: dict[str, str]

    def client(self, role: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {self.tokens[role]}")
        return client


@pytest.fixture
def api_world(study, sites, coordinator_site_a, coordinator_site_b, monitor, statistician) -> ApiWorld:
    own_site, other_site = sites
    participants = [
        screened(study, own_site, coordinator_site_a),
        consented(study, own_site, coordinator_site_a),
        eligible(study, own_site, coordinator_site_a),
        infused(study, own_site, coordinator_site_a),
        infused(study, other_site, coordinator_site_b, start=dt.datetime(2025, 2, 4, 9, tzinfo=dt.UTC)),
    ]
    recorded = participants[3].visits.get(definition__code="d0")
    services.visit_record(actor=coordinator_site_a, visit=recorded, actual_date=recorded.planned_date)
    visits = list(Visit.objects.filter(participant__in=participants[3:]).order_by("pk"))
    analytics_services.remission_definition_set(
        actor=statistician,
        study=study,
        name="NEDA-3",
        rule="neda3",
        parameters={},
        sap={"non_responders": "censor"},
        reason="API tests",
    )
    cut = analytics_services.datacut_create(actor=statistician, study=study, cut_date=dt.date(2025, 6, 30))
    job = analytics_services.analysis_request(actor=statistician, data_cut=cut, spec={})
    users = {"coordinator": coordinator_site_a, "monitor": monitor, "statistician": statistician}
    tokens = {role: Token.objects.create(user=user).key for role, user in users.items()}
    return ApiWorld(study, participants, visits, [cut.pk], [job.pk], tokens)
