"""The driver: captures posted to the batch API over HTTP, as the ETLE back office would."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.client import HTTPConnection, HTTPException

from django.utils import timezone

from cakra.ops.bench.config import BenchConfig
from cakra.ops.bench.photos import photo_fragments
from cakra.ops.bench.seeding import plate_for_index

ARTICLES = ["287(1)", "287(2)", "287(5)", "289", "291", "283"]
# Tries of one batch when the connection fails (the web server restarting a worker).
CONNECT_ATTEMPTS = 5
HTTP_OK = 200
HTTP_SERVER_ERROR = 500
# Longest pause between two tries of a batch the server failed.
SERVER_ERROR_PAUSE_MAX = 5.0


def intake_batches(*, notices: int, batch_size: int, fragments: list[bytes], run_id: str) -> Iterator[list[bytes]]:
    """The batch bodies of the run, each as the pieces it is sent in (a JSON
    document once joined): each item's own fields, serialised here, and the
    shared, already encoded text of its photo, never copied into the body."""
    captured = (timezone.localtime() - timedelta(hours=1)).isoformat()
    rng = random.Random(run_id)  # noqa: S311 - load shape, not security
    evidence_open = ', "evidence": [{"kind": "vehicle", "content_base64": '
    evidence_close = "}]}"
    for start in range(0, notices, batch_size):
        parts: list[bytes] = []
        between = '{"violations": ['
        for i in range(start, min(notices, start + batch_size)):
            fields = {
                "capture_id": f"BENCH-{run_id}-{i}",
                "camera_id": f"BENCH-{i % 50:03d}",
                "captured_at": captured,
                "location": "Jl. Jend. Sudirman, Jakarta",
                "plate": plate_for_index(i),
                "article": ARTICLES[rng.randrange(len(ARTICLES))],
            }
            # The item's fields, its object left open for the evidence.
            parts.append((between + json.dumps(fields)[:-1] + evidence_open).encode())
            parts.append(fragments[i % len(fragments)])
            between = evidence_close + ", "
        parts.append((evidence_close + "]}").encode())
        yield parts


class _BatchPoster:
    """Posts batch bodies from several threads, one kept-alive connection per
    thread, and adds up the API's answers."""

    def __init__(self, *, port: int, token: str, server_error_retries: int) -> None:
        self.port = port
        self.token = token
        self.server_error_retries = server_error_retries
        self.totals: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.local = threading.local()
        self.connections: list[HTTPConnection] = []

    def connect(self) -> HTTPConnection:
        conn = HTTPConnection("127.0.0.1", self.port, timeout=600)
        with self.lock:
            self.connections.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.connections:
            conn.close()

    def exchange(self, body: list[bytes], headers: dict[str, str]) -> tuple[int, bytes] | None:
        """One answer to the body, trying again on a broken connection; None if none came."""
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                self.local.conn.request("POST", "/api/v1/violations/batch", body=body, headers=headers)
                response = self.local.conn.getresponse()
                return response.status, response.read()
            except (OSError, HTTPException):
                self.local.conn.close()
                self.local.conn = self.connect()
                time.sleep(0.5 * (attempt + 1))
        return None

    def post(self, body: list[bytes]) -> None:
        if not hasattr(self.local, "conn"):
            self.local.conn = self.connect()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            # Given, so that http.client sends the pieces as they are (not chunked).
            "Content-Length": str(sum(len(part) for part in body)),
        }
        answer = self.exchange(body, headers)
        retries = 0
        while answer is not None and answer[0] >= HTTP_SERVER_ERROR and retries < self.server_error_retries:
            retries += 1
            with self.lock:
                self.totals["batch_retried"] += 1
            time.sleep(min(SERVER_ERROR_PAUSE_MAX, 0.5 * retries))
            answer = self.exchange(body, headers)
        with self.lock:
            if answer is None:
                self.totals["batch_failed"] += 1
                return
            status, payload = answer
            if status != HTTP_OK:
                self.totals[f"batch_http_{status}"] += 1
                return
            result = json.loads(payload)
            self.totals["created"] += result.get("created", 0)
            self.totals["replayed"] += result.get("replayed", 0)
            self.totals["rejected"] += result.get("rejected", 0)


def intake_run(
    *, config: BenchConfig, port: int, token: str, pool: list[bytes], run_id: str, server_error_retries: int = 0
) -> Counter[str]:
    """Post every batch of the run; the totals of the API's answers.

    ``server_error_retries``: how many times a batch the server failed (5xx)
    is posted again, as a back office would under faults; a replayed batch
    answers with the captures it already holds (``replayed``). Without it a
    failed batch is counted and left.
    """
    fragments = photo_fragments(pool)
    poster = _BatchPoster(port=port, token=token, server_error_retries=server_error_retries)
    # At most two batches per thread exist at a time, and a batch holds only
    # its items' own fields (the photos' text is shared): the driver's memory
    # does not grow with --notices.
    in_flight = threading.BoundedSemaphore(config.intake_threads * 2)

    def post_and_release(body: list[bytes]) -> None:
        try:
            poster.post(body)
        finally:
            in_flight.release()

    with ThreadPoolExecutor(max_workers=config.intake_threads) as executor:
        for body in intake_batches(
            notices=config.notices, batch_size=config.batch_size, fragments=fragments, run_id=run_id
        ):
            in_flight.acquire()
            executor.submit(post_and_release, body)
    poster.close()
    return poster.totals
