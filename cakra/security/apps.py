from django.apps import AppConfig


class SecurityConfig(AppConfig):
    name = "cakra.security"
    label = "security"
