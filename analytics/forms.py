"""Forms of the durability page: shape only; ``analytics.services`` decides (docs/style.md §1)."""

from __future__ import annotations

import json

from django import forms

from analytics.datacut import SUPPORTED_RULES
from analytics.derivations import NonResponderPolicy, RemissionDefinition, rule_description
from analytics.spec import CI_TRANSFORMS, ENDPOINT_LABELS, GROUPINGS, HORIZON_RANGE


def rules_for(indication: str) -> list[str]:
    """The supported remission rules of an indication (a rule refuses another indication)."""
    rules = []
    for rule in SUPPORTED_RULES:
        try:
            RemissionDefinition(indication, "probe", "0", rule, {})
        except ValueError:
            continue
        rules.append(rule)
    return rules


class JSONObjectField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 2})

    def to_python(self, value):
        value = super().to_python(value)
        if not value:
            return {}
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg}.") from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError('Give an object, e.g. {"maximum": "3.3"}.')
        return parsed


class DefinitionForm(forms.Form):
    name = forms.CharField(max_length=100, initial="Remission")
    rule = forms.ChoiceField()
    parameters = JSONObjectField(
        required=False, help_text='Overrides of the rule\'s thresholds, e.g. {"maximum": "3.3"}.'
    )
    non_responders = forms.ChoiceField(
        choices=[(p.value, p.value.replace("_", " ")) for p in NonResponderPolicy],
        help_text="Time to relapse for a participant never in remission (a SAP decision).",
    )
    sap = JSONObjectField(
        required=False,
        label="Other SAP options",
        help_text='e.g. {"confirm_loss": true, "loss_confirmation_min_days": 28, "missing_visits": "ignore"}',
    )
    reason = forms.CharField(max_length=300)

    def __init__(self, *args, indication: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["rule"].choices = [(rule, rule_description(rule)) for rule in rules_for(indication)]

    def sap_options(self) -> dict:
        return {**self.cleaned_data["sap"], "non_responders": self.cleaned_data["non_responders"]}


class CutForm(forms.Form):
    cut_date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    label = forms.CharField(max_length=100, required=False)


class RequestForm(forms.Form):
    data_cut = forms.TypedChoiceField(coerce=int, label="Data cut")
    endpoint = forms.ChoiceField(choices=list(ENDPOINT_LABELS.items()))
    grouping = forms.ChoiceField()
    ci_transform = forms.ChoiceField(choices=list(CI_TRANSFORMS.items()), label="CI type")
    horizon_days = forms.IntegerField(
        min_value=HORIZON_RANGE[0],
        max_value=HORIZON_RANGE[1],
        required=False,
        label="RMST horizon τ (days)",
        help_text="Leave empty for the largest time every group reaches. A longer τ is flagged on the result.",
    )

    def __init__(self, *args, cuts, sees_arm: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["data_cut"].choices = [(cut.pk, str(cut)) for cut in cuts]
        groupings = {k: v for k, v in GROUPINGS.items() if k != "arm" or sees_arm}
        self.fields["grouping"].choices = list(groupings.items())
        self.fields["grouping"].initial = "cohort"

    def spec(self) -> dict:
        data = self.cleaned_data
        spec = {k: data[k] for k in ("endpoint", "grouping", "ci_transform")}
        if data.get("horizon_days") is not None:
            spec["horizon_days"] = data["horizon_days"]
        return spec
