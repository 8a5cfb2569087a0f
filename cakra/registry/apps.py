from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "cakra.registry"
    label = "registry"
