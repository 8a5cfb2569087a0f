"""Deliveries (one per channel step of a notice's plan) and their attempts.

Channel-agnostic: the adapter for ``channel`` decides how a delivery is sent;
every provider call leaves an attempt row.
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from cakra.db import time_ordered_uuid
from cakra.security.fields import EncryptedTextField


class Channel(models.TextChoices):
    WHATSAPP = "whatsapp", "WhatsApp"
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"
    POST = "post", "Post"


# Which kind of contact point each channel needs.
CHANNEL_CONTACT_KIND = {
    Channel.WHATSAPP: "mobile",
    Channel.SMS: "mobile",
    Channel.EMAIL: "email",
    Channel.POST: "postal",
}


class Delivery(models.Model):
    class Status(models.TextChoices):
        PLANNED = "planned", "Planned (a later step of the plan)"
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        READ = "read", "Read"
        FAILED_TEMPORARY = "failed_temporary", "Failed, will retry"
        FAILED_PERMANENT = "failed_permanent", "Failed permanently"

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    # No index of its own: (notice, step) is unique, so indexed, and leads with it.
    notice = models.ForeignKey(
        "enforcement.Notice", on_delete=models.PROTECT, related_name="deliveries", db_index=False
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    step = models.PositiveSmallIntegerField(help_text="Position in the notice's delivery plan, from 1.")
    # Null only once the retention schedule has removed which address a
    # notice went to (cakra.ops.retention).
    contact_point = models.ForeignKey(
        "registry.ContactPoint", on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    provider = models.CharField(max_length=32, blank=True)
    provider_reference = models.CharField(max_length=128, blank=True)  # indexed in Meta (no LIKE index)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    # The provider's reference, written the moment it accepted the message and
    # before the next message of the batch is started: a worker killed before
    # recording the batch leaves this behind, and the next claim records the
    # delivery as sent instead of sending it again (cakra.delivery.sending).
    accepted_reference = models.CharField(max_length=128, blank=True, default="")
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["notice", "step"], name="delivery_step_unique"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["status", "updated_at"]),
            # Receipts find deliveries by the provider's reference (equality only).
            models.Index(fields=["provider_reference"], name="delivery_provider_reference"),
        ]

    def __str__(self) -> str:
        return f"Delivery {self.id} ({self.channel})"


class DeliveryAttempt(models.Model):
    class Outcome(models.TextChoices):
        SENT = "sent", "Accepted by the provider"
        RETRYABLE = "retryable", "Retryable error"
        THROTTLED = "throttled", "Throttled"
        PERMANENT = "permanent", "Permanent error"
        DUPLICATE = "duplicate", "Duplicate"
        RECOVERED = "recovered", "Accepted before a crash; recorded, not sent again"

    # No index of its own: (delivery, number) is unique, so indexed, and leads with it.
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts", db_index=False)
    number = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=32)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    provider_reference = models.CharField(max_length=128, blank=True)
    error = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["delivery", "number"], name="attempt_number_unique"),
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of {self.delivery_id}"


class DeliveryReceipt(models.Model):
    """One status report from a provider about a delivery (a webhook event,
    an SMPP ``deliver_sm``, a postal tracking scan), kept as received.

    ``(provider, event_id)`` is unique: a provider that retries, or an
    attacker replaying a captured body, lands on the constraint and changes
    nothing. Every receipt that matched a delivery is stored, including those
    that changed nothing (late, out of order, informational), so the notice's
    timeline shows what each provider said and when.
    """

    class Event(models.TextChoices):
        SENT = "sent", "Accepted by the provider"
        DELIVERED = "delivered", "Delivered"
        READ = "read", "Read (opened)"
        FAILED = "failed", "Failed (bounced, undeliverable)"
        DEFERRED = "deferred", "Deferred (the provider is still trying)"

    class Outcome(models.TextChoices):
        APPLIED = "applied", "Moved the delivery forward"
        RECORDED = "recorded", "Recorded only (informational)"
        IGNORED_OLDER = "ignored_older", "Ignored: the delivery is already at or past this state"

    provider = models.CharField(max_length=32)
    event_id = models.CharField(max_length=128)
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="receipts")
    event = models.CharField(max_length=16, choices=Event.choices)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    status_after = models.CharField(max_length=20, choices=Delivery.Status.choices)
    occurred_at = models.DateTimeField(help_text="When the provider says it happened (never later than received_at).")
    received_at = models.DateTimeField()
    detail = models.CharField(max_length=200, blank=True, help_text="The provider's reason, with addresses removed.")

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="receipt_event_unique"),
        ]

    def __str__(self) -> str:
        return f"Receipt {self.provider}:{self.event_id} ({self.event})"


class MessageTemplate(models.Model):
    """A message template as registered with the provider (WhatsApp's
    pre-approved templates): what may be sent outside the customer's window.

    Only an ``approved`` version is sent; its parameters are validated
    against ``parameter_count`` before the message is built, and the text the
    citizen sees is rendered from ``body`` for the timeline. A changed body
    is a new ``version`` (the provider reviews it again); earlier versions
    stay for the record of what was sent.
    """

    class Category(models.TextChoices):
        UTILITY = "utility", "Utility"
        MARKETING = "marketing", "Marketing"
        AUTHENTICATION = "authentication", "Authentication"

    class Status(models.TextChoices):
        PENDING = "pending", "Submitted, not reviewed yet"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        PAUSED = "paused", "Paused by the provider (quality)"
        DISABLED = "disabled", "Disabled"

    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.WHATSAPP)
    name = models.CharField(max_length=64)
    language = models.CharField(max_length=8)
    version = models.PositiveIntegerField(default=1)
    category = models.CharField(max_length=16, choices=Category.choices, default=Category.UTILITY)
    body = models.TextField()
    parameter_count = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["channel", "name", "language", "version"], name="template_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.language}) v{self.version}"


# WhatsApp caps a text message at 4,096 characters; nothing longer is a message.
INBOUND_TEXT_MAX_LENGTH = 4096


class InboundMessage(models.Model):
    """A message a citizen sent to an official number (a reply, a forwarded
    suspicious message), kept as received for the scam checker, and the
    automatic answer it got.

    The sender's number is never stored in clear: ``sender_hash`` (a keyed
    hash, :func:`cakra.security.crypto.inbound_sender_hash`) finds a sender's
    other messages, and ``sender`` (encrypted, bound to the row) is opened
    only by the task that sends the answer. ``(provider,
    provider_message_id)`` is unique: Meta redelivers a webhook until it is
    answered 200, and a copy must not be stored or answered twice.
    """

    class Kind(models.TextChoices):
        TEXT = "text", "Text"
        IMAGE = "image", "Image"
        AUDIO = "audio", "Audio"
        VIDEO = "video", "Video"
        DOCUMENT = "document", "Document"
        STICKER = "sticker", "Sticker"
        LOCATION = "location", "Location"
        CONTACTS = "contacts", "Contacts"
        BUTTON = "button", "Button reply"
        INTERACTIVE = "interactive", "Interactive reply"
        REACTION = "reaction", "Reaction"
        OTHER = "other", "Other"

    class ReplyStatus(models.TextChoices):
        PENDING = "pending", "Answer to send"
        SENDING = "sending", "Answer being sent"
        SENT = "sent", "Answered"
        SUPPRESSED = "suppressed", "Not answered: the sender was answered recently"
        NOT_OURS = "not_ours", "Not answered: no region has this number"
        EXPIRED = "expired", "Not answered: the customer window closed"
        FAILED = "failed", "The answer failed"

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.WHATSAPP)
    provider = models.CharField(max_length=32)
    provider_message_id = models.CharField(max_length=128)
    sender_hash = models.CharField(max_length=64)
    sender = EncryptedTextField()
    business_phone_number_id = models.CharField(max_length=32)
    region_code = models.CharField(max_length=8, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    text = models.TextField(blank=True, max_length=INBOUND_TEXT_MAX_LENGTH)
    language = models.CharField(max_length=8, help_text="The language the answer is (to be) written in.")
    received_at = models.DateTimeField(help_text="When the citizen sent it (the provider's timestamp).")
    recorded_at = models.DateTimeField(auto_now_add=True)
    reply_status = models.CharField(max_length=16, choices=ReplyStatus.choices, default=ReplyStatus.PENDING)
    replied_at = models.DateTimeField(null=True, blank=True)
    reply_reference = models.CharField(max_length=128, blank=True)
    reply_error = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["provider", "provider_message_id"], name="inbound_message_unique"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            # A sender's recent messages: was this sender answered lately?
            models.Index(fields=["sender_hash", "recorded_at"], name="inbound_sender_recent"),
        ]

    def __str__(self) -> str:
        return f"Inbound {self.id} ({self.kind})"
