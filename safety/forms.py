"""Forms of the safety pages. Shape only (types, formats, choices, required fields, text bounds);
every rule lives in the services and reaches the form through the view as field messages. A field
the record cannot be saved without is required here too, so the page marks it and the browser and
the form say so at once, with the service's own wording.
"""

from __future__ import annotations

import zoneinfo

from django import forms
from django.utils import timezone

from safety.models import (
    SERIOUSNESS_CRITERIA,
    ActionTaken,
    AdverseEvent,
    AECategory,
    CRSAssessment,
    CTCAETerm,
    ICANSAssessment,
    Outcome,
)
from safety.problems import TEXT_BOUNDS
from safety.rules_data import get_rules
from trials.idempotency import IdempotencyTokenMixin
from trials.text import FreeTextField, IdentifierField, PlainDecimalField

CRITERIA_LABELS = {
    "death": "Results in death",
    "life_threatening": "Life-threatening (immediate risk of death)",
    "hospitalisation": "Requires or prolongs inpatient hospitalisation",
    "disability": "Persistent or significant disability/incapacity",
    "congenital_anomaly": "Congenital anomaly/birth defect",
    "important_medical_event": "Important medical event",
}
CAUSALITY_TARGETS = (
    ("causality_product", "Related to the cell product"),
    ("causality_leukapheresis", "Related to the leukapheresis"),
    ("causality_procedures", "Related to study procedures"),
)


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, attrs=None):
        super().__init__(attrs, format="%Y-%m-%dT%H:%M")


def _text(label: str, *, required: str = "", help_text: str = "", rows: int = 2, bound: str = "rationale"):
    """Free text bounded like the service bounds it; ``required`` is the message for an empty field."""
    return FreeTextField(
        label=label,
        required=bool(required),
        help_text=help_text,
        rows=rows,
        max_length=TEXT_BOUNDS[bound],
        error_messages={"required": required} if required else None,
    )


def _required(message: str) -> dict[str, str]:
    return {"required": message}


def _flag(label: str, help_text: str = "") -> forms.BooleanField:
    return forms.BooleanField(label=label, required=False, help_text=help_text)


def time_zone_choices() -> list[tuple[str, str]]:
    zones = sorted(zoneinfo.available_timezones() - {"UTC", "localtime"})
    return [("UTC", "UTC"), *((z, z.replace("_", " ")) for z in zones)]


class ZonedTimesMixin(forms.Form):
    """Wall-clock times from the browser, read in the zone the user chose (never the server's)."""

    zoned_fields: tuple[str, ...] = ()
    time_zone = forms.ChoiceField(label="Time zone of the times on this form", initial="UTC")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].choices = time_zone_choices()

    def clean(self):
        cleaned = super().clean()
        zone_name = cleaned.get("time_zone")
        if zone_name:
            zone = zoneinfo.ZoneInfo(zone_name)
            for name in self.zoned_fields:
                value = cleaned.get(name)
                if value is not None:
                    cleaned[name] = timezone.make_aware(timezone.make_naive(value), zone)
        return cleaned


class VersionedEditMixin(forms.Form):
    """Edits of a saved record carry a reason for change and the version the form was loaded with."""

    reason = _text(
        "Reason for change",
        required="A reason for change is required to edit a saved record.",
        help_text="Why is saved data being changed?",
        bound="reason",
    )
    version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1)

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.editing = editing
        if not editing:
            del self.fields["reason"]
            del self.fields["version"]


def causality_choices(rules_version: str) -> list[tuple[str, str]]:
    scale = get_rules("causality", rules_version)["scale"]
    return [("", "Not yet assessed"), *((value, value.capitalize()) for value in scale)]


class CTCAETermChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: CTCAETerm) -> str:
        return f"{obj.term} — {obj.soc}"


