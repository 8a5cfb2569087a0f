"""Providers configured like DATABASES: the settings built from the environment,
the start-up check, priorities, and GOV.UK Notify-style failover by health."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cakra.delivery.channels import adapter_for_provider, providers_for_channel
from cakra.delivery.channels import store as store_module
from cakra.delivery.channels.health import (
    provider_health,
    provider_health_reset_process,
    provider_outcome_record,
)
from cakra.delivery.channels.provider_settings import providers_from_environment
from cakra.delivery.channels.store import CacheStore, SharedStore
from cakra.delivery.checks import providers_check
from cakra.delivery.models import Delivery
from cakra.delivery.ratelimit import sender_token_acquire
from cakra.delivery.routing import provider_answer_record, provider_choose
from tests.delivery.helpers import next_attempt_is_the_last, send

SMTP = "cakra.delivery.channels.email.SmtpEmailAdapter"


def smtp_entry(*, priority=10, identity="smtp:relay-main", port=25, rate=200, burst=400, **options):
    return {
        "CHANNEL": "email",
        "BACKEND": SMTP,
        "PRIORITY": priority,
        "SENDER_IDENTITY": identity,
        "RATE_PER_SECOND": rate,
        "BURST": burst,
        "OPTIONS": {"HOST": "127.0.0.1", "PORT": port, "SECURITY": "none", "TIMEOUT": 2, **options},
    }


# --- CAKRA_PROVIDERS from the environment -------------------------------------------


def test_the_default_settings_define_the_sink_relay_and_pass_the_check(settings):
    # Outside production the phone channels' simulators are providers too.
    assert set(settings.CAKRA_PROVIDERS) >= {"smtp", "whatsapp"}
    entry = settings.CAKRA_PROVIDERS["smtp"]  # the provider name deliveries and receipts carry
    assert (entry["CHANNEL"], entry["BACKEND"], entry["PRIORITY"]) == ("email", SMTP, 10)
    assert entry["RATE_PER_SECOND"] > 0
    assert entry["OPTIONS"]["DKIM_PRIVATE_KEY"] == settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"]
    assert providers_check() == []


def test_json_adds_providers_changes_defaults_by_key_and_removes_with_null():
    defaults = {"smtp": smtp_entry(HOST="sink"), "old": smtp_entry(priority=99)}
    overrides = {
        "smtp": {"PRIORITY": 30, "OPTIONS": {"PORT": 2525}},
        "smtp-backup": {
            "CHANNEL": "email",
            "BACKEND": SMTP,
            "PRIORITY": 20,
            "SENDER_IDENTITY": "smtp:relay-backup",
            "RATE_PER_SECOND": 50,
            "OPTIONS": {"HOST": "relay2.example.go.id", "PORT": 587},
        },
        "old": None,
    }
    environ = {"CAKRA_PROVIDERS_JSON": json.dumps(overrides)}

    providers = providers_from_environment(defaults=defaults, environ=environ)

    assert sorted(providers) == ["smtp", "smtp-backup"]
    assert providers["smtp"]["PRIORITY"] == 30
    assert providers["smtp"]["OPTIONS"] == {**defaults["smtp"]["OPTIONS"], "PORT": 2525}  # merged, not replaced
    assert providers["smtp-backup"]["OPTIONS"]["HOST"] == "relay2.example.go.id"
    assert defaults["smtp"]["PRIORITY"] == 10  # the defaults themselves are untouched


def test_secrets_are_referenced_by_environment_variable_name():
    environ = {
        "CAKRA_PROVIDERS_JSON": '{"smtp": {"OPTIONS": {"USERNAME": "cakra", "PASSWORD_ENV": "RELAY_PASSWORD"}}}',
        "RELAY_PASSWORD": "s3cret-from-vault",
    }

    providers = providers_from_environment(defaults={"smtp": smtp_entry()}, environ=environ)

    assert providers["smtp"]["OPTIONS"]["PASSWORD"] == "s3cret-from-vault"
    assert "PASSWORD_ENV" not in providers["smtp"]["OPTIONS"]


def test_a_missing_secret_variable_stops_start_up_naming_the_variable():
    environ = {"CAKRA_PROVIDERS_JSON": '{"smtp": {"OPTIONS": {"PASSWORD_ENV": "RELAY_PASSWORD"}}}'}

    with pytest.raises(ImproperlyConfigured, match="RELAY_PASSWORD"):
        providers_from_environment(defaults={"smtp": smtp_entry()}, environ=environ)


@pytest.mark.parametrize(
    "raw",
    ['{"smtp": {"OPTIONS": {"PASSWORD": "hunter2"', '["smtp"]', '{"smtp": "hunter2"}'],
)
def test_malformed_json_is_refused_without_echoing_it(raw):
    with pytest.raises(ImproperlyConfigured) as raised:
        providers_from_environment(defaults={}, environ={"CAKRA_PROVIDERS_JSON": raw})

    assert "hunter2" not in str(raised.value)


# --- The start-up system check -------------------------------------------------------


def _with(**changes):
    return lambda providers: {"smtp-main": {**providers["smtp-main"], **changes}}


def _with_options(**changes):
    return lambda providers: {
        "smtp-main": {**providers["smtp-main"], "OPTIONS": {**providers["smtp-main"]["OPTIONS"], **changes}}
    }


def _without(key):
    return lambda providers: {"smtp-main": {k: v for k, v in providers["smtp-main"].items() if k != key}}


BAD_CONFIGS = {
    "empty": (lambda _: {}, "cakra.E101"),
    "not a dictionary": (lambda _: ["smtp-main"], "cakra.E101"),
    "name with spaces": (lambda providers: {"SMTP Main": providers["smtp-main"]}, "cakra.E102"),
    "name longer than the column": (lambda providers: {"s" * 33: providers["smtp-main"]}, "cakra.E102"),
    "settings not a dictionary": (lambda _: {"smtp-main": "smtp://relay"}, "cakra.E103"),
    "required key missing": (_without("PRIORITY"), "cakra.E103"),
    "misspelt key": (lambda providers: {"smtp-main": {**providers["smtp-main"], "PRIORTY": 1}}, "cakra.E103"),
    "unknown channel": (_with(CHANNEL="pigeon"), "cakra.E104"),
    "backend not importable": (_with(BACKEND="cakra.nowhere.PigeonAdapter"), "cakra.E105"),
    "backend not an adapter": (_with(BACKEND="cakra.delivery.channels.base.SenderIdentity"), "cakra.E106"),
    "backend of another channel": (_with(CHANNEL="sms"), "cakra.E106"),
    "priority as text": (_with(PRIORITY="10"), "cakra.E107"),
    "priority as boolean": (_with(PRIORITY=True), "cakra.E107"),
    "identity with a space": (_with(SENDER_IDENTITY="smtp relay"), "cakra.E108"),
    "empty identity": (_with(SENDER_IDENTITY=""), "cakra.E108"),
    "zero rate": (_with(RATE_PER_SECOND=0), "cakra.E109"),
    "negative rate": (_with(RATE_PER_SECOND=-5), "cakra.E109"),
    "rate as text": (_with(RATE_PER_SECOND="fast"), "cakra.E109"),
    "fractional burst": (_with(BURST=2.5), "cakra.E109"),
    "options not a dictionary": (_with(OPTIONS="host=relay"), "cakra.E110"),
    "host missing": (
        lambda providers: {"smtp-main": {**providers["smtp-main"], "OPTIONS": {"PORT": 25}}},
        "cakra.E110",
    ),
    "port not a number": (_with_options(PORT="smtp"), "cakra.E110"),
    "port out of range": (_with_options(PORT=70000), "cakra.E110"),
    "unknown transport security": (_with_options(SECURITY="tls-maybe"), "cakra.E110"),
    "zero timeout": (_with_options(TIMEOUT=0), "cakra.E110"),
    "broken dkim key": (_with_options(DKIM_PRIVATE_KEY="not a key"), "cakra.E110"),
    "password without user": (_with_options(PASSWORD="s3cret-value"), "cakra.E110"),
    "one identity, two limits": (
        lambda providers: {"smtp-main": providers["smtp-main"], "smtp-twin": {**providers["smtp-main"], "BURST": 9}},
        "cakra.E111",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_the_check_reports_each_broken_provider_config_with_its_id(settings, case):
    make_bad, expected = BAD_CONFIGS[case]
    settings.CAKRA_PROVIDERS = make_bad({"smtp-main": smtp_entry()})

    messages = providers_check()

    # (A broken sole email provider also leaves the email channel unserved: W101.)
    assert {message.id for message in messages if message.is_serious()} == {expected}
    assert not any("s3cret-value" in str(message) for message in messages)  # values never quoted


def test_a_valid_multi_provider_config_passes(settings):
    settings.CAKRA_PROVIDERS = {
        "smtp-main": smtp_entry(),
        "smtp-backup": smtp_entry(priority=20, identity="smtp:relay-backup", rate=0.5, burst=1),
        "smtp-main-route-2": smtp_entry(priority=30),  # the same identity with the same limit is fine
    }

    assert providers_check() == []


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("CAKRA_PROVIDER_HEALTH", {"MAX_ERROR_RATE": 2}),
        ("CAKRA_PROVIDER_HEALTH", {"WINDOW_SECONDS": 5, "BUCKET_SECONDS": 10}),
        ("CAKRA_PROVIDER_HEALTH", {"MIN_ATTEMPS": 20}),
        ("CAKRA_SENDER_RATE_LIMITS", {"PATIENCE_SECONDS": -1}),
        ("CAKRA_SENDER_RATE_LIMITS", []),
    ],
)
def test_the_check_reports_a_broken_health_or_rate_limit_policy(settings, setting, value):
    setattr(settings, setting, value)

    assert [message.id for message in providers_check()] == ["cakra.E112"]


def test_an_enabled_channel_without_a_provider_is_warned_about(settings):
    settings.CAKRA_ENABLED_CHANNELS = ["email", "post"]  # no provider sends letters yet

    [message] = providers_check()

    assert (message.id, message.is_serious()) == ("cakra.W101", False)
    assert "'post'" in message.msg


def test_the_check_runs_with_the_management_commands(settings):
    settings.CAKRA_PROVIDERS = {"smtp": {**smtp_entry(), "BACKEND": "cakra.nowhere.PigeonAdapter"}}

    with pytest.raises(SystemCheckError, match=r"cakra\.E105"):
        call_command("check")


def test_a_worker_that_skipped_the_check_still_refuses_a_broken_config(db, settings):
    settings.CAKRA_PROVIDERS = {"smtp": {**smtp_entry(), "PRIORITY": "first"}}

    with pytest.raises(ImproperlyConfigured, match=r"cakra\.E107"):
        provider_choose("email")


# --- Choosing a provider: priority, then health ---------------------------------------


@pytest.fixture
def two_relays(settings, mail_sink, closed_port, unique_name, store_backend, provider_state):
    """A primary relay that is down (priority 10) and a working backup (20),
    with names of their own (Redis state outlives a test)."""
    primary, backup = unique_name("primary"), unique_name("backup")
    settings.CAKRA_PROVIDERS = {
        primary: smtp_entry(priority=10, identity=unique_name("smtp"), port=closed_port),
        backup: smtp_entry(priority=20, identity=unique_name("smtp"), port=mail_sink.smtp_port),
    }
    settings.CAKRA_PROVIDER_HEALTH = {**settings.CAKRA_PROVIDER_HEALTH, "MIN_ATTEMPTS": 3}
    return primary, backup


def test_providers_are_tried_by_priority_while_healthy(db, two_relays):
    primary, backup = two_relays

    assert [provider.name for provider in providers_for_channel("email")] == [primary, backup]
    assert provider_choose("email").name == primary


def test_a_retry_goes_to_the_other_provider(two_relays, delivery, mail_sink):
    primary, backup = two_relays

    assert send(delivery).retries  # the primary is down
    send(delivery)

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    assert delivery.provider == backup
    attempts = list(delivery.attempts.order_by("number").values_list("number", "provider", "outcome"))
    assert attempts == [(1, primary, "retryable"), (2, backup, "sent")]
    assert len(mail_sink.messages()) == 1


def test_a_failing_provider_loses_priority_for_every_worker_then_recovers(
    settings, two_relays, delivery, mail_sink, clock
):
    primary, backup = two_relays
    settings.CAKRA_PROVIDER_HEALTH = {
        **settings.CAKRA_PROVIDER_HEALTH,
        "WINDOW_SECONDS": 1,
        "BUCKET_SECONDS": 0.5,
    }
    for _ in range(3):  # what the sending service records after each failed attempt
        provider_outcome_record(provider=primary, outcome="retryable")
    provider_health_reset_process()  # another worker: it knows only what the shared store holds

    assert provider_health([primary])[primary].errors == 3
    assert provider_choose("email").name == backup
    send(delivery)  # a first attempt, straight to the backup
    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider) == (Delivery.Status.SENT, backup)

    clock.advance(1.05)  # the failures age out of the window

    assert provider_choose("email").name == primary


def test_a_bounced_recipient_does_not_count_against_the_provider(db, two_relays):
    primary, _backup = two_relays
    for _ in range(10):
        provider_outcome_record(provider=primary, outcome="permanent")
        provider_outcome_record(provider=primary, outcome="sent")

    health = provider_health([primary])[primary]
    assert (health.attempts, health.errors) == (20, 0)
    assert provider_choose("email").name == primary


def test_throttling_counts_against_the_provider(db, two_relays):
    primary, backup = two_relays
    for _ in range(3):
        provider_outcome_record(provider=primary, outcome="throttled")

    assert provider_choose("email").name == backup


def test_too_few_attempts_or_a_low_error_rate_keep_the_priority(db, two_relays):
    primary, _backup = two_relays
    for _ in range(2):  # below MIN_ATTEMPTS (3)
        provider_outcome_record(provider=primary, outcome="retryable")
    assert provider_choose("email").name == primary

    for _ in range(2):  # 2 errors out of 4: 50 %, not more than MAX_ERROR_RATE
        provider_outcome_record(provider=primary, outcome="sent")
    assert provider_choose("email").name == primary


def test_when_every_provider_is_degraded_priority_decides(db, two_relays):
    primary, backup = two_relays
    for name in (primary, backup):
        for _ in range(3):
            provider_outcome_record(provider=name, outcome="retryable")

    assert provider_choose("email").name == primary


def test_a_provider_with_broken_options_fails_only_its_own_sends(settings, two_relays, delivery):
    primary, backup = two_relays
    entry = settings.CAKRA_PROVIDERS[primary]
    settings.CAKRA_PROVIDERS = {
        **settings.CAKRA_PROVIDERS,
        primary: {**entry, "OPTIONS": {**entry["OPTIONS"], "SECURITY": "carrier-pigeon"}},
    }

    assert send(delivery).retries
    send(delivery)

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    attempts = list(delivery.attempts.order_by("number").values_list("provider", "outcome", "error"))
    assert attempts == [(primary, "retryable", "internal ImproperlyConfigured"), (backup, "sent", "")]


def test_adapters_are_built_once_per_process_and_rebuilt_when_settings_change(db, settings, two_relays):
    primary, _backup = two_relays
    adapter = adapter_for_provider(primary)

    assert adapter_for_provider(primary) is adapter
    assert adapter.name == primary
    settings.CAKRA_PROVIDERS = dict(settings.CAKRA_PROVIDERS)
    assert adapter_for_provider(primary) is not adapter
    with pytest.raises(ImproperlyConfigured):
        adapter_for_provider("no-such-provider")


# --- The cost on the hot path -------------------------------------------------------


class CountingStore(SharedStore):
    """The real store, counting the round trips asked of it."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def take(self, **kwargs):
        self.calls["take"] += 1
        return self.inner.take(**kwargs)

    def hold(self, **kwargs):
        self.calls["hold"] += 1
        return self.inner.hold(**kwargs)

    def sync(self, increments, **kwargs):
        self.calls["sync"] += 1
        return self.inner.sync(increments, **kwargs)

    def forget_identity(self, identity):
        self.calls["forget"] += 1
        return self.inner.forget_identity(identity)


