"""API tokens without the admin: exchange a username and password for a token, and revoke it.

* ``POST /api/v1/auth/token/`` with ``{"username", "password"}`` answers 201 with a new token. It is
  shown this once (``Cache-Control: no-store``): asking again issues a new token and revokes the old
  one. Wrong credentials are a 400 that does not say which part was wrong. The sign-in lockout of the
  pages applies (django-axes, docs/reliability.md #31): failures count against the username, and a
  locked account gets 429 even with the right password.
* ``DELETE /api/v1/auth/token/`` revokes the caller's token (204); the next call with it is a 401.
"""

from __future__ import annotations

from django.contrib.auth import authenticate, user_logged_in
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

LOCKED_MESSAGE = (
    "This account is locked after too many failed sign-ins. Try again later or ask a data manager to unlock it."
)


class TokenInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class TokenOutput(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`. Shown only this once.")
    username = serializers.CharField()
    created = serializers.DateTimeField()


class TokenView(APIView):
    """Exchange credentials for a token (POST, no token needed) or revoke your token (DELETE)."""

    public_endpoint = True  # trials.rest.AutoSchema: documents the error answers listed per method

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "POST" else [IsAuthenticated()]

    def perform_authentication(self, request):
        # The exchange reads no credentials but the body's: a stale token in the header must not
        # turn it into a 401. Revoking needs the caller authenticated.
        if request.method != "POST":
            super().perform_authentication(request)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.query_params:
            raise serializers.ValidationError(
                {name[:100]: ["Unknown query parameter. This operation accepts none."] for name in request.query_params}
            )

    @property
    def error_codes(self) -> list[int]:
        return [400, 413, 415, 429] if self.request.method == "POST" else [400, 401, 403]

    @extend_schema(
        request=TokenInput,
        responses={201: TokenOutput},
        auth=[],
        summary="Exchange a username and password for an API token",
    )
    def post(self, request):
        serializer = TokenInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        http_request = request._request  # axes records the attempt against the Django request
        user = authenticate(request=http_request, **serializer.validated_data)
        if getattr(http_request, "axes_locked_out", False):
            # Answered here as JSON; otherwise axes' middleware would replace it with the sign-in page.
            http_request.axes_locked_out = False
            response = Response({"detail": LOCKED_MESSAGE}, status=status.HTTP_429_TOO_MANY_REQUESTS)
            response["Cache-Control"] = "no-store"
            return response
        if user is None:
            raise serializers.ValidationError({"non_field_errors": ["Unable to sign in with these credentials."]})
        user_logged_in.send(sender=user.__class__, request=http_request, user=user)
        Token.objects.filter(user=user).delete()  # one token per user: a new exchange revokes the old one
        token = Token.objects.create(user=user)
        response = Response(
            TokenOutput({"token": token.key, "username": user.get_username(), "created": token.created}).data,
            status=status.HTTP_201_CREATED,
        )
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(request=None, responses={204: None}, summary="Revoke your API token")
    def delete(self, request):
        Token.objects.filter(user=request.user).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
