"""``cakra templates``: the WhatsApp template registry (cakra.delivery.message_templates).

- ``cakra templates list``: every version with its status;
- ``cakra templates sync [--approved]``: register the shipped templates (a
  changed body is a new version, pending; ``--approved`` records that the
  provider approved exactly these bodies);
- ``cakra templates status NAME LANGUAGE VERSION STATUS``: record the
  provider's verdict on one version (approved, rejected, paused, disabled).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cakra.delivery.message_templates import message_template_status_set, message_templates_sync
from cakra.delivery.models import MessageTemplate


class Command(BaseCommand):
    help = "List, register or record the provider's verdict on WhatsApp message templates."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="action", required=True)
        commands.add_parser("list", help="Every version with its status.")
        sync = commands.add_parser("sync", help="Register the shipped templates.")
        sync.add_argument("--approved", action="store_true", help="The provider approved these bodies.")
        status = commands.add_parser("status", help="Record the provider's verdict on one version.")
        status.add_argument("name")
        status.add_argument("language")
        status.add_argument("version", type=int)
        status.add_argument("status", choices=MessageTemplate.Status.values)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "sync":
            for row in message_templates_sync(approved=options["approved"]):
                self.stdout.write(f"{row.name} ({row.language}) v{row.version}: {row.status}")
        elif action == "status":
            updated = message_template_status_set(
                name=options["name"], language=options["language"], version=options["version"], status=options["status"]
            )
            if not updated:
                msg = "no such template version"
                raise CommandError(msg)
            self.stdout.write(f"{options['name']} ({options['language']}) v{options['version']}: {options['status']}")
        for row in MessageTemplate.objects.order_by("name", "language", "version"):
            if action == "list":
                self.stdout.write(
                    f"{row.name:<24} {row.language:<4} v{row.version:<3} {row.category:<14} {row.status:<9} "
                    f"{row.parameter_count} parameters"
                )
