"""API keys of machine clients (the ETLE back office of a region)."""

from __future__ import annotations

from django.db import models


class ApiKey(models.Model):
    """Shown once at creation; only the SHA-256 of the secret part is stored.

    The token is ``cakra_<prefix>_<secret>``: the prefix finds the row, the
    secret (256 bits) is compared by hash in constant time.
    """

    region = models.ForeignKey("enforcement.Region", on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    pre_validated = models.BooleanField(
        default=False, help_text="Violations from this key issue notices without an officer's review."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"API key {self.prefix} ({self.region_id})"
