"""Phone numbers: what rosters contain becomes E.164; what cannot be called is refused with a reason; masking."""

from __future__ import annotations

import pytest

from campaigns.phones import PhoneNumberError, mask, national, normalise


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("13812345678", "+8613812345678"),
        ("138 1234 5678", "+8613812345678"),
        ("138-1234-5678", "+8613812345678"),
        ("  13812345678  ", "+8613812345678"),
        ("+86 138-1234-5678", "+8613812345678"),
        ("+8613812345678", "+8613812345678"),
        ("8613812345678", "+8613812345678"),
        ("86 138 1234 5678", "+8613812345678"),
        ("0086 13812345678", "+8613812345678"),
        ("１３８１２３４５６７８", "+8613812345678"),  # full-width digits typed with a Chinese IME
        (13812345678, "+8613812345678"),
        (13812345678.0, "+8613812345678"),  # Excel stores every number as a double
        ("13812345678.0", "+8613812345678"),  # ... and a CSV exported from such a sheet keeps the ".0"
        ("0593-2612345", "+865932612345"),
        ("0593 2612345", "+865932612345"),
        ("(0593)2612345", "+865932612345"),
        ("05932612345", "+865932612345"),
        (5932612345.0, "+865932612345"),  # the leading 0 lost to Excel: the area code still parses
        ("010-12345678", "+861012345678"),
        ("+86 10 1234 5678", "+861012345678"),
    ],
)
def test_normalise_accepts_what_rosters_contain(raw: str | int | float, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason_en"),
    [
        ("", "the number is empty"),
        ("   ", "the number is empty"),
        ("12345", "not a valid number (wrong length or prefix)"),
        ("1381234567", "not a valid number (wrong length or prefix)"),  # one digit short
        ("138123456789", "not a valid number (wrong length or prefix)"),  # one digit long
        ("23812345678", "not a valid number (wrong length or prefix)"),  # no mobile starts with 2
        ("10086", "not a valid number (wrong length or prefix)"),
        ("400-123-4567", "not a mobile or landline number"),
        ("13812345678/13912345678", "not a phone number"),  # two numbers in one cell
        (13812345678.5, "not a whole number"),
        (float("nan"), "not a whole number"),
        (float("inf"), "not a whole number"),
    ],
)
def test_normalise_refuses_numbers_that_cannot_be_called(raw: str | float, reason_en: str) -> None:
    with pytest.raises(PhoneNumberError) as caught:
        normalise(raw)

    assert caught.value.reason_en == reason_en
    assert caught.value.reason_zh  # the office reads the Chinese reason
    assert str(raw).strip() in str(caught.value) or raw == ""


@pytest.mark.parametrize(
    "raw", ["abc", "1381234abcd", "138-1234-ABCD", "13812345678a", "x13812345678", "+8613812345678 ext 1"]
)
def test_normalise_refuses_letters_instead_of_spelling_them_as_digits(raw: str) -> None:
    # phonenumbers reads letters as a keypad spelling (abcd -> 2223): a typo must not become a stranger's number.
    with pytest.raises(PhoneNumberError) as caught:
        normalise(raw)

    assert caught.value.reason_en == "contains letters"


def test_a_phone_number_error_keeps_the_raw_text() -> None:
    with pytest.raises(PhoneNumberError) as caught:
        normalise(" 12345 ")

    assert caught.value.raw == "12345"
    assert str(caught.value) == "'12345': not a valid number (wrong length or prefix)"


@pytest.mark.parametrize(
    ("e164", "expected"),
    [
        ("+8613812345678", "13812345678"),
        ("+865932612345", "0593-2612345"),
        ("+861012345678", "010-12345678"),
        ("+14155550100", "+14155550100"),  # not Chinese: shown as given
    ],
)
def test_national_is_how_a_resident_writes_the_number(e164: str, expected: str) -> None:
    assert national(e164) == expected


@pytest.mark.parametrize(
    ("e164", "expected"),
    [
        ("+8613812341234", "138****1234"),
        ("+8613900000001", "139****0001"),
        ("+865932612345", "0593-***2345"),
        ("+861012345678", "010-****5678"),
    ],
)
def test_mask_hides_the_middle_and_keeps_a_landline_area_code(e164: str, expected: str) -> None:
    assert mask(e164) == expected


def test_mask_never_shows_the_whole_number() -> None:
    for e164 in ("+8613812341234", "+865932612345", "+861012345678", "+14155550100"):
        masked = mask(e164)
        assert "*" in masked
        assert national(e164).replace("-", "") not in masked.replace("-", "")


def test_normalise_then_national_round_trips() -> None:
    for raw in ("13812345678", "0593-2612345", "010-12345678"):
        assert national(normalise(raw)) == raw
