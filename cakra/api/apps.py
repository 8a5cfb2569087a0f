from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "cakra.api"
    label = "api"
