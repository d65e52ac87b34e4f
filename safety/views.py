"""The safety pages: AE entry and grading for coordinators, SAE reporting, and the medical monitors'
dashboard, report list and dose-escalation page. Thin, like ``trials.views``:

- every object is fetched through a chokepoint (``trials.selectors.participant_get``,
  ``safety.selectors.adverse_event_get`` and the case/report getters built on it): 404 outside the
  user's scope, 403 on a write page for a read-only role, for GET and POST alike;
- forms check shape; each write is one call to a function in ``safety.services``, whose refusal is
  shown on the form's fields (nothing was saved); a stale edit is a message with HTTP 409.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from safety import forms, problems, selectors, services
from safety.models import AECategory, CTCAETerm, DLTAdjudication, ExpeditedReport, SAECase
from trials import idempotency, web
from trials.models import Role
from trials.selectors import can_enter_data, participant_get, study_get

# ---------------------------------------------------------------------------------------------
# Helpers (calling a service and showing its refusal: trials/web.py)
# ---------------------------------------------------------------------------------------------


def _posted(request):
    """The POST data of a submission, even an empty one (``request.POST or None`` would treat an
    empty submission as a first visit and show no errors)."""
    return request.POST if request.method == "POST" else None


def _require_medical_monitor(user, study) -> None:
    if not selectors.has_role(user, study, {Role.MEDICAL_MONITOR}):
        raise PermissionDenied("Only the study's medical monitor can do this.")


def _ae_url(ae) -> str:
    return reverse("safety:ae_detail", args=[ae.pk])


def _causality_rules(study) -> str:
    return services.safety_profile(study).causality_rules


# ---------------------------------------------------------------------------------------------
# Adverse events of a participant
# ---------------------------------------------------------------------------------------------


@login_required
@require_GET
def ae_list(request, pk: int):
    participant = participant_get(user=request.user, pk=pk)
    aes = selectors.adverse_event_list(user=request.user, participant=participant).select_related("sae_case")
    context = {
        "study": participant.study,
        "participant": participant,
        "aes": aes,
        "can_write": can_enter_data(request.user, participant),
        "title": "Adverse events",
    }
    return render(request, "safety/ae_list.html", context)


def _ae_form(request, participant, *, ae=None):
    profile = services.safety_profile(participant.study)
    terms = selectors.ctcae_terms(version=profile.ctcae_version)
    rules = ae.causality_rules if ae is not None else profile.causality_rules
    initial = forms.AdverseEventForm.initial_from(ae) if ae is not None else {}
    form = forms.AdverseEventForm(
        _posted(request), terms=terms, causality_rules=rules, editing=ae is not None, initial=initial
    )
    form.fields["ctcae_term"].widget.attrs.update(
        {
            "hx-get": reverse("safety:ctcae_grades"),
            "hx-target": "#grade-help",
            "hx-swap": "outerHTML",
            "hx-trigger": "change",
        }
    )
    return form


def _selected_term(form) -> CTCAETerm | None:
    value = form["ctcae_term"].value()
    if not value:
        return None
    return CTCAETerm.objects.filter(pk=value).first() if str(value).isdigit() else None


def _ae_form_page(request, participant, form, *, ae=None, title: str, submit: str) -> HttpResponse:
    context = {
        "study": participant.study,
        "participant": participant,
        "form": form,
        "ae": ae,
        "title": title,
        "submit_label": submit,
        "term": _selected_term(form),
        "criteria": [form[name] for name in services.SERIOUSNESS_CRITERIA],
    }
    return web.render_form(request, "safety/ae_form.html", context)


def _add_rule_problems(request, form, participant, *, ae=None) -> None:
    """The form refused some fields: also show what the service would refuse in the others, so the
    user sees every problem in one answer (nothing is saved)."""
    if ae is None:
        fields = form.service_kwargs()
    else:
        fields = {name: value for name, value in form.service_kwargs().items() if name not in form.errors}
    found = problems.adverse_event_problems(
        actor=request.user, participant=participant, fields=fields, adverse_event=ae
    )
    for field, field_messages in found.items():
        if field in form.fields and field not in form.errors:
            for message in field_messages:
                form.add_error(field, message)


def _serious_message(request, ae) -> None:
    case = getattr(ae, "sae_case", None)
    if case is None:
        return
    report = case.reports.filter(kind="site_24h").first()
    if report is not None:
        messages.warning(
            request,
            f"SAE case {case.case_number} opened. Report it to the sponsor by {report.due_at:%Y-%m-%d %H:%M} UTC "
            "(24 hours from site awareness).",
        )


@login_required
@require_http_methods(["GET", "POST"])
def ae_create(request, pk: int):
    participant = participant_get(user=request.user, pk=pk, write=True)
    form = _ae_form(request, participant)
    if request.method == "POST" and not form.is_valid():
        _add_rule_problems(request, form, participant)
    elif request.method == "POST":
        # A second submission of the same form (double-click, resend) returns the first AE: one AE,
        # one SAE case, one 24-hour report.
        ae = idempotency.submit_once(
            request, form, services.adverse_event_record, participant=participant, **form.service_kwargs()
        )
        if ae is not None:
            messages.success(request, f"AE {ae.sequence} recorded: {ae.verbatim_term}, grade {ae.grade}.")
            _serious_message(request, ae)
            return redirect(_ae_url(ae))
    return _ae_form_page(request, participant, form, title="Record an adverse event", submit="Record AE")


@login_required
@require_http_methods(["GET", "POST"])
def ae_update(request, pk: int):
    ae = selectors.adverse_event_get(user=request.user, pk=pk, write=True)
    participant = ae.participant
    form = _ae_form(request, participant, ae=ae)
    if request.method == "POST" and not form.is_valid():
        _add_rule_problems(request, form, participant, ae=ae)
    elif request.method == "POST":
        changes = form.changes(ae)
        if not changes:
            messages.info(request, "Nothing was changed.")
            return redirect(_ae_url(ae))
        saved = web.submit(
            request,
            form,
            services.adverse_event_update,
            adverse_event=ae,
            changes=changes,
            reason=form.cleaned_data.get("reason", ""),
            expected_version=form.cleaned_data.get("version"),
        )
        if saved is not None:
            messages.success(request, f"AE {saved.sequence} updated (version {saved.version}).")
            if not ae.serious and saved.serious:
                _serious_message(request, saved)
            return redirect(_ae_url(saved))
    return _ae_form_page(request, participant, form, ae=ae, title=f"Correct AE {ae.sequence}", submit="Save changes")


@login_required
@require_GET
def ctcae_grades(request):
    """htmx: the grade descriptions of the chosen CTCAE term, shown beside the grade choice."""
    value = request.GET.get("ctcae_term", "")
    term = CTCAETerm.objects.filter(pk=value).first() if value.isdigit() else None
    return render(request, "safety/partials/grade_help.html", {"term": term})


@login_required
@require_GET
def ae_detail(request, pk: int):
    ae = selectors.adverse_event_get(user=request.user, pk=pk)
    participant = ae.participant
    now = timezone.now()
    # The AE came through the chokepoint, so its case (kept also when the AE is voided) is in scope.
    case = SAECase.objects.filter(adverse_event=ae).prefetch_related("reports").first()
    study = participant.study
    context = {
        "study": study,
        "participant": participant,
        "ae": ae,
        "title": f"AE {ae.sequence}",
        "crs": ae.crs_assessments.filter(voided_at=None).order_by("assessed_at"),
        "icans": ae.icans_assessments.filter(voided_at=None).order_by("assessed_at"),
        "case": case,
        "versions": list(case.versions.order_by("number")) if case else [],
        "reports": selectors.report_rows(case.reports.all(), now=now) if case else [],
        "can_write": can_enter_data(request.user, participant),
        "is_medical_monitor": selectors.has_role(request.user, study, {Role.MEDICAL_MONITOR}),
        "grade_text": ae.ctcae_term.grade_text(ae.grade) if ae.grade_scale == "CTCAE" else "",
        "is_crs": ae.category == AECategory.CRS,
        "is_icans": ae.category == AECategory.ICANS,
    }
    return render(request, "safety/ae_detail.html", context)


# ---------------------------------------------------------------------------------------------
# CRS and ICANS grading (computed grade previewed with htmx)
# ---------------------------------------------------------------------------------------------


def _crs_inputs(data) -> dict:
    return {name: data.get(name) for name in services.CRS_FINDINGS}


def _icans_inputs(data) -> dict:
    return {
        "age_years": data.get("age_years"),
        "developmental_delay": data.get("developmental_delay"),
        "ice_items": {
            item: data.get(f"ice_{item}") for item in ("orientation", "naming", "commands", "writing", "attention")
        },
        "capd_score": data.get("capd_score"),
        "consciousness": data.get("consciousness"),
        "seizure": data.get("seizure"),
        "motor": data.get("motor"),
        "raised_icp": data.get("raised_icp"),
        "death_due_to_icans": data.get("death_due_to_icans"),
    }


def _assessment_view(request, pk: int, *, kind: str):
    ae = selectors.adverse_event_get(user=request.user, pk=pk, write=True)
    is_crs = kind == "crs"
    form_class = forms.CRSForm if is_crs else forms.ICANSForm
    initial = {"assessed_at": timezone.now()}
    if not is_crs:
        participant = ae.participant
        initial["age_years"] = timezone.now().year - participant.birth_year
    form = form_class(_posted(request), initial=initial)
    computed, problem = None, ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if request.htmx and request.POST.get("preview"):
            try:
                if is_crs:
                    computed = services.crs_compute(**_crs_inputs(data))
                else:
                    computed = services.icans_compute(**_icans_inputs(data))[1]
            except ValidationError as exc:
                problem = " ".join(exc.messages)
            return render(request, "safety/partials/computed_grade.html", {"computed": computed, "problem": problem})
        service = services.crs_assessment_record if is_crs else services.icans_assessment_record
        saved = idempotency.submit_once(
            request, form, service, adverse_event=ae, **{k: v for k, v in data.items() if k != "time_zone"}
        )
        if saved is not None:
            note = f" (investigator override of computed grade {saved.computed_grade})" if saved.overridden else ""
            messages.success(
                request, f"{saved.scale}: grade {saved.final_grade}{note}. {saved.computed_reason.capitalize()}."
            )
            return redirect(_ae_url(ae))
    elif request.method == "POST" and request.htmx and request.POST.get("preview"):
        return render(request, "safety/partials/computed_grade.html", {"problem": "Complete the findings."})
    context = {
        "study": ae.participant.study,
        "participant": ae.participant,
        "ae": ae,
        "form": form,
        "title": f"{'CRS' if is_crs else 'ICANS'} grading (ASTCT) for AE {ae.sequence}",
        "submit_label": "Save assessment",
        "preview_url": request.path,
    }
    return web.render_form(request, "safety/assessment_form.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def crs_assess(request, pk: int):
    return _assessment_view(request, pk, kind="crs")


@login_required
@require_http_methods(["GET", "POST"])
def icans_assess(request, pk: int):
    return _assessment_view(request, pk, kind="icans")


# ---------------------------------------------------------------------------------------------
# SAE: the site's reports, the sponsor's assessment and submissions
# ---------------------------------------------------------------------------------------------


def _simple_form(request, form, *, study, title: str, submit: str, back: str, intro: str = "", participant=None):
    context = {
        "study": study,
        "participant": participant,
        "form": form,
        "title": title,
        "submit_label": submit,
        "back_url": back,
        "intro": intro,
    }
    return web.render_form(request, "safety/simple_form.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def sae_report(request, pk: int):
    """The site sends the initial SAE report, or a follow-up once the initial one went out."""
    case = selectors.sae_case_get(user=request.user, pk=pk)
    ae = selectors.adverse_event_get(user=request.user, pk=case.adverse_event_id, write=True)
    initial = case.sponsor_received_at is None
    form = forms.SAEReportForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        service = services.sae_report_to_sponsor if initial else services.sae_follow_up_submit
        # A double-click must not turn the second copy of the initial report into a follow-up.
        version = idempotency.submit_once(request, form, service, case=case, narrative=form.cleaned_data["narrative"])
        if version is not None:
            messages.success(request, f"{version.label} of {case.case_number} sent to the sponsor.")
            return redirect(_ae_url(ae))
    title = f"{'Initial SAE report' if initial else 'SAE follow-up'}: {case.case_number}"
    intro = (
        "Sends the case to the sponsor's safety desk; this stops the site's 24-hour clock."
        if initial
        else "Sends the AE as it is now, with your narrative of the new information."
    )
    return _simple_form(
        request,
        form,
        study=ae.participant.study,
        participant=ae.participant,
        title=title,
        submit="Send",
        back=_ae_url(ae),
        intro=intro,
    )


@login_required
@require_http_methods(["GET", "POST"])
def sae_assess(request, pk: int):
    case = selectors.sae_case_get(user=request.user, pk=pk)
    ae = case.adverse_event
    study = ae.participant.study
    _require_medical_monitor(request.user, study)
    editing = case.assessed_at is not None
    initial = {}
    if editing:
        initial = {
            "sponsor_causality": case.sponsor_causality,
            "causality_rationale": case.causality_rationale,
            "expected": {True: "yes", False: "no"}.get(case.expected, ""),
            "expectedness_rationale": case.expectedness_rationale,
            "version": case.version,
        }
    form = forms.SponsorAssessmentForm(
        _posted(request), causality_rules=ae.causality_rules, editing=editing, initial=initial
    )
    if request.method == "POST" and form.is_valid():
        saved = web.submit(request, form, services.sae_sponsor_assess, case=case, **form.service_kwargs())
        if saved is not None:
            verdict = "a SUSAR: the expedited report is due" if saved.is_susar else "not a SUSAR"
            messages.success(request, f"{case.case_number} assessed: {verdict} ({saved.susar_reason}).")
            return redirect(_ae_url(ae))
    investigator = ae.causality_product or "not yet assessed"
    return _simple_form(
        request,
        form,
        study=study,
        participant=ae.participant,
        title=f"Sponsor assessment: {case.case_number}",
        submit="Save assessment",
        back=_ae_url(ae),
        intro=f"{ae.ctcae_term.term}, grade {ae.grade}, onset {ae.onset}. Investigator causality to the product: "
        f"{investigator}. The sponsor cannot downgrade it; both opinions are kept.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def report_submit(request, pk: int):
    report = selectors.report_get(user=request.user, pk=pk)
    ae = report.case.adverse_event
    study = ae.participant.study
    _require_medical_monitor(request.user, study)
    form = forms.ReportSubmitForm(_posted(request), initial={"version": report.version})
    if request.method == "POST" and form.is_valid():
        saved = web.submit(
            request,
            form,
            services.expedited_report_submit,
            report=report,
            submitted_at=form.cleaned_data["submitted_at"],
            acknowledgement=form.cleaned_data["acknowledgement"],
            expected_version=form.cleaned_data["version"],
        )
        if saved is not None:
            late = f", {saved.days_late} day(s) late" if saved.days_late else ", on time"
            messages.success(request, f"{saved.get_kind_display()} for {report.case.case_number} submitted{late}.")
            return redirect(reverse("safety:reports", args=[study.code]))
    due = (
        f"{report.due_date:%Y-%m-%d} ({report.time_zone})" if report.due_date else f"{report.due_at:%Y-%m-%d %H:%M} UTC"
    )
    return _simple_form(
        request,
        form,
        study=study,
        title=f"{report.get_kind_display()}: {report.case.case_number}",
        submit="Record submission",
        back=reverse("safety:reports", args=[study.code]),
        intro=f"Due {due}. Record when the report went to {report.recipient}.",
    )


# ---------------------------------------------------------------------------------------------
# Study level: dashboard, reports, dose escalation, DLT adjudication
# ---------------------------------------------------------------------------------------------


@login_required
@require_GET
def dashboard(request, study_code: str):
    study = study_get(user=request.user, code=study_code)
    data = selectors.safety_dashboard(user=request.user, study=study, now=timezone.now())
    return render(request, "safety/dashboard.html", {"study": study, "d": data})


@login_required
@require_GET
def reports(request, study_code: str):
    study = study_get(user=request.user, code=study_code)
    now = timezone.now()
    cases = [
        (case, selectors.report_rows(case.reports.all(), now=now))
        for case in selectors.sae_case_list(user=request.user, study=study).filter(voided_at=None)
    ]
    context = {
        "study": study,
        "cases": cases,
        "now": now,
        "is_medical_monitor": selectors.has_role(request.user, study, {Role.MEDICAL_MONITOR}),
        "pending": ExpeditedReport.Status.PENDING,
    }
    return render(request, "safety/reports.html", context)


@login_required
@require_GET
def escalation(request, study_code: str):
    study = study_get(user=request.user, code=study_code)
    selectors.require_study_wide(request.user, study)
    today = timezone.now().date()
    cohorts = selectors.cohort_escalation(study=study, today=today)
    context = {
        "study": study,
        "cohorts": cohorts,
        "stopping": selectors.stopping_rule_status(study=study, today=today, cohorts=cohorts),
        "definition": selectors.dlt_definition(study),
        "definition_text": selectors.dlt_definition_text(study),
        "is_medical_monitor": selectors.has_role(request.user, study, {Role.MEDICAL_MONITOR}),
    }
    return render(request, "safety/escalation.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def dlt_adjudicate(request, pk: int):
    participant = participant_get(user=request.user, pk=pk)
    study = participant.study
    _require_medical_monitor(request.user, study)
    existing = DLTAdjudication.objects.filter(participant=participant).first()
    initial = {}
    if existing is not None:
        initial = {
            "evaluable": existing.evaluable,
            "is_dlt": existing.is_dlt,
            "adverse_event": existing.adverse_event_id,
            "rationale": existing.rationale,
            "version": existing.version,
        }
    aes = participant.adverse_events.filter(voided_at=None).select_related("ctcae_term").order_by("sequence")
    form = forms.DLTAdjudicationForm(
        _posted(request), adverse_events=aes, editing=existing is not None, initial=initial
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        saved = web.submit(
            request,
            form,
            services.dlt_adjudicate,
            participant=participant,
            evaluable=data["evaluable"],
            is_dlt=data["is_dlt"],
            adverse_event=data["adverse_event"],
            rationale=data["rationale"],
            password=data["password"],
            reason=data.get("reason", ""),
            expected_version=data.get("version"),
            request=request,
        )
        if saved is not None:
            messages.success(request, f"DLT adjudication of {participant.subject_code} signed by {saved.signer_name}.")
            return redirect(reverse("safety:escalation", args=[study.code]))
    return _simple_form(
        request,
        form,
        study=study,
        participant=participant,
        title=f"DLT adjudication: {participant.subject_code}",
        submit="Sign decision",
        back=reverse("safety:escalation", args=[study.code]),
        intro="The safety review committee's decision, signed by re-entering your password.",
    )
