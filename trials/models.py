"""The study and its participants: study build, consent, eligibility, enrolment, infusion, visits,
disease-activity assessments and disposition.

Clinical dates (consent, visit, onset) are ``DateField``; system events are UTC timestamps. Day 0 is
the infusion day (docs/domain.md §1.6): ``protocol_day = date - infusion date``. Invariants that the
database can hold are declared as constraints here as well as enforced in ``services.py``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from trials.audit import audited


class Indication(models.TextChoices):
    MS = "MS", "Multiple sclerosis"
    T1D = "T1D", "Type 1 diabetes"
    RA = "RA", "Rheumatoid arthritis"


class Role(models.TextChoices):
    COORDINATOR = "coordinator", "Site coordinator"
    INVESTIGATOR = "investigator", "Investigator"
    MONITOR = "monitor", "Monitor (CRA)"
    MEDICAL_MONITOR = "medical_monitor", "Medical monitor"
    DATA_MANAGER = "data_manager", "Data manager"
    STATISTICIAN = "statistician", "Statistician"
    SPONSOR_ADMIN = "sponsor_admin", "Sponsor admin"


# Roles that work only at the sites they are assigned to; the others see every site of the study.
SITE_BOUND_ROLES = frozenset({Role.COORDINATOR, Role.INVESTIGATOR, Role.MONITOR})
# Roles that may enter and edit casebook data.
DATA_ENTRY_ROLES = frozenset({Role.COORDINATOR, Role.INVESTIGATOR})


class FormCode(models.TextChoices):
    """Forms a visit of the schedule can ask for."""

    VITALS = "vitals", "Vital signs and weight"
    DISEASE_ACTIVITY = "disease_activity", "Disease activity"
    MRI = "mri", "MRI read (MS)"
    MMTT = "mmtt", "Mixed-meal tolerance test (T1D)"
    LABS = "labs", "Safety laboratory"
    AE_REVIEW = "ae_review", "Adverse event review"


class VersionedModel(models.Model):
    """Base of clinical records: the ``version`` a form was loaded with guards against lost updates,
    and voiding instead of deletion (a voided record stays visible to data managers and auditors and
    drops out of analyses and exports)."""

    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    voided_at = models.DateTimeField(null=True, blank=True, editable=False)
    voided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, editable=False, related_name="+"
    )
    void_reason = models.TextField(blank=True, editable=False)

    class Meta:
        abstract = True


# ---------------------------------------------------------------------------------------------
# Study build (data manager, in the admin)
# ---------------------------------------------------------------------------------------------


def validate_timezone(value: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. Europe/London).") from None


@audited
class Site(models.Model):
    code = models.CharField(max_length=8, unique=True, help_text="Short site code, e.g. S01.")
    name = models.CharField(max_length=200)
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2")
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="IANA time zone of the site, e.g. Europe/Warsaw: day 0 is the infusion's local date there.",
    )

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


@audited
class Study(models.Model):
    class Phase(models.TextChoices):
        PHASE1 = "1", "Phase 1"
        PHASE1_2 = "1/2", "Phase 1/2"
        PHASE2 = "2", "Phase 2"

    code = models.SlugField(max_length=32, unique=True)
    title = models.CharField(max_length=300)
    indication = models.CharField(max_length=3, choices=Indication.choices)
    phase = models.CharField(max_length=3, choices=Phase.choices, default=Phase.PHASE1)
    product_name = models.CharField(max_length=100, default="Autologous polyclonal Treg")
    follow_up_days = models.PositiveIntegerField(default=730)
    dlt_window_days = models.PositiveIntegerField(default=28)
    dose_tolerance_pct = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("20"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
        help_text="An infused dose further than this from the cohort's planned dose is a protocol deviation.",
    )
    sites = models.ManyToManyField(Site, related_name="studies", blank=True)
    is_blinded = models.BooleanField(
        default=False,
        help_text="Randomized within cohorts (e.g. Treg vs placebo); the arm is hidden from blinded roles.",
    )
    # Eligibility by age at screening, from the year of birth (docs/domain.md §4: adult and paediatric
    # Treg trials exist, so the bounds belong to the protocol, not to the code). These and the release
    # criteria may be emptied (no bound); existing studies take the constant default when the column
    # is added, which PostgreSQL does without updating (or auditing) a row.
    min_age_years = models.PositiveSmallIntegerField(
        default=18,
        null=True,
        blank=True,
        validators=[MaxValueValidator(120)],
        help_text="Youngest age at screening the protocol allows (checked against the year of birth); empty: none.",
    )
    max_age_years = models.PositiveSmallIntegerField(
        default=100,
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(120)],
        help_text="Oldest age at screening the protocol allows (checked against the year of birth); empty: none.",
    )
    # Product release criteria (docs/domain.md §1.5: whether the product met its release specification).
    # An infusion outside them needs the coordinator's confirmation and becomes a protocol deviation.
    release_min_viability_pct = models.DecimalField(
        max_digits=4,
        null=True,
        blank=True,
        decimal_places=1,
        default=Decimal("70"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
        help_text="Minimum viability (%) of the product at release; empty if the protocol sets none.",
    )
    release_max_endotoxin_eu_per_kg = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Maximum endotoxin (EU/kg) at release; leave empty if the protocol sets none.",
    )
    is_locked = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["code"]
        verbose_name_plural = "studies"
        constraints = [
            models.CheckConstraint(condition=Q(follow_up_days__gt=0), name="study_follow_up_positive"),
            models.CheckConstraint(condition=Q(min_age_years__lte=models.F("max_age_years")), name="study_age_range"),
        ]

    def __str__(self) -> str:
        return self.code

    def clean(self) -> None:
        low, high = self.min_age_years, self.max_age_years
        if low is not None and high is not None and low > high:
            raise ValidationError({"max_age_years": "The oldest age cannot be below the youngest."})


@audited
class DoseCohort(models.Model):
    class Route(models.TextChoices):
        IV = "IV", "Intravenous"
        IT = "IT", "Intrathecal"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="cohorts")
    number = models.PositiveSmallIntegerField(help_text="Escalation order: cohorts fill in this order.")
    label = models.CharField(max_length=50)
    planned_cells_per_kg = models.DecimalField(
        max_digits=14, decimal_places=0, null=True, blank=True, help_text="Planned dose, cells/kg"
    )
    planned_total_cells = models.DecimalField(
        max_digits=14, decimal_places=0, null=True, blank=True, help_text="Planned dose, total cells"
    )
    route = models.CharField(max_length=2, choices=Route.choices, default=Route.IV)
    infusions_planned = models.PositiveSmallIntegerField(default=1)
    sentinel_interval_days = models.PositiveSmallIntegerField(
        default=0, help_text="Days the first participant is followed before the next may be infused."
    )
    capacity = models.PositiveSmallIntegerField(default=3)
    is_open = models.BooleanField(default=True)

    class Meta:
        ordering = ["study", "number"]
        constraints = [
            models.UniqueConstraint(fields=["study", "number"], name="cohort_number_unique"),
            models.CheckConstraint(
                condition=Q(planned_cells_per_kg__isnull=False) | Q(planned_total_cells__isnull=False),
                name="cohort_has_planned_dose",
            ),
            models.CheckConstraint(condition=Q(capacity__gt=0), name="cohort_capacity_positive"),
            models.CheckConstraint(
                condition=(Q(planned_cells_per_kg__isnull=True) | Q(planned_cells_per_kg__gte=0))
                & (Q(planned_total_cells__isnull=True) | Q(planned_total_cells__gte=0)),
                name="cohort_planned_dose_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.study.code} cohort {self.number} ({self.label})"

    def clean(self) -> None:
        """A cohort plans a dose per kg or in total cells; 0 is a placebo (or sham) cohort."""
        per_kg, total = self.planned_cells_per_kg, self.planned_total_cells
        errors = {}
        if per_kg is None and total is None:
            errors["planned_cells_per_kg"] = "Give the planned dose per kg or in total cells (0 for a placebo cohort)."
        for name, value in (("planned_cells_per_kg", per_kg), ("planned_total_cells", total)):
            if value is not None and value < 0:
                errors[name] = "A planned dose cannot be negative (0 is a placebo cohort)."
        if per_kg is not None and total is not None and per_kg >= 0 and total >= 0 and (per_kg == 0) != (total == 0):
            errors["planned_total_cells"] = (
                "One planned dose is 0 (placebo) and the other is not; give one, or 0 for both."
            )
        if errors:
            raise ValidationError(errors)

    @property
    def planned_dose(self) -> tuple[Decimal, str]:
        """The dose the cohort plans and its unit: per kg when planned so, else total cells."""
        if self.planned_cells_per_kg is not None:
            return self.planned_cells_per_kg, "cells/kg"
        return self.planned_total_cells, "cells"

    @property
    def is_placebo(self) -> bool:
        """A cohort planned at 0 cells: placebo or sham, with no dose to deviate from."""
        planned, _ = self.planned_dose
        return planned is not None and planned == 0

    @property
    def dose_label(self) -> str:
        """How pages name the planned dose: "Placebo (0 cells)" or "5,000,000 cells/kg"."""
        planned, unit = self.planned_dose
        if planned is None:
            return "—"
        if planned == 0:
            return "Placebo (0 cells)"
        return f"{planned:,} {unit}"

    @staticmethod
    def placebo_q(prefix: str = "") -> Q:
        """``Q`` matching placebo cohorts, for querysets that group or filter by them; ``prefix`` is the
        path to the cohort, e.g. ``"cohort__"`` from a participant or an infusion."""
        return Q(**{f"{prefix}planned_cells_per_kg": 0}) | Q(
            **{f"{prefix}planned_cells_per_kg__isnull": True, f"{prefix}planned_total_cells": 0}
        )


@audited
class VisitDefinition(models.Model):
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="schedule")
    code = models.SlugField(max_length=20)
    name = models.CharField(max_length=100)
    target_day = models.IntegerField(help_text="Protocol day relative to the infusion (infusion = day 0).")
    window_before = models.PositiveSmallIntegerField(default=0)
    window_after = models.PositiveSmallIntegerField(default=0)
    forms_due = ArrayField(models.CharField(max_length=20, choices=FormCode.choices), default=list, blank=True)

    class Meta:
        ordering = ["study", "target_day"]
        constraints = [
            models.UniqueConstraint(fields=["study", "code"], name="visit_definition_code_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (day {self.target_day})"


@audited
class EligibilityCriterion(models.Model):
    class Kind(models.TextChoices):
        INCLUSION = "inclusion", "Inclusion"
        EXCLUSION = "exclusion", "Exclusion"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="criteria")
    kind = models.CharField(max_length=9, choices=Kind.choices)
    number = models.PositiveSmallIntegerField()
    text = models.TextField()
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["study", "kind", "number"]
        verbose_name_plural = "eligibility criteria"
        constraints = [
            models.UniqueConstraint(fields=["study", "kind", "number"], name="criterion_number_unique"),
        ]

    def __str__(self) -> str:
        return f"{'I' if self.kind == self.Kind.INCLUSION else 'E'}{self.number}: {self.text[:60]}"

    def is_met_by(self, answer: bool) -> bool:
        """An inclusion criterion is met when answered yes, an exclusion criterion when answered no."""
        return answer if self.kind == self.Kind.INCLUSION else not answer


@audited
class ConsentDocument(models.Model):
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="consent_documents")
    version = models.CharField(max_length=20)
    effective_date = models.DateField()
    title = models.CharField(max_length=200, default="Participant information and consent form")

    class Meta:
        ordering = ["study", "effective_date"]
        constraints = [
            models.UniqueConstraint(fields=["study", "version"], name="consent_version_unique"),
        ]

    def __str__(self) -> str:
        return f"v{self.version} ({self.effective_date:%Y-%m-%d})"


@audited
class StudyMembership(models.Model):
    """A user's role in a study, at one site or (site empty) at all sites (docs/reliability.md §3).
    Audited (role changes are access-control events, ICH E6(R3) §4.2.2) and never deleted: a role
    is withdrawn by clearing ``is_active``."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="memberships")
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="memberships")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, null=True, blank=True)
    role = models.CharField(max_length=20, choices=Role.choices)
    unblinded = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True, help_text="Clear to withdraw this role; it is never deleted.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "study", "site"], name="membership_unique", nulls_distinct=False),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.get_role_display()} {self.study} {self.site or 'all sites'}"


