"""Infrastructure faults during a run: the broker restarted, the database's
connections dropped. Real processes throughout: ~30 notices through the
pre-validated intake, a real Celery worker process, the real SMTP sink
(slowed per message so the fault lands mid-run), and the sweeper with its
leases shortened for the test, as Celery beat would run it.

In both cases every notice must end sent (or delivered), none lost, and the
only possible second copy of an email is one a lease expiry explains (the
sweeper gave back the lease of a send whose outcome was never recorded),
always under the same Message-ID as the first.

Each test only means something on the real servers (``make test-postgres``):
on the embedded default it is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone
from kombu import Queue

from cakra.api.intake import EvidenceSubmission, ViolationSubmission, violation_receive
from cakra.audit.models import AuditEvent
from cakra.config.celery import app as celery_app
from cakra.delivery.models import Delivery
from cakra.delivery.tasks import delivery_sweep_stuck_task
from cakra.enforcement.models import Notice
from cakra.simulators.smtp import MailSink
from tests.api.helpers import jpeg_bytes
from tests.e2e.processes import celery_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NOTICES = 30
# Stored at once, answered later: most of a send's time is spent between the
# claim and recording the outcome, where a fault hurts most.
REPLY_DELAY = 0.2
# Leases for the sweeps run by the test (production: minutes). The sending
# lease stays well above one send here (~0.3 s), so a live send is not
# normally taken over.
PENDING_LEASE = 2
SENDING_LEASE = 3
SWEEP_INTERVAL = 1.0
RECOVERY_TIMEOUT = 45
RABBITMQCTL = "/usr/sbin/rabbitmqctl"
DONE_STATUSES = (Delivery.Status.SENT, Delivery.Status.DELIVERED)

needs_rabbitmq = pytest.mark.skipif(
    not django_settings.CELERY_BROKER_URL.startswith("amqp"),
    reason="needs the RabbitMQ broker: runs in make test-postgres",
)
needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL: runs in make test-postgres"
)


@pytest.fixture
def sink(settings, tmp_path):
    with MailSink(
        maildir=tmp_path / "mail",
        dkim_private_key=settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"],
        dkim_selector=settings.CAKRA_EMAIL["DKIM_SELECTOR"],
        reply_delay=REPLY_DELAY,
    ) as mail_sink:
        yield mail_sink


@pytest.fixture
def empty_email_queue():
    """Earlier transactional tests may have left triggers for rows that are gone."""
    with celery_app.connection_for_write() as broker:
        queue = Queue("email").bind(broker.default_channel)
        queue.declare()
        queue.purge()


def issue_notices(*, key, vehicle, prefix: str) -> QuerySet[Delivery]:
    image = jpeg_bytes(size=(320, 240))
    for number in range(NOTICES):
        violation_receive(
            api_key=key,
            submission=ViolationSubmission(
                capture_id=f"{prefix}-{number}",
                camera_id="CAM-INFRA",
                captured_at=timezone.now() - timedelta(hours=1),
                location="Jl. Jend. Sudirman, Jakarta Pusat",
                plate=vehicle.plate,
                article_code="287(1)",
                evidence=(EvidenceSubmission(kind="vehicle", content=image),),
            ),
        )
    deliveries = Delivery.objects.filter(notice__violation__capture_id__startswith=f"{prefix}-")
    assert deliveries.count() == NOTICES  # each trigger was published on its intake's commit
    return deliveries


class Supervisor:
    """One email worker kept running, as a process supervisor would: a worker
    that exits is replaced by a new one."""

    def __init__(self, stack: contextlib.ExitStack, *, sink: MailSink) -> None:
        self._stack = stack
        self._env = {
            "CAKRA_SMTP_HOST": "127.0.0.1",
            "CAKRA_SMTP_PORT": str(sink.smtp_port),
            "CAKRA_SMTP_SECURITY": "none",
        }
        self.restarts = 0
        self._process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        # A worker that exited on its own has no process group left to signal.
        self._stack.enter_context(contextlib.suppress(ProcessLookupError))
        return self._stack.enter_context(celery_worker(queues="email", extra_env=self._env))

    def keep_running(self) -> None:
        if self._process.poll() is not None:
            self.restarts += 1
            self._process = self._start()


def recover(settings, *, deliveries: QuerySet[Delivery], supervisor: Supervisor) -> list[dict[str, object]]:
    """Beat's part, every SWEEP_INTERVAL with short leases, until every delivery is done."""
    settings.CAKRA_SWEEPER = {
        **settings.CAKRA_SWEEPER,
        "PENDING_LEASE_SECONDS": PENDING_LEASE,
        "SENDING_LEASE_SECONDS": SENDING_LEASE,
    }
    reports: list[dict[str, object]] = []

    def all_done() -> bool:
        supervisor.keep_running()
        if deliveries.filter(status__in=DONE_STATUSES).count() == NOTICES:
            return True
        sweep = delivery_sweep_stuck_task.apply()
        assert sweep.successful(), sweep.traceback
        assert isinstance(sweep.result, dict)
        reports.append(sweep.result)
        time.sleep(SWEEP_INTERVAL)
        return False

    wait_for(all_done, timeout=RECOVERY_TIMEOUT, what="every delivery sent after the fault")
    return reports


