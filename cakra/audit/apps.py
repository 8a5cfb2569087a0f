from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "cakra.audit"
    label = "audit"
