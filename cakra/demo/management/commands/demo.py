"""``cakra demo``: seed the embedded default with synthetic data and print how to use it.

Idempotent: a second run prints the same credentials (kept in
``var/demo-credentials.json``, mode 0600) and adds nothing, unless
``--more N`` asks for more violations. Refuses to run in production, and on
a database holding regions or officers it did not seed.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_otp.oath import TOTP

from cakra.backoffice.models import Officer, OfficerTOTPDevice
from cakra.delivery.message_templates import message_templates_sync
from cakra.demo.seed import (
    DemoCredentials,
    apikeys_seed,
    demo_summary,
    officers_seed,
    regions_seed,
    registry_seed,
)
from cakra.demo.violations import violations_stream
from cakra.enforcement.models import Region


class Command(BaseCommand):
    help = "Seed synthetic demo data (regions, registry, officers, API keys, violations)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--vehicles", type=int, default=120, help="vehicles per region")
        parser.add_argument("--violations", type=int, default=45)
        parser.add_argument("--seed", type=int, default=2026)
        parser.add_argument("--more", type=int, default=0, help="post N more violations to a seeded demo")
        parser.add_argument("--quiet", action="store_true", help="seed without printing the summary")
        parser.add_argument("--totp", metavar="USERNAME", help="print the current TOTP code of a demo officer")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            msg = "cakra demo seeds synthetic data and is refused with CAKRA_ENV=production"
            raise CommandError(msg)
        if options["totp"]:
            self._print_totp(options["totp"])
            return
        credentials = DemoCredentials.load()
        if credentials is None and (Region.objects.exists() or Officer.objects.exists()):
            # Seeding resets the password and TOTP of the demo officers' user
            # names: on a database the demo did not seed, those may be real accounts.
            msg = (
                "this database already holds regions or officers that cakra demo did not seed; nothing was "
                "changed. Run the demo on a database of its own (an empty CAKRA_DATA_DIR or DATABASE_URL)."
            )
            raise CommandError(msg)
        # The shipped WhatsApp templates, recorded as approved: on the demo the
        # simulator plays the provider that approved them (production records
        # the provider's verdict with `cakra templates`).
        message_templates_sync(approved=True)
        if credentials is None or not Region.objects.exists():
            credentials = self._seed(options)
        elif options["more"]:
            result = violations_stream(count=options["more"], seed=options["seed"] + 1, pre_validated_share=0.5)
            self.stdout.write(f"posted {result.received} more violations ({result.notices} notices issued)")
        if not options["quiet"]:
            self._print(credentials)

    def _seed(self, options: dict[str, Any]) -> DemoCredentials:
        self.stdout.write("seeding demo data (synthetic, Faker id_ID)…")
        # One log line per seeded capture would bury the summary below.
        cakra_logger = logging.getLogger("cakra")
        level = cakra_logger.level
        cakra_logger.setLevel(logging.WARNING)
        try:
            regions = regions_seed()
            vehicles = registry_seed(regions=regions, vehicles_per_region=options["vehicles"], seed=options["seed"])
            credentials = DemoCredentials(
                officers=officers_seed(regions=regions), api_keys=apikeys_seed(regions=regions)
            )
            credentials.save()
            result = violations_stream(count=options["violations"], seed=options["seed"], pre_validated_share=0.4)
        finally:
            cakra_logger.setLevel(level)
        self.stdout.write(
            f"  {len(regions)} regions, {vehicles} vehicles with owners, {len(credentials.officers)} officers, "
            f"{result.received} violations ({result.notices} notices issued at once by pre-validated keys)"
        )
        return credentials

    def _print_totp(self, username: str) -> None:
        device = OfficerTOTPDevice.objects.filter(user__username=username, name="demo authenticator").first()
        if device is None:
            msg = f"{username!r} is not a demo officer"
            raise CommandError(msg)
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        self.stdout.write(f"{totp.token():0{device.digits}d}")

    def _print(self, credentials: DemoCredentials) -> None:
        self.stdout.write(demo_summary(credentials))
