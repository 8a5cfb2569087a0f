"""Recipient addresses that make the sink behave like a relay in trouble.

As with the "magic numbers" of GOV.UK Notify, the local part of a recipient
chooses what happens, so failure paths can be shown and tested end to end.
At RCPT TO a local part starting with ``bounce`` gets ``550`` (no such
mailbox), ``throttle`` gets ``451`` (rate limited), ``tempfail`` gets
``450``. Accepted recipients are reported delivered at once, except:
``softbounce…`` is reported ``bounced`` later (an asynchronous bounce),
``opened…`` is reported ``delivered`` and then ``opened``, ``silent…`` is
never reported.
"""

from __future__ import annotations

# Local part prefix -> the reply a refusing relay would give at RCPT TO.
SIMULATED_RCPT_REPLIES = (
    ("bounce", "550 5.1.1 Mailbox unavailable"),
    ("throttle", "451 4.7.1 Rate limit exceeded, too many messages, try again later"),
    ("tempfail", "450 4.2.1 Mailbox temporarily unavailable"),
)
# Local part prefix -> the events reported, with their delay after storage in
# seconds. Any other accepted recipient is reported delivered at once.
SIMULATED_REPORTS: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = (
    ("softbounce", (("bounced", 0.5),)),
    ("opened", (("delivered", 0.0), ("opened", 0.5))),
    # Stored, never reported: a relay that sends no events for this message
    # (the bench's bare client uses it, so measuring the relay alone does not
    # load the system under test with receipts for messages it never sent).
    ("silent", ()),
)
DELIVERED_REPORT: tuple[tuple[str, float], ...] = (("delivered", 0.0),)


def simulated_refusal(address: str) -> str:
    """The reply a refusing relay gives at RCPT TO for ``address``; "" to accept it."""
    local_part = address.rpartition("@")[0].lower()
    for prefix, reply in SIMULATED_RCPT_REPLIES:
        if local_part.startswith(prefix):
            return reply
    return ""


def reports_for(recipients: list[str]) -> tuple[tuple[str, float], ...]:
    """The events the sink reports for a message to ``recipients``, with their delays."""
    for recipient in recipients:
        local_part = recipient.rpartition("@")[0].lower()
        for prefix, reports in SIMULATED_REPORTS:
            if local_part.startswith(prefix):
                return reports
    return DELIVERED_REPORT
