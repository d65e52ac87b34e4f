"""Django admin: where a data manager builds a study (docs/architecture.md §1), and a read-only window on the casebook.

Three rules shape everything here:

- Nothing is ever hard-deleted from the admin. Study-build rows are referenced (``PROTECT``) by
  clinical data, casebook rows are audited records, user accounts are the actors named in the audit
  trail. ``has_delete_permission`` is False on every admin (the only exception revokes access rather
  than removing data: an API token, for superusers) and the ``delete_selected`` action is off
  site-wide. A criterion is retired with ``is_active``, a cohort closed with ``is_open``, a user with
  ``is_active``, a lockout released through its audited page.
- Each user sees and changes only their own studies' rows (``trials.admin_base``); accounts, roles and
  lockouts are administered through services that stop anyone widening their own access
  (``trials.access_admin``).
- Clinical data are entered through the coordinators' forms, which call ``trials.services``; the
  admin never writes a casebook row, so those models are view-only.
- Every edit carries who and why: a change form asks for a reason for change, which goes into the
  audit context with the user (the database refuses an UPDATE of an audited row without both).
- Once clinical data point at a study-build row, the fields that give those data their meaning
  (a criterion's text, a cohort's planned dose, a visit's protocol day, a consent version's date, a
  study's indication) become read-only. A change of protocol is a new row, not an edit of history.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Count, Exists, OuterRef, Q

from trials.admin_base import (
    AuditedAdminMixin,
    CasebookScopedAdminMixin,
    ChangeReasonForm,
    NoDeleteMixin,
    ScopedListFiltersMixin,
    StudyScopedAdminMixin,
)
from trials.memberships import studies_managed_by
from trials.models import (
    Consent,
    ConsentDocument,
    DiseaseAssessment,
    Disposition,
    DoseCohort,
    EligibilityAnswer,
    EligibilityCriterion,
    FormCode,
    Infusion,
    InsulinDoseChange,
    MMTTSample,
    MRIRead,
    Participant,
    ProtocolDeviation,
    Relapse,
    RescueTherapy,
    Site,
    Study,
    Visit,
    VisitDefinition,
)

admin.site.site_header = "Tolerance administration"
admin.site.site_title = "Tolerance"
admin.site.index_title = "Study build and casebook (read-only)"
# Bulk deletion is never offered, whatever a ModelAdmin says.
admin.site.disable_action("delete_selected")


# ---------------------------------------------------------------------------------------------
# Forms that freeze the fields clinical data depend on
# ---------------------------------------------------------------------------------------------


class InUseLockForm(forms.ModelForm):
    """A form whose ``locked_when_used`` fields are disabled once clinical data refer to the row.

    A disabled field ignores whatever is posted and keeps the saved value, so the lock holds even
    against a hand-crafted POST. Admins annotate ``_in_use`` on their querysets so a page of inline
    rows costs one query, not one per row.
    """

    locked_when_used: tuple[str, ...] = ()
    locked_help = "Read-only: clinical data already refer to this {what}."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and self._in_use():
            what = self._meta.model._meta.verbose_name
            for name in self.locked_when_used:
                if name in self.fields:
                    self.fields[name].disabled = True
                    self.fields[name].help_text = self.locked_help.format(what=what)

    def _in_use(self) -> bool:
        annotated = getattr(self.instance, "_in_use", None)
        return annotated if annotated is not None else self.in_use_query(self.instance)

    @staticmethod
    def in_use_query(instance) -> bool:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


class StudyForm(InUseLockForm):
    locked_when_used = ("code", "indication", "is_blinded")

    class Meta:
        model = Study
        fields = [
            "code",
            "title",
            "indication",
            "phase",
            "product_name",
            "is_blinded",
            "follow_up_days",
            "dlt_window_days",
            "dose_tolerance_pct",
            "min_age_years",
            "max_age_years",
            "release_min_viability_pct",
            "release_max_endotoxin_eu_per_kg",
            "sites",
        ]

    @staticmethod
    def in_use_query(instance) -> bool:
        return instance.participants.exists()

    def clean_sites(self):
        sites = self.cleaned_data["sites"]
        if self.instance.pk:
            removed = set(self.instance.sites.values_list("pk", flat=True)) - {s.pk for s in sites}
            in_use = (
                Site.objects.filter(pk__in=removed, participants__study=self.instance)
                .distinct()
                .values_list("code", flat=True)
            )
            if in_use:
                raise forms.ValidationError(
                    f"Site(s) {', '.join(sorted(in_use))} already have participants in this study and cannot be removed."
                )
        return sites


class DoseCohortForm(InUseLockForm):
    locked_when_used = ("study", "number", "planned_cells_per_kg", "planned_total_cells", "route", "infusions_planned")

    class Meta:
        model = DoseCohort
        fields = [
            "study",
            "number",
            "label",
            "planned_cells_per_kg",
            "planned_total_cells",
            "route",
            "infusions_planned",
            "sentinel_interval_days",
            "capacity",
            "is_open",
        ]

    @staticmethod
    def in_use_query(instance) -> bool:
        return instance.participants.exists()


class VisitDefinitionForm(InUseLockForm):
    # Windows stay editable: services copy them onto each visit when the schedule is set, so an
    # amended window applies to participants infused afterwards and leaves earlier visits as planned.
    locked_when_used = ("study", "code", "target_day")

    forms_due = forms.MultipleChoiceField(choices=FormCode.choices, widget=forms.CheckboxSelectMultiple, required=False)

    class Meta:
        model = VisitDefinition
        fields = ["study", "code", "name", "target_day", "window_before", "window_after", "forms_due"]

    @staticmethod
    def in_use_query(instance) -> bool:
        return Visit.objects.filter(definition=instance).exists()


class EligibilityCriterionForm(InUseLockForm):
    locked_when_used = ("study", "kind", "number", "text")
    locked_help = "Read-only: participants answered this {what}. Retire it (untick 'active') and add a new one."

    class Meta:
        model = EligibilityCriterion
        fields = ["study", "kind", "number", "text", "is_active"]
        widgets = {"text": forms.Textarea(attrs={"rows": 2, "cols": 60})}

    @staticmethod
    def in_use_query(instance) -> bool:
        return instance.answers.exists()


class ConsentDocumentForm(InUseLockForm):
    locked_when_used = ("study", "version", "effective_date")

    class Meta:
        model = ConsentDocument
        fields = ["study", "version", "effective_date", "title"]

    @staticmethod
    def in_use_query(instance) -> bool:
        return instance.consents.exists()


class StudyAdminForm(ChangeReasonForm, StudyForm):
    pass


class DoseCohortAdminForm(ChangeReasonForm, DoseCohortForm):
    pass


class VisitDefinitionAdminForm(ChangeReasonForm, VisitDefinitionForm):
    pass


class EligibilityCriterionAdminForm(ChangeReasonForm, EligibilityCriterionForm):
    pass


class ConsentDocumentAdminForm(ChangeReasonForm, ConsentDocumentForm):
    pass


class SiteAdminForm(ChangeReasonForm):
    class Meta:
        model = Site
        fields = ["code", "name", "country", "timezone"]


def _annotate_in_use(queryset, related_model, field: str):
    return queryset.annotate(_in_use=Exists(related_model.objects.filter(**{field: OuterRef("pk")})))


# ---------------------------------------------------------------------------------------------
# Study build
# ---------------------------------------------------------------------------------------------


class StudyBuildInline(NoDeleteMixin, admin.TabularInline):
    extra = 0
    show_change_link = True
    in_use_model = None
    in_use_field = ""

    def get_queryset(self, request):
        return _annotate_in_use(super().get_queryset(request), self.in_use_model, self.in_use_field)


class DoseCohortInline(StudyBuildInline):
    model = DoseCohort
    form = DoseCohortForm
    fields = (
        "number",
        "label",
        "planned_cells_per_kg",
        "planned_total_cells",
        "route",
        "infusions_planned",
        "sentinel_interval_days",
        "capacity",
        "is_open",
    )
    in_use_model, in_use_field = Participant, "cohort"


class VisitDefinitionInline(StudyBuildInline):
    model = VisitDefinition
    form = VisitDefinitionForm
    fields = ("code", "name", "target_day", "window_before", "window_after", "forms_due")
    in_use_model, in_use_field = Visit, "definition"


class EligibilityCriterionInline(StudyBuildInline):
    model = EligibilityCriterion
    form = EligibilityCriterionForm
    fields = ("kind", "number", "text", "is_active")
    in_use_model, in_use_field = EligibilityAnswer, "criterion"


class ConsentDocumentInline(StudyBuildInline):
    model = ConsentDocument
    form = ConsentDocumentForm
    fields = ("version", "effective_date", "title")
    in_use_model, in_use_field = Consent, "document"


@admin.register(Site)
class SiteAdmin(ScopedListFiltersMixin, AuditedAdminMixin, admin.ModelAdmin):
    """A site may serve several studies, and its time zone decides day 0 in all of them: a data
    manager sees the sites of their studies (and new sites not yet in any study) and changes a site
    only if they manage every study it takes part in."""

    form = SiteAdminForm
    list_display = ("code", "name", "country", "timezone")
    list_filter = ("country", "studies")
    search_fields = ("code", "name")

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        managed = studies_managed_by(request.user)
        return queryset.filter(Q(studies__in=managed) | Q(studies__isnull=True)).distinct()

    def has_change_permission(self, request, obj=None) -> bool:
        if not super().has_change_permission(request, obj):
            return False
        if obj is None or request.user.is_superuser:
            return True
        return not obj.studies.exclude(pk__in=studies_managed_by(request.user)).exists()


@admin.register(Study)
class StudyAdmin(StudyScopedAdminMixin, AuditedAdminMixin, admin.ModelAdmin):
    study_path = "pk"
    form = StudyAdminForm
    list_display = ("code", "title", "indication", "phase", "is_blinded", "participant_count", "is_locked")
    list_filter = ("indication", "phase", "is_blinded", "is_locked", "sites")
    search_fields = ("code", "title", "product_name")
    filter_horizontal = ("sites",)
    readonly_fields = ("is_locked",)
    fieldsets = (
        (None, {"fields": ("code", "title", "indication", "phase", "product_name", "is_blinded", "is_locked")}),
        ("Safety and follow-up", {"fields": ("follow_up_days", "dlt_window_days", "dose_tolerance_pct")}),
        ("Eligibility by age", {"fields": ("min_age_years", "max_age_years")}),
        ("Product release criteria", {"fields": ("release_min_viability_pct", "release_max_endotoxin_eu_per_kg")}),
        ("Sites", {"fields": ("sites",)}),
    )
    inlines = (DoseCohortInline, VisitDefinitionInline, EligibilityCriterionInline, ConsentDocumentInline)

    def has_add_permission(self, request) -> bool:
        # A new study gets its data managers from a superuser: nobody grants themselves a study.
        return request.user.is_superuser and super().has_add_permission(request)

    def get_queryset(self, request):
        qs = super().get_queryset(request).annotate(_participant_count=Count("participants"))
        return _annotate_in_use(qs, Participant, "study")

    @admin.display(description="participants", ordering="_participant_count")
    def participant_count(self, obj) -> int:
        return obj._participant_count


@admin.register(DoseCohort)
class DoseCohortAdmin(StudyScopedAdminMixin, AuditedAdminMixin, admin.ModelAdmin):
    form = DoseCohortAdminForm
    list_display = (
        "__str__",
        "study",
        "number",
        "planned_cells_per_kg",
        "planned_total_cells",
        "route",
        "sentinel_interval_days",
        "capacity",
        "is_open",
    )
    list_filter = ("study", "study__indication", "route", "is_open")
    list_select_related = ("study",)
    search_fields = ("label", "study__code", "study__title")

    def get_queryset(self, request):
        return _annotate_in_use(super().get_queryset(request), Participant, "cohort")


@admin.register(VisitDefinition)
class VisitDefinitionAdmin(StudyScopedAdminMixin, AuditedAdminMixin, admin.ModelAdmin):
    form = VisitDefinitionAdminForm
    list_display = ("name", "study", "code", "target_day", "window_before", "window_after", "forms_due")
    list_filter = ("study", "study__indication")
    list_select_related = ("study",)
    search_fields = ("code", "name", "study__code")

    def get_queryset(self, request):
        return _annotate_in_use(super().get_queryset(request), Visit, "definition")


@admin.register(EligibilityCriterion)
class EligibilityCriterionAdmin(StudyScopedAdminMixin, AuditedAdminMixin, admin.ModelAdmin):
    form = EligibilityCriterionAdminForm
    list_display = ("__str__", "study", "kind", "number", "is_active")
    list_filter = ("study", "study__indication", "kind", "is_active")
    list_select_related = ("study",)
    search_fields = ("text", "study__code")

    def get_queryset(self, request):
        return _annotate_in_use(super().get_queryset(request), EligibilityAnswer, "criterion")


@admin.register(ConsentDocument)
class ConsentDocumentAdmin(StudyScopedAdminMixin, AuditedAdminMixin, admin.ModelAdmin):
    form = ConsentDocumentAdminForm
    list_display = ("__str__", "study", "version", "effective_date", "title")
    list_filter = ("study", "study__indication")
    list_select_related = ("study",)
    search_fields = ("version", "title", "study__code")
    date_hierarchy = "effective_date"

    def get_queryset(self, request):
        return _annotate_in_use(super().get_queryset(request), Consent, "document")


# ---------------------------------------------------------------------------------------------
# The casebook, read-only
# ---------------------------------------------------------------------------------------------


class VoidedFilter(admin.SimpleListFilter):
    title = "voided"
    parameter_name = "voided"

    def lookups(self, request, model_admin):
        return (("no", "Current records"), ("yes", "Voided records"))

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(voided_at__isnull=self.value() == "no")
        return queryset


class ReadOnlyAdmin(CasebookScopedAdminMixin, admin.ModelAdmin):
    """View-only: clinical data are written by ``trials.services`` (coordinator forms, API, tasks).
    Each user reads the participants they may read in the pages.

    The bookkeeping fields (version, voiding) are not editable on the model, so they are listed
    here to be shown: a voided record stays visible to data managers and auditors.
    """

    bookkeeping_fields = ("version", "created_at", "updated_at", "voided_at", "voided_by", "void_reason")

    def get_readonly_fields(self, request, obj=None):
        own = [f.name for f in self.model._meta.concrete_fields]
        return [*super().get_readonly_fields(request, obj), *(f for f in self.bookkeeping_fields if f in own)]

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        if any(f.name == "voided_at" for f in self.model._meta.concrete_fields):
            filters.append(VoidedFilter)
        return filters

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ConsentReadOnlyInline(ReadOnlyInline):
    model = Consent
    fields = ("document", "consent_date")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("document")


class VisitReadOnlyInline(ReadOnlyInline):
    model = Visit
    fields = ("definition", "kind", "planned_date", "window_start", "window_end", "actual_date", "missed")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("definition")


@admin.register(Participant)
class ParticipantAdmin(ReadOnlyAdmin):
    list_display = ("subject_code", "study", "site", "status", "screening_date", "enrolment_date", "is_locked")
    list_filter = ("study", "study__indication", "site", "status", "is_locked")
    list_select_related = ("study", "site")
    search_fields = ("subject_code",)
    date_hierarchy = "screening_date"
    inlines = (ConsentReadOnlyInline, VisitReadOnlyInline)


@admin.register(Consent)
class ConsentAdmin(ReadOnlyAdmin):
    list_display = ("participant", "document", "consent_date")
    list_filter = ("participant__study", "participant__site")
    list_select_related = ("participant", "document")
    search_fields = ("participant__subject_code",)


@admin.register(EligibilityAnswer)
class EligibilityAnswerAdmin(ReadOnlyAdmin):
    list_display = ("participant", "criterion", "answer")
    list_filter = ("participant__study", "participant__site", "criterion__kind")
    list_select_related = ("participant", "criterion")
    search_fields = ("participant__subject_code", "criterion__text")


@admin.register(Infusion)
class InfusionAdmin(ReadOnlyAdmin):
    list_display = ("participant", "number", "cohort", "infusion_date", "dose_cells_per_kg", "total_viable_cells")
    list_filter = ("participant__study", "participant__site", "interrupted")
    list_select_related = ("participant", "cohort__study")
    search_fields = ("participant__subject_code", "manufacturing_lot")


@admin.register(Visit)
class VisitAdmin(ReadOnlyAdmin):
    list_display = ("participant", "label", "kind", "planned_date", "actual_date", "missed")
    list_filter = ("participant__study", "participant__site", "kind", "missed")
    list_select_related = ("participant", "definition")
    search_fields = ("participant__subject_code", "definition__name")


@admin.register(DiseaseAssessment)
class DiseaseAssessmentAdmin(ReadOnlyAdmin):
    list_display = ("visit", "assessment_date")
    list_filter = ("visit__participant__study", "visit__participant__site")
    list_select_related = ("visit__participant", "visit__definition")
    search_fields = ("visit__participant__subject_code",)


@admin.register(MRIRead)
class MRIReadAdmin(ReadOnlyAdmin):
    list_display = ("visit", "scan_date", "new_or_enlarging_t2", "gd_enhancing", "reader")
    list_filter = ("visit__participant__study", "visit__participant__site")
    list_select_related = ("visit__participant", "visit__definition")
    search_fields = ("visit__participant__subject_code", "reader")


@admin.register(MMTTSample)
class MMTTSampleAdmin(ReadOnlyAdmin):
    list_display = ("visit", "minute", "c_peptide", "unit")
    list_filter = ("visit__participant__study", "visit__participant__site", "unit")
    list_select_related = ("visit__participant", "visit__definition")
    search_fields = ("visit__participant__subject_code",)


@admin.register(Relapse)
class RelapseAdmin(ReadOnlyAdmin):
    list_display = ("participant", "onset_date", "steroid_treated", "confirmed_by_examination")
    list_filter = ("participant__study", "participant__site", "steroid_treated", "confirmed_by_examination")
    list_select_related = ("participant",)
    search_fields = ("participant__subject_code",)


@admin.register(RescueTherapy)
class RescueTherapyAdmin(ReadOnlyAdmin):
    list_display = ("participant", "start_date", "stop_date", "category", "agent")
    list_filter = ("participant__study", "participant__site", "category")
    list_select_related = ("participant",)
    search_fields = ("participant__subject_code", "agent")


@admin.register(InsulinDoseChange)
class InsulinDoseChangeAdmin(ReadOnlyAdmin):
    list_display = ("participant", "effective_date", "total_daily_units", "source")
    list_filter = ("participant__study", "participant__site", "source")
    list_select_related = ("participant",)
    search_fields = ("participant__subject_code",)


@admin.register(ProtocolDeviation)
class ProtocolDeviationAdmin(ReadOnlyAdmin):
    list_display = ("participant", "category", "detected_on", "system_detected")
    list_filter = ("participant__study", "participant__site", "category", "system_detected")
    list_select_related = ("participant",)
    search_fields = ("participant__subject_code", "description")


@admin.register(Disposition)
class DispositionAdmin(ReadOnlyAdmin):
    list_display = ("participant", "kind", "disposition_date", "death_date")
    list_filter = ("participant__study", "participant__site", "kind")
    list_select_related = ("participant",)
    search_fields = ("participant__subject_code", "reason")


# Accounts, roles, lockouts and access logs; imported last so that they register after these.
from trials import access_admin  # noqa: E402, F401
