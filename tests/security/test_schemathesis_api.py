"""Schemathesis against the API from its own OpenAPI document (/api/v1/openapi.json).

Every operation is called in-process through Django's WSGI application, with
the examples, coverage (boundary values, wrong types, unsupported methods) and
fuzzing phases, once with a real API key and once without credentials. Every
response must pass every check the installed schemathesis offers: no 5xx,
status codes, content types, headers and bodies as documented, a 405 whose
``Allow`` lists exactly the documented methods, schema-violating requests
refused, schema-valid ones accepted or refused only for reasons a JSON schema
cannot state (see ``schema_valid_requests_are_accepted``).

The receipts webhook is exercised unsigned (its signature is an HMAC over the
exact body, which generated requests cannot carry): every answer must be the
documented 401. Signed fuzzing of that route is in test_fuzz_public_inputs.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.factories import ApiKeyFactory
from tests.security.limits import limits_reset

# Loaded once, at collection, from the running application: what clients
# download is what is tested.
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
# The same requests on every run: hypothesis derandomised, and no fresh
# random seed from schemathesis.
schema.config.generation.update(deterministic=True)

SCANNER_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    # The database and API key fixtures are function-scoped on purpose: each
    # operation's examples share one transaction, rolled back at the end.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Refusals of schema-valid input for reasons no JSON schema can state: what the
# decoded image is (magic bytes, size, pixels), the plate's grammar per region,
# the article catalogue in the database, the capture time window around now.
BEYOND_SCHEMA_CODES = {
    "unsupported_media_type",
    "invalid_image",
    "image_too_large",
    "image_dimensions_exceeded",
    "invalid_plate",
    "unknown_article",
}
BEYOND_SCHEMA_FIELD_CODES = {"invalid_plate", "datetime_future", "datetime_too_old"}
# Free text from machines: the schema declares the characters (a pattern) and
# the length; that it holds no link, domain, e-mail address or phone number,
# and is more than spaces, is about content, which no JSON schema states.
UNDECLARED_FIELD_CODES = {
    ("location", "text_link"),
    ("location", "text_phone"),
    ("location", "text_empty"),
    ("capture_id", "text_link"),
    ("camera_id", "text_link"),
}
# What positive_data_acceptance accepts anyway (schemathesis's defaults).
ACCEPTED_STATUSES = {401, 403, 404, 409, 429}
HTTP_BAD_REQUEST = 400


def schema_valid_requests_are_accepted(ctx, response, case) -> bool | None:
    """positive_data_acceptance, except for the refusals in BEYOND_SCHEMA_CODES.

    Anything else refused although the schema admits it is a defect of the
    schema (it promises more than the API takes), such as evidence that is
    not base64 while the schema admitted any string.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if response.status_code < HTTP_BAD_REQUEST or response.status_code in ACCEPTED_STATUSES:
        return None
    error = response.json().get("error", {})
    if error.get("code") in BEYOND_SCHEMA_CODES:
        return None
    fields = error.get("fields") or []
    if error.get("code") == "validation_error" and fields:
        unexplained = [
            item
            for item in fields
            if item.get("code") not in BEYOND_SCHEMA_FIELD_CODES
            and (item.get("field"), item.get("code")) not in UNDECLARED_FIELD_CODES
        ]
        if not unexplained:
            return None
    message = f"schema-valid request refused {response.status_code}: {error}"
    raise AssertionError(message)


@pytest.fixture
def in_process_api(db) -> Iterator[None]:
    """Calls through the WSGI handler keep the test's database connection.

    Django's handler closes old connections at the start and end of every
    request, which would close the test's transaction under it; Django's own
    test client disconnects the same receivers for the same reason.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token(in_process_api, region) -> str:
    return ApiKeyFactory.with_token(region=region)[1]


def _call(case, headers: dict[str, str] | None = None) -> None:
    # Every case starts with fresh rate-limit windows: hundreds of requests
    # from one address would otherwise meet the authentication-failure limit
    # (a documented 429, tested in tests/api/test_auth.py) and test only that.
    limits_reset()
    response = case.call_and_validate(
        headers=headers,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[schema_valid_requests_are_accepted],
    )
    assert response.status_code < 500


@schema.parametrize()
@SCANNER_SETTINGS
def test_api_conforms_to_its_schema_with_an_api_key(case, token):
    _call(case, headers={"Authorization": f"Bearer {token}"})


@schema.parametrize()
@SCANNER_SETTINGS
def test_api_conforms_to_its_schema_without_credentials(case, in_process_api):
    _call(case)
