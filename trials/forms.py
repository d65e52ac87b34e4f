"""Forms of the coordinators' pages. They check shape only (types, formats, choices); every rule
about what may be recorded lives in ``trials/services.py`` and reaches the form through
``form.add_error(None, exc)`` in the view. So most fields are optional here even where the service
will insist on them: the service's message, not a generic "This field is required.", is the one
the coordinator should see.
"""

from __future__ import annotations

import zoneinfo
from decimal import Decimal

from django import forms
from django.utils import timezone

from trials.idempotency import IdempotencyTokenMixin
from trials.models import (
    DiseaseAssessment,
    Disposition,
    InsulinDoseChange,
    MMTTSample,
    Participant,
    ParticipantStatus,
    RescueTherapy,
    Visit,
)
from trials.services import REQUIRED_FIELDS
from trials.text import CODE_MAX, NAME_MAX, REASON_MAX, FreeTextField, IdentifierField, PlainDecimalField

# The time points the coordinators' MMTT form offers (a subset of services.MMTT_MINUTES).
MMTT_FORM_MINUTES = (-10, 0, 15, 30, 60, 90, 120)


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self, attrs=None):
        super().__init__(attrs, format="%Y-%m-%d")


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, attrs=None):
        super().__init__(attrs, format="%Y-%m-%dT%H:%M")


def _date(label: str, *, required: bool = True, help_text: str = "") -> forms.DateField:
    return forms.DateField(label=label, required=required, widget=DateInput, help_text=help_text)


def _text(
    label: str, *, required: bool = False, help_text: str = "", rows: int = 2, max_length: int = REASON_MAX
) -> forms.CharField:
    """Free text: bounded, NFC-normalised, control and bidi-override characters refused."""
    return FreeTextField(label=label, required=required, help_text=help_text, rows=rows, max_length=max_length)


def _decimal(
    label: str, max_digits: int, places: int, *, required: bool = True, plain: bool = True, **kwargs
) -> forms.DecimalField:
    """A decimal typed as digits (``72.5``); ``plain=False`` also takes exponent notation (``7e7``)."""
    step = "1" if places == 0 else "0." + "0" * (places - 1) + "1"
    field_class = PlainDecimalField if plain else forms.DecimalField
    return field_class(
        label=label,
        max_digits=max_digits,
        decimal_places=places,
        required=required,
        widget=forms.NumberInput(attrs={"step": step}),
        **kwargs,
    )


class VersionedEditMixin(forms.Form):
    """Edits of a saved record carry a reason for change and the version the form was loaded with."""

    reason = _text("Reason for change", help_text="Required when you change data that was already saved.")
    version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1)

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.editing = editing
        if not editing:
            del self.fields["reason"]


# ---------------------------------------------------------------------------------------------
# Participant list
# ---------------------------------------------------------------------------------------------


class ParticipantFilterForm(forms.Form):
    q = IdentifierField(label="Subject code", required=False, max_length=20)
    site = forms.ChoiceField(label="Site", required=False)
    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "All statuses"), *ParticipantStatus.choices]
    )
    cohort = forms.TypedChoiceField(label="Cohort", required=False, coerce=int, empty_value=None)

    def __init__(self, *args, sites, cohorts, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].choices = [("", "All sites")] + [(s.code, f"{s.code} {s.name}") for s in sites]
        self.fields["cohort"].choices = [("", "All cohorts")] + [(c.number, f"{c.number} ({c.label})") for c in cohorts]
        self.fields["q"].widget.attrs.update({"placeholder": "Subject code or part of it", "type": "search"})

    def filters(self) -> dict:
        """The valid, non-empty filters (an invalid one is ignored rather than failing the page)."""
        self.is_valid()
        return {key: value for key, value in getattr(self, "cleaned_data", {}).items() if value not in ("", None)}


# ---------------------------------------------------------------------------------------------
# Screening, consent, eligibility, enrolment
# ---------------------------------------------------------------------------------------------


