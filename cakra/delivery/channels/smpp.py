"""SMS over SMPP v3.4, with smpplib's client and PDU codec.

Options (the ``OPTIONS`` of a ``CAKRA_PROVIDERS`` entry): ``HOST``, ``PORT``,
``SYSTEM_ID`` (at most 15 characters), ``PASSWORD`` (at most 8, SMPP's limit;
give it as ``PASSWORD_ENV``, the name of the variable holding it, see
:mod:`cakra.delivery.channels.provider_settings`), optional ``SYSTEM_TYPE``,
``TIMEOUT`` seconds (connect, bind and each answer; default 10), ``WINDOW``
(submit_sm sent before their answers are read; default 10) and
``ENQUIRE_LINK_SECONDS`` (an idle session is checked with ``enquire_link``
before it is used again; default 30).

One ``bind_transceiver`` session per process and thread carries every
batch; a session found dropped (the SMSC closed it, or it does not answer
``enquire_link``) is opened and bound again before the next message, never
in the middle of one. Each message goes as ``submit_sm`` from the region's
registered sender ID (``source_addr_ton`` 5, alphanumeric) to the recipient's
E.164 digits (TON 1, NPI 1, ISDN), with ``registered_delivery`` 1 (a final
receipt requested) and the delivery id's 16-bit digest as
``user_message_reference`` (SMPP has no room for the id itself; receipts are
matched on the SMSC's ``message_id``).

Texts are encoded in the GSM 03.38 default alphabet when every character
has a place in it, else in UCS-2 (``smpplib.gsm``); a text longer than one
segment (160 GSM characters, 70 UCS-2) goes as several ``submit_sm`` with a
UDH concatenation header (8-bit reference). They are cut at character
boundaries here, never inside a GSM escape pair or a UTF-16 surrogate pair,
which smpplib's own splitter does not guarantee. **A multi-part text's
reference is the** ``message_id`` **of its first part**, and only that part
asks for a receipt, so every receipt the SMSC sends names a reference a
delivery holds.

**Window.** The base class sends a batch one message at a time and notes
each accepted message before the next is started (``send_many``'s
guarantee: a crash can never forget what the provider already has), so
messages cannot overlap; the window bounds the parts of one long text in
flight: up to ``WINDOW`` ``submit_sm`` are written before their
``submit_sm_resp`` are read.

**Receipts on this session.** An SMSC sends ``deliver_sm`` receipts down any
session bound as receiver or transceiver, so this one gets them between
answers. They are collected while a message's answers are read, recorded
together once they are (:func:`cakra.delivery.smpp_receipts.deliver_sm_answer`,
its own transaction, no network I/O inside it), and only then answered with
``deliver_sm_resp``: ``ESME_RX_T_APPN`` for a message id no delivery holds
yet (a receipt faster than the worker's note: the SMSC delivers it again
later), else ``ESME_ROK``. ``cakra smpp-receipts`` takes those that arrive
while no worker is bound.

Statuses: ``ESME_RTHROTTLED`` and ``ESME_RMSGQFUL`` are throttling; an
invalid address, length, coding or class is permanent; any other status
is retryable; a bind refused, a connection refused or dropped and an answer
that does not come in time make the provider unavailable (the batch stops).
Neither the number nor the text is logged; smpplib's own logger, which
writes whole PDUs in hex at debug level, is held at ERROR.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import select
import socket
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog
from smpplib import consts, exceptions, smpp
from smpplib.client import Client
from smpplib.gsm import gsm_encode

from cakra.delivery.channels.base import (
    ChannelAdapter,
    OutboundMessage,
    PermanentProviderError,
    ProviderError,
    RetryableProviderError,
    ThrottledProviderError,
    UnavailableProviderError,
)
from cakra.delivery.channels.phone import mobile_e164
from cakra.delivery.smpp_receipts import deliver_sm_answer
from cakra.security.identifiers import ascii_digits_check

logger = structlog.get_logger(__name__)

# smpplib logs every PDU in hex at debug level (numbers and texts included).
WIRE_LOGGER = "cakra.delivery.smpp.wire"
logging.getLogger(WIRE_LOGGER).setLevel(logging.ERROR)

MAX_PORT = 65536
MAX_SYSTEM_ID = 15  # C-Octet Strings of 16 and 9 octets with their NUL
MAX_PASSWORD = 8
MAX_SYSTEM_TYPE = 12
MAX_WINDOW = 100
DEFAULT_WINDOW = 10
DEFAULT_TIMEOUT = 10.0
DEFAULT_ENQUIRE_LINK_SECONDS = 30.0
# An alphanumeric sender ID, as handsets show it: 1-11 characters of the GSM alphabet's ASCII.
SENDER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .&_-]{0,10}")

THROTTLED_RETRY_AFTER_SECONDS = 1.0
QUEUE_FULL_RETRY_AFTER_SECONDS = 5.0
THROTTLING_STATUSES = {
    consts.SMPP_ESME_RTHROTTLED: ("ESME_RTHROTTLED", THROTTLED_RETRY_AFTER_SECONDS),
    consts.SMPP_ESME_RMSGQFUL: ("ESME_RMSGQFUL", QUEUE_FULL_RETRY_AFTER_SECONDS),
}
# The message itself is wrong for this SMSC: sending it again changes nothing.
PERMANENT_STATUSES = {
    consts.SMPP_ESME_RINVMSGLEN: "ESME_RINVMSGLEN",
    consts.SMPP_ESME_RINVSRCADR: "ESME_RINVSRCADR",
    consts.SMPP_ESME_RINVDSTADR: "ESME_RINVDSTADR",
    consts.SMPP_ESME_RINVESMCLASS: "ESME_RINVESMCLASS",
    consts.SMPP_ESME_RINVSRCTON: "ESME_RINVSRCTON",
    consts.SMPP_ESME_RINVSRCNPI: "ESME_RINVSRCNPI",
    consts.SMPP_ESME_RINVDSTTON: "ESME_RINVDSTTON",
    consts.SMPP_ESME_RINVDSTNPI: "ESME_RINVDSTNPI",
    consts.SMPP_ESME_RINVREGDLVFLG: "ESME_RINVREGDLVFLG",
    consts.SMPP_ESME_RINVDFTMSGID: "ESME_RINVDFTMSGID",
    consts.SMPP_ESME_RX_P_APPN: "ESME_RX_P_APPN",
    consts.SMPP_ESME_RX_R_APPN: "ESME_RX_R_APPN",
}
# UDH concatenation header: IEI 0x00 (8-bit reference), length 3.
UDH_CONCATENATED = bytes((0x05, consts.SMPP_UDHIEIE_CONCATENATED, 0x03))


def smpp_status_error(status: int, *, stage: str) -> ProviderError:
    """Translate a non-zero ``command_status`` into the taxonomy."""
    if status in THROTTLING_STATUSES:
        name, retry_after = THROTTLING_STATUSES[status]
        return ThrottledProviderError(f"smpp {name} at {stage}", retry_after=retry_after)
    if status in PERMANENT_STATUSES:
        return PermanentProviderError(f"smpp {PERMANENT_STATUSES[status]} at {stage}")
    if status in {consts.SMPP_ESME_RINVPASWD, consts.SMPP_ESME_RINVSYSID, consts.SMPP_ESME_RBINDFAIL}:
        return UnavailableProviderError(f"smpp bind refused (0x{status:08X})")
    return RetryableProviderError(f"smpp status 0x{status:08X} at {stage}")


# --- encoding -----------------------------------------------------------------------


def _gsm_septets(character: str) -> bytes | None:
    # "`" and ESC stand for unmapped positions in smpplib's table: not GSM text.
    if character in {"`", "\x1b"}:
        return None
    try:
        return bytes(gsm_encode(character))
    except UnicodeError:
        return None


@dataclass(frozen=True, slots=True)
class Encoded:
    """A text ready for ``submit_sm``: its data_coding, esm_class and each part's short_message."""

    data_coding: int
    esm_class: int
    parts: tuple[bytes, ...]


