"""A casebook's audit trail as people read it: one entry per event (who, when, why, what record) with
the fields it changed, in the words and values of the forms, filtered and paginated.

The events come from every audited table of every app whose records hang from the participant
(``trials.audit.scope_filter``: visits, assessments, adverse events, their CRS/ICANS grading, SAE
cases, versions and expedited reports, ...). Blinding applies as everywhere (docs/reliability.md #23):
the allocation list's events are read only for unblinded users, so nothing on the page can show the
arm. The trail is computed with raw values, filtered and paginated; only the page shown is turned
into labels (one query per related model on the page, never one per value).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django import forms
from django.contrib.auth import get_user_model
from django.db import models
from django.utils.text import capfirst

from trials.audit import audit_fields, scoped_event_models

PAGE_SIZE = 25
ACTIONS = {"insert": "Created", "update": "Changed", "delete": "Deleted"}
CHANNELS = {"web": "Web form", "api": "API", "task": "Background task", "command": "Command", "admin": "Administration"}
# Words that automatic field names spell in lower case but people write otherwise.
_WORDS = {
    "ae": "AE",
    "capd": "CAPD",
    "crp": "CRP",
    "crs": "CRS",
    "day0": "Day 0",
    "ctcae": "CTCAE",
    "dlt": "DLT",
    "edss": "EDSS",
    "esr": "ESR",
    "eu": "EU",
    "gd": "Gd",
    "hba1c": "HbA1c",
    "icans": "ICANS",
    "ice": "ICE",
    "icp": "ICP",
    "llt": "LLT",
    "meddra": "MedDRA",
    "mm": "mm",
    "mmtt": "MMTT",
    "mri": "MRI",
    "rsi": "RSI",
    "sae": "SAE",
    "sap": "SAP",
    "susar": "SUSAR",
    "t2": "T2",
}


@dataclass
class Change:
    name: str  # the model field
    label: str
    old: object
    new: object
    old_display: str = ""
    new_display: str = ""


@dataclass
class TrailEvent:
    key: str  # "<event table>:<pgh_id>", unique on the page
    at: dt.datetime
    model: str  # app_label.model_name
    form: str  # what users call the record type
    object_id: int
    action: str
    user_id: int | None
    username: str
    reason: str
    channel: str
    changes: list[Change] = field(default_factory=list)
    record: str = ""  # the record's natural label, filled for the page shown
    user: str = ""  # the acting user's name, filled for the page shown

    @property
    def channel_label(self) -> str:
        return CHANNELS.get(self.channel, self.channel)

    @property
    def summary(self) -> str:
        """Created / Changed / Deleted, or what the change means (a lock, an unlock, a void)."""
        changed = {c.name: c for c in self.changes}
        if "is_locked" in changed and self.action == "update":
            return "Locked" if changed["is_locked"].new else "Unlocked"
        if "voided_at" in changed and changed["voided_at"].new and self.action == "update":
            return "Voided"
        return ACTIONS.get(self.action, self.action)


# Units that automatic field names end with, as a form would write them.
_UNITS = {
    " pct": " (%)",
    " u per kg day": " (U/kg/day)",
    " per kg": " per kg",
    " kg": " (kg)",
    " ml": " (mL)",
    " l min": " (L/min)",
    " mm h": " (mm/h)",
    " mm": " (mm)",
    " c": " (°C)",
}


def _words(text: str) -> str:
    for suffix, unit in _UNITS.items():
        if text.endswith(suffix):
            text = text.removesuffix(suffix) + unit
            break
    return capfirst(" ".join(_WORDS.get(word, word) for word in text.split(" ")))


def field_label(model_field) -> str:
    """The field's name as the forms show it: its verbose name, with ``is_locked`` read "Locked"."""
    verbose = str(model_field.verbose_name)
    if verbose == model_field.name.replace("_", " "):  # no verbose name given: tidy the automatic one
        if verbose.startswith("is "):
            verbose = verbose[3:]
        return _words(verbose.removesuffix(" id"))
    return capfirst(verbose)


def form_label(model) -> str:
    verbose = str(model._meta.verbose_name)
    return _words(verbose) if verbose == verbose.lower() else capfirst(verbose)


