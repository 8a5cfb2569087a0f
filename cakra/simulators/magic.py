"""Magic test numbers: recipients the simulators treat in a known way.

Like GOV.UK Notify's test keys, a tester (or the benchmark) chooses an
outcome by choosing the recipient. Every simulator of a phone channel
(WhatsApp Cloud API, the SMSC, the HTTP SMS gateway) reads the same table,
so one owner's number behaves consistently across the plan's channels.

A magic number is a valid Indonesian mobile number whose national number
starts with ``81999`` followed by the digit that selects the behaviour (any
digits may follow, to make many distinct recipients)::

    +62 819 991 …   temporary failure on every channel (retried)
    +62 819 992 …   permanent failure on every channel (refused at once)
    +62 819 993 …   not a WhatsApp user: WhatsApp accepts, then reports
                    "failed" (131026); SMS delivers
    +62 819 994 …   throttled on every channel (WhatsApp 130429, SMPP
                    ESME_RTHROTTLED, the gateway's 429)
    +62 819 995 …   not a WhatsApp user, and the SMS is accepted but
                    reported undeliverable (so the plan goes on to email)
    +62 819 996 …   accepted and never confirmed: no delivery receipt
                    (the plan's cut-off moves the notice on)

Every other number is delivered (and read, on WhatsApp) with receipts.
"""

from __future__ import annotations

from enum import StrEnum

MAGIC_PREFIX = "6281999"


class Magic(StrEnum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    NOT_ON_WHATSAPP = "not_on_whatsapp"
    THROTTLED = "throttled"
    NOT_ON_WHATSAPP_SMS_UNDELIVERABLE = "not_on_whatsapp_sms_undeliverable"
    NO_RECEIPT = "no_receipt"


_BY_DIGIT = {
    "1": Magic.TEMPORARY,
    "2": Magic.PERMANENT,
    "3": Magic.NOT_ON_WHATSAPP,
    "4": Magic.THROTTLED,
    "5": Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE,
    "6": Magic.NO_RECEIPT,
}


def magic_for(number: str) -> Magic:
    """The behaviour a simulator gives ``number`` (E.164, with or without "+")."""
    digits = number.removeprefix("+")
    if not digits.startswith(MAGIC_PREFIX) or len(digits) <= len(MAGIC_PREFIX):
        return Magic.DELIVERED
    return _BY_DIGIT.get(digits[len(MAGIC_PREFIX)], Magic.DELIVERED)


def magic_number(behaviour: Magic, serial: int = 0) -> str:
    """A valid number in E.164 with ``behaviour`` (``serial``: up to 999,999 distinct ones)."""
    if behaviour == Magic.DELIVERED:
        return f"+62812{serial:08d}"
    digit = next(key for key, value in _BY_DIGIT.items() if value == behaviour)
    return f"+{MAGIC_PREFIX}{digit}{serial:06d}"
