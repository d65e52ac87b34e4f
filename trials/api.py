"""REST API for the casebook. Thin by design (docs/style.md §3): each endpoint validates shape with an
input serializer, calls the same service the web form calls, and serializes the result. Reads go
through the scoped selectors, so another site's participant is a 404 here exactly as on the pages.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from trials import selectors, services
from trials.models import ConsentDocument, Disposition, Participant, Site, Visit
from trials.text import FreeTextSerializerField, IdentifierSerializerField, PlainDecimalSerializerField

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
    version = serializers.IntegerField()


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


class ScreenInput(serializers.Serializer):
    study = IdentifierSerializerField(required=True, allow_blank=False, max_length=32)
    site = IdentifierSerializerField(required=True, allow_blank=False, max_length=8)
    sex = serializers.ChoiceField(choices=Participant.Sex.choices)
    birth_year = serializers.IntegerField(min_value=1900, max_value=2100)
    screening_date = serializers.DateField()


class ConsentInput(serializers.Serializer):
    document_version = IdentifierSerializerField(required=True, allow_blank=False, max_length=20)
    consent_date = serializers.DateField()


class EligibilityInput(serializers.Serializer):
    answers = serializers.DictField(child=serializers.BooleanField(), help_text="criterion id -> yes/no")
    reason = FreeTextSerializerField(default="")


class ReasonInput(serializers.Serializer):
    reason = FreeTextSerializerField(required=True, allow_blank=False)


class EnrolInput(serializers.Serializer):
    enrolment_date = serializers.DateField()


class InfusionInput(serializers.Serializer):
    apheresis_date = serializers.DateField()
    manufacturing_lot = IdentifierSerializerField(required=True, allow_blank=False)
    release_passed = serializers.BooleanField()
    viability_pct = PlainDecimalSerializerField(max_digits=5, decimal_places=1, allow_null=True, default=None)
    endotoxin_eu_per_kg = PlainDecimalSerializerField(max_digits=6, decimal_places=2, allow_null=True, default=None)
    total_viable_cells = serializers.DecimalField(max_digits=14, decimal_places=0)
    volume_ml = PlainDecimalSerializerField(max_digits=7, decimal_places=1, required=False, allow_null=True)
    weight_kg = PlainDecimalSerializerField(max_digits=5, decimal_places=1)
    start_at = serializers.DateTimeField()
    end_at = serializers.DateTimeField()
    interrupted = serializers.BooleanField(default=False)
    interruption_reason = FreeTextSerializerField(default="")
    premedication = FreeTextSerializerField(default="")
    confirm_outside_criteria = serializers.BooleanField(
        default=False, help_text="Confirms a product outside the release criteria was infused (a protocol deviation)."
    )


class DispositionInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Disposition.Kind.choices)
    disposition_date = serializers.DateField()
    reason = FreeTextSerializerField(default="")
    death_date = serializers.DateField(required=False, allow_null=True, default=None)


class VisitRecordInput(serializers.Serializer):
    actual_date = serializers.DateField()
    weight_kg = PlainDecimalSerializerField(max_digits=5, decimal_places=1, required=False, allow_null=True)
    reason = FreeTextSerializerField(default="")
    version = serializers.IntegerField(required=False, allow_null=True, help_text="The version you loaded.")


class VisitMissedInput(serializers.Serializer):
    reason = FreeTextSerializerField(required=True, allow_blank=False)


class AssessmentInput(serializers.Serializer):
    edss = PlainDecimalSerializerField(max_digits=3, decimal_places=1, required=False, allow_null=True)
    hba1c = PlainDecimalSerializerField(max_digits=5, decimal_places=1, required=False, allow_null=True)
    hba1c_unit = IdentifierSerializerField(max_length=8)
    insulin_u_per_kg_day = PlainDecimalSerializerField(max_digits=4, decimal_places=2, required=False, allow_null=True)
    tender_joints_28 = serializers.IntegerField(required=False, allow_null=True)
    swollen_joints_28 = serializers.IntegerField(required=False, allow_null=True)
    crp = PlainDecimalSerializerField(max_digits=6, decimal_places=2, required=False, allow_null=True)
    crp_unit = IdentifierSerializerField(max_length=5)
    esr_mm_h = serializers.IntegerField(required=False, allow_null=True)
    patient_global_mm = serializers.IntegerField(required=False, allow_null=True)
    evaluator_global_mm = serializers.IntegerField(required=False, allow_null=True)
    reason = FreeTextSerializerField(default="")
    version = serializers.IntegerField(required=False, allow_null=True)


def _valid(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# ---------------------------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------------------------


class StudyViewSet(viewsets.GenericViewSet, mixins.ListModelMixin):
    serializer_class = StudyOutput
    pagination_class = None

    def get_queryset(self):
        return selectors.studies_visible_to(self.request.user)


class ParticipantViewSet(viewsets.GenericViewSet):
    """Participants in the caller's scope; state changes are explicit actions calling services."""

    serializer_class = ParticipantOutput

    def get_queryset(self):
        return selectors.participant_list(user=self.request.user, filters=self.request.query_params)

    def _get(self, *, write: bool = False) -> Participant:
        return selectors.participant_get(user=self.request.user, pk=int(self.kwargs["pk"]), write=write)

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ParticipantOutput(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(ParticipantOutput(self._get()).data)

    @extend_schema(request=ScreenInput, responses={201: ParticipantOutput})
    def create(self, request):
        data = _valid(ScreenInput, request)
        study = selectors.studies_visible_to(request.user).filter(code=data["study"]).first()
        site = Site.objects.filter(code=data["site"]).first()
        if study is None:
            raise serializers.ValidationError({"study": f"Unknown study {data['study']!r}."})
        if site is None or not selectors.sites_for_entry(request.user, study).filter(pk=site.pk).exists():
            raise serializers.ValidationError({"site": f"You cannot screen participants at site {data['site']!r}."})
        participant = services.participant_screen(
            actor=request.user,
            study=study,
            site=site,
            sex=data["sex"],
            birth_year=data["birth_year"],
            screening_date=data["screening_date"],
            channel="api",
        )
        return Response(ParticipantOutput(participant).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ConsentInput, responses={201: None})
    @action(detail=True, methods=["post"])
    def consent(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(ConsentInput, request)
        document = ConsentDocument.objects.filter(study=participant.study, version=data["document_version"]).first()
        if document is None:
            raise serializers.ValidationError({"document_version": "No such consent document version."})
        services.consent_record(
            actor=request.user,
            participant=participant,
            document=document,
            consent_date=data["consent_date"],
            channel="api",
        )
        return Response(status=status.HTTP_201_CREATED)

    @extend_schema(request=EligibilityInput, responses={200: ParticipantOutput})
    @action(detail=True, methods=["post"])
    def eligibility(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(EligibilityInput, request)
        try:
            answers = {int(key): value for key, value in data["answers"].items()}
        except ValueError:
            raise serializers.ValidationError({"answers": "Keys must be criterion ids."}) from None
        services.eligibility_record(
            actor=request.user, participant=participant, answers=answers, reason=data["reason"], channel="api"
        )
        return Response(ParticipantOutput(self._get()).data)

    @extend_schema(request=ReasonInput, responses={200: ParticipantOutput})
    @action(detail=True, methods=["post"], url_path="screen-fail")
    def screen_fail(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(ReasonInput, request)
        participant = services.participant_screen_fail(
            actor=request.user, participant=participant, reason=data["reason"], channel="api"
        )
        return Response(ParticipantOutput(participant).data)

    @extend_schema(request=EnrolInput, responses={200: ParticipantOutput})
    @action(detail=True, methods=["post"])
    def enrol(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(EnrolInput, request)
        participant = services.participant_enrol(
            actor=request.user, participant=participant, enrolment_date=data["enrolment_date"], channel="api"
        )
        return Response(ParticipantOutput(participant).data)

    @extend_schema(request=InfusionInput, responses={201: InfusionOutput})
    @action(detail=True, methods=["post"])
    def infusions(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(InfusionInput, request)
        infusion = services.infusion_record(actor=request.user, participant=participant, channel="api", **data)
        return Response(InfusionOutput(infusion).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=DispositionInput, responses={200: ParticipantOutput})
    @action(detail=True, methods=["post"])
    def disposition(self, request, pk=None):
        participant = self._get(write=True)
        data = _valid(DispositionInput, request)
        services.disposition_record(actor=request.user, participant=participant, channel="api", **data)
        return Response(ParticipantOutput(self._get()).data)

    @extend_schema(responses={200: VisitOutput(many=True)})
    @action(detail=True, methods=["get"])
    def visits(self, request, pk=None):
        participant = self._get()
        visits = participant.visits.select_related("definition").order_by("planned_date", "actual_date", "pk")
        return Response(VisitOutput(visits, many=True).data)


class VisitViewSet(viewsets.GenericViewSet):
    serializer_class = VisitOutput

    def get_queryset(self):
        # Every visit is fetched through the selector chokepoint (_get); there is no visit list.
        return Visit.objects.none()

    def _get(self, *, write: bool = False) -> Visit:
        return selectors.visit_get(user=self.request.user, pk=int(self.kwargs["pk"]), write=write)

    def retrieve(self, request, pk=None):
        return Response(VisitOutput(self._get()).data)

    @extend_schema(request=VisitRecordInput, responses={200: VisitOutput})
    @action(detail=True, methods=["post"])
    def record(self, request, pk=None):
        visit = self._get(write=True)
        data = _valid(VisitRecordInput, request)
        visit = services.visit_record(
            actor=request.user,
            visit=visit,
            actual_date=data["actual_date"],
            weight_kg=data.get("weight_kg"),
            reason=data["reason"],
            expected_version=data.get("version"),
            channel="api",
        )
        return Response(VisitOutput(visit).data)

    @extend_schema(request=VisitMissedInput, responses={200: VisitOutput})
    @action(detail=True, methods=["post"])
    def missed(self, request, pk=None):
        visit = self._get(write=True)
        data = _valid(VisitMissedInput, request)
        visit = services.visit_mark_missed(actor=request.user, visit=visit, reason=data["reason"], channel="api")
        return Response(VisitOutput(visit).data)

    @extend_schema(request=AssessmentInput, responses={201: None})
    @action(detail=True, methods=["post"])
    def assessment(self, request, pk=None):
        visit = self._get(write=True)
        data = dict(_valid(AssessmentInput, request))
        reason, version = data.pop("reason"), data.pop("version", None)
        services.assessment_record(
            actor=request.user, visit=visit, values=data, reason=reason, expected_version=version, channel="api"
        )
        return Response(status=status.HTTP_201_CREATED)
