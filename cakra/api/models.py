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


class ApiKeyLoad(models.Model):
    """The request-rate bucket of one key, when the shared store is the database
    (Redis keeps it itself; see cakra.api.quota). GCRA: ``tat_us`` is the
    theoretical arrival time of the next request, in microseconds since the
    epoch; its row lock also serialises admissions of the key."""

    key = models.OneToOneField(ApiKey, on_delete=models.CASCADE, primary_key=True, related_name="load")
    tat_us = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"load of API key {self.key_id}"


class ApiKeyLease(models.Model):
    """One request of a key in flight, until it ends or ``expires_us`` passes
    (a process killed mid-request cannot hold its slot for good)."""

    key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="leases")
    token = models.CharField(max_length=32)
    expires_us = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["key", "expires_us"], name="api_key_lease_key_expiry")]

    def __str__(self) -> str:
        return f"lease {self.token} of API key {self.key_id}"
