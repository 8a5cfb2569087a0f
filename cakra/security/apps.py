from django.apps import AppConfig


class SecurityConfig(AppConfig):
    name = "cakra.security"
    label = "security"

    def ready(self) -> None:
        # The deploy checks register themselves on import, which must wait for
        # the app registry (Django's documented place is ready()).
        from cakra.security import proxy_checks  # noqa: F401, PLC0415
