"""The bench owners' mobile numbers, shared by the phone channels (WhatsApp, SMS).

One owner has one number, whichever phone channel reads it, so it is stored
once (both channels' contact kind is ``mobile``). In a run whose plan has
several channels and starts with WhatsApp (the demo plan, the default),
some owners get the simulators' magic numbers (:mod:`cakra.simulators.magic`)
so that the plan falls back as it would for real recipients:

- ``NOT_ON_WHATSAPP_SHARE`` of the owners are not on WhatsApp (the WhatsApp
  simulator reports their message failed, 131026): the notice falls back to SMS;
- among those, ``SMS_UNDELIVERABLE_SHARE`` of all owners also have a number
  whose SMS is reported undeliverable: the notice falls back again, to email.

In a run of one channel (``cakra bench --channel``) every owner has an
ordinary number, so the channel carries the whole load.
"""

from __future__ import annotations

import http.client
import itertools
import json
from collections import Counter
from fractions import Fraction

from cakra.simulators.loopback import LOOPBACK
from cakra.simulators.magic import Magic, magic_number

# Owners are assigned by index in blocks of 50: 45 ordinary, 4 not on
# WhatsApp, 1 not on WhatsApp with an undeliverable SMS.
NOT_ON_WHATSAPP_SHARE = Fraction(10, 100)
SMS_UNDELIVERABLE_SHARE = Fraction(2, 100)
_BLOCK = 50
_ORDINARY = int(_BLOCK * (1 - NOT_ON_WHATSAPP_SHARE))
_SMS_DELIVERED = _ORDINARY + int(_BLOCK * (NOT_ON_WHATSAPP_SHARE - SMS_UNDELIVERABLE_SHARE))
# Magic numbers carry a serial of six digits (cakra.simulators.magic).
MAGIC_SERIALS = 1_000_000


def falls_back(plan: tuple[str, ...]) -> bool:
    """Whether a run with ``plan`` gives owners numbers that make WhatsApp fall back."""
    return len(plan) > 1 and plan[0] == "whatsapp"


def owner_behaviour(index: int, *, plan: tuple[str, ...]) -> Magic:
    """What the simulators do with the ``index``-th owner's number."""
    if not falls_back(plan):
        return Magic.DELIVERED
    position = index % _BLOCK
    if position < _ORDINARY:
        return Magic.DELIVERED
    if position < _SMS_DELIVERED:
        return Magic.NOT_ON_WHATSAPP
    return Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE


def owner_mobile(index: int, *, plan: tuple[str, ...]) -> str:
    """The ``index``-th owner's number in E.164, distinct for every owner."""
    behaviour = owner_behaviour(index, plan=plan)
    if behaviour != Magic.DELIVERED and index >= MAGIC_SERIALS:
        msg = f"the bench has magic numbers for {MAGIC_SERIALS:,} owners, not {index + 1:,}"
        raise ValueError(msg)
    # Ordinary numbers take the index as their serial (eight digits), magic ones too (six).
    return magic_number(behaviour, index)


def fallbacks_expected(notices: int, *, plan: tuple[str, ...]) -> Counter[str]:
    """How many notices of a run of ``notices`` must take each fallback step
    (``"whatsapp>sms"``...), from the owners' numbers: notice ``i`` is owner ``i``'s."""
    expected: Counter[str] = Counter()
    if not falls_back(plan):
        return expected
    for index in range(notices):
        behaviour = owner_behaviour(index, plan=plan)
        steps = {Magic.NOT_ON_WHATSAPP: 1, Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE: 2}.get(behaviour, 0)
        for before, after in list(itertools.pairwise(plan))[:steps]:
            expected[f"{before}>{after}"] += 1
    return expected


# A simulator counts 100,000 messages in well under this; a slow answer is a stuck simulator.
RECEIVED_TIMEOUT_SECONDS = 120.0
HTTP_OK = 200


def simulator_counts(port: int, *, simulator: str) -> object:
    """The parsed ``/_sim/received.json`` of the phone simulator on ``port``
    (copies per reference or per recipient, as that simulator counts them)."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=RECEIVED_TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/_sim/received.json", headers={"Host": f"{LOOPBACK}:{port}"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != HTTP_OK:
        msg = f"the {simulator} simulator answered {response.status} for its counts"
        raise RuntimeError(msg)
    return json.loads(body)
