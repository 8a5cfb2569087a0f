from django.apps import AppConfig


class SimulatorsConfig(AppConfig):
    name = "cakra.simulators"
    label = "simulators"
