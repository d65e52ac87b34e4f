"""The site coordinators' pages. Thin on purpose (docs/style.md §1-§3):

- every participant or visit is fetched through ``trials.selectors`` (404 outside the user's scope,
  403 on a write page for a read-only role), for GET and POST alike;
- forms check shape; every write is one call to a function in ``trials.services``;
- a refusal from the service (``RuleViolation`` / ``ValidationError``) is attached to the form with
  ``form.add_error(None, exc)`` and the page is shown again: the service saved nothing;
- a stale edit (``ConflictError``) is shown as a message with HTTP 409, the user's input kept.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods

from trials import audit_trail, forms, idempotency, selectors, services, web
from trials.audit_export import study_audit_csv
from trials.csv_export import csv_response
from trials.models import Indication, Participant, ParticipantStatus, ProtocolDeviation, Role, Signature, Visit

PAGE_SIZE = 50

# ---------------------------------------------------------------------------------------------
# Helpers (calling a service and showing its refusal: trials/web.py)
# ---------------------------------------------------------------------------------------------


def _participant_url(participant: Participant, anchor: str = "") -> str:
    url = reverse("trials:participant_detail", args=[participant.pk])
    return f"{url}#{anchor}" if anchor else url


def _one_to_one(instance, name: str):
    try:
        return getattr(instance, name)
    except ObjectDoesNotExist:
        return None


def _form_page(request, participant: Participant, form, *, title: str, submit: str, intro: str = "", **extra):
    """The generic participant form page (a heading, the form, a Save and a Cancel)."""
    template = extra.pop("template", "trials/participant_form.html")
    context = {
        "study": participant.study,
        "participant": participant,
        "form": form,
        "title": title,
        "submit_label": submit,
        "intro": intro,
        **extra,
    }
    return web.render_form(request, template, context)


# ---------------------------------------------------------------------------------------------
# Home and the participant list
# ---------------------------------------------------------------------------------------------


@login_required
@require_GET
def home(request):
    """Every study the user has a role in, with the role(s) and the pages each opens (config/navigation.py).
    A user with one clinical study and nothing else goes straight to its participants."""
    entries = [
        {"study": study, "memberships": memberships}
        for study, memberships in selectors.studies_with_roles(user=request.user)
    ]
    clinical = list(selectors.studies_visible_to(request.user))
    if len(entries) == 1 and len(clinical) == 1 and not request.user.is_staff:
        return redirect("trials:participant_list", study_code=clinical[0].code)
    return render(request, "trials/home.html", {"entries": entries})


@login_required
@require_GET
def participant_list(request, study_code: str):
    study = selectors.study_get(user=request.user, code=study_code)
    sites = selectors.sites_visible_to(user=request.user, study=study)
    filter_form = forms.ParticipantFilterForm(request.GET or None, sites=sites, cohorts=study.cohorts.all())
    filters = filter_form.filters()
    participants = selectors.participant_list(user=request.user, study=study, filters=filters)
    page = Paginator(participants, PAGE_SIZE).get_page(request.GET.get("page"))
    counts = selectors.status_counts(user=request.user, study=study)
    context = {
        "study": study,
        "filter_form": filter_form,
        "filters": filters,
        "page": page,
        "status_counts": [(value, label, counts.get(value, 0)) for value, label in ParticipantStatus.choices],
        "total": sum(counts.values()),
        "can_screen": selectors.sites_for_entry(request.user, study).exists(),
    }
    # The filter form asks for the table only; a normal request (or a reload) gets the whole page.
    partial = request.htmx and not request.htmx.history_restore_request
    template = "trials/partials/participant_table.html" if partial else "trials/participant_list.html"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_http_methods(["GET", "POST"])
def participant_screen(request, study_code: str):
    study = selectors.study_get(user=request.user, code=study_code)
    sites = selectors.sites_for_entry(request.user, study)
    if not sites.exists():
        raise PermissionDenied("Your role cannot screen participants in this study.")
    form = forms.ScreenForm(request.POST or None, sites=sites, initial={"screening_date": timezone.localdate()})
    if request.method == "POST" and form.is_valid():
        # A second submission of the same form (double-click, resend) returns the first participant.
        participant = idempotency.submit_once(
            request, form, services.participant_screen, study=study, **form.cleaned_data
        )
        if participant is not None:
            messages.success(request, f"{participant.subject_code} registered for screening. Record consent next.")
            return redirect(_participant_url(participant))
    context = {"study": study, "form": form, "title": "Screen a new participant", "submit_label": "Register"}
    return web.render_form(request, "trials/participant_screen.html", context)


# ---------------------------------------------------------------------------------------------
# The participant page
# ---------------------------------------------------------------------------------------------


@login_required
@require_GET
def participant_detail(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk)
    today = timezone.localdate()
    casebook = selectors.participant_casebook(participant=participant, today=today)
    # Locked casebooks hide the entry buttons; the services refuse such writes in any case.
    locked = participant.is_locked or participant.study.is_locked
    context = {
        "study": participant.study,
        "participant": participant,
        "casebook": casebook,
        "locked": locked,
        "can_write": not locked and selectors.can_enter_data(request.user, participant),
        "forms_available": selectors.indication_forms(participant.study.indication),
        "is_ms": participant.study.indication == Indication.MS,
        "is_t1d": participant.study.indication == Indication.T1D,
        "today": today,
        **_integrity_context(request, participant),
    }
    return render(request, "trials/participant_detail.html", context)


def _integrity_context(request, participant: Participant) -> dict:
    user, study = request.user, participant.study
    return {
        "signature": services.signature_state(participant),
        "can_lock": selectors.has_role(user, study=study, roles={Role.DATA_MANAGER}),
        "can_sign": selectors.has_role(user, study=study, roles={Role.INVESTIGATOR}, site=participant.site),
        "allocation": selectors.allocation_for(user=user, participant=participant),
    }


# ---------------------------------------------------------------------------------------------
# Consent, eligibility, screen failure, enrolment
# ---------------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def consent_record(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk, write=True)
    documents = participant.study.consent_documents.order_by("-effective_date")
    form = forms.ConsentForm(request.POST or None, documents=documents)
    if request.method == "POST" and form.is_valid():
        consent = idempotency.submit_once(
            request, form, services.consent_record, participant=participant, **form.cleaned_data
        )
        if consent is not None:
            messages.success(
                request, f"Consent to v{consent.document.version} recorded ({consent.consent_date:%Y-%m-%d})."
            )
            return redirect(_participant_url(participant, "consents"))
    return _form_page(request, participant, form, title="Record consent", submit="Record consent")


@login_required
@require_http_methods(["GET", "POST"])
def eligibility_record(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk, write=True)
    checklist = selectors.eligibility_checklist(participant=participant)
    form = forms.EligibilityForm(request.POST or None, checklist=checklist)
    if request.method == "POST" and form.is_valid():
        saved = web.submit(
            request,
            form,
            services.eligibility_record,
            participant=participant,
            answers=form.answers(),
            reason=form.cleaned_data.get("reason", ""),
        )
        if saved is not None:
            problems = services.eligibility_unmet(participant)
            if problems:
                messages.warning(request, "Eligibility saved. Not (yet) eligible: " + "; ".join(problems) + ".")
            else:
                messages.success(request, "Eligibility saved: every criterion is met. The participant can be enrolled.")
            return redirect(_participant_url(participant, "eligibility"))
    context = {"study": participant.study, "participant": participant, "form": form}
    return web.render_form(request, "trials/eligibility_form.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def screen_failure(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk, write=True)
    form = forms.ScreenFailForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        saved = web.submit(
            request, form, services.participant_screen_fail, participant=participant, reason=form.cleaned_data["reason"]
        )
        if saved is not None:
            messages.success(request, f"{saved.subject_code} recorded as a screen failure.")
            return redirect(_participant_url(participant))
    return _form_page(
        request,
        participant,
        form,
        title="Record screen failure",
        submit="Record screen failure",
        intro="The participant leaves the study; this cannot be undone from this page.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def participant_enrol(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk, write=True)
    form = forms.EnrolForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        enrolled = web.submit(request, form, services.participant_enrol, participant=participant, **form.cleaned_data)
        if enrolled is not None:
            cohort = enrolled.cohort
            messages.success(request, f"{enrolled.subject_code} enrolled in cohort {cohort.number} ({cohort.label}).")
            return redirect(_participant_url(participant))
    return _form_page(
        request,
        participant,
        form,
        title="Enrol",
        submit="Enrol",
        intro="The next open dose cohort with room is assigned automatically.",
        template="trials/enrol_form.html",
        problems=services.eligibility_unmet(participant),
    )


# ---------------------------------------------------------------------------------------------
# Infusion
# ---------------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def infusion_record(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk, write=True)
    form = forms.InfusionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        infusion = web.submit(request, form, services.infusion_record, participant=participant, **form.service_kwargs())
        if infusion is not None:
            _infusion_messages(request, participant, infusion, "Infusion recorded")
            return redirect(_participant_url(participant, "infusion"))
    return _form_page(
        request,
        participant,
        form,
        title="Record the infusion",
        submit="Record infusion",
        template="trials/infusion_form.html",
        cohort=participant.cohort,
    )


def _infusion_messages(request, participant: Participant, infusion, done: str) -> None:
    deviation = services.dose_deviation_pct(infusion, infusion.cohort)
    if deviation is None:
        messages.success(request, f"{done}: placebo (cohort {infusion.cohort.number}), no planned dose to compare.")
    else:
        messages.success(
            request, f"{done}: {infusion.dose_cells_per_kg:,} cells/kg ({deviation:+}% from the planned dose)."
        )
        tolerance = participant.study.dose_tolerance_pct
        if abs(deviation) > tolerance:
            messages.warning(
                request,
                f"Dose deviation: {deviation:+}% is outside the ±{tolerance.normalize():f}% tolerance; "
                "a protocol deviation was recorded.",
            )
    outside = infusion.protocoldeviation_set.filter(
        voided_at__isnull=True, system_detected=True, category=ProtocolDeviation.Category.RELEASE
    )
    if outside.exists():
        messages.warning(request, "Outside the release criteria, as you confirmed: a protocol deviation was recorded.")


@login_required
@require_http_methods(["GET", "POST"])
def infusion_correct(request, pk: int):
    infusion = selectors.infusion_get(user=request.user, pk=pk, write=True)
    participant = infusion.participant
    form = forms.InfusionCorrectForm(request.POST or None, initial=forms.InfusionCorrectForm.initial_for(infusion))
    if request.method == "POST" and form.is_valid():
        corrected = web.submit(
            request,
            form,
            services.infusion_correct,
            infusion=infusion,
            reason=form.cleaned_data["reason"],
            expected_version=form.cleaned_data["version"],
            **form.service_kwargs(),
        )
        if corrected is not None:
            _infusion_messages(request, participant, corrected, f"Infusion {corrected.number} corrected")
            return redirect(_participant_url(participant, "infusion"))
    return _form_page(
        request,
        participant,
        form,
        title=f"Correct infusion {infusion.number}",
        submit="Save correction",
        intro="The change is kept in the audit trail with your reason; if day 0 moves, the visit windows move too.",
        template="trials/infusion_form.html",
        cohort=infusion.cohort,
    )


# ---------------------------------------------------------------------------------------------
# Visits: record, missed, unscheduled; htmx redraws one row of the timeline in place
# ---------------------------------------------------------------------------------------------


def _visit_row_response(request, visit: Visit) -> HttpResponse:
    row = selectors.visit_row(visit=visit, today=timezone.localdate())
    context = {
        "row": row,
        "participant": visit.participant,
        "can_write": selectors.can_enter_data(request.user, visit.participant),
        "forms_available": selectors.indication_forms(visit.participant.study.indication),
    }
    return render(request, "trials/partials/visit_row.html", context)


def _visit_form_response(request, visit: Visit, form, *, title: str, submit: str, action: str) -> HttpResponse:
    participant = visit.participant
    context = {
        "study": participant.study,
        "participant": participant,
        "visit": visit,
        "form": form,
        "title": title,
        "submit_label": submit,
        "action": action,
    }
    template = "trials/partials/visit_row_form.html" if request.htmx else "trials/visit_form.html"
    return web.render_form(request, template, context)


@login_required
@require_GET
def visit_row(request, pk: int):
    visit = selectors.visit_get(user=request.user, pk=pk)
    return _visit_row_response(request, visit)


@login_required
@require_http_methods(["GET", "POST"])
def visit_record(request, pk: int):
    visit = selectors.visit_get(user=request.user, pk=pk, write=True)
    editing = visit.actual_date is not None or visit.missed
    # No default date: the coordinator types the date the visit took place, never "today" by accident.
    initial = {"actual_date": visit.actual_date, "weight_kg": visit.weight_kg, "version": visit.version}
    form = forms.VisitRecordForm(request.POST or None, editing=editing, initial=initial)
    if request.method == "POST" and form.is_valid():
        saved = web.submit(
            request,
            form,
            services.visit_record,
            visit=visit,
            actual_date=form.cleaned_data["actual_date"],
            weight_kg=form.cleaned_data["weight_kg"],
            reason=form.cleaned_data.get("reason", ""),
            expected_version=form.cleaned_data["version"],
        )
        if saved is not None:
            saved.participant = visit.participant
            if request.htmx:
                return _visit_row_response(request, saved)
            messages.success(request, f"{saved.label}: visit on {saved.actual_date:%Y-%m-%d} recorded.")
            if saved.in_window is False:
                messages.warning(request, "The visit is outside its window; a protocol deviation was recorded.")
            return redirect(_participant_url(visit.participant, f"visit-{visit.pk}"))
    title = f"{'Correct' if editing else 'Record'} {visit.label}"
    action = reverse("trials:visit_record", args=[visit.pk])
    return _visit_form_response(request, visit, form, title=title, submit="Save visit", action=action)


@login_required
@require_http_methods(["GET", "POST"])
def visit_missed(request, pk: int):
    visit = selectors.visit_get(user=request.user, pk=pk, write=True)
    form = forms.VisitMissedForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        saved = web.submit(
            request, form, services.visit_mark_missed, visit=visit, reason=form.cleaned_data["missed_reason"]
        )
        if saved is not None:
            saved.participant = visit.participant
            if request.htmx:
                return _visit_row_response(request, saved)
            messages.success(request, f"{saved.label} marked as missed.")
            return redirect(_participant_url(visit.participant, f"visit-{visit.pk}"))
    action = reverse("trials:visit_missed", args=[visit.pk])
    return _visit_form_response(
        request, visit, form, title=f"Mark {visit.label} as missed", submit="Mark missed", action=action
    )


@login_required
@require_http_methods(["GET", "POST"])
def visit_add(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk, write=True)
    form = forms.UnscheduledVisitForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        visit = idempotency.submit_once(
            request,
            form,
            services.visit_add_unscheduled,
            participant=participant,
            actual_date=data["actual_date"],
            reason=data["reason"],
            safety_follow_up=data["kind"] == Visit.Kind.SAFETY,
            weight_kg=data["weight_kg"],
        )
        if visit is not None:
            messages.success(request, f"{visit.label} on {visit.actual_date:%Y-%m-%d} added.")
            return redirect(_participant_url(participant, f"visit-{visit.pk}"))
    return _form_page(request, participant, form, title="Add an unscheduled or safety visit", submit="Add visit")


# ---------------------------------------------------------------------------------------------
# Disease activity, MRI, MMTT (per visit) and relapse (per participant)
# ---------------------------------------------------------------------------------------------


def _visit_page(
    request, visit: Visit, form, *, title: str, submit: str, template: str = "trials/visit_form.html", **extra
):
    participant = visit.participant
    context = {
        "study": participant.study,
        "participant": participant,
        "visit": visit,
        "form": form,
        "title": title,
        "submit_label": submit,
        **extra,
    }
    return web.render_form(request, template, context)


@login_required
@require_http_methods(["GET", "POST"])
def assessment_record(request, pk: int):
    visit = selectors.visit_get(user=request.user, pk=pk, write=True)
    indication = visit.participant.study.indication
    existing = _one_to_one(visit, "assessment")
    initial = {}
    if existing is not None:
        initial = {name: getattr(existing, name) for name in services.REQUIRED_FIELDS[indication]}
        initial["version"] = existing.version
    form = forms.AssessmentForm(
        request.POST or None, indication=indication, editing=existing is not None, initial=initial
    )
    if request.method == "POST" and form.is_valid():
        saved = web.submit(
            request,
            form,
            services.assessment_record,
            visit=visit,
            values=form.values(),
            reason=form.cleaned_data.get("reason", ""),
            expected_version=form.cleaned_data["version"],
        )
        if saved is not None:
            messages.success(request, f"{visit.label}: disease-activity assessment saved.")
            return redirect(_participant_url(visit.participant, f"visit-{visit.pk}"))
    verb = "Correct" if existing else "Record"
    return _visit_page(
        request,
        visit,
        form,
        title=f"{verb} disease activity ({Indication(indication).label})",
        submit="Save assessment",
    )


@login_required
@require_http_methods(["GET", "POST"])
def mri_record(request, pk: int):
    visit = selectors.visit_get(user=request.user, pk=pk, write=True)
    form = forms.MRIForm(request.POST or None, initial={"scan_date": visit.actual_date})
    if request.method == "POST" and form.is_valid():
        saved = web.submit(request, form, services.mri_record, visit=visit, **form.cleaned_data)
        if saved is not None:
            messages.success(request, f"{visit.label}: MRI read saved.")
            return redirect(_participant_url(visit.participant, f"visit-{visit.pk}"))
    return _visit_page(
        request, visit, form, title="Record the MRI read", submit="Save MRI read", existing=_one_to_one(visit, "mri")
    )


@login_required
@require_http_methods(["GET", "POST"])
def mmtt_record(request, pk: int):
    visit = selectors.visit_get(user=request.user, pk=pk, write=True)
    form = forms.MMTTForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        saved = web.submit(
            request, form, services.mmtt_record, visit=visit, samples=form.samples(), unit=form.cleaned_data["unit"]
        )
        if saved is not None:
            messages.success(request, f"{visit.label}: MMTT with {len(saved)} samples saved.")
            return redirect(_participant_url(visit.participant, f"visit-{visit.pk}"))
    return _visit_page(
        request,
        visit,
        form,
        title="Record the mixed-meal tolerance test",
        submit="Save MMTT",
        template="trials/mmtt_form.html",
        samples=list(visit.mmtt_samples.all()),
    )


@login_required
@require_http_methods(["GET", "POST"])
def relapse_record(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk, write=True)
    form = forms.RelapseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        relapse = idempotency.submit_once(
            request, form, services.relapse_record, participant=participant, **form.cleaned_data
        )
        if relapse is not None:
            messages.success(request, f"Relapse with onset {relapse.onset_date:%Y-%m-%d} recorded.")
            return redirect(_participant_url(participant, "relapses"))
    return _form_page(request, participant, form, title="Record a relapse", submit="Record relapse")


@login_required
@require_http_methods(["GET", "POST"])
def rescue_therapy_record(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk, write=True)
    form = forms.RescueTherapyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        therapy = idempotency.submit_once(
            request, form, services.rescue_therapy_record, participant=participant, **form.cleaned_data
        )
        if therapy is not None:
            messages.success(request, f"Rescue therapy {therapy.agent} from {therapy.start_date:%Y-%m-%d} recorded.")
            return redirect(_participant_url(participant, "rescue-therapies"))
    return _form_page(
        request,
        participant,
        form,
        title="Record a rescue therapy",
        submit="Record rescue therapy",
        intro="A rescue or new disease-modifying therapy started after the infusion.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def insulin_dose_record(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk, write=True)
    form = forms.InsulinDoseForm(request.POST or None, initial={"source": "diary"})
    if request.method == "POST" and form.is_valid():
        change = idempotency.submit_once(
            request, form, services.insulin_dose_record, participant=participant, **form.cleaned_data
        )
        if change is not None:
            messages.success(
                request, f"Insulin {change.total_daily_units} U/day from {change.effective_date:%Y-%m-%d} recorded."
            )
            return redirect(_participant_url(participant, "insulin"))
    return _form_page(
        request,
        participant,
        form,
        title="Record an insulin dose change",
        submit="Record dose change",
        intro="Each entry holds from its date until the next change.",
    )


# ---------------------------------------------------------------------------------------------
# Disposition
# ---------------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def disposition_record(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk, write=True)
    form = forms.DispositionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        disposition = idempotency.submit_once(
            request, form, services.disposition_record, participant=participant, **form.cleaned_data
        )
        if disposition is not None:
            messages.success(request, f"Disposition recorded: {disposition.get_kind_display().lower()}.")
            return redirect(_participant_url(participant, "disposition"))
    return _form_page(
        request,
        participant,
        form,
        title="Record the disposition",
        submit="Record disposition",
        intro="Ends the participant's study participation; only safety follow-up can be recorded afterwards.",
    )


# ---------------------------------------------------------------------------------------------
# Integrity: audit history, audit export, locks, voiding, e-signatures, emergency unblinding
# ---------------------------------------------------------------------------------------------


@login_required
@require_GET
def participant_history(request, pk: int):
    """The casebook's audit trail: one entry per event with the fields it changed, who, when (UTC)
    and why, filtered by form, field, user and date, newest first, a page at a time."""
    participant = selectors.participant_get(user=request.user, pk=pk)
    trail = audit_trail.casebook_trail(participant, unblinded=selectors.is_unblinded(request.user, participant.study))
    filter_form = audit_trail.TrailFilterForm(request.GET or None, trail=trail)
    page = Paginator(filter_form.apply(trail), audit_trail.PAGE_SIZE).get_page(request.GET.get("page"))
    audit_trail.label_events(page.object_list, participant=participant)
    context = {
        "study": participant.study,
        "participant": participant,
        "page": page,
        "total": len(trail),
        "filter_form": filter_form,
        "title": "Audit trail",
    }
    return render(request, "trials/participant_history.html", context)


@login_required
@require_GET
def study_audit_export(request, study_code: str):
    """The whole audit trail of a study as CSV, for data managers (blinding applies), streamed."""
    study = selectors.study_get(user=request.user, code=study_code)
    if not selectors.has_role(request.user, study=study, roles={Role.DATA_MANAGER}):
        raise PermissionDenied("Only data managers export the audit trail.")
    blocks = study_audit_csv(study, unblinded=selectors.is_unblinded(request.user, study))
    return csv_response(blocks, filename=f"{study.code}-audit-trail.csv")


def _require(request, allowed: bool, message: str) -> None:
    if not allowed:
        raise PermissionDenied(message)


@login_required
@require_http_methods(["GET", "POST"])
def casebook_lock(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk)
    _require(
        request,
        selectors.has_role(request.user, study=participant.study, roles={Role.DATA_MANAGER}),
        "Only data managers lock casebooks.",
    )
    locking = not participant.is_locked
    form = forms.ReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        saved = web.submit(
            request,
            form,
            services.casebook_set_locked,
            participant=participant,
            locked=locking,
            reason=form.cleaned_data["reason"],
        )
        if saved is not None:
            messages.success(request, f"Casebook {'locked' if locking else 'unlocked'}.")
            return redirect(_participant_url(participant))
    return _form_page(
        request,
        participant,
        form,
        title="Lock casebook" if locking else "Unlock casebook",
        submit="Lock" if locking else "Unlock",
        intro="A locked casebook refuses every change, from the pages, the API and the admin.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def study_lock(request, study_code: str):
    study = selectors.study_get(user=request.user, code=study_code)
    _require(
        request, selectors.has_role(request.user, study=study, roles={Role.DATA_MANAGER}), "Only data managers lock."
    )
    locking = not study.is_locked
    form = forms.ReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        saved = web.submit(
            request, form, services.study_set_locked, study=study, locked=locking, reason=form.cleaned_data["reason"]
        )
        if saved is not None:
            messages.success(request, f"Study {study.code} {'locked' if locking else 'unlocked'}.")
            return redirect("trials:participant_list", study_code=study.code)
    context = {
        "study": study,
        "form": form,
        "title": f"{'Lock' if locking else 'Unlock'} study {study.code}",
        "submit_label": "Lock study" if locking else "Unlock study",
        "intro": "Database lock before an interim analysis: every casebook of the study refuses changes.",
    }
    return web.render_form(request, "trials/study_form.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def visit_void(request, pk: int):
    visit = selectors.visit_get(user=request.user, pk=pk, write=True)
    form = forms.ReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        saved = web.submit(request, form, services.record_void, record=visit, reason=form.cleaned_data["reason"])
        if saved is not None:
            messages.success(request, f"{visit.label} voided; it stays in the audit trail.")
            return redirect(_participant_url(visit.participant, "visits"))
    return _form_page(
        request,
        visit.participant,
        form,
        title=f"Void {visit.label}",
        submit="Void",
        intro="Voiding keeps the record and its history but removes it from analyses and exports.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def casebook_sign(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk)
    _require(
        request,
        selectors.has_role(request.user, study=participant.study, roles={Role.INVESTIGATOR}, site=participant.site),
        "Only the site's investigators sign casebooks.",
    )
    form = forms.SignatureForm(request.POST or None, meanings=Signature.Meaning.choices)
    if request.method == "POST" and form.is_valid():
        saved = web.submit(
            request,
            form,
            services.record_sign,
            record=participant,
            password=form.cleaned_data["password"],
            meaning=form.cleaned_data["meaning"],
            http_request=request,
        )
        if saved is not None:
            messages.success(request, f"Signed: {saved}.")
            return redirect(_participant_url(participant, "integrity"))
    return _form_page(request, participant, form, title="Sign casebook", submit="Sign")


@login_required
@require_http_methods(["GET", "POST"])
def participant_unblind(request, pk: int):
    participant = selectors.participant_get(user=request.user, pk=pk)
    _require(
        request,
        participant.study.is_blinded
        and selectors.has_role(request.user, study=participant.study, roles={Role.INVESTIGATOR}, site=participant.site),
        "Only the site's investigators can unblind, and only in a blinded study.",
    )
    form = forms.UnblindForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        arm = web.submit(
            request,
            form,
            services.participant_unblind,
            participant=participant,
            password=form.cleaned_data["password"],
            reason=form.cleaned_data["reason"],
            http_request=request,
        )
        if arm is not None:
            # Rendered, never redirected: a message would carry the arm through the session.
            context = {"study": participant.study, "participant": participant, "arm": arm, "title": "Unblinded"}
            response = render(request, "trials/unblinded.html", context)
            response["Cache-Control"] = "no-store"
            return response
    return _form_page(
        request,
        participant,
        form,
        title="Emergency unblinding",
        submit="Unblind this participant",
        intro="Reveals this participant's arm to you only. The medical monitors are notified and it is audited.",
    )
