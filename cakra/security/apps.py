from django.apps import AppConfig


class SecurityConfig(AppConfig):
    name = "cakra.security"
    label = "security"

    def ready(self) -> None:
        # Registers the deploy checks (the decorator runs on import).
        from cakra.security import proxy_checks  # noqa: F401
