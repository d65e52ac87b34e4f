"""The admin of access: study roles, user accounts, groups, API tokens, sign-in lockouts and the logs.

The admin pages are thin: each form runs the service's ``*_check`` in ``clean()`` so a refusal
shows on the form, and ``save_model`` calls the service, which checks again inside its transaction
(``trials.memberships``, ``trials.accounts``). A refusal that only appears at save time (a race)
answers 403 and saves nothing; no input gives a 500.

- Study roles: visible to the data managers and sponsor admins of the study, changed by its data
  managers (and superusers). The user and the study of a saved membership never change.
- Accounts: details of ordinary accounts by holders of ``auth.change_user``; staff and superuser
  status, groups and permissions by superusers only; passwords of others through a page of its own.
- Groups and API tokens carry privileges: superusers only.
- Lockouts: listed for superusers and for data managers (their studies' users), released through an
  audited page, never deleted directly.
"""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin as AxesAccessAttemptAdmin
from axes.admin import AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import SetPasswordForm, UserChangeForm
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from trials import accounts, memberships
from trials.account_events import AccountEvent
from trials.admin_base import REASON_FIELD, AuditedAdminMixin, ChangeReasonForm, NoDeleteMixin, ScopedListFiltersMixin
from trials.errors import RuleViolation
from trials.models import StudyMembership
from trials.web import attach_service_error

User = get_user_model()


def _superuser(request) -> bool:
    return request.user.is_active and request.user.is_superuser


