"""Rate-limit counters on the embedded default (without Redis).

One row per limit, window and subject; see :mod:`cakra.security.ratelimit`
for the single statement that counts atomically. Keys carry a keyed hash of
the subject, never a client address or notice number in clear.
"""

from __future__ import annotations

from django.db import models


class RateLimitCounter(models.Model):
    # The scope, the window number and a keyed hash of the subject.
    key = models.CharField(max_length=128, primary_key=True)
    count = models.IntegerField()
    # Unix seconds at which the window ends; later rows are purged.
    expires_at = models.BigIntegerField(db_index=True)

    def __str__(self) -> str:
        return self.key
