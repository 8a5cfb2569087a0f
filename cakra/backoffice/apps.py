from django.apps import AppConfig


class BackofficeConfig(AppConfig):
    name = "cakra.backoffice"
    label = "backoffice"
