"""The SMSC's SMPP v3.4 listener: PDUs decoded and encoded by smpplib's command classes.

One thread per connection reads PDUs (length-prefixed, at most
``MAX_PDU_BYTES``) and answers:

- ``bind_transmitter`` / ``bind_receiver`` / ``bind_transceiver``: with the
  configured ``system_id`` and password (compared in constant time), else
  ``ESME_RINVSYSID`` / ``ESME_RINVPASWD`` and the connection is closed;
- ``enquire_link``, ``unbind`` (then closed), ``generic_nack`` for an unknown
  or malformed command, ``ESME_RINVBNDSTS`` for a command in the wrong state;
- ``submit_sm``: per the recipient's magic number (:mod:`cakra.simulators.magic`):
  temporary ``ESME_RSYSERR``, permanent ``ESME_RINVDSTADR``, throttled
  ``ESME_RTHROTTLED``; a sender ID outside the allowed list
  ``ESME_RINVSRCADR``; more than the per-connection throughput
  ``ESME_RTHROTTLED``; a random share ``ESME_RSYSERR``; otherwise accepted
  with a new ``message_id``, kept (:mod:`~cakra.simulators.smsc.store`)
  and, if ``registered_delivery`` asks, answered later by a receipt
  (:mod:`~cakra.simulators.smsc.receipts`): ``stat:UNDELIV`` for the
  not-on-WhatsApp-and-SMS-undeliverable numbers, none for the
  no-receipt ones, ``stat:DELIVRD`` for the rest.

Test controls: :meth:`SmppServer.force_status` answers the next submits
with a given status (``ESME_RMSGQFUL`` has no magic number),
:meth:`SmppServer.drop_after_submits` closes the connection that receives
the next submits' N+1-th without an answer (a session lost mid-window), and
``receipt_before_response`` sends a receipt down the submitting session
before its ``submit_sm_resp`` (the race a fast SMSC creates).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import itertools
import random
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from django.utils import timezone
from smpplib import consts, exceptions, smpp

from cakra.simulators.loopback import LOOPBACK
from cakra.simulators.magic import Magic, magic_for
from cakra.simulators.smsc.receipts import Receipt, ReceiptDispatcher
from cakra.simulators.smsc.store import SmscStore, SmsMessage

logger = structlog.get_logger(__name__)

HEADER_BYTES = 16
MAX_SEQUENCE = 0x7FFFFFFF
ESM_CLASS_DELIVERY_RECEIPT = 0x04
MAX_PDU_BYTES = 64 * 1024
SMSC_SYSTEM_ID = "CakraSMSC"
BIND_COMMANDS = {
    "bind_transmitter": "tx",
    "bind_receiver": "rx",
    "bind_transceiver": "trx",
}
MAGIC_STATUSES: dict[Magic, int] = {
    Magic.TEMPORARY: consts.SMPP_ESME_RSYSERR,
    Magic.PERMANENT: consts.SMPP_ESME_RINVDSTADR,
    Magic.THROTTLED: consts.SMPP_ESME_RTHROTTLED,
}
UNDELIVERABLE_ERROR = "001"
READ_POLL_SECONDS = 0.5


class _Sequences:
    """The ``client`` smpplib's PDU classes number requests with."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.sequence = 0

    def next_sequence(self) -> int:
        with self._lock:
            self.sequence = next(self._counter)
            if self.sequence > MAX_SEQUENCE:
                self._counter = itertools.count(2)
                self.sequence = 1
            return self.sequence


@dataclass(kw_only=True)
class SmscBehaviour:
    """How the SMSC answers; every field has the settings' meaning (``CAKRA_SMSC_SIM``)."""

    system_id: str
    password: str = field(repr=False)
    sender_ids: frozenset[str] = frozenset()  # empty: any
    latency: float = 0.0  # seconds before each submit_sm_resp
    failure_rate: float = 0.0
    seed: int | None = None
    receipt_delay: float = 0.0
    throughput_per_second: int = 0  # per connection; 0: unlimited
    receipt_before_response: bool = False


