"""REST API of the durability analyses. Thin (docs/style.md §3): input serializers check shape, the
services decide, output serializers answer; every read goes through ``analytics.selectors``.

* ``POST /api/v1/analyses/`` — request an analysis of a data cut (202 while it is queued or running,
  200 with the stored result when it has run).
* ``GET /api/v1/analyses/`` and ``/api/v1/analyses/{id}/`` — status, progress and, once done, numbers.
* ``GET /api/v1/data-cuts/`` (and ``POST`` to make one, ``GET /{id}/``) — the cuts with their manifests.

Both lists filter by ``?study=<code>``; the shared strictness (ids, page size, unknown parameters,
``Idempotency-Key``) is ``trials.rest``.
"""

from __future__ import annotations

from django.http import Http404
from django.urls import reverse
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_serializer
from rest_framework import serializers, status

from analytics import selectors, services
from analytics.models import AnalysisJob, DataCut
from trials.rest import PK_MAX, ApiViewSet, idempotent, parse_pk, respond, text_filter
from trials.selectors import studies_visible_to
from trials.text import IdentifierSerializerField

# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


class DataCutOutput(serializers.Serializer):
    id = serializers.IntegerField()
    study = serializers.CharField(source="study.code")
    cut_date = serializers.DateField()
    label = serializers.CharField()
    definition = serializers.CharField(source="manifest.definition.key")
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()
    checksum = serializers.CharField()
    audit_chain_head = serializers.CharField()
    manifest = serializers.JSONField()
    # Its per-assessment derivation task is waiting for an unreachable task queue (the relay sends it).
    waiting_for_queue = serializers.BooleanField(default=False)


class AnalysisJobOutput(serializers.Serializer):
    id = serializers.IntegerField()
    study = serializers.CharField(source="data_cut.study.code")
    data_cut = serializers.IntegerField(source="data_cut_id")
    spec = serializers.JSONField()
    spec_hash = serializers.CharField()
    status = serializers.CharField()
    progress = serializers.IntegerField()
    stage = serializers.CharField()
    error = serializers.CharField()
    attempts = serializers.IntegerField()
    requested_by = serializers.CharField(source="requested_by.username")
    requested_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    # Queued, but the task queue was unreachable: the outbox relay starts it once the queue is back.
    waiting_for_queue = serializers.BooleanField(default=False)
    # Running, but its worker has stopped reporting (it is re-queued automatically).
    stalled = serializers.BooleanField(source="is_stalled")


class AnalysisDetailOutput(AnalysisJobOutput):
    result = serializers.SerializerMethodField()

    def get_result(self, job: AnalysisJob) -> dict | None:
        if job.status != AnalysisJob.Status.SUCCEEDED:
            return None
        result = job.result
        request = self.context.get("request")

        def plot(name: str) -> str:
            url = reverse("analytics:plot_png", args=[job.pk, name])
            return request.build_absolute_uri(url) if request else url

        return {
            "input_checksum": result.input_checksum,
            "data_cut_checksum": result.data_cut_checksum,
            "library_versions": result.library_versions,
            "compute_seconds": result.compute_seconds,
            "created_at": result.created_at,
            "numbers": result.numbers,
            "plots": {
                "kaplan_meier_png": plot("km"),
                "cumulative_incidence_png": plot("cif"),
                "probability_in_remission_png": plot("pir") if result.pir_png else None,
            },
        }


# ---------------------------------------------------------------------------------------------
# Input (shape only; the rules are in analytics/services.py)
# ---------------------------------------------------------------------------------------------


@extend_schema_serializer(
    examples=[OpenApiExample("Interim cut", value={"study": "treg-ms-01", "cut_date": "2025-06-30"}, request_only=True)]
)
class DataCutInput(serializers.Serializer):
    study = IdentifierSerializerField(required=True, allow_blank=False, max_length=32)
    cut_date = serializers.DateField()
    label = IdentifierSerializerField(max_length=100, default="")


