"""A real browser (Debian's Chromium driven by Playwright) checks a notice.

Needs the Debian package ``chromium`` (/usr/bin/chromium) and the ``playwright``
Python package; Playwright's own browser download is never used.
"""

from __future__ import annotations

import re
import shutil

import pytest
from playwright.sync_api import sync_playwright

from tests.portal.conftest import issue_notice

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser_notice(transactional_db, settings, vehicle, officer, region):
    settings.CAKRA_ENABLED_CHANNELS = []  # nothing to send: this test is about the portal
    return issue_notice(vehicle=vehicle, region=region, capture_id="CAP-E2E").notice


def test_citizen_checks_a_notice_in_a_real_browser(browser_notice, live_server):

    assert shutil.which(CHROMIUM), "install the Debian package 'chromium'"
    notice = browser_notice
    code = notice.verification_code
    # No database access below: Playwright's sync API runs an event loop in
    # this thread, where Django refuses ORM calls.
    csp_violations: list[str] = []

    def record_csp(text: str) -> None:
        if "Content Security Policy" in text:
            csp_violations.append(text)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # An English browser: the portal still opens in Bahasa Indonesia.
            context = browser.new_context(locale="en-US", viewport={"width": 360, "height": 740})
            page = context.new_page()
            page.on("console", lambda message: record_csp(message.text))
            page.goto(f"{live_server.url}/")
            assert page.locator("html").get_attribute("lang") == "id"
            assert page.locator("h1").inner_text() == "Periksa surat konfirmasi ETLE Anda"
            # The stylesheet loaded (no inline styles are allowed by the CSP).
            assert page.evaluate("() => document.styleSheets.length") == 1
            assert page.evaluate("() => getComputedStyle(document.querySelector('.masthead')).backgroundColor") != (
                "rgba(0, 0, 0, 0)"
            )

            page.fill("#id_number", notice.number)
            page.fill("#id_plate", "b 1234 xyz")
            page.click("form.lookup button[type=submit]")
            page.wait_for_url(re.compile(rf"/notice/{notice.id}/$"))
            assert page.locator(".verification-code").inner_text() == code
            assert "Rp500.000" in page.content()
            image = page.locator("figure img")
            image.wait_for()
            page.wait_for_function("() => { const i = document.querySelector('figure img'); return i.complete; }")
            assert image.evaluate("(img) => img.naturalWidth") == 80
            assert image.evaluate("(img) => img.naturalHeight") == 60

            page.click("form.lang button")
            page.wait_for_load_state()
            assert page.locator("html").get_attribute("lang") == "en"
            assert page.url.endswith(f"/notice/{notice.id}/")
            assert page.locator("h1").inner_text() == "ETLE confirmation notice"
            assert "Running a red light" in page.content()
            assert image.evaluate("(img) => img.naturalWidth") == 80

            # "Done" forgets the grant: the notice is closed on this device.
            page.click("form.finish button")
            page.goto(f"{live_server.url}/notice/{notice.id}/")
            assert page.url.endswith("/cek/")
        finally:
            browser.close()
    assert csp_violations == []
