"""The study-build admin: a data manager can build a study; nothing is ever deleted; the casebook is
read-only; fields that clinical data depend on freeze once used; every edit carries a reason."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from html import unescape

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import reverse

from tests.factories import UserFactory, eligible, enrolled, infused, infusion_kwargs
from trials import services
from trials.models import (
    ConsentDocument,
    DoseCohort,
    EligibilityCriterion,
    Participant,
    Role,
    Site,
    Study,
    StudyMembership,
    Visit,
    VisitDefinition,
)

User = get_user_model()

# Deleting these is how access is revoked or a lockout cleared; they hold no trial data.
REVOCABLE_CREDENTIALS = {"authtoken.tokenproxy", "authtoken.token", "axes.accessattempt"}


def deletion_guarded_models():
    return [m for m in admin.site._registry if m._meta.label_lower not in REVOCABLE_CREDENTIALS]


STUDY_BUILD_MODELS = (Site, Study, DoseCohort, VisitDefinition, EligibilityCriterion, ConsentDocument, StudyMembership)
CASEBOOK_ADMINS = (
    "participant",
    "consent",
    "eligibilityanswer",
    "infusion",
    "visit",
    "diseaseassessment",
    "mriread",
    "mmttsample",
    "relapse",
    "rescuetherapy",
    "insulindosechange",
    "protocoldeviation",
    "disposition",
)


def url(model_or_name, view: str, *args) -> str:
    name = model_or_name if isinstance(model_or_name, str) else model_or_name._meta.model_name
    app = "trials" if isinstance(model_or_name, str) else model_or_name._meta.app_label
    return reverse(f"admin:{app}_{name}_{view}", args=args)


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root", "root@example.invalid", "a-long-test-password-1")


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def casebook(study, sites, coordinator_site_a, t1d_study):
    """One record of every casebook model, written through the services."""
    actor = coordinator_site_a
    participant = infused(study, sites[0], actor)
    d0 = participant.visits.get(definition__code="d0")
    d0 = services.visit_record(actor=actor, visit=d0, actual_date=dt.date(2025, 2, 3), weight_kg=Decimal("70"))
    services.assessment_record(actor=actor, visit=d0, values={"edss": Decimal("2.5")})
    services.mri_record(actor=actor, visit=d0, scan_date=dt.date(2025, 1, 20), new_or_enlarging_t2=2, gd_enhancing=1)
    services.relapse_record(
        actor=actor,
        participant=participant,
        onset_date=dt.date(2025, 2, 10),
        steroid_treated=True,
        confirmed_by_examination=True,
    )
    services.rescue_therapy_record(
        actor=actor,
        participant=participant,
        start_date=dt.date(2025, 2, 12),
        stop_date=dt.date(2025, 2, 14),
        category="corticosteroid",
        agent="methylprednisolone",
        reason="Relapse",
    )
    # A low dose (a protocol deviation), then a withdrawal (a disposition).
    second = enrolled(study, sites[0], actor)
    services.infusion_record(
        actor=actor, participant=second, **infusion_kwargs(second, cells=Decimal("1000000") * 70 / 2)
    )
    services.disposition_record(
        actor=actor, participant=second, kind="withdrawn", disposition_date=dt.date(2025, 3, 1), reason="Moved away"
    )
    t1d = infused(t1d_study, sites[0], actor)
    t1d_d0 = services.visit_record(
        actor=actor, visit=t1d.visits.get(definition__code="d0"), actual_date=dt.date(2025, 2, 3)
    )
    services.mmtt_record(actor=actor, visit=t1d_d0, samples=[(0, Decimal("0.2")), (60, Decimal("0.5"))], unit="nmol/L")
    services.insulin_dose_record(
        actor=actor,
        participant=t1d,
        effective_date=dt.date(2025, 2, 3),
        total_daily_units=Decimal("42"),
        source="diary",
    )
    return participant


class TestStudyBuild:
    @pytest.mark.parametrize("model", STUDY_BUILD_MODELS, ids=lambda m: m.__name__)
    def test_a_superuser_opens_the_changelist_and_the_add_form(self, admin_client, study, model):
        assert admin_client.get(url(model, "changelist")).status_code == 200
        assert admin_client.get(url(model, "add")).status_code == 200

    @pytest.mark.parametrize("model", STUDY_BUILD_MODELS, ids=lambda m: m.__name__)
    def test_the_change_form_of_each_study_build_model_opens(self, admin_client, study, data_manager, model):
        obj = model.objects.first()
        assert admin_client.get(url(model, "change", obj.pk)).status_code == 200

    def test_the_study_change_page_shows_its_inlines(self, admin_client, study):
        response = admin_client.get(url(Study, "change", study.pk))
        assert response.status_code == 200
        content = response.content.decode()
        for prefix in ("cohorts", "schedule", "criteria", "consent_documents"):
            assert f'name="{prefix}-TOTAL_FORMS"' in content
        assert "Aged 18 to 65 years" in content
        assert 'name="sites"' in content  # filter_horizontal
        assert 'name="change_reason"' in content

    def test_the_add_form_does_not_ask_for_a_reason(self, admin_client, study):
        assert 'name="change_reason"' not in admin_client.get(url(Study, "add")).content.decode()

    @pytest.mark.parametrize(
        ("model", "query", "expected", "absent"),
        [
            (Study, "ms-01", "treg-ms-01", "treg-t1d-01"),
            (Study, "Treg infusion in T1D", "treg-t1d-01", "treg-ms-01"),
            (Site, "S02", "University Hospital", "Royal Infirmary"),
            (Site, "Royal", "Royal Infirmary", "University Hospital"),
            (EligibilityCriterion, "infection", "Active infection", "Aged 18 to 65"),
        ],
    )
    def test_search_finds_by_code_and_text(self, admin_client, study, t1d_study, model, query, expected, absent):
        content = admin_client.get(url(model, "changelist"), {"q": query}).content.decode()
        assert expected in content
        assert absent not in content

    def test_list_filters_narrow_the_study_list(self, admin_client, study, t1d_study):
        content = admin_client.get(url(Study, "changelist"), {"indication__exact": "T1D"}).content.decode()
        assert "treg-t1d-01" in content
        assert "treg-ms-01" not in content

    def test_the_membership_search_finds_a_user(self, admin_client, coordinator_site_a, monitor):
        content = admin_client.get(url(StudyMembership, "changelist"), {"q": "coord_a"}).content.decode()
        assert "coord_a" in content
        assert "monitor_a" not in content

    def test_the_membership_user_field_autocompletes(self, admin_client, coordinator_site_a):
        assert "admin-autocomplete" in admin_client.get(url(StudyMembership, "add")).content.decode()
        found = admin_client.get(
            reverse("admin:autocomplete"),
            {"term": "coord", "app_label": "trials", "model_name": "studymembership", "field_name": "user"},
        )
        assert found.status_code == 200
        assert [r["text"] for r in found.json()["results"]] == ["coord_a"]

    def test_a_data_manager_adds_a_cohort(self, admin_client, study):
        response = admin_client.post(
            url(DoseCohort, "add"),
            {
                "study": study.pk,
                "number": 4,
                "label": "40M/kg",
                "planned_cells_per_kg": "40000000",
                "route": "IV",
                "infusions_planned": 1,
                "sentinel_interval_days": 14,
                "capacity": 3,
                "is_open": "on",
            },
        )
        assert response.status_code == 302
        cohort = study.cohorts.get(number=4)
        assert cohort.planned_cells_per_kg == 40_000_000
        event = DoseCohort.pgh_event_model.objects.get(pgh_obj=cohort, pgh_label="insert")
        assert event.pgh_context.metadata["channel"] == "admin"


class TestReasonForChange:
    def _criterion_post(self, criterion, **changes):
        data = {
            "study": criterion.study_id,
            "kind": criterion.kind,
            "number": criterion.number,
            "text": criterion.text,
            "is_active": "on" if criterion.is_active else "",
        }
        data.update(changes)
        return {k: v for k, v in data.items() if v != ""}

    def test_an_edit_without_a_reason_is_refused_and_changes_nothing(self, admin_client, study):
        criterion = study.criteria.get(kind="exclusion")
        response = admin_client.post(
            url(EligibilityCriterion, "change", criterion.pk),
            self._criterion_post(criterion, text="Active or chronic infection"),
        )
        assert response.status_code == 200  # the form again, with the error
        assert "This field is required" in response.content.decode()
        criterion.refresh_from_db()
        assert criterion.text == "Active infection"

    def test_an_edit_with_a_reason_saves_it_with_the_user_in_the_audit_trail(self, admin_client, study, superuser):
        criterion = study.criteria.get(kind="exclusion")
        response = admin_client.post(
            url(EligibilityCriterion, "change", criterion.pk),
            self._criterion_post(criterion, text="Active or chronic infection", change_reason="Protocol amendment 2"),
        )
        assert response.status_code == 302
        criterion.refresh_from_db()
        assert criterion.text == "Active or chronic infection"
        event = EligibilityCriterion.pgh_event_model.objects.get(pgh_obj=criterion, pgh_label="update")
        assert event.pgh_context.metadata["reason"] == "Protocol amendment 2"
        assert event.pgh_context.metadata["user"] == superuser.pk

    def test_a_study_edit_through_its_inlines_carries_the_reason(self, admin_client, study):
        page = admin_client.get(url(Study, "change", study.pk))
        data = _form_data(page)
        data["title"] = "Treg infusion in relapsing MS"
        data["change_reason"] = "Title agreed with the ethics committee"
        # Retire a criterion through its inline row.
        index = next(i for i in range(int(data["criteria-TOTAL_FORMS"])) if data[f"criteria-{i}-kind"] == "exclusion")
        data.pop(f"criteria-{index}-is_active", None)
        response = admin_client.post(url(Study, "change", study.pk), data)
        assert response.status_code == 302, response.content.decode()[:2000]
        study.refresh_from_db()
        assert study.title == "Treg infusion in relapsing MS"
        assert not study.criteria.get(kind="exclusion").is_active
        event = EligibilityCriterion.pgh_event_model.objects.filter(pgh_label="update").get()
        assert event.pgh_context.metadata["reason"] == "Title agreed with the ethics committee"


class TestInUseLock:
    def test_an_answered_criterion_keeps_its_text(self, admin_client, study, sites, coordinator_site_a):
        eligible(study, sites[0], coordinator_site_a)
        criterion = study.criteria.get(kind="inclusion")
        response = admin_client.post(
            url(EligibilityCriterion, "change", criterion.pk),
            {
                "study": study.pk,
                "kind": "inclusion",
                "number": 1,
                "text": "Aged 18 to 75 years",
                "change_reason": "Amendment: retire instead",
            },
        )
        assert response.status_code == 302
        criterion.refresh_from_db()
        assert criterion.text == "Aged 18 to 65 years"  # disabled field: the posted text is ignored
        assert criterion.is_active is False  # retiring it is allowed

    def test_an_unanswered_criterion_can_still_be_reworded(self, admin_client, study):
        criterion = study.criteria.get(kind="inclusion")
        response = admin_client.get(url(EligibilityCriterion, "change", criterion.pk))
        assert "Read-only: participants answered" not in response.content.decode()

    def test_a_cohort_with_participants_keeps_its_planned_dose(self, admin_client, study, sites, coordinator_site_a):
        participant = infused(study, sites[0], coordinator_site_a)
        cohort = participant.cohort
        response = admin_client.post(
            url(DoseCohort, "change", cohort.pk),
            {
                "study": study.pk,
                "number": cohort.number,
                "label": cohort.label,
                "planned_cells_per_kg": "9000000",
                "route": "IV",
                "infusions_planned": 1,
                "sentinel_interval_days": 0,
                "capacity": 3,
                "change_reason": "Cohort closed after the safety review",
            },
        )
        assert response.status_code == 302
        cohort.refresh_from_db()
        assert cohort.planned_cells_per_kg == 1_000_000
        assert cohort.is_open is False

    def test_a_site_with_participants_cannot_leave_the_study(self, admin_client, study, sites, coordinator_site_a):
        infused(study, sites[0], coordinator_site_a)
        page = admin_client.get(url(Study, "change", study.pk))
        data = _form_data(page)
        data["sites"] = [str(sites[1].pk)]
        data["change_reason"] = "Site closed"
        response = admin_client.post(url(Study, "change", study.pk), data)
        assert response.status_code == 200
        assert "Site(s) S01 already have participants in this study" in response.content.decode()
        assert set(study.sites.values_list("code", flat=True)) == {"S01", "S02"}

    def test_a_used_visit_keeps_its_protocol_day(self, admin_client, study, sites, coordinator_site_a):
        infused(study, sites[0], coordinator_site_a)
        definition = study.schedule.get(code="m3")
        assert Visit.objects.filter(definition=definition).exists()
        content = admin_client.get(url(VisitDefinition, "change", definition.pk)).content.decode()
        assert "Read-only: clinical data already refer to this visit definition" in content


class TestMembershipForm:
    def test_a_site_bound_role_needs_a_site(self, admin_client, study):
        user = UserFactory(username="newcomer")
        response = admin_client.post(
            url(StudyMembership, "add"), {"user": user.pk, "study": study.pk, "role": Role.COORDINATOR}
        )
        assert response.status_code == 200
        assert "This role works at one site" in response.content.decode()
        assert not StudyMembership.objects.filter(user=user).exists()

    def test_the_site_must_take_part_in_the_study(self, admin_client, study):
        user = UserFactory(username="newcomer")
        elsewhere = Site.objects.create(code="S09", name="Elsewhere", country="FR")
        response = admin_client.post(
            url(StudyMembership, "add"),
            {"user": user.pk, "study": study.pk, "site": elsewhere.pk, "role": Role.MONITOR},
        )
        assert "does not take part in" in response.content.decode()

    def test_a_study_wide_role_is_saved(self, admin_client, study):
        user = UserFactory(username="newcomer")
        response = admin_client.post(
            url(StudyMembership, "add"), {"user": user.pk, "study": study.pk, "role": Role.STATISTICIAN}
        )
        assert response.status_code == 302
        assert StudyMembership.objects.get(user=user).site is None


class TestCasebookReadOnly:
    @pytest.mark.parametrize("name", CASEBOOK_ADMINS)
    def test_the_changelist_and_the_record_are_viewable_but_not_editable(self, admin_client, casebook, name):
        model = next(m for m in admin.site._registry if m._meta.model_name == name)
        assert admin_client.get(url(name, "changelist")).status_code == 200
        obj = model.objects.first()
        response = admin_client.get(url(name, "change", obj.pk))
        assert response.status_code == 200
        assert 'name="_save"' not in response.content.decode()
        assert admin_client.get(url(name, "add")).status_code == 403

    def test_a_post_to_a_casebook_record_changes_nothing(self, admin_client, casebook):
        response = admin_client.post(url("participant", "change", casebook.pk), {"sex": "M", "birth_year": 1950})
        assert response.status_code == 403
        casebook.refresh_from_db()
        assert casebook.sex == "F"

    def test_the_participant_search_finds_a_subject_code(self, admin_client, casebook):
        content = admin_client.get(url("participant", "changelist"), {"q": "S01-0001"}).content.decode()
        assert "S01-0001" in content
        assert "S01-0002" not in content


class TestNoDelete:
    def test_bulk_delete_is_not_offered_anywhere(self, superuser):
        request = RequestFactory().get("/admin/")
        request.user = superuser
        for model, model_admin in admin.site._registry.items():
            assert "delete_selected" not in model_admin.get_actions(request), model

    def test_no_registered_model_can_be_deleted(self, superuser):
        request = RequestFactory().get("/admin/")
        request.user = superuser
        for model in deletion_guarded_models():
            assert admin.site._registry[model].has_delete_permission(request) is False, model

    def test_the_delete_view_answers_403_for_every_registered_model(self, admin_client, casebook, superuser):
        for model in deletion_guarded_models():
            # pghistory's aggregate Events view has no rows of its own to fetch.
            obj = model.objects.first() if model._meta.app_label != "pghistory" else None
            pk = obj.pk if obj is not None else 1
            response = admin_client.get(url(model, "delete", pk))
            assert response.status_code == 403, model
            response = admin_client.post(url(model, "delete", pk), {"post": "yes"})
            assert response.status_code == 403, model
        assert Participant.objects.filter(pk=casebook.pk).exists()
        assert User.objects.filter(pk=superuser.pk).exists()

    def test_inlines_offer_no_delete_checkbox(self, admin_client, study):
        content = admin_client.get(url(Study, "change", study.pk)).content.decode()
        assert "-DELETE" not in content


def _form_data(response) -> dict:
    """What a browser would post back from an admin change form: enabled inputs, checked boxes,
    textareas and selected options (a list where several values may be sent)."""
    html = response.content.decode()
    data: dict = {}
    for tag in re.findall(r"<input[^>]*>", html):
        name = re.search(r'name="([^"]+)"', tag)
        kind = re.search(r'type="([^"]+)"', tag)
        kind = kind.group(1) if kind else "text"
        if not name or " disabled" in tag or kind in ("submit", "button", "file"):
            continue
        value = re.search(r'value="([^"]*)"', tag)
        value = unescape(value.group(1)) if value else ""
        if kind in ("checkbox", "radio"):
            if " checked" in tag:
                data.setdefault(name.group(1), []).append(value or "on")
        else:
            data[name.group(1)] = value
    for name, body in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', html, re.S):
        data[name] = unescape(body.removeprefix("\n"))
    for attrs, body in re.findall(r"<select([^>]*)>(.*?)</select>", html, re.S):
        name = re.search(r'name="([^"]+)"', attrs)
        selected = re.findall(r'<option value="([^"]*)"[^>]*selected', body)
        if name and " disabled" not in attrs and selected:
            data[name.group(1)] = selected if " multiple" in attrs else selected[0]
    return data


class TestLockedStudyInTheAdmin:
    def test_a_locked_studys_build_refuses_admin_edits(self, admin_client, study, data_manager):
        services.study_set_locked(actor=data_manager, study=study, locked=True, reason="interim cut")
        criterion = study.criteria.get(kind="exclusion")
        response = admin_client.post(
            url(EligibilityCriterion, "change", criterion.pk),
            TestReasonForChange()._criterion_post(criterion, text="Changed", change_reason="amendment"),
        )
        assert response.status_code == 403
        criterion.refresh_from_db()
        assert criterion.text == "Active infection"


def test_a_membership_is_withdrawn_in_the_admin_with_a_reason(admin_client, study, coordinator_site_a):
    from trials.models import StudyMembership

    membership = StudyMembership.objects.get(user=coordinator_site_a)
    data = {
        "user": membership.user_id,
        "study": membership.study_id,
        "site": membership.site_id,
        "role": membership.role,
    }  # is_active unticked
    refused = admin_client.post(url(StudyMembership, "change", membership.pk), data)
    assert refused.status_code == 200
    membership.refresh_from_db()
    assert membership.is_active is True
    done = admin_client.post(url(StudyMembership, "change", membership.pk), {**data, "change_reason": "left"})
    assert done.status_code == 302
    membership.refresh_from_db()
    assert membership.is_active is False
