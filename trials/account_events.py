"""The append-only record of what one person did to another's account (docs/reliability.md #9).

``auth.User`` is not tracked by pghistory: its row changes on every sign-in (``last_login``) and
carries the password hash, neither of which belongs in the audit trail. Changes of access that
matter are recorded here instead, by the services in ``trials.accounts``, in the same transaction
as the change: superuser and staff grants, permission and group changes, profile and activation
changes, password resets by another person and lockout releases. Role grants (``StudyMembership``)
are audited by pghistory like every other audited model.

The app's database role may insert these rows but never update or delete them (``trials.dbroles``).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AccountEvent(models.Model):
    class Kind(models.TextChoices):
        CREATED = "account_created", "Account created"
        CHANGED = "account_changed", "Account details changed"
        PRIVILEGES = "privileges_changed", "Staff, superuser, group or permission change"
        PASSWORD_RESET = "password_reset", "Password reset by another user"
        LOCKOUT_RELEASED = "lockout_released", "Sign-in lockout released"

    at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # Null only when a superuser clears the lockout of a username that matches no account.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="account_events"
    )
    username = models.CharField(max_length=150, help_text="The account's username at the time.")
    changes = models.JSONField(default=dict, blank=True, help_text="{field: [old, new]}; never a password.")
    reason = models.TextField()
    channel = models.CharField(max_length=20, default="admin")

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["username", "at"])]
        permissions = [("reset_user_password", "Can reset the password of another user")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.get_kind_display()}: {self.username} by {self.actor}"
