"""A local WhatsApp Business Cloud API: the WhatsApp channel's simulator.

``WhatsAppSimulator`` (:mod:`~cakra.simulators.whatsapp.simulator`) runs,
in background threads, on 127.0.0.1:

- Meta's Graph API paths (:mod:`~cakra.simulators.whatsapp.server`):
  ``POST /{version}/{phone_number_id}/messages`` with a bearer token, and the
  template management API; requests are answered as Meta answers them
  (:mod:`~cakra.simulators.whatsapp.api`, errors in Meta's envelope with
  Meta's codes, :mod:`~cakra.simulators.whatsapp.errors`), with template
  checks (:mod:`~cakra.simulators.whatsapp.templates`), the customer-service
  window, the throughput and pair-rate limits
  (:mod:`~cakra.simulators.whatsapp.limits`) and the magic test numbers;
- the webhooks (:mod:`~cakra.simulators.whatsapp.webhooks`): statuses and the
  citizens' inbound messages posted to Cakra in Meta's envelope, signed with
  ``X-Hub-Signature-256``, batched, redelivered on failure;
- the store (:mod:`~cakra.simulators.whatsapp.store`): recent messages and
  conversations in memory, and the copies of each send for the benchmark;
- the pages (:mod:`~cakra.simulators.whatsapp.web`): each recipient's phone
  screen, with a form to reply as the citizen.

Use it in tests as a context manager; port 0 picks a free one::

    with WhatsAppSimulator(access_token=..., app_secret=..., waba_id="1",
                           business_numbers={"2": {...}}, templates=[...]) as sim:
        ...  # POST to f"{sim.base_url}/v21.0/2/messages", then read sim.messages()
"""

from cakra.simulators.whatsapp.api import Behaviour, BusinessNumber
from cakra.simulators.whatsapp.simulator import WhatsAppSimulator
from cakra.simulators.whatsapp.templates import Template
from cakra.simulators.whatsapp.webhooks import SIGNATURE_HEADER, WebhookReporter, hub_signature

__all__ = [
    "SIGNATURE_HEADER",
    "Behaviour",
    "BusinessNumber",
    "Template",
    "WebhookReporter",
    "WhatsAppSimulator",
    "hub_signature",
]
