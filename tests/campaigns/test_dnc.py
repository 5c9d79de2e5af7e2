"""The do-not-call list's service: numbers in any written form, reasons required, clear errors."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from campaigns import dnc
from campaigns.models import DoNotCall


def test_a_number_is_added_once_in_e164(session: Session) -> None:
    entry = dnc.add(session, "138 1234 5678", "  居民来电   要求 ")

    assert (entry.phone, entry.reason) == ("+8613812345678", "居民来电 要求")
    assert dnc.find(session, "+86 13812345678") is entry
    with pytest.raises(dnc.DncError, match="already on the do-not-call list") as raised:
        dnc.add(session, "8613812345678", "again")
    assert raised.value.field == "phone"


@pytest.mark.parametrize(
    ("phone", "reason", "field", "words"),
    [
        ("12345", "x", "phone", "号码"),
        ("abc", "x", "phone", "contains letters"),
        ("13812345678", "", "reason", "a reason is required"),
        ("13812345678", "长" * 201, "reason", "longer than 200"),
    ],
)
def test_bad_input_names_its_field(session: Session, phone, reason, field, words) -> None:
    with pytest.raises(dnc.DncError, match=words) as raised:
        dnc.add(session, phone, reason)

    assert raised.value.field == field
    assert session.query(DoNotCall).count() == 0


def test_a_number_is_removed_with_a_reason(session: Session) -> None:
    dnc.add(session, "13812345678", "按了9")

    with pytest.raises(dnc.DncError, match="reason is required"):
        dnc.remove(session, "13812345678", " ")
    assert dnc.find(session, "13812345678") is not None
    dnc.remove(session, "138-1234-5678", "居民愿意参加")

    assert dnc.find(session, "13812345678") is None
    with pytest.raises(dnc.DncError, match="not on the do-not-call list"):
        dnc.remove(session, "13812345678", "again")


def test_the_list_is_searched_by_the_last_digits(session: Session) -> None:
    for phone in ("13812345678", "13912340000", "13800005678"):
        dnc.add(session, phone, "x")

    assert {e.phone for e in dnc.entries(session, suffix="5678")} == {"+8613812345678", "+8613800005678"}
    assert {e.phone for e in dnc.entries(session, suffix="%")} == {"+8613812345678", "+8613912340000", "+8613800005678"}
    assert dnc.entries(session, suffix="999") == []
