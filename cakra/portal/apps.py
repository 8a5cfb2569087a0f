from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "cakra.portal"
    label = "portal"
