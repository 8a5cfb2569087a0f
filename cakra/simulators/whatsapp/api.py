"""The Cloud API's behaviour: what a send is answered and which webhooks follow it.

:class:`CloudApi` takes the parsed request (the HTTP server,
:mod:`~cakra.simulators.whatsapp.server`, reads it off the socket) and
returns the HTTP status and JSON body Meta would. Checks run in Meta's
order: the business number, the body, the number's throughput (130429), the
template or the customer-service window (132001, 132000, 132018, 131047),
the pair rate (131056), then the recipient's magic behaviour
(:mod:`cakra.simulators.magic`) and the random failure mix (131000). An
accepted message is stored and its statuses are queued on the webhook
reporter: ``sent``, ``delivered``, ``read``, or ``failed`` (131026) for a
number that is not on WhatsApp, or only ``sent`` for a number that never
confirms.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from cakra import clock
from cakra.simulators.magic import Magic, magic_for
from cakra.simulators.whatsapp import errors
from cakra.simulators.whatsapp.errors import GraphError, error_envelope
from cakra.simulators.whatsapp.limits import PairRateLimit, ThroughputLimit
from cakra.simulators.whatsapp.store import WINDOW_SECONDS, InboundMessage, OutboundMessage, SimulatorStore
from cakra.simulators.whatsapp.templates import (
    CATEGORIES,
    LANGUAGE_PATTERN,
    NAME_PATTERN,
    TemplateBook,
    parameter_text_valid,
)
from cakra.simulators.whatsapp.webhooks import WebhookReporter

logger = structlog.get_logger(__name__)

Answer = tuple[int, dict[str, Any]]

TEXT_MAX_CHARS = 4096
REFERENCE_MAX_CHARS = 512
PROFILE_NAME_MAX_CHARS = 100
_WA_ID = re.compile(r"[1-9][0-9]{7,14}")
_TO_SEPARATORS = re.compile(r"[\s()+-]")
_NOT_ON_WHATSAPP = frozenset({Magic.NOT_ON_WHATSAPP, Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE})


@dataclass(frozen=True, slots=True)
class BusinessNumber:
    phone_number_id: str
    display_phone_number: str
    verified_name: str


@dataclass(frozen=True, slots=True)
class Behaviour:
    """The knobs a tester or the benchmark turns (times in seconds, rates 0..1)."""

    rate_per_second: float = 80.0
    pair_interval: float = 0.0
    latency: float = 0.0
    jitter: float = 0.0
    failure_rate: float = 0.0
    delivered_delay: float = 0.0
    read_delay: float = 0.0
    skip_delivered_rate: float = 0.0
    out_of_order_rate: float = 0.0
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class _Content:
    """What an accepted message shows the citizen, and what it was built from."""

    text: str
    template_name: str
    language: str
    category: str  # the conversation's category: the template's, or "service" in the window


@dataclass(frozen=True, slots=True)
class _Request:
    body: dict[str, Any]
    to: str  # as the client wrote it
    wa_id: str
    reference: str  # biz_opaque_callback_data


def _request_parse(raw: bytes) -> _Request | Answer:  # noqa: PLR0911 - one answer per field
    """The fields every send has, checked; or the error answer."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _error(errors.INVALID_PARAMETER, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return _error(errors.INVALID_PARAMETER, "The request body must be a JSON object.")
    if body.get("messaging_product") != "whatsapp":
        return _error(errors.INVALID_PARAMETER, "The parameter messaging_product is required and must be whatsapp.")
    if body.get("recipient_type", "individual") != "individual":
        return _error(errors.INVALID_PARAMETER, "Invalid parameter: recipient_type must be individual.")
    to = body.get("to")
    wa_id = wa_id_of(to) if isinstance(to, str) else None
    if not isinstance(to, str) or wa_id is None:
        return _error(errors.INVALID_PARAMETER, "The parameter to is required and must be a phone number.")
    reference = body.get("biz_opaque_callback_data", "")
    if not isinstance(reference, str) or len(reference) > REFERENCE_MAX_CHARS:
        return _error(errors.INVALID_PARAMETER, "biz_opaque_callback_data must be text of at most 512 characters.")
    return _Request(body=body, to=to, wa_id=wa_id, reference=reference)


