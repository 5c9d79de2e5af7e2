"""Cancelling a round while a dispatch tick is claiming its targets: on PostgreSQL the two must not deadlock.

A tick claims targets (their rows locked), then inserts their call attempts, whose foreign key takes a KEY
SHARE lock on the round. A cancel locks the round, then ends every pending target. If the cancel's round lock
were FOR UPDATE, the tick would wait for the cancel and the cancel for the tick's targets: PostgreSQL would
abort one of them ("deadlock detected"), as a 200,000-household benchmark round once showed.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from campaigns.models import CallAttempt, CallDirection, CallStatus, NoticeStatus, RoundStatus, RoundTarget, TargetState
from campaigns.notices import change_notice
from campaigns.rounds import change_round
from tests.factories import make_notice, make_notice_target, make_round, make_target


def _pg_only(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only (set SANLV_TEST_DATABASE_URL): SQLite has no row locks")


def _wait_until_blocked(engine: Engine, pid: int, timeout: float = 10.0) -> None:
    """Until backend ``pid`` waits for a lock."""
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar()
            if waiting == "Lock":
                return
            conn.rollback()
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for a lock")


def test_a_cancel_waits_for_a_tick_that_claimed_targets_instead_of_deadlocking(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    _pg_only(engine)
    with sessions.begin() as session:
        round_ = make_round(session, status=RoundStatus.RUNNING)
        claimed, pending = make_target(session, round_), make_target(session, round_)
        round_id, claimed_id, pending_id = round_.id, claimed.id, pending.id

    tick = sessions()
    # The tick claims a target (its row is locked until the tick commits)...
    tick.execute(
        update(RoundTarget).where(RoundTarget.id == claimed_id).values(state=TargetState.DIALING, attempts=1)
    )
    cancel = sessions()
    cancel_pid = cancel.execute(text("SELECT pg_backend_pid()")).scalar_one()
    cancel.rollback()
    errors: list[BaseException] = []

    def cancel_round() -> None:
        try:
            change_round(cancel, round_id, "cancel")  # locks the round, then waits for the claimed target
            cancel.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            cancel.rollback()

    thread = threading.Thread(target=cancel_round)
    thread.start()
    try:
        _wait_until_blocked(engine, cancel_pid)
        # ...then inserts the claim's attempt: its foreign key locks the round in KEY SHARE mode.
        tick.add(CallAttempt(round_id=round_id, target_id=claimed_id, number=1, status=CallStatus.CLAIMED,
                             direction=CallDirection.OUTBOUND, last_sequence_number=-1))  # fmt: skip
        tick.commit()
    finally:
        tick.close()  # (a failure must not leave locks behind for the fixture's teardown)
        thread.join(timeout=30)
        cancel.close()

    assert not thread.is_alive()
    assert errors == []
    with sessions() as session:
        assert session.get(RoundTarget, claimed_id).state is TargetState.DIALING  # left to the placing step
        assert session.get(RoundTarget, pending_id).state is TargetState.CANCELLED
        assert session.scalar(select(CallAttempt.status)) is CallStatus.CLAIMED


def test_a_notice_lock_lets_a_foreign_key_to_it_through(engine: Engine, sessions: sessionmaker[Session]) -> None:
    # The same for notices: a notice being cancelled must not block a row that merely refers to it.
    _pg_only(engine)
    with sessions.begin() as session:
        notice = make_notice(session, status=NoticeStatus.RUNNING)
        notice_id = notice.id
        make_notice_target(session, notice)

    cancel = sessions()
    other = sessions()
    try:
        change_notice(cancel, notice_id, "cancel")  # holds the notice's row lock until it commits
        other.execute(text("SET LOCAL lock_timeout = '2s'"))
        make_notice_target(other, other.get(type(notice), notice_id))  # the foreign key's KEY SHARE lock: no wait
        other.commit()
        cancel.commit()
    finally:
        other.close()
        cancel.close()
