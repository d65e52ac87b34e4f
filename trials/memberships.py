"""Granting, changing and withdrawing study roles (``StudyMembership``): the rules that stop anyone
widening their own access (docs/reliability.md #9, #21, #23).

Who may do what:

1. **Nobody acts on their own memberships**, superusers included: a role, a site, the unblinded flag
   and even a withdrawal of one's own role are always another person's decision.
2. **Roles are managed** by a superuser or by an active data manager of the study (and only in that
   study). Sponsor admins and the other roles may not grant roles.
3. **Unblinded access needs a second, already unblinded person.** Only an *unblinding authority*
   grants it: a superuser, or a manager who is themselves unblinded and study-wide (no site) in that
   study. Rule 1 makes that person someone other than the grantee, and the grant needs a reason,
   which the audit trail keeps with the granter's name. A change counts as an unblinding whenever
   the result is an active unblinded role that was not one before with the same role and site:
   ticking the box, reactivating an unblinded role, or moving one to another role or site.
   (A pending request approved by a second person was considered; it needs a new state and a new
   page, and gives nothing more than this rule: the approver would be the same authority.)
4. **Data management and data entry stay apart.** A data manager never gives a data-entry role
   (coordinator, investigator) to a data manager of the study, nor the data-manager role to someone
   who enters data there; only a superuser may combine them, for example at a very small site.
5. A site-bound role names a site that takes part in the study; a user holds one role per study and
   site; memberships are withdrawn (``is_active``), never deleted.

Every function checks its actor itself. The ``*_check`` functions run the same rules without writing,
so that a form can show a refusal before anything is saved; the services run them again inside their
transaction. A refusal raises ``RuleViolation`` keyed by the form field it concerns and writes
nothing. Memberships are audited by pghistory: the services write inside ``audit_context``, so each
event names the actor, the channel and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from trials.audit import audit_context
from trials.errors import RuleViolation
from trials.models import DATA_ENTRY_ROLES, SITE_BOUND_ROLES, Role, Site, Study, StudyMembership

# ---------------------------------------------------------------------------------------------
# Who manages which study
# ---------------------------------------------------------------------------------------------


def _active_memberships(user) -> QuerySet[StudyMembership]:
    # Read fresh on purpose: a decision about access must not use a cache filled earlier in the request.
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return StudyMembership.objects.none()
    return StudyMembership.objects.filter(user=user, is_active=True)


def studies_managed_by(user) -> QuerySet[Study]:
    """Studies whose build and roles ``user`` manages: all for a superuser, else those where the user
    is an active data manager."""
    if getattr(user, "is_superuser", False) and user.is_active:
        return Study.objects.all()
    ids = _active_memberships(user).filter(role=Role.DATA_MANAGER).values("study_id")
    return Study.objects.filter(pk__in=ids)


def studies_overseen_by(user) -> QuerySet[Study]:
    """Studies whose roles ``user`` may read: the managed ones, plus those where they are sponsor admin."""
    if getattr(user, "is_superuser", False) and user.is_active:
        return Study.objects.all()
    roles = [Role.DATA_MANAGER, Role.SPONSOR_ADMIN]
    ids = _active_memberships(user).filter(role__in=roles).values("study_id")
    return Study.objects.filter(pk__in=ids)


def can_manage_memberships(user, study: Study) -> bool:
    return studies_managed_by(user).filter(pk=study.pk).exists()


def is_unblinding_authority(user, study: Study) -> bool:
    """A superuser, or a manager of ``study`` who is unblinded there and not limited to a site."""
    if getattr(user, "is_superuser", False) and user.is_active:
        return True
    return (
        can_manage_memberships(user, study)
        and _active_memberships(user).filter(study=study, unblinded=True, site__isnull=True).exists()
    )


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MembershipState:
    """What a membership grants: the before and after of a change are compared field by field."""

    role: str
    site: Site | None
    unblinded: bool
    is_active: bool


def _check_manager(actor, user, study: Study) -> None:
    if actor.pk == user.pk:
        raise RuleViolation({"user": "You cannot grant, change or withdraw your own roles; ask another data manager."})
    if not can_manage_memberships(actor, study):
        raise RuleViolation({"study": f"You do not manage the roles of {study.code}."})


def _check_shape(study: Study, state: MembershipState) -> None:
    if state.role not in Role.values:
        raise RuleViolation({"role": f"{state.role!r} is not a role."})
    if state.role in SITE_BOUND_ROLES and state.site is None:
        raise RuleViolation({"site": "This role works at one site: choose the site."})
    if state.site is not None and not study.sites.filter(pk=state.site.pk).exists():
        raise RuleViolation({"site": f"Site {state.site.code} does not take part in {study.code}."})


def _check_segregation(actor, user, study: Study, role: str, *, exclude_pk: int | None) -> None:
    if actor.is_superuser:
        return
    held = set(
        StudyMembership.objects.filter(user=user, study=study, is_active=True)
        .exclude(pk=exclude_pk)
        .values_list("role", flat=True)
    )
    if role in DATA_ENTRY_ROLES and Role.DATA_MANAGER in held:
        raise RuleViolation(
            {
                "role": f"{user} is a data manager of {study.code}: only a superuser can also give them a data-entry role."
            }
        )
    if role == Role.DATA_MANAGER and held & DATA_ENTRY_ROLES:
        raise RuleViolation(
            {"role": f"{user} enters data in {study.code}: only a superuser can also make them a data manager."}
        )


def _check_unblinding(actor, study: Study, reason: str) -> None:
    if not is_unblinding_authority(actor, study):
        raise RuleViolation(
            {
                "unblinded": "Only a superuser, or an unblinded study-wide data manager of this study, "
                "can grant unblinded access."
            }
        )
    if not reason.strip():
        raise RuleViolation({"change_reason": "Give the reason for granting unblinded access."})


def membership_grant_check(
    *, actor, user, study: Study, role: str, site: Site | None = None, unblinded: bool = False, reason: str = ""
) -> None:
    """Refuse (``RuleViolation``) unless ``actor`` may give ``user`` this role; writes nothing."""
    _check_manager(actor, user, study)
    state = MembershipState(role=role, site=site, unblinded=unblinded, is_active=True)
    _check_shape(study, state)
    if StudyMembership.objects.filter(user=user, study=study, site=site).exists():
        where = f"at {site.code}" if site else "for all sites"
        raise RuleViolation(
            {"user": f"{user} already has a role in {study.code} {where}: change that membership instead."}
        )
    _check_segregation(actor, user, study, role, exclude_pk=None)
    if unblinded:
        _check_unblinding(actor, study, reason)


def membership_change_check(
    *, actor, membership: StudyMembership, role: str, site: Site | None, unblinded: bool, is_active: bool, reason: str
) -> None:
    """Refuse (``RuleViolation``) unless ``actor`` may make this change; writes nothing."""
    study = membership.study
    _check_manager(actor, membership.user, study)
    old = MembershipState(membership.role, membership.site, membership.unblinded, membership.is_active)
    new = MembershipState(role, site, unblinded, is_active)
    if new == old:
        return
    if not reason.strip():
        raise RuleViolation({"change_reason": "A reason for change is required."})
    _check_shape(study, new)
    if (
        site != membership.site
        and StudyMembership.objects.filter(user=membership.user, study=study, site=site).exists()
    ):
        raise RuleViolation({"site": f"{membership.user} already has another role there in {study.code}."})
    # A role that is active afterwards and was not active before as the same role at the same site is
    # a new grant of that role, with the same checks as ``membership_grant``.
    new_role_grant = is_active and (not old.is_active or role != old.role or site != old.site)
    if new_role_grant:
        _check_segregation(actor, membership.user, study, role, exclude_pk=membership.pk)
    if is_active and unblinded and (not old.unblinded or new_role_grant):
        _check_unblinding(actor, study, reason)


# ---------------------------------------------------------------------------------------------
# The services
# ---------------------------------------------------------------------------------------------
# Not ``durable``: the admin's change view (the only caller) already runs in a transaction, which
# these join, so the change, its audit event and the admin's log entry commit together.


@transaction.atomic
def membership_grant(
    *,
    actor,
    user,
    study: Study,
    role: str,
    site: Site | None = None,
    unblinded: bool = False,
    reason: str = "",
    channel: str = "admin",
) -> StudyMembership:
    """Give ``user`` a role in ``study`` (at ``site`` for a site-bound role)."""
    # Serialise grants in one study, so two managers cannot both pass the uniqueness check.
    Study.objects.select_for_update().filter(pk=study.pk).first()
    membership_grant_check(
        actor=actor, user=user, study=study, role=role, site=site, unblinded=unblinded, reason=reason
    )
    membership = StudyMembership(user=user, study=study, site=site, role=role, unblinded=unblinded, is_active=True)
    membership.full_clean(validate_unique=False, validate_constraints=False)
    with audit_context(actor=actor, reason=reason.strip() or "role granted", channel=channel):
        try:
            with transaction.atomic():
                membership.save()
        except IntegrityError:
            raise RuleViolation({"user": f"{user} already has a role there in {study.code}."}) from None
    return membership


@transaction.atomic
def membership_change(
    *,
    actor,
    membership: StudyMembership,
    role: str,
    site: Site | None,
    unblinded: bool,
    is_active: bool,
    reason: str,
    channel: str = "admin",
) -> StudyMembership:
    """Change a membership's role, site, unblinding or activity. The user and the study never change:
    giving a role to someone else is a withdrawal plus a grant."""
    locked = (
        StudyMembership.objects.select_for_update(of=("self",))
        .select_related("user", "study", "site")
        .get(pk=membership.pk)
    )
    membership_change_check(
        actor=actor, membership=locked, role=role, site=site, unblinded=unblinded, is_active=is_active, reason=reason
    )
    before = (locked.role, locked.site_id, locked.unblinded, locked.is_active)
    if before == (role, site.pk if site else None, unblinded, is_active):
        return locked
    locked.role, locked.site, locked.unblinded, locked.is_active = role, site, unblinded, is_active
    locked.full_clean(validate_unique=False, validate_constraints=False)
    with audit_context(actor=actor, reason=reason.strip(), channel=channel):
        try:
            with transaction.atomic():
                locked.save(update_fields=["role", "site", "unblinded", "is_active"])
        except IntegrityError:
            raise RuleViolation(
                {"site": f"{locked.user} already has another role there in {locked.study.code}."}
            ) from None
    return locked


def membership_withdraw(*, actor, membership: StudyMembership, reason: str, channel: str = "admin") -> StudyMembership:
    """Withdraw a role (it stays on record, inactive)."""
    return membership_change(
        actor=actor,
        membership=membership,
        role=membership.role,
        site=membership.site,
        unblinded=membership.unblinded,
        is_active=False,
        reason=reason,
        channel=channel,
    )
