"""Sign-in hardening: lockout after repeated failures, audited sign-ins/outs, idle timeout."""

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from trials.models import AccessEvent

PASSWORD = "correct-horse-battery"


def _as_app_role(statement):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL ROLE tolerance_app")
        cursor.execute(statement)


def _login(client, username, password):
    return client.post("/login/", {"username": username, "password": password})


def test_a_successful_sign_in_and_sign_out_are_recorded(client, coordinator_site_a):
    response = _login(client, "coord_a", PASSWORD)
    assert response.status_code == 302
    client.post("/logout/")
    kinds = list(AccessEvent.objects.filter(username="coord_a").order_by("at").values_list("kind", flat=True))
    assert kinds == ["login", "logout"]
    assert AccessEvent.objects.filter(kind="login").get().ip_address == "127.0.0.1"


def test_a_failed_sign_in_is_recorded_and_does_not_log_in(client, coordinator_site_a):
    response = _login(client, "coord_a", "wrong-password")
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    event = AccessEvent.objects.get()
    assert (event.kind, event.username, event.user) == ("login_failed", "coord_a", coordinator_site_a)


def test_the_account_locks_after_repeated_failures_even_with_the_right_password(client, coordinator_site_a):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "coord_a", "wrong-password")
    response = _login(client, "coord_a", PASSWORD)
    assert response.status_code == 429
    assert b"temporarily locked" in response.content
    assert "_auth_user_id" not in client.session
    assert AccessAttempt.objects.get(username="coord_a").failures_since_start >= settings.AXES_FAILURE_LIMIT


def test_other_accounts_are_not_locked_by_one_users_failures(client, coordinator_site_a, coordinator_site_b):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "coord_a", "wrong-password")
    assert _login(client, "coord_b", PASSWORD).status_code == 302


def test_sessions_expire_when_idle(client, coordinator_site_a):
    _login(client, "coord_a", PASSWORD)
    assert settings.SESSION_SAVE_EVERY_REQUEST is True
    assert client.session.get_expiry_age() == settings.SESSION_COOKIE_AGE <= 30 * 60


@pytest.mark.parametrize(
    "statement", ["UPDATE trials_accessevent SET username = 'x'", "DELETE FROM trials_accessevent"]
)
def test_the_app_role_cannot_rewrite_the_access_log(client, coordinator_site_a, statement):
    _login(client, "coord_a", PASSWORD)
    with pytest.raises(ProgrammingError, match="permission denied"):
        _as_app_role(statement)
    assert AccessEvent.objects.filter(username="coord_a").exists()