def _body_parameters(components: list[Any]) -> list[str] | Answer:
    """The texts of the body component's parameters, in order; or the error answer."""
    parameters: list[str] = []
    for component in components:
        if not isinstance(component, dict) or not isinstance(component.get("parameters", []), list):
            return _error(errors.INVALID_PARAMETER, "Each component is an object with a list of parameters.")
        if component.get("type") != "body":
            if component.get("parameters"):
                return _error(
                    errors.TEMPLATE_PARAMETER_COUNT,
                    f"{str(component.get('type'))[:20]}: the template has no parameters in this component",
                )
            continue
        for parameter in component.get("parameters", []):
            text = parameter.get("text") if isinstance(parameter, dict) else None
            if not isinstance(text, str) or not text or parameter.get("type") != "text":
                return _error(errors.INVALID_PARAMETER, "Body parameters are of type text with a non-empty text.")
            parameters.append(text)
    return parameters


def wamid_new(wa_id: str) -> str:
    """A message id shaped as Meta's: ``wamid.`` + base64 of the recipient and a unique part."""
    unique = secrets.token_hex(9).upper().encode()
    raw = b"\x1c\x18" + bytes([len(wa_id)]) + wa_id.encode() + b"\x15\x02\x00\x11\x18\x12" + unique + b"\x00"
    return "wamid." + base64.b64encode(raw).decode()


def _error(error: GraphError, details: str) -> Answer:
    return error.http_status, error_envelope(error, details)


def wa_id_of(raw: str) -> str | None:
    """The WhatsApp id (digits, country code first) of a ``to`` as clients write it, or None."""
    digits = _TO_SEPARATORS.sub("", raw)
    return digits if _WA_ID.fullmatch(digits) else None


