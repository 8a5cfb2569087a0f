"""A local SMTP relay that keeps every message: the email channel's simulator.

``MailSink`` (:mod:`~cakra.simulators.smtp.sink`) runs, in background threads:

- an SMTP server on 127.0.0.1 (:mod:`~cakra.simulators.smtp.server`; ESMTP
  with SIZE, 8BITMIME and PIPELINING) that refuses some recipients as a relay
  in trouble does (:mod:`~cakra.simulators.smtp.recipients`);
- the store (:mod:`~cakra.simulators.smtp.store`): each accepted message
  byte for byte, as received, as one file in a Maildir (open it with any mail
  client), read back with its DKIM verdict, checked against a simulated DNS
  (:mod:`~cakra.simulators.smtp.dns`);
- the provider's event webhook (:mod:`~cakra.simulators.smtp.receipts`):
  signed receipts for what it stored, posted to Cakra over HTTP;
- web pages on 127.0.0.1 (:mod:`~cakra.simulators.smtp.web`) listing the
  messages and their verdicts.

Use it in tests as a context manager; ports 0 pick free ones::

    with MailSink(maildir=tmp_path / "mail", dkim_private_key=pem, dkim_selector="s1") as sink:
        ...  # send to 127.0.0.1:sink.smtp_port, then read sink.messages()
"""

from cakra.simulators.smtp.dns import DkimVerdict, SimulatedDkimDns, dkim_check, dkim_record_derive
from cakra.simulators.smtp.receipts import ReceiptReporter, message_reference
from cakra.simulators.smtp.sink import MailSink
from cakra.simulators.smtp.store import SinkMessage

__all__ = [
    "DkimVerdict",
    "MailSink",
    "ReceiptReporter",
    "SimulatedDkimDns",
    "SinkMessage",
    "dkim_check",
    "dkim_record_derive",
    "message_reference",
]