def assert_each_notice_sent_once(deliveries: QuerySet[Delivery], sink: MailSink) -> None:
    """No notice lost, none sent twice under different Message-IDs, counts add up."""
    by_status = Counter(deliveries.values_list("status", flat=True))
    assert sum(by_status.values()) == NOTICES
    assert set(by_status) <= set(DONE_STATUSES), by_status
    references = set(deliveries.values_list("provider_reference", flat=True))
    assert len(references) == NOTICES
    message_ids = [str(message.parsed()["Message-ID"]) for message in sink.messages()]
    # One distinct Message-ID per notice, each the reference its delivery recorded.
    assert set(message_ids) == references
    # A second copy only where a lease expiry explains it: the sweeper gave
    # back the lease of a send whose outcome was never recorded, and the
    # resend carried the same Message-ID (the receiver folds it).
    lease_expiries = AuditEvent.objects.filter(
        action="delivery.lease_expired", object_id__in=[str(pk) for pk in deliveries.values_list("pk", flat=True)]
    ).count()
    assert len(message_ids) - NOTICES <= lease_expiries
    for delivery in deliveries:
        sent_attempts = delivery.attempts.filter(outcome="sent").count()
        assert 1 <= sent_attempts <= 1 + lease_expiries
    assert Notice.objects.filter(pk__in=deliveries.values("notice_id"), status=Notice.Status.NOTIFIED).count() == (
        NOTICES
    )
    call_command("audit", "verify")


# --- RabbitMQ restarted during a run -----------------------------------------------


def rabbitmqctl(*args: str) -> None:
    subprocess.run([RABBITMQCTL, *args], check=True, capture_output=True, timeout=120)  # noqa: S603 - fixed path


def broker_accepts() -> bool:
    url = urlsplit(django_settings.CELERY_BROKER_URL)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 5672), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def rabbitmq_stopped() -> Iterator[None]:
    """RabbitMQ's application stopped (every connection dropped) for the
    block, and running again afterwards whatever happens in the block."""
    try:
        rabbitmqctl("stop_app")
        assert not broker_accepts()
        yield
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        wait_for(broker_accepts, timeout=60, what="RabbitMQ accepting connections again")


@needs_rabbitmq
def test_a_rabbitmq_restart_mid_run_loses_no_notice_and_sends_each_once(
    settings, sink, empty_email_queue, vehicle, pre_validated_key
):
    key, _token = pre_validated_key
    deliveries = issue_notices(key=key, vehicle=vehicle, prefix="RMQ")

    with contextlib.ExitStack() as stack:
        supervisor = Supervisor(stack, sink=sink)
        wait_for(lambda: sink.count() >= 4, timeout=60, what="the first few sends")
        with rabbitmq_stopped():
            sent_at_stop = deliveries.filter(status__in=DONE_STATUSES).count()
            # The worker is cut off mid-run: its reconnection attempts fail for a while.
            time.sleep(2)
        assert sent_at_stop < NOTICES, "the restart must land mid-run"
        recover(settings, deliveries=deliveries, supervisor=supervisor)

    assert_each_notice_sent_once(deliveries, sink)


# --- PostgreSQL connections dropped ------------------------------------------------

TERMINATE_OTHERS = """
    SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
TERMINATIONS = 3


def admin_connection() -> psycopg.Connection[tuple[Any, ...]]:
    conf = connection.settings_dict
    return psycopg.connect(
        host=conf.get("HOST") or "127.0.0.1",
        port=int(conf.get("PORT") or 5432),
        user=conf.get("USER") or None,
        password=conf.get("PASSWORD") or None,
        dbname=conf["NAME"],
        autocommit=True,
    )


def own_backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


@needs_postgresql
def test_dropped_database_connections_mid_run_lose_no_notice_and_send_each_once(
    settings, sink, empty_email_queue, vehicle, pre_validated_key
):
    key, _token = pre_validated_key
    deliveries = issue_notices(key=key, vehicle=vehicle, prefix="PGX")
    test_pid = own_backend_pid()

    with contextlib.ExitStack() as stack:
        supervisor = Supervisor(stack, sink=sink)
        wait_for(lambda: sink.count() >= 3, timeout=60, what="the first few sends")
        terminated: set[int] = set()
        with admin_connection() as admin:
            for round_number in range(TERMINATIONS):
                if round_number:
                    time.sleep(1)
                rows = admin.execute(TERMINATE_OTHERS).fetchall()
                terminated |= {int(pid) for pid, done in rows if done}
        # The worker lost its connection while it was sending, not only this test.
        assert terminated - {test_pid}
        # This test's own connection was dropped too: open a new one.
        connection.close()
        assert deliveries.filter(status__in=DONE_STATUSES).count() < NOTICES, "the drops must land mid-run"
        recover(settings, deliveries=deliveries, supervisor=supervisor)

    assert_each_notice_sent_once(deliveries, sink)
