"""``manage.py seed_demo``: a realistic demo trial, built through the services, rebuilt identically.

The command is run twice for the whole module (it takes seconds, and the services it calls own
durable transactions, so it cannot run inside a test's transaction): first in one process, then
again with the default worker processes, which goes through the reset. The tests read the result.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import F
from django.utils import timezone

from trials.account_events import AccountEvent
from trials.audit import audit_verify
from trials.management.demo_trial import das28_crp
from trials.models import (
    Consent,
    DiseaseAssessment,
    Disposition,
    Indication,
    Infusion,
    InsulinDoseChange,
    MMTTSample,
    MRIRead,
    Participant,
    ParticipantStatus,
    ProtocolDeviation,
    Relapse,
    RescueTherapy,
    Role,
    Site,
    Study,
    StudyMembership,
    Visit,
    VisitStatus,
)
from trials.services import reconsent_due

User = get_user_model()
DEMO_CODES = ("treg-ms-01", "treg-t1d-01", "treg-ra-01")


@dataclass
class DemoRuns:
    first_output: str
    second_output: str
    first: dict
    second: dict


def fingerprint() -> dict:
    """Everything a rebuild must reproduce (not database ids, which depend on the worker count)."""
    return {
        "participants": list(
            Participant.objects.order_by("study__code", "subject_code").values_list(
                "study__code",
                "subject_code",
                "status",
                "sex",
                "birth_year",
                "screening_date",
                "enrolment_date",
                "cohort__number",
                "screen_failure_reason",
            )
        ),
        "infusions": sorted(
            Infusion.objects.values_list(
                "participant__subject_code",
                "participant__study__code",
                "start_at",
                "total_viable_cells",
                "dose_cells_per_kg",
            )
        ),
        "visits": sorted(
            Visit.objects.values_list(
                "participant__study__code",
                "participant__subject_code",
                "kind",
                "definition__code",
                "actual_date",
                "missed",
            ),
            key=str,
        ),
        "assessments": sorted(
            DiseaseAssessment.objects.values_list(
                "visit__participant__subject_code",
                "visit__participant__study__code",
                "assessment_date",
                "edss",
                "hba1c",
                "crp",
                "tender_joints_28",
            ),
            key=str,
        ),
        "insulin": sorted(
            InsulinDoseChange.objects.values_list(
                "participant__subject_code", "effective_date", "total_daily_units", "source"
            )
        ),
        "rescue": sorted(
            RescueTherapy.objects.values_list(
                "participant__study__code", "participant__subject_code", "start_date", "stop_date", "category"
            ),
            key=str,
        ),
        "counts": {m.__name__: m.objects.count() for m in (Consent, MRIRead, MMTTSample, Relapse, ProtocolDeviation)},
    }


@pytest.fixture(scope="module")
def demo(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        try:
            first, second = StringIO(), StringIO()
            call_command("seed_demo", "--jobs", "1", stdout=first)
            first_print = fingerprint()
            call_command("seed_demo", stdout=second)
            yield DemoRuns(first.getvalue(), second.getvalue(), first_print, fingerprint())
        finally:
            call_command("flush", interactive=False, verbosity=0)


pytestmark = pytest.mark.django_db


def participants(code: str):
    return Participant.objects.filter(study__code=code)


def test_it_builds_three_studies_of_about_sixty_participants(demo):
    assert sorted(Study.objects.values_list("code", flat=True)) == sorted(DEMO_CODES)
    for code in DEMO_CODES:
        assert 55 <= participants(code).count() <= 65
    assert {s.indication for s in Study.objects.all()} == {Indication.MS, Indication.T1D, Indication.RA}
    for study in Study.objects.all():
        assert set(study.sites.values_list("code", flat=True)) == {"S01", "S02", "S03"}
        # RA also has a placebo cohort (planned dose 0), last so that it stays empty: cohorts fill in order.
        assert study.cohorts.count() == (4 if study.code == "treg-ra-01" else 3)
        assert study.consent_documents.count() == 2
        assert list(study.schedule.values_list("code", flat=True)) == [
            "d0",
            "d1",
            "d3",
            "d7",
            "d14",
            "d28",
            "m3",
            "m6",
            "m9",
            "m12",
            "m18",
            "m24",
        ]


def test_the_ra_study_has_an_empty_placebo_cohort_after_the_dose_cohorts(demo):
    cohorts = list(Study.objects.get(code="treg-ra-01").cohorts.order_by("number"))
    assert [c.is_placebo for c in cohorts] == [False, False, False, True]
    placebo = cohorts[-1]
    assert placebo.planned_cells_per_kg == 0
    assert "Placebo" in placebo.label
    assert not placebo.participants.exists()
    assert not Infusion.objects.filter(cohort=placebo).exists()


def test_every_participant_status_is_present(demo):
    assert set(Participant.objects.values_list("status", flat=True)) == set(ParticipantStatus.values)
    for code in DEMO_CODES:
        statuses = set(participants(code).values_list("status", flat=True))
        assert set(ParticipantStatus.values) - statuses <= {ParticipantStatus.DIED}
    assert Participant.objects.filter(status=ParticipantStatus.DIED).count() == 1


def test_closed_participants_say_why(demo):
    assert not Participant.objects.filter(status=ParticipantStatus.SCREEN_FAILED, screen_failure_reason="").exists()
    for kind in (Disposition.Kind.WITHDRAWN, Disposition.Kind.LOST):
        assert not Disposition.objects.filter(kind=kind, reason="").exists()
    death = Disposition.objects.get(kind=Disposition.Kind.DEATH)
    assert death.death_date <= death.disposition_date
    completed = Disposition.objects.filter(kind=Disposition.Kind.COMPLETED).select_related("participant")
    for disposition in completed:
        infusion = disposition.participant.infusions.get()
        assert (disposition.disposition_date - infusion.infusion_date).days >= 730


def test_nothing_is_dated_in_the_future(demo):
    today = timezone.now().date()
    assert max(Visit.objects.exclude(actual_date=None).values_list("actual_date", flat=True)) <= today
    assert max(Infusion.objects.values_list("end_at", flat=True)) <= timezone.now()
    assert max(Participant.objects.values_list("screening_date", flat=True)) <= today


def test_day_0_is_the_local_infusion_date_at_each_site(demo):
    zones = {"S01": "Europe/London", "S02": "Europe/Warsaw", "S03": "America/Los_Angeles"}
    assert dict(Site.objects.values_list("code", "timezone")) == zones
    for infusion in Infusion.objects.select_related("participant__site"):
        local = infusion.start_at.astimezone(ZoneInfo(zones[infusion.participant.site.code]))
        assert 8 <= local.hour <= 13
        assert infusion.infusion_date == local.date()
        d0 = infusion.participant.visits.get(definition__code="d0")
        assert d0.planned_date == infusion.infusion_date


def test_the_schedule_shows_every_visit_state(demo):
    today = timezone.now().date()
    in_follow_up = Visit.objects.filter(participant__status=ParticipantStatus.IN_FOLLOW_UP, kind="scheduled")
    states = Counter(v.status_on(today) for v in in_follow_up)
    assert set(states) == set(VisitStatus.values)
    assert states[VisitStatus.DONE] > 10 * states[VisitStatus.MISSED] > 0
    assert Visit.objects.filter(kind=Visit.Kind.UNSCHEDULED).exists()


def test_some_visits_and_doses_are_protocol_deviations(demo):
    window = ProtocolDeviation.objects.filter(category=ProtocolDeviation.Category.VISIT_WINDOW)
    dose = ProtocolDeviation.objects.filter(category=ProtocolDeviation.Category.DOSE)
    infused = Infusion.objects.count()
    assert 5 <= window.count() <= 60
    assert 3 <= dose.count() <= infused // 5
    assert all(d.visit.in_window is False for d in window.select_related("visit"))


def test_some_participants_must_re_consent(demo):
    open_participants = Participant.objects.filter(status=ParticipantStatus.IN_FOLLOW_UP)
    due = [p for p in open_participants if reconsent_due(p) is not None]
    assert 0 < len(due) < open_participants.count()
    assert Consent.objects.filter(document__version="2.0", participant__consents__document__version="1.0").exists()


def _assessments_by_participant(code: str) -> dict[int, list[DiseaseAssessment]]:
    rows = defaultdict(list)
    for a in DiseaseAssessment.objects.filter(visit__participant__study__code=code).order_by("assessment_date"):
        rows[a.visit.participant_id].append(a)
    return rows


def _reached_and_lost(series: list[bool]) -> tuple[bool, bool]:
    reached = any(series)
    lost = any(series[i] and not any(series[i + 1 :]) and i + 1 < len(series) for i in range(len(series)))
    return reached, lost


def test_some_ra_participants_reach_remission_and_some_lose_it(demo):
    reached = lost = 0
    for rows in _assessments_by_participant("treg-ra-01").values():
        das = [das28_crp(a.__dict__) for a in rows]
        assert das[0] > 3.2  # active disease at baseline
        did_reach, did_lose = _reached_and_lost([score < 2.6 for score in das])
        reached, lost = reached + did_reach, lost + did_lose
    assert reached >= 10
    assert lost >= 3
    remission = DiseaseAssessment.objects.filter(
        visit__participant__study__code="treg-ra-01", tender_joints_28__lte=1, swollen_joints_28__lte=1
    )
    assert remission.filter(crp_unit="mg/L", crp__lte=5).exists()
    assert remission.filter(crp_unit="mg/dL", crp__lte="0.5").exists()


def test_some_t1d_participants_reach_partial_remission_and_some_lose_it(demo):
    reached = lost = 0
    for rows in _assessments_by_participant("treg-t1d-01").values():
        series = []
        for a in rows:
            percent = float(a.hba1c) if a.hba1c_unit == "%" else float(a.hba1c) / 10.929 + 2.15
            series.append(percent + 4 * float(a.insulin_u_per_kg_day) <= 9)  # IDAA1c
        did_reach, did_lose = _reached_and_lost(series[1:])
        reached, lost = reached + did_reach, lost + did_lose
    assert reached >= 10
    assert lost >= 3
    assert set(MMTTSample.objects.values_list("unit", flat=True)) == {"nmol/L", "pmol/L"}
    assert set(MMTTSample.objects.values_list("minute", flat=True)) == {-10, 0, 15, 30, 60, 90, 120}


def test_ms_participants_relapse_and_show_new_lesions(demo):
    assert Relapse.objects.filter(participant__study__code="treg-ms-01").count() >= 5
    follow_up_reads = MRIRead.objects.exclude(visit__definition__code="d0")
    assert follow_up_reads.filter(new_or_enlarging_t2=0, gd_enhancing=0).exists()
    assert follow_up_reads.filter(new_or_enlarging_t2__gt=0).exists()
    worsened = 0
    for rows in _assessments_by_participant("treg-ms-01").values():
        if len(rows) > 2 and rows[-1].edss - rows[0].edss >= 1 and rows[-2].edss - rows[0].edss >= 1:
            worsened += 1
    assert worsened >= 3


def test_most_t1d_participants_keep_an_insulin_log_that_follows_their_course(demo):
    """Baseline ~0.6-0.9 U/kg/day at screening, less after the infusion, some off insulin for months
    and some back on it (docs/domain.md §5.2)."""
    assert not InsulinDoseChange.objects.exclude(participant__study__code="treg-t1d-01").exists()
    logs = defaultdict(list)
    for change in InsulinDoseChange.objects.select_related("participant").order_by("effective_date"):
        logs[change.participant_id].append(change)
    enrolled = participants("treg-t1d-01").exclude(enrolment_date=None)
    assert 0.6 * enrolled.count() <= len(logs) <= 0.95 * enrolled.count()
    weights = dict(Infusion.objects.values_list("participant_id", "weight_kg"))
    consents = {c.participant_id: c.consent_date for c in Consent.objects.order_by("-consent_date")}
    today = timezone.now().date()
    stopped = restarted = reduced = 0
    for participant_id, log in logs.items():
        assert log[0].effective_date == consents[participant_id]  # the baseline dose, from the clinic record
        assert log[0].source == InsulinDoseChange.Source.CLINIC
        assert log[-1].effective_date <= today
        if participant_id in weights:
            assert 0.58 <= float(log[0].total_daily_units / weights[participant_id]) <= 0.92
        doses = [c.total_daily_units for c in log]
        reduced += len(doses) > 1 and doses[1] < doses[0]
        stopped += 0 in doses
        restarted += any(a == 0 < b for a, b in zip(doses, doses[1:], strict=False))
    assert reduced >= 0.5 * len(logs)
    assert stopped >= 2
    assert restarted >= 1


def test_about_one_infused_participant_in_ten_gets_a_rescue_therapy(demo):
    allowed = {
        "treg-ms-01": {RescueTherapy.Category.CORTICOSTEROID, RescueTherapy.Category.DMT},
        "treg-ra-01": {RescueTherapy.Category.CORTICOSTEROID, RescueTherapy.Category.CSDMARD},
        "treg-t1d-01": {RescueTherapy.Category.INSULIN_INTENSIFICATION},
    }
    for code, categories in allowed.items():
        infused = Infusion.objects.filter(participant__study__code=code).count()
        therapies = RescueTherapy.objects.filter(participant__study__code=code).select_related("participant")
        assert 0.05 * infused <= therapies.count() <= 0.15 * infused, code
        assert {t.category for t in therapies} <= categories
        for therapy in therapies:
            day0 = therapy.participant.infusions.get().infusion_date
            assert 60 <= (therapy.start_date - day0).days <= 730
            assert therapy.stop_date is None or therapy.stop_date >= therapy.start_date
            assert therapy.agent
            assert therapy.reason
    # The MS participants withdrawn "for rescue disease-modifying therapy" have it in their casebook.
    withdrawn_for_it = Disposition.objects.filter(
        participant__study__code="treg-ms-01", kind="withdrawn", reason__contains="rescue disease-modifying therapy"
    )
    assert withdrawn_for_it.exists()
    for disposition in withdrawn_for_it:
        assert disposition.participant.rescue_therapies.filter(category=RescueTherapy.Category.DMT).exists()


def test_clinical_data_were_written_by_the_site_coordinator_through_the_services(demo):
    coordinators = {"S01": "coordinator_s01", "S02": "coordinator_s02", "S03": "coordinator_s03"}
    events = Participant.pgh_event_model.objects.filter(pgh_label="insert").select_related("pgh_context")
    sites = dict(Participant.objects.values_list("pk", "site__code"))
    for event in events:
        assert event.pgh_context.metadata["channel"] == "command"
        assert event.pgh_context.metadata["username"] == coordinators[sites[event.pgh_obj_id]]
    assert Visit.pgh_event_model.objects.filter(pgh_label="update", pgh_context__isnull=True).count() == 0


def test_the_audit_chain_is_intact_after_the_rebuild(demo):
    checked, problems = audit_verify()
    assert problems == []
    assert checked > 5000


def test_the_demo_users_exist_with_their_roles(demo):
    admin = User.objects.get(username="admin")
    assert admin.is_superuser
    assert admin.check_password("orchid-lantern-5821")
    expected = {
        "coordinator_s01": (Role.COORDINATOR, {"S01"}),
        "coordinator_s02": (Role.COORDINATOR, {"S02"}),
        "investigator_s01": (Role.INVESTIGATOR, {"S01"}),
        "monitor": (Role.MONITOR, {"S01", "S02"}),
        "medical_monitor": (Role.MEDICAL_MONITOR, {None}),
        "data_manager": (Role.DATA_MANAGER, {None}),
        "statistician": (Role.STATISTICIAN, {None}),
        "sponsor_admin": (Role.SPONSOR_ADMIN, {None}),
    }
    for username, (role, sites) in expected.items():
        memberships = StudyMembership.objects.filter(user__username=username)
        assert {m.study.code for m in memberships} == set(DEMO_CODES), username
        assert {m.role for m in memberships} == {role}, username
        assert {m.site.code if m.site else None for m in memberships} == sites, username
    assert StudyMembership.objects.get(user__username="medical_monitor", study__code="treg-ms-01").unblinded
    assert not StudyMembership.objects.filter(user__username="statistician", unblinded=True).exists()
    data_manager = User.objects.get(username="data_manager")
    assert data_manager.is_staff
    assert data_manager.has_perm("trials.change_study")
    assert not data_manager.has_perm("trials.change_participant")
    assert User.objects.get(username="coordinator_s02").check_password("amber-dunes-4419")


def _sign_in(client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


def test_one_demo_account_is_locked_out_and_the_data_manager_releases_it(demo, client):
    """The lockout is stored as axes stores it, so axes refuses even the right password; the demo data
    manager finds it under Admin → Axes → Access attempts and releases it with a reason."""
    attempt = AccessAttempt.objects.get(username="coordinator_s02_locked")
    assert attempt.failures_since_start >= settings.AXES_FAILURE_LIMIT
    assert AccessAttempt.objects.count() == 1  # no other demo login is locked
    memberships = StudyMembership.objects.filter(user__username="coordinator_s02_locked")
    assert {(m.study.code, m.role, m.site.code) for m in memberships} == {
        (code, Role.COORDINATOR, "S02") for code in DEMO_CODES
    }
    assert _sign_in(client, "coordinator_s02_locked", "juniper-ridge-8062").status_code == 429

    assert _sign_in(client, "data_manager", "maple-signal-1848").status_code == 302
    listing = client.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200
    assert b"coordinator_s02_locked" in listing.content
    released = client.post(
        f"/admin/axes/accessattempt/{attempt.pk}/release/",
        {"change_reason": "Confirmed by phone with Marek Nowak"},
    )
    assert released.status_code == 302
    assert not AccessAttempt.objects.filter(username="coordinator_s02_locked").exists()
    event = AccountEvent.objects.get(kind=AccountEvent.Kind.LOCKOUT_RELEASED)
    assert (event.actor.username, event.reason) == ("data_manager", "Confirmed by phone with Marek Nowak")
    client.post("/logout/")
    assert _sign_in(client, "coordinator_s02_locked", "juniper-ridge-8062").status_code == 302


def test_the_other_demo_logins_are_not_locked(demo, client):
    for username, password in (("coordinator_s01", "harbour-violet-3307"), ("coordinator_s02", "amber-dunes-4419")):
        assert _sign_in(client, username, password).status_code == 302, username
        client.post("/logout/")


def test_one_infusion_outside_the_release_criteria_was_confirmed_and_is_a_deviation(demo):
    deviation = ProtocolDeviation.objects.select_related("infusion__participant__study", "participant__site").get(
        category=ProtocolDeviation.Category.RELEASE
    )
    infusion = deviation.infusion
    study = infusion.participant.study
    assert (study.code, deviation.participant.site.code) == ("treg-ms-01", "S01")
    assert deviation.participant.status == ParticipantStatus.IN_FOLLOW_UP
    assert infusion.viability_pct < study.release_min_viability_pct
    assert deviation.system_detected
    assert deviation.voided_at is None
    assert "below the release minimum" in deviation.description
    assert deviation.get_category_display() == "Product outside release criteria"
    assert Infusion.objects.filter(viability_pct__lt=F("participant__study__release_min_viability_pct")).count() == 1


def test_it_prints_the_logins_and_the_counts(demo):
    for text in ("Demo logins", "coordinator_s01", "harbour-violet-3307", "Participants by status", "Screen failure"):
        assert text in demo.second_output
    locked = next(line for line in demo.second_output.splitlines() if line.startswith("coordinator_s02_locked  "))
    assert "juniper-ridge-8062" in locked
    assert locked.endswith("S02 (locked: ask the data manager)")
    assert "resetting the demo" in demo.second_output
    assert "resetting the demo" not in demo.first_output


def test_a_second_run_rebuilds_the_same_demo(demo):
    assert demo.first["participants"] == demo.second["participants"]
    assert demo.first == demo.second
    assert Participant.objects.count() == len(demo.first["participants"])


def test_it_refuses_a_database_with_other_studies(demo):
    Study.objects.create(code="real-study-01", title="A real study", indication=Indication.MS)
    with pytest.raises(CommandError, match="non-demo studies"):
        call_command("seed_demo", stdout=StringIO())
    assert Study.objects.filter(code="real-study-01").exists()
    assert participants("treg-ms-01").exists()


def test_the_same_seed_on_the_same_day_is_deterministic_and_another_seed_is_not():
    from trials.management.demo_trial import STUDIES, DemoBuilder

    today = dt.date(2026, 1, 15)

    def plan(seed):
        builder = DemoBuilder(seed=seed, today=today)
        return [(p.fate, p.screening_date, p.site_code, p.sex, p.birth_year) for p in builder.plan_study(STUDIES[0])]

    assert plan(1) == plan(1)
    assert plan(1) != plan(2)
