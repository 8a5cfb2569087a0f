"""The sink's SMTP server: a loopback ESMTP relay (SIZE, 8BITMIME, PIPELINING).

It keeps to RFC 5321's limits and answers as common relays do; every message
it accepts is handed to ``deliver``, whose answer is the reply to DATA.
Recipients named in :mod:`cakra.simulators.smtp.recipients` are refused at
RCPT TO the way a relay in trouble refuses them.

A small asyncio Protocol rather than aiosmtpd: aiosmtpd reads every DATA
line through a coroutine (a StreamReader call, a debug log call and a list
append per line), parses each address with the email package's header
parser and awaits a drain after every reply; together that was most of the
sink's CPU per message. Here the message data is found with one search for
the end marker and unstuffed with one replace, and the replies to pipelined
commands go out in one write.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from cakra.security.identifiers import ascii_int_parse
from cakra.simulators.loopback import LOOPBACK
from cakra.simulators.smtp.recipients import simulated_refusal

SMTP_HOSTNAME = "sink.cakra.test"
SMTP_DATA_SIZE_LIMIT = 32 * 1024 * 1024  # advertised as SIZE; larger messages get 552
SMTP_COMMAND_LINE_LIMIT = 1024  # RFC 5321 allows 512 plus room for ESMTP parameters
SMTP_DATA_LINE_LIMIT = 998  # RFC 5321 4.5.3.1.6, without the CRLF
SMTP_RECIPIENTS_LIMIT = 100  # RFC 5321 4.5.3.1.8: the minimum a server must accept
SMTP_IDLE_SECONDS = 300.0
SMTP_SWEEP_SECONDS = 10.0
SMTP_BOGUS_LIMIT = 5  # unknown commands before the connection is dropped
_EHLO_REPLY = (
    f"250-{SMTP_HOSTNAME}\r\n250-SIZE {SMTP_DATA_SIZE_LIMIT}\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 HELP"
).encode()
_DATA_END = b"\r\n.\r\n"
# The path in MAIL FROM / RCPT TO, with or without angle brackets, then parameters.
_MAIL_FROM = re.compile(r"FROM:\s*(<[^<>]*>|[^\s<>]+)(.*)", re.IGNORECASE | re.DOTALL)
_RCPT_TO = re.compile(r"TO:\s*(<[^<>]*>|[^\s<>]+)(.*)", re.IGNORECASE | re.DOTALL)
_MAILBOX = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")  # printable ASCII without < >
_MAIL_SYNTAX = b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
_RCPT_SYNTAX = b"501 Syntax: RCPT TO: <address>"


class Deliver(Protocol):
    """Takes an accepted message; returns the SMTP reply to its DATA (250 when stored)."""

    def __call__(self, *, sender: str, recipients: list[str], raw: bytes) -> bytes: ...


def _smtp_parameters(text: str) -> dict[str, str] | None:
    """ESMTP parameters (``SIZE=123 BODY=8BITMIME``), names upper-cased; None if malformed."""
    parameters: dict[str, str] = {}
    for item in text.split():
        name, equals, value = item.partition("=")
        if not name.isalnum() or (equals and not value):
            return None
        parameters[name.upper()] = value.upper() if equals else ""
    return parameters


def _mail_parameters_problem(parameters: dict[str, str]) -> bytes:
    """The refusal the MAIL FROM parameters deserve; b"" when they are fine."""
    size_text = parameters.pop("SIZE", None)
    size = None if size_text is None else ascii_int_parse(size_text)
    if size_text is not None and size is None:
        return _MAIL_SYNTAX
    if size is not None and size > SMTP_DATA_SIZE_LIMIT:
        return b"552 Error: message size exceeds fixed maximum message size"
    if parameters.pop("BODY", "7BIT") not in {"7BIT", "8BITMIME"}:
        return b"501 Error: BODY can only be one of 7BIT, 8BITMIME"
    if parameters:
        return b"555 MAIL FROM parameters not recognized or not implemented"
    return b""


class _SmtpSession(asyncio.Protocol):
    """One client connection. Commands are answered as they arrive; all the
    replies to what one read brought (pipelined commands) go out in one write."""

    def __init__(self, server: SmtpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._replies: list[bytes] = []
        self._greeted = False
        self._extended = False
        self._sender: str | None = None
        self._recipients: list[str] = []
        self._in_data = False
        self._data_fresh = False  # nothing of the message read yet: ".\r\n" ends an empty one
        self._data_scanned = 0  # bytes of the buffer already searched for the end marker
        self._data_too_large = False  # over the size limit: discarded, answered 552 at the end
        self._line_too_long = False  # a command line over the limit: dropped up to its end
        self._held = False  # the DATA reply is being delayed (reply_delay): input waits
        self._bogus = 0
        self.last_active = 0.0

    # --- asyncio callbacks ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream server's transport
        self._transport = transport
        self.last_active = self._server.loop.time()
        self._server.sessions.add(self)
        transport.write(f"220 {SMTP_HOSTNAME} ESMTP Cakra sink\r\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.sessions.discard(self)
        self._transport = None
        self._buffer.clear()

    def pause_writing(self) -> None:
        # A client that pipelines without reading its replies: stop reading until it does.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_active = self._server.loop.time()
        self._buffer += data
        if not self._held:
            self._advance()

    def close_idle(self) -> None:
        if self._transport is not None:
            self._transport.write(f"421 4.4.2 {SMTP_HOSTNAME} Error: timeout exceeded\r\n".encode())
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- input ---------------------------------------------------------------
    def _advance(self) -> None:
        """Handle every complete command or message in the buffer, then send the replies."""
        buffer = self._buffer
        while self._transport is not None and not self._held:
            if self._in_data:
                if not self._take_data():
                    break
                continue
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > SMTP_COMMAND_LINE_LIMIT:
                    self._line_too_long = True
                    buffer.clear()
                break
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[: end + 1]
            if self._line_too_long or end + 1 > SMTP_COMMAND_LINE_LIMIT:
                self._line_too_long = False
                self._reply(b"500 Command line too long")
            else:
                self._command(line)
        self._flush()

    def _take_data(self) -> bool:
        """Take the message if its end marker arrived; False while waiting for more."""
        buffer = self._buffer
        if self._data_fresh:
            if len(buffer) < len(b".\r\n") and b".\r\n".startswith(buffer):
                return False
            self._data_fresh = False
            if buffer.startswith(b".\r\n"):  # an empty message
                del buffer[:3]
                self._message(b"")
                return True
        end = buffer.find(_DATA_END, self._data_scanned)
        if end < 0:
            keep = len(_DATA_END) - 1  # the end marker may straddle two reads
            if len(buffer) > SMTP_DATA_SIZE_LIMIT:
                self._data_too_large = True
                del buffer[:-keep]
            self._data_scanned = max(0, len(buffer) - keep)
            return False
        content = bytes(buffer[: end + 2])  # the last line keeps its CRLF
        del buffer[: end + len(_DATA_END)]
        self._data_scanned = 0
        self._message(content)
        return True

    def _message(self, content: bytes) -> None:
        self._in_data = False
        sender, recipients = self._sender or "", self._recipients
        self._reset()
        if self._data_too_large or len(content) > SMTP_DATA_SIZE_LIMIT:
            self._data_too_large = False
            self._reply(b"552 Error: Too much mail data")
            return
        if len(content) > SMTP_DATA_LINE_LIMIT and max(map(len, content.split(b"\n"))) > SMTP_DATA_LINE_LIMIT + 1:
            self._reply(b"500 Line too long (see RFC5321 4.5.3.1.6)")
            return
        # Undo the client's dot-stuffing (RFC 5321 4.5.2): one leading dot per line.
        if content.startswith(b"."):
            content = content[1:]
        if b"\r\n." in content:
            content = content.replace(b"\r\n.", b"\r\n")
        server = self._server
        reply = server.deliver(sender=sender, recipients=recipients, raw=content)
        delay = server.reply_delay
        if delay > 0:  # a slow relay: stored, the answer still to come
            self._held = True
            self._server.loop.call_later(delay, self._release, reply)
        else:
            self._reply(reply)

    def _release(self, reply: bytes) -> None:
        self._held = False
        if self._transport is not None:
            self._reply(reply)
            self._advance()

    def _reply(self, line: bytes) -> None:
        self._replies.append(line)

    def _flush(self) -> None:
        if self._replies and self._transport is not None:
            self._replies.append(b"")
            self._transport.write(b"\r\n".join(self._replies))
        self._replies.clear()

    def _reset(self) -> None:
        self._sender = None
        self._recipients = []

    # --- commands --------------------------------------------------------------
    def _command(self, line: bytes) -> None:
        verb, _, rest = line.partition(b" ")
        try:
            command = verb.upper().decode("ascii")
            argument = rest.strip().decode("ascii")
        except UnicodeDecodeError:  # no SMTPUTF8 here, as on many relays
            self._reply(b"500 Error: strict ASCII mode")
            return
        handler = _SMTP_COMMANDS.get(command)
        if handler is not None:
            handler(self, argument)
            return
        if command in _SMTP_NOT_IMPLEMENTED:
            self._reply(f"502 5.5.1 {command} not implemented".encode())
            return
        if not command:
            self._reply(b"500 Error: bad syntax")
            return
        self._bogus += 1
        if self._bogus >= SMTP_BOGUS_LIMIT:
            self._reply(b"502 5.5.1 Too many unrecognized commands, goodbye.")
            self._quit()
            return
        self._reply(f'500 Error: command "{command[:32]}" not recognized'.encode())

    def _quit(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._buffer.clear()

    def _ehlo(self, argument: str) -> None:
        if not argument:
            self._reply(b"501 Syntax: EHLO hostname")
            return
        self._greeted = self._extended = True
        self._reset()
        self._reply(_EHLO_REPLY)

    def _helo(self, argument: str) -> None:
        if not argument:
            self._reply(b"501 Syntax: HELO hostname")
            return
        self._greeted, self._extended = True, False
        self._reset()
        self._reply(f"250 {SMTP_HOSTNAME}".encode())

    def _mail(self, argument: str) -> None:
        if not self._greeted:
            self._reply(b"503 Error: send HELO first")
            return
        if self._sender is not None:
            self._reply(b"503 Error: nested MAIL command")
            return
        match = _MAIL_FROM.fullmatch(argument)
        parameters = _smtp_parameters(match.group(2)) if match else None
        if match is None or parameters is None or (parameters and not self._extended):
            self._reply(_MAIL_SYNTAX)
            return
        address = match.group(1).strip("<>")
        if address and not _MAILBOX.fullmatch(address):  # "<>" is the null sender of bounces
            self._reply(b"553 5.1.3 Error: malformed address")
            return
        problem = _mail_parameters_problem(parameters)
        if problem:
            self._reply(problem)
            return
        self._sender = address
        self._reply(b"250 OK")

    def _rcpt(self, argument: str) -> None:
        if not self._greeted:
            self._reply(b"503 Error: send HELO first")
            return
        if self._sender is None:
            self._reply(b"503 Error: need MAIL command")
            return
        match = _RCPT_TO.fullmatch(argument)
        if match is None or match.group(2).strip():
            self._reply(_RCPT_SYNTAX if match is None else b"555 RCPT TO parameters not recognized or not implemented")
            return
        address = match.group(1).strip("<>")
        if not _MAILBOX.fullmatch(address):
            self._reply(b"553 5.1.3 Error: malformed address")
            return
        if len(self._recipients) >= SMTP_RECIPIENTS_LIMIT:
            self._reply(b"452 4.5.3 Error: too many recipients")
            return
        refusal = simulated_refusal(address)
        if refusal:
            self._reply(refusal.encode())
            return
        self._recipients.append(address)
        self._reply(b"250 OK")

    def _data(self, argument: str) -> None:
        if not self._greeted:
            self._reply(b"503 Error: send HELO first")
        elif not self._recipients:
            self._reply(b"503 Error: need RCPT command")
        elif argument:
            self._reply(b"501 Syntax: DATA")
        else:
            self._in_data = self._data_fresh = True
            self._data_scanned = 0
            self._reply(b"354 End data with <CR><LF>.<CR><LF>")

    def _rset(self, argument: str) -> None:
        if argument:
            self._reply(b"501 Syntax: RSET")
            return
        self._reset()
        self._reply(b"250 OK")

    def _noop(self, argument: str) -> None:
        self._reply(b"250 OK")

    def _vrfy(self, argument: str) -> None:
        if not argument:
            self._reply(b"501 Syntax: VRFY <address>")
            return
        self._reply(b"252 Cannot VRFY user, but will accept message and attempt delivery")

    def _goodbye(self, argument: str) -> None:
        if argument:
            self._reply(b"501 Syntax: QUIT")
            return
        self._reply(b"221 Bye")
        self._quit()


_SMTP_COMMANDS: dict[str, Callable[[_SmtpSession, str], None]] = {
    "EHLO": _SmtpSession._ehlo,  # noqa: SLF001 - the class's own dispatch table
    "HELO": _SmtpSession._helo,  # noqa: SLF001
    "MAIL": _SmtpSession._mail,  # noqa: SLF001
    "RCPT": _SmtpSession._rcpt,  # noqa: SLF001
    "DATA": _SmtpSession._data,  # noqa: SLF001
    "RSET": _SmtpSession._rset,  # noqa: SLF001
    "NOOP": _SmtpSession._noop,  # noqa: SLF001
    "VRFY": _SmtpSession._vrfy,  # noqa: SLF001
    "QUIT": _SmtpSession._goodbye,  # noqa: SLF001
}
_SMTP_NOT_IMPLEMENTED = frozenset({"EXPN", "HELP", "STARTTLS", "AUTH", "TURN", "ETRN", "BDAT"})


class SmtpServer:
    """The listening socket and an event loop in one background thread.

    ``reply_delay`` seconds pass between storing a message and answering it
    (a slow relay, for the reliability tests: a crash lands mid-send).
    """

    def __init__(self, *, deliver: Deliver, port: int, reply_delay: float = 0.0) -> None:
        self.deliver = deliver
        self.reply_delay = reply_delay
        self.sessions: set[_SmtpSession] = set()
        self.loop = asyncio.new_event_loop()
        # Bound here, in the caller's thread: a port in use fails start() at once.
        try:
            self._socket = socket.create_server((LOOPBACK, port))
        except OSError:
            self.loop.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._failure: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cakra-sink-smtp", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(
                self.loop.create_server(lambda: _SmtpSession(self), sock=self._socket)
            )
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
            self._failure = exc
            self._socket.close()
            self.loop.close()
            self._ready.set()
            return
        self.loop.call_later(SMTP_SWEEP_SECONDS, self._sweep)
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def _sweep(self) -> None:
        """Drop connections idle for too long (one timer for all, not one per command)."""
        cutoff = self.loop.time() - SMTP_IDLE_SECONDS
        for session in [s for s in self.sessions if s.last_active < cutoff]:
            session.close_idle()
        self.loop.call_later(SMTP_SWEEP_SECONDS, self._sweep)

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()  # the listening socket is closed at once
        for session in list(self.sessions):
            session.abort()
        self.loop.call_soon(self.loop.stop)  # after the aborted connections' callbacks

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(timeout=10)
        else:
            self._socket.close()
            self.loop.close()
