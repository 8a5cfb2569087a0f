"""A local HTTP SMS gateway in the Twilio style: the ``sms-http`` provider's simulator.

``SmsGateway`` (:mod:`~cakra.simulators.smsgateway.gateway`) runs, in background threads:

- Twilio's Messages endpoint on 127.0.0.1
  (:mod:`~cakra.simulators.smsgateway.server`): HTTP Basic auth, form-encoded
  sends, Twilio's JSON answers and error bodies, a rate limit per account,
  keep-alive connections, configurable latency and failure mix, and the
  magic test numbers of :mod:`cakra.simulators.magic`;
- the store (:mod:`~cakra.simulators.smsgateway.store`): every accepted
  message, its statuses, the copies of each (To, Body);
- status callbacks (:mod:`~cakra.simulators.smsgateway.callbacks`): posted
  to each message's ``StatusCallback`` (loopback only), form-encoded and
  signed with ``X-Twilio-Signature``, retried with backoff;
- pages (:mod:`~cakra.simulators.smsgateway.web`): each recipient's phone
  screen, ``/messages.json`` and ``/_sim/received.json``.

Use it in tests as a context manager; port 0 picks a free one::

    with SmsGateway(account_sid="AC…", auth_token="…") as gateway:
        ...  # point the adapter's BASE_URL at gateway.base_url
"""

from cakra.simulators.smsgateway.callbacks import CallbackReporter, callback_params
from cakra.simulators.smsgateway.gateway import SmsGateway, segments
from cakra.simulators.smsgateway.store import GatewayMessage

__all__ = ["CallbackReporter", "GatewayMessage", "SmsGateway", "callback_params", "segments"]
