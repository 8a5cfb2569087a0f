"""Masking keeps enough to recognise a value, never enough to use it."""

from __future__ import annotations

from cakra.backoffice.masking import mask_address, mask_contact, mask_email, mask_nik, mask_phone
from cakra.backoffice.templatetags.backoffice_format import rupiah


def test_nik_shows_only_the_last_four_digits():
    assert mask_nik("3171234567890123") == "************0123"
    assert mask_nik("123") == "***"
    assert mask_nik("") == ""


def test_phone_keeps_operator_prefix_and_last_four_digits():
    assert mask_phone("+6281234565678") == "+62812****5678"
    assert mask_phone("+628123456789012") == "+62812******9012"
    # Too short to keep both ends: nearly everything is hidden.
    short = mask_phone("+62811234")
    assert short.count("*") >= len(short) - 2


def test_email_keeps_the_first_letter_and_the_domain():
    assert mask_email("andi.wijaya@example.co.id") == "a***@example.co.id"
    assert mask_email("not-an-email") == "***"


def test_address_keeps_only_the_last_part():
    assert mask_address("Jl. Merdeka No. 5, Gambir, Jakarta Pusat 10110") == "***, Jakarta Pusat 10110"
    assert mask_address("Jl. Merdeka No. 5") == "***"


def test_contact_masking_follows_the_kind():
    assert mask_contact(kind="mobile", value="+6281234565678") == "+62812****5678"
    assert mask_contact(kind="email", value="budi@example.co.id") == "b***@example.co.id"
    assert mask_contact(kind="postal", value="Jl. A 1, Bandung") == "***, Bandung"


def test_rupiah_groups_thousands_with_dots():
    assert rupiah(500000) == "Rp500.000"
    assert rupiah(1250000) == "Rp1.250.000"
    assert rupiah(0) == "Rp0"
