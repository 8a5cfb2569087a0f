"""``cakra apikey create|revoke|list``: API keys of the regions' ETLE back offices.

The token is printed once, at creation; only its hash is stored, so a lost
token is replaced (create a new key, revoke the old one), never recovered.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from cakra.api.selectors import apikey_list
from cakra.api.services import apikey_create, apikey_revoke
from cakra.enforcement.errors import NotFoundError
from cakra.enforcement.models import Region

MAX_NAME_LENGTH = 100


def _when(value: Any) -> str:
    return "-" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M")


class Command(BaseCommand):
    help = "Create, revoke and list API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a key for a region; the token is shown once.")
        create.add_argument("--region", required=True, help="Region code, e.g. METRO.")
        create.add_argument("--name", default="ETLE back office", help="What the key is for.")
        create.add_argument(
            "--pre-validated",
            action="store_true",
            help="Violations from this key issue notices without an officer's review.",
        )
        revoke = sub.add_parser("revoke", help="Revoke a key by its prefix (the part after 'cakra_').")
        revoke.add_argument("prefix")
        listing = sub.add_parser("list", help="List keys (never their secret).")
        listing.add_argument("--region", default="", help="Only this region's keys.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            self._create(region=options["region"], name=options["name"], pre_validated=options["pre_validated"])
        elif action == "revoke":
            self._revoke(prefix=options["prefix"])
        else:
            self._list(region=options["region"])

    def _create(self, *, region: str, name: str, pre_validated: bool) -> None:
        name = name.strip()
        if not name or len(name) > MAX_NAME_LENGTH:
            raise CommandError(f"--name must be 1 to {MAX_NAME_LENGTH} characters")
        try:
            issued = apikey_create(region_code=region, name=name, pre_validated=pre_validated)
        except NotFoundError as exc:
            raise CommandError(f"unknown region {region!r}") from exc
        key = issued.key
        mode = "pre-validated (notices issue without review)" if key.pre_validated else "officer review"
        self.stdout.write(f"Created API key {key.prefix} for region {key.region.code} ({mode}).")
        self.stdout.write(issued.token)
        self.stderr.write(
            "Store this token now: it will not be shown again (only its hash is kept). "
            "Send it as 'Authorization: Bearer <token>'."
        )

    def _revoke(self, *, prefix: str) -> None:
        # Accept the whole token's visible part too: "cakra_<prefix>".
        prefix = prefix.strip().removeprefix("cakra_").split("_", 1)[0]
        try:
            key = apikey_revoke(prefix=prefix)
        except NotFoundError as exc:
            raise CommandError(f"no active API key with prefix {prefix!r}") from exc
        self.stdout.write(f"Revoked API key {key.prefix} of region {key.region.code}.")

    def _list(self, *, region: str) -> None:
        if region and not Region.objects.filter(code=region).exists():
            raise CommandError(f"unknown region {region!r}")
        header = f"{'PREFIX':<14}{'REGION':<9}{'PRE-VAL':<9}{'CREATED':<18}{'REVOKED':<18}{'LAST USED':<18}NAME"
        self.stdout.write(header)
        for key in apikey_list(region_code=region):
            self.stdout.write(
                f"{key.prefix:<14}{key.region.code:<9}{'yes' if key.pre_validated else 'no':<9}"
                f"{_when(key.created_at):<18}{_when(key.revoked_at):<18}{_when(key.last_used_at):<18}{key.name}"
            )