class ScreenForm(IdempotencyTokenMixin, forms.Form):
    site = forms.ModelChoiceField(label="Site", queryset=None, empty_label=None)
    sex = forms.ChoiceField(label="Sex", choices=Participant.Sex.choices)
    birth_year = forms.IntegerField(
        label="Year of birth", min_value=1900, max_value=2100, help_text="Year only: never the full date of birth."
    )
    screening_date = _date("Screening date")

    def __init__(self, *args, sites, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = sites


class ConsentForm(IdempotencyTokenMixin, forms.Form):
    document = forms.ModelChoiceField(label="Consent document version", queryset=None, empty_label=None)
    consent_date = _date("Date of consent")

    def __init__(self, *args, documents, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["document"].queryset = documents
        self.fields["document"].label_from_instance = lambda d: f"v{d.version}, effective {d.effective_date:%Y-%m-%d}"


class EligibilityForm(forms.Form):
    """One yes/no question per criterion; unanswered items are simply not sent to the service."""

    YES_NO = [("yes", "Yes"), ("no", "No")]

    reason = _text("Reason for change", help_text="Required if you change an answer that was already saved.")

    def __init__(self, *args, checklist, **kwargs):
        super().__init__(*args, **kwargs)
        self.criteria = {}
        answered = False
        for criterion, answer in checklist:
            name = f"criterion_{criterion.pk}"
            self.criteria[name] = criterion
            self.fields[name] = forms.TypedChoiceField(
                label=f"{criterion.get_kind_display()} {criterion.number}: {criterion.text}",
                choices=self.YES_NO,
                coerce=lambda value: value == "yes",
                required=False,
                empty_value=None,
                widget=forms.RadioSelect,
            )
            if answer is not None:
                answered = True
                self.initial.setdefault(name, "yes" if answer else "no")
        # The reason field moves to the end and only appears once answers exist.
        reason = self.fields.pop("reason")
        if answered:
            self.fields["reason"] = reason

    def answers(self) -> dict[int, bool]:
        return {
            criterion.pk: self.cleaned_data[name]
            for name, criterion in self.criteria.items()
            if self.cleaned_data.get(name) is not None
        }

    def criterion_fields(self):
        return [self[name] for name in self.criteria]


class ScreenFailForm(forms.Form):
    reason = _text("Reason for screen failure", rows=3)


class EnrolForm(forms.Form):
    enrolment_date = _date("Enrolment date")


# ---------------------------------------------------------------------------------------------
# Infusion
# ---------------------------------------------------------------------------------------------


def _time_zone_choices() -> list[tuple[str, str]]:
    zones = sorted(zoneinfo.available_timezones() - {"UTC", "localtime"})
    return [("UTC", "UTC"), *((z, z.replace("_", " ")) for z in zones)]


class InfusionForm(forms.Form):
    # Chain of identity and product release
    manufacturing_lot = IdentifierField(label="Product lot (manufacturing lot)", max_length=CODE_MAX)
    apheresis_date = _date("Apheresis (cell collection) date")
    release_passed = forms.BooleanField(label="Product lot passed release testing", required=False)
    viability_pct = _decimal("Viability (%)", 5, 1, required=False, help_text="Leave empty only for a placebo.")
    endotoxin_eu_per_kg = _decimal("Endotoxin (EU/kg)", 6, 2, required=False, help_text="If tested at release.")
    total_viable_cells = _decimal(
        "Total viable cells infused",
        14,
        0,
        plain=False,
        help_text="Whole cells, e.g. 70000000 (or 7e7); 0 for a placebo.",
    )
    volume_ml = _decimal("Volume infused (mL)", 7, 1, required=False)
    # Administration
    weight_kg = _decimal("Weight used for dosing (kg)", 5, 1)
    time_zone = forms.ChoiceField(label="Time zone of the times below", initial="UTC")
    start_at = forms.DateTimeField(label="Infusion start", widget=DateTimeLocalInput)
    end_at = forms.DateTimeField(label="Infusion end", widget=DateTimeLocalInput)
    interrupted = forms.BooleanField(label="The infusion was interrupted", required=False)
    interruption_reason = _text("Reason for the interruption")
    premedication = _text("Premedication", help_text="Drug, dose and time, one per line.")
    # Shown only when the service asks for it: the product is outside the release criteria.
    confirm_outside_criteria = forms.BooleanField(
        label="I confirm this product was infused although it is outside the release criteria "
        "(it is recorded as a protocol deviation)",
        required=False,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].choices = _time_zone_choices()

    @property
    def asks_confirmation(self) -> bool:
        return bool(self.errors.get("confirm_outside_criteria")) or bool(
            self.is_bound and self.data.get("confirm_outside_criteria")
        )

    def clean_total_viable_cells(self) -> Decimal:
        # "7e7" is a valid number; store it as the plain integer it stands for.
        return self.cleaned_data["total_viable_cells"].quantize(Decimal("1"))

    def clean(self):
        cleaned = super().clean()
        zone_name = cleaned.get("time_zone")
        if zone_name:
            zone = zoneinfo.ZoneInfo(zone_name)
            # The browser sends wall-clock times; read them in the chosen zone, not the server's.
            for name in ("start_at", "end_at"):
                value = cleaned.get(name)
                if value is not None:
                    cleaned[name] = timezone.make_aware(timezone.make_naive(value), zone)
        return cleaned

    def service_kwargs(self) -> dict:
        data = dict(self.cleaned_data)
        for name in ("time_zone", "reason", "version"):
            data.pop(name, None)
        return data


class InfusionCorrectForm(InfusionForm):
    """The infusion form loaded with a recorded infusion, plus a reason for change and its version."""

    reason = _text("Reason for change", required=True, help_text="Why the infusion record is corrected.")
    version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1)

    @staticmethod
    def initial_for(infusion) -> dict:
        zone = infusion.participant.site.timezone
        local = zoneinfo.ZoneInfo(zone)
        names = [name for name in InfusionForm.base_fields if name not in ("time_zone", "confirm_outside_criteria")]
        initial = {name: getattr(infusion, name) for name in names}
        initial.update(
            time_zone=zone,
            start_at=infusion.start_at.astimezone(local).replace(tzinfo=None),
            end_at=infusion.end_at.astimezone(local).replace(tzinfo=None),
            version=infusion.version,
        )
        return initial


# ---------------------------------------------------------------------------------------------
# Visits
# ---------------------------------------------------------------------------------------------


class VisitRecordForm(VersionedEditMixin):
    actual_date = _date("Date of the visit")
    weight_kg = _decimal("Weight (kg)", 5, 1, required=False)

    field_order = ["actual_date", "weight_kg", "reason", "version"]


class VisitMissedForm(forms.Form):
    missed_reason = _text("Why was the visit missed?", rows=2)


class UnscheduledVisitForm(IdempotencyTokenMixin, forms.Form):
    KINDS = [(Visit.Kind.UNSCHEDULED.value, "Unscheduled visit"), (Visit.Kind.SAFETY.value, "Safety follow-up visit")]

    kind = forms.ChoiceField(label="Kind of visit", choices=KINDS, widget=forms.RadioSelect, initial="unscheduled")
    actual_date = _date("Date of the visit")
    reason = _text("Why did this visit take place?")
    weight_kg = _decimal("Weight (kg)", 5, 1, required=False)


# ---------------------------------------------------------------------------------------------
# Disease activity, MRI, MMTT, relapse
# ---------------------------------------------------------------------------------------------


def _assessment_field(name: str) -> forms.Field:
    unit_choices = {
        "hba1c_unit": DiseaseAssessment.HbA1cUnit.choices,
        "crp_unit": DiseaseAssessment.CRPUnit.choices,
    }
    if name in unit_choices:
        label = "HbA1c unit" if name == "hba1c_unit" else "CRP unit"
        return forms.ChoiceField(label=label, required=False, choices=[("", "---------"), *unit_choices[name]])
    decimals = {
        "edss": ("EDSS", 3, 1, "0 to 10, in steps of 0.5."),
        "hba1c": ("HbA1c", 5, 1, ""),
        "insulin_u_per_kg_day": ("Daily insulin dose (U/kg/day)", 4, 2, ""),
        "crp": ("CRP", 6, 2, ""),
    }
    if name in decimals:
        label, digits, places, help_text = decimals[name]
        return _decimal(label, digits, places, required=False, help_text=help_text)
    integers = {
        "tender_joints_28": ("Tender joint count (TJC28)", "Of 28 joints."),
        "swollen_joints_28": ("Swollen joint count (SJC28)", "Of 28 joints."),
        "esr_mm_h": ("ESR (mm/h)", ""),
        "patient_global_mm": ("Patient global assessment (mm)", "0-100 mm visual analogue scale."),
        "evaluator_global_mm": ("Evaluator global assessment (mm)", "0-100 mm visual analogue scale."),
    }
    label, help_text = integers[name]
    # No bounds here: the service checks every range at once and names the unit.
    return forms.IntegerField(label=label, required=False, help_text=help_text)


class AssessmentForm(VersionedEditMixin):
    """The fields of the study's indication (MS: EDSS; T1D: HbA1c, insulin; RA: DAS28/CDAI items)."""

    def __init__(self, *args, indication: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.value_fields = list(REQUIRED_FIELDS[indication])
        for name in self.value_fields:
            self.fields[name] = _assessment_field(name)
        self.order_fields([*self.value_fields, "reason", "version"])

    def values(self) -> dict:
        return {name: self.cleaned_data.get(name) for name in self.value_fields}


class MRIForm(forms.Form):
    scan_date = _date("Scan date")
    new_or_enlarging_t2 = forms.IntegerField(label="New or enlarging T2 lesions")
    gd_enhancing = forms.IntegerField(label="Gadolinium-enhancing lesions")
    reader = IdentifierField(label="Reader", max_length=NAME_MAX, required=False)


class MMTTForm(forms.Form):
    unit = forms.ChoiceField(
        label="C-peptide unit (all samples)", choices=[("", "---------"), *MMTTSample.Unit.choices]
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Field names match the service's error keys (c_peptide_<minute>), so its messages land here.
        for minute in MMTT_FORM_MINUTES:
            self.fields[f"c_peptide_{minute}"] = _decimal(f"{minute} min", 7, 3, required=False)

    def sample_fields(self):
        return [self[f"c_peptide_{minute}"] for minute in MMTT_FORM_MINUTES]

    def samples(self) -> list[tuple[int, Decimal]]:
        return [
            (minute, self.cleaned_data[f"c_peptide_{minute}"])
            for minute in MMTT_FORM_MINUTES
            if self.cleaned_data.get(f"c_peptide_{minute}") is not None
        ]


class RelapseForm(IdempotencyTokenMixin, forms.Form):
    onset_date = _date("Onset date")
    steroid_treated = forms.BooleanField(label="Treated with steroids", required=False)
    confirmed_by_examination = forms.BooleanField(label="Confirmed by neurological examination", required=False)
    notes = _text("Notes", rows=3)


class RescueTherapyForm(IdempotencyTokenMixin, forms.Form):
    category = forms.ChoiceField(label="Category", choices=[("", "---------"), *RescueTherapy.Category.choices])
    agent = IdentifierField(
        label="Agent", max_length=NAME_MAX, required=False, help_text="The drug, e.g. methylprednisolone."
    )
    start_date = _date("Start date")
    stop_date = _date("Stop date", required=False, help_text="Leave empty while the therapy continues.")
    reason = _text("Reason", rows=3, help_text="Why it was started, e.g. relapse with new MRI activity.")


class InsulinDoseForm(IdempotencyTokenMixin, forms.Form):
    effective_date = _date("Effective from")
    total_daily_units = _decimal(
        "Total daily insulin (U/day)", 6, 1, help_text="Basal plus bolus, from this date on; 0 if insulin was stopped."
    )
    source = forms.ChoiceField(label="Source", choices=InsulinDoseChange.Source.choices, widget=forms.RadioSelect)
    note = _text("Note")


# ---------------------------------------------------------------------------------------------
# Disposition
# ---------------------------------------------------------------------------------------------


class DispositionForm(IdempotencyTokenMixin, forms.Form):
    kind = forms.ChoiceField(label="Disposition", choices=Disposition.Kind.choices, widget=forms.RadioSelect)
    disposition_date = _date("Disposition date")
    reason = _text("Reason", help_text="Required for a withdrawal or loss to follow-up.", rows=3)
    death_date = _date("Date of death", required=False, help_text="Only for a death.")


# ---------------------------------------------------------------------------------------------
# Integrity: locks, voiding, e-signatures, emergency unblinding
# ---------------------------------------------------------------------------------------------


class ReasonForm(forms.Form):
    reason = _text("Reason")


class SignatureForm(forms.Form):
    meaning = forms.ChoiceField(label="Meaning of your signature", choices=(), widget=forms.RadioSelect)
    password = forms.CharField(
        label="Your password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="Re-enter your password: it is your signature (21 CFR 11.200).",
    )

    def __init__(self, *args, meanings, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["meaning"].choices = meanings


class UnblindForm(forms.Form):
    reason = _text("Medical reason", rows=3)
    password = forms.CharField(
        label="Your password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
