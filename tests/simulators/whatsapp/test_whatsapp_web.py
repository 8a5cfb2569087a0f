"""The simulator's pages: each recipient's phone screen, escaped, and the
reply form, accepted from the simulator's own pages only."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.simulators.whatsapp.cloud import PHONE_NUMBER_ID, VERIFIED_NAME, send, template_message

CITIZEN = "6281234567890"
HOSTILE = '<script>alert("x")</script>'


def get(sim, path):
    with urllib.request.urlopen(f"{sim.base_url}{path}", timeout=5) as response:  # noqa: S310
        return response.status, response.headers, response.read().decode()


def post_form(sim, path, form, headers):
    request = urllib.request.Request(f"{sim.base_url}{path}", data=form.encode(), method="POST")  # noqa: S310
    for name, value in headers.items():
        request.add_header(name, value)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect()).open(request, timeout=5) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers


def test_the_phone_page_shows_the_conversation_escaped(sim):
    send(sim, template_message(f"+{CITIZEN}", HOSTILE, "B 1 XYZ", "etle.korlantas.polri.go.id"))
    sim.inbound(sender=CITIZEN, text=f"Balasan {HOSTILE}", phone_number_id=PHONE_NUMBER_ID, name=HOSTILE)
    sim.wait_webhooks_idle()

    status, headers, page = get(sim, f"/phone/{CITIZEN}")

    assert status == 200
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert VERIFIED_NAME in page
    assert 'class="verified"' in page
    assert "Balasan" in page
    assert 'class="read"' in page  # the template's ticks: read
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


def test_the_index_lists_recipients(sim):
    send(sim, template_message(f"+{CITIZEN}", "a", "b", "c"))

    status, _, page = get(sim, "/")

    assert status == 200
    assert f'href="/phone/{CITIZEN}"' in page
    assert "Magic test numbers" in page


def test_the_reply_form_posts_an_inbound_message(sim, receiver):
    origin = f"http://127.0.0.1:{sim.http_port}"
    status, headers = post_form(
        sim,
        f"/phone/{CITIZEN}/reply",
        f"phone_number_id={PHONE_NUMBER_ID}&name=Budi&text=Apakah+ini+asli%3F",
        {"Origin": origin, "Content-Type": "application/x-www-form-urlencoded"},
    )

    assert status == 303
    assert headers["Location"] == f"/phone/{CITIZEN}"
    receiver.wait_for(lambda r: r.accepted())
    [message] = receiver.accepted()[0]["body"]["entry"][0]["changes"][0]["value"]["messages"]
    assert message["text"] == {"body": "Apakah ini asli?"}


def test_a_reply_form_from_another_site_is_refused(sim, receiver):
    for headers in (
        {"Origin": "http://attacker.example", "Content-Type": "application/x-www-form-urlencoded"},
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/x-www-form-urlencoded"},
    ):
        status, _ = post_form(sim, f"/phone/{CITIZEN}/reply", f"phone_number_id={PHONE_NUMBER_ID}&text=x", headers)
        assert status == 403
    assert sim.wait_webhooks_idle()
    assert receiver.posts == []


def test_pages_under_another_host_name_are_refused(sim):
    request = urllib.request.Request(f"{sim.base_url}/", headers={"Host": "rebound.example:80"})  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310
    with refused.value:
        assert refused.value.code == 421