def test_a_batch_costs_one_store_round_trip_and_health_syncs_once_per_interval(
    settings, monkeypatch, db, unique_name, provider_state
):
    counting = CountingStore(CacheStore("default"))
    monkeypatch.setattr(store_module, "_cache_store", lambda _alias: counting)
    settings.CAKRA_PROVIDERS = {
        "smtp-main": smtp_entry(identity=unique_name("smtp"), rate=10_000, burst=10_000),
        "smtp-backup": smtp_entry(priority=20, identity=unique_name("smtp"), rate=10_000, burst=10_000),
    }
    settings.CAKRA_PROVIDER_HEALTH = {**settings.CAKRA_PROVIDER_HEALTH, "SYNC_SECONDS": 60}

    for _ in range(50):  # what deliveries_send adds around each batch of 100
        provider = provider_choose("email")
        sender_token_acquire(provider, count=100)
        for _ in range(100):
            provider_answer_record(provider=provider, outcome="sent", retry_after=None)

    assert counting.calls == {"take": 50, "sync": 1}  # the batch's tokens at once; health once for the interval


def test_a_channel_no_provider_serves_fails_its_deliveries_visibly_instead_of_waiting(delivery, provider_state):
    Delivery.objects.filter(pk=delivery.pk).update(channel="post")  # no post provider is configured

    assert send(delivery).retries
    next_attempt_is_the_last(delivery)
    send(delivery)  # no retry asked: nothing left to retry

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_PERMANENT  # so fallback moves on
    errors = set(delivery.attempts.values_list("error", flat=True))
    assert errors == {"internal ImproperlyConfigured"}


def test_routing_a_batch_reads_nothing_of_the_domain(store_backend, db, provider_state, unique_name, settings):
    entry = settings.CAKRA_PROVIDERS["smtp"]
    settings.CAKRA_PROVIDERS = {"smtp": {**entry, "SENDER_IDENTITY": unique_name("smtp")}}

    with CaptureQueriesContext(connection) as captured:
        provider = provider_choose("email")
        sender_token_acquire(provider, count=10)

    assert provider.name == "smtp"
    # The database cache store's own statements (its table, its transaction
    # and lock) aside, nothing is read: the batch's one read of its rows
    # (channel, status, last provider) happened before, in deliveries_send.
    domain = [
        query["sql"]
        for query in captured.captured_queries
        if "cakra_cache" not in query["sql"]
        and "pg_advisory_xact_lock" not in query["sql"]
        and not query["sql"].upper().startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "BEGIN", "COMMIT"))
    ]
    assert domain == []
