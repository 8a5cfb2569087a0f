"""An SMSC that speaks SMPP v3.4: the SMS channel's simulator.

``SmscSimulator`` (:mod:`~cakra.simulators.smsc.simulator`) runs, in background threads:

- an SMPP listener on 127.0.0.1 (:mod:`~cakra.simulators.smsc.server`;
  PDUs decoded and encoded with smpplib's command classes) that binds
  ESMEs, answers ``submit_sm`` per the magic numbers, a failure mix and a
  per-connection throughput limit;
- the store (:mod:`~cakra.simulators.smsc.store`): each text reassembled
  from its UDH-concatenated parts, and copies per (recipient, text);
- the receipts (:mod:`~cakra.simulators.smsc.receipts`): ``deliver_sm``
  with the standard receipt text and TLVs, down a bound receiver or
  transceiver of the same ``system_id``, retried with backoff when the
  client answers with an error;
- web pages (:mod:`~cakra.simulators.smsc.web`): each recipient's phone screen.

In tests, as a context manager::

    with SmscSimulator(behaviour=SmscBehaviour(system_id="cakra", password="pw")) as smsc:
        ...  # bind to 127.0.0.1:smsc.smpp_port, then read smsc.messages()
"""

from cakra.simulators.smsc.server import SmppServer, SmscBehaviour
from cakra.simulators.smsc.simulator import SmscSimulator
from cakra.simulators.smsc.store import SmscStore, SmsMessage, copy_key

__all__ = ["SmppServer", "SmsMessage", "SmscBehaviour", "SmscSimulator", "SmscStore", "copy_key"]
