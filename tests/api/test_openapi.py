"""The OpenAPI document describes every field and every error; the docs page stays off."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cakra.api.schemas import BASE64_PATTERN
from cakra.enforcement.evidence import EvidenceEncodingError, evidence_decode_base64

ERROR_STATUSES = {"400", "401", "409", "413", "415", "422", "429"}


@pytest.fixture
def schema(client, db):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def _resolve(schema, node):
    ref = node.get("$ref")
    if ref:
        return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return node


def test_intake_documents_success_and_every_error(schema):
    post = schema["paths"]["/api/v1/violations"]["post"]
    assert {"200", "201"} | ERROR_STATUSES <= set(post["responses"])
    for status in ERROR_STATUSES:
        content = post["responses"][status]["content"]["application/json"]["schema"]
        assert _resolve(schema, content)["title"] == "ErrorOut"
    assert post["security"] == [{"ApiKeyAuth": []}]
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {"type": "http", "scheme": "bearer"}


def test_status_views_document_404(schema):
    assert "404" in schema["paths"]["/api/v1/violations/{violation_id}"]["get"]["responses"]
    assert "404" in schema["paths"]["/api/v1/notices/{number}"]["get"]["responses"]


@pytest.mark.parametrize(
    "name", ["ViolationIn", "EvidenceIn", "ViolationOut", "NoticeOut", "DeliveryOut", "ErrorOut", "ErrorDetailOut"]
)
def test_every_field_is_described(schema, name):
    properties = schema["components"]["schemas"][name]["properties"]
    for field, spec in properties.items():
        assert spec.get("description"), f"{name}.{field} has no description"


def test_input_fields_carry_examples_and_constraints(schema):
    violation = schema["components"]["schemas"]["ViolationIn"]
    assert violation["additionalProperties"] is False
    for field, spec in violation["properties"].items():
        if field != "evidence":
            assert spec.get("examples"), f"ViolationIn.{field} has no example"
    assert violation["properties"]["capture_id"]["pattern"] == "^[A-Za-z0-9._:-]{1,64}$"
    assert violation["properties"]["captured_at"]["format"] == "date-time"


def test_the_docs_page_is_off(client, db):
    # Its scripts come from a CDN the Content-Security-Policy blocks.
    assert client.get("/api/v1/docs").status_code == 404


def test_evidence_content_is_declared_as_base64(schema):
    content = schema["components"]["schemas"]["EvidenceIn"]["properties"]["content_base64"]
    assert content["pattern"] == BASE64_PATTERN
    assert content["contentEncoding"] == "base64"
    assert content["format"] == "byte"
    for example in content["examples"]:
        assert re.fullmatch(BASE64_PATTERN, example)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    text=st.one_of(
        st.from_regex(BASE64_PATTERN, fullmatch=True),
        st.text(alphabet=string.ascii_letters + string.digits + "+/=-_ \n.", max_size=24),
        st.text(max_size=12),
    )
)
def test_the_declared_pattern_admits_exactly_what_the_decoder_accepts(text):
    """A schema-valid request is not refused for its encoding, and the schema admits no text the decoder refuses."""
    try:
        evidence_decode_base64(text=text, field="content_base64")
    except EvidenceEncodingError:
        accepted = False
    else:
        accepted = True
    assert accepted == bool(re.fullmatch(BASE64_PATTERN, text))
