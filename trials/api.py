"""REST API for the casebook. Thin by design (docs/style.md §3): each endpoint validates shape with an
input serializer, calls the same service the web form calls, and serializes the result. Reads go
through the scoped selectors, so another site's participant is a 404 here exactly as on the pages.

What every endpoint shares (strict query parameters, ids, page size, the error answers, the
``Idempotency-Key`` header on writes) lives in ``trials.rest``. Edits of a saved record carry the
``version`` the client loaded (required): a stale one is a 409, never a silent overwrite
(docs/reliability.md #33).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from trials import selectors, services
from trials.errors import ConflictError
from trials.models import ConsentDocument, Disposition, Participant, ParticipantStatus, Site, Visit
from trials.rest import ApiViewSet, IntegerFilter, idempotent, parse_pk, respond, text_filter
from trials.text import (
    CODE_MAX,
    REASON_MAX,
    FreeTextSerializerField,
    IdentifierSerializerField,
    PlainDecimalSerializerField,
)

VERSION_MAX = 2**31 - 1

# ---------------------------------------------------------------------------------------------
# Output serializers
# ---------------------------------------------------------------------------------------------


class StudyOutput(serializers.Serializer):
    code = serializers.CharField()
    title = serializers.CharField()
    indication = serializers.CharField()
    phase = serializers.CharField()
    follow_up_days = serializers.IntegerField()
    dlt_window_days = serializers.IntegerField()


class ParticipantOutput(serializers.Serializer):
    id = serializers.IntegerField()
    study = serializers.CharField(source="study.code")
    site = serializers.CharField(source="site.code")
    subject_code = serializers.CharField()
    sex = serializers.CharField()
    birth_year = serializers.IntegerField()
    status = serializers.CharField()
    screening_date = serializers.DateField()
    enrolment_date = serializers.DateField(allow_null=True)
    cohort = serializers.IntegerField(source="cohort.number", allow_null=True, default=None)
    version = serializers.IntegerField()


class VisitOutput(serializers.Serializer):
    id = serializers.IntegerField()
    code = serializers.CharField(source="definition.code", allow_null=True, default=None)
    label = serializers.CharField()
    kind = serializers.CharField()
    planned_date = serializers.DateField(allow_null=True)
    window_start = serializers.DateField(allow_null=True)
    window_end = serializers.DateField(allow_null=True)
    actual_date = serializers.DateField(allow_null=True)
    missed = serializers.BooleanField()
    in_window = serializers.BooleanField(allow_null=True)
    version = serializers.IntegerField(help_text="Send it back with /record/ to edit the visit.")
    assessment_version = serializers.IntegerField(
        source="assessment.version",
        allow_null=True,
        default=None,
        help_text="The version of the visit's disease-activity assessment (null: none yet); "
        "send it back with /assessment/ to correct it.",
    )


class InfusionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.IntegerField()
    manufacturing_lot = serializers.CharField()
    total_viable_cells = serializers.DecimalField(max_digits=14, decimal_places=0)
    weight_kg = serializers.DecimalField(max_digits=5, decimal_places=1)
    dose_cells_per_kg = serializers.DecimalField(max_digits=14, decimal_places=0)
    start_at = serializers.DateTimeField()
    end_at = serializers.DateTimeField()


# ---------------------------------------------------------------------------------------------
# Input serializers (shape only; the rules are in trials/services.py)
# ---------------------------------------------------------------------------------------------


def _code(**kwargs):
    return IdentifierSerializerField(required=True, allow_blank=False, **kwargs)


def _decimal(max_digits: int, decimal_places: int, **kwargs):
    return PlainDecimalSerializerField(max_digits=max_digits, decimal_places=decimal_places, **kwargs)


def _optional_int(low: int, high: int):
    return serializers.IntegerField(required=False, allow_null=True, min_value=low, max_value=high)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Screen at S01",
            value={
                "study": "treg-ms-01",
                "site": "S01",
                "sex": "F",
                "birth_year": 1980,
                "screening_date": "2025-01-06",
            },
            request_only=True,
        )
    ]
)
class ScreenInput(serializers.Serializer):
    study = _code(max_length=32)
    site = _code(max_length=8)
    sex = serializers.ChoiceField(choices=Participant.Sex.choices)
    birth_year = serializers.IntegerField(min_value=1900, max_value=2100)
    screening_date = serializers.DateField()


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Consent to version 1.0", value={"document_version": "1.0", "consent_date": "2025-01-06"}, request_only=True
        )
    ]
)
class ConsentInput(serializers.Serializer):
    document_version = _code(max_length=20)
    consent_date = serializers.DateField()


class EligibilityInput(serializers.Serializer):
    answers = serializers.DictField(child=serializers.BooleanField(), help_text="criterion id -> yes/no")
    reason = FreeTextSerializerField(max_length=REASON_MAX, default="")


@extend_schema_serializer(
    examples=[OpenApiExample("Screen failure", value={"reason": "Exclusion criterion 1 met"}, request_only=True)]
)
class ReasonInput(serializers.Serializer):
    reason = FreeTextSerializerField(max_length=REASON_MAX, required=True, allow_blank=False)


@extend_schema_serializer(examples=[OpenApiExample("Enrol", value={"enrolment_date": "2025-01-13"}, request_only=True)])
class EnrolInput(serializers.Serializer):
    enrolment_date = serializers.DateField()


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Infusion at 1 million cells/kg",
            value={
                "apheresis_date": "2025-01-14",
                "manufacturing_lot": "LOT-0001",
                "release_passed": True,
                "viability_pct": "91.0",
                "total_viable_cells": "70000000",
                "weight_kg": "70.0",
                "start_at": "2025-02-03T09:00:00Z",
                "end_at": "2025-02-03T09:40:00Z",
            },
            request_only=True,
        )
    ]
)
class InfusionInput(serializers.Serializer):
    apheresis_date = serializers.DateField()
    manufacturing_lot = _code(max_length=CODE_MAX)
    release_passed = serializers.BooleanField()
    viability_pct = _decimal(5, 1, allow_null=True, default=None)
    endotoxin_eu_per_kg = _decimal(6, 2, allow_null=True, default=None)
    total_viable_cells = serializers.DecimalField(max_digits=14, decimal_places=0)
    volume_ml = _decimal(7, 1, required=False, allow_null=True)
    weight_kg = _decimal(5, 1)
    start_at = serializers.DateTimeField()
    end_at = serializers.DateTimeField()
    interrupted = serializers.BooleanField(default=False)
    interruption_reason = FreeTextSerializerField(max_length=REASON_MAX, default="")
    premedication = FreeTextSerializerField(max_length=REASON_MAX, default="")
    confirm_outside_criteria = serializers.BooleanField(
        default=False, help_text="Confirms a product outside the release criteria was infused (a protocol deviation)."
    )


class DispositionInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Disposition.Kind.choices)
    disposition_date = serializers.DateField()
    reason = FreeTextSerializerField(max_length=REASON_MAX, default="")
    death_date = serializers.DateField(required=False, allow_null=True, default=None)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "First entry of a planned visit",
            value={"actual_date": "2025-02-10", "weight_kg": "70.5", "version": 1},
            request_only=True,
        )
    ]
)
class VisitRecordInput(serializers.Serializer):
    actual_date = serializers.DateField()
    weight_kg = _decimal(5, 1, required=False, allow_null=True)
    reason = FreeTextSerializerField(
        max_length=REASON_MAX, default="", help_text="Required when the visit was already recorded."
    )
    version = serializers.IntegerField(
        min_value=1, max_value=VERSION_MAX, help_text="The visit's `version` as you loaded it (required)."
    )


@extend_schema_serializer(
    examples=[OpenApiExample("Missed", value={"reason": "Participant travelling"}, request_only=True)]
)
class VisitMissedInput(serializers.Serializer):
    reason = FreeTextSerializerField(max_length=REASON_MAX, required=True, allow_blank=False)


@extend_schema_serializer(
    examples=[
        OpenApiExample("First MS assessment", value={"edss": "2.5", "version": None}, request_only=True),
        OpenApiExample(
            "Correction", value={"edss": "3.0", "reason": "Transcription error", "version": 1}, request_only=True
        ),
    ]
)
class AssessmentInput(serializers.Serializer):
    edss = _decimal(3, 1, required=False, allow_null=True)
    hba1c = _decimal(5, 1, required=False, allow_null=True)
    hba1c_unit = IdentifierSerializerField(max_length=8)
    insulin_u_per_kg_day = _decimal(4, 2, required=False, allow_null=True)
    tender_joints_28 = _optional_int(0, 28)
    swollen_joints_28 = _optional_int(0, 28)
    crp = _decimal(6, 2, required=False, allow_null=True)
    crp_unit = IdentifierSerializerField(max_length=5)
    esr_mm_h = _optional_int(0, 32767)
    patient_global_mm = _optional_int(0, 100)
    evaluator_global_mm = _optional_int(0, 100)
    reason = FreeTextSerializerField(max_length=REASON_MAX, default="", help_text="Required to correct one.")
    version = serializers.IntegerField(
        allow_null=True,
        min_value=1,
        max_value=VERSION_MAX,
        help_text="Required: null to record the visit's first assessment, or its `assessment_version` "
        "as you loaded it to correct it.",
    )


def _valid(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


class ParticipantFilter(filters.FilterSet):
    study = text_filter("study__code", max_length=32, help_text="Study code.")
    site = text_filter("site__code", max_length=8, help_text="Site code, e.g. S01.")
    status = filters.ChoiceFilter(choices=ParticipantStatus.choices)
    cohort = IntegerFilter(field_name="cohort__number", min_value=1, max_value=32767, help_text="Dose cohort number.")
    q = text_filter("subject_code", max_length=20, lookup_expr="icontains", help_text="Part of the subject code.")

    class Meta:
        model = Participant
        fields = ["study", "site", "status", "cohort", "q"]


# ---------------------------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------------------------


class StudyViewSet(ApiViewSet):
    serializer_class = StudyOutput
    pagination_class = None

    def get_queryset(self):
        return selectors.studies_visible_to(self.request.user).order_by("code")

    def list(self, request):
        return Response(StudyOutput(self.get_queryset(), many=True).data)


class ParticipantViewSet(ApiViewSet):
    """Participants in the caller's scope; state changes are explicit actions calling services."""

    serializer_class = ParticipantOutput
    filterset_class = ParticipantFilter
    list_actions = frozenset({"list", "visits"})

    def get_queryset(self):
        return selectors.participant_list(user=self.request.user).order_by("pk")

    def _get(self, *, write: bool = False) -> Participant:
        return selectors.participant_get(user=self.request.user, pk=parse_pk(self.kwargs["pk"]), write=write)

    def list(self, request):
        return self.paginated(self.filter_queryset(self.get_queryset()), ParticipantOutput)

    def retrieve(self, request, pk=None):
        return respond(self._get(), ParticipantOutput)

    @extend_schema(request=ScreenInput, responses={201: ParticipantOutput})
    @idempotent
    def create(self, request):
        user = request.user
        # A role that screens nowhere is refused before its input is read: 403, not a 400 about a site.
        entry_studies = [s for s in selectors.studies_visible_to(user) if selectors.sites_for_entry(user, s).exists()]
        if not entry_studies:
            raise PermissionDenied("Your role cannot screen participants.")
        data = _valid(ScreenInput, request)
        study = selectors.studies_visible_to(user).filter(code=data["study"]).first()
        if study is None:
            raise serializers.ValidationError({"study": [f"Unknown study {data['study']!r}."]})
        if study not in entry_studies:
            raise PermissionDenied(f"Your role cannot screen participants in {study.code}.")
        site = Site.objects.filter(code=data["site"]).first()
        if site is None or not selectors.sites_for_entry(user, study).filter(pk=site.pk).exists():
            raise serializers.ValidationError({"site": [f"You cannot screen participants at site {data['site']!r}."]})
        participant = services.participant_screen(
            actor=user,
            study=study,
            site=site,
            sex=data["sex"],
            birth_year=data["birth_year"],
            screening_date=data["screening_date"],
            channel="api",
        )
        return respond(participant, ParticipantOutput, status_code=status.HTTP_201_CREATED)

    @extend_schema(request=ConsentInput, responses={201: None})
    @action(detail=True, methods=["post"])
    @idempotent
    def consent(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(ConsentInput, request)
        document = ConsentDocument.objects.filter(study=participant.study, version=data["document_version"]).first()
        if document is None:
            raise serializers.ValidationError({"document_version": ["No such consent document version."]})
        consent = services.consent_record(
            actor=request.user,
            participant=participant,
            document=document,
            consent_date=data["consent_date"],
            channel="api",
        )
        return respond(consent, status_code=status.HTTP_201_CREATED)

    @extend_schema(request=EligibilityInput, responses={200: ParticipantOutput})
    @action(detail=True, methods=["post"])
    @idempotent
    def eligibility(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(EligibilityInput, request)
        answers = {}
        for key, value in data["answers"].items():
            if not (key.isascii() and key.isdigit() and len(key) <= 18):
                raise serializers.ValidationError({"answers": ["Keys must be criterion ids."]})
            answers[int(key)] = value
        services.eligibility_record(
            actor=request.user, participant=participant, answers=answers, reason=data["reason"], channel="api"
        )
        return respond(self._get(), ParticipantOutput)

    @extend_schema(request=ReasonInput, responses={200: ParticipantOutput})
    @action(detail=True, methods=["post"], url_path="screen-fail")
    @idempotent
    def screen_fail(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(ReasonInput, request)
        participant = services.participant_screen_fail(
            actor=request.user, participant=participant, reason=data["reason"], channel="api"
        )
        return respond(participant, ParticipantOutput)

    @extend_schema(request=EnrolInput, responses={200: ParticipantOutput})
    @action(detail=True, methods=["post"])
    @idempotent
    def enrol(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(EnrolInput, request)
        participant = services.participant_enrol(
            actor=request.user, participant=participant, enrolment_date=data["enrolment_date"], channel="api"
        )
        return respond(participant, ParticipantOutput)

    @extend_schema(request=InfusionInput, responses={201: InfusionOutput})
    @action(detail=True, methods=["post"])
    @idempotent
    def infusions(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(InfusionInput, request)
        infusion = services.infusion_record(actor=request.user, participant=participant, channel="api", **data)
        return respond(infusion, InfusionOutput, status_code=status.HTTP_201_CREATED)

    @extend_schema(request=DispositionInput, responses={200: ParticipantOutput})
    @action(detail=True, methods=["post"])
    @idempotent
    def disposition(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(DispositionInput, request)
        services.disposition_record(actor=request.user, participant=participant, channel="api", **data)
        return respond(self._get(), ParticipantOutput)

    @extend_schema(responses={200: VisitOutput(many=True)})
    @action(detail=True, methods=["get"])
    def visits(self, request, pk=None):
        """The participant's visits in schedule order, a page at a time (like every list)."""
        participant = self._get()
        visits = participant.visits.select_related("definition", "assessment").order_by(
            "planned_date", "actual_date", "pk"
        )
        return self.paginated(visits, VisitOutput)


class VisitViewSet(ApiViewSet):
    serializer_class = VisitOutput

    def get_queryset(self):
        # Every visit is fetched through the selector chokepoint (_get); there is no visit list.
        return Visit.objects.none()

    def _get(self, *, write: bool = False) -> Visit:
        return selectors.visit_get(user=self.request.user, pk=parse_pk(self.kwargs["pk"]), write=write)

    def retrieve(self, request, pk=None):
        return respond(self._get(), VisitOutput)

    @extend_schema(request=VisitRecordInput, responses={200: VisitOutput})
    @action(detail=True, methods=["post"])
    @idempotent
    def record(self, request, pk=None):
        visit = self._get(write=True)
        data = _valid(VisitRecordInput, request)
        visit = services.visit_record(
            actor=request.user,
            visit=visit,
            actual_date=data["actual_date"],
            weight_kg=data.get("weight_kg"),
            reason=data["reason"],
            expected_version=data["version"],
            channel="api",
        )
        return respond(visit, VisitOutput)

    @extend_schema(request=VisitMissedInput, responses={200: VisitOutput})
    @action(detail=True, methods=["post"])
    @idempotent
    def missed(self, request, pk=None):
        visit = self._get(write=True)
        data = _valid(VisitMissedInput, request)
        visit = services.visit_mark_missed(actor=request.user, visit=visit, reason=data["reason"], channel="api")
        return respond(visit, VisitOutput)

    @extend_schema(request=AssessmentInput, responses={201: None})
    @action(detail=True, methods=["post"])
    @idempotent
    def assessment(self, request, pk=None):
        visit = self._get(write=True)
        data = dict(_valid(AssessmentInput, request))
        reason, version = data.pop("reason"), data.pop("version")
        existing = getattr(visit, "assessment", None)  # reverse one-to-one: None when there is none
        if version is None and existing is not None:
            raise ConflictError(
                f"This visit already has an assessment (version {existing.version}); send that version to correct it."
            )
        assessment = services.assessment_record(
            actor=request.user,
            visit=visit,
            values=data,
            reason=reason,
            # 0 matches no saved version: "I saw none" still refuses to overwrite one made meanwhile.
            expected_version=0 if version is None else version,
            channel="api",
        )
        return respond(assessment, status_code=status.HTTP_201_CREATED)