# ---------------------------------------------------------------------------------------------
# The casebook
# ---------------------------------------------------------------------------------------------


class ParticipantStatus(models.TextChoices):
    SCREENING = "screening", "Screening"
    SCREEN_FAILED = "screen_failed", "Screen failure"
    ENROLLED = "enrolled", "Enrolled"
    IN_FOLLOW_UP = "in_follow_up", "Infused, in follow-up"
    COMPLETED = "completed", "Completed"
    WITHDRAWN = "withdrawn", "Withdrawn"
    LOST = "lost_to_follow_up", "Lost to follow-up"
    DIED = "died", "Died"


# After these, only safety follow-up may still be recorded.
CLOSED_STATUSES = frozenset(
    {
        ParticipantStatus.SCREEN_FAILED,
        ParticipantStatus.COMPLETED,
        ParticipantStatus.WITHDRAWN,
        ParticipantStatus.LOST,
        ParticipantStatus.DIED,
    }
)


@audited
class Participant(VersionedModel):
    class Sex(models.TextChoices):
        # CDISC SEX codelist
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        UNKNOWN = "U", "Unknown"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="participants")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="participants")
    subject_code = models.CharField(max_length=20)
    sequence = models.PositiveIntegerField(help_text="Per study and site; the number in the subject code.")
    sex = models.CharField(max_length=1, choices=Sex.choices)
    birth_year = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1900), MaxValueValidator(2100)],
        help_text="Year only: never a full date.",
    )
    screening_date = models.DateField()
    status = models.CharField(max_length=20, choices=ParticipantStatus.choices, default=ParticipantStatus.SCREENING)
    screen_failure_reason = models.TextField(blank=True)
    cohort = models.ForeignKey(DoseCohort, on_delete=models.PROTECT, null=True, blank=True, related_name="participants")
    enrolment_date = models.DateField(null=True, blank=True)
    is_locked = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["study", "subject_code"]
        constraints = [
            models.UniqueConstraint(fields=["study", "subject_code"], name="participant_subject_code_unique"),
            models.UniqueConstraint(fields=["study", "site", "sequence"], name="participant_sequence_unique"),
            models.CheckConstraint(
                condition=Q(enrolment_date__isnull=True) | Q(cohort__isnull=False),
                name="participant_enrolled_has_cohort",
            ),
        ]
        indexes = [models.Index(fields=["study", "site", "status"])]

    def __str__(self) -> str:
        return self.subject_code

    @property
    def is_closed(self) -> bool:
        return self.status in CLOSED_STATUSES


