"""The password change page in a real browser (Debian's Chromium driven by
Playwright, as tests/portal/test_browser.py): the show/hide button and the
strength hint run from our own script under the CSP, without console errors."""

from __future__ import annotations

import shutil

import pytest
from django.conf import settings
from playwright.sync_api import sync_playwright

from cakra.backoffice.services import officer_totp_device_create
from tests.backoffice.conftest import english_client, sign_in
from tests.portal.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def session_cookie(transactional_db, officer) -> str:
    device = officer_totp_device_create(officer=officer, name="test", confirmed=True)
    return sign_in(english_client(), officer, device).cookies[settings.SESSION_COOKIE_NAME].value


def test_the_password_fields_reveal_and_rate_what_is_typed(session_cookie, live_server):

    assert shutil.which(CHROMIUM), "install the Debian package 'chromium'"
    problems: list[str] = []
    scripts: list[int] = []

    def record_console(text: str) -> None:
        if "Content Security Policy" in text or "password" in text.lower():
            problems.append(text)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(locale="en-US")
            context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": session_cookie, "url": live_server.url}]
            )
            page = context.new_page()
            page.on("console", lambda message: record_console(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("response", lambda answer: scripts.append(answer.status) if answer.url.endswith(".js") else None)
            page.goto(f"{live_server.url}/backoffice/account/password/")

            new = page.locator("#id_new_password1")
            toggle = page.locator("#id_new_password1 + button.reveal")
            assert page.locator("button.reveal").count() == 3  # one per password field
            assert new.get_attribute("type") == "password"
            toggle.click()
            assert new.get_attribute("type") == "text"
            assert toggle.get_attribute("aria-pressed") == "true"
            toggle.click()
            assert new.get_attribute("type") == "password"

            hint = page.locator("#password-strength")
            assert hint.is_hidden()
            new.fill("short")
            assert "5 of at least 12" in hint.inner_text()
            new.fill("123456789012345")
            assert "Digits only" in hint.inner_text()
            new.fill("a long and calm passphrase")
            assert hint.get_attribute("class") == "small strength strength-strong"
            assert "password-strength" in (new.get_attribute("aria-describedby") or "")

            page.locator("#id_new_password2").fill("a long and calm")
            assert "do not match" in page.locator("#password-match").inner_text()
            page.locator("#id_new_password2").fill("a long and calm passphrase")
            assert "match." in page.locator("#password-match").inner_text()
        finally:
            browser.close()
    assert scripts == [200]
    assert problems == []