def sms_encode(text: str, *, reference: int) -> Encoded:
    """``text`` as one or more segments; ``reference`` numbers a concatenated text's parts (0-255)."""
    septets = [_gsm_septets(character) for character in text]
    units: list[bytes]
    if all(unit is not None for unit in septets):
        coding, single, part_size = consts.SMPP_ENCODING_DEFAULT, consts.SEVENBIT_LENGTH, consts.SEVENBIT_PART_SIZE
        units = [unit for unit in septets if unit is not None]
    else:
        coding, single, part_size = consts.SMPP_ENCODING_ISO10646, consts.UCS2_LENGTH, consts.UCS2_PART_SIZE
        units = [character.encode("utf-16-be") for character in text]  # a surrogate pair stays one unit
    whole = b"".join(units)
    if len(whole) <= single:
        return Encoded(data_coding=coding, esm_class=consts.SMPP_MSGTYPE_DEFAULT, parts=(whole,))
    chunks: list[bytes] = []
    current = b""
    for unit in units:
        if len(current) + len(unit) > part_size:
            chunks.append(current)
            current = b""
        current += unit
    chunks.append(current)
    if len(chunks) > 255:  # noqa: PLR2004 - the UDH counts parts in one octet
        raise PermanentProviderError("text too long for a concatenated SMS")
    total = len(chunks)
    parts = tuple(
        UDH_CONCATENATED + bytes((reference & 0xFF, total, number)) + chunk
        for number, chunk in enumerate(chunks, start=1)
    )
    return Encoded(data_coding=coding, esm_class=consts.SMPP_GSMFEAT_UDHI, parts=parts)