@audited
class Consent(VersionedModel):
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="consents")
    document = models.ForeignKey(ConsentDocument, on_delete=models.PROTECT, related_name="consents")
    consent_date = models.DateField()

    class Meta:
        ordering = ["participant", "consent_date"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "document"], name="consent_once_per_document"),
        ]

    def __str__(self) -> str:
        return f"{self.participant} consent {self.document.version} on {self.consent_date}"


@audited
class EligibilityAnswer(VersionedModel):
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="eligibility_answers")
    criterion = models.ForeignKey(EligibilityCriterion, on_delete=models.PROTECT, related_name="answers")
    answer = models.BooleanField(help_text="Yes/no answer to the statement.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["participant", "criterion"], name="eligibility_answer_unique"),
        ]

    @property
    def is_met(self) -> bool:
        return self.criterion.is_met_by(self.answer)


@audited
class Infusion(VersionedModel):
    """One dosing event (SDTM EX) with the product's chain of identity."""

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="infusions")
    number = models.PositiveSmallIntegerField(default=1)
    cohort = models.ForeignKey(DoseCohort, on_delete=models.PROTECT, related_name="infusions")
    # Chain of identity and product release
    apheresis_date = models.DateField()
    manufacturing_lot = models.CharField(max_length=40)
    release_passed = models.BooleanField()
    viability_pct = models.DecimalField(
        max_digits=5,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Empty only for a placebo (no cells to count).",
    )
    total_viable_cells = models.DecimalField(max_digits=14, decimal_places=0)
    endotoxin_eu_per_kg = models.DecimalField(
        max_digits=6, decimal_places=2, null=True, blank=True, help_text="Endotoxin at release (EU/kg), if tested."
    )
    volume_ml = models.DecimalField(max_digits=7, decimal_places=1, null=True, blank=True)
    # Administration
    weight_kg = models.DecimalField(max_digits=5, decimal_places=1)
    dose_cells_per_kg = models.DecimalField(max_digits=14, decimal_places=0, editable=False)
    start_at = models.DateTimeField()
    end_at = models.DateTimeField()
    infusion_date = models.DateField(
        editable=False, help_text="Day 0: the local date of the infusion start at the site."
    )
    interrupted = models.BooleanField(default=False)
    interruption_reason = models.TextField(blank=True)
    premedication = models.TextField(blank=True)

    class Meta:
        ordering = ["participant", "number"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "number"], name="infusion_number_unique"),
            models.CheckConstraint(condition=Q(end_at__gte=models.F("start_at")), name="infusion_end_after_start"),
            models.CheckConstraint(condition=Q(weight_kg__gt=0), name="infusion_weight_positive"),
            models.CheckConstraint(
                condition=Q(interrupted=False) | ~Q(interruption_reason=""),
                name="infusion_interruption_has_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.participant} infusion {self.number} on {self.start_at:%Y-%m-%d}"


@audited
class ProtocolDeviation(VersionedModel):
    class Category(models.TextChoices):
        DOSE = "dose", "Dose outside tolerance"
        RELEASE = "release", "Product outside release criteria"
        VISIT_WINDOW = "visit_window", "Visit outside window"
        ELIGIBILITY = "eligibility", "Eligibility"
        PROCEDURE = "procedure", "Procedure"
        OTHER = "other", "Other"

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="deviations")
    category = models.CharField(max_length=20, choices=Category.choices)
    description = models.TextField()
    detected_on = models.DateField()
    infusion = models.ForeignKey(Infusion, on_delete=models.PROTECT, null=True, blank=True)
    visit = models.ForeignKey("Visit", on_delete=models.PROTECT, null=True, blank=True)
    system_detected = models.BooleanField(default=False)

    class Meta:
        ordering = ["participant", "detected_on"]


