"""Phone numbers: parsing Chinese roster numbers to E.164 with ``phonenumbers``, and masking for display."""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from campaigns.errors import SanlvError

DEFAULT_REGION = "CN"
_CALLABLE_TYPES = {
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.VOIP,
}


class PhoneNumberError(SanlvError, ValueError):
    """A number cannot be called. ``reason_zh`` and ``reason_en`` say why, for the office and the log."""

    def __init__(self, raw: str, reason_zh: str, reason_en: str):
        self.raw = raw
        self.reason_zh = reason_zh
        self.reason_en = reason_en
        super().__init__(f"{raw!r}: {reason_en}")


def normalise(raw: str | int | float, region: str = DEFAULT_REGION) -> str:
    """Return ``raw`` as E.164 (``+8613812345678``, ``+865931234567``).

    Accepts what rosters contain: mobiles, landlines with an area code (``0593-1234567``), spaces, dashes,
    a ``+86``/``86`` prefix, and numbers that Excel turned into floats (``13812345678.0``).

    Raises:
        PhoneNumberError: empty, unparsable, or not a valid callable number.
    """
    if isinstance(raw, float):
        if not raw.is_integer():  # also NaN and infinity (an empty cell read by pandas is NaN)
            raise PhoneNumberError(str(raw), "号码不是整数", "not a whole number")
        raw = str(int(raw))
    text = str(raw).strip()
    if not text:
        raise PhoneNumberError(text, "号码为空", "the number is empty")
    if re.search(r"[A-Za-z]", text):
        # phonenumbers reads letters as a keypad spelling (abcd -> 2223): a typo would dial a stranger.
        raise PhoneNumberError(text, "号码含有字母", "contains letters")
    if re.fullmatch(r"\d+\.0+", text):
        # A CSV exported from a sheet whose column Excel stored as numbers: "13812345678.0".
        text = text.split(".", 1)[0]
    # A bare 86-prefixed mobile (8613812345678) is common in exported contact lists.
    digits = "".join(ch for ch in text if ch.isdigit())
    if not text.startswith("+") and digits.startswith("86") and len(digits) == 13 and digits[2] == "1":
        text = "+" + digits
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        raise PhoneNumberError(text, "无法识别的号码", "not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneNumberError(text, "号码位数或号段不正确", "not a valid number (wrong length or prefix)")
    if phonenumbers.number_type(number) not in _CALLABLE_TYPES:
        raise PhoneNumberError(text, "该号码不是手机或固定电话", "not a mobile or landline number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def national(e164: str) -> str:
    """The number as a Chinese resident writes it: ``13812345678`` or ``0593-1234567``."""
    number = phonenumbers.parse(e164, None)
    if number.country_code != 86:
        return e164
    significant = phonenumbers.national_significant_number(number)
    area = phonenumbers.length_of_geographical_area_code(number)
    if area:
        return f"0{significant[:area]}-{significant[area:]}"
    return significant


def mask(e164: str) -> str:
    """``+8613812341234`` -> ``138****1234``; landlines keep the area code and the last four digits."""
    shown = national(e164) if e164.startswith("+86") else e164
    digits = shown.replace("-", "")
    if len(digits) < 8:
        return "*" * len(digits)
    if "-" in shown:
        area, local = shown.split("-", 1)
        return f"{area}-{'*' * (len(local) - 4)}{local[-4:]}"
    return f"{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"
