"""User accounts: creation, changes, privileges, password resets by another person and the release of
a sign-in lockout (docs/reliability.md #9, #17, #30, #31).

Who may do what:

- **Nobody changes their own account's privileges**, resets their own password here (the ordinary
  password change asks for the current one) or releases their own lockout.
- **Only a superuser grants or removes superuser or staff status, groups or permissions** (groups
  and permissions are staff privileges too: they open the admin). Every such change is recorded.
- **Account details** (names, e-mail, active) of ordinary accounts are changed by holders of Django's
  ``auth.change_user`` permission; staff and superuser accounts only by a superuser, so that a user
  administrator cannot lock out, rename or take over the people who supervise them.
- **Resetting another user's password is a permission of its own**, ``trials.reset_user_password``,
  not part of ``auth.change_user``. A holder resets ordinary accounts; a staff or superuser account
  is reset only by a superuser. Every reset is recorded, and it ends the user's other sessions
  (Django checks the password hash stored in each session).
- **Releasing a sign-in lockout**: a superuser, or an active data manager for the users of their
  studies (anyone with an active role there, except superusers). django-axes keeps the failed
  attempts in PostgreSQL; a release deletes them for that username, and is recorded.

Each service writes its ``AccountEvent`` (who, whom, what changed from what to what, why, channel)
in the same transaction as the change. Refusals raise ``RuleViolation`` keyed by the form field they
concern and write nothing. Like ``trials.memberships``, the services join the admin view's
transaction instead of being ``durable``.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import transaction

from trials.account_events import AccountEvent
from trials.errors import RuleViolation
from trials.memberships import studies_managed_by
from trials.models import StudyMembership

User = get_user_model()

PROFILE_FIELDS = ("username", "first_name", "last_name", "email", "is_active")
RESET_PERMISSION = "trials.reset_user_password"


def _is_superuser(actor) -> bool:
    return bool(getattr(actor, "is_authenticated", False) and actor.is_active and actor.is_superuser)


def _required_reason(reason: str) -> str:
    if not reason or not reason.strip():
        raise RuleViolation(
            {"change_reason": "A reason is required; it is kept with your name in the account's record."}
        )
    return reason.strip()


def _record(*, actor, user, kind: str, reason: str, channel: str, changes: dict | None = None, username: str = ""):
    return AccountEvent.objects.create(
        actor=actor,
        user=user,
        username=(user.get_username() if user is not None else username)[:150],
        kind=kind,
        changes=changes or {},
        reason=reason,
        channel=channel,
    )


def is_privileged(user) -> bool:
    """Staff and superuser accounts: managed by superusers only."""
    return bool(user.is_staff or user.is_superuser)


def can_manage_account(actor, user) -> bool:
    """Whether ``actor`` may change ``user``'s details (not their privileges or password)."""
    if not getattr(actor, "is_authenticated", False) or not actor.is_active or actor.pk == user.pk:
        return False
    if actor.is_superuser:
        return True
    return actor.has_perm("auth.change_user") and not is_privileged(user)


def can_reset_password(actor, user) -> bool:
    if not getattr(actor, "is_authenticated", False) or not actor.is_active or actor.pk == user.pk:
        return False
    if actor.is_superuser:
        return True
    return actor.has_perm(RESET_PERMISSION) and not is_privileged(user)


# ---------------------------------------------------------------------------------------------
# Accounts and privileges
# ---------------------------------------------------------------------------------------------


@transaction.atomic
def user_create(*, actor, username: str, password: str | None, channel: str = "admin"):
    """Create an ordinary (non-staff) account; ``password`` None makes it unusable (single sign-on)."""
    if not (_is_superuser(actor) or (actor.has_perm("auth.add_user") and actor.has_perm("auth.change_user"))):
        raise RuleViolation({"username": "You may not create accounts."})
    user = User(username=username)
    if password is None:
        user.set_unusable_password()
    else:
        _validate_password(password, user)
        user.set_password(password)
    try:
        user.full_clean(exclude=["password"])
    except ValidationError as exc:
        raise RuleViolation(exc.message_dict) from None
    user.save()
    _record(actor=actor, user=user, kind=AccountEvent.Kind.CREATED, reason="account created", channel=channel)
    return user


def user_update_check(*, actor, user, changes: dict, reason: str) -> None:
    """Refuse (``RuleViolation``) unless ``actor`` may make these detail changes; writes nothing."""
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise RuleViolation({sorted(unknown)[0]: "This field is changed through the privileges, not the details."})
    if actor.pk == user.pk:
        raise RuleViolation({"username": "Change your own account through your own settings, not here."})
    if not can_manage_account(actor, user):
        raise RuleViolation({"username": "Only a superuser changes staff and superuser accounts."})
    if "username" in changes and not _is_superuser(actor):
        raise RuleViolation({"username": "Only a superuser renames an account: the audit trail names users by it."})
    _required_reason(reason)


@transaction.atomic
def user_update(*, actor, user, changes: dict, reason: str, channel: str = "admin"):
    """Change an account's details (``PROFILE_FIELDS``); records old and new values."""
    locked = User.objects.select_for_update().get(pk=user.pk)
    changes = {field: value for field, value in changes.items() if getattr(locked, field) != value}
    if not changes:
        return locked
    user_update_check(actor=actor, user=locked, changes=changes, reason=reason)
    diff = {field: [getattr(locked, field), value] for field, value in changes.items()}
    for field, value in changes.items():
        setattr(locked, field, value)
    try:
        locked.full_clean(exclude=["password"])
    except ValidationError as exc:
        raise RuleViolation(exc.message_dict) from None
    locked.save(update_fields=list(changes))
    _record(
        actor=actor, user=locked, kind=AccountEvent.Kind.CHANGED, reason=reason.strip(), channel=channel, changes=diff
    )
    return locked