class VisitStatus(models.TextChoices):
    DONE = "done", "Done"
    MISSED = "missed", "Missed"
    UPCOMING = "upcoming", "Upcoming"
    DUE = "due", "Due (window open)"
    OVERDUE = "overdue", "Overdue"


@audited
class Visit(VersionedModel):
    class Kind(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        UNSCHEDULED = "unscheduled", "Unscheduled"
        SAFETY = "safety", "Safety follow-up"

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="visits")
    definition = models.ForeignKey(VisitDefinition, on_delete=models.PROTECT, null=True, blank=True)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.SCHEDULED)
    planned_date = models.DateField(null=True, blank=True)
    window_start = models.DateField(null=True, blank=True)
    window_end = models.DateField(null=True, blank=True)
    actual_date = models.DateField(null=True, blank=True)
    missed = models.BooleanField(default=False)
    missed_reason = models.TextField(blank=True)
    reason = models.TextField(blank=True, help_text="Why an unscheduled visit took place.")
    weight_kg = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True)

    class Meta:
        ordering = ["participant", "planned_date", "actual_date"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "definition"],
                condition=Q(definition__isnull=False),
                name="visit_once_per_definition",
            ),
            models.CheckConstraint(
                condition=~(Q(missed=True) & Q(actual_date__isnull=False)), name="visit_missed_has_no_date"
            ),
            models.CheckConstraint(
                condition=Q(kind="scheduled", definition__isnull=False)
                | (~Q(kind="scheduled") & Q(definition__isnull=True)),
                name="visit_scheduled_has_definition",
            ),
        ]

    def __str__(self) -> str:
        label = self.definition.name if self.definition_id else self.get_kind_display()
        return f"{self.participant} {label}"

    @property
    def label(self) -> str:
        return self.definition.name if self.definition_id else f"{self.get_kind_display()} visit"

    def status_on(self, today: dt.date) -> str:
        """Done, missed, or where the visit stands relative to its window on ``today``."""
        if self.actual_date:
            return VisitStatus.DONE
        if self.missed:
            return VisitStatus.MISSED
        if self.window_end and today > self.window_end:
            return VisitStatus.OVERDUE
        if self.window_start and today >= self.window_start:
            return VisitStatus.DUE
        return VisitStatus.UPCOMING

    @property
    def in_window(self) -> bool | None:
        """Whether the visit took place inside its window; None if not done or not scheduled."""
        if not self.actual_date or not self.window_start or not self.window_end:
            return None
        return self.window_start <= self.actual_date <= self.window_end


