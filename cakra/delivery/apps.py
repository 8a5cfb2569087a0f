from django.apps import AppConfig
from django.core import checks


class DeliveryConfig(AppConfig):
    name = "cakra.delivery"
    label = "delivery"

    def ready(self) -> None:
        from cakra.delivery.checks import providers_check

        checks.register(providers_check, "cakra")
