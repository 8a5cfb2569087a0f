"""The template registry: which WhatsApp templates exist, which are approved,
and what a message built from one says.

Outside the customer's 24-hour window WhatsApp delivers only templates the
provider has approved, with their numbered parameters (``{{1}}``, ``{{2}}``…)
filled in. The registry (:class:`~cakra.delivery.models.MessageTemplate`)
mirrors what was submitted and the provider's verdict, so that

- only an **approved** version is ever sent (a paused or rejected template
  fails the delivery permanently, and the plan moves to the next channel,
  instead of being refused by the provider message after message);
- **parameters are checked** against the template before the request: their
  number, and the provider's rules for a parameter (not empty, no line
  break or tab, no run of more than four spaces, bounded length), so a
  camera's odd location text cannot make the provider refuse a whole run;
- the **text the citizen sees** is rendered here from the same body and
  parameters, for the notice's timeline and the simulator's phone screen.

The templates Cakra ships are in ``cakra/delivery/data/whatsapp_templates.json``;
``cakra templates sync`` registers them (a changed body becomes a new
version, pending until approved).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from cakra.delivery.channels.base import PermanentProviderError, TemplateMessage
from cakra.delivery.models import Channel, MessageTemplate

DEFINITIONS_FILE = Path(__file__).resolve().parent / "data" / "whatsapp_templates.json"
_PLACEHOLDER = re.compile(r"\{\{\s*(\d+)\s*\}\}")
_NAME = re.compile(r"[a-z0-9_]{1,64}")
MAX_BODY_LENGTH = 1024  # WhatsApp's limit on a template body
MAX_PARAMETER_LENGTH = 500  # generous for a place name, short of the body limit
# Approved versions are cached per process this long: a template the
# provider pauses stops being sent within it, without a query per batch.
CACHE_SECONDS = 60.0


class TemplateError(PermanentProviderError):
    """The template cannot be sent (not approved, unknown) or its parameters
    break its rules. Permanent: the same message would be refused again."""


@dataclass(frozen=True, slots=True)
class TemplateDefinition:
    name: str
    language: str
    category: str
    body: str


@dataclass(frozen=True, slots=True)
class ApprovedTemplate:
    name: str
    language: str
    version: int
    body: str
    parameter_count: int


def body_parameter_count(body: str) -> int:
    """How many parameters ``body`` takes: ``{{1}}`` to ``{{n}}``, each at
    least once, none missing (the provider refuses a gap)."""
    numbers = {int(found) for found in _PLACEHOLDER.findall(body)}
    if numbers and numbers != set(range(1, max(numbers) + 1)):
        msg = "template parameters must be numbered {{1}} to {{n}} without gaps"
        raise ValueError(msg)
    return len(numbers)


def definition_problems(definition: TemplateDefinition) -> list[str]:
    """What the provider would refuse in ``definition`` (empty when nothing)."""
    problems = []
    if not _NAME.fullmatch(definition.name):
        problems.append("name must be 1-64 lowercase letters, digits or underscores")
    if definition.category not in MessageTemplate.Category.values:
        problems.append(f"category must be one of {', '.join(MessageTemplate.Category.values)}")
    if not 0 < len(definition.body) <= MAX_BODY_LENGTH:
        problems.append(f"body must be 1-{MAX_BODY_LENGTH} characters")
    stripped = definition.body.strip()
    if _PLACEHOLDER.match(stripped) or re.search(r"\{\{\s*\d+\s*\}\}$", stripped):
        problems.append("body may not start or end with a parameter")
    try:
        body_parameter_count(definition.body)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def template_definitions_load(path: Path = DEFINITIONS_FILE) -> list[TemplateDefinition]:
    with path.open(encoding="utf-8") as handle:
        raw = json.load(handle)
    return [TemplateDefinition(**entry) for entry in raw]


@transaction.atomic
def message_templates_sync(
    *, definitions: list[TemplateDefinition] | None = None, approved: bool = False
) -> list[MessageTemplate]:
    """Register ``definitions`` (the shipped file by default): a new
    template, or a changed body, becomes a new version, ``pending`` unless
    ``approved`` says the provider has approved exactly these bodies. An
    unchanged body keeps its version and status. Returns the rows touched."""
    definitions = template_definitions_load() if definitions is None else definitions
    touched: list[MessageTemplate] = []
    for definition in definitions:
        problems = definition_problems(definition)
        if problems:
            msg = f"template {definition.name} ({definition.language}): {'; '.join(problems)}"
            raise ValueError(msg)
        latest = (
            MessageTemplate.objects.select_for_update()
            .filter(channel=Channel.WHATSAPP, name=definition.name, language=definition.language)
            .order_by("-version")
            .first()
        )
        status = MessageTemplate.Status.APPROVED if approved else MessageTemplate.Status.PENDING
        if latest is not None and latest.body == definition.body and latest.category == definition.category:
            if approved and latest.status != status:
                latest.status = status
                latest.save(update_fields=["status", "updated_at"])
            touched.append(latest)
            continue
        touched.append(
            MessageTemplate.objects.create(
                channel=Channel.WHATSAPP,
                name=definition.name,
                language=definition.language,
                version=1 if latest is None else latest.version + 1,
                category=definition.category,
                body=definition.body,
                parameter_count=body_parameter_count(definition.body),
                status=status,
            )
        )
    _approved_cache.clear()
    return touched


def message_template_status_set(*, name: str, language: str, version: int, status: str) -> int:
    """Record the provider's verdict on one version (approved, rejected, paused…)."""
    if status not in MessageTemplate.Status.values:
        msg = f"unknown template status {status!r}"
        raise ValueError(msg)
    updated = MessageTemplate.objects.filter(
        channel=Channel.WHATSAPP, name=name, language=language, version=version
    ).update(status=status)
    _approved_cache.clear()
    return updated