# ---------------------------------------------------------------------------------------------
# Disease-activity assessments (docs/domain.md §5), raw values with their units
# ---------------------------------------------------------------------------------------------


@audited
class DiseaseAssessment(VersionedModel):
    """One disease-activity assessment at a visit. Which fields apply depends on the indication;
    values are stored raw with their unit and converted only when a score is derived."""

    class HbA1cUnit(models.TextChoices):
        PERCENT = "%", "% (DCCT/NGSP)"
        MMOL_MOL = "mmol/mol", "mmol/mol (IFCC)"

    class CRPUnit(models.TextChoices):
        MG_L = "mg/L", "mg/L"
        MG_DL = "mg/dL", "mg/dL"

    visit = models.OneToOneField(Visit, on_delete=models.PROTECT, related_name="assessment")
    assessment_date = models.DateField()
    # Multiple sclerosis
    edss = models.DecimalField(max_digits=3, decimal_places=1, null=True, blank=True)
    # Type 1 diabetes
    hba1c = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True)
    hba1c_unit = models.CharField(max_length=8, choices=HbA1cUnit.choices, blank=True)
    insulin_u_per_kg_day = models.DecimalField(max_digits=4, decimal_places=2, null=True, blank=True)
    # Rheumatoid arthritis
    tender_joints_28 = models.PositiveSmallIntegerField(null=True, blank=True)
    swollen_joints_28 = models.PositiveSmallIntegerField(null=True, blank=True)
    crp = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True)
    crp_unit = models.CharField(max_length=5, choices=CRPUnit.choices, blank=True)
    esr_mm_h = models.PositiveSmallIntegerField(null=True, blank=True)
    patient_global_mm = models.PositiveSmallIntegerField(null=True, blank=True, help_text="0-100 mm VAS")
    evaluator_global_mm = models.PositiveSmallIntegerField(null=True, blank=True, help_text="0-100 mm VAS")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(hba1c__isnull=True) | ~Q(hba1c_unit=""), name="assessment_hba1c_has_unit"
            ),
            models.CheckConstraint(condition=Q(crp__isnull=True) | ~Q(crp_unit=""), name="assessment_crp_has_unit"),
        ]


