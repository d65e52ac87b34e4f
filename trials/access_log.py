"""Audited sign-ins and sign-outs. Django announces them as signals; these receivers only record."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from trials.models import AccessEvent


def _client(request) -> tuple[str | None, str]:
    if request is None:
        return None, ""
    return request.META.get("REMOTE_ADDR"), request.META.get("HTTP_USER_AGENT", "")[:300]


def record_access(*, kind: str, request, user=None, username: str = "") -> AccessEvent:
    ip_address, user_agent = _client(request)
    return AccessEvent.objects.create(
        kind=kind,
        user=user,
        username=(user.get_username() if user is not None else username)[:150],
        ip_address=ip_address,
        user_agent=user_agent,
    )


def on_login(sender, request, user, **kwargs) -> None:
    record_access(kind=AccessEvent.Kind.LOGIN, request=request, user=user)


def on_logout(sender, request, user, **kwargs) -> None:
    if user is not None:
        record_access(kind=AccessEvent.Kind.LOGOUT, request=request, user=user)


def on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    username = str(credentials.get(get_user_model().USERNAME_FIELD, ""))
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    record_access(kind=AccessEvent.Kind.LOGIN_FAILED, request=request, user=user, username=username)