def _privilege_state(user) -> dict:
    return {
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": sorted(user.groups.values_list("name", flat=True)),
        "user_permissions": sorted(
            f"{app}.{codename}"
            for app, codename in user.user_permissions.values_list("content_type__app_label", "codename")
        ),
    }


def user_privileges_check(*, actor, user, reason: str) -> None:
    """Refuse (``RuleViolation``) unless ``actor`` may change ``user``'s privileges; writes nothing."""
    if not _is_superuser(actor):
        raise RuleViolation(
            {"is_superuser": "Only a superuser grants or removes staff or superuser status, groups or permissions."}
        )
    if actor.pk == user.pk:
        raise RuleViolation({"is_superuser": "Nobody changes their own privileges; ask another superuser."})
    _required_reason(reason)


@transaction.atomic
def user_set_privileges(
    *,
    actor,
    user,
    is_staff: bool,
    is_superuser: bool,
    groups: list[Group] | None = None,
    permissions: list[Permission] | None = None,
    reason: str,
    channel: str = "admin",
):
    """Set staff and superuser status, groups and direct permissions (None: leave unchanged); records
    the old and the new privileges."""
    locked = User.objects.select_for_update().get(pk=user.pk)
    before = _privilege_state(locked)
    wanted = {"is_staff": is_staff, "is_superuser": is_superuser}
    if groups is not None:
        wanted["groups"] = sorted(g.name for g in groups)
    if permissions is not None:
        wanted["user_permissions"] = sorted(f"{p.content_type.app_label}.{p.codename}" for p in permissions)
    diff = {field: [before[field], value] for field, value in wanted.items() if before[field] != value}
    if not diff:
        return locked
    user_privileges_check(actor=actor, user=locked, reason=reason)
    locked.is_staff, locked.is_superuser = is_staff, is_superuser
    locked.save(update_fields=["is_staff", "is_superuser"])
    if groups is not None:
        locked.groups.set(groups)
    if permissions is not None:
        locked.user_permissions.set(permissions)
    _record(
        actor=actor,
        user=locked,
        kind=AccountEvent.Kind.PRIVILEGES,
        reason=reason.strip(),
        channel=channel,
        changes=diff,
    )
    return locked


# ---------------------------------------------------------------------------------------------
# Passwords and lockouts
# ---------------------------------------------------------------------------------------------


def _validate_password(password: str, user) -> None:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise RuleViolation({"new_password1": exc.messages}) from None


def user_password_reset_check(*, actor, user, reason: str) -> None:
    if actor.pk == user.pk:
        raise RuleViolation(
            {"new_password1": "Change your own password with 'Change password': it asks for your current one."}
        )
    if not can_reset_password(actor, user):
        raise RuleViolation(
            {
                "new_password1": "Resetting another user's password needs its own permission; "
                "staff and superuser passwords are reset by a superuser."
            }
        )
    _required_reason(reason)


@transaction.atomic
def user_password_reset(*, actor, user, new_password: str, reason: str, channel: str = "admin"):
    """Set another user's password (for example after they forgot it); recorded, never the password."""
    locked = User.objects.select_for_update().get(pk=user.pk)
    user_password_reset_check(actor=actor, user=locked, reason=reason)
    _validate_password(new_password, locked)
    locked.set_password(new_password)
    locked.save(update_fields=["password"])
    _record(actor=actor, user=locked, kind=AccountEvent.Kind.PASSWORD_RESET, reason=reason.strip(), channel=channel)
    return locked


def lockout_users_for(actor):
    """Accounts whose lockout ``actor`` may release (a queryset of users)."""
    if _is_superuser(actor):
        return User.objects.all()
    studies = studies_managed_by(actor)
    members = StudyMembership.objects.filter(study__in=studies, is_active=True).values("user_id")
    return User.objects.filter(pk__in=members, is_superuser=False).exclude(pk=getattr(actor, "pk", None))


def lockout_release_check(*, actor, username: str, reason: str) -> None:
    if username == getattr(actor, "username", None):
        raise RuleViolation({"change_reason": "Nobody releases their own lockout."})
    allowed = _is_superuser(actor) or lockout_users_for(actor).filter(username=username).exists()
    if not allowed:
        raise RuleViolation({"change_reason": "You may release lockouts only of the users of the studies you manage."})
    _required_reason(reason)


@transaction.atomic
def lockout_release(*, actor, username: str, reason: str, channel: str = "admin") -> int:
    """Clear the failed sign-in attempts of ``username`` so they can sign in again at once; returns
    how many attempt rows were cleared. Confirm who is asking (for example by phone) first: the
    lockout is what stops a password being guessed."""
    from axes.models import AccessAttempt
    from axes.utils import reset

    lockout_release_check(actor=actor, username=username, reason=reason)
    attempts = AccessAttempt.objects.select_for_update().filter(username=username)
    failures = max((a.failures_since_start for a in attempts), default=0)
    if not failures:
        raise RuleViolation({"change_reason": f"{username} has no failed sign-ins to release."})
    count = reset(username=username)
    _record(
        actor=actor,
        user=User.objects.filter(username=username).first(),
        username=username,
        kind=AccountEvent.Kind.LOCKOUT_RELEASED,
        reason=reason.strip(),
        channel=channel,
        changes={"failures_since_start": [failures, 0]},
    )
    return count
