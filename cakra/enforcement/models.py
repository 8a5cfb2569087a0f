"""Regions and their policy, fines by article, violations with evidence, notices."""

from __future__ import annotations

from datetime import time
from typing import ClassVar

from django.conf import settings
from django.core.files.storage import Storage, storages
from django.db import models

from cakra.db import time_ordered_uuid
from cakra.security.fields import EncryptedTextField

DEFAULT_CHANNEL_ORDER = ["whatsapp", "sms", "email", "post"]


def evidence_storage() -> Storage:
    """Private storage for evidence files; never served directly."""
    return storages["evidence"]


def _default_channel_order() -> list[str]:
    return list(DEFAULT_CHANNEL_ORDER)


def _default_plate_prefixes() -> list[str]:
    return []


class Region(models.Model):
    """A Polda and its notice policy. Values differ between regions: never constants."""

    class DeadlineBasis(models.TextChoices):
        VIOLATION = "violation", "From the date of the violation"
        ISSUE = "issue", "From the date the notice is issued"

    code = models.CharField(max_length=8, unique=True)
    name = models.CharField(max_length=100)
    timezone = models.CharField(max_length=32, default="Asia/Jakarta")
    plate_prefixes = models.JSONField(default=_default_plate_prefixes)
    # Deadlines, in days
    confirmation_days = models.PositiveSmallIntegerField(default=8)
    confirmation_basis = models.CharField(max_length=16, choices=DeadlineBasis.choices, default=DeadlineBasis.ISSUE)
    payment_days = models.PositiveSmallIntegerField(default=7)
    # Delivery policy
    channel_order = models.JSONField(default=_default_channel_order)
    digital_cutoff_hours = models.PositiveSmallIntegerField(
        default=48, help_text="Hours a digital channel has to confirm delivery before the next one is tried."
    )
    channel_cutoff_hours = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per channel, hours to confirm delivery before the next channel is tried "
        '(e.g. {"whatsapp": 6, "sms": 12}); a channel not named here uses digital_cutoff_hours.',
    )
    print_cutoff = models.TimeField(default=time(15, 0), help_text="Daily print-batch cut-off, region time.")
    # Sender identities, published on the portal so citizens can check them
    whatsapp_sender = models.CharField(max_length=20, blank=True, help_text="The official number, as citizens see it.")
    # The provider's id of that number (the Cloud API sends "from" it) and the
    # verified business name WhatsApp shows above every message.
    whatsapp_phone_number_id = models.CharField(max_length=32, blank=True)
    whatsapp_display_name = models.CharField(max_length=100, blank=True)
    sms_sender_id = models.CharField(max_length=11, blank=True)
    email_from_address = models.EmailField()
    email_from_name = models.CharField(max_length=100)
    # Letter
    letterhead = models.TextField(help_text="Letterhead lines of the surat konfirmasi.")
    signatory_name = models.CharField(max_length=100)
    signatory_title = models.CharField(max_length=150)

    def __str__(self) -> str:
        return f"{self.code} ({self.name})"

    def cutoff_hours_for(self, channel: str) -> int:
        """Hours a delivery on ``channel`` has to be confirmed (0: never times out)."""
        hours = (self.channel_cutoff_hours or {}).get(channel)
        if isinstance(hours, int) and not isinstance(hours, bool) and hours >= 0:
            return hours
        return self.digital_cutoff_hours  # not named, or not a whole number of hours


class Article(models.Model):
    """A violation type of UU 22/2009 with its statutory maximum fine (the deposit)."""

    code = models.CharField(max_length=16, unique=True)
    law = models.CharField(max_length=32, default="UU 22/2009")
    title_id = models.CharField(max_length=200)
    title_en = models.CharField(max_length=200)
    max_fine = models.PositiveIntegerField(help_text="Rupiah")

    def __str__(self) -> str:
        return f"Pasal {self.code}"


