"""The admin access matrix: every registered ModelAdmin, for every role, on its own and on other objects
(docs/reliability.md #9, #21, #22).

Each persona holds its role in the two "own" studies (MS and T1D, sites S01 and S02); the "other"
studies (S03 only) have their own data manager and coordinator. Staff personas get the admin
permissions the demo gives their role. For every model in ``admin.site._registry`` the test opens
the changelist, the add page and the change page of an own and an other object (and, for roles and
accounts, the persona's own row), then POSTs a privilege-widening change to each, and compares the
answer with ``expected``. A refusal must change nothing: the rows, the roles, every account's
privileges and password, the lockouts and the account record are compared before and after.
Allowed POSTs are rolled back (savepoint) so that every case starts from the same world.

A model registered later without an entry in ``KINDS`` fails ``test_every_registered_admin_is_in_the_matrix``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from tests.factories import SiteFactory, build_study, enrolled, infused, infusion_kwargs, member
from tests.trials.test_admin import _form_data
from trials import accounts, services
from trials.account_events import AccountEvent
from trials.management.demo_trial import DATA_MANAGER_PERMISSIONS, SPONSOR_ADMIN_PERMISSIONS
from trials.models import Indication, Role, StudyMembership

User = get_user_model()
PASSWORD = "correct-horse-battery"

PERSONAS = (
    "coordinator",
    "investigator",
    "monitor",
    "medical_monitor",
    "data_manager",
    "statistician",
    "sponsor_admin",
    "superuser",
)
NON_STAFF = {"coordinator", "investigator", "monitor", "medical_monitor", "statistician"}

BUILD = ("trials.site", "trials.study", "trials.dosecohort", "trials.visitdefinition", "trials.eligibilitycriterion")
CASEBOOK = (
    "trials.participant",
    "trials.consent",
    "trials.eligibilityanswer",
    "trials.infusion",
    "trials.visit",
    "trials.diseaseassessment",
    "trials.mriread",
    "trials.mmttsample",
    "trials.relapse",
    "trials.rescuetherapy",
    "trials.insulindosechange",
    "trials.protocoldeviation",
    "trials.disposition",
)
KINDS = {
    **dict.fromkeys(BUILD, "build"),
    "trials.consentdocument": "build",
    **dict.fromkeys(CASEBOOK, "casebook"),
    "trials.studymembership": "membership",
    "auth.user": "account",
    "auth.group": "superuser_only",
    "authtoken.tokenproxy": "superuser_only",
    "axes.accesslog": "superuser_only",
    "axes.accessfailurelog": "superuser_only",
    "trials.accountevent": "superuser_only",
    "axes.accessattempt": "lockout",
}

# What an answer means.
LOGIN = "login"  # 302 to the admin's sign-in page
FORBIDDEN = "403"
MISSING = "missing"  # 302 to the admin index: Django's answer for an unknown id, so no existence leak
NOT_FOUND = "404"
OK = "ok"  # 200 (a changelist)
VIEW = "view"  # 200, read-only
EDIT = "edit"  # 200 with a save button
REFUSED = "refused"  # a POST answered with the form and its errors
SAVED = "saved"  # a POST that was accepted (302 elsewhere than the index or the sign-in page)
STAYS = "stays"  # refused, or saved with the fields clinical data use kept: the row stays in its study


def test_every_registered_admin_is_in_the_matrix():
    registered = {model._meta.label_lower for model in admin.site._registry}
    assert sorted(registered - set(KINDS)) == [], "add these admins to KINDS and to expected()"
    assert sorted(set(KINDS) - registered) == []


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------


def _staff(user, permissions):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.user_permissions.set(
        [
            Permission.objects.get(content_type__app_label=app, codename=codename)
            for app, codename in (p.split(".") for p in permissions)
        ]
    )
    return User.objects.get(pk=user.pk)


def _casebook(study, site, actor) -> None:
    """At least one row of every casebook model in ``study`` (its indication's forms only)."""
    participant = infused(study, site, actor)
    d0 = participant.visits.get(definition__code="d0")
    d0 = services.visit_record(actor=actor, visit=d0, actual_date=dt.date(2025, 2, 3), weight_kg=Decimal("70"))
    if study.indication == Indication.MS:
        services.assessment_record(actor=actor, visit=d0, values={"edss": Decimal("2.5")})
        services.mri_record(
            actor=actor, visit=d0, scan_date=dt.date(2025, 1, 20), new_or_enlarging_t2=2, gd_enhancing=1
        )
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
        second = enrolled(study, site, actor)
        services.infusion_record(
            actor=actor, participant=second, **infusion_kwargs(second, cells=Decimal("1000000") * 70 / 2)
        )
        services.disposition_record(
            actor=actor, participant=second, kind="withdrawn", disposition_date=dt.date(2025, 3, 1), reason="Moved"
        )
    else:
        services.mmtt_record(actor=actor, visit=d0, samples=[(0, Decimal("0.2")), (60, Decimal("0.5"))], unit="nmol/L")
        services.insulin_dose_record(
            actor=actor,
            participant=participant,
            effective_date=dt.date(2025, 2, 3),
            total_daily_units=Decimal("42"),
            source="diary",
        )


def _lock_out(username: str) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": username, "password": "wrong-password"})


@pytest.fixture
def world(db):
    s01, s02, s03 = SiteFactory(code="S01"), SiteFactory(code="S02"), SiteFactory(code="S03")
    own = [
        build_study(code="OWN-MS", sites=[s01, s02]),
        build_study(code="OWN-T1D", indication="T1D", sites=[s01, s02]),
    ]
    other = [build_study(code="OTHER-MS", sites=[s03]), build_study(code="OTHER-T1D", indication="T1D", sites=[s03])]
    roles = {
        "coordinator": (Role.COORDINATOR, s01),
        "investigator": (Role.INVESTIGATOR, s01),
        "monitor": (Role.MONITOR, s01),
        "medical_monitor": (Role.MEDICAL_MONITOR, None),
        "data_manager": (Role.DATA_MANAGER, None),
        "statistician": (Role.STATISTICIAN, None),
        "sponsor_admin": (Role.SPONSOR_ADMIN, None),
    }
    users = {}
    for persona, (role, site) in roles.items():
        for study in own:
            users[persona] = member(persona, study, role, site)
    users["data_manager"] = _staff(users["data_manager"], DATA_MANAGER_PERMISSIONS)
    users["sponsor_admin"] = _staff(users["sponsor_admin"], SPONSOR_ADMIN_PERMISSIONS)
    users["superuser"] = User.objects.create_superuser("root", "root@example.invalid", PASSWORD)
    coord_own = member("coord_own", own[0], Role.COORDINATOR, s02)  # an ordinary account of the own studies
    for study in other:
        dm_other = member("dm_other", study, Role.DATA_MANAGER)
        coord_other = member("coord_other", study, Role.COORDINATOR, s03)
    dm_other = _staff(dm_other, DATA_MANAGER_PERMISSIONS)
    for study in own:
        _casebook(study, s01, users["coordinator"])
    for study in other:
        _casebook(study, s03, coord_other)
    _lock_out("coord_own")
    _lock_out("coord_other")
    Group.objects.create(name="builders")
    for user in (*users.values(), dm_other):
        Token.objects.get_or_create(user=user)
    Client().force_login(dm_other)  # an axes access log row
    accounts.user_password_reset(
        actor=users["superuser"], user=coord_other, new_password="lantern-orchid-7731", reason="forgotten"
    )
    return {
        "users": users,
        "own_studies": own,
        "other_studies": other,
        "sites": (s01, s02, s03),
        "coord_own": coord_own,
        "dm_other": dm_other,
    }


def _in(studies, path: str) -> dict:
    return {f"{path}__in": [s.pk for s in studies]}


def _targets(model, kind: str, world, persona: str) -> dict:
    """The rows a persona's cases are about: {"self"|"own"|"other": object or None}."""
    label = model._meta.label_lower
    user = world["users"][persona]
    own, other = world["own_studies"], world["other_studies"]
    if kind in ("build", "casebook"):
        if label == "trials.site":
            return {"own": world["sites"][0], "other": world["sites"][2]}
        path = {"trials.study": "pk", "trials.participant": "study"}.get(label)
        if path is None:
            names = {f.name for f in model._meta.get_fields()}
            path = (
                "study"
                if "study" in names
                else "participant__study"
                if "participant" in names
                else "visit__participant__study"
            )
        objects = model.objects.order_by("pk")
        return {"own": objects.filter(**_in(own, path)).first(), "other": objects.filter(**_in(other, path)).first()}
    if kind == "membership":
        return {
            "self": StudyMembership.objects.filter(user=user, study=own[0]).first(),
            "own": StudyMembership.objects.get(user=world["coord_own"]),
            "other": StudyMembership.objects.filter(user__username="coord_other", study=other[0]).get(),
        }
    if kind == "account":
        return {"self": user, "own": world["coord_own"], "other": world["dm_other"]}
    if kind == "lockout":
        return {
            "own": AccessAttempt.objects.get(username="coord_own"),
            "other": AccessAttempt.objects.get(username="coord_other"),
        }
    if label == "authtoken.tokenproxy":
        return {"self": Token.objects.get(user=user), "other": Token.objects.get(user=world["dm_other"])}
    return {"other": model.objects.order_by("pk").first()}


# ---------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------


def expected(persona: str, kind: str, label: str, target: str, action: str) -> str | None:
    """What ``persona`` must get; None where the case says nothing (a superuser's own edits of the
    study build, tested in tests/trials/test_admin.py)."""
    if persona in NON_STAFF:
        return LOGIN
    su, dm, sa = persona == "superuser", persona == "data_manager", persona == "sponsor_admin"
    if kind == "build":
        if sa:
            return FORBIDDEN
        if action == "changelist":
            return OK
        if action == "add":
            return FORBIDDEN if label == "trials.study" and dm else EDIT
        if su:
            return EDIT if action == "change" else None
        if target == "other":
            return MISSING
        if action == "change":
            return EDIT
        # Own rows: moving one into a study they do not manage is refused (or, once clinical data use
        # the row, the study field is frozen); the study and the site themselves are edited normally.
        return SAVED if label in ("trials.study", "trials.site") else STAYS
    if kind == "casebook":
        if sa:
            return FORBIDDEN
        if action == "changelist":
            return OK
        if action in ("add", "post"):
            return FORBIDDEN
        return MISSING if (dm and target == "other") else VIEW
    if kind == "membership":
        if action == "changelist":
            return OK
        if sa:
            if action in ("add", "post", "post_add"):
                return FORBIDDEN
            return MISSING if target == "other" else VIEW
        if action == "add":
            return EDIT
        if action == "post_add":
            # A role for oneself is refused to everyone; unblinded access and other studies' roles
            # are refused to a blinded data manager.
            return SAVED if (su and target != "self") else REFUSED
        if dm and target == "other":
            return MISSING
        if target == "self":
            return VIEW if action == "change" else FORBIDDEN
        if action == "change":
            return EDIT
        return SAVED if su else REFUSED  # the post unblinds: only a superuser (or unblinded manager)
    if kind == "account":
        if action == "changelist":
            return OK
        if action == "add":
            return FORBIDDEN if dm else EDIT
        if action == "post_add":
            return FORBIDDEN if dm else SAVED  # created without any privilege (checked)
        if action in ("password", "password_post"):
            allowed = not dm and target != "self" and (su or target == "own")
            if not allowed:
                return FORBIDDEN
            return EDIT if action == "password" else SAVED
        manageable = target != "self" and (su or (sa and target == "own"))
        if action == "change":
            return EDIT if manageable else VIEW
        return SAVED if manageable else FORBIDDEN
    if kind == "superuser_only":
        if not su:
            return FORBIDDEN
        logs = label in ("axes.accesslog", "axes.accessfailurelog", "trials.accountevent")
        if action == "changelist":
            return OK
        if action == "add":
            return FORBIDDEN if logs else EDIT
        if action == "change":
            return VIEW if logs else EDIT
        return FORBIDDEN if logs else None
    if kind == "lockout":
        if sa:
            return FORBIDDEN
        if action == "changelist":
            return OK
        if action in ("add", "post"):
            return FORBIDDEN
        if dm and target == "other":
            return NOT_FOUND if action.startswith("release") else MISSING
        return {"change": VIEW, "release": EDIT, "release_post": SAVED}[action]
    raise AssertionError(kind)


# ---------------------------------------------------------------------------------------------
# Running a case
# ---------------------------------------------------------------------------------------------


def _answer(response, post: bool, listing: bool = False) -> str:
    if listing and response.status_code == 200:
        return OK
    if response.status_code == 302:
        if response.url.startswith(reverse("admin:login")):
            return LOGIN
        return MISSING if response.url == reverse("admin:index") else SAVED
    if response.status_code in (403, 404):
        return str(response.status_code)
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    content = response.content.decode()
    if post:
        return REFUSED if ("errornote" in content or "errorlist" in content) else "200 without an error"
    return EDIT if 'name="_save"' in content else VIEW


def _snapshot(model) -> dict:
    users = User.objects.order_by("pk")
    return {
        "rows": [tuple(sorted(row.items())) for row in model.objects.order_by("pk").values()],
        "memberships": list(StudyMembership.objects.order_by("pk").values_list()),
        "users": [(u.pk, u.is_staff, u.is_superuser, u.is_active, u.password, u.first_name, u.username) for u in users],
        "permissions": sorted(User.user_permissions.through.objects.values_list("user_id", "permission_id")),
        "groups": sorted(User.groups.through.objects.values_list("user_id", "group_id")),
        "group permissions": sorted(Group.permissions.through.objects.values_list("group_id", "permission_id")),
        "lockouts": sorted(AccessAttempt.objects.values_list("username", "failures_since_start")),
        "account events": AccountEvent.objects.count(),
        "tokens": sorted(Token.objects.values_list("key", "user_id")),
    }


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def _object_id(model, obj):
    return obj.user_id if model._meta.label_lower == "authtoken.tokenproxy" else obj.pk


class Matrix:
    def __init__(self, world, persona: str, admin_client: Client):
        self.world, self.persona = world, persona
        self.client = Client()
        self.client.force_login(world["users"][persona])
        self.admin_client = admin_client  # the superuser, to read complete forms to post back
        self.deviations: list[str] = []
        self.cases = 0

    def check(self, label: str, target: str, action: str, want: str | None, response, post: bool, got=None) -> str:
        got = got or _answer(response, post, listing=action == "changelist")
        self.cases += want is not None
        if want is not None and got != want:
            self.deviations.append(f"{self.persona} {action} {label} [{target}]: got {got}, expected {want}")
        return got

    def get(self, model, kind, target, action, url, obj=None):
        label = model._meta.label_lower
        want = expected(self.persona, kind, label, target, action)
        response = self.client.get(url)
        got = self.check(label, target, action, want, response, post=False)
        if action == "changelist" and got == OK and obj is not None:
            # An out-of-scope row must not even be listed.
            hidden = expected(self.persona, kind, label, "other", "change") in (MISSING, NOT_FOUND)
            link = _url(model, "change", _object_id(model, obj))
            if hidden and link in response.content.decode():
                self.deviations.append(f"{self.persona} changelist {label} lists another study's row {link}")

    def post(self, model, kind, target, action, url, data, obj=None):
        label = model._meta.label_lower
        want = expected(self.persona, kind, label, target, action)
        if want is None:
            return
        savepoint = transaction.savepoint()
        try:
            before = _snapshot(model)
            response = self.client.post(url, data)
            answer = got = _answer(response, post=True)
            if want == STAYS and got in (SAVED, REFUSED):
                got = STAYS if model.objects.filter(pk=obj.pk, study_id=obj.study_id).exists() else "moved"
            got = self.check(label, target, action, want, response, post=True, got=got)
            after = _snapshot(model)
            if answer != SAVED and after != before:
                changed = sorted(k for k in before if before[k] != after[k])
                self.deviations.append(f"{self.persona} {action} {label} [{target}] was refused but changed {changed}")
            if got == SAVED:
                self.check_allowed_change(kind, target, action, before, after)
        finally:
            transaction.savepoint_rollback(savepoint)

    def check_allowed_change(self, kind, target, action, before, after) -> None:
        """An accepted POST may do what the persona may do, and nothing wider."""
        su = self.persona == "superuser"
        privileges = ("permissions", "groups", "group permissions")
        widened = any(before[k] != after[k] for k in privileges) or [u[1:3] for u in before["users"]] != [
            u[1:3] for u in after["users"] if u[0] in {b[0] for b in before["users"]}
        ]
        if widened and not su:
            self.deviations.append(f"{self.persona} {action} {kind} [{target}] widened someone's privileges")
        created = [u for u in after["users"] if u[0] not in {b[0] for b in before["users"]}]
        if any(u[1] or u[2] for u in created):
            self.deviations.append(f"{self.persona} {action} {kind}: a new account got staff or superuser status")
        recorded = kind in ("account", "lockout") or action.startswith(("password", "release"))
        if recorded and after["account events"] <= before["account events"]:
            self.deviations.append(f"{self.persona} {action} {kind} [{target}] left no account record")

    def form_data(self, url) -> dict:
        if self.persona in NON_STAFF:
            return {}  # the admin sends them to its sign-in page whatever they post
        page = self.admin_client.get(url)
        return _form_data(page) if page.status_code == 200 else {}


def _widening(model, kind: str, target_name: str, obj, world, data: dict, persona: str) -> dict:
    """The POST body that tries to widen access through ``obj``'s change form."""
    label = model._meta.label_lower
    own, other = world["own_studies"], world["other_studies"]
    reason = {"change_reason": "matrix: widening attempt"}
    if kind == "build":
        if label == "trials.study":
            return {**data, "title": "Widened", **reason}
        if label == "trials.site":
            return {**data, "name": "Widened", **reason}
        into = other[0] if target_name == "own" else own[0]
        return {**data, "study": into.pk, **reason}
    if kind == "membership":
        study_sites = obj.study.sites.order_by("code")
        return {
            "site": study_sites.last().pk,
            "role": Role.COORDINATOR,
            "unblinded": "on",
            "is_active": "on",
            **reason,
        }
    if kind == "account":
        everything = list(Permission.objects.values_list("pk", flat=True))
        return {
            **data,
            "first_name": "Widened",
            "is_staff": "on",
            "is_superuser": "on",
            "user_permissions": everything,
            **reason,
        }
    if label == "auth.group":
        return {"name": "builders", "permissions": list(Permission.objects.values_list("pk", flat=True))}
    if label == "authtoken.tokenproxy":
        return {"user": world["users"][persona].pk}
    return {**data, "sex": "M", **reason}  # casebook, logs, lockouts: nothing is editable


def _membership_adds(world, persona: str) -> list[tuple[str, dict]]:
    own, other = world["own_studies"], world["other_studies"]
    s02, s03 = world["sites"][1], world["sites"][2]
    me = world["users"][persona]
    fresh = world["coord_own"]
    return [
        ("self", {"user": me.pk, "study": own[0].pk, "site": s02.pk, "role": Role.COORDINATOR, "is_active": "on"}),
        (
            "own",
            {
                "user": fresh.pk,
                "study": own[1].pk,
                "role": Role.STATISTICIAN,
                "unblinded": "on",
                "is_active": "on",
                "change_reason": "matrix",
            },
        ),
        ("other", {"user": fresh.pk, "study": other[0].pk, "site": s03.pk, "role": Role.MONITOR, "is_active": "on"}),
    ]


@pytest.mark.parametrize("persona", PERSONAS)
def test_the_admin_matrix_holds_for_every_role(world, persona):
    superuser = world["users"]["superuser"]
    admin_client = Client()
    admin_client.force_login(superuser)
    matrix = Matrix(world, persona, admin_client)
    for model in sorted(admin.site._registry, key=lambda m: m._meta.label_lower):
        label = model._meta.label_lower
        kind = KINDS[label]
        targets = _targets(model, kind, world, persona)
        matrix.get(model, kind, "-", "changelist", _url(model, "changelist"), obj=targets.get("other"))
        matrix.get(model, kind, "-", "add", _url(model, "add"))
        for target_name, obj in targets.items():
            if obj is None:
                assert target_name == "self" or model._meta.label_lower == "axes.accessfailurelog", (label, target_name)
                continue
            change = _url(model, "change", _object_id(model, obj))
            matrix.get(model, kind, target_name, "change", change)
            data = _widening(model, kind, target_name, obj, world, matrix.form_data(change), persona)
            matrix.post(model, kind, target_name, "post", change, data, obj=obj)
            if kind == "account":
                reset = _url(model, "password_change", obj.pk)
                matrix.get(model, kind, target_name, "password", reset)
                body = {"new_password1": "lantern-orchid-7731", "new_password2": "lantern-orchid-7731"}
                matrix.post(model, kind, target_name, "password_post", reset, {**body, "change_reason": "matrix"})
            if kind == "lockout":
                release = _url(model, "release", obj.pk)
                matrix.get(model, kind, target_name, "release", release)
                matrix.post(model, kind, target_name, "release_post", release, {"change_reason": "matrix"})
        if kind == "membership":
            for target_name, body in _membership_adds(world, persona):
                matrix.post(model, kind, target_name, "post_add", _url(model, "add"), body)
        if kind == "account":
            body = {
                "username": "newbie",
                "usable_password": "true",
                "password1": "lantern-orchid-7731",
                "password2": "lantern-orchid-7731",
                "is_staff": "on",
                "is_superuser": "on",
            }
            matrix.post(model, kind, "-", "post_add", _url(model, "add"), body)
    print(f"admin matrix, {persona}: {matrix.cases} cases")  # noqa: T201 (the figure for the report)
    assert not matrix.deviations, "\n".join(matrix.deviations)
    assert matrix.cases >= 5 * len(admin.site._registry)
