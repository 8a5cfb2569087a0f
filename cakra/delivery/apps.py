from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    name = "cakra.delivery"
    label = "delivery"