@audited
class MRIRead(VersionedModel):
    visit = models.OneToOneField(Visit, on_delete=models.PROTECT, related_name="mri")
    scan_date = models.DateField()
    new_or_enlarging_t2 = models.PositiveSmallIntegerField()
    gd_enhancing = models.PositiveSmallIntegerField()
    reader = models.CharField(max_length=100, blank=True)


@audited
class MMTTSample(VersionedModel):
    class Unit(models.TextChoices):
        NMOL_L = "nmol/L", "nmol/L"
        PMOL_L = "pmol/L", "pmol/L"
        NG_ML = "ng/mL", "ng/mL"

    visit = models.ForeignKey(Visit, on_delete=models.PROTECT, related_name="mmtt_samples")
    minute = models.SmallIntegerField()
    c_peptide = models.DecimalField(max_digits=7, decimal_places=3)
    unit = models.CharField(max_length=6, choices=Unit.choices)

    class Meta:
        ordering = ["visit", "minute"]
        constraints = [models.UniqueConstraint(fields=["visit", "minute"], name="mmtt_sample_once_per_minute")]


@audited
class Relapse(VersionedModel):
    """A protocol-defined MS relapse (docs/domain.md §5.1), recorded when it happens, not per visit."""

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="relapses")
    onset_date = models.DateField()
    steroid_treated = models.BooleanField(default=False)
    confirmed_by_examination = models.BooleanField(default=False)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["participant", "onset_date"]


