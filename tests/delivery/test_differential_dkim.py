"""The DKIM signer against dkimpy, over generated messages.

:meth:`DkimKey.sign_parts` writes the ``DKIM-Signature`` header itself
(relaxed/relaxed, the project's signed and over-signed headers, RSA through
OpenSSL) instead of letting dkimpy parse the message. For every generated
message, signed with a freshly generated 2048-bit key, dkimpy must verify
the signature, and dkimpy's own signer, given the same message and second,
must write the same header byte for byte.

Messages are generated two ways: as the adapter builds them (the MIME
writer's headers and bodies, from any Unicode text), and as raw header
fields and body lines that the signer's canonicalisation has to get right
on its own (folds, tabs, runs and trailing white space, empty and trailing
lines, repeated and missing signed headers, mixed-case names, 8-bit bytes).
"""

from __future__ import annotations

import functools
import re
import uuid

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from cakra.delivery.channels.base import OutboundMessage, SenderIdentity
from cakra.delivery.channels.dkim import INCLUDE_HEADERS, SIGNED_HEADERS, DkimKey, dkim_key_load
from cakra.delivery.channels.email import SmtpEmailAdapter
from cakra.delivery.channels.mime import address_header, alternative_message, header
from cakra.simulators.smtp import SimulatedDkimDns
from tests.delivery.strategies import ADDRESSES, BODY_TEXT, DISPLAY_NAMES, SUBJECTS

# dkimpy computes its reference signature in pure Python (tens of ms each).
DIFFERENTIAL = settings(max_examples=60, deadline=None, derandomize=True, database=None)
SELECTOR = "gen2048"
_T_TAG = re.compile(rb"\bt=(\d+);")
_SIGNATURE_END = re.compile(rb"\r\n(?![ \t])")  # the end of the first header field (folds continue it)