def _scalar_options(spec: dict) -> None:
    """Options are plain values; the service checks names and ranges (analytics/spec.py)."""
    for name, value in spec.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise serializers.ValidationError({name: ["Must be a string, a number, true/false or null."]})
        if isinstance(value, str) and "\x00" in value:
            raise serializers.ValidationError({name: ["Null characters are not allowed."]})


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Pooled time to relapse", value={"data_cut": 1, "spec": {"grouping": "pooled"}}, request_only=True
        )
    ]
)
class AnalysisRequestInput(serializers.Serializer):
    data_cut = serializers.IntegerField(min_value=1, max_value=PK_MAX)
    spec = serializers.DictField(
        required=False,
        default=dict,
        validators=[_scalar_options],
        help_text="endpoint (time_to_relapse | duration_of_remission), grouping (pooled | cohort | arm), "
        "ci_transform (log | log-log), horizon_days, alpha, seed",
    )


def _valid(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# ---------------------------------------------------------------------------------------------
# Filters and endpoints
# ---------------------------------------------------------------------------------------------


class DataCutFilter(filters.FilterSet):
    study = text_filter("study__code", max_length=32, help_text="Study code.")

    class Meta:
        model = DataCut
        fields = ["study"]


class AnalysisFilter(filters.FilterSet):
    study = text_filter("data_cut__study__code", max_length=32, help_text="Study code.")

    class Meta:
        model = AnalysisJob
        fields = ["study"]


class DataCutViewSet(ApiViewSet):
    serializer_class = DataCutOutput
    filterset_class = DataCutFilter

    def get_queryset(self):
        return selectors.data_cut_list(user=self.request.user).order_by("pk")

    def list(self, request):
        return self.paginated(self.filter_queryset(self.get_queryset()), DataCutOutput)

    def retrieve(self, request, pk=None):
        return respond(selectors.data_cut_get(user=request.user, pk=parse_pk(pk)), DataCutOutput)

    @extend_schema(request=DataCutInput, responses={201: DataCutOutput})
    @idempotent
    def create(self, request):
        data = _valid(DataCutInput, request)
        study = studies_visible_to(request.user).filter(code=data["study"]).first()
        if study is None:
            raise serializers.ValidationError({"study": [f"Unknown study {data['study']!r}."]})
        cut = services.datacut_create(
            actor=request.user, study=study, cut_date=data["cut_date"], label=data["label"], channel="api"
        )
        cut = selectors.data_cut_get(user=request.user, pk=cut.pk)  # with its outbox state
        return respond(cut, DataCutOutput, status_code=status.HTTP_201_CREATED)


class AnalysisViewSet(ApiViewSet):
    serializer_class = AnalysisJobOutput
    filterset_class = AnalysisFilter

    def get_queryset(self):
        return selectors.job_list(user=self.request.user).order_by("pk")

    def list(self, request):
        return self.paginated(self.filter_queryset(self.get_queryset()), AnalysisJobOutput)

    @extend_schema(responses={200: AnalysisDetailOutput})
    def retrieve(self, request, pk=None):
        job = selectors.job_get(user=request.user, pk=parse_pk(pk))
        return respond(job, AnalysisDetailOutput, request=request)

    @extend_schema(request=AnalysisRequestInput, responses={200: AnalysisDetailOutput, 202: AnalysisDetailOutput})
    @idempotent
    def create(self, request):
        data = _valid(AnalysisRequestInput, request)
        try:
            cut = selectors.data_cut_get(user=request.user, pk=data["data_cut"])
        except Http404:  # the same answer whether the cut exists elsewhere or not at all
            raise serializers.ValidationError({"data_cut": ["No such data cut."]}) from None
        job = services.analysis_request(actor=request.user, data_cut=cut, spec=data["spec"], channel="api")
        job = selectors.job_get(user=request.user, pk=job.pk)  # with its outbox state
        done = job.status == AnalysisJob.Status.SUCCEEDED
        return respond(
            job,
            AnalysisDetailOutput,
            status_code=status.HTTP_200_OK if done else status.HTTP_202_ACCEPTED,
            request=request,
        )
