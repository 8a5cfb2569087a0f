"""Production that is not quite production: a wrong environment name, DEBUG, a
weak or development secret, or a message base URL off the official https
domain refuses to start; every response carries the security headers; logs
never hold a notice number or a plate."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.test import Client

from cakra.config.access_log import request_text_mask, structlog_mask_processor
from tests.security.production import DOMAIN, production_environment


@pytest.fixture(scope="module")
def production_env(tmp_path_factory) -> dict[str, str]:
    """A complete, good production environment (its own data dir, no inherited settings module)."""
    return production_environment(data_dir=tmp_path_factory.mktemp("production"))


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argument list
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )


# Each case is the settings module run afresh with its environment, all in one
# child process (a process per case would cost seconds each).
_SETTINGS_PROBE = """
import json, os, runpy, sys
results = []
for env in json.load(sys.stdin):
    os.environ.clear()
    os.environ.update(env)
    try:
        runpy.run_module("cakra.config.settings", run_name="cakra_settings_probe")
    except Exception as exc:
        results.append(f"{type(exc).__name__}: {exc}")
    else:
        results.append("")
print(json.dumps(results))
"""


def _settings_load_many(envs: list[dict[str, str]]) -> list[str]:
    """For each environment, "" if the settings load, else the error they refuse with."""
    finished = subprocess.run(  # noqa: S603 - fixed argument list
        [sys.executable, "-c", _SETTINGS_PROBE],
        input=json.dumps(envs),
        env=envs[0],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    results: list[str] = json.loads(finished.stdout.strip().splitlines()[-1])
    return results


def test_cakra_check_deploy_is_clean_in_a_complete_production_environment(production_env):
    finished = subprocess.run(
        [sys.executable, "-m", "cakra.cli", "check", "--deploy"],
        env=production_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "System check identified no issues (0 silenced)."
    assert finished.stderr == ""


# case: (environment change, what the refusal says)
REFUSALS = {
    "debug": ({"CAKRA_DEBUG": "1"}, "CAKRA_DEBUG is on"),
    "insecure-prefix": ({"SECRET_KEY": "django-insecure-" + secrets.token_urlsafe(50)}, "SECRET_KEY starts with"),
    "short-key": ({"SECRET_KEY": secrets.token_urlsafe(20)}, "SECRET_KEY must be at least 50"),
    "low-entropy-key": ({"SECRET_KEY": "ab" * 40}, "SECRET_KEY must be at least 50"),
    "repetitive-key": ({"SECRET_KEY": "abcdefgh" * 8}, "SECRET_KEY must be at least 50"),
    "short-receipt-secret": (
        {"CAKRA_RECEIPT_SECRET_SMTP_SINK": "short-secret"},
        "receipt secret of CAKRA_RECEIPT_SECRET_SMTP_SINK",
    ),
    "no-base-url": ({"CAKRA_PORTAL_BASE_URL": ""}, "CAKRA_PORTAL_BASE_URL is required"),
    "http-base-url": ({"CAKRA_PORTAL_BASE_URL": f"http://{DOMAIN}"}, "must be https://"),
    "loopback-base-url": ({"CAKRA_PORTAL_BASE_URL": "https://127.0.0.1:8000"}, "must be https://"),
    "localhost-base-url": ({"CAKRA_PORTAL_BASE_URL": "http://localhost"}, "must be https://"),
    "lookalike-suffix": ({"CAKRA_PORTAL_BASE_URL": f"https://{DOMAIN}.attacker.example"}, "must be https://"),
    "lookalike-prefix": ({"CAKRA_PORTAL_BASE_URL": f"https://evil{DOMAIN}"}, "must be https://"),
    "userinfo": ({"CAKRA_PORTAL_BASE_URL": f"https://user@{DOMAIN}"}, "must be https://"),
}


@pytest.fixture(scope="module")
def refusal_errors(production_env) -> dict[str, str]:
    envs = [{**production_env, **change} for change, _reason in REFUSALS.values()]
    return dict(zip(REFUSALS, _settings_load_many(envs), strict=True))


@pytest.mark.parametrize("case", REFUSALS)
def test_production_refuses_to_start_on_what_is_not_production(refusal_errors, case):
    change, reason = REFUSALS[case]
    error = refusal_errors[case]
    assert "CAKRA_ENV=production refuses to start" in error
    assert reason in error
    for value in change.values():  # never the secret itself
        if len(value) > 20:
            assert value not in error


UNKNOWN_ENVIRONMENTS = ["prod", "Production", "production ", "staging", ""]


def test_an_unknown_environment_name_refuses_to_start_and_known_ones_load(production_env, tmp_path):
    development = {"SECRET_KEY": secrets.token_urlsafe(50), "CAKRA_LOOKUP_KEY": production_env["CAKRA_LOOKUP_KEY"]}
    (tmp_path / "dev-secrets.json").write_text(json.dumps(development))
    envs = [
        production_env,
        {**production_env, "CAKRA_PORTAL_BASE_URL": f"https://cek.{DOMAIN}/"},  # a subdomain
        {**production_env, "CAKRA_DATA_DIR": str(tmp_path)},  # a development secret in production
        *({**production_env, "CAKRA_ENV": name} for name in UNKNOWN_ENVIRONMENTS),
    ]

    good, subdomain, development_secret, *unknown = _settings_load_many(envs)

    assert (good, subdomain) == ("", "")
    assert "CAKRA_LOOKUP_KEY is a development secret" in development_secret
    assert all("CAKRA_ENV must be one of dev, test, production" in error for error in unknown), unknown


def test_the_production_web_process_refuses_to_start_on_a_deploy_check_warning(production_env):
    # No HTTPS redirect: Django's security.W008, a warning `cakra check` alone would only print.
    finished = _python("import cakra.config.wsgi", {**production_env, "CAKRA_SSL_REDIRECT": "false"})
    assert finished.returncode != 0
    assert "refuses to start on these checks" in finished.stderr
    assert "security.W008" in finished.stderr
    assert _python("import cakra.config.wsgi", production_env).returncode == 0


@pytest.mark.parametrize("process", ["worker", "beat"])
def test_a_production_worker_or_scheduler_refuses_to_start_on_a_deploy_check_warning(production_env, process):
    command = [sys.executable, "-m", "celery", "--app", "cakra.config.celery", process, "--loglevel", "WARNING"]
    if process == "beat":
        command += ["--schedule", str(Path(production_env["CAKRA_DATA_DIR"]) / "beat-schedule")]
    finished = subprocess.run(  # noqa: S603 - fixed argument list
        command,
        env={**production_env, "CAKRA_SSL_REDIRECT": "false"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode != 0
    assert "security.W008" in finished.stderr + finished.stdout


SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy")


def _assert_security_headers(response):
    missing = [name for name in SECURITY_HEADERS if not response.headers.get(name)]
    assert missing == [], (response.status_code, missing)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_a_static_file_carries_the_security_headers(client, settings):
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    response = client.get("/static/portal/portal.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content)
    response.close()
    _assert_security_headers(response)
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/no-such-page/", 404),
        ("get", "/api/v1/no-such-endpoint", 404),
        ("get", "/api/v1/violations/00000000-0000-0000-0000-000000000000", 401),
        ("post", "/cek/", 403),  # no CSRF token: the CSRF failure page
    ],
    ids=["page-404", "api-404", "api-401", "csrf-failure"],
)
def test_error_answers_carry_the_security_headers(method, path, status):

    response = getattr(Client(enforce_csrf_checks=True), method)(path)
    assert response.status_code == status
    _assert_security_headers(response)


def test_log_events_and_request_lines_mask_notice_numbers_and_plates():
    event = structlog_mask_processor(
        None,
        "warning",
        {"event": "Not Found: /cek/1234567890123456/", "path": "/cek/?n=1234+5678+9012+3456&plate=B+1234+XYZ"},
    )
    assert event == {"event": "Not Found: /cek/1234************/", "path": "/cek/?n=1234************&plate=***"}
    uuid_path = "/notice/12345678-9012-3456-7890-123456789012/"
    assert request_text_mask(uuid_path) == uuid_path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_web_servers_access_log_masks_notice_numbers_and_plates(tmp_path):
    """gunicorn, as `cakra run` and the production docs start it, with a format that
    writes everything a request brings (request line, query, referrer)."""
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CAKRA_", "DJANGO_"))}
    env.pop("DATABASE_URL", None)
    env.update(CAKRA_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="cakra.config.settings")
    server = subprocess.Popen(  # noqa: S603 - fixed argument list
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "python:cakra.config.gunicorn",
            "--access-logformat",
            "%(r)s | %(U)s | %(q)s | %(f)s",
            "--bind",
            f"127.0.0.1:{port}",
            "cakra.config.wsgi:application",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/cek/9876543210987654/?n=1234567890123456&plate=B+1234+XYZ",
            headers={"Referer": "https://mail.example/?n=1111222233334444"},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(request, timeout=5)  # noqa: S310 - loopback
            except urllib.error.HTTPError:
                break  # an answer (404): it was logged
            except urllib.error.URLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            else:
                break
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    lines = [line for line in output.splitlines() if "/cek/" in line]
    assert lines, output
    assert "9876************" in lines[0]
    assert "n=1234************" in lines[0]
    assert "1111************" in lines[0]
    assert "plate=***" in lines[0]
    assert not re.search(r"\d{16}", output)
    assert "B+1234+XYZ" not in output