class SmppServer:
    def __init__(
        self, *, behaviour: SmscBehaviour, store: SmscStore, dispatcher: ReceiptDispatcher, port: int = 0
    ) -> None:
        self.behaviour = behaviour
        self.store = store
        self.dispatcher = dispatcher
        self._random = random.Random(behaviour.seed)  # noqa: S311 - a failure mix, not a secret
        self._random_lock = threading.Lock()
        self._ids = itertools.count(int(time.time()) % 0x10000 << 32)
        self._ids_lock = threading.Lock()
        self._control_lock = threading.Lock()
        self._forced: list[int] = []
        self._drop_countdown: int | None = None
        self._connections: set[_Connection] = set()
        self.counts: dict[str, int] = {"binds": 0, "bind_refused": 0, "submits": 0, "refused": 0}
        self._tcp = _TcpServer(self, port)
        self._thread = threading.Thread(
            target=self._tcp.serve_forever, kwargs={"poll_interval": 0.05}, name="cakra-smsc-smpp", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._tcp.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._tcp.shutdown()
        self._tcp.server_close()
        with self._control_lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    # --- test controls -------------------------------------------------------------------
    def force_status(self, status: int, *, times: int = 1) -> None:
        """Answer the next ``times`` submit_sm (any connection) with ``status``."""
        with self._control_lock:
            self._forced += [status] * times

    def drop_after_submits(self, count: int) -> None:
        """Close the connection that receives the ``count + 1``-th submit_sm from now, unanswered (once)."""
        with self._control_lock:
            self._drop_countdown = count

    # --- decisions --------------------------------------------------------------------------
    def _message_id(self) -> str:
        with self._ids_lock:
            return f"{next(self._ids):X}"

    def _drop_now(self) -> bool:
        with self._control_lock:
            if self._drop_countdown is None:
                return False
            if self._drop_countdown == 0:
                self._drop_countdown = None
                return True
            self._drop_countdown -= 1
            return False

    def _forced_status(self) -> int | None:
        with self._control_lock:
            return self._forced.pop(0) if self._forced else None

    def submit_status(self, *, sender: str, recipient: str, connection: _Connection) -> int:
        forced = self._forced_status()
        if forced is not None:
            return forced
        magic = magic_for(recipient)
        if magic in MAGIC_STATUSES:
            return MAGIC_STATUSES[magic]
        if self.behaviour.sender_ids and sender not in self.behaviour.sender_ids:
            return int(consts.SMPP_ESME_RINVSRCADR)
        if not connection.throughput_allows(self.behaviour.throughput_per_second):
            return int(consts.SMPP_ESME_RTHROTTLED)
        with self._random_lock:
            failing = self._random.random() < self.behaviour.failure_rate
        return int(consts.SMPP_ESME_RSYSERR if failing else consts.SMPP_ESME_ROK)

    def receipts_for(self, *, message_id: str, message: SmsMessage | None, submitted: dict[str, Any]) -> list[Receipt]:
        """The receipt a just-accepted part gets (none when not asked for, or for the no-receipt numbers)."""
        wanted = int(submitted["registered_delivery"] or 0) & consts.SMPP_SMSC_DELIVERY_RECEIPT_BITMASK
        magic = magic_for(submitted["recipient"])
        if not wanted or magic == Magic.NO_RECEIPT:
            return []
        undeliverable = magic == Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE
        if wanted == consts.SMPP_SMSC_DELIVERY_RECEIPT_FAILURE and not undeliverable:
            return []
        now = timezone.localtime()
        start = (message.text if message is not None else "")[:20]
        return [
            Receipt(
                system_id=submitted["system_id"],
                message_id=message_id,
                handset=submitted["recipient"],
                sender=submitted["sender"],
                stat="UNDELIV" if undeliverable else "DELIVRD",
                error=UNDELIVERABLE_ERROR if undeliverable else "000",
                message_state=consts.SMPP_MESSAGE_STATE_UNDELIVERABLE
                if undeliverable
                else consts.SMPP_MESSAGE_STATE_DELIVERED,
                submitted_at=now,
                done_at=now,
                text_start="".join(c if c.isascii() and c.isprintable() else "?" for c in start),
            )
        ]

    def accept(self, *, connection: _Connection, submitted: dict[str, Any]) -> tuple[str, list[Receipt]]:
        """Keep an accepted part; its message_id and the receipts it earns."""
        message_id = self._message_id()
        message = self.store.part_add(
            message_id=message_id,
            system_id=submitted["system_id"],
            sender=submitted["sender"],
            recipient=submitted["recipient"],
            esm_class=int(submitted["esm_class"] or 0),
            data_coding=int(submitted["data_coding"] or 0),
            short_message=submitted["short_message"],
        )
        receipts = self.receipts_for(message_id=message_id, message=message, submitted=submitted)
        for receipt in receipts:
            self.store.status_set(message_id, receipt.stat)
        if not receipts and magic_for(submitted["recipient"]) == Magic.NO_RECEIPT:
            self.store.status_set(message_id, "no receipt")
        return message_id, receipts

    def connection_opened(self, connection: _Connection) -> None:
        with self._control_lock:
            self._connections.add(connection)

    def connection_closed(self, connection: _Connection) -> None:
        with self._control_lock:
            self._connections.discard(connection)
        self.dispatcher.session_closed(connection)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, smsc: SmppServer, port: int) -> None:
        self.smsc = smsc
        super().__init__((LOOPBACK, port), _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        # Answers are small and each one is awaited: no Nagle delay on them.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _Connection(self.server.smsc, self.request)
        self.server.smsc.connection_opened(connection)
        try:
            connection.serve()
        finally:
            connection.close()
            self.server.smsc.connection_closed(connection)


class _Connection:
    """One ESME's TCP connection: its bind state and its writes (the receipt thread writes too)."""

    def __init__(self, smsc: SmppServer, sock: socket.socket) -> None:
        self.smsc = smsc
        self.sock = sock
        self.mode = ""  # "", "tx", "rx" or "trx"
        self.system_id = ""
        self._sequences = _Sequences()
        self._write_lock = threading.Lock()
        self._closed = threading.Event()
        self._window_start = 0.0
        self._window_count = 0

    # --- I/O -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _write(self, raw: bytes) -> bool:
        with self._write_lock:
            if self._closed.is_set():
                return False
            try:
                self.sock.sendall(raw)
            except OSError:
                return False
        return True

    def _read_exact(self, size: int) -> bytes | None:
        chunks: list[bytes] = []
        while size:
            try:
                chunk = self.sock.recv(size)
            except TimeoutError:
                if self._closed.is_set():
                    return None
                continue
            except OSError:
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _respond(self, command: str, request_sequence: int, status: int = consts.SMPP_ESME_ROK, **fields: Any) -> bool:
        pdu = smpp.make_pdu(command, client=self._sequences, status=status, **fields)
        pdu.sequence = request_sequence
        raw = pdu.generate()
        if status != consts.SMPP_ESME_ROK and command != "deliver_sm_resp":
            # SMPP v3.4: a response with an error status carries no body.
            raw = struct.pack(">L", HEADER_BYTES) + raw[4:HEADER_BYTES]
        return self._write(raw)

    def _nack(self, sequence: int, status: int) -> None:
        self._write(struct.pack(">LLLL", HEADER_BYTES, 0x80000000, status, sequence))

    def serve(self) -> None:
        self.sock.settimeout(READ_POLL_SECONDS)
        while not self._closed.is_set():
            header = self._read_exact(4)
            if header is None:
                return
            (length,) = struct.unpack(">L", header)
            if not HEADER_BYTES <= length <= MAX_PDU_BYTES:
                self._nack(0, consts.SMPP_ESME_RINVCMDLEN)
                return
            rest = self._read_exact(length - 4)
            if rest is None:
                return
            raw = header + rest
            try:
                pdu = smpp.parse_pdu(raw, client=self._sequences, allow_unknown_opt_params=True)
            except exceptions.UnknownCommandError:
                self._nack(struct.unpack(">L", raw[12:16])[0], consts.SMPP_ESME_RINVCMDID)
                continue
            except Exception:  # noqa: BLE001 - a malformed body, whatever smpplib raises for it
                self._nack(struct.unpack(">L", raw[12:16])[0], consts.SMPP_ESME_RINVCMDLEN)
                continue
            if pdu is None or not self._dispatch(pdu):
                return

    # --- commands ------------------------------------------------------------------------
    def _dispatch(self, pdu: Any) -> bool:
        """Answer one PDU; False when the connection is to be closed."""
        command = pdu.command
        handlers: dict[str, Callable[[Any], bool]] = {
            "submit_sm": self._submit,
            "deliver_sm_resp": self._deliver_sm_resp,
            "enquire_link": self._enquire_link,
            "unbind": self._unbind,
        }
        if command in BIND_COMMANDS:
            return self._bind(pdu)
        if command in {"enquire_link_resp", "generic_nack"}:
            return True
        handler = handlers.get(command)
        if handler is None:
            self._nack(pdu.sequence, consts.SMPP_ESME_RINVCMDID)
            return True
        if not self.mode and command != "enquire_link":
            self._nack(pdu.sequence, consts.SMPP_ESME_RINVBNDSTS)
            return True
        return handler(pdu)

    def _bind(self, pdu: Any) -> bool:
        response = f"{pdu.command}_resp"
        if self.mode:
            self._respond(response, pdu.sequence, consts.SMPP_ESME_RALYBND)
            return True
        behaviour = self.smsc.behaviour
        system_id = _text(pdu.system_id)
        password = _text(pdu.password)
        status = consts.SMPP_ESME_ROK
        if not hmac.compare_digest(system_id.encode(), behaviour.system_id.encode()):
            status = consts.SMPP_ESME_RINVSYSID
        elif not hmac.compare_digest(password.encode(), behaviour.password.encode()):
            status = consts.SMPP_ESME_RINVPASWD
        if status != consts.SMPP_ESME_ROK:
            self.smsc.counts["bind_refused"] += 1
            logger.info("smsc.bind_refused", status=f"0x{status:08X}")
            self._respond(response, pdu.sequence, status)
            return False
        self.mode = BIND_COMMANDS[pdu.command]
        self.system_id = system_id
        self.smsc.counts["binds"] += 1
        self._respond(response, pdu.sequence, system_id=SMSC_SYSTEM_ID, sc_interface_version=consts.SMPP_VERSION_34)
        if self.mode in {"rx", "trx"}:
            self.smsc.dispatcher.session_bound(self)
        return True

    def _enquire_link(self, pdu: Any) -> bool:
        return self._respond("enquire_link_resp", pdu.sequence)

    def _unbind(self, pdu: Any) -> bool:
        self._respond("unbind_resp", pdu.sequence)
        return False

    def _deliver_sm_resp(self, pdu: Any) -> bool:
        self.smsc.dispatcher.answered(self, pdu.sequence, int(pdu.status))
        return True

    def throughput_allows(self, per_second: int) -> bool:
        if per_second <= 0:
            return True
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        return self._window_count <= per_second

    def _submit(self, pdu: Any) -> bool:
        smsc = self.smsc
        if self.mode == "rx":
            self._respond("submit_sm_resp", pdu.sequence, consts.SMPP_ESME_RINVBNDSTS)
            return True
        if smsc._drop_now():  # noqa: SLF001 - the server's own test control
            logger.info("smsc.connection_dropped_on_purpose")
            return False
        smsc.counts["submits"] += 1
        if smsc.behaviour.latency:
            time.sleep(smsc.behaviour.latency)
        submitted = {
            "system_id": self.system_id,
            "sender": _text(pdu.source_addr),
            "recipient": _text(pdu.destination_addr),
            "esm_class": pdu.esm_class,
            "data_coding": pdu.data_coding,
            "registered_delivery": pdu.registered_delivery,
            "short_message": bytes(pdu.short_message or pdu.message_payload or b""),
        }
        status = smsc.submit_status(sender=submitted["sender"], recipient=submitted["recipient"], connection=self)
        if status != consts.SMPP_ESME_ROK:
            smsc.counts["refused"] += 1
            return self._respond("submit_sm_resp", pdu.sequence, status)
        message_id, receipts = smsc.accept(connection=self, submitted=submitted)
        if smsc.behaviour.receipt_before_response and self.mode == "trx":
            for receipt in receipts:
                self.receipt_send(receipt, register=functools.partial(smsc.dispatcher.sent, self, receipt=receipt))
            receipts = []
        answered = self._respond("submit_sm_resp", pdu.sequence, message_id=message_id)
        for receipt in receipts:
            smsc.dispatcher.schedule(receipt, delay=smsc.behaviour.receipt_delay)
        return answered

    # --- receipts (ReceiptSession) -----------------------------------------------------------
    def receipt_send(self, receipt: Receipt, *, register: Callable[[int], None]) -> bool:
        pdu = smpp.make_pdu(
            "deliver_sm",
            client=self._sequences,
            service_type="",
            source_addr_ton=consts.SMPP_TON_INTL,
            source_addr_npi=consts.SMPP_NPI_ISDN,
            source_addr=receipt.handset,
            dest_addr_ton=consts.SMPP_TON_ALNUM,
            dest_addr_npi=consts.SMPP_NPI_UNK,
            destination_addr=receipt.sender,
            esm_class=ESM_CLASS_DELIVERY_RECEIPT,
            data_coding=consts.SMPP_ENCODING_DEFAULT,
            short_message=receipt.text().encode("ascii", "replace"),
            receipted_message_id=receipt.message_id,
            message_state=receipt.message_state,
        )
        register(pdu.sequence)
        return self._write(pdu.generate())


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value or ""
