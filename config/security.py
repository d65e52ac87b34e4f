"""The Permissions-Policy response header.

Django sets the other security headers itself (``SecurityMiddleware``, ``XFrameOptionsMiddleware``)
and django-csp sets Content-Security-Policy; neither knows Permissions-Policy. The policy is one
constant string built from ``settings.PERMISSIONS_POLICY`` ({feature: [allowed origins]}, an empty
list switching the feature off everywhere), so a few lines here replace a dependency.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

HEADER = "Permissions-Policy"


def permissions_policy(policy: dict[str, list[str]]) -> str:
    """``{"camera": [], "fullscreen": ["self"]}`` -> ``camera=(), fullscreen=(self)``."""
    parts = []
    for feature, origins in policy.items():
        allowed = " ".join("self" if origin in ("self", "'self'") else f'"{origin}"' for origin in origins)
        parts.append(f"{feature}=({allowed})")
    return ", ".join(parts)


class PermissionsPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.header = permissions_policy(getattr(settings, "PERMISSIONS_POLICY", {}))

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.header:
            response.headers.setdefault(HEADER, self.header)
        return response
