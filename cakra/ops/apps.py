from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "cakra.ops"
    label = "ops"
