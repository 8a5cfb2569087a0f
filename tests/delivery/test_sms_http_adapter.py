"""The Twilio-style HTTP SMS adapter against the real gateway simulator on a free port."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from cakra.delivery.channels.base import (
    OutboundMessage,
    PermanentProviderError,
    RetryableProviderError,
    SenderIdentity,
    ThrottledProviderError,
    UnavailableProviderError,
)
from cakra.delivery.channels.sms_http import HttpSmsAdapter, gateway_answer_error
from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.smsgateway import SmsGateway
from tests.delivery.helpers import send_one

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "a-test-auth-token-0123456789abcdef"
SENDER = SenderIdentity(address="ETLE-PMJ")
TEXT = "ETLE Polda Metro Jaya: surat konfirmasi 1234. Cek keasliannya di etle.korlantas.polri.go.id"
CALLBACK = "http://127.0.0.1:9/api/v1/receipts/sms/sms-http"


@pytest.fixture
def gateway():
    with SmsGateway(account_sid=ACCOUNT, auth_token=TOKEN, idle_timeout=0.2) as running:
        yield running


def _adapter(base_url, **options):
    return HttpSmsAdapter(
        options={"BASE_URL": base_url, "ACCOUNT_SID": ACCOUNT, "AUTH_TOKEN": TOKEN, "TIMEOUT": 2.0, **options},
        name="sms-http",
    )


@pytest.fixture
def adapter(gateway):
    adapter = _adapter(gateway.base_url)
    yield adapter
    adapter.close()


def _message(recipient, *, reference="d-1", text=TEXT):
    return OutboundMessage(reference=reference, recipient=recipient, sender=SENDER, text=text)


def test_a_message_is_posted_in_twilios_wire_format_and_its_sid_returned(gateway):
    adapter = _adapter(gateway.base_url, STATUS_CALLBACK_URL="")
    number = magic_number(Magic.DELIVERED, 7)

    sid = send_one(adapter, _message(number))

    [stored] = gateway.store.messages()
    assert sid == stored.sid
    assert sid.startswith("SM")
    assert (stored.to, stored.sender, stored.body, stored.account_sid) == (number, "ETLE-PMJ", TEXT, ACCOUNT)
    assert stored.segments == 1


def test_a_national_number_goes_out_in_e164(adapter, gateway):
    send_one(adapter, _message("0812-0000-0007"))

    assert gateway.store.messages()[0].to == "+6281200000007"


@pytest.mark.parametrize("recipient", ["+62215550123", "+14155550123", "not a number", ""])
def test_a_recipient_that_is_not_an_indonesian_mobile_fails_before_any_connection(adapter, gateway, recipient):
    with pytest.raises(PermanentProviderError) as raised:
        send_one(adapter, _message(recipient))

    assert raised.value.detail == "recipient is not a valid Indonesian mobile number"
    assert (gateway.received(), gateway.connections) == (0, 0)


def test_the_unsubscribed_magic_number_is_a_permanent_error_without_the_number(adapter):
    number = magic_number(Magic.PERMANENT)

    with pytest.raises(PermanentProviderError) as raised:
        send_one(adapter, _message(number))

    assert raised.value.detail == "sms gateway 400 code 21610 (recipient unsubscribed)"
    assert number not in raised.value.detail


def test_a_temporary_failure_is_retryable(adapter):
    with pytest.raises(RetryableProviderError) as raised:
        send_one(adapter, _message(magic_number(Magic.TEMPORARY)))

    assert type(raised.value) is RetryableProviderError
    assert raised.value.detail == "sms gateway 503 code 20503"


def test_a_throttled_answer_carries_the_gateways_retry_after(adapter):
    with pytest.raises(ThrottledProviderError) as raised:
        send_one(adapter, _message(magic_number(Magic.THROTTLED)))

    assert raised.value.retry_after == 1.0


def test_the_accounts_rate_limit_throttles_and_stops_the_batch():
    with SmsGateway(account_sid=ACCOUNT, auth_token=TOKEN, rate_per_second=0.001, burst=2) as gateway:
        adapter = _adapter(gateway.base_url)
        messages = [_message(magic_number(Magic.DELIVERED, n), reference=f"d-{n}") for n in range(4)]

        results = adapter.send_many(messages)

    assert [result.outcome for result in results] == ["sent", "sent", "throttled"]  # the 4th is not attempted
    assert results[2].error is not None
    assert results[2].error.detail == "sms gateway 429 code 20429 (rate limited)"


def test_random_gateway_failures_are_retryable():
    with (
        SmsGateway(account_sid=ACCOUNT, auth_token=TOKEN, failure_rate=1.0, seed=1) as gateway,
        pytest.raises(RetryableProviderError) as raised,
    ):
        send_one(_adapter(gateway.base_url), _message(magic_number(Magic.DELIVERED)))

    assert type(raised.value) is RetryableProviderError
    assert raised.value.detail == "sms gateway 500 code 20500"


def test_refused_credentials_make_the_provider_unavailable_and_stop_the_batch(gateway, caplog):
    caplog.set_level(logging.DEBUG)
    adapter = _adapter(gateway.base_url, AUTH_TOKEN="a-wrong-token-0123456789abcdef")
    messages = [_message(magic_number(Magic.DELIVERED, n), reference=f"d-{n}") for n in range(3)]

    results = adapter.send_many(messages)

    # Every message would fail alike: not the citizen's failure, and the batch stops.
    assert len(results) == 1
    assert isinstance(results[0].error, UnavailableProviderError)
    assert "401 code 20003" in results[0].error.detail
    assert gateway.received() == 0
    assert "sms_http.configuration_refused" in caplog.text
    assert "a-wrong-token" not in caplog.text


def test_a_sender_id_the_gateway_refuses_is_a_configuration_error(adapter, gateway):
    message = OutboundMessage(
        reference="d-1",
        recipient=magic_number(Magic.DELIVERED),
        sender=SenderIdentity(address="NOT A VALID SENDER"),
        text=TEXT,
    )

    with pytest.raises(UnavailableProviderError) as raised:
        send_one(adapter, message)

    assert "21212" in raised.value.detail


def test_a_batch_goes_over_one_kept_connection(adapter, gateway):
    messages = [_message(magic_number(Magic.DELIVERED, n), reference=f"d-{n}") for n in range(10)]

    results = adapter.send_many(messages)
    results += adapter.send_many(messages[:3])

    assert [result.outcome for result in results] == ["sent"] * 13
    assert gateway.received() == 13
    assert gateway.connections == 1


def test_a_connection_the_gateway_closed_while_idle_is_replaced_without_an_error(adapter, gateway):
    send_one(adapter, _message(magic_number(Magic.DELIVERED, 1), reference="d-1"))
    time.sleep(0.4)  # past the simulator's idle timeout: it closed the kept connection

    send_one(adapter, _message(magic_number(Magic.DELIVERED, 2), reference="d-2"))

    assert gateway.received() == 2
    assert gateway.connections == 2


def test_a_refused_connection_is_unavailable(closed_port):
    adapter = _adapter(f"http://127.0.0.1:{closed_port}")

    with pytest.raises(UnavailableProviderError) as raised:
        send_one(adapter, _message(magic_number(Magic.DELIVERED)))

    assert raised.value.detail == "sms gateway connection failed: ConnectionRefusedError"


def test_a_gateway_that_never_answers_is_unavailable_after_the_timeout(silent_port):
    adapter = _adapter(f"http://127.0.0.1:{silent_port}", TIMEOUT=0.2)

    with pytest.raises(UnavailableProviderError) as raised:
        send_one(adapter, _message(magic_number(Magic.DELIVERED)))

    assert raised.value.detail == "sms gateway timed out"


@pytest.fixture
def silent_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_logs_name_the_delivery_never_the_number_or_the_text(adapter, caplog):
    caplog.set_level(logging.DEBUG)
    numbers = [magic_number(Magic.DELIVERED, 3), magic_number(Magic.PERMANENT, 3)]

    adapter.send_many([_message(number, reference=f"d-{n}") for n, number in enumerate(numbers)])

    logged = caplog.text + "".join(str(record.msg) for record in caplog.records)
    assert "provider.send_batch" in logged
    assert "d-1" in logged  # the failed one (accepted messages are counted, not listed)
    assert not any(number in logged or number.removeprefix("+") in logged for number in numbers)
    assert "surat konfirmasi" not in logged


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "kind", "detail"),
    [
        (429, b"{}", "7", ThrottledProviderError, "sms gateway 429 (rate limited)"),
        (400, b'{"code": 20429}', None, ThrottledProviderError, "sms gateway 400 code 20429 (rate limited)"),
        (400, b'{"code": 21211}', None, PermanentProviderError, "sms gateway 400 code 21211 (invalid recipient)"),
        (400, b'{"code": 21408}', None, PermanentProviderError, "sms gateway 400 code 21408 (region not enabled)"),
        (
            400,
            b'{"code": 21614}',
            None,
            PermanentProviderError,
            "sms gateway 400 code 21614 (recipient is not a mobile number)",
        ),
        (400, b'{"code": 21617}', None, RetryableProviderError, "sms gateway 400 code 21617"),
        (404, b"not json", None, UnavailableProviderError, "sms gateway 404 (account not found"),
        (502, b"<html>", None, RetryableProviderError, "sms gateway 502"),
    ],
)
def test_each_answer_maps_to_the_taxonomy(status, body, retry_after, kind, detail):
    error = gateway_answer_error(status=status, body=body, retry_after=retry_after)

    assert type(error) is kind
    assert error.detail.startswith(detail)
    if status == 429:
        assert isinstance(error, ThrottledProviderError)
        assert error.retry_after == 7.0
