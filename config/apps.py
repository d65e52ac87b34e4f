from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project itself as an app, so that its start-up checks (config/checks.py) are registered."""

    name = "config"
    label = "tolerance_config"
    verbose_name = "Tolerance"

    def ready(self) -> None:
        from config import checks  # noqa: F401 - registers the checks
