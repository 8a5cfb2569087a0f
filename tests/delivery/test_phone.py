import pytest

from cakra.delivery.channels.base import PermanentProviderError
from cakra.delivery.channels.phone import NOT_A_MOBILE, mobile_e164
from cakra.simulators.magic import Magic, magic_for, magic_number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+6281234567890", "+6281234567890"),
        ("081234567890", "+6281234567890"),
        ("62 812-3456-7890", "+6281234567890"),
    ],
)
def test_indonesian_mobile_numbers_are_normalised_to_e164(raw, expected):
    assert mobile_e164(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "not a number", "+622150001234", "0215000123", "+6591234567", "+14155550123", "+62812", "+628123456789012345"],
)
def test_anything_but_an_indonesian_mobile_number_fails_permanently(raw):
    with pytest.raises(PermanentProviderError, match=NOT_A_MOBILE):
        mobile_e164(raw)


@pytest.mark.parametrize("behaviour", list(Magic))
def test_every_magic_number_is_a_valid_mobile_number_with_its_behaviour(behaviour):
    for serial in (0, 1, 999_999):
        number = magic_number(behaviour, serial)
        assert mobile_e164(number) == number
        assert magic_for(number) == behaviour