class CloudApi:
    def __init__(
        self,
        *,
        access_token: str,
        waba_id: str,
        business_numbers: Mapping[str, BusinessNumber],
        templates: TemplateBook,
        store: SimulatorStore,
        webhooks: WebhookReporter | None,
        behaviour: Behaviour,
    ) -> None:
        if not access_token:
            raise ValueError("the simulator needs an access token to check")
        self._access_token = access_token.encode()
        self.waba_id = waba_id
        self.business_numbers = dict(business_numbers)
        self.templates = templates
        self.store = store
        self.webhooks = webhooks
        self.behaviour = behaviour
        self._throughput = ThroughputLimit(behaviour.rate_per_second)
        self._pair = PairRateLimit(behaviour.pair_interval)
        self._random = random.Random(behaviour.seed)  # noqa: S311 - a reproducible mix, not a secret
        self._random_lock = threading.Lock()

    def _chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._random_lock:
            return self._random.random() < rate

    def reset(self) -> None:
        self.store.reset()
        self._throughput.reset()
        self._pair.reset()

    # --- authentication ---------------------------------------------------------------
    def authorization_error(self, header: str) -> Answer | None:
        """None when ``header`` carries the configured bearer token, else Meta's 401."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._access_token):
            return None
        return _error(errors.ACCESS_TOKEN_INVALID, "")

    def _unknown_object(self, object_id: str) -> Answer:
        return _error(
            errors.UNKNOWN_OBJECT,
            f"Unsupported request. Object with ID '{object_id[:64]}' does not exist, cannot be loaded due to "
            "missing permissions, or does not support this operation.",
        )

    # --- POST /{version}/{phone_number_id}/messages ----------------------------------------
    def _latency(self) -> None:
        """The configured network and processing time of a send (the benchmark's realism)."""
        if self.behaviour.latency > 0 or self.behaviour.jitter > 0:
            with self._random_lock:
                jitter = self._random.uniform(0, self.behaviour.jitter)
            time.sleep(self.behaviour.latency + jitter)

    def send(self, phone_number_id: str, raw: bytes) -> Answer:  # noqa: PLR0911, C901 - one answer per check, in Meta's order
        self._latency()
        if phone_number_id not in self.business_numbers:
            return self._unknown_object(phone_number_id)
        request = _request_parse(raw)
        if not isinstance(request, _Request):
            return request
        body, to, wa_id, reference = request.body, request.to, request.wa_id, request.reference
        if not self._throughput.take(phone_number_id):
            return _error(
                errors.RATE_LIMIT_HIT,
                "Message failed to send because there were too many messages sent from this phone number "
                "in a short period of time.",
            )
        magic = magic_for(wa_id)
        if magic == Magic.THROTTLED:
            return _error(errors.RATE_LIMIT_HIT, "Cloud API message throughput has been reached.")
        kind = body.get("type", "text")
        if kind == "template":
            parsed = self._template_parse(body.get("template"))
        elif kind == "text":
            parsed = self._text_parse(body.get("text"), phone_number_id, wa_id)
        else:
            parsed = _error(errors.INVALID_PARAMETER, "The simulator sends type template or text only.")
        if not isinstance(parsed, _Content):
            return parsed
        if not self._pair.take(phone_number_id, wa_id):
            return _error(
                errors.PAIR_RATE_LIMIT_HIT,
                "Message failed to send because there were too many messages sent from this phone number "
                "to the same phone number in a short period of time.",
            )
        if magic == Magic.TEMPORARY or self._chance(self.behaviour.failure_rate):
            return _error(errors.SOMETHING_WENT_WRONG, "An unknown error occurred. Please try again later.")
        if magic == Magic.PERMANENT:
            return _error(errors.MESSAGE_UNDELIVERABLE, "Message Undeliverable.")
        message = OutboundMessage(
            wamid=wamid_new(wa_id),
            phone_number_id=phone_number_id,
            wa_id=wa_id,
            kind=kind,
            text=parsed.text,
            sent_at=clock.time(),
            template_name=parsed.template_name,
            template_language=parsed.language,
            category=parsed.category,
            reference=reference,
        )
        self.store.outbound_add(message)
        self._statuses_schedule(message, magic)
        answer: dict[str, Any] = {"id": message.wamid}
        if kind == "template":
            answer["message_status"] = "accepted"
        return 200, {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": wa_id}],
            "messages": [answer],
        }

    def _template_parse(self, template: object) -> _Content | Answer:  # noqa: PLR0911 - one answer per check
        """The rendered template, or the error answer."""
        if not isinstance(template, dict):
            return _error(errors.INVALID_PARAMETER, "The parameter template is required.")
        name, language, components = template.get("name"), template.get("language"), template.get("components", [])
        code = language.get("code") if isinstance(language, dict) else None
        if not isinstance(name, str) or not isinstance(code, str) or not isinstance(components, list):
            return _error(errors.INVALID_PARAMETER, "template needs a name, language.code and a list of components.")
        found = self.templates.approved(name, code)
        if found is None:
            return _error(errors.TEMPLATE_MISSING, f"template name ({name[:100]}) does not exist in {code[:20]}")
        parameters = _body_parameters(components)
        if not isinstance(parameters, list):
            return parameters
        if len(parameters) != found.parameter_count:
            return _error(
                errors.TEMPLATE_PARAMETER_COUNT,
                f"body: number of localizable_params ({len(parameters)}) does not match the expected number of "
                f"params ({found.parameter_count})",
            )
        if not all(parameter_text_valid(parameter) for parameter in parameters):
            return _error(
                errors.TEMPLATE_PARAMETER_FORMAT,
                "Param text cannot have new-line/tab characters or more than 4 consecutive spaces",
            )
        return _Content(found.render(parameters), found.name, found.language, found.category.lower())

    def _text_parse(self, text: object, phone_number_id: str, wa_id: str) -> _Content | Answer:
        if not isinstance(text, dict):
            return _error(errors.INVALID_PARAMETER, "text.body is required (1 to 4096 characters).")
        body = text.get("body")
        if not isinstance(body, str) or not 0 < len(body) <= TEXT_MAX_CHARS:
            return _error(errors.INVALID_PARAMETER, "text.body is required (1 to 4096 characters).")
        if not isinstance(text.get("preview_url", False), bool):
            return _error(errors.INVALID_PARAMETER, "text.preview_url must be a boolean.")
        if not self.store.window_open(phone_number_id, wa_id):
            return _error(
                errors.REENGAGEMENT_MESSAGE,
                "Message failed to send because more than 24 hours have passed since the customer last replied "
                "to this number.",
            )
        return _Content(body, "", "", "service")

    def _statuses_schedule(self, message: OutboundMessage, magic: Magic) -> None:
        if self.webhooks is None:
            return
        now = clock.time()
        base: dict[str, Any] = {"id": message.wamid, "recipient_id": message.wa_id}
        if message.reference:
            base["biz_opaque_callback_data"] = message.reference
        if magic in _NOT_ON_WHATSAPP:
            failed = {
                **base,
                "status": "failed",
                "timestamp": str(int(now)),
                "errors": [errors.webhook_error(errors.MESSAGE_UNDELIVERABLE, "Message Undeliverable.")],
            }
            self.webhooks.report_status(phone_number_id=message.phone_number_id, status=failed)
            return
        conversation_id = hashlib.sha256(f"{message.phone_number_id}:{message.wa_id}".encode()).hexdigest()[:32]
        origin = {"type": message.category}
        pricing = {"billable": True, "pricing_model": "CBP", "category": message.category}
        plan: list[tuple[float, dict[str, Any]]] = [
            (
                0.0,
                {
                    **base,
                    "status": "sent",
                    "conversation": {
                        "id": conversation_id,
                        "expiration_timestamp": str(int(now) + WINDOW_SECONDS),
                        "origin": origin,
                    },
                    "pricing": pricing,
                },
            )
        ]
        if magic != Magic.NO_RECEIPT:
            delivered_at = self.behaviour.delivered_delay
            if not self._chance(self.behaviour.skip_delivered_rate):
                delivered = {**base, "status": "delivered", "conversation": {"id": conversation_id, "origin": origin}}
                plan.append((delivered_at, {**delivered, "pricing": pricing}))
            plan.append((delivered_at + self.behaviour.read_delay, {**base, "status": "read"}))
        if len(plan) > 1 and self._chance(self.behaviour.out_of_order_rate):
            # Posted newest first, together: the receiver must cope with any order.
            last = plan[-1][0]
            plan = [(last, status) for _, status in reversed(plan)]
        for delay, status in plan:
            status["timestamp"] = str(int(now + delay))
            self.webhooks.report_status(phone_number_id=message.phone_number_id, status=status, delay=delay)

    # --- the citizen's side ------------------------------------------------------------------
    def inbound(self, *, phone_number_id: str, wa_id: str, text: str, name: str, forwarded: bool) -> Answer:
        """A citizen's text to a business number: stored, posted to the webhook, and the
        citizen's 24-hour window with that number opened."""
        if phone_number_id not in self.business_numbers:
            return 404, {"error": "unknown phone_number_id"}
        if wa_id_of(wa_id) != wa_id:
            return 400, {"error": "from must be the citizen's number in digits, country code first"}
        if not 0 < len(text) <= TEXT_MAX_CHARS or len(name) > PROFILE_NAME_MAX_CHARS:
            return 400, {"error": "text must be 1 to 4096 characters, name at most 100"}
        message = InboundMessage(
            wamid=wamid_new(wa_id),
            phone_number_id=phone_number_id,
            wa_id=wa_id,
            name=name,
            text=text,
            forwarded=forwarded,
            received_at=clock.time(),
        )
        self.store.inbound_add(message)
        if self.webhooks is not None:
            item: dict[str, Any] = {
                "from": wa_id,
                "id": message.wamid,
                "timestamp": str(int(message.received_at)),
                "type": "text",
                "text": {"body": text},
            }
            if forwarded:
                item["context"] = {"forwarded": True}
            self.webhooks.report_message(
                phone_number_id=phone_number_id, message=item, contact={"profile": {"name": name}, "wa_id": wa_id}
            )
        logger.info("whatsapp_sim.inbound", wamid=message.wamid)
        return 200, {"id": message.wamid}

    # --- GET|POST /{version}/{waba_id}/message_templates ---------------------------------------
    def templates_list(self, waba_id: str) -> Answer:
        if waba_id != self.waba_id:
            return self._unknown_object(waba_id)
        return 200, {"data": [template.as_graph() for template in self.templates.all()]}

    def templates_create(self, waba_id: str, raw: bytes) -> Answer:  # noqa: PLR0911
        if waba_id != self.waba_id:
            return self._unknown_object(waba_id)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _error(errors.INVALID_PARAMETER, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(errors.INVALID_PARAMETER, "The request body must be a JSON object.")
        name, language, category = body.get("name"), body.get("language"), body.get("category")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            return _error(errors.INVALID_PARAMETER, "name: lowercase letters, digits and underscores only.")
        if not isinstance(language, str) or not LANGUAGE_PATTERN.fullmatch(language):
            return _error(errors.INVALID_PARAMETER, "language: a language code such as id or en_US.")
        if not isinstance(category, str) or category.upper() not in CATEGORIES:
            return _error(errors.INVALID_PARAMETER, "category must be one of UTILITY, MARKETING, AUTHENTICATION.")
        components = body.get("components")
        texts = [
            component.get("text")
            for component in (components if isinstance(components, list) else [])
            if isinstance(component, dict) and str(component.get("type", "")).upper() == "BODY"
        ]
        if len(texts) != 1 or not isinstance(texts[0], str):
            return _error(errors.INVALID_PARAMETER, "components: exactly one BODY with its text.")
        created = self.templates.submit(name=name, language=language, category=category.upper(), body=texts[0])
        if created is None:
            return _error(errors.TEMPLATE_EXISTS, "Content in this language already exists.")
        logger.info("whatsapp_sim.template_reviewed", template=name, status=created.status)
        return 200, {"id": created.id, "status": created.status, "category": created.category}