class Violation(models.Model):
    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        VALIDATED = "validated", "Validated"
        REJECTED = "rejected", "Rejected"

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    # No index of its own: (region, capture_id) and (region, status, received_at) lead with it.
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="violations", db_index=False)
    capture_id = models.CharField(max_length=64)
    payload_hash = models.CharField(max_length=64, help_text="SHA-256 of the canonical intake payload.")
    camera_id = models.CharField(max_length=64)
    captured_at = models.DateTimeField()
    location = models.CharField(max_length=200)
    latitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    longitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    plate = models.CharField(max_length=16)
    plate_compact = models.CharField(max_length=12)  # indexed in Meta (equality only, no LIKE index)
    # Not indexed, here and on Notice: nothing looks violations up by article,
    # and the handful of statutory articles are never deleted (the index
    # would only be paid for on every insert).
    article = models.ForeignKey(Article, on_delete=models.PROTECT, db_index=False)
    measured_speed_kmh = models.PositiveSmallIntegerField(null=True, blank=True)
    speed_limit_kmh = models.PositiveSmallIntegerField(null=True, blank=True)
    vehicle = models.ForeignKey(
        "registry.Vehicle", on_delete=models.PROTECT, null=True, blank=True, related_name="violations"
    )
    # Not indexed: API keys are revoked, never deleted, and nothing looks
    # violations up by key.
    source_key = models.ForeignKey("api.ApiKey", on_delete=models.PROTECT, null=True, blank=True, db_index=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    received_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    # Indexed in Meta only where set: captures from a pre-validated key (the
    # bulk of them) have no deciding officer.
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    pre_validated = models.BooleanField(default=False)
    rejection_reason = models.TextField(blank=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["region", "capture_id"], name="violation_capture_unique"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["region", "status", "received_at"]),
            models.Index(fields=["plate_compact"], name="violation_plate_compact"),
            models.Index(
                fields=["decided_by"], name="violation_decided_by", condition=models.Q(decided_by__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"Violation {self.id}"


class Evidence(models.Model):
    """One evidence image. The original is kept byte for byte with its SHA-256
    (chain of custody); only the re-encoded, metadata-free derivative is shown."""

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    # No index of its own: (violation, position) is unique, so indexed, and leads with it.
    violation = models.ForeignKey(Violation, on_delete=models.PROTECT, related_name="evidence", db_index=False)
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=16, default="vehicle")
    original = models.FileField(storage=evidence_storage, max_length=200)
    original_sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=16)
    size_bytes = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    derivative = models.FileField(storage=evidence_storage, max_length=200, blank=True)
    derivative_sha256 = models.CharField(max_length=64, blank=True)
    derived_at = models.DateTimeField(null=True, blank=True)
    # Decoding is bounded: every attempt is counted before the decoder runs
    # (a worker killed by the image counts too), and after the last allowed
    # one the image is marked failed and left for an officer.
    derive_attempts = models.PositiveSmallIntegerField(default=0)
    derive_last_error = models.CharField(max_length=64, blank=True)
    derive_failed_at = models.DateTimeField(null=True, blank=True)
    # When a page view last asked a worker for the derivative (views never
    # decode; this keeps repeated views from queueing the same work).
    derive_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["violation", "position"], name="evidence_position_unique"),
        ]

    def __str__(self) -> str:
        return f"Evidence {self.id}"


class Notice(models.Model):
    """The surat konfirmasi: one per validated violation, to the registered owner."""

    class Status(models.TextChoices):
        ISSUED = "issued", "Issued"
        NOTIFIED = "notified", "Notified"
        CONFIRMED = "confirmed", "Confirmed"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    # Unique by a constraint in Meta rather than unique=True, which on
    # PostgreSQL also builds a second index for LIKE searches: numbers are
    # only ever looked up whole.
    number = models.CharField(max_length=16)
    violation = models.OneToOneField(Violation, on_delete=models.PROTECT, related_name="notice")
    # No index of its own: (region, status, issued_at) leads with it.
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="notices", db_index=False)
    # Null only once the retention schedule has removed the link between the
    # notice and a person (cakra.ops.retention); the notice's region,
    # article, fine and dates stay for statistics.
    vehicle = models.ForeignKey(
        "registry.Vehicle", on_delete=models.PROTECT, related_name="notices", null=True, blank=True
    )
    owner = models.ForeignKey("registry.Owner", on_delete=models.PROTECT, related_name="notices", null=True, blank=True)
    article = models.ForeignKey(Article, on_delete=models.PROTECT, db_index=False)
    fine_amount = models.PositiveIntegerField(help_text="Rupiah; the statutory maximum, held as deposit.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ISSUED)
    issued_at = models.DateTimeField()
    confirm_by = models.DateField()
    # The short code printed on the letter and in messages. Compared by keyed
    # hash; kept encrypted only so letters and messages can be rendered again.
    verification_code_hash = models.CharField(max_length=64)
    verification_code = EncryptedTextField()

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["number"], name="notice_number_unique"),
        ]
        indexes: ClassVar[list[models.Index]] = [models.Index(fields=["region", "status", "issued_at"])]

    def __str__(self) -> str:
        return f"Notice {self.number}"
