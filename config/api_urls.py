from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter

from analytics.api import AnalysisViewSet, DataCutViewSet
from trials.api import ParticipantViewSet, StudyViewSet, VisitViewSet

router = DefaultRouter()
router.register("studies", StudyViewSet, basename="study")
router.register("participants", ParticipantViewSet, basename="participant")
router.register("visits", VisitViewSet, basename="visit")
router.register("analyses", AnalysisViewSet, basename="analysis")
router.register("data-cuts", DataCutViewSet, basename="data-cut")

urlpatterns = [
    path("", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "docs/",
        # The split view serves Swagger UI's start-up script from a URL of its own (?script=), not
        # inline: the Content-Security-Policy allows scripts from this origin only.
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", permission_classes=[IsAuthenticated]),
        name="api-docs",
    ),
]
