"""The sink's pages: newest first, escaped, on loopback names only."""

from __future__ import annotations

import json

from tests.simulators.smtp.mail import dkim_signed, http_get, raw_message, smtp_submit


def test_the_json_list_is_newest_first_with_the_dkim_verdict(sink, dkim_pem):
    smtp_submit(sink, dkim_signed(dkim_pem, raw_message(subject="pertama")))
    smtp_submit(sink, raw_message(subject="kedua"))

    status, headers, body = http_get(sink, "/messages.json")

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    listed = json.loads(body)
    assert [(m["subject"], m["dkim_pass"]) for m in listed] == [("kedua", False), ("pertama", True)]
    assert set(listed[0]) == {"id", "from", "to", "subject", "dkim_pass", "dkim_domain", "received_at"}
    assert listed[1]["to"] == "pemilik@example.co.id"


def test_the_lists_read_only_the_newest_messages_asked_for(sink):
    for subject in ("satu", "dua", "tiga"):
        smtp_submit(sink, raw_message(subject=subject))

    _, _, newest = http_get(sink, "/messages.json?limit=2")
    _, _, page = http_get(sink, "/?limit=1")

    assert [m["subject"] for m in json.loads(newest)] == ["tiga", "dua"]
    assert b"Showing the newest 1 of 3" in page
    assert b"tiga" in page
    assert b"satu" not in page
    for bad in ("0", "-1", "abc", "10001"):
        assert http_get(sink, f"/messages.json?limit={bad}")[0] == 400, bad


def test_the_pages_list_and_show_messages_escaped(sink, dkim_pem):
    smtp_submit(sink, dkim_signed(dkim_pem, raw_message(subject="<script>alert(1)</script>", body="<b>tebal</b>\n")))
    [stored] = sink.messages()

    index_status, index_headers, index = http_get(sink, "/")
    show_status, _, show = http_get(sink, f"/messages/{stored.id}")
    raw_status, _, raw = http_get(sink, f"/messages/{stored.id}/raw")

    assert index_status == show_status == raw_status == 200
    assert b"simulated DNS" in index
    assert b"DKIM pass" in index
    assert b"<script>" not in index
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in index
    assert b"&lt;b&gt;tebal&lt;/b&gt;" in show
    assert b"text/plain" in show
    assert raw == stored.raw
    assert "default-src 'none'" in index_headers["Content-Security-Policy"]
    assert index_headers["X-Content-Type-Options"] == "nosniff"


def test_unknown_or_malformed_message_ids_are_not_found(sink):
    for path in ("/messages/nope", "/messages/..%2F..%2Fetc%2Fpasswd", "/messages/%2e%2e", "/other"):
        status, _, _ = http_get(sink, path)
        assert status == 404, path


def test_the_pages_refuse_a_foreign_host_name(sink):
    # DNS rebinding: a web page re-pointing its own name at 127.0.0.1.
    status, _, body = http_get(sink, "/messages.json", host="attacker.example")

    assert status == 421
    assert b"[" not in body
    assert http_get(sink, "/", host=f"localhost:{sink.http_port}")[0] == 200
