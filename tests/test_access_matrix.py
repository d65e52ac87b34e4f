"""The role x site x URL matrix (docs/reliability.md checklist #21).

Every URL the project serves must have an entry in ``POLICY``; a new URL without one fails
``test_every_url_has_a_policy``. Each policy says, for every role, what a GET (pages) or a POST
with an empty body (API actions) must answer for an object at the role's own site and at another
site: 200/201/400 when allowed, 403 when the role is read-only there, 404 when the object is out of
scope (no existence leak), a login redirect or 401 when anonymous.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.authtoken.models import Token

from safety.dictionaries import ctcae_load_shipped
from safety.models import CTCAETerm
from tests.factories import UserFactory, infused, member
from trials import services
from trials.models import Role

ROLES = [
    "coordinator",
    "investigator",
    "monitor",
    "medical_monitor",
    "data_manager",
    "statistician",
    "sponsor_admin",
    "no_role",
    "anonymous",
]
SITE_BOUND = {"coordinator", "investigator", "monitor"}
DATA_ENTRY = {"coordinator", "investigator"}
CLINICAL_READERS = {"coordinator", "investigator", "monitor", "medical_monitor", "data_manager", "statistician"}
ANALYSTS = {"statistician", "data_manager", "medical_monitor"}
ALLOWED = "allowed"  # 200 for a page, 200/201/400 for an API action (an empty body is bad input)


@dataclass(frozen=True)
class Policy:
    kind: str  # what the URL exposes; decides the expected answer per role (see ``expected``)
    target: str  # "none", "study", "participant", "infusion", "visit", "adverse_event", "sae_case" or "report"
    api: bool = False
    method: str = "get"


def expected(policy: Policy, role: str, other_site: bool) -> str | int:
    if policy.kind == "public":  # the API token exchange: anyone may try (an empty body is a 400)
        return ALLOWED
    if role == "anonymous":
        return 401 if policy.api else 302
    if policy.kind == "public_authenticated":
        return ALLOWED
    if policy.kind == "study_list":  # lists filtered to the caller's scope
        return ALLOWED
    in_scope = role in CLINICAL_READERS and not (role in SITE_BOUND and other_site)
    if policy.kind == "read":
        return ALLOWED if in_scope else 404
    if policy.kind == "write":
        if not in_scope:
            return 404
        return ALLOWED if role in DATA_ENTRY else 403
    if policy.kind == "data_manager":
        if not in_scope:
            return 404
        return ALLOWED if role == "data_manager" else 403
    if policy.kind == "investigator":
        if not in_scope:
            return 404
        return ALLOWED if role == "investigator" else 403
    if policy.kind == "medical_monitor":  # sponsor safety assessments and submissions
        if not in_scope:
            return 404
        return ALLOWED if role == "medical_monitor" else 403
    if policy.kind == "study_wide":  # cross-site pages (dose escalation): not for site-bound roles
        if role not in CLINICAL_READERS:
            return 404
        return 403 if role in SITE_BOUND else ALLOWED
    if policy.kind == "investigator_blinded_study":  # the matrix study is open-label: nobody may unblind
        return 404 if not in_scope else 403
    if policy.kind in ("analytics", "analytics_sap"):  # durability pages of a study
        if role not in CLINICAL_READERS:
            return 404
        owners = ANALYSTS if policy.kind == "analytics" else {"statistician", "data_manager"}
        return ALLOWED if role in owners else 403
    if policy.kind == "analytics_object":  # an analysis or a data cut: not found outside the analysts
        return ALLOWED if role in ANALYSTS else 404
    if policy.kind == "study_write":  # screening: the study is visible, entry needs a site role
        if role not in CLINICAL_READERS:
            return 404
        return ALLOWED if role in DATA_ENTRY else 403
    raise AssertionError(policy.kind)


POLICY: dict[str, Policy] = {
    # Coordinator pages
    "trials:home": Policy("public_authenticated", "none"),
    "trials:participant_list": Policy("read", "study"),
    "trials:participant_screen": Policy("study_write", "study"),
    "trials:participant_detail": Policy("read", "participant"),
    "trials:consent_record": Policy("write", "participant"),
    "trials:eligibility_record": Policy("write", "participant"),
    "trials:screen_failure": Policy("write", "participant"),
    "trials:participant_enrol": Policy("write", "participant"),
    "trials:infusion_record": Policy("write", "participant"),
    "trials:infusion_correct": Policy("write", "infusion"),
    "trials:visit_add": Policy("write", "participant"),
    "trials:relapse_record": Policy("write", "participant"),
    "trials:rescue_therapy_record": Policy("write", "participant"),
    "trials:insulin_dose_record": Policy("write", "participant"),
    "trials:disposition_record": Policy("write", "participant"),
    "trials:visit_row": Policy("read", "visit"),
    "trials:visit_record": Policy("write", "visit"),
    "trials:visit_missed": Policy("write", "visit"),
    "trials:assessment_record": Policy("write", "visit"),
    "trials:mri_record": Policy("write", "visit"),
    "trials:mmtt_record": Policy("write", "visit"),
    "trials:visit_void": Policy("write", "visit"),
    "trials:participant_history": Policy("read", "participant"),
    "trials:casebook_lock": Policy("data_manager", "participant"),
    "trials:study_lock": Policy("data_manager", "study"),
    "trials:study_audit_export": Policy("data_manager", "study"),
    "trials:casebook_sign": Policy("investigator", "participant"),
    "trials:participant_unblind": Policy("investigator_blinded_study", "participant"),
    # Safety
    "safety:ae_list": Policy("read", "participant"),
    "safety:ae_create": Policy("write", "participant"),
    "safety:dlt_adjudicate": Policy("medical_monitor", "participant"),
    "safety:ae_detail": Policy("read", "adverse_event"),
    "safety:ae_update": Policy("write", "adverse_event"),
    "safety:crs_assess": Policy("write", "adverse_event"),
    "safety:icans_assess": Policy("write", "adverse_event"),
    "safety:ctcae_grades": Policy("public_authenticated", "none"),
    "safety:sae_report": Policy("write", "sae_case"),
    "safety:sae_assess": Policy("medical_monitor", "sae_case"),
    "safety:report_submit": Policy("medical_monitor", "report"),
    "safety:dashboard": Policy("read", "study"),
    "safety:reports": Policy("read", "study"),
    "safety:escalation": Policy("study_wide", "study"),
    # Analytics (durability analyses)
    "analytics:durability": Policy("analytics", "study"),
    "analytics:job_list": Policy("analytics", "study"),
    "analytics:analysis_request": Policy("analytics", "study"),
    "analytics:definition_set": Policy("analytics_sap", "study"),
    "analytics:cut_create": Policy("analytics_sap", "study"),
    "analytics:job_detail": Policy("analytics_object", "analysis"),
    "analytics:job_status": Policy("analytics_object", "analysis"),
    "analytics:plot_png": Policy("analytics_object", "analysis_plot"),
    "analysis-list": Policy("study_list", "none", api=True),
    "analysis-detail": Policy("analytics_object", "analysis", api=True),
    "data-cut-list": Policy("study_list", "none", api=True),
    "data-cut-detail": Policy("analytics_object", "data_cut", api=True),
    # REST API
    "api-root": Policy("public_authenticated", "none", api=True),
    "api-schema": Policy("public_authenticated", "none", api=True),
    "api-docs": Policy("public_authenticated", "none"),  # a page: anonymous users go to the sign-in page
    "api-token": Policy("public", "none", api=True, method="post"),
    "study-list": Policy("study_list", "none", api=True),
    "participant-list": Policy("study_list", "none", api=True),
    "participant-detail": Policy("read", "participant", api=True),
    "participant-visits": Policy("read", "participant", api=True),
    "participant-consent": Policy("write", "participant", api=True, method="post"),
    "participant-eligibility": Policy("write", "participant", api=True, method="post"),
    "participant-screen-fail": Policy("write", "participant", api=True, method="post"),
    "participant-enrol": Policy("write", "participant", api=True, method="post"),
    "participant-infusions": Policy("write", "participant", api=True, method="post"),
    "participant-disposition": Policy("write", "participant", api=True, method="post"),
    "visit-detail": Policy("read", "visit", api=True),
    "visit-record": Policy("write", "visit", api=True, method="post"),
    "visit-missed": Policy("write", "visit", api=True, method="post"),
    "visit-assessment": Policy("write", "visit", api=True, method="post"),
}

# Served by Django itself or by libraries, tested elsewhere or with their own access rules.
NOT_IN_MATRIX_PREFIXES = ("admin:", "login", "logout")


def _named_urls(patterns=None, namespace: str = "") -> set[str]:
    names: set[str] = set()
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            names |= _named_urls(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(f"{namespace}{pattern.name}")
    return names


def _served_names() -> set[str]:
    return {
        name
        for name in _named_urls()
        if not name.startswith(NOT_IN_MATRIX_PREFIXES)
        and not name.endswith(("-root", "format-suffix"))
        or name == "api-root"
    }


def test_every_url_has_a_policy():
    missing = sorted(_served_names() - set(POLICY))
    assert missing == [], f"add these URLs to the access matrix: {missing}"


@pytest.fixture
def world(study, sites, coordinator_site_a, coordinator_site_b):
    own = infused(study, sites[0], coordinator_site_a)
    other = infused(study, sites[1], coordinator_site_b, start=dt.datetime(2025, 2, 4, 9, tzinfo=dt.UTC))
    for participant, actor in ((own, coordinator_site_a), (other, coordinator_site_b)):
        services.visit_record(
            actor=actor,
            visit=participant.visits.get(definition__code="d0"),
            actual_date=participant.visits.get(definition__code="d0").planned_date,
        )
    from safety.services import adverse_event_record
    from tests.safety.conftest import serious_kwargs

    # Loaded here, not assumed from the data migration: a transactional test's flush empties it.
    ctcae_load_shipped()
    ctcae = {t.term: t for t in CTCAETerm.objects.filter(version="5.0")}
    for participant, actor in ((own, coordinator_site_a), (other, coordinator_site_b)):
        adverse_event_record(actor=actor, participant=participant, **serious_kwargs(ctcae))
    users = {
        "coordinator": coordinator_site_a,
        "investigator": member("pi_a", study, Role.INVESTIGATOR, sites[0]),
        "monitor": member("cra_a", study, Role.MONITOR, sites[0]),
        "medical_monitor": member("medmon", study, Role.MEDICAL_MONITOR),
        "data_manager": member("dm", study, Role.DATA_MANAGER),
        "statistician": member("stats", study, Role.STATISTICIAN),
        "sponsor_admin": member("sponsor", study, Role.SPONSOR_ADMIN),
        "no_role": UserFactory(username="nobody"),
    }
    from analytics import services as analytics_services

    analytics_services.remission_definition_set(
        actor=users["statistician"],
        study=study,
        name="NEDA-3",
        rule="neda3",
        parameters={},
        sap={"non_responders": "censor"},
        reason="access matrix",
    )
    cut = analytics_services.datacut_create(actor=users["statistician"], study=study, cut_date=dt.date(2025, 6, 30))
    analysis = analytics_services.analysis_request(actor=users["statistician"], data_cut=cut, spec={})
    analytics_services.analysis_run(job_id=analysis.pk, task_id="access-matrix")
    return {"study": study, "own": own, "other": other, "users": users, "data_cut": cut, "analysis": analysis}


def _url(name: str, policy: Policy, world, other_site: bool) -> str:
    participant = world["other"] if other_site else world["own"]
    if policy.target == "none":
        return reverse(name)
    if policy.target == "study":
        return reverse(name, kwargs={"study_code": world["study"].code})
    if policy.target == "participant":
        return reverse(name, kwargs={"pk": participant.pk})
    if policy.target == "infusion":
        return reverse(name, kwargs={"pk": participant.infusions.get().pk})
    if policy.target in ("analysis", "data_cut"):
        return reverse(name, kwargs={"pk": world[policy.target].pk})
    if policy.target == "analysis_plot":
        return reverse(name, kwargs={"pk": world["analysis"].pk, "name": "km"})
    if policy.target in ("adverse_event", "sae_case", "report"):
        ae = participant.adverse_events.get()
        target = {"adverse_event": ae, "sae_case": ae.sae_case, "report": ae.sae_case.reports.first()}
        return reverse(name, kwargs={"pk": target[policy.target].pk})
    visit = participant.visits.get(definition__code="d0")
    return reverse(name, kwargs={"pk": visit.pk})


def _answer(response, policy: Policy) -> str | int:
    status = response.status_code
    if policy.api and policy.method == "post" and status in (200, 201, 400):
        return ALLOWED
    if status == 302 and policy.kind == "public_authenticated" and not response.url.startswith("/login"):
        return ALLOWED  # the home page sends a one-study user straight to their study
    return ALLOWED if status == 200 else status


@pytest.mark.parametrize("role", ROLES)
def test_the_matrix_holds_for_every_role(world, role, client):
    from rest_framework.test import APIClient

    user = world["users"].get(role)
    api = APIClient()
    if user is not None:
        client.force_login(user)
        api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    deviations = []
    checked = 0
    for name, policy in sorted(POLICY.items()):
        study_wide = ("none", "study", "analysis", "analysis_plot", "data_cut")
        sites = (False, True) if policy.target not in study_wide else (False,)
        for other_site in sites:
            url = _url(name, policy, world, other_site)
            http = api if policy.api else client
            response = http.post(url, {}, format="json") if policy.method == "post" else http.get(url)
            got = _answer(response, policy)
            want = expected(policy, role, other_site)
            checked += 1
            if got != want:
                deviations.append(
                    f"{role} {policy.method.upper()} {url} ({name}, other site={other_site}): "
                    f"got {response.status_code}, expected {want}"
                )
    assert deviations == []
    assert checked >= len(POLICY)
