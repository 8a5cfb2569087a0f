"""Email over SMTP submission, DKIM-signed.

Options (the ``OPTIONS`` of a ``CAKRA_PROVIDERS`` entry): ``HOST``, ``PORT``,
``SECURITY`` ("none", "starttls" or "ssl"), ``TIMEOUT`` seconds, optional
``USERNAME``/``PASSWORD``, and optional ``DKIM_SELECTOR``/``DKIM_PRIVATE_KEY``,
which default to the sender domain's key in ``settings.CAKRA_EMAIL`` (the one
``cakra dkim dns-record`` publishes): a second relay signs with the same key
unless it is given its own. The DKIM domain is the domain of the From address
(the region's ``email_from_address``), so DMARC alignment holds as long as
that domain publishes the record.

One SMTP session per process and thread carries many messages (renewed
after ``SESSION_MAX_MESSAGES`` or ``SESSION_IDLE_SECONDS``), as every bulk
sender does: the handshake costs more than a message.
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from cakra.delivery.channels.base import (
    ChannelAdapter,
    OutboundMessage,
    PermanentProviderError,
    ProviderError,
    RetryableProviderError,
    ThrottledProviderError,
    UnavailableProviderError,
)
from cakra.delivery.channels.dkim import dkim_key_load
from cakra.delivery.channels.mime import address_header, alternative_message, header
from cakra.delivery.channels.protocol import UnsafeProtocolValueError, protocol_value_check
from cakra.security.identifiers import ascii_digits_check

SECURITY_MODES = ("none", "starttls", "ssl")
# Words relays use in a 421/451 reply when they rate-limit the sender.
RATE_WORDS = ("rate", "too many", "throttl", "limit", "slow down", "try again later")
THROTTLE_CODES = (421, 450, 451, 452)
THROTTLE_RETRY_AFTER_SECONDS = 60.0
MAX_PORT = 65536
SESSION_MAX_MESSAGES = 200
SESSION_IDLE_SECONDS = 10.0


def _session_quit(connection: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPException, OSError):
        connection.quit()
    connection.close()


def _sessions_end_all(sessions: set[smtplib.SMTP], lock: threading.Lock) -> None:
    with lock:
        ending = list(sessions)
        sessions.clear()
    for connection in ending:
        _session_quit(connection)


@dataclass
class _Session:
    connection: smtplib.SMTP
    pid: int
    sent: int
    last: float


def _is_throttle(code: int, reply: bytes | str) -> bool:
    text = (reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply).lower()
    return code in THROTTLE_CODES and any(word in text for word in RATE_WORDS)


def smtp_reply_error(*, code: int, reply: bytes | str, stage: str) -> ProviderError:
    """Translate an SMTP reply into the taxonomy.

    Only the code and the stage are kept: the reply text often quotes the
    recipient's address.
    """
    detail = f"smtp {code} at {stage}"
    if _is_throttle(code, reply):
        return ThrottledProviderError(f"{detail} (rate limited)", retry_after=THROTTLE_RETRY_AFTER_SECONDS)
    if 500 <= code < 600 and stage in {"rcpt", "data"}:  # noqa: PLR2004 - the SMTP reply classes
        return PermanentProviderError(detail)
    # 4xx anywhere, and 5xx on MAIL FROM / AUTH / HELO: a problem on our side
    # or a passing one at the relay, not a reason to give up on this citizen.
    return RetryableProviderError(detail)


_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")
SMTP_OK, SMTP_WILL_FORWARD, SMTP_START_INPUT = 250, 251, 354


def _sendmail(connection: smtplib.SMTP, *, sender: str, recipient: str, data: bytes) -> None:
    """Submit one message; raises smtplib's exceptions exactly as ``sendmail`` does.

    When the relay offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go out
    in one write and their three replies are read in order: two round trips
    per message instead of four, which on a busy relay is most of the cost
    of a small message (each round trip wakes both sides). Otherwise, or for
    an address that needs SMTPUTF8, smtplib's own ``sendmail``.
    """
    # The choke point of the envelope: the pipelined write below bypasses
    # smtplib's own guard, so both paths are checked here, before any byte.
    protocol_value_check(field="envelope sender", value=sender)
    protocol_value_check(field="envelope recipient", value=recipient)
    connection.ehlo_or_helo_if_needed()
    if not connection.has_extn("pipelining") or not (sender.isascii() and recipient.isascii()):
        connection.sendmail(sender, [recipient], data)
        return
    connection.send(f"MAIL FROM:{smtplib.quoteaddr(sender)}\r\nRCPT TO:{smtplib.quoteaddr(recipient)}\r\nDATA\r\n")
    mail_code, mail_reply = connection.getreply()
    rcpt_code, rcpt_reply = connection.getreply()
    data_code, data_reply = connection.getreply()
    refusal: smtplib.SMTPException | None = None
    if mail_code != SMTP_OK:
        refusal = smtplib.SMTPSenderRefused(mail_code, mail_reply, sender)
    elif rcpt_code not in {SMTP_OK, SMTP_WILL_FORWARD}:
        refusal = smtplib.SMTPRecipientsRefused({recipient: (rcpt_code, rcpt_reply)})
    elif data_code != SMTP_START_INPUT:
        refusal = smtplib.SMTPDataError(data_code, data_reply)
    if refusal is not None:
        if data_code == SMTP_START_INPUT:
            # The relay took DATA although an earlier command failed (RFC
            # 2920 says a client must then end an empty message): end it.
            connection.send(b".\r\n")
            connection.getreply()
        _rset(connection)  # the session stays usable for the next message, as after sendmail's refusals
        raise refusal
    connection.send(_smtp_data(data) + b".\r\n")
    code, reply = connection.getreply()
    if code != SMTP_OK:
        _rset(connection)
        raise smtplib.SMTPDataError(code, reply)


def _smtp_data(data: bytes) -> bytes:
    """What smtplib's ``data()`` sends before the end marker: CRLF line ends,
    leading dots doubled, a final CRLF. Messages built here already end
    their lines with CRLF, so the common case is two ``bytes`` scans, not
    two regular-expression passes over the whole message."""
    if data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\r\n"):
        data = _LINE_ENDS.sub(b"\r\n", data)
    data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _rset(connection: smtplib.SMTP) -> None:
    # As smtplib does after a refusal: a relay that already hung up (421)
    # is found out by the next message, which opens a new session.
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        connection.rset()


class _SMTPOverTLS(smtplib.SMTP_SSL):
    """SMTP_SSL that closes the TCP socket when the TLS handshake fails (the
    standard library drops it unclosed, leaking the descriptor until GC)."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((host, port), timeout, self.source_address)
        try:
            return self.context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise


