"""The REST API under /api/v1/: the routers' endpoints, the token exchange, the schema and its docs.

Swagger UI is for people: without a session it sends them to the sign-in page and back, instead of
answering a bare 401 (the schema itself answers 401 like every endpoint).
"""

from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework import exceptions
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter

from analytics.api import AnalysisViewSet, DataCutViewSet
from trials.api import ParticipantViewSet, StudyViewSet, VisitViewSet
from trials.api_tokens import TokenView


class SwaggerView(SpectacularSwaggerSplitView):
    """Swagger UI for signed-in users; its start-up script is served from its own URL (no inline
    script, so the page works under a strict Content-Security-Policy)."""

    permission_classes = [IsAuthenticated]

    def handle_exception(self, exc):
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            return redirect_to_login(self.request.get_full_path())
        return super().handle_exception(exc)


def not_found(request, rest: str = ""):
    """Any other URL under /api/v1/: the API's JSON 404, not the site's HTML page."""
    hint = " API URLs end with a slash." if not request.path.endswith("/") else ""
    return JsonResponse({"detail": f"No such endpoint.{hint} See /api/v1/docs/."}, status=404)


router = DefaultRouter()
router.register("studies", StudyViewSet, basename="study")
router.register("participants", ParticipantViewSet, basename="participant")
router.register("visits", VisitViewSet, basename="visit")
router.register("analyses", AnalysisViewSet, basename="analysis")
router.register("data-cuts", DataCutViewSet, basename="data-cut")

urlpatterns = [
    path("", include(router.urls)),
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^(?P<rest>.*)$", not_found),
]
