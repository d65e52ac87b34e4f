"""Role x URL matrix of the analytics pages and endpoints (docs/reliability.md checklist #21, as in
tests/test_access_matrix.py): statisticians, data managers and medical monitors see the analyses;
site roles are refused (403 on a study page of their study, 404 on an analysis); roles outside
the study get 404; the definition and data cuts belong to statisticians and data managers."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from analytics import services
from tests.analytics.conftest import CUT_DATE
from tests.factories import UserFactory, member
from trials.models import Role

ANALYSTS = {"statistician", "data_manager", "medical_monitor"}
SAP_OWNERS = {"statistician", "data_manager"}
SITE_ROLES = {"coordinator", "investigator", "monitor"}
ROLES = sorted(ANALYSTS | SITE_ROLES | {"sponsor_admin", "no_role", "anonymous"})


def study_page(role: str, owners: set[str] = ANALYSTS) -> int:
    if role == "anonymous":
        return 302
    if role in owners:
        return 200
    return 403 if role in SITE_ROLES | ANALYSTS else 404


def analysis_object(role: str, *, api: bool = False) -> int:
    if role == "anonymous":
        return 401 if api else 302
    return 200 if role in ANALYSTS else 404


@pytest.fixture
def world(trial, django_capture_on_commit_callbacks):
    site = trial.study.sites.order_by("code").first()
    users = {
        "statistician": trial.statistician,
        "data_manager": trial.data_manager,
        "medical_monitor": trial.medical_monitor,
        "coordinator": trial.coordinator,
        "investigator": member("matrix-pi", trial.study, Role.INVESTIGATOR, site),
        "monitor": member("matrix-cra", trial.study, Role.MONITOR, site),
        "sponsor_admin": member("matrix-sponsor", trial.study, Role.SPONSOR_ADMIN),
        "no_role": UserFactory(username="matrix-nobody"),
    }
    cut = services.datacut_create(actor=trial.statistician, study=trial.study, cut_date=CUT_DATE)
    with django_capture_on_commit_callbacks():
        job = services.analysis_request(actor=trial.statistician, data_cut=cut, spec={})
    services.analysis_run(job_id=job.pk, task_id="matrix")
    return {"study": trial.study, "cut": cut, "job": job, "users": users}


@pytest.mark.parametrize("role", ROLES)
def test_the_analytics_matrix_holds_for_every_role(world, role):
    code, job, cut = world["study"].code, world["job"], world["cut"]
    page = Client()
    api = APIClient()
    user = world["users"].get(role)
    if user is not None:
        page.force_login(user)
        api.force_authenticate(user)
    checks = [
        (page, reverse("analytics:durability", args=[code]), study_page(role)),
        (page, reverse("analytics:job_list", args=[code]), study_page(role)),
        (page, reverse("analytics:analysis_request", args=[code]), study_page(role)),
        (page, reverse("analytics:definition_set", args=[code]), study_page(role, SAP_OWNERS)),
        (page, reverse("analytics:cut_create", args=[code]), study_page(role, SAP_OWNERS)),
        (page, reverse("analytics:job_detail", args=[job.pk]), analysis_object(role)),
        (page, reverse("analytics:job_status", args=[job.pk]), analysis_object(role)),
        (page, reverse("analytics:plot_png", args=[job.pk, "km"]), analysis_object(role)),
        (api, reverse("analysis-detail", args=[job.pk]), analysis_object(role, api=True)),
        (api, reverse("data-cut-detail", args=[cut.pk]), analysis_object(role, api=True)),
        (api, reverse("analysis-list"), 401 if role == "anonymous" else 200),
        (api, reverse("data-cut-list"), 401 if role == "anonymous" else 200),
    ]
    deviations = [
        f"{role} GET {url}: got {status}, expected {want}"
        for http, url, want in checks
        if (status := http.get(url).status_code) != want
    ]
    assert deviations == []


@pytest.mark.parametrize("role", sorted(SITE_ROLES | {"sponsor_admin", "no_role"}))
def test_lists_show_nothing_outside_the_analytics_roles(world, role):
    api = APIClient()
    api.force_authenticate(world["users"][role])
    assert api.get(reverse("analysis-list")).json()["results"] == []
    assert api.get(reverse("data-cut-list")).json()["results"] == []
