"""What every Tolerance ModelAdmin shares: no deletion, a reason for every edit, and scoping.

Django's model permissions say *which kinds* of rows a staff user may view or change; they are
global. The mixins here add *which rows*: a data manager sees and changes the build and the roles
of the studies they manage, and reads the casebooks they may read in the pages, nothing else
(docs/reliability.md #21, #22). A row outside that scope is treated as missing: the change page
redirects to the admin index like an unknown id, so nothing reveals whether it exists. Superusers
are not scoped.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist, PermissionDenied

from trials.audit import audit_context
from trials.memberships import studies_managed_by

REASON_FIELD = "change_reason"


class NoDeleteMixin:
    """Refuses deletion: the delete view answers 403 and no delete link or inline checkbox shows."""

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ChangeReasonForm(forms.ModelForm):
    """Adds the reason for change, required when editing a saved row (inline rows share it)."""

    change_reason = forms.CharField(
        label="Reason for change",
        required=False,
        max_length=500,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="Required to save an edit; kept in the audit trail with your name and the time.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields[REASON_FIELD].required = True

    def clean_change_reason(self) -> str:
        return self.cleaned_data[REASON_FIELD].strip()


class AuditedAdminMixin(NoDeleteMixin):
    """Saves from the admin run inside an audit context naming the user, the reason and the channel."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method != "POST":
            return super().changeform_view(request, object_id, form_url, extra_context)
        if object_id:
            self._refuse_if_study_locked(request, object_id)
        # An invalid form saves nothing, so an empty reason here never reaches the database.
        reason = request.POST.get(REASON_FIELD, "").strip() if object_id else "added in the admin"
        with audit_context(actor=request.user, reason=reason, channel="admin"):
            return super().changeform_view(request, object_id, form_url, extra_context)

    def _refuse_if_study_locked(self, request, object_id) -> None:
        """A locked study refuses edits from the admin as from the pages and the API."""
        from trials.models import Study

        obj = self.get_object(request, object_id)
        study = obj if isinstance(obj, Study) else getattr(obj, "study", None)
        if study is not None and study.is_locked:
            raise PermissionDenied(f"Study {study.code} is locked; unlock it (with a reason) to change its build.")

    def get_fields(self, request, obj=None):
        fields = [f for f in super().get_fields(request, obj) if f != REASON_FIELD]
        return [*fields, REASON_FIELD] if obj is not None else fields

    def get_fieldsets(self, request, obj=None):
        if not self.fieldsets:
            return super().get_fieldsets(request, obj)
        extra = [("Reason for change", {"fields": (REASON_FIELD,)})] if obj is not None else []
        return [*self.fieldsets, *extra]


def _is_superuser(request) -> bool:
    return request.user.is_active and request.user.is_superuser


class ScopedListFiltersMixin:
    """Sidebar filters on a relation offer only the values present in the user's rows, so a filter
    never lists another study's codes or sites."""

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        if _is_superuser(request):
            return filters
        scoped = []
        for entry in filters:
            if isinstance(entry, str) and self._is_relation_path(entry):
                entry = (entry, admin.RelatedOnlyFieldListFilter)
            scoped.append(entry)
        return scoped

    def _is_relation_path(self, path: str) -> bool:
        model = self.model
        field = None
        for part in path.split("__"):
            try:
                field = model._meta.get_field(part)
            except FieldDoesNotExist:
                return False
            model = field.related_model
            if model is None:
                break
        return field is not None and field.is_relation


class StudyScopedAdminMixin(ScopedListFiltersMixin):
    """Study-build rows: visible and changeable in the studies the user manages.

    ``study_path`` leads from the model to its study's primary key (``"pk"`` for ``Study`` itself,
    ``"study"`` for a cohort). A ``study`` foreign key on the form offers only managed studies, so a
    row cannot be moved into (or created in) a study the user does not manage.
    """

    study_path = "study"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if _is_superuser(request):
            return queryset
        return queryset.filter(**{f"{self.study_path}__in": studies_managed_by(request.user)})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "study" and not _is_superuser(request):
            kwargs["queryset"] = studies_managed_by(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class CasebookScopedAdminMixin(ScopedListFiltersMixin):
    """Read-only casebook rows: exactly the participants the user may read in the pages."""

    def get_queryset(self, request):
        from trials.selectors import participant_scope

        queryset = super().get_queryset(request)
        if _is_superuser(request):
            return queryset
        return queryset.filter(participant_scope(request.user, prefix=self._participant_prefix()))

    def _participant_prefix(self) -> str:
        names = {f.name for f in self.model._meta.get_fields()}
        if self.model._meta.model_name == "participant":
            return ""
        if "participant" in names:
            return "participant__"
        if "visit" in names:
            return "visit__participant__"
        raise AssertionError(f"{self.model.__name__}: no path to its participant")  # a new model must say