def _dkim_options(options: Mapping[str, Any]) -> tuple[str, str]:
    """The selector and PEM this relay signs with: its own, or the sender domain's."""
    domain_key: Mapping[str, Any] = getattr(settings, "CAKRA_EMAIL", {})
    selector = str(options.get("DKIM_SELECTOR") or domain_key.get("DKIM_SELECTOR", ""))
    pem = str(options.get("DKIM_PRIVATE_KEY") or domain_key.get("DKIM_PRIVATE_KEY", ""))
    return selector, pem


def email_domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class SmtpEmailAdapter(ChannelAdapter):
    channel: ClassVar[str] = "email"
    provider: ClassVar[str] = "smtp"

    required_options: ClassVar[tuple[str, ...]] = ("HOST", "PORT")

    def __init__(self, *, options: Mapping[str, Any], name: str = "") -> None:
        super().__init__(options=options, name=name)
        self.host: str = options["HOST"]
        self.port = int(options["PORT"])
        self.security: str = options.get("SECURITY", "starttls")
        self.timeout = float(options.get("TIMEOUT", 10))
        self.username: str = options.get("USERNAME", "")
        self.password: str = options.get("PASSWORD", "")
        self.dkim_selector, pem = _dkim_options(options)
        self.dkim_key = dkim_key_load(pem)
        # Built once: loading the system's CA bundle costs more than the whole
        # SMTP exchange with a nearby relay. A context is safe to
        # share between threads once configured.
        self._tls_context = ssl.create_default_context() if self.security != "none" else None
        # One SMTP session per thread (the adapter instance is shared by a
        # process's threads); all of them are listed so close() can end them.
        self._sessions = threading.local()
        self._open_sessions: set[smtplib.SMTP] = set()
        self._open_lock = threading.Lock()
        # An adapter dropped without close() (a settings change, a test) still ends its sessions.
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
        if options.get("SECURITY", "starttls") not in SECURITY_MODES:
            problems.append(f"OPTIONS['SECURITY'] must be one of {', '.join(SECURITY_MODES)}")
        timeout = options.get("TIMEOUT", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            problems.append("OPTIONS['TIMEOUT'] must be a positive number of seconds")
        if bool(options.get("USERNAME")) != bool(options.get("PASSWORD")):
            problems.append("OPTIONS['USERNAME'] and OPTIONS['PASSWORD'] go together")
        selector, pem = _dkim_options(options)
        if not selector:
            problems.append("OPTIONS['DKIM_SELECTOR'] (or CAKRA_EMAIL['DKIM_SELECTOR']) is required")
        try:
            dkim_key_load(pem)
        except ImproperlyConfigured as exc:
            problems.append(f"OPTIONS['DKIM_PRIVATE_KEY']: {exc}")
        return problems

    def build(self, message: OutboundMessage) -> tuple[str, bytes]:
        """The message id and the signed RFC 5322 bytes, exactly as submitted.

        Written directly as bytes (:mod:`cakra.delivery.channels.mime`) and
        signed from its parts (:meth:`DkimKey.sign_parts`): the ``email``
        package and dkimpy's parser cost ten times the rest.
        """
        domain = email_domain(message.sender.address)
        # Derived from the delivery id, so a retry after an ambiguous failure
        # (accepted, then the connection dropped) carries the same Message-ID
        # and receivers can fold the duplicate.
        message_id = f"<{message.reference}@{domain}>"
        mime = alternative_message(
            headers=(
                address_header("From", message.sender.display_name, message.sender.address),
                header("To", message.recipient),
                header("Subject", message.subject),
                header("Date", format_datetime(timezone.localtime())),
                header("Message-ID", message_id),
                # A legal notice, not a mailing: no List-Unsubscribe; this header
                # tells auto-responders not to answer (RFC 3834).
                (b"Auto-Submitted", b" auto-generated"),
            ),
            text=message.text,
            html=message.html,
            content_language="id, en",
        )
        signature = self.dkim_key.sign_parts(mime.headers, mime.body, selector=self.dkim_selector, domain=domain)
        return message_id, signature + mime.as_bytes()

    def _send(self, message: OutboundMessage) -> str:
        try:
            message_id, data = self.build(message)
            self._submit(sender=message.sender.address, recipient=message.recipient, data=data)
        except UnsafeProtocolValueError as exc:
            # The same message would be refused on every retry: permanent,
            # and named by field only (the value may be an address).
            raise PermanentProviderError(f"refused before sending: {exc}") from None
        return message_id

    def _connect(self) -> smtplib.SMTP:
        context = self._tls_context  # verifies the relay's certificate and host name
        connection = (
            _SMTPOverTLS(context=context, timeout=self.timeout)
            if self.security == "ssl"
            else smtplib.SMTP(timeout=self.timeout)
        )
        try:
            connection.connect(self.host, self.port)
            if self.security == "starttls":
                # Raises SMTPNotSupportedError if the relay does not offer it:
                # the message is never sent in clear instead.
                connection.starttls(context=context)
        except BaseException:
            connection.close()
            raise
        return connection

    def _session(self) -> smtplib.SMTP:
        """This thread's open session with the relay, opened (and logged in) when needed.

        One SMTP session carries many messages, as every bulk sender does: a
        fresh TCP connection, TLS handshake and EHLO per message cost more
        than the message itself, on both sides. A session is renewed after
        SESSION_MAX_MESSAGES messages or SESSION_IDLE_SECONDS without use
        (relays close idle sessions), and never crosses a fork.
        """
        state: _Session | None = getattr(self._sessions, "current", None)
        now = time.monotonic()
        if state is not None:
            if (
                state.pid == os.getpid()
                and state.sent < SESSION_MAX_MESSAGES
                and now - state.last < SESSION_IDLE_SECONDS
            ):
                state.sent += 1
                state.last = now
                return state.connection
            self._session_drop()
        connection = self._connect()
        try:
            if self.username:
                connection.login(self.username, self.password)
        except BaseException:
            connection.close()
            raise
        self._sessions.current = _Session(connection=connection, pid=os.getpid(), sent=1, last=now)
        with self._open_lock:
            self._open_sessions.add(connection)
        return connection

    def _session_drop(self) -> None:
        state: _Session | None = getattr(self._sessions, "current", None)
        self._sessions.current = None
        if state is not None and state.pid == os.getpid():
            self._session_end(state.connection)

    def _session_end(self, connection: smtplib.SMTP) -> None:
        with self._open_lock:
            self._open_sessions.discard(connection)
        _session_quit(connection)

    def close(self) -> None:
        self._finalizer()
        self._sessions = threading.local()

    def _submit(self, *, sender: str, recipient: str, data: bytes) -> None:
        try:
            self._submit_on_session(sender=sender, recipient=recipient, data=data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise smtp_reply_error(code=code, reply=reply, stage="rcpt") from None
        except smtplib.SMTPDataError as exc:
            raise smtp_reply_error(code=exc.smtp_code, reply=exc.smtp_error, stage="data") from None
        except smtplib.SMTPSenderRefused as exc:
            raise smtp_reply_error(code=exc.smtp_code, reply=exc.smtp_error, stage="mail") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise RetryableProviderError(f"smtp {exc.smtp_code} at auth") from None
        except smtplib.SMTPResponseException as exc:
            raise smtp_reply_error(code=exc.smtp_code, reply=exc.smtp_error, stage="session") from None
        except smtplib.SMTPNotSupportedError:
            raise RetryableProviderError(f"smtp relay does not support {self.security}") from None
        except (smtplib.SMTPException, OSError) as exc:
            # Refused, reset, timed out, TLS failure, disconnected: the relay
            # may be back in a minute, and until then every message would
            # fail the same way (a batch stops here). `from None`: the
            # chained text can hold an address; the type is enough to diagnose.
            raise UnavailableProviderError(f"smtp connection failed: {type(exc).__name__}") from None

    def _submit_on_session(self, *, sender: str, recipient: str, data: bytes) -> None:
        """Submit over this thread's session; once more on a fresh one if a
        reused session turns out to be closed before the relay took the message."""
        state: _Session | None = getattr(self._sessions, "current", None)
        reused = state is not None and state.pid == os.getpid()
        connection = self._session()
        try:
            _sendmail(connection, sender=sender, recipient=recipient, data=data)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused):
            # A refusal leaves the session in a known state (smtplib sends
            # RSET): keep it for the next message.
            raise
        except smtplib.SMTPServerDisconnected:
            # Most often the relay closed a session we kept open (its idle
            # timeout is its own) and never saw this message: one more try on
            # a new session. In the rare case it dropped us after taking the
            # data, the copy carries the same Message-ID (derived from the
            # delivery id) and receivers fold it, as after any retry. A fresh
            # session that fails again is a real failure.
            self._session_drop()
            if not reused:
                raise
            connection = self._session()
            try:
                _sendmail(connection, sender=sender, recipient=recipient, data=data)
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused):
                raise
            except BaseException:
                self._session_drop()
                raise
        except BaseException:
            # Anything else (reset, timeout, protocol error) leaves the
            # session unusable: the next message opens a new one.
            self._session_drop()
            raise