class AdverseEventForm(IdempotencyTokenMixin, ZonedTimesMixin, VersionedEditMixin):
    """CDASH AE fields; the grade descriptions of the chosen CTCAE term are shown beside the grade."""

    zoned_fields = ("site_aware_at",)

    category = forms.ChoiceField(
        label="Category",
        choices=[("", "—"), *AECategory.choices],
        initial=AECategory.OTHER,
        error_messages=_required("Choose the category."),
    )
    verbatim_term = IdentifierField(
        label="Adverse event (verbatim, as reported)",
        max_length=TEXT_BOUNDS["verbatim_term"],
        required=True,
        help_text="One diagnosis, sign or symptom.",
        error_messages=_required("Enter the adverse event as reported (the verbatim term)."),
    )
    ctcae_term = CTCAETermChoiceField(
        label="CTCAE term", queryset=CTCAETerm.objects.none(), error_messages=_required("Choose the CTCAE term.")
    )
    grade = forms.TypedChoiceField(
        label="Grade",
        choices=[(g, str(g)) for g in range(1, 6)],
        coerce=int,
        widget=forms.RadioSelect,
        error_messages=_required("Choose the grade."),
    )
    onset = forms.CharField(
        label="Onset date",
        max_length=10,
        help_text="YYYY-MM-DD; YYYY-MM or YYYY if unknown.",
        error_messages=_required("Onset date is required."),
    )
    end = forms.CharField(label="End date", max_length=10, required=False, help_text="Leave blank while ongoing.")
    ongoing = _flag("Ongoing")
    serious = _flag("Serious adverse event", "Tick at least one criterion below.")
    death = _flag(CRITERIA_LABELS["death"])
    life_threatening = _flag(CRITERIA_LABELS["life_threatening"])
    hospitalisation = _flag(CRITERIA_LABELS["hospitalisation"])
    disability = _flag(CRITERIA_LABELS["disability"])
    congenital_anomaly = _flag(CRITERIA_LABELS["congenital_anomaly"])
    important_medical_event = _flag(CRITERIA_LABELS["important_medical_event"])
    site_aware_at = forms.DateTimeField(
        label="Site became aware of the SAE",
        required=False,
        widget=DateTimeLocalInput,
        help_text="Starts the 24-hour clock for reporting to the sponsor.",
    )
    causality_product = forms.ChoiceField(label=CAUSALITY_TARGETS[0][1], required=False)
    causality_leukapheresis = forms.ChoiceField(label=CAUSALITY_TARGETS[1][1], required=False)
    causality_procedures = forms.ChoiceField(label=CAUSALITY_TARGETS[2][1], required=False)
    action_taken = forms.ChoiceField(
        label="Action taken with the study treatment",
        choices=[("", "—"), *ActionTaken.choices],
        initial=ActionTaken.NOT_APPLICABLE,
        error_messages=_required("Choose the action taken with the study treatment."),
    )
    action_other = IdentifierField(label="Other action taken", max_length=TEXT_BOUNDS["action_other"])
    outcome = forms.ChoiceField(
        label="Outcome", choices=[("", "—"), *Outcome.choices], error_messages=_required("Outcome is required.")
    )
    treatment_given = _flag("Treatment given for the event")
    treatment_details = _text("Treatment (drug, dose, dates)", bound="treatment_details")

    field_order = [
        "category",
        "verbatim_term",
        "ctcae_term",
        "grade",
        "onset",
        "end",
        "ongoing",
        "outcome",
        "serious",
        *SERIOUSNESS_CRITERIA,
        "time_zone",
        "site_aware_at",
        "causality_product",
        "causality_leukapheresis",
        "causality_procedures",
        "action_taken",
        "action_other",
        "treatment_given",
        "treatment_details",
        "reason",
        "version",
    ]

    def __init__(self, *args, terms, causality_rules: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["ctcae_term"].queryset = terms
        for name, _ in CAUSALITY_TARGETS:
            self.fields[name].choices = causality_choices(causality_rules)

    @classmethod
    def initial_from(cls, ae: AdverseEvent) -> dict:
        from safety.services import AE_FIELDS

        initial = {name: getattr(ae, name) for name in AE_FIELDS}
        initial["ctcae_term"] = ae.ctcae_term_id
        initial["version"] = ae.version
        return initial

    def service_kwargs(self) -> dict:
        """The service's arguments from the cleaned data; a field the form refused is passed empty, so
        the service can still check everything else (``adverse_event_problems``)."""
        from safety.services import AE_FIELDS

        data = {name: self.cleaned_data.get(name) for name in AE_FIELDS}
        for name in ("category", "verbatim_term", "onset", "end", "action_other", "treatment_details", "outcome"):
            data[name] = data[name] or ""
        data["action_taken"] = data["action_taken"] or ""
        for name in ("ongoing", "serious", "treatment_given", *SERIOUSNESS_CRITERIA):
            data[name] = bool(data[name])
        for name, _ in CAUSALITY_TARGETS:
            data[name] = data[name] or ""
        if data["grade"] in ("", None):
            data["grade"] = None
        return data

    def changes(self, ae: AdverseEvent) -> dict:
        """Only the fields that differ from the saved AE."""
        return {
            name: value
            for name, value in self.service_kwargs().items()
            if (value.pk if isinstance(value, CTCAETerm) else value)
            != (ae.ctcae_term_id if name == "ctcae_term" else getattr(ae, name))
        }


def _grade_choice(label: str = "Investigator grade (override)") -> forms.TypedChoiceField:
    return forms.TypedChoiceField(
        label=label,
        choices=[("", "Accept the computed grade"), *((g, str(g)) for g in range(0, 6))],
        coerce=int,
        empty_value=None,
        required=False,
    )


class CRSForm(IdempotencyTokenMixin, ZonedTimesMixin):
    zoned_fields = ("assessed_at",)

    assessed_at = forms.DateTimeField(label="Time of the worst findings", widget=DateTimeLocalInput)
    max_temperature_c = PlainDecimalField(
        label="Maximum temperature (°C)", max_digits=3, decimal_places=1, required=False
    )
    fever_masked = _flag("Fever masked by antipyretics or anti-cytokine therapy (tocilizumab, steroids)")
    hypotension = _flag("Hypotension (not attributable to another cause)")
    vasopressors = forms.IntegerField(label="Vasopressors (excluding vasopressin)", min_value=0, max_value=9, initial=0)
    vasopressin = _flag("Vasopressin")
    oxygen_device = forms.ChoiceField(label="Oxygen device", choices=CRSAssessment.OxygenDevice.choices)
    oxygen_flow_l_min = PlainDecimalField(
        label="Oxygen flow (L/min)",
        max_digits=4,
        decimal_places=1,
        required=False,
        help_text="Required for a nasal cannula.",
    )
    death_due_to_crs = _flag("Death due to CRS (no other principal cause)")
    tocilizumab_given = _flag("Tocilizumab given")
    corticosteroids_given = _flag("Corticosteroids given")
    investigator_grade = _grade_choice()
    override_reason = _text("Reason for overriding the computed grade", bound="override_reason")

    field_order = ["time_zone", "assessed_at"]


class ICANSForm(IdempotencyTokenMixin, ZonedTimesMixin):
    zoned_fields = ("assessed_at",)

    assessed_at = forms.DateTimeField(label="Time of the worst findings", widget=DateTimeLocalInput)
    age_years = forms.IntegerField(
        label="Age (years)", min_value=0, max_value=130, help_text="12 or under: CAPD, not ICE."
    )
    developmental_delay = _flag("Developmental delay (assess with CAPD)")
    ice_orientation = forms.IntegerField(
        label="ICE orientation: year, month, city, hospital (0-4)", required=False, min_value=0
    )
    ice_naming = forms.IntegerField(label="ICE naming 3 objects (0-3)", required=False, min_value=0)
    ice_commands = forms.IntegerField(label="ICE following simple commands (0-1)", required=False, min_value=0)
    ice_writing = forms.IntegerField(label="ICE writing a standard sentence (0-1)", required=False, min_value=0)
    ice_attention = forms.IntegerField(label="ICE counting back from 100 by 10 (0-1)", required=False, min_value=0)
    capd_score = forms.IntegerField(label="CAPD score (children)", required=False, min_value=0)
    consciousness = forms.ChoiceField(label="Level of consciousness", choices=ICANSAssessment.Consciousness.choices)
    seizure = forms.ChoiceField(label="Seizure", choices=ICANSAssessment.Seizure.choices)
    motor = forms.ChoiceField(label="Motor findings", choices=ICANSAssessment.Motor.choices)
    raised_icp = forms.ChoiceField(
        label="Raised intracranial pressure / cerebral oedema", choices=ICANSAssessment.RaisedICP.choices
    )
    death_due_to_icans = _flag("Death due to ICANS (no other principal cause)")
    investigator_grade = _grade_choice()
    override_reason = _text("Reason for overriding the computed grade", bound="override_reason")

    field_order = ["time_zone", "assessed_at"]


class SAEReportForm(IdempotencyTokenMixin, forms.Form):
    narrative = _text(
        "Narrative",
        required="Describe the event: what happened, treatment, current status.",
        rows=6,
        help_text="What happened, investigations, treatment, current status.",
        bound="narrative",
    )


class SponsorAssessmentForm(VersionedEditMixin):
    EXPECTED_CHOICES = [("", "As the reference safety information says"), ("yes", "Expected"), ("no", "Unexpected")]

    sponsor_causality = forms.ChoiceField(label="Sponsor causality to the cell product", required=False)
    causality_rationale = _text(
        "Rationale (required to disagree with a 'related' investigator causality)", bound="causality_rationale"
    )
    expected = forms.ChoiceField(label="Expectedness", choices=EXPECTED_CHOICES, required=False)
    expectedness_rationale = _text(
        "Rationale for expectedness (required without an RSI, or against it)", bound="expectedness_rationale"
    )

    def __init__(self, *args, causality_rules: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["sponsor_causality"].choices = causality_choices(causality_rules)

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        return {
            "sponsor_causality": data["sponsor_causality"],
            "expected": {"yes": True, "no": False}.get(data["expected"]),
            "causality_rationale": data["causality_rationale"],
            "expectedness_rationale": data["expectedness_rationale"],
            "reason": data.get("reason", ""),
            "expected_version": data.get("version"),
        }


class ReportSubmitForm(ZonedTimesMixin):
    zoned_fields = ("submitted_at",)

    submitted_at = forms.DateTimeField(
        label="Submitted at", widget=DateTimeLocalInput, required=False, help_text="Leave blank for now."
    )
    acknowledgement = IdentifierField(label="Acknowledgement / reference ID", max_length=TEXT_BOUNDS["acknowledgement"])
    version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1)


class DLTAdjudicationForm(VersionedEditMixin):
    evaluable = _flag("DLT-evaluable")
    is_dlt = _flag("Dose-limiting toxicity")
    adverse_event = forms.ModelChoiceField(
        label="The event that is the DLT", queryset=AdverseEvent.objects.none(), required=False
    )
    rationale = _text("Committee rationale", required="Record the committee's rationale.", rows=3)
    password = forms.CharField(
        label="Your password (signature)",
        widget=forms.PasswordInput,
        error_messages=_required("Re-enter your password to sign."),
        help_text="Signing means: I confirm the safety review committee's decision.",
    )

    def __init__(self, *args, adverse_events, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["adverse_event"].queryset = adverse_events
