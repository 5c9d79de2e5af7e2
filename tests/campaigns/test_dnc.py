"""The do-not-call list's service: numbers in any written form, reasons required, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns import dnc
from campaigns.calls import begin_create, claim_due_targets, release_claim
from campaigns.models import (
    CallAttempt,
    DncAction,
    DncSource,
    DoNotCall,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from tests.factories import make_household, make_round, make_target


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


# --- the list holds wherever a number is dialled --------------------------------------------------------------


def _claimable_round(session: Session, phones: list[str]):
    round_ = make_round(session, status=RoundStatus.RUNNING, max_attempts=3)
    targets = [make_target(session, round_, make_household(session, phone=p)) for p in phones]
    session.flush()
    return round_, targets


def test_the_claim_skips_a_listed_number_and_ends_its_target_once_nothing_else_is_due(session: Session) -> None:
    round_, (listed_target, other) = _claimable_round(session, ["+8613800000001", "+8613800000002"])
    # Put on the list directly (as another process's commit would): the claim itself must see it.
    session.add(DoNotCall(phone="+8613800000001", phone_hash="x" * 64, source=DncSource.OFFICE, reason="r"))
    session.flush()
    now = datetime.now(UTC)

    claims = claim_due_targets(session, round_, now, 10)

    assert [c.phone for c in claims] == ["+8613800000002"]
    session.refresh(listed_target)
    assert listed_target.state == TargetState.PENDING  # others were due: it waits, unclaimed
    assert claim_due_targets(session, round_, now, 10) == []
    session.refresh(listed_target)
    assert (listed_target.state, listed_target.last_outcome) == (TargetState.OPTED_OUT, "do-not-call")
    assert session.scalar(select(func.count()).select_from(CallAttempt).where(CallAttempt.target_id == listed_target.id)) == 0


def test_adding_a_number_ends_its_waiting_targets_in_every_round_and_the_placing_check_refuses_a_claim(
    session: Session,
) -> None:
    round_a, (target_a,) = _claimable_round(session, ["+8613800000003"])
    claim = claim_due_targets(session, round_a, datetime.now(UTC), 1)[0]
    round_b = make_round(session, status=RoundStatus.DRAFT)
    target_b = make_target(session, round_b, session.get(RoundTarget, target_a.id).household)
    session.flush()

    dnc.add(session, "13800000003", "居民来电", actor="cli:test")

    session.refresh(target_b)
    assert (target_b.state, target_b.last_outcome) == (TargetState.OPTED_OUT, "do-not-call")
    # The claim made before the listing: the placing step's conditional mark refuses it ...
    assert begin_create(session, claim.attempt_id, None, datetime.now(UTC)) is False
    # ... and giving it back ends the target instead of putting it back in the queue.
    assert release_claim(session, claim.attempt_id, "not placed: do-not-call") is True
    session.refresh(target_a)
    assert (target_a.state, target_a.last_outcome) == (TargetState.OPTED_OUT, "do-not-call")


def test_the_history_keeps_who_added_and_removed_a_number_and_why(session: Session) -> None:
    dnc.add(session, "13812345678", "按了9", source=DncSource.KEYPAD)
    dnc.remove(session, "138 1234 5678", "居民愿意参加", actor="alice")
    dnc.add(session, "+86 13812345678", "居民再次要求", actor="bob")

    events = dnc.history(session, "13812345678")
    assert [(e.action, e.source, e.reason, e.actor, e.phone_masked) for e in events] == [
        (DncAction.ADDED, DncSource.KEYPAD, "按了9", None, "138****5678"),
        (DncAction.REMOVED, DncSource.KEYPAD, "居民愿意参加", "alice", "138****5678"),
        (DncAction.ADDED, DncSource.OFFICE, "居民再次要求", "bob", "138****5678"),
    ]
    assert dnc.history(session, "13900000000") == []