# ---------------------------------------------------------------------------------------------
# The trail, with raw values
# ---------------------------------------------------------------------------------------------


def casebook_trail(participant, *, unblinded: bool) -> list[TrailEvent]:
    """Every event of the casebook, newest first, each with the fields it changed (old -> new)."""
    trail: list[TrailEvent] = []
    for event_model, filters in scoped_event_models(participant, unblinded=unblinded):
        tracked = event_model.pgh_tracked_model
        fields = audit_fields(event_model)
        labels = {f.name: field_label(tracked._meta.get_field(f.name)) for f in fields}
        events = event_model.objects.filter(**filters).select_related("pgh_context").order_by("pgh_id")
        previous: dict[int, object] = {}
        for event in events:
            before = previous.get(event.pgh_obj_id)
            metadata = event.pgh_context.metadata if event.pgh_context_id else {}
            item = TrailEvent(
                key=f"{event_model._meta.db_table}:{event.pgh_id}",
                at=event.pgh_created_at,
                model=tracked._meta.label_lower,
                form=form_label(tracked),
                object_id=event.pgh_obj_id,
                action=event.pgh_label,
                user_id=metadata.get("user"),
                username=metadata.get("username") or "",
                reason=metadata.get("reason") or "",
                channel=metadata.get("channel") or ("web" if metadata.get("url") else ""),
            )
            for f in fields:
                new = getattr(event, f.attname)
                old = getattr(before, f.attname) if before is not None else None
                if before is not None and old == new:
                    continue
                if before is None and event.pgh_label == "insert" and new in (None, "", []):
                    continue
                if f.is_relation and f.related_model is type(participant) and {old, new} <= {None, participant.pk}:
                    continue  # every record on this page belongs to this participant
                item.changes.append(Change(name=f.name, label=labels[f.name], old=old, new=new))
            trail.append(item)
            previous[event.pgh_obj_id] = event
    # One transaction's events share a time: within it, each table's events keep their order.
    trail.sort(key=lambda e: (e.at, e.key.split(":")[0], int(e.key.split(":")[1])), reverse=True)
    return trail


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


class TrailFilterForm(forms.Form):
    """Filter a trail by form, field, user and date (UTC); choices come from the trail itself."""

    form = forms.ChoiceField(label="Form", required=False)
    field = forms.ChoiceField(label="Field", required=False)
    user = forms.ChoiceField(label="User", required=False)
    date_from = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, data=None, *, trail: list[TrailEvent]):
        super().__init__(data)
        forms_seen: dict[str, str] = {}
        fields_seen: dict[str, str] = {}
        users_seen: dict[str, str] = {}
        for event in trail:
            forms_seen[event.model] = event.form
            for change in event.changes:
                fields_seen[change.label.lower()] = change.label
            if event.user_id is not None:
                users_seen[str(event.user_id)] = event.username or f"user {event.user_id}"
        self.fields["form"].choices = [("", "All forms"), *sorted(forms_seen.items(), key=lambda kv: kv[1])]
        self.fields["field"].choices = [("", "All fields"), *sorted(fields_seen.items(), key=lambda kv: kv[1])]
        self.fields["user"].choices = [("", "All users"), *sorted(users_seen.items(), key=lambda kv: kv[1])]

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "The end date is before the start date.")
        return cleaned

    def apply(self, trail: list[TrailEvent]) -> list[TrailEvent]:
        """The events that match; all of them while the filters are invalid (the errors are shown)."""
        if not self.is_bound or not self.is_valid():
            return trail
        form, field_key, user = (self.cleaned_data[k] for k in ("form", "field", "user"))
        start, end = self.cleaned_data["date_from"], self.cleaned_data["date_to"]
        kept = []
        for event in trail:
            if form and event.model != form:
                continue
            if user and str(event.user_id) != user:
                continue
            day = event.at.astimezone(dt.UTC).date()
            if (start and day < start) or (end and day > end):
                continue
            if field_key:
                changes = [c for c in event.changes if c.label.lower() == field_key]
                if not changes:
                    continue
                event = _with_changes(event, changes)
            kept.append(event)
        return kept


def _with_changes(event: TrailEvent, changes: list[Change]) -> TrailEvent:
    from dataclasses import replace

    return replace(event, changes=changes)


