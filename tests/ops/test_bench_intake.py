"""The bench's intake driver: batch bodies sent as pieces, the photos' encoded text shared by every batch."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cakra.ops.bench.config import BenchConfig
from cakra.ops.bench.driver import ARTICLES, intake_batches, intake_run
from cakra.ops.bench.photos import photo_fragments
from cakra.ops.bench.seeding import plate_for_index

POOL = [b"\xff\xd8\xff photo one", b"\xff\xd8\xff photo two /+=", b"\x00\xff\xfe"]


def test_each_body_is_the_json_batch_of_its_captures():
    fragments = photo_fragments(POOL)
    bodies = list(intake_batches(notices=7, batch_size=3, fragments=fragments, run_id="r1"))

    documents = [json.loads(b"".join(parts)) for parts in bodies]
    assert [len(document["violations"]) for document in documents] == [3, 3, 1]
    items = [item for document in documents for item in document["violations"]]
    assert [item["capture_id"] for item in items] == [f"BENCH-r1-{i}" for i in range(7)]
    assert [item["plate"] for item in items] == [plate_for_index(i) for i in range(7)]
    assert all(item["article"] in ARTICLES for item in items)
    assert set(items[0]) == {"capture_id", "camera_id", "captured_at", "location", "plate", "article", "evidence"}
    assert [base64.b64decode(item["evidence"][0]["content_base64"]) for item in items] == [
        POOL[i % len(POOL)] for i in range(7)
    ]


def test_the_photos_text_is_shared_never_copied_into_a_body():
    fragments = photo_fragments(POOL)
    (parts,) = intake_batches(notices=3, batch_size=3, fragments=fragments, run_id="r2")
    shared = [part for part in parts if any(part is fragment for fragment in fragments)]
    assert len(shared) == 3
    # What each batch owns besides the shared photos: its items' own fields only.
    assert sum(len(part) for part in parts if part not in shared) < 1000


def test_the_driver_sends_each_body_whole_with_its_length():
    """Against a stand-in server: each request carries Content-Length (no chunked encoding) and the whole body."""
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            received.append({"chunked": "Transfer-Encoding" in self.headers, "items": body["violations"]})
            answer = json.dumps({"created": len(body["violations"]), "replayed": 0, "rejected": 0}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        totals = intake_run(
            config=BenchConfig(notices=5, batch_size=2),
            port=server.server_address[1],
            token="t",
            pool=POOL,
            run_id="r4",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert totals["created"] == 5
    assert not any(request["chunked"] for request in received)
    captures = sorted(item["capture_id"] for request in received for item in request["items"])  # type: ignore[attr-defined]
    assert captures == sorted(f"BENCH-r4-{i}" for i in range(5))
