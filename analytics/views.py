"""The durability pages: one page per study (definition, data cuts, request form, the job list with
htmx-polled progress bars, the latest result) and one page per analysis (curves, tables, the
per-participant remission timeline). Thin, as the coordinators' pages are (trials/views.py): every
object comes through ``analytics.selectors`` and every write is one service call.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from analytics import forms, presentation, selectors, services
from analytics.models import AnalysisJob
from analytics.selectors import AnalyticsAccess

TIMELINE_PAGE = 50
QUEUE_DOWN = "the task queue is unreachable just now, so it will start as soon as the queue is back."


def _attach(form, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


def _forms(access: AnalyticsAccess, cuts, data=None, which: str = "") -> dict[str, Any]:
    study = access.study
    return {
        "definition_form": forms.DefinitionForm(data if which == "definition" else None, indication=study.indication),
        "cut_form": forms.CutForm(
            data if which == "cut" else None, initial={"cut_date": timezone.now().date().isoformat()}
        ),
        "request_form": forms.RequestForm(data if which == "request" else None, cuts=cuts, sees_arm=access.sees_arm),
    }


def _page(request: HttpRequest, access: AnalyticsAccess, *, status: int = 200, **overrides) -> HttpResponse:
    study = access.study
    cuts = list(selectors.data_cut_list(user=request.user, study=study)[:50])
    jobs = list(selectors.job_list(user=request.user, study=study).select_related("result")[:50])
    latest = next((job for job in jobs if job.status == AnalysisJob.Status.SUCCEEDED), None)
    definition = selectors.definition_current(study=study)
    context = {
        "study": study,
        "access": access,
        "definition": definition,
        "definition_view": presentation.definition_view(definition, study.indication) if definition else None,
        "cuts": cuts,
        "job_rows": [presentation.job_row(job) for job in jobs],
        "polling": any(job.is_active for job in jobs),
        "latest": latest,
        "latest_view": presentation.result_view(latest) if latest else None,
        **_forms(access, cuts),
        **overrides,
    }
    return render(request, "analytics/durability.html", context, status=status)


@login_required
@require_GET
def durability(request, study_code: str):
    return _page(request, selectors.study_for_analytics(user=request.user, code=study_code))


@login_required
@require_http_methods(["GET", "POST"])
def definition_set(request, study_code: str):
    access = selectors.study_for_analytics(user=request.user, code=study_code)
    if not access.can_define:
        raise PermissionDenied("Your role cannot change the remission definition.")
    if request.method == "GET":
        return _page(request, access, open_form="definition")
    form = forms.DefinitionForm(request.POST, indication=access.study.indication)
    if form.is_valid():
        try:
            config = services.remission_definition_set(
                actor=request.user,
                study=access.study,
                name=form.cleaned_data["name"],
                rule=form.cleaned_data["rule"],
                parameters=form.cleaned_data["parameters"],
                sap=form.sap_options(),
                reason=form.cleaned_data["reason"],
            )
        except ValidationError as exc:
            _attach(form, exc)
        else:
            messages.success(request, f"Remission definition version {config.version} saved.")
            return redirect("analytics:durability", study_code=study_code)
    return _page(request, access, status=400, definition_form=form, open_form="definition")


@login_required
@require_http_methods(["GET", "POST"])
def cut_create(request, study_code: str):
    access = selectors.study_for_analytics(user=request.user, code=study_code)
    if not access.can_cut:
        raise PermissionDenied("Your role cannot make data cuts.")
    if request.method == "GET":
        return _page(request, access, open_form="cut")
    form = forms.CutForm(request.POST)
    if form.is_valid():
        try:
            cut = services.datacut_create(
                actor=request.user,
                study=access.study,
                cut_date=form.cleaned_data["cut_date"],
                label=form.cleaned_data["label"],
            )
        except ValidationError as exc:
            _attach(form, exc)
        else:
            if selectors.cut_waiting_for_queue(data_cut=cut):
                messages.warning(
                    request,
                    f"Data cut #{cut.pk} as of {cut.cut_date:%Y-%m-%d} frozen. Its per-assessment "
                    f"derivations are queued; {QUEUE_DOWN}",
                )
            else:
                messages.success(request, f"Data cut #{cut.pk} as of {cut.cut_date:%Y-%m-%d} frozen.")
            return redirect("analytics:durability", study_code=study_code)
    return _page(request, access, status=400, cut_form=form, open_form="cut")


@login_required
@require_http_methods(["GET", "POST"])
def analysis_request(request, study_code: str):
    access = selectors.study_for_analytics(user=request.user, code=study_code)
    if request.method == "GET":
        return _page(request, access)
    cuts = list(selectors.data_cut_list(user=request.user, study=access.study)[:50])
    form = forms.RequestForm(request.POST, cuts=cuts, sees_arm=access.sees_arm)
    if form.is_valid():
        cut = next(c for c in cuts if c.pk == form.cleaned_data["data_cut"])
        try:
            job = services.analysis_request(actor=request.user, data_cut=cut, spec=form.spec())
        except ValidationError as exc:
            _attach(form, exc)
        else:
            if job.status == AnalysisJob.Status.SUCCEEDED:
                messages.info(request, "This analysis of this cut has already run: here is its stored result.")
                return redirect("analytics:job_detail", pk=job.pk)
            job = selectors.job_get(user=request.user, pk=job.pk)
            if job.waiting_for_queue:
                messages.warning(request, f"Analysis #{job.pk} queued; {QUEUE_DOWN}")
            else:
                messages.success(request, f"Analysis #{job.pk} queued.")
            return redirect("analytics:durability", study_code=study_code)
    return _page(request, access, status=400, request_form=form, open_form="request")


@login_required
@require_GET
def job_list(request, study_code: str):
    """The job table alone, for htmx polling; it stops polling itself once nothing is running.
    Opened directly (a bookmark, a new tab), it is the whole durability page, not a bare fragment."""
    access = selectors.study_for_analytics(user=request.user, code=study_code)
    if not request.htmx:
        return _page(request, access)
    jobs = list(selectors.job_list(user=request.user, study=access.study)[:50])
    context = {
        "study": access.study,
        "job_rows": [presentation.job_row(job) for job in jobs],
        "polling": any(job.is_active for job in jobs),
    }
    response = render(request, "analytics/partials/job_list.html", context)
    if request.htmx and not context["polling"]:
        # The last poll: a job has just finished, so reload the page to show its result.
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_GET
def job_detail(request, pk: int):
    return _job_page(request, selectors.job_get(user=request.user, pk=pk))


def _job_page(request: HttpRequest, job: AnalysisJob) -> HttpResponse:
    access = selectors.analytics_access(user=request.user, study=job.data_cut.study)
    if not access.can_view:  # pragma: no cover - job_get already limits to analytics roles
        raise PermissionDenied
    context: dict[str, Any] = {
        "study": job.data_cut.study,
        "job": job,
        "job_warning": presentation.job_warning(job),
        "view": None,
    }
    if job.status == AnalysisJob.Status.SUCCEEDED:
        context["view"] = presentation.result_view(job)
        participants = selectors.timeline_participants(data_cut=job.data_cut)
        page = Paginator(participants, TIMELINE_PAGE).get_page(request.GET.get("page"))
        timeline = selectors.remission_timeline(data_cut=job.data_cut, participants=list(page))
        context.update(
            timeline=page,
            timeline_rows=[presentation.timeline_row(p) for p in timeline],
            cut_waiting_for_queue=selectors.cut_waiting_for_queue(data_cut=job.data_cut),
        )
    return render(request, "analytics/job_detail.html", context)


@login_required
@require_GET
def job_status(request, pk: int):
    """The status box of one job, polled by htmx; a finished job reloads its page. Opened directly,
    it is the job's whole page."""
    job = selectors.job_get(user=request.user, pk=pk)
    if not request.htmx:
        return _job_page(request, job)
    response = render(
        request, "analytics/partials/job_status.html", {"job": job, "job_warning": presentation.job_warning(job)}
    )
    if not job.is_active:
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_GET
def plot_png(request, pk: int, name: str):
    job = selectors.job_get(user=request.user, pk=pk)
    if job.status != AnalysisJob.Status.SUCCEEDED or name not in ("km", "cif", "pir"):
        return HttpResponse(status=404)
    data = bytes(getattr(job.result, f"{name}_png"))
    if not data:
        return HttpResponse(status=404)
    response = HttpResponse(data, content_type="image/png")
    response["Content-Disposition"] = f'inline; filename="analysis-{job.pk}-{name}.png"'
    return response