# ---------------------------------------------------------------------------------------------
# Labels and values as the forms show them (for the page shown only)
# ---------------------------------------------------------------------------------------------


def _user_label(user) -> str:
    full = user.get_full_name().strip() if hasattr(user, "get_full_name") else ""
    return f"{full} ({user.get_username()})" if full else user.get_username()


def _scalar(model_field, value, related: dict) -> str:
    if value is None or value == "":
        return ""
    if model_field.is_relation:
        obj = related.get((model_field.related_model, value))
        if obj is None:
            return f"#{value}"
        return _user_label(obj) if model_field.related_model is get_user_model() else str(obj)
    if model_field.choices:
        return str(dict(model_field.flatchoices).get(value, value))
    if isinstance(model_field, models.BooleanField) or isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def display_value(model_field, value, related: dict) -> str:
    """``value`` of ``model_field`` as users know it: choice labels, Yes/No, the related record's
    natural label (site code and name, criterion text, subject code), dates in ISO, times in UTC."""
    base = getattr(model_field, "base_field", None)
    if base is not None and isinstance(value, list):  # an array of choices (forms due at a visit)
        return ", ".join(_scalar(base, item, related) for item in value)
    return _scalar(model_field, value, related)


def _related_objects(events: list[TrailEvent], models_by_label: dict) -> dict:
    """(model, pk) -> object for every record the page's values and headings point to, one query
    per model (related rows of the records' own natural labels joined in)."""
    wanted: dict[type, set] = defaultdict(set)
    for event in events:
        tracked = models_by_label[event.model]
        wanted[tracked].add(event.object_id)
        if event.user_id is not None:
            wanted[get_user_model()].add(event.user_id)
        for change in event.changes:
            model_field = tracked._meta.get_field(change.name)
            if model_field.is_relation:
                wanted[model_field.related_model].update(v for v in (change.old, change.new) if v is not None)
    found: dict = {}
    for model, ids in wanted.items():
        queryset = model._default_manager.select_related(*_label_joins(model))
        for obj in queryset.in_bulk(list(ids)).values():
            found[(model, obj.pk)] = obj
    return found


def _links(model) -> list:
    user_model = get_user_model()
    return [
        f
        for f in model._meta.concrete_fields
        if f.is_relation and f.related_model is not None and f.related_model not in (user_model, model)
    ]


def _label_joins(model) -> list[str]:
    """The links a record's label may read (its own and theirs: a visit's label names its
    participant and its definition), joined in the one query that loads the records."""
    joins: list[str] = []
    for link in _links(model):
        deeper = [f"{link.name}__{further.name}" for further in _links(link.related_model)]
        joins.extend(deeper or [link.name])
    return joins


def label_events(events: list[TrailEvent], *, participant) -> None:
    """Fill the labels and display values of ``events`` (the page shown), in place."""
    from django.apps import apps

    models_by_label = {event.model: apps.get_model(event.model) for event in events}
    related = _related_objects(events, models_by_label)
    for event in events:
        tracked = models_by_label[event.model]
        event.record = _record_label(tracked, related.get((tracked, event.object_id)), event, participant)
        user = related.get((get_user_model(), event.user_id))
        event.user = _user_label(user) if user is not None else event.username
        for change in event.changes:
            model_field = tracked._meta.get_field(change.name)
            change.old_display = display_value(model_field, change.old, related)
            change.new_display = display_value(model_field, change.new, related)


def _record_label(tracked, record, event: TrailEvent, participant) -> str:
    """The record's natural label without the subject code the whole page is about; a record with
    no label of its own is named by what it links to (an eligibility answer by its criterion)."""
    label = str(record) if record is not None else ""
    if record is not None and label == f"{tracked.__name__} object ({record.pk})":
        label = ""
        for model_field in tracked._meta.concrete_fields:
            target = model_field.related_model if model_field.is_relation else None
            if target is None or target is get_user_model() or target is type(participant) or model_field.null:
                continue
            label = str(getattr(record, model_field.name))
            break
    if not label:
        return f"{event.form} #{event.object_id}"
    if label == participant.subject_code:
        return label
    return capfirst(label.removeprefix(f"{participant.subject_code} "))