@functools.cache
def _generated_pem() -> bytes:
    """A 2048-bit RSA key made for this run, in the PEM form dkimpy reads."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key() -> DkimKey:
    return dkim_key_load(_generated_pem().decode("ascii"))


def _dns() -> SimulatedDkimDns:
    return SimulatedDkimDns(record=_key().txt_value(), selector=SELECTOR)


def _dkimpy_sign(unsigned: bytes, *, domain: str) -> bytes:
    signature: bytes = dkim.sign(
        unsigned,
        SELECTOR.encode("ascii"),
        domain.encode("idna"),
        _generated_pem(),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=list(INCLUDE_HEADERS),
    )
    return signature


def _assert_signed_as_dkimpy_signs(headers, body, *, domain):
    unsigned = b"".join(name + b":" + value + b"\r\n" for name, value in headers) + b"\r\n" + body
    theirs = _dkimpy_sign(unsigned, domain=domain)
    match = _T_TAG.search(theirs)
    assert match is not None
    ours = _key().sign_parts(headers, body, selector=SELECTOR, domain=domain, timestamp=int(match.group(1)))

    assert ours == theirs
    assert dkim.verify(ours + unsigned, dnsfunc=_dns())


# --- Generated messages ------------------------------------------------------------

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
DOMAINS = st.one_of(
    st.lists(LABEL, min_size=2, max_size=4).map(".".join),
    # An internationalised sender domain: d= carries its IDNA form.
    st.sampled_from(["kepolisian.例え.jp", "polri.go.id", "bücher.example"]),
)
# Every signed header but From, which a message holds exactly once (dkimpy's
# verifier counts one From more than the signature lists, so that a second
# one added in transit fails). The others may be missing or repeated.
OTHER_SIGNED_NAMES = [name.decode("ascii") for name in SIGNED_HEADERS if name != b"from"]
HEADER_NAMES = st.one_of(
    st.sampled_from([*OTHER_SIGNED_NAMES, "Received", "X-Mailer", "List-Id"]).flatmap(
        # Names are matched without regard to case.
        lambda name: st.sampled_from([name, name.lower(), name.upper(), name.title()])
    ),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"), min_size=1, max_size=12
    ).filter(lambda name: name.lower() != "from"),
)
# A value's text: printable ASCII, spaces, tabs and 8-bit bytes, in runs.
VALUE_PIECES = st.one_of(
    st.binary(max_size=30).map(lambda raw: bytes(b for b in raw if b not in b"\r\n")),
    st.sampled_from([b" ", b"  ", b"\t", b" \t ", b"=?utf-8?q?x?=", b"a" * 80, "é".encode()]),
)
FOLDS = st.sampled_from([b"\r\n ", b"\r\n\t", b"\r\n  \t"])
HEADER_VALUES = st.lists(st.tuples(VALUE_PIECES, st.one_of(st.just(b""), FOLDS)), max_size=6).map(
    lambda pieces: b"".join(piece + fold for piece, fold in pieces)
)
RAW_HEADERS = st.tuples(
    HEADER_VALUES,  # the From field, always present (DKIM requires it signed)
    st.lists(st.tuples(HEADER_NAMES.map(str.encode), HEADER_VALUES), max_size=12),
    st.integers(min_value=0, max_value=12),
).map(lambda parts: [*parts[1][: parts[2]], (b"From", parts[0]), *parts[1][parts[2] :]])
BODY_LINES = st.one_of(
    st.binary(max_size=90).map(lambda raw: bytes(b for b in raw if b not in b"\r\n")),
    st.sampled_from([b"", b" ", b"\t", b"a  b", b"trailing \t", b".", b"From here", b"x" * 1000]),
)
RAW_BODIES = st.tuples(st.lists(BODY_LINES, max_size=15), st.sampled_from([b"", b"\r\n", b"\r\n\r\n\r\n"])).map(
    lambda parts: b"\r\n".join(parts[0]) + parts[1]
)


@DIFFERENTIAL
@given(headers=RAW_HEADERS, body=RAW_BODIES, domain=DOMAINS)
def test_raw_header_fields_and_bodies_are_signed_as_dkimpy_signs_them(headers, body, domain):
    _assert_signed_as_dkimpy_signs(headers, body, domain=domain)


@DIFFERENTIAL
@given(
    subject=SUBJECTS,
    recipient=ADDRESSES,
    display_name=DISPLAY_NAMES,
    text=BODY_TEXT,
    html=BODY_TEXT,
    domain=DOMAINS,
)
def test_messages_as_the_mime_writer_builds_them_are_signed_as_dkimpy_signs_them(
    subject, recipient, display_name, text, html, domain
):
    ascii_domain = domain.encode("idna").decode("ascii")
    mime = alternative_message(
        headers=(
            address_header("From", display_name, f"etle@{ascii_domain}"),
            header("To", recipient),
            header("Subject", subject),
            header("Message-ID", f"<{uuid.uuid4()}@{ascii_domain}>"),
            (b"Auto-Submitted", b" auto-generated"),
        ),
        text=text,
        html=html,
        content_language="id, en",
    )
    _assert_signed_as_dkimpy_signs(mime.headers, mime.body, domain=domain)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(subject=SUBJECTS, recipient=ADDRESSES, display_name=DISPLAY_NAMES, text=BODY_TEXT, html=BODY_TEXT)
def test_dkimpy_verifies_every_message_the_adapter_sends(subject, recipient, display_name, text, html):
    # The production path end to end: build (MIME writer) and sign, as submitted.
    adapter = SmtpEmailAdapter(
        options={
            "HOST": "127.0.0.1",
            "PORT": 25,
            "SECURITY": "none",
            "DKIM_SELECTOR": SELECTOR,
            "DKIM_PRIVATE_KEY": _generated_pem().decode("ascii"),
        }
    )
    message = OutboundMessage(
        reference=str(uuid.uuid4()),
        recipient=recipient,
        sender=SenderIdentity(address="etle-metro@korlantas.polri.go.id", display_name=display_name),
        subject=subject,
        text=text,
        html=html,
    )

    _, raw = adapter.build(message)

    assert dkim.verify(raw, dnsfunc=_dns())
    end = _SIGNATURE_END.search(raw)
    assert raw.startswith(b"DKIM-Signature: ")
    assert end is not None
    ours, unsigned = raw[: end.end()], raw[end.end() :]
    theirs = _dkimpy_sign(unsigned, domain="korlantas.polri.go.id")
    stamps = [_T_TAG.search(signature) for signature in (ours, theirs)]
    if stamps[0] and stamps[1] and stamps[0].group(1) == stamps[1].group(1):  # the same second: nearly always
        assert ours == theirs
