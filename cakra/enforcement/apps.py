from django.apps import AppConfig


class EnforcementConfig(AppConfig):
    name = "cakra.enforcement"
    label = "enforcement"