@audited
class RescueTherapy(VersionedModel):
    """A rescue or new disease-modifying therapy started after the infusion: an intercurrent event
    for remission durability (ICH E9(R1); docs/domain.md Part B §2), whatever the indication."""

    class Category(models.TextChoices):
        CORTICOSTEROID = "corticosteroid", "Systemic corticosteroid"
        DMT = "dmt", "New disease-modifying therapy"
        CSDMARD = "csdmard", "Conventional synthetic DMARD"
        BIOLOGIC = "biologic", "Biologic / targeted synthetic DMARD"
        INSULIN_INTENSIFICATION = "insulin_intensification", "Insulin intensification"
        OTHER = "other", "Other"

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="rescue_therapies")
    start_date = models.DateField()
    stop_date = models.DateField(null=True, blank=True, help_text="Empty while the therapy continues.")
    category = models.CharField(max_length=30, choices=Category.choices)
    agent = models.CharField(max_length=200, help_text="The drug, e.g. methylprednisolone.")
    reason = models.TextField()

    class Meta:
        ordering = ["participant", "start_date"]
        verbose_name_plural = "rescue therapies"
        constraints = [
            models.CheckConstraint(
                condition=Q(stop_date__isnull=True) | Q(stop_date__gte=models.F("start_date")),
                name="rescue_therapy_stop_after_start",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.participant} {self.agent} from {self.start_date:%Y-%m-%d}"


@audited
class InsulinDoseChange(VersionedModel):
    """One dated change of a T1D participant's total daily exogenous insulin (docs/domain.md §5.2): the
    log is a step function, each dose holding from its ``effective_date`` until the next change.
    A dose of 0 means insulin was stopped."""

    class Source(models.TextChoices):
        DIARY = "diary", "Patient diary"
        CLINIC = "clinic", "Clinic record"

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="insulin_dose_changes")
    effective_date = models.DateField()
    total_daily_units = models.DecimalField(
        max_digits=6, decimal_places=1, help_text="Total daily insulin (U/day) from this date; 0 = insulin stopped."
    )
    source = models.CharField(max_length=6, choices=Source.choices)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["participant", "effective_date"]
        constraints = [
            # Voided entries stay (void, never delete), so a corrected entry may reuse their date.
            models.UniqueConstraint(
                fields=["participant", "effective_date"],
                condition=Q(voided_at__isnull=True),
                name="insulin_dose_change_once_per_date",
            ),
            models.CheckConstraint(
                condition=Q(total_daily_units__gte=0) & Q(total_daily_units__lte=300),
                name="insulin_dose_change_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.participant} {self.total_daily_units} U/day from {self.effective_date:%Y-%m-%d}"


# ---------------------------------------------------------------------------------------------
# Disposition (SDTM DS)
# ---------------------------------------------------------------------------------------------


@audited
class Disposition(VersionedModel):
    class Kind(models.TextChoices):
        COMPLETED = "completed", "Completed"
        WITHDRAWN = "withdrawn", "Withdrawn"
        LOST = "lost_to_follow_up", "Lost to follow-up"
        DEATH = "death", "Death"

    participant = models.OneToOneField(Participant, on_delete=models.PROTECT, related_name="disposition")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    disposition_date = models.DateField()
    reason = models.TextField(blank=True)
    death_date = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="death", death_date__isnull=False) | (~Q(kind="death") & Q(death_date__isnull=True)),
                name="disposition_death_has_date",
            ),
        ]