class ServiceRefusalMixin:
    """A refusal that reaches ``save_model`` (the rules changed between the form check and the save)
    answers 403 after the admin's transaction rolled back, instead of a server error."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except RuleViolation as exc:
            raise PermissionDenied(" ".join(exc.messages)) from exc

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.actor = request.user  # a new class per request (modelform_factory): no sharing
        return form


def _check_on_form(form, check, **kwargs) -> None:
    try:
        check(**kwargs)
    except ValidationError as exc:
        attach_service_error(form, exc)


# ---------------------------------------------------------------------------------------------
# Study roles
# ---------------------------------------------------------------------------------------------


class StudyMembershipForm(ChangeReasonForm):
    actor = None

    class Meta:
        model = StudyMembership
        fields = ["user", "study", "site", "role", "unblinded", "is_active"]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        values = {k: cleaned.get(k) for k in ("role", "site")}
        reason = cleaned.get(REASON_FIELD, "")
        if self.instance.pk:
            saved = StudyMembership.objects.select_related("user", "study", "site").get(pk=self.instance.pk)
            _check_on_form(
                self,
                memberships.membership_change_check,
                actor=self.actor,
                membership=saved,
                unblinded=bool(cleaned.get("unblinded")),
                is_active=bool(cleaned.get("is_active")),
                reason=reason,
                **values,
            )
        else:
            _check_on_form(
                self,
                memberships.membership_grant_check,
                actor=self.actor,
                user=cleaned["user"],
                study=cleaned["study"],
                unblinded=bool(cleaned.get("unblinded")),
                reason=reason,
                **values,
            )
        return cleaned


@admin.register(StudyMembership)
class StudyMembershipAdmin(ServiceRefusalMixin, ScopedListFiltersMixin, AuditedAdminMixin, admin.ModelAdmin):
    form = StudyMembershipForm
    list_display = ("user", "study", "site", "role", "unblinded", "is_active")
    list_filter = ("study", "site", "role", "unblinded", "is_active")
    list_select_related = ("user", "study", "site")
    search_fields = (
        "user__username",
        "user__first_name",
        "user__last_name",
        "user__email",
        "study__code",
        "site__code",
    )
    autocomplete_fields = ("user",)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if _superuser(request):
            return queryset
        return queryset.filter(study__in=memberships.studies_overseen_by(request.user))

    def has_change_permission(self, request, obj=None) -> bool:
        if not super().has_change_permission(request, obj):
            return False
        if obj is None:
            return True
        # One's own roles are shown read-only (the service refuses them anyway).
        return obj.user_id != request.user.pk and memberships.can_manage_memberships(request.user, obj.study)

    def get_readonly_fields(self, request, obj=None):
        return ("user", "study") if obj is not None else ()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "study" and not _superuser(request):
            kwargs["queryset"] = memberships.studies_managed_by(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change) -> None:
        data = form.cleaned_data
        reason = data.get(REASON_FIELD, "")
        if change:
            memberships.membership_change(
                actor=request.user,
                membership=obj,
                role=data["role"],
                site=data.get("site"),
                unblinded=bool(data.get("unblinded")),
                is_active=bool(data.get("is_active")),
                reason=reason,
            )
            return
        created = memberships.membership_grant(
            actor=request.user,
            user=data["user"],
            study=data["study"],
            role=data["role"],
            site=data.get("site"),
            unblinded=bool(data.get("unblinded")),
            reason=reason,
        )
        obj.pk = created.pk
        obj._state.adding = False


# ---------------------------------------------------------------------------------------------
# User accounts
# ---------------------------------------------------------------------------------------------

PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


class AccountChangeForm(UserChangeForm):
    actor = None

    change_reason = forms.CharField(
        label="Reason for change",
        max_length=500,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="Kept in the account's record with your name and the time.",
    )

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        user, reason = self.instance, cleaned.get(REASON_FIELD, "")
        saved = User.objects.get(pk=user.pk)
        details = {f: cleaned[f] for f in accounts.PROFILE_FIELDS if f in cleaned and cleaned[f] != getattr(saved, f)}
        if details:
            _check_on_form(
                self, accounts.user_update_check, actor=self.actor, user=saved, changes=details, reason=reason
            )
        if self.privileges_changed(saved):
            _check_on_form(self, accounts.user_privileges_check, actor=self.actor, user=saved, reason=reason)
        return cleaned

    def privileges_changed(self, saved) -> bool:
        cleaned = self.cleaned_data
        for field in ("is_staff", "is_superuser"):
            if field in cleaned and cleaned[field] != getattr(saved, field):
                return True
        for field in ("groups", "user_permissions"):
            if field in cleaned and {o.pk for o in cleaned[field]} != set(
                getattr(saved, field).values_list("pk", flat=True)
            ):
                return True
        return False


class PasswordResetByAdminForm(SetPasswordForm):
    change_reason = forms.CharField(
        label="Reason for the reset",
        max_length=500,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="For example how you confirmed who asked. Kept in the account's record; the password never is.",
    )


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(ServiceRefusalMixin, NoDeleteMixin, DjangoUserAdmin):
    form = AccountChangeForm
    readonly_always = ("last_login", "date_joined")

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is None:
            return super().has_change_permission(request, obj)
        return accounts.can_manage_account(request.user, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        if _superuser(request) and obj.pk != request.user.pk:
            return self.readonly_always
        return ("username", *PRIVILEGE_FIELDS, *self.readonly_always)

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return [*fieldsets, ("Reason for change", {"fields": (REASON_FIELD,)})]

    def save_model(self, request, obj, form, change) -> None:
        data = form.cleaned_data
        if not change:
            password = data.get("password1") if data.get("usable_password", "true") != "false" else None
            created = accounts.user_create(actor=request.user, username=data["username"], password=password or None)
            obj.pk = created.pk
            obj._state.adding = False
            return
        reason = data.get(REASON_FIELD, "")
        details = {f: data[f] for f in accounts.PROFILE_FIELDS if f in form.fields}
        accounts.user_update(actor=request.user, user=obj, changes=details, reason=reason)
        if any(f in form.fields for f in PRIVILEGE_FIELDS) and form.privileges_changed(User.objects.get(pk=obj.pk)):
            accounts.user_set_privileges(
                actor=request.user,
                user=obj,
                is_staff=data["is_staff"],
                is_superuser=data["is_superuser"],
                groups=list(data["groups"]),
                permissions=list(data["user_permissions"].select_related("content_type")),
                reason=reason,
            )

    def save_related(self, request, form, formsets, change) -> None:
        # Groups and permissions were set by ``user_set_privileges``, never by the form directly.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    @method_decorator(sensitive_post_parameters())
    def user_change_password(self, request, id, form_url=""):
        """Another user's password, through ``accounts.user_password_reset`` (its own permission)."""
        user = self.get_object(request, unquote(id))
        if user is None:
            raise Http404("No such user.")
        if not accounts.can_reset_password(request.user, user):
            raise PermissionDenied("Resetting this user's password needs a permission you do not have.")
        form = PasswordResetByAdminForm(user, request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                accounts.user_password_reset(
                    actor=request.user,
                    user=user,
                    new_password=form.cleaned_data["new_password1"],
                    reason=form.cleaned_data[REASON_FIELD],
                )
            except ValidationError as exc:
                attach_service_error(form, exc)
            else:
                messages.success(request, f"The password of {user.get_username()} was reset; their other sessions end.")
                return HttpResponseRedirect(reverse("admin:auth_user_change", args=(user.pk,)))
        return _access_form_page(
            self,
            request,
            form,
            title=f"Reset the password of {user.get_username()}",
            intro="The user signs in with this password from now on. Tell it to them by a separate channel.",
            original=user,
        )


def _access_form_page(model_admin, request, form, *, title: str, intro: str, original):
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "intro": intro,
        "form": form,
        "opts": model_admin.opts,
        "original": original,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/trials/access_form.html", context)


class SuperuserOnlyMixin:
    """Groups and API tokens carry privileges of their own: only superusers see or change them."""

    def has_module_permission(self, request) -> bool:
        return _superuser(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return _superuser(request)

    def has_add_permission(self, request) -> bool:
        return _superuser(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return _superuser(request)


@admin.register(Group)
class GroupAdmin(SuperuserOnlyMixin, NoDeleteMixin, DjangoGroupAdmin):
    pass


if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class ApiTokenAdmin(SuperuserOnlyMixin, TokenAdmin):
    """Deleting a token revokes it (it holds no data); creating one for someone acts as them."""

    def has_delete_permission(self, request, obj=None) -> bool:
        return _superuser(request)


# ---------------------------------------------------------------------------------------------
# Sign-in lockouts and access logs
# ---------------------------------------------------------------------------------------------


class LockoutReleaseForm(forms.Form):
    change_reason = forms.CharField(
        label="Reason for the release",
        max_length=500,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="For example how you confirmed it was them. Kept with your name and the time.",
    )


for _model in (AccessAttempt, AccessLog, AccessFailureLog):
    if admin.site.is_registered(_model):  # AXES_ENABLE_ADMIN may be off
        admin.site.unregister(_model)


@admin.register(AccessAttempt)
class AccessAttemptAdmin(NoDeleteMixin, AxesAccessAttemptAdmin):
    """Failed sign-ins per username. Data managers see those of their studies' users and release
    a lockout with a reason (``accounts.lockout_release``); nobody edits or deletes the rows here."""

    actions = None
    list_display = [*AxesAccessAttemptAdmin.list_display, "release_link"]

    def _may_release_any(self, request) -> bool:
        return _superuser(request) or memberships.studies_managed_by(request.user).exists()

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_staff and self._may_release_any(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if _superuser(request):
            return queryset
        return queryset.filter(username__in=accounts.lockout_users_for(request.user).values("username"))

    @admin.display(description="release")
    def release_link(self, obj) -> str:
        url = reverse("admin:axes_accessattempt_release", args=(obj.pk,))
        return format_html('<a href="{}">Release…</a>', url)

    def get_urls(self):
        release = path(
            "<path:object_id>/release/",
            self.admin_site.admin_view(self.release_view),
            name="axes_accessattempt_release",
        )
        return [release, *super().get_urls()]

    def release_view(self, request, object_id):
        if not self.has_view_permission(request):
            raise PermissionDenied
        attempt = self.get_object(request, unquote(object_id))
        if attempt is None:
            raise Http404("No such lockout.")
        form = LockoutReleaseForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                accounts.lockout_release(
                    actor=request.user, username=attempt.username, reason=form.cleaned_data[REASON_FIELD]
                )
            except ValidationError as exc:
                attach_service_error(form, exc)
            else:
                messages.success(request, f"{attempt.username} can sign in again.")
                return HttpResponseRedirect(reverse("admin:axes_accessattempt_changelist"))
        return _access_form_page(
            self,
            request,
            form,
            title=f"Release the sign-in lockout of {attempt.username}",
            intro=(
                f"{attempt.failures_since_start} failed sign-ins since {attempt.attempt_time:%Y-%m-%d %H:%M} UTC. "
                "Release it only once you are sure the request comes from the account's owner."
            ),
            original=attempt,
        )


class ReadOnlyLogMixin(NoDeleteMixin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


admin.site.register(AccessLog, type("AccessLogAdmin", (ReadOnlyLogMixin, AccessLogAdmin), {}))
admin.site.register(AccessFailureLog, type("AccessFailureLogAdmin", (ReadOnlyLogMixin, AccessFailureLogAdmin), {}))


@admin.register(AccountEvent)
class AccountEventAdmin(ReadOnlyLogMixin, admin.ModelAdmin):
    list_display = ("at", "kind", "username", "actor", "reason", "channel")
    list_filter = ("kind", "channel")
    list_select_related = ("actor",)
    search_fields = ("username", "actor__username", "reason")
    date_hierarchy = "at"
    readonly_fields = ("at", "kind", "actor", "user", "username", "changes", "reason", "channel")
