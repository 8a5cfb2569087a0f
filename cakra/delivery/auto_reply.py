"""The automatic answer to a message a citizen sends to an official WhatsApp number.

Bahasa Indonesia, or English when the citizen asks for it (see
:func:`auto_reply_language`). One link only, the official portal's notice
check, and the rules that tell our messages from a scam's. Plain text: a
WhatsApp text message has no markup to escape, and the answer goes with
link previews off.
"""

from __future__ import annotations

import re

from django.conf import settings

LANGUAGES = ("id", "en")

AUTO_REPLY_TEXTS: dict[str, str] = {
    "id": (
        "Ini adalah nomor WhatsApp resmi {region}.\n"
        "\n"
        "Untuk memeriksa surat konfirmasi tilang elektronik (ETLE), buka portal resmi {url} "
        "lalu ketik nomor surat dan nomor polisi kendaraan Anda.\n"
        "\n"
        "Ingat:\n"
        "- Polisi tidak pernah mengirim lampiran atau aplikasi (APK).\n"
        "- Polisi tidak pernah meminta kode OTP.\n"
        "- Polisi tidak pernah meminta pembayaran ke rekening bank pribadi.\n"
        "Jika Anda menerima pesan yang mencurigakan, jangan buka tautan di dalamnya.\n"
        "\n"
        "Pesan ini dikirim otomatis. Balas ENGLISH untuk jawaban dalam bahasa Inggris."
    ),
    "en": (
        "This is the official WhatsApp number of {region}.\n"
        "\n"
        "To check an electronic traffic ticket (ETLE) notice, open the official portal {url} "
        "and type the notice number and your vehicle's plate number.\n"
        "\n"
        "Remember:\n"
        "- The police never send attachments or apps (APK).\n"
        "- The police never ask for an OTP code.\n"
        "- The police never ask for payment to a personal bank account.\n"
        "If you received a suspicious message, do not open the links in it.\n"
        "\n"
        "This message was sent automatically."
    ),
}

# The rule for English: the message names the language ("english",
# "inggris", as in "bahasa inggris"), as a word of its own, in any case; or
# it is only "en" / "eng". Anything else is answered in Bahasa Indonesia.
_ASKS_FOR_ENGLISH = re.compile(r"\b(?:english|inggris)\b", re.IGNORECASE)
_ONLY_EN = frozenset({"en", "eng"})


def auto_reply_language(text: str) -> str:
    """The language to answer ``text`` in: "en" when it asks for English, else "id"."""
    if _ASKS_FOR_ENGLISH.search(text) or text.strip().strip(".!?").lower() in _ONLY_EN:
        return "en"
    return "id"


def portal_check_url() -> str:
    """The one link of the answer: the portal's notice check."""
    return f"{settings.CAKRA_PORTAL_BASE_URL}/cek/"


def auto_reply_text(*, language: str, region_name: str) -> str:
    return AUTO_REPLY_TEXTS[language].format(region=region_name, url=portal_check_url())
