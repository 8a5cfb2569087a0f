"""Media types at the API, both ways.

In: a JSON document sent as a form post or as text (what a cross-site form
or a confused client sends) is refused 415 by every operation that reads a
body, before the body is parsed and with nothing stored, even with a valid
key or signature. Out: every answer under /api/, errors included, carries
``Content-Disposition: attachment``, so a browser never renders an API
answer as a page of our origin. Operations come from the OpenAPI document,
so a new one is attacked without being listed here."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from cakra.api.api import api
from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.enforcement.models import Evidence, Violation
from cakra.security.middleware import API_CONTENT_DISPOSITION
from cakra.security.signing import receipt_signature_header, twilio_signature
from tests.api.helpers import payload
from tests.factories import ApiKeyFactory
from tests.security.attack_world import RegionObjects, api_operations, api_url, region_objects

REFERENCE = "<media-type-test@korlantas.polri.go.id>"
NOT_JSON = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/jsonp",
    "application/merge-patch+json",
    "application/json; charset=iso-8859-1",
    "application/json; charset=utf-16",
    "",
]
JSON_SPELLINGS = ["application/json", "application/json; charset=utf-8", "Application/JSON; Charset=UTF-8"]
# The SMS gateway's status callbacks are form posts (Twilio's wire format).
FORM = "application/x-www-form-urlencoded"
NOT_FORM = ["text/plain", "application/json", "multipart/form-data; boundary=x", "application/xml", ""]
FORM_SPELLINGS = [FORM, f"{FORM}; charset=utf-8"]
SMS_SID = "SM" + "0" * 31 + "1"
WAMID = "wamid.media-type-test"


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = api.get_openapi_schema(path_prefix="/api/v1")
    return schema


def _body_operations() -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in _schema()["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    )


def _media_type(method: str, path: str) -> str:
    """The one media type the operation declares for its body."""
    return str(next(iter(_schema()["paths"][path][method.lower()]["requestBody"]["content"])))


BODY_OPERATIONS = _body_operations()


@dataclass
class World:
    own: RegionObjects
    token: str
    delivery: Delivery


@pytest.fixture
def world(region) -> World:
    own = region_objects(region, plate_prefix="B", tag="OWN")
    _key, token = ApiKeyFactory.with_token(region=region)
    delivery = own.notice.deliveries.get(channel="email")
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.SENT, provider="smtp", provider_reference=REFERENCE, sent_at=timezone.now()
    )
    # The same notice's WhatsApp and SMS steps, sent, for those providers' receipts.
    for step, (channel, provider, reference) in enumerate(
        [("whatsapp", "whatsapp", WAMID), ("sms", "sms-http", SMS_SID)], start=delivery.step + 1
    ):
        Delivery.objects.create(
            notice=own.notice,
            channel=channel,
            step=step,
            status=Delivery.Status.SENT,
            provider=provider,
            provider_reference=reference,
            sent_at=timezone.now(),
        )
    return World(own=own, token=token, delivery=delivery)


def _valid(method: str, path: str, world: World, *, tag: str) -> tuple[str, bytes, dict[str, Any]]:
    """A request the operation accepts: its URL, a JSON body and the credential headers."""
    if path == "/api/v1/violations":
        body = json.dumps(payload(capture_id=f"CAP-MEDIA-{tag}")).encode()
        return path, body, {"HTTP_AUTHORIZATION": f"Bearer {world.token}"}
    if path == "/api/v1/violations/batch":
        body = json.dumps({"violations": [payload(capture_id=f"CAP-MEDIA-B-{tag}")]}).encode()
        return path, body, {"HTTP_AUTHORIZATION": f"Bearer {world.token}"}
    if path == "/api/v1/receipts/email/{provider}":
        event = {
            "event_id": f"evt-media-{tag}",
            "message_id": REFERENCE,
            "event": "delivered",
            "timestamp": timezone.now().isoformat(),
        }
        body = json.dumps([event]).encode()
        secret = settings.CAKRA_RECEIPT_WEBHOOKS["smtp-sink"]["SECRET"]
        signature = receipt_signature_header(secret=secret, body=body)
        return path.replace("{provider}", "smtp-sink"), body, {"HTTP_X_CAKRA_SIGNATURE": signature}
    if path == "/api/v1/webhooks/whatsapp/{name}":
        status = {"id": WAMID, "status": "delivered", "timestamp": str(int(timezone.now().timestamp()))}
        change = {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [status]}}
        document = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}
        body = json.dumps(document).encode()
        secret = settings.CAKRA_WHATSAPP_WEBHOOKS["whatsapp-sim"]["APP_SECRET"]
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return path.replace("{name}", "whatsapp-sim"), body, {"HTTP_X_HUB_SIGNATURE_256": signature}
    if path == "/api/v1/receipts/sms/{name}":
        config = settings.CAKRA_SMS_CALLBACKS["sms-http"]
        params = {"MessageSid": SMS_SID, "MessageStatus": "delivered", "AccountSid": "AC" + "1" * 32}
        signature = twilio_signature(auth_token=config["AUTH_TOKEN"], url=config["URL"], params=params)
        return path.replace("{name}", "sms-http"), urlencode(params).encode(), {"HTTP_X_TWILIO_SIGNATURE": signature}
    msg = f"{method} {path} reads a body: teach this test a valid request for it"
    raise AssertionError(msg)


def _send(url: str, body: bytes, content_type: str, headers: dict[str, Any]) -> Any:
    # generic() sends the bytes as they are (post() would re-encode them to a
    # declared charset); an empty type stands for a request that declares none.
    return Client().generic("POST", url, data=body, **headers, CONTENT_TYPE=content_type)


def _stored() -> tuple[Any, ...]:
    return (
        Violation.objects.count(),
        Evidence.objects.count(),
        DeliveryReceipt.objects.count(),
        *Delivery.objects.order_by("id").values_list("status"),
    )


def test_the_sweep_finds_the_operations_that_read_a_body():
    assert {path for _, path in BODY_OPERATIONS} >= {
        "/api/v1/violations",
        "/api/v1/violations/batch",
        "/api/v1/receipts/email/{provider}",
        "/api/v1/webhooks/whatsapp/{name}",
        "/api/v1/receipts/sms/{name}",
    }


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
def test_every_body_operation_declares_415(method, path):
    operation = _schema()["paths"][path][method.lower()]
    assert 415 in {int(status) for status in operation["responses"]}, f"{method} {path} does not declare its 415"
    assert len(operation["requestBody"]["content"]) == 1
    assert _media_type(method, path) in {"application/json", FORM}


def _refused_and_accepted(method: str, path: str) -> tuple[list[str], list[str]]:
    if _media_type(method, path) == FORM:
        return NOT_FORM, FORM_SPELLINGS
    return NOT_JSON, JSON_SPELLINGS


REFUSED_CASES = [
    (method, path, content_type)
    for method, path in BODY_OPERATIONS
    for content_type in _refused_and_accepted(method, path)[0]
]
ACCEPTED_CASES = [
    (method, path, content_type)
    for method, path in BODY_OPERATIONS
    for content_type in _refused_and_accepted(method, path)[1]
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "content_type"), REFUSED_CASES)
def test_a_body_not_declared_as_its_media_type_is_refused_before_it_is_read(world, method, path, content_type):
    url, body, headers = _valid(method, path, world, tag="refused")
    before = _stored()
    response = _send(url, body, content_type, headers)
    assert response.status_code == 415, response.content
    message = f"the body must be sent as Content-Type: {_media_type(method, path)}"
    assert response.json() == {"error": {"code": "unsupported_media_type", "message": message}}
    assert _stored() == before


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "content_type"), ACCEPTED_CASES)
def test_its_media_type_with_or_without_its_charset_is_accepted(world, method, path, content_type):
    url, body, headers = _valid(method, path, world, tag=str(ACCEPTED_CASES.index((method, path, content_type))))
    response = _send(url, body, content_type, headers)
    assert response.status_code in {200, 201}, response.content


# --- Content-Disposition on every answer ------------------------------------------


def _answers(world: World) -> Iterator[tuple[str, Any]]:
    """Every kind of answer the API gives: each operation as its owner, without
    a credential, for an unknown object, with a wrong media type, with a
    method it does not have; unknown paths and the schema document."""
    auth: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {world.token}"}
    for operation in api_operations():
        method = operation.method
        if (method, operation.path) in BODY_OPERATIONS:
            url, body, headers = _valid(method, operation.path, world, tag="disposition")
            media_type = _media_type(method, operation.path)
            yield f"{operation} accepted", _send(url, body, media_type, headers)
            yield f"{operation} 415", _send(url, body, "text/plain", headers)
            yield f"{operation} 400", _send(url, b"{", media_type, headers)
            yield f"{operation} 401", _send(url, body, media_type, {})
        else:
            client = Client()
            yield f"{operation} owner", client.generic(method, api_url(operation, world.own), **auth)
            yield f"{operation} unknown", client.generic(method, api_url(operation, None), **auth)
            yield f"{operation} 401", client.generic(method, api_url(operation, world.own))
        yield f"{operation} 405", Client().generic("DELETE", api_url(operation, world.own), **auth)
    yield "unknown path", Client().get("/api/v1/nothing-here", **auth)
    yield "outside the version", Client().get("/api/v2/violations", **auth)
    yield "schema", Client().get("/api/v1/openapi.json")


@pytest.mark.django_db
def test_every_api_answer_is_an_attachment(world):
    seen = {}
    for label, response in _answers(world):
        seen[label] = response.status_code
        assert response.get("Content-Disposition") == API_CONTENT_DISPOSITION, (label, response.status_code)
    # The sweep reached successes and the error answers alike.
    assert {200, 201, 400, 401, 404, 405, 415} <= set(seen.values()), seen


@pytest.mark.django_db
def test_pages_are_not_attachments():
    for url in ["/cek/", "/backoffice/login/"]:
        response = Client().get(url)
        assert response.status_code == 200
        assert "Content-Disposition" not in response
