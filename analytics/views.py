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

from analytics import forms, selectors, services
from analytics.compute import TIME_LABELS
from analytics.models import AnalysisJob
from analytics.selectors import AnalyticsAccess
from analytics.spec import CI_TRANSFORMS, ENDPOINT_LABELS, GROUPINGS

TIMELINE_PAGE = 50


def _svg(markup: str) -> str:
    """Matplotlib's SVG without its XML prolog, for inline use in HTML."""
    start = markup.find("<svg")
    return markup[start:] if start >= 0 else ""


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
    context = {
        "study": study,
        "access": access,
        "definition": selectors.definition_current(study=study),
        "cuts": cuts,
        "jobs": jobs,
        "polling": any(job.is_active for job in jobs),
        "latest": latest,
        "latest_view": _result_view(latest) if latest else None,
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
            messages.success(request, f"Analysis #{job.pk} queued.")
            return redirect("analytics:durability", study_code=study_code)
    return _page(request, access, status=400, request_form=form, open_form="request")


@login_required
@require_GET
def job_list(request, study_code: str):
    """The job table alone, for htmx polling; it stops polling itself once nothing is running."""
    access = selectors.study_for_analytics(user=request.user, code=study_code)
    jobs = list(selectors.job_list(user=request.user, study=access.study)[:50])
    context = {"study": access.study, "jobs": jobs, "polling": any(job.is_active for job in jobs)}
    response = render(request, "analytics/partials/job_list.html", context)
    if request.htmx and not context["polling"]:
        # The last poll: a job has just finished, so reload the page to show its result.
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_GET
def job_detail(request, pk: int):
    job = selectors.job_get(user=request.user, pk=pk)
    access = selectors.analytics_access(user=request.user, study=job.data_cut.study)
    if not access.can_view:  # pragma: no cover - job_get already limits to analytics roles
        raise PermissionDenied
    context: dict[str, Any] = {"study": job.data_cut.study, "job": job, "view": None}
    if job.status == AnalysisJob.Status.SUCCEEDED:
        context["view"] = _result_view(job)
        participants = selectors.timeline_participants(data_cut=job.data_cut)
        page = Paginator(participants, TIMELINE_PAGE).get_page(request.GET.get("page"))
        timeline = selectors.remission_timeline(data_cut=job.data_cut, participants=list(page))
        context.update(timeline=page, timeline_rows=[_timeline_row(p) for p in timeline])
    return render(request, "analytics/job_detail.html", context)


@login_required
@require_GET
def job_status(request, pk: int):
    """The status box of one job, polled by htmx; a finished job reloads its page."""
    job = selectors.job_get(user=request.user, pk=pk)
    response = render(request, "analytics/partials/job_status.html", {"job": job})
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


def _timeline_row(participant: dict) -> dict:
    """One participant's assessments in date order, each a chip: in remission, not, or not evaluable."""
    cells = []
    for a in participant["assessments"]:
        css = "na" if not a["adequate"] else ("in" if a["in_remission"] else "out")
        title = f"{a['visit_date']:%Y-%m-%d}" + (f": {a['note']}" if a["note"] else "")
        cells.append({"css": css, "day": a["study_day"], "title": title})
    return {"subject_code": participant["subject_code"], "cells": cells}


# ---------------------------------------------------------------------------------------------
# Presenting a result's numbers as table rows
# ---------------------------------------------------------------------------------------------


def _ci(interval: dict | None, digits: int = 3) -> str:
    if not interval or interval.get("lower") is None or interval.get("upper") is None:
        return "NE"
    return f"{interval['lower']:.{digits}f} – {interval['upper']:.{digits}f}"


def _num(value, digits: int = 3) -> str:
    return "NE" if value is None else f"{value:.{digits}f}"


def _days(value) -> str:
    return "not reached" if value is None else f"{value:g}"


def _result_view(job: AnalysisJob) -> dict[str, Any]:
    result = job.result
    numbers = result.numbers
    primary = numbers["ci_transform_primary"]
    other = "log-log" if primary == "log" else "log"
    key = {"log": "ci_log", "log-log": "ci_log_log"}
    km_rows = []
    for group in numbers["kaplan_meier"]["groups"]:
        median = group["median"]
        km_rows.append(
            {
                "group": group["group"],
                "n": group["n"],
                "events": group["events"],
                "median": _days(median["median"]),
                "median_ci": " – ".join(_days(median[key[primary]][side]) for side in ("lower", "upper")),
                "median_ci_other": " – ".join(_days(median[key[other]][side]) for side in ("lower", "upper")),
                "at": [
                    {
                        "label": TIME_LABELS.get(at["time"], f"{at['time']:g} d"),
                        "survival": _num(at["survival"]),
                        "ci": _ci(at[key[primary]]),
                        "ci_other": _ci(at[key[other]]),
                        "n_risk": at["n_risk"],
                    }
                    for at in group["survival_at"]
                ],
            }
        )
    cif_rows = []
    # jsonb does not keep key order: groups are shown in label order.
    for label, cif in sorted(numbers["cumulative_incidence"].items()):
        if cif.get("estimable") is False:
            cif_rows.append({"group": label, "reason": cif["reason"]})
            continue
        cif_rows.append(
            {
                "group": label,
                "at": [
                    {
                        "label": TIME_LABELS.get(at["time"], f"{at['time']:g} d"),
                        "cif": _num(at["cif"]),
                        "ci": _ci(at["ci"]),
                        "naive": _num(at["naive_one_minus_km"]),
                    }
                    for at in cif["at_times"]
                ],
            }
        )
    turnbull_rows = []
    for label, fit in sorted(numbers["turnbull"].items()):
        if fit.get("estimable") is False:
            turnbull_rows.append({"group": label, "reason": fit["reason"]})
            continue
        turnbull_rows.append(
            {
                "group": label,
                "median": f"{_days(fit['median']['lower'])} – {_days(fit['median']['upper'])}",
                "at": [
                    {
                        "label": TIME_LABELS.get(at["time"], f"{at['time']:g} d"),
                        "range": f"{at['survival_lower']:.3f} – {at['survival_upper']:.3f}",
                    }
                    for at in fit["survival_at"]
                ],
            }
        )
    return {
        "job": job,
        "result": result,
        "numbers": numbers,
        "spec": {
            "endpoint": ENDPOINT_LABELS.get(job.spec.get("endpoint"), job.spec.get("endpoint")),
            "grouping": GROUPINGS.get(job.spec.get("grouping"), job.spec.get("grouping")),
            "ci_transform": CI_TRANSFORMS.get(primary, primary),
            "other_ci": other,
        },
        "km_svg": _svg(result.km_svg),
        "cif_svg": _svg(result.cif_svg),
        "pir_svg": _svg(result.pir_svg) if result.pir_svg else "",
        "pir_groups": (numbers.get("probability_in_remission") or {}).get("groups") or [],
        "pir_reason": (numbers.get("probability_in_remission") or {}).get("reason", ""),
        "landmarks": numbers.get("landmarks") or [],
        "km_rows": km_rows,
        "cif_rows": cif_rows,
        "turnbull_rows": turnbull_rows,
        "summary": sorted(numbers["summary"].items()),
        "times": [TIME_LABELS.get(t["time"], "") for t in numbers["kaplan_meier"]["groups"][0]["survival_at"]],
    }
