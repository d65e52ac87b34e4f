"""Privilege escalation through the admin is closed in the services (trials.memberships, trials.accounts):
nobody widens their own access, unblinding needs an unblinded second person, only superusers grant
staff or superuser status, password resets of others are a recorded permission of their own, and a
data manager releases their studies' users' lockouts, with a reason, on the record.

Every refusal is checked twice: the answer (a form error or 403, never a 500) and the database
afterwards (nothing changed, no audit row written)."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import connection, transaction
from django.db.utils import ProgrammingError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tests.factories import admin_change, infused, member
from trials import accounts, memberships
from trials.account_events import AccountEvent
from trials.errors import RuleViolation
from trials.management.demo_trial import DATA_MANAGER_PERMISSIONS, SPONSOR_ADMIN_PERMISSIONS
from trials.models import DoseCohort, Participant, Role, Study, StudyMembership
from trials.selectors import is_unblinded, sites_for_entry

User = get_user_model()
PASSWORD = "correct-horse-battery"
NEW_PASSWORD = "lantern-orchid-7731"


def staff(user, permissions=()):
    """Give ``user`` the admin access the demo gives their role."""
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    wanted = [tuple(p.split(".")) for p in permissions]
    user.user_permissions.set(
        [Permission.objects.get(content_type__app_label=app, codename=codename) for app, codename in wanted]
    )
    return User.objects.get(pk=user.pk)  # fresh, without a cached permission set


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=(obj.pk,))


def membership_post(membership, **changes) -> dict:
    data = {
        "site": membership.site_id or "",
        "role": membership.role,
        "unblinded": "on" if membership.unblinded else "",
        "is_active": "on" if membership.is_active else "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v not in ("", None)}


def membership_state() -> list[tuple]:
    return list(
        StudyMembership.objects.order_by("pk").values_list(
            "pk", "user_id", "study_id", "site_id", "role", "unblinded", "is_active"
        )
    )


def membership_events() -> int:
    return StudyMembership.pgh_event_model.objects.count()


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root", "root@example.invalid", PASSWORD)


@pytest.fixture
def dm(study):
    return staff(member("dm", study, Role.DATA_MANAGER), DATA_MANAGER_PERMISSIONS)


@pytest.fixture
def sponsor_admin(study):
    return staff(member("sponsor", study, Role.SPONSOR_ADMIN), SPONSOR_ADMIN_PERMISSIONS)


@pytest.fixture
def blinded_study(study):
    with admin_change("the study is randomised against placebo"):
        Study.objects.filter(pk=study.pk).update(is_blinded=True)
    study.refresh_from_db()
    return study


# ---------------------------------------------------------------------------------------------
# 1. A blinded data manager cannot unblind themselves (nor anyone else)
# ---------------------------------------------------------------------------------------------


class TestUnblinding:
    def test_a_blinded_data_manager_cannot_unblind_themselves_in_the_admin(self, blinded_study, dm):
        own = StudyMembership.objects.get(user=dm)
        before, events = membership_state(), membership_events()
        client = logged_in(dm)
        assert 'name="_save"' not in client.get(change_url(own)).content.decode()  # shown read-only
        response = client.post(
            change_url(own), membership_post(own, unblinded="on", change_reason="I need the arms for the cut")
        )
        assert response.status_code == 403
        assert membership_state() == before
        assert membership_events() == events
        assert not is_unblinded(User.objects.get(pk=dm.pk), blinded_study)

    def test_the_service_refuses_a_self_unblinding_whoever_calls_it(self, blinded_study, dm):
        own = StudyMembership.objects.get(user=dm)
        with pytest.raises(RuleViolation, match="your own roles"):
            memberships.membership_change(
                actor=dm, membership=own, role=own.role, site=None, unblinded=True, is_active=True, reason="x"
            )
        own.refresh_from_db()
        assert own.unblinded is False

    def test_a_blinded_data_manager_cannot_unblind_a_colleague(self, blinded_study, dm, statistician):
        theirs = StudyMembership.objects.get(user=statistician)
        before, events = membership_state(), membership_events()
        response = logged_in(dm).post(
            change_url(theirs), membership_post(theirs, unblinded="on", change_reason="unblinded analysis")
        )
        assert response.status_code == 200
        assert "Only a superuser, or an unblinded study-wide data manager" in response.content.decode()
        assert membership_state() == before
        assert membership_events() == events

    def test_an_unblinded_study_wide_data_manager_unblinds_a_colleague_with_a_reason(
        self, blinded_study, statistician, superuser
    ):
        udm = staff(member("udm", blinded_study, Role.DATA_MANAGER, unblinded=True), DATA_MANAGER_PERMISSIONS)
        theirs = StudyMembership.objects.get(user=statistician)
        response = logged_in(udm).post(
            change_url(theirs), membership_post(theirs, unblinded="on", change_reason="DSMB closed-session analysis")
        )
        assert response.status_code == 302
        theirs.refresh_from_db()
        assert theirs.unblinded is True
        event = StudyMembership.pgh_event_model.objects.filter(pgh_obj_id=theirs.pk).latest("pgh_id")
        assert (event.pgh_label, event.unblinded) == ("update", True)
        assert event.pgh_context.metadata["user"] == udm.pk
        assert event.pgh_context.metadata["reason"] == "DSMB closed-session analysis"

    def test_an_unblinded_data_manager_limited_to_one_site_is_not_an_authority(
        self, blinded_study, sites, statistician
    ):
        # A site-bound unblinded data manager is an odd set-up, but it must not be enough.
        udm = member("udm_site", blinded_study, Role.DATA_MANAGER, sites[0], unblinded=True)
        member("udm_site", blinded_study, Role.DATA_MANAGER)  # get_or_create: same user, study-wide, blinded
        assert not memberships.is_unblinding_authority(udm, blinded_study)
        theirs = StudyMembership.objects.get(user=statistician)
        with pytest.raises(RuleViolation, match="unblinded study-wide"):
            memberships.membership_change(
                actor=udm, membership=theirs, role=theirs.role, site=None, unblinded=True, is_active=True, reason="x"
            )

    def test_even_a_superuser_gives_a_reason_to_unblind(self, blinded_study, statistician, superuser):
        theirs = StudyMembership.objects.get(user=statistician)
        response = logged_in(superuser).post(change_url(theirs), membership_post(theirs, unblinded="on"))
        assert response.status_code == 200
        theirs.refresh_from_db()
        assert theirs.unblinded is False
        fresh = User.objects.create_user("fresh")
        with pytest.raises(RuleViolation, match="reason"):
            memberships.membership_grant(
                actor=superuser, user=fresh, study=blinded_study, role=Role.STATISTICIAN, unblinded=True, reason="  "
            )
        assert not StudyMembership.objects.filter(user=fresh).exists()

    def test_a_superuser_cannot_unblind_their_own_membership(self, blinded_study, superuser):
        own = StudyMembership.objects.create(user=superuser, study=blinded_study, role=Role.MEDICAL_MONITOR)
        with pytest.raises(RuleViolation, match="your own roles"):
            memberships.membership_change(
                actor=superuser, membership=own, role=own.role, site=None, unblinded=True, is_active=True, reason="x"
            )

    def test_reactivating_or_moving_an_unblinded_role_is_an_unblinding(self, blinded_study, sites, dm):
        target = member("mm", blinded_study, Role.MEDICAL_MONITOR, unblinded=True)
        membership = StudyMembership.objects.get(user=target)
        with admin_change("medical monitor left"):
            StudyMembership.objects.filter(pk=membership.pk).update(is_active=False)
        membership.refresh_from_db()
        with pytest.raises(RuleViolation, match="unblinded"):
            memberships.membership_change(
                actor=dm,
                membership=membership,
                role=Role.MEDICAL_MONITOR,
                site=None,
                unblinded=True,
                is_active=True,
                reason="back from leave",
            )
        active = StudyMembership.objects.get(user=member("mm2", blinded_study, Role.MEDICAL_MONITOR, unblinded=True))
        with pytest.raises(RuleViolation, match="unblinded"):
            memberships.membership_change(
                actor=dm,
                membership=active,
                role=Role.STATISTICIAN,
                site=None,
                unblinded=True,
                is_active=True,
                reason="now the statistician",
            )
        # Narrowing is always possible: the blinded data manager may take unblinded access away.
        memberships.membership_change(
            actor=dm,
            membership=active,
            role=Role.MEDICAL_MONITOR,
            site=None,
            unblinded=False,
            is_active=True,
            reason="no longer needs the arms",
        )
        active.refresh_from_db()
        assert active.unblinded is False

    def test_save_as_new_on_a_colleagues_unblinded_role_does_not_copy_it_to_oneself(self, blinded_study, dm):
        target = member("mm", blinded_study, Role.MEDICAL_MONITOR, unblinded=True)
        theirs = StudyMembership.objects.get(user=target)
        before = membership_state()
        response = logged_in(dm).post(
            change_url(theirs),
            {**membership_post(theirs), "user": dm.pk, "study": blinded_study.pk, "_saveasnew": "Save as new"},
        )
        assert response.status_code == 200
        assert membership_state() == before


# ---------------------------------------------------------------------------------------------
# 2. A data manager cannot grant themselves a site role (and data entry stays apart)
# ---------------------------------------------------------------------------------------------


class TestSiteRoles:
    def test_a_data_manager_cannot_make_themselves_coordinator_at_another_site(self, study, sites, dm):
        before, events = membership_state(), membership_events()
        response = logged_in(dm).post(
            reverse("admin:trials_studymembership_add"),
            {"user": dm.pk, "study": study.pk, "site": sites[1].pk, "role": Role.COORDINATOR, "is_active": "on"},
        )
        assert response.status_code == 200
        assert "You cannot grant, change or withdraw your own roles" in response.content.decode()
        assert membership_state() == before
        assert membership_events() == events
        assert not sites_for_entry(User.objects.get(pk=dm.pk), study).exists()
        api = APIClient()
        api.force_authenticate(User.objects.get(pk=dm.pk))
        screened = api.post(
            "/api/v1/participants/",
            {"study": study.code, "site": "S02", "sex": "F", "birth_year": 1980, "screening_date": "2025-01-06"},
            format="json",
        )
        assert screened.status_code == 403  # a role that screens nowhere (docs/reliability.md #21)
        assert screened.json() == {"detail": "Your role cannot screen participants."}
        assert not Participant.objects.exists()

    def test_nor_turn_their_own_role_into_a_coordinator_role(self, study, sites, dm):
        own = StudyMembership.objects.get(user=dm)
        before = membership_state()
        response = logged_in(dm).post(
            change_url(own),
            membership_post(own, role=Role.COORDINATOR, site=sites[1].pk, change_reason="covering for S02"),
        )
        assert response.status_code == 403
        assert membership_state() == before

    def test_a_data_manager_gives_a_new_colleague_a_coordinator_role(self, study, sites, dm):
        newcomer = User.objects.create_user("newcomer")
        response = logged_in(dm).post(
            reverse("admin:trials_studymembership_add"),
            {"user": newcomer.pk, "study": study.pk, "site": sites[1].pk, "role": Role.COORDINATOR, "is_active": "on"},
        )
        assert response.status_code == 302
        granted = StudyMembership.objects.get(user=newcomer)
        assert (granted.role, granted.site, granted.unblinded) == (Role.COORDINATOR, sites[1], False)
        event = StudyMembership.pgh_event_model.objects.get(pgh_obj_id=granted.pk, pgh_label="insert")
        assert event.pgh_context.metadata["user"] == dm.pk

    def test_a_data_manager_does_not_give_a_data_entry_role_to_another_data_manager(self, study, sites, dm):
        colleague = member("dm2", study, Role.DATA_MANAGER)
        with pytest.raises(RuleViolation, match="only a superuser can also give them a data-entry role"):
            memberships.membership_grant(actor=dm, user=colleague, study=study, role=Role.COORDINATOR, site=sites[1])
        coordinator = member("coord_x", study, Role.COORDINATOR, sites[0])
        with pytest.raises(RuleViolation, match="only a superuser can also make them a data manager"):
            memberships.membership_grant(actor=dm, user=coordinator, study=study, role=Role.DATA_MANAGER)
        assert StudyMembership.objects.filter(user__in=[colleague, coordinator]).count() == 2

    def test_a_superuser_may_combine_them(self, study, sites, superuser):
        colleague = member("dm2", study, Role.DATA_MANAGER)
        memberships.membership_grant(
            actor=superuser, user=colleague, study=study, role=Role.COORDINATOR, site=sites[1], reason="one-person site"
        )
        assert StudyMembership.objects.filter(user=colleague, role=Role.COORDINATOR).exists()

    def test_a_data_manager_manages_only_their_own_studies_roles(self, study, t1d_study, sites, dm):
        other = member("coord_t1d", t1d_study, Role.COORDINATOR, sites[0])
        theirs = StudyMembership.objects.get(user=other)
        client = logged_in(dm)
        assert client.get(change_url(theirs)).status_code == 302  # treated as missing
        response = client.post(change_url(theirs), membership_post(theirs, is_active="", change_reason="left"))
        assert response.status_code == 302
        assert response.url == reverse("admin:index")
        theirs.refresh_from_db()
        assert theirs.is_active is True
        added = client.post(
            reverse("admin:trials_studymembership_add"),
            {"user": other.pk, "study": t1d_study.pk, "site": sites[1].pk, "role": Role.COORDINATOR},
        )
        assert added.status_code == 200
        assert "Select a valid choice" in added.content.decode()
        assert StudyMembership.objects.filter(user=other).count() == 1

    def test_nobody_withdraws_their_own_role(self, study, dm):
        own = StudyMembership.objects.get(user=dm)
        with pytest.raises(RuleViolation, match="your own roles"):
            memberships.membership_withdraw(actor=dm, membership=own, reason="leaving")
        own.refresh_from_db()
        assert own.is_active is True

    def test_a_sponsor_admin_reads_roles_but_does_not_grant_them(self, study, sites, sponsor_admin, coordinator_site_a):
        client = logged_in(sponsor_admin)
        assert client.get(reverse("admin:trials_studymembership_changelist")).status_code == 200
        assert client.get(reverse("admin:trials_studymembership_add")).status_code == 403
        with pytest.raises(RuleViolation, match="do not manage"):
            memberships.membership_grant(actor=sponsor_admin, user=coordinator_site_a, study=study, role=Role.MONITOR)


# ---------------------------------------------------------------------------------------------
# 3. Superuser and staff status, permissions and passwords
# ---------------------------------------------------------------------------------------------


def privileges(user) -> tuple:
    user = User.objects.get(pk=user.pk)
    return (
        user.is_staff,
        user.is_superuser,
        sorted(user.user_permissions.values_list("pk", flat=True)),
        sorted(user.groups.values_list("pk", flat=True)),
    )


class TestPrivileges:
    def test_a_sponsor_admin_cannot_make_themselves_superuser(self, sponsor_admin):
        before = privileges(sponsor_admin)
        response = logged_in(sponsor_admin).post(
            change_url(sponsor_admin),
            {"username": "sponsor", "is_active": "on", "is_staff": "on", "is_superuser": "on", "change_reason": "x"},
        )
        assert response.status_code == 403
        assert privileges(sponsor_admin) == before
        assert not AccountEvent.objects.exists()

    def test_a_sponsor_admin_cannot_make_anyone_superuser_staff_or_give_permissions(
        self, sponsor_admin, coordinator_site_a
    ):
        before = privileges(coordinator_site_a)
        everything = list(Permission.objects.values_list("pk", flat=True))
        response = logged_in(sponsor_admin).post(
            change_url(coordinator_site_a),
            {
                "username": "coord_a",
                "first_name": "Amira",
                "is_active": "on",
                "is_staff": "on",
                "is_superuser": "on",
                "user_permissions": everything,
                "change_reason": "name on the delegation log",
            },
        )
        # The details are theirs to change; the privileges are not even on their form.
        assert response.status_code == 302
        assert privileges(coordinator_site_a) == before
        assert User.objects.get(pk=coordinator_site_a.pk).first_name == "Amira"
        event = AccountEvent.objects.get()
        assert (event.kind, event.actor, event.changes) == (
            "account_changed",
            sponsor_admin,
            {"first_name": ["", "Amira"]},
        )
        with pytest.raises(RuleViolation, match="Only a superuser grants"):
            accounts.user_set_privileges(
                actor=sponsor_admin, user=coordinator_site_a, is_staff=True, is_superuser=True, reason="x"
            )
        assert privileges(coordinator_site_a) == before

    def test_a_sponsor_admin_cannot_change_a_staff_account(self, sponsor_admin, dm):
        before = privileges(dm)
        response = logged_in(sponsor_admin).post(
            change_url(dm), {"username": "dm", "is_active": "", "change_reason": "lock them out"}
        )
        assert response.status_code == 403
        assert User.objects.get(pk=dm.pk).is_active is True
        assert privileges(dm) == before

    def test_a_superuser_grants_staff_status_and_it_is_recorded(self, superuser, coordinator_site_a):
        view = Permission.objects.get(codename="view_study")
        response = logged_in(superuser).post(
            change_url(coordinator_site_a),
            {
                "username": "coord_a",
                "is_active": "on",
                "is_staff": "on",
                "user_permissions": [view.pk],
                "change_reason": "site lead reviews the build",
            },
        )
        assert response.status_code == 302, response.content.decode()[:3000]
        assert privileges(coordinator_site_a)[:3] == (True, False, [view.pk])
        event = AccountEvent.objects.get(kind="privileges_changed")
        assert (event.actor, event.user) == (superuser, coordinator_site_a)
        assert event.reason == "site lead reviews the build"
        assert event.changes == {"is_staff": [False, True], "user_permissions": [[], ["trials.view_study"]]}

    def test_a_superuser_grant_without_a_reason_is_refused(self, superuser, coordinator_site_a):
        before = privileges(coordinator_site_a)
        response = logged_in(superuser).post(
            change_url(coordinator_site_a), {"username": "coord_a", "is_active": "on", "is_superuser": "on"}
        )
        assert response.status_code == 200
        assert privileges(coordinator_site_a) == before
        assert not AccountEvent.objects.exists()

    def test_nobody_changes_their_own_privileges_not_even_a_superuser(self, superuser):
        other = User.objects.create_superuser("root2", "r2@example.invalid", PASSWORD)
        with pytest.raises(RuleViolation, match="their own privileges"):
            accounts.user_set_privileges(actor=other, user=other, is_staff=True, is_superuser=False, reason="oops")
        assert (
            logged_in(superuser).post(change_url(superuser), {"username": "root", "change_reason": "x"}).status_code
            == 403
        )
        assert privileges(other)[:2] == (True, True)

    def test_groups_and_api_tokens_are_for_superusers_only(self, dm, sponsor_admin, superuser):
        group = Group.objects.create(name="builders")
        for user in (dm, sponsor_admin):
            client = logged_in(user)
            assert client.get(reverse("admin:auth_group_changelist")).status_code == 403
            assert client.post(change_url(group), {"name": "builders", "permissions": [1]}).status_code == 403
            assert client.get(reverse("admin:authtoken_tokenproxy_add")).status_code == 403
        assert not group.permissions.exists()
        assert logged_in(superuser).get(reverse("admin:auth_group_changelist")).status_code == 200


def as_app_role(statement: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {settings.TOLERANCE_DB_APP_ROLE}")
        cursor.execute(statement)


class TestPasswordReset:
    def url(self, user) -> str:
        return reverse("admin:auth_user_password_change", args=(user.pk,))

    def post(self, client, user, reason="called from the site; identity checked against the delegation log"):
        return client.post(
            self.url(user), {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD, "change_reason": reason}
        )

    def test_change_user_alone_does_not_reset_passwords(self, study, coordinator_site_a):
        admin = staff(member("useradmin", study, Role.SPONSOR_ADMIN), ["auth.view_user", "auth.change_user"])
        client = logged_in(admin)
        assert client.get(self.url(coordinator_site_a)).status_code == 403
        assert self.post(client, coordinator_site_a).status_code == 403
        assert User.objects.get(pk=coordinator_site_a.pk).check_password(PASSWORD)
        assert not AccountEvent.objects.exists()

    def test_the_reset_permission_resets_an_ordinary_account_on_the_record(self, sponsor_admin, coordinator_site_a):
        target_session = logged_in(coordinator_site_a)
        assert target_session.get(reverse("trials:home")).status_code in (200, 302)
        client = logged_in(sponsor_admin)
        assert client.get(self.url(coordinator_site_a)).status_code == 200
        response = self.post(client, coordinator_site_a)
        assert response.status_code == 302
        assert User.objects.get(pk=coordinator_site_a.pk).check_password(NEW_PASSWORD)
        event = AccountEvent.objects.get()
        assert (event.kind, event.actor, event.user) == ("password_reset", sponsor_admin, coordinator_site_a)
        assert NEW_PASSWORD not in str(event.changes) + event.reason
        # The user's other session ended with the old password.
        assert target_session.get(reverse("trials:home")).url.startswith(reverse("login"))

    def test_the_reset_permission_does_not_reach_staff_or_superusers(self, sponsor_admin, dm, superuser):
        client = logged_in(sponsor_admin)
        for target in (dm, superuser):
            assert self.post(client, target).status_code == 403
            assert User.objects.get(pk=target.pk).check_password(PASSWORD) or target == dm
        assert User.objects.get(pk=superuser.pk).check_password(PASSWORD)
        assert not AccountEvent.objects.exists()

    def test_a_reset_without_a_reason_changes_nothing(self, sponsor_admin, coordinator_site_a):
        response = self.post(logged_in(sponsor_admin), coordinator_site_a, reason=" ")
        assert response.status_code == 200
        assert User.objects.get(pk=coordinator_site_a.pk).check_password(PASSWORD)
        assert not AccountEvent.objects.exists()

    def test_a_weak_password_is_refused_on_the_form(self, sponsor_admin, coordinator_site_a):
        response = logged_in(sponsor_admin).post(
            self.url(coordinator_site_a), {"new_password1": "short", "new_password2": "short", "change_reason": "x"}
        )
        assert response.status_code == 200
        assert "too short" in response.content.decode()
        assert User.objects.get(pk=coordinator_site_a.pk).check_password(PASSWORD)

    def test_nobody_resets_their_own_password_on_the_reset_page(self, superuser):
        assert self.post(logged_in(superuser), superuser).status_code == 403
        with pytest.raises(RuleViolation, match="your own password"):
            accounts.user_password_reset(actor=superuser, user=superuser, new_password=NEW_PASSWORD, reason="x")
        assert User.objects.get(pk=superuser.pk).check_password(PASSWORD)

    def test_the_app_role_cannot_rewrite_the_account_record(self, sponsor_admin, coordinator_site_a):
        self.post(logged_in(sponsor_admin), coordinator_site_a)
        for statement in ("UPDATE trials_accountevent SET reason = 'x'", "DELETE FROM trials_accountevent"):
            with pytest.raises(ProgrammingError, match="permission denied"):
                as_app_role(statement)
        assert AccountEvent.objects.get().reason.startswith("called from the site")


# ---------------------------------------------------------------------------------------------
# Issue 9, item 13: a data manager releases a lockout of their studies' users
# ---------------------------------------------------------------------------------------------


def lock_out(username: str) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": username, "password": "wrong-password"})
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 429


class TestLockoutRelease:
    def release_url(self, username: str) -> str:
        return reverse("admin:axes_accessattempt_release", args=(AccessAttempt.objects.get(username=username).pk,))

    def test_the_lockout_page_sends_the_user_to_their_data_manager(self, client, coordinator_site_a):
        for _ in range(settings.AXES_FAILURE_LIMIT):
            client.post("/login/", {"username": "coord_a", "password": "wrong-password"})
        content = client.post("/login/", {"username": "coord_a", "password": PASSWORD}).content.decode()
        assert "data manager of your study" in content
        assert "docs/" not in content

    def test_a_data_manager_releases_their_studys_user_on_the_record(self, dm, coordinator_site_a):
        lock_out("coord_a")
        failures = AccessAttempt.objects.get(username="coord_a").failures_since_start
        client = logged_in(dm)
        listing = client.get(reverse("admin:axes_accessattempt_changelist")).content.decode()
        assert "coord_a" in listing
        assert "Release" in listing
        assert client.get(self.release_url("coord_a")).status_code == 200
        response = client.post(self.release_url("coord_a"), {"change_reason": "phoned; identity confirmed by PI"})
        assert response.status_code == 302
        assert not AccessAttempt.objects.filter(username="coord_a").exists()
        assert Client().post("/login/", {"username": "coord_a", "password": PASSWORD}).status_code == 302
        event = AccountEvent.objects.get()
        assert (event.kind, event.actor, event.user) == ("lockout_released", dm, coordinator_site_a)
        assert event.reason == "phoned; identity confirmed by PI"
        assert event.changes == {"failures_since_start": [failures, 0]}

    def test_a_release_needs_a_reason(self, dm, coordinator_site_a):
        lock_out("coord_a")
        response = logged_in(dm).post(self.release_url("coord_a"), {"change_reason": "  "})
        assert response.status_code == 200
        assert AccessAttempt.objects.filter(username="coord_a").exists()
        assert not AccountEvent.objects.exists()

    def test_a_data_manager_cannot_release_another_studys_user(self, dm, t1d_study, sites):
        member("coord_t1d", t1d_study, Role.COORDINATOR, sites[0])
        lock_out("coord_t1d")
        client = logged_in(dm)
        assert "coord_t1d" not in client.get(reverse("admin:axes_accessattempt_changelist")).content.decode()
        assert client.post(self.release_url("coord_t1d"), {"change_reason": "asked nicely"}).status_code == 404
        with pytest.raises(RuleViolation, match="users of the studies you manage"):
            accounts.lockout_release(actor=dm, username="coord_t1d", reason="asked nicely")
        assert AccessAttempt.objects.filter(username="coord_t1d").exists()
        assert not AccountEvent.objects.exists()

    def test_a_data_manager_cannot_release_a_superuser(self, dm, superuser, study):
        StudyMembership.objects.create(user=superuser, study=study, role=Role.MEDICAL_MONITOR)
        lock_out("root")
        with pytest.raises(RuleViolation):
            accounts.lockout_release(actor=dm, username="root", reason="asked")
        assert AccessAttempt.objects.filter(username="root").exists()

    def test_other_roles_cannot_release_or_delete_lockouts(self, sponsor_admin, coordinator_site_b, dm, superuser):
        lock_out("coord_b")
        for user in (sponsor_admin, coordinator_site_b):
            with pytest.raises(RuleViolation):
                accounts.lockout_release(actor=user, username="coord_b", reason="x")
        assert logged_in(sponsor_admin).get(reverse("admin:axes_accessattempt_changelist")).status_code == 403
        attempt = AccessAttempt.objects.get(username="coord_b")
        delete = reverse("admin:axes_accessattempt_delete", args=(attempt.pk,))
        for user in (dm, superuser):
            assert logged_in(user).post(delete, {"post": "yes"}).status_code == 403
        assert AccessAttempt.objects.filter(username="coord_b").exists()


# ---------------------------------------------------------------------------------------------
# Scope: a data manager's admin is their own studies
# ---------------------------------------------------------------------------------------------


class TestStudyScope:
    def test_a_data_manager_sees_only_their_studies_in_the_build_and_the_casebook(self, study, t1d_study, dm):
        client = logged_in(dm)
        studies = client.get(reverse("admin:trials_study_changelist")).content.decode()
        assert study.code in studies
        assert t1d_study.code not in studies
        cohorts = client.get(reverse("admin:trials_dosecohort_changelist")).content.decode()
        assert change_url(study.cohorts.first()) in cohorts
        assert change_url(t1d_study.cohorts.first()) not in cohorts
        assert t1d_study.code not in cohorts  # not even in the sidebar filter

    def test_a_data_manager_cannot_edit_another_studys_build(self, t1d_study, dm):
        cohort = t1d_study.cohorts.get(number=1)
        response = logged_in(dm).post(
            change_url(cohort),
            {
                "study": t1d_study.pk,
                "number": 1,
                "label": "renamed",
                "planned_cells_per_kg": "1000000",
                "route": "IV",
                "infusions_planned": 1,
                "sentinel_interval_days": 0,
                "capacity": 3,
                "change_reason": "tidy-up",
            },
        )
        assert response.status_code == 302
        assert response.url == reverse("admin:index")
        cohort.refresh_from_db()
        assert cohort.label != "renamed"

    def test_a_data_manager_cannot_move_a_cohort_into_another_study(self, study, t1d_study, dm):
        cohort = study.cohorts.get(number=3)
        response = logged_in(dm).post(
            change_url(cohort),
            {
                "study": t1d_study.pk,
                "number": 9,
                "label": cohort.label,
                "planned_cells_per_kg": "20000000",
                "route": "IV",
                "infusions_planned": 1,
                "sentinel_interval_days": 0,
                "capacity": 3,
                "change_reason": "moved",
            },
        )
        assert response.status_code == 200
        assert "Select a valid choice" in response.content.decode()
        assert DoseCohort.objects.get(pk=cohort.pk).study_id == study.pk

    def test_a_cohort_in_use_stays_in_its_study_even_between_two_managed_studies(
        self, study, t1d_study, sites, coordinator_site_a, superuser
    ):
        participant = infused(study, sites[0], coordinator_site_a)
        cohort = participant.cohort
        response = logged_in(superuser).post(
            change_url(cohort),
            {
                "study": t1d_study.pk,
                "number": 7,
                "label": cohort.label,
                "planned_cells_per_kg": "1000000",
                "route": "IV",
                "infusions_planned": 1,
                "sentinel_interval_days": 0,
                "capacity": 3,
                "is_open": "on",
                "change_reason": "moved",
            },
        )
        assert response.status_code == 302  # the disabled fields keep their saved values
        cohort.refresh_from_db()
        assert (cohort.study_id, cohort.number) == (study.pk, participant.cohort.number)

    def test_only_a_superuser_adds_a_study(self, dm, superuser):
        assert logged_in(dm).get(reverse("admin:trials_study_add")).status_code == 403
        assert logged_in(superuser).get(reverse("admin:trials_study_add")).status_code == 200