# --- the session ---------------------------------------------------------------------


class SessionLostError(Exception):
    """The SMSC closed the session, or stopped answering."""


DeliverSmHandler = Callable[[Sequence[Any]], list[int]]


@dataclass(kw_only=True)
class SmppSettings:
    host: str
    port: int
    system_id: str = field(repr=False)
    password: str = field(repr=False)
    system_type: str = ""
    timeout: float = DEFAULT_TIMEOUT
    window: int = DEFAULT_WINDOW
    enquire_link_seconds: float = DEFAULT_ENQUIRE_LINK_SECONDS

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SmppSettings:
        return cls(
            host=str(options["HOST"]),
            port=int(options["PORT"]),
            system_id=str(options["SYSTEM_ID"]),
            password=str(options["PASSWORD"]),
            system_type=str(options.get("SYSTEM_TYPE", "")),
            timeout=float(options.get("TIMEOUT", DEFAULT_TIMEOUT)),
            window=int(options.get("WINDOW", DEFAULT_WINDOW)),
            enquire_link_seconds=float(options.get("ENQUIRE_LINK_SECONDS", DEFAULT_ENQUIRE_LINK_SECONDS)),
        )


class SmppSession:
    """One bound transceiver session over smpplib's client.

    Besides the answers it waits for, it takes what the SMSC sends on its
    own: ``enquire_link`` (answered at once), ``unbind`` (answered, then the
    session is lost) and ``deliver_sm`` (kept until :meth:`receipts_answer`).
    """

    def __init__(self, settings: SmppSettings, *, on_deliver_sm: DeliverSmHandler) -> None:
        self.settings = settings
        self._on_deliver_sm = on_deliver_sm
        self._client: Client | None = None
        self._received: list[Any] = []  # deliver_sm not answered yet
        self.pid = os.getpid()
        self.last_used = 0.0

    @property
    def bound(self) -> bool:
        return self._client is not None

    def open(self) -> None:
        """Connect and ``bind_transceiver``; :class:`UnavailableProviderError` when either fails."""
        settings = self.settings
        client = Client(
            settings.host,
            settings.port,
            timeout=settings.timeout,
            logger_name=WIRE_LOGGER,
            allow_unknown_opt_params=True,
        )
        try:
            client.connect()
            # PDUs are small and each waits for its answer (the parts of a
            # window are separate writes): Nagle's delay would hold them.
            client._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # noqa: SLF001 - smpplib's socket
            client.bind_transceiver(
                system_id=settings.system_id, password=settings.password, system_type=settings.system_type
            )
        except exceptions.PDUError as exc:
            _client_drop(client)
            status = int(exc.args[1]) if len(exc.args) > 1 else consts.SMPP_ESME_RBINDFAIL
            raise UnavailableProviderError(f"smpp bind refused (0x{status:08X})") from None
        except (exceptions.ConnectionError, OSError):
            _client_drop(client)
            raise UnavailableProviderError("smpp connection refused or dropped at bind") from None
        self._client = client
        self.last_used = time.monotonic()

    def close(self) -> None:
        """Unbind politely (answers unread) and close; never raises."""
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.send_pdu(smpp.make_pdu("unbind", client=client))
        _client_drop(client)

    def drop(self) -> None:
        """Close without a word (the session is broken)."""
        client, self._client = self._client, None
        if client is not None:
            _client_drop(client)

    def _require(self) -> Client:
        if self._client is None:
            raise SessionLostError
        return self._client

    # --- reading ---------------------------------------------------------------------
    def _read(self) -> Any:
        client = self._require()
        try:
            pdu = client.read_pdu()
        except (exceptions.ConnectionError, exceptions.PDUError, exceptions.UnknownCommandError, OSError) as exc:
            raise SessionLostError from exc
        if pdu is None:
            raise SessionLostError
        return pdu

    def _take(self, pdu: Any) -> bool:
        """Handle what the SMSC sent unasked; False when ``pdu`` is an answer for the caller."""
        command = pdu.command
        if command == "deliver_sm":
            self._received.append(pdu)
            return True
        if command == "enquire_link":
            self._respond("enquire_link_resp", pdu.sequence)
            return True
        if command == "unbind":
            with contextlib.suppress(SessionLostError):
                self._respond("unbind_resp", pdu.sequence)
            raise SessionLostError
        return command not in {"submit_sm_resp", "generic_nack", "enquire_link_resp", "unbind_resp"}

    def _respond(self, command: str, sequence: int, status: int = consts.SMPP_ESME_ROK) -> None:
        client = self._require()
        response = smpp.make_pdu(command, client=client, status=status)
        response.sequence = sequence
        try:
            client.send_pdu(response)
        except (exceptions.ConnectionError, exceptions.PDUError, OSError) as exc:
            raise SessionLostError from exc

    def wait_readable(self, timeout: float) -> bool:
        """Whether the SMSC has sent something, waiting at most ``timeout`` seconds."""
        client = self._require()
        sock = client._socket  # noqa: SLF001 - smpplib exposes no readiness check of its own
        try:
            readable, _, _ = select.select([sock], [], [], timeout)
        except (OSError, ValueError) as exc:
            raise SessionLostError from exc
        return bool(readable)

    def pending_read(self, *, limit: int | None = None) -> None:
        """Take whatever the SMSC sent while the session was idle (without waiting),
        at most ``limit`` PDUs."""
        taken = 0
        while (limit is None or taken < limit) and self.wait_readable(0):
            self._take(self._read())
            taken += 1
        if taken:
            self.last_used = time.monotonic()

    def link_check(self) -> None:
        """``enquire_link`` and wait for its answer (other PDUs are taken as they come)."""
        client = self._require()
        request = smpp.make_pdu("enquire_link", client=client)
        try:
            client.send_pdu(request)
        except (exceptions.ConnectionError, exceptions.PDUError, OSError) as exc:
            raise SessionLostError from exc
        while True:
            pdu = self._read()
            if self._take(pdu):
                continue
            if pdu.command == "enquire_link_resp" and pdu.sequence == request.sequence:
                self.last_used = time.monotonic()
                return

    # --- submitting -------------------------------------------------------------------
    def submit(self, parts: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Send the ``submit_sm`` of one message, at most ``window`` unanswered at
        a time; their answers (``submit_sm_resp`` or ``generic_nack``), in order.

        After a refused part no further part is sent; the answers of those in
        flight are still read (the session stays in step), and the list holds
        None for the parts never sent.
        """
        client = self._require()
        answers: list[Any] = [None] * len(parts)
        in_flight: dict[int, int] = {}
        sent = 0
        refused = False
        while (sent < len(parts) and not refused) or in_flight:
            while sent < len(parts) and not refused and len(in_flight) < self.settings.window:
                try:
                    request = client.send_message(**parts[sent])
                except (exceptions.ConnectionError, exceptions.PDUError, OSError) as exc:
                    raise SessionLostError from exc
                in_flight[request.sequence] = sent
                sent += 1
            pdu = self._read()
            if self._take(pdu):
                continue
            position = in_flight.pop(pdu.sequence, None)
            if position is None:
                continue  # an answer to nothing we wait for (a late enquire_link_resp)
            answers[position] = pdu
            refused = refused or pdu.status != consts.SMPP_ESME_ROK
        self.last_used = time.monotonic()
        return answers

    def receipts_answer(self) -> None:
        """Record the receipts taken so far, then answer each ``deliver_sm``."""
        if not self._received:
            return
        received, self._received = self._received, []
        statuses = self._on_deliver_sm(received)
        for pdu, status in zip(received, statuses, strict=True):
            self._respond("deliver_sm_resp", pdu.sequence, status)


def _client_drop(client: Client) -> None:
    with contextlib.suppress(Exception):
        client.disconnect()
    client._socket = None  # noqa: SLF001 - so smpplib's __del__ does not warn about a closed socket


def _sessions_end_all(sessions: set[SmppSession], lock: threading.Lock) -> None:
    with lock:
        ending = list(sessions)
        sessions.clear()
    for session in ending:
        session.close()


def _seconds_check(options: Mapping[str, Any], key: str, *, default: float) -> list[str]:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return [f"OPTIONS[{key!r}] must be a positive number of seconds"]
    return []


class SmppSmsAdapter(ChannelAdapter):
    channel: ClassVar[str] = "sms"
    provider: ClassVar[str] = "smpp"

    required_options: ClassVar[tuple[str, ...]] = ("HOST", "PORT", "SYSTEM_ID", "PASSWORD")

    def __init__(self, *, options: Mapping[str, Any], name: str = "") -> None:
        super().__init__(options=options, name=name)
        self.settings = SmppSettings.from_options(options)
        self._sessions = threading.local()
        self._open_sessions: set[SmppSession] = set()
        self._open_lock = threading.Lock()
        self._references = itertools.count()
        self._finalizer = weakref.finalize(self, _sessions_end_all, self._open_sessions, self._open_lock)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = super().check_options(options)
        if problems:
            return problems
        if not isinstance(options["HOST"], str) or not options["HOST"]:
            problems.append("OPTIONS['HOST'] must be a host name")
        port = options["PORT"]
        if isinstance(port, bool) or not isinstance(port, int | str) or not ascii_digits_check(str(port)):
            problems.append("OPTIONS['PORT'] must be a port number")
        elif not 0 < int(port) < MAX_PORT:
            problems.append(f"OPTIONS['PORT'] must be between 1 and {MAX_PORT - 1}")
        for key, limit in (("SYSTEM_ID", MAX_SYSTEM_ID), ("PASSWORD", MAX_PASSWORD)):
            value = options[key]
            if not isinstance(value, str) or not value or not value.isascii() or not value.isprintable():
                problems.append(f"OPTIONS[{key!r}] must be printable ASCII text")
            elif len(value) > limit:
                problems.append(f"OPTIONS[{key!r}] must be at most {limit} characters (SMPP v3.4)")
        system_type = options.get("SYSTEM_TYPE", "")
        if not isinstance(system_type, str) or len(system_type) > MAX_SYSTEM_TYPE or not system_type.isascii():
            problems.append(f"OPTIONS['SYSTEM_TYPE'] must be ASCII text of at most {MAX_SYSTEM_TYPE} characters")
        problems += _seconds_check(options, "TIMEOUT", default=DEFAULT_TIMEOUT)
        problems += _seconds_check(options, "ENQUIRE_LINK_SECONDS", default=DEFAULT_ENQUIRE_LINK_SECONDS)
        window = options.get("WINDOW", DEFAULT_WINDOW)
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
            problems.append(f"OPTIONS['WINDOW'] must be a whole number from 1 to {MAX_WINDOW}")
        return problems

    # --- sessions --------------------------------------------------------------------
    def _deliver_sm_record(self, pdus: Sequence[Any]) -> list[int]:
        return deliver_sm_answer(provider=self.name, pdus=pdus)

    def _session(self) -> SmppSession:
        """This thread's bound session, checked and (re)opened when needed.

        Only here, before a message's first byte, is a lost session replaced:
        one lost while a message is in flight fails that message as
        unavailable, since the SMSC may have it.
        """
        session: SmppSession | None = getattr(self._sessions, "current", None)
        if session is not None and session.bound and session.pid == os.getpid():
            try:
                session.pending_read()
                if time.monotonic() - session.last_used >= self.settings.enquire_link_seconds:
                    session.link_check()
                session.receipts_answer()
            except SessionLostError:
                self._session_drop(session)
            else:
                return session
        elif session is not None:
            self._session_drop(session)
        session = SmppSession(self.settings, on_deliver_sm=self._deliver_sm_record)
        session.open()
        self._sessions.current = session
        with self._open_lock:
            self._open_sessions.add(session)
        return session

    def _session_drop(self, session: SmppSession) -> None:
        with self._open_lock:
            self._open_sessions.discard(session)
        if session.pid == os.getpid():
            session.drop()
        if getattr(self._sessions, "current", None) is session:
            self._sessions.current = None

    def close(self) -> None:
        """Unbind and close every session of this adapter (all threads)."""
        _sessions_end_all(self._open_sessions, self._open_lock)
        self._sessions = threading.local()

    # --- sending ---------------------------------------------------------------------
    def submit_parts(self, message: OutboundMessage) -> list[dict[str, Any]]:
        """The ``submit_sm`` fields of each part of ``message`` (checked before any I/O)."""
        destination = mobile_e164(message.recipient).removeprefix("+")
        sender = message.sender.address
        if not SENDER_ID.fullmatch(sender):
            raise PermanentProviderError("sender ID is not 1-11 letters, digits or . & _ - (alphanumeric SMPP)")
        encoded = sms_encode(message.text, reference=next(self._references))
        digest = zlib.crc32(message.reference.encode()) & 0xFFFF
        return [
            {
                "source_addr_ton": consts.SMPP_TON_ALNUM,
                "source_addr_npi": consts.SMPP_NPI_UNK,
                "source_addr": sender,
                "dest_addr_ton": consts.SMPP_TON_INTL,
                "dest_addr_npi": consts.SMPP_NPI_ISDN,
                "destination_addr": destination,
                "esm_class": encoded.esm_class,
                "data_coding": encoded.data_coding,
                "short_message": part,
                # The first part's receipt stands for the text (its id is the reference).
                "registered_delivery": consts.SMPP_SMSC_DELIVERY_RECEIPT_BOTH
                if number == 0
                else consts.SMPP_SMSC_DELIVERY_RECEIPT_NONE,
                "user_message_reference": digest,
            }
            for number, part in enumerate(encoded.parts)
        ]

    def _send(self, message: OutboundMessage) -> str:
        parts = self.submit_parts(message)
        session = self._session()
        try:
            answers = session.submit(parts)
            session.receipts_answer()
        except SessionLostError as exc:
            self._session_drop(session)
            cause = exc.__cause__
            if isinstance(cause, TimeoutError):
                raise UnavailableProviderError("smpp timed out waiting for submit_sm_resp") from None
            raise UnavailableProviderError("smpp session lost while submitting") from None
        for number, answer in enumerate(answers, start=1):
            if answer is None:
                continue
            if answer.status != consts.SMPP_ESME_ROK:
                stage = "submit_sm" if len(answers) == 1 else f"submit_sm part {number} of {len(answers)}"
                raise smpp_status_error(int(answer.status), stage=stage)
        message_id = _message_id(answers[0])
        if not message_id:
            raise RetryableProviderError("smpp submit_sm_resp without a message_id")
        return message_id


def _message_id(answer: Any) -> str:
    raw = getattr(answer, "message_id", None)
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    return str(raw or "").strip("\x00 ")[:64]
