from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "cakra.demo"
    label = "demo"
