from django.apps import AppConfig
from django.core import checks


class DeliveryConfig(AppConfig):
    name = "cakra.delivery"
    label = "delivery"

    def ready(self) -> None:
        # The tasks are registered in every process, not only in workers:
        # work is published by task name, and a process running tasks inline
        # (CELERY_TASK_ALWAYS_EAGER) runs them only if it knows them. The
        # checks read models' choices. Both need the app registry ready.
        from cakra.delivery import tasks  # noqa: F401, PLC0415
        from cakra.delivery.checks import providers_check, receipt_webhooks_check  # noqa: PLC0415

        checks.register(providers_check, "cakra")
        checks.register(receipt_webhooks_check, "cakra")