class _ApprovedCache:
    """The newest approved version of each (name, language), per process, for ``CACHE_SECONDS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, ApprovedTemplate | None]] = {}

    def get(self, name: str, language: str) -> ApprovedTemplate | None:
        key = (name, language)
        now = time.monotonic()
        with self._lock:
            cached = self._entries.get(key)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        row = (
            MessageTemplate.objects.filter(
                channel=Channel.WHATSAPP, name=name, language=language, status=MessageTemplate.Status.APPROVED
            )
            .order_by("-version")
            .values_list("version", "body", "parameter_count")
            .first()
        )
        found = None if row is None else ApprovedTemplate(name, language, row[0], row[1], row[2])
        with self._lock:
            self._entries[key] = (now, found)
        return found

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_approved_cache = _ApprovedCache()


def message_template_approved(*, name: str, language: str) -> ApprovedTemplate:
    """The version to send, or :class:`TemplateError` when none is approved."""
    found = _approved_cache.get(name, language)
    if found is None:
        msg = f"no approved template {name} ({language})"
        raise TemplateError(msg)
    return found


_LINE_BREAK_OR_TAB = re.compile(r"[\n\r\t\v\f\u0085\u2028\u2029]")
_SPACE_RUN = re.compile(r" {5,}")


def parameters_check(template: ApprovedTemplate, parameters: tuple[str, ...]) -> None:
    """:class:`TemplateError` unless ``parameters`` fit ``template`` and the provider's rules."""
    if len(parameters) != template.parameter_count:
        msg = f"template {template.name} takes {template.parameter_count} parameters, not {len(parameters)}"
        raise TemplateError(msg)
    for position, value in enumerate(parameters, start=1):
        if not value.strip():
            raise TemplateError(f"parameter {position} is empty")
        if len(value) > MAX_PARAMETER_LENGTH:
            raise TemplateError(f"parameter {position} is longer than {MAX_PARAMETER_LENGTH} characters")
        if _LINE_BREAK_OR_TAB.search(value) or _SPACE_RUN.search(value):
            raise TemplateError(f"parameter {position} has a line break, a tab or a run of spaces")


def template_text_render(body: str, parameters: tuple[str, ...]) -> str:
    """The body with its parameters filled in: what the citizen's phone shows."""
    return _PLACEHOLDER.sub(lambda found: parameters[int(found.group(1)) - 1], body)


def template_message_build(*, name: str, language: str, parameters: tuple[str, ...]) -> tuple[TemplateMessage, str]:
    """The template call and its rendered text, checked against the approved version."""
    template = message_template_approved(name=name, language=language)
    parameters_check(template, parameters)
    call = TemplateMessage(name=name, language=language, parameters=parameters, version=template.version)
    return call, template_text_render(template.body, parameters)
