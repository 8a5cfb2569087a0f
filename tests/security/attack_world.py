"""What the penetration-test suite attacks: every route of the site, found by
walking Django's URL resolver and the API's OpenAPI document (a new route is
attacked without anyone listing it), and a small world of two regions with
objects behind every kind of id a route takes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Max
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from cakra.api.api import api
from cakra.backoffice.decisions import violation_validate
from cakra.backoffice.models import Officer
from cakra.backoffice.services import officer_totp_device_create
from cakra.enforcement.models import Evidence, Notice, Region, Violation
from cakra.enforcement.numbers import notice_number_generate
from cakra.portal.access import GRANTS_KEY
from cakra.registry.models import Vehicle
from tests.backoffice.conftest import english_client
from tests.backoffice.conftest import sign_in as backoffice_sign_in
from tests.factories import OfficerFactory, VehicleFactory, make_violation
from tests.portal.conftest import add_evidence, portal_session

# english_client is the back office tests' own, re-exported for the attack tests.
__all__ = ["english_client"]

CSRF_TOKEN_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass(frozen=True)
class Route:
    """A Django URL pattern outside the API: ``namespace:name`` and the names of its URL arguments."""

    name: str
    kwargs: tuple[str, ...]

    @property
    def namespace(self) -> str:
        return self.name.partition(":")[0]

    def __str__(self) -> str:
        return self.name


def _walk(patterns: list[Any], namespace: str, converters: tuple[str, ...]) -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == "api":
                continue  # the API is walked through its OpenAPI document
            inner = f"{namespace}:{entry.namespace}" if namespace and entry.namespace else entry.namespace or namespace
            yield from _walk(entry.url_patterns, inner, converters + tuple(entry.pattern.converters))
        elif isinstance(entry, URLPattern) and entry.name:
            yield Route(
                name=f"{namespace}:{entry.name}" if namespace else entry.name,
                kwargs=converters + tuple(entry.pattern.converters),
            )


def site_routes() -> list[Route]:
    """Every named portal and back-office route (the API excluded)."""
    return sorted(set(_walk(get_resolver().url_patterns, "", ())), key=str)


def backoffice_routes() -> list[Route]:
    return [route for route in site_routes() if route.namespace == "backoffice"]


def portal_routes() -> list[Route]:
    return [route for route in site_routes() if route.namespace == "portal"]


# The back-office routes a visitor reaches before being signed in; every other
# back-office route must demand a complete (password + TOTP) officer session.
BACKOFFICE_PUBLIC = {"backoffice:login", "backoffice:otp", "backoffice:logout"}
# The back-office routes for administrators alone (officer administration):
# every other role, auditors included, gets 403 there.
BACKOFFICE_ADMIN = {"backoffice:officers", "backoffice:officer_deactivate", "backoffice:officer_reactivate"}


@dataclass(frozen=True)
class ApiOperation:
    method: str
    path: str  # OpenAPI template, e.g. /api/v1/violations/{violation_id}
    parameters: tuple[str, ...]
    authenticated: bool

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def api_operations() -> list[ApiOperation]:
    schema = api.get_openapi_schema(path_prefix="/api/v1")
    found = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            parameters = tuple(p["name"] for p in operation.get("parameters", []) if p["in"] == "path")
            # "security": [] is an operation that takes no key (signed webhooks).
            authenticated = operation.get("security", schema.get("security", [None])) != []
            found.append(ApiOperation(method.upper(), path, parameters, authenticated))
    return sorted(found, key=str)


def visit(client: Client, method: str, url: str, data: Any = None, **extra: Any) -> Any:
    """``client.<method>(url)`` with a streamed body (evidence images) read and
    closed, so every answer can be compared byte for byte."""
    response = getattr(client, method.lower())(url, data, **extra) if data is not None else None
    if response is None:
        response = getattr(client, method.lower())(url, **extra)
    if response.streaming:
        # The test client closes the response (and the file) once the stream is read.
        response.content_bytes = b"".join(response.streaming_content)
    else:
        response.content_bytes = response.content
    return response


def csrf_token(response: Any) -> str:
    match = CSRF_TOKEN_RE.search(response.content.decode())
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def sign_in(client: Client, officer: Officer) -> Client:
    """A complete officer session with a new authenticator (see the back office tests' ``sign_in``)."""
    return backoffice_sign_in(client, officer, officer_totp_device_create(officer=officer, name="test", confirmed=True))


def grant(client: Client, notice: Notice) -> Client:
    """What a right lookup of ``notice`` leaves in the browser's citizen session."""
    session = portal_session(client)
    session[GRANTS_KEY] = {**session.get(GRANTS_KEY, {}), str(notice.id): 2**40}
    session.save()
    client.cookies[settings.CAKRA_PORTAL_SESSION_COOKIE_NAME] = session.session_key or ""
    return client


def portal_grants(client: Client) -> dict[str, int]:
    grants = portal_session(client).get(GRANTS_KEY, {})
    assert isinstance(grants, dict)
    return grants


@dataclass
class RegionObjects:
    """One region's objects: a violation waiting for a decision and a notice
    issued, each with a photo; the validator who issued it and the region's
    administrator, who manages the validator."""

    region: Region
    validator: Officer
    admin: Officer
    waiting: Violation
    waiting_evidence: Evidence
    notice: Notice
    notice_evidence: Evidence
    vehicle: Vehicle


def region_objects(region: Region, *, plate_prefix: str, tag: str, **violation_fields: Any) -> RegionObjects:
    validator = OfficerFactory.create(region=region, role=Officer.Role.VALIDATOR)
    admin = OfficerFactory.create(region=region, role=Officer.Role.ADMIN)
    vehicle = VehicleFactory.create(plate=f"{plate_prefix} 1234 {tag}")
    waiting = make_violation(region=region, vehicle=vehicle, capture_id=f"CAP-{tag}-W", **violation_fields)
    waiting_evidence = add_evidence(waiting, position=1, derived=True)
    issued = make_violation(region=region, vehicle=vehicle, capture_id=f"CAP-{tag}-N", **violation_fields)
    notice_evidence = add_evidence(issued, position=1, derived=True)
    notice = violation_validate(officer=validator, violation_id=issued.id)
    return RegionObjects(region, validator, admin, waiting, waiting_evidence, notice, notice_evidence, vehicle)


def unknown_notice_number() -> str:
    """A well-formed number (valid check digits) that no notice has."""
    while True:
        number = notice_number_generate()
        if not Notice.objects.filter(number=number).exists():
            return number


def route_kwargs(route: Route, objects: RegionObjects) -> dict[str, Any]:
    """URL arguments naming ``objects``' things. A route with an argument this
    does not know fails here, so a new route cannot slip past the sweep."""
    backoffice = {
        "violation_id": objects.waiting.id,
        "evidence_id": objects.waiting_evidence.id,
        "number": objects.notice.number,
        "officer_id": objects.validator.id,
    }
    portal = {"notice_id": objects.notice.id, "evidence_id": objects.notice_evidence.id}
    known = backoffice if route.namespace == "backoffice" else portal
    unknown = set(route.kwargs) - set(known)
    assert not unknown, f"{route} takes {unknown}: teach tests/security/attack_world.py which object it names"
    return {name: known[name] for name in route.kwargs}


def unknown_officer_id() -> int:
    return (Officer.objects.aggregate(highest=Max("id"))["highest"] or 0) + 1000


def unknown_kwargs(route: Route) -> dict[str, Any]:
    """The same arguments naming nothing that exists (well-formed)."""
    values: dict[str, Any] = {"violation_id": uuid.uuid4(), "evidence_id": uuid.uuid4(), "notice_id": uuid.uuid4()}
    if "number" in route.kwargs:
        values["number"] = unknown_notice_number()
    if "officer_id" in route.kwargs:
        values["officer_id"] = unknown_officer_id()
    return {name: values[name] for name in route.kwargs}


def route_url(route: Route, kwargs: dict[str, Any]) -> str:
    return reverse(route.name, kwargs=kwargs)


def api_url(operation: ApiOperation, objects: RegionObjects | None) -> str:
    """The operation's path with its parameters naming ``objects``' things (unknown ones when None)."""
    values: dict[str, str]
    if objects is None:
        values = {
            "violation_id": str(uuid.uuid4()),
            "number": unknown_notice_number(),
            "provider": "smtp-sink",
            "name": "whatsapp-sim",
        }
    else:
        values = {
            "violation_id": str(objects.waiting.id),
            "number": objects.notice.number,
            "provider": "smtp-sink",
            "name": "whatsapp-sim",  # the webhooks' configuration name
        }
    unknown = set(operation.parameters) - set(values)
    assert not unknown, f"{operation} takes {unknown}: teach tests/security/attack_world.py which object it names"
    path = operation.path
    for name in operation.parameters:
        path = path.replace("{" + name + "}", values[name])
    return path


def state_of_every_decision() -> list[tuple[Any, ...]]:
    """What an authorisation bypass would change: decisions, notices,
    evidence, and who may sign in with what (officer administration and
    password changes)."""
    return [
        *Violation.objects.order_by("id").values_list("id", "status", "decided_by_id", "rejection_reason"),
        *Officer.objects.order_by("id").values_list("id", "is_active", "role", "region_id", "password"),
        (Notice.objects.count(), Evidence.objects.count()),
    ]
