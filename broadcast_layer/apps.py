"""Django app configuration: registers the system checks."""

from django.apps import AppConfig


class BroadcastLayerConfig(AppConfig):
    name = "broadcast_layer"
    verbose_name = "Broadcast layer"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
