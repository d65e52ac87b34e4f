from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


def _protect_database(sender, using, **kwargs) -> None:
    from trials.dbroles import apply_database_protection

    apply_database_protection(using)


class TrialsConfig(AppConfig):
    name = "trials"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import signals as auth_signals

        from trials import access_log, checks  # noqa: F401 - checks registers the deployment checks
        from trials.dbroles import assume_app_role

        post_migrate.connect(_protect_database, sender=self, dispatch_uid="trials.protect_database")
        connection_created.connect(assume_app_role, dispatch_uid="trials.assume_app_role")
        auth_signals.user_logged_in.connect(access_log.on_login, dispatch_uid="trials.access_login")
        auth_signals.user_logged_out.connect(access_log.on_logout, dispatch_uid="trials.access_logout")
        auth_signals.user_login_failed.connect(access_log.on_login_failed, dispatch_uid="trials.access_failed")