class AuditSeal(models.Model):
    """One link of the tamper-evident hash chain over every audit event (written by a database
    trigger, see ``trials/dbroles.py``; read by ``manage.py verify_audit``)."""

    seq = models.BigIntegerField(unique=True)
    event_table = models.CharField(max_length=100)
    event_id = models.BigIntegerField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    sealed_at = models.DateTimeField()

    class Meta:
        ordering = ["seq"]
        constraints = [
            models.UniqueConstraint(fields=["event_table", "event_id"], name="audit_seal_once_per_event"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event_table}:{self.event_id}"


class AccessEvent(models.Model):
    """Sign-ins, sign-outs and failed attempts (ICH E6(R3) §4.2.2: log access). Append-only: the
    app role may insert but not change or delete these rows (trials/dbroles.py)."""

    class Kind(models.TextChoices):
        LOGIN = "login", "Signed in"
        LOGOUT = "logout", "Signed out"
        LOGIN_FAILED = "login_failed", "Failed sign-in"
        SIGNATURE_FAILED = "signature_failed", "Failed e-signature (wrong password)"

    at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    username = models.CharField(max_length=150)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["username", "at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.username}"


class Signature(models.Model):
    """An investigator's e-signature on a record (21 CFR 11.50/11.70). Append-only. It is valid while
    the record's ``version`` equals the one signed: any later change invalidates it, visibly."""

    class Meaning(models.TextChoices):
        CASEBOOK = "casebook", "I confirm this casebook is complete and accurate"
        CAUSALITY = "causality", "I confirm the causality assessment"
        REVIEW = "review", "I have reviewed this record"

    content_type = models.ForeignKey("contenttypes.ContentType", on_delete=models.PROTECT)
    object_id = models.BigIntegerField()
    record_version = models.PositiveIntegerField()
    content_digest = models.CharField(
        max_length=64,
        blank=True,
        help_text="SHA-256 of the signed clinical content; empty on signatures made before it was kept.",
    )
    meaning = models.CharField(max_length=20, choices=Meaning.choices)
    signer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="signatures")
    signer_name = models.CharField(max_length=300, help_text="Printed name at the time of signing.")
    signed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-signed_at"]
        indexes = [models.Index(fields=["content_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.signer_name} {self.get_meaning_display()} {self.signed_at:%Y-%m-%d %H:%M} UTC"


@audited
class RandomizationSlot(models.Model):
    """One entry of a blinded study's allocation list (per cohort, in sequence). Stored apart from the
    participant and reachable only through the unblinded selectors (docs/reliability.md §3, blinding)."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="randomization_slots")
    cohort = models.ForeignKey(DoseCohort, on_delete=models.PROTECT, related_name="randomization_slots")
    sequence = models.PositiveIntegerField()
    arm = models.CharField(max_length=40, help_text="e.g. TREG or PLACEBO")
    participant = models.OneToOneField(
        Participant, on_delete=models.PROTECT, null=True, blank=True, related_name="allocation"
    )
    allocated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["study", "cohort", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["cohort", "sequence"], name="randomization_slot_sequence_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.cohort} slot {self.sequence}"


@audited
class EmergencyUnblinding(models.Model):
    """An investigator learned one participant's arm for a medical emergency (ICH E6(R3) §4.1.4)."""

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="unblindings")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.participant} unblinded by {self.user} at {self.at:%Y-%m-%d %H:%M}"


# Kept in its own module (accounts, not casebook); imported here so Django registers it.
from trials.account_events import AccountEvent  # noqa: E402, F401


class IdempotencyRecord(models.Model):
    """What a create did the first time its idempotency key was used (docs/reliability.md #38).

    One row per (user, endpoint, key): a repeat of the request (a double-click, a client retry after
    a timeout) gets the first answer back instead of creating a second record. A row without
    ``completed_at`` is a claim: its request is running, or died before it finished. Not clinical
    data and not audited; it only points at what the first request created.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    endpoint = models.CharField(
        max_length=200, help_text="The operation and its URL object, e.g. api:participant-enrol:12"
    )
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the request body the key was first used with.")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    result_type = models.CharField(max_length=100, blank=True, help_text="app_label.model of the record it made")
    result_id = models.BigIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "endpoint", "key"], name="idempotency_key_once_per_user_endpoint"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} key {self.key[:12]} by user {self.user_id}"
