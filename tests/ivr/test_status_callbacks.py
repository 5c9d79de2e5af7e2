"""Status callbacks on both databases: what each one leaves in the attempt and target rows.

Through the real Flask app over real HTTP, signed as Twilio signs them, under a controlled clock. Every
callback is applied by ``campaigns.calls.apply_call_status``; the last test holds the webhook to exactly what
that function does when called directly.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from campaigns.calls import CREATING, apply_call_status
from campaigns.clock import set_clock_file
from campaigns.models import (
    FINAL_TARGET_STATES,
    CallAttempt,
    CallStatus,
    Round,
    RoundTarget,
    TargetState,
)
from tests.ivr.support import SID, base_params, open_call, post

T0 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)  # the controlled clock: every ended_at is this
EARLIER = T0 - timedelta(minutes=5)
OTHER_SID = "CA" + "b" * 32

ATTEMPT_COLUMNS = ("status", "last_sequence_number", "answered_by", "error_code", "error_message", "duration_seconds",
                   "placed_at", "answered_at", "ended_at")
TARGET_COLUMNS = ("state", "attempts", "last_outcome", "next_attempt_at", "claimed_at", "final_at", "updated_at",
                  "response_status")


@pytest.fixture
def server(live_server, tmp_path, monkeypatch):
    """The live app (its Settings) with the clock held at T0."""
    clock = tmp_path / "clock"
    set_clock_file(clock, T0)
    monkeypatch.setenv("SANLV_CLOCK_FILE", str(clock))
    return live_server


def make_call(
    sessions: sessionmaker[Session],
    attempt_status: CallStatus,
    target_state: TargetState,
    *,
    phone: str = "+8613800000001",
    sid: str | None = SID,
    **attempt_over,
) -> int:
    """A placed call (``open_call``) whose attempt and target are then in the given states."""
    attempt_id = open_call(sessions, phone=phone, sid=sid or "CA" + "f" * 32)
    with sessions.begin() as session:
        attempt = session.get(CallAttempt, attempt_id)
        target = session.get(RoundTarget, attempt.target_id)
        attempt.call_sid = sid
        attempt.status = attempt_status
        attempt.placed_at = EARLIER
        if attempt_status in (CallStatus.IN_PROGRESS, CallStatus.COMPLETED):
            attempt.answered_at = EARLIER
        for name, value in attempt_over.items():
            setattr(attempt, name, value)
        target.state = target_state
        target.updated_at = EARLIER  # set, so no wall-clock onupdate makes two copies differ
        if target_state in FINAL_TARGET_STATES:
            target.final_at = EARLIER
            target.last_outcome = target_state.value
    return attempt_id


def row(sessions: sessionmaker[Session], attempt_id: int) -> dict[str, object]:
    """The attempt's and its target's columns a status callback may change (ids and the sid left out)."""
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        target = session.get(RoundTarget, attempt.target_id)
        return {**{f"attempt.{c}": getattr(attempt, c) for c in ATTEMPT_COLUMNS},
                **{f"target.{c}": getattr(target, c) for c in TARGET_COLUMNS}}


def callback(settings, attempt_id: int, status: str, sequence: int | None = None, sid: str = SID, **fields: str):
    params = base_params(CallSid=sid, CallStatus=status, **fields)
    if sequence is not None:
        params["SequenceNumber"] = str(sequence)
    return post(settings, f"/ivr/status?attempt={attempt_id}", params)


# --- final statuses, sequence numbers, adoption ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "fields", "stored"),
    [
        ("completed", {"CallDuration": "95", "AnsweredBy": "human"}, (CallStatus.COMPLETED, 95, "human", None)),
        ("failed", {"CallDuration": "0", "ErrorCode": "31005"}, (CallStatus.FAILED, 0, None, "31005")),
    ],
)
def test_a_final_status_for_a_finished_interview_updates_only_the_attempt(
    server, sessions, caplog, status, fields, stored
):
    attempt_id = make_call(sessions, CallStatus.IN_PROGRESS, TargetState.COMPLETED, last_sequence_number=2)
    before = row(sessions, attempt_id)

    with caplog.at_level(logging.INFO, logger="sanlv.ivr"):
        assert callback(server, attempt_id, status, 3, **fields).status_code == 204

    after = row(sessions, attempt_id)
    status_, duration, answered_by, error_code = stored
    assert after == before | {"attempt.status": status_, "attempt.last_sequence_number": 3, "attempt.ended_at": T0,
                              "attempt.duration_seconds": duration, "attempt.answered_by": answered_by,
                              "attempt.error_code": error_code}
    assert f"event=call_status attempt={attempt_id} status={status} seq=3" in caplog.text


def test_absent_fields_keep_what_the_attempt_has(server, sessions):
    attempt_id = make_call(sessions, CallStatus.IN_PROGRESS, TargetState.COMPLETED, answered_by="human",
                           duration_seconds=12, error_code="13224", last_sequence_number=4)

    assert callback(server, attempt_id, "completed").status_code == 204  # no SequenceNumber either

    after = row(sessions, attempt_id)
    assert (after["attempt.status"], after["attempt.ended_at"], after["attempt.last_sequence_number"]) == (
        CallStatus.COMPLETED, T0, 4)
    assert (after["attempt.answered_by"], after["attempt.duration_seconds"], after["attempt.error_code"]) == (
        "human", 12, "13224")


def test_an_older_or_repeated_sequence_number_changes_nothing(server, sessions):
    attempt_id = make_call(sessions, CallStatus.IN_PROGRESS, TargetState.COMPLETED, last_sequence_number=5)
    before = row(sessions, attempt_id)

    for sequence in (5, 4):
        assert callback(server, attempt_id, "completed", sequence, CallDuration="30").status_code == 204

    assert row(sessions, attempt_id) == before
    assert callback(server, attempt_id, "completed", 6, CallDuration="30").status_code == 204
    assert row(sessions, attempt_id)["attempt.status"] is CallStatus.COMPLETED


def test_a_final_attempt_stays_as_it_is(server, sessions):
    attempt_id = make_call(sessions, CallStatus.COMPLETED, TargetState.COMPLETED, ended_at=EARLIER,
                           duration_seconds=95, answered_by="human", last_sequence_number=3)
    before = row(sessions, attempt_id)

    assert callback(server, attempt_id, "busy", 4, CallDuration="1", ErrorCode="31005",
                    AnsweredBy="unknown").status_code == 204

    # Only the SequenceNumber is taken, as apply_call_status takes it.
    assert row(sessions, attempt_id) == before | {"attempt.last_sequence_number": 4}


def test_a_call_whose_target_is_still_open_is_settled_and_retried(server, sessions):
    attempt_id = make_call(sessions, CallStatus.RINGING, TargetState.DIALING)

    assert callback(server, attempt_id, "no-answer", 3, CallDuration="0").status_code == 204

    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        target = session.get(RoundTarget, attempt.target_id)
        round_ = session.get(Round, target.round_id)
        assert (attempt.status, attempt.ended_at, attempt.last_sequence_number) == (CallStatus.NO_ANSWER, T0, 3)
        assert (target.state, target.last_outcome) == (TargetState.PENDING, "no-answer")
        assert target.next_attempt_at == T0 + timedelta(seconds=round_.retry["no-answer"])


def test_a_call_whose_sid_was_never_saved_is_adopted(server, sessions):
    attempt_id = make_call(sessions, CallStatus.QUEUED, TargetState.COMPLETED, sid=None)

    assert callback(server, attempt_id, "completed", 2).status_code == 204

    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        assert (attempt.call_sid, attempt.status, attempt.ended_at) == (SID, CallStatus.COMPLETED, T0)


# --- bad callbacks, and the webhook against the function -----------------------------------------------


def test_another_calls_sid_or_an_unknown_attempt_gets_the_same_4xx_and_writes_nothing(server, sessions):
    attempt_id = make_call(sessions, CallStatus.IN_PROGRESS, TargetState.COMPLETED)
    before = row(sessions, attempt_id)

    assert callback(server, attempt_id, "completed", 3, sid=OTHER_SID).status_code == 409
    assert callback(server, attempt_id + 1, "completed", 3).status_code == 404
    assert post(server, "/ivr/status?attempt=x", base_params(CallStatus="completed")).status_code == 400
    assert callback(server, attempt_id, "completed", 3, sid="CA123").status_code == 400
    assert callback(server, attempt_id, "hung-up", 3).status_code == 400

    assert row(sessions, attempt_id) == before


# (attempt status, target state, callback status, SequenceNumber, callback fields, attempt fields)
PARITY = [
    (CallStatus.IN_PROGRESS, TargetState.COMPLETED, "completed", 7, {"CallDuration": "95", "AnsweredBy": "human"},
     {"last_sequence_number": 3}),
    (CallStatus.RINGING, TargetState.REFUSED, "busy", None, {"CallDuration": "0"}, {}),
    (CallStatus.QUEUED, TargetState.OPTED_OUT, "canceled", 2, {}, {}),
    (CallStatus.INITIATED, TargetState.UNREACHABLE, "failed", 4, {"ErrorCode": "31005"}, {"error_code": "13227"}),
    (CallStatus.IN_PROGRESS, TargetState.CANCELLED, "no-answer", 9, {"AnsweredBy": "machine_start"},
     {"answered_by": "human", "duration_seconds": 8}),
    # A callback to ignore, a call still being made, a target still open:
    (CallStatus.IN_PROGRESS, TargetState.COMPLETED, "completed", 3, {"CallDuration": "95"},
     {"last_sequence_number": 3}),  # a repeated SequenceNumber
    (CallStatus.IN_PROGRESS, TargetState.COMPLETED, "completed", 2, {}, {"last_sequence_number": 3}),  # older
    (CallStatus.COMPLETED, TargetState.COMPLETED, "busy", 8, {"CallDuration": "3"},
     {"ended_at": EARLIER, "duration_seconds": 95}),  # a final attempt
    (CallStatus.CLAIMED, TargetState.COMPLETED, "completed", 1, {},
     {"error_code": CREATING, "placed_at": EARLIER}),  # a create-started mark
    (CallStatus.IN_PROGRESS, TargetState.IN_CALL, "completed", 5, {"CallDuration": "40"}, {}),  # dropped
    (CallStatus.RINGING, TargetState.DIALING, "busy", 3, {}, {}),  # retried
    (CallStatus.QUEUED, TargetState.DIALING, "canceled", None, {}, {}),  # never rang: not dialled
    (CallStatus.IN_PROGRESS, TargetState.COMPLETED, "ringing", 6, {}, {}),  # not a final status
]


@pytest.mark.parametrize(("attempt_status", "target_state", "status", "sequence", "fields", "attempt_over"), PARITY)
def test_the_webhook_leaves_the_rows_as_apply_call_status_does(
    server, sessions, attempt_status, target_state, status, sequence, fields, attempt_over
):
    """Two copies of one call: the webhook gets the callback for one, apply_call_status for the other."""
    webhook = make_call(sessions, attempt_status, target_state, **attempt_over)
    direct = make_call(sessions, attempt_status, target_state, phone="+8613800000002", sid=OTHER_SID, **attempt_over)
    assert row(sessions, webhook) == row(sessions, direct)

    assert callback(server, webhook, status, sequence, **fields).status_code == 204
    with sessions.begin() as session:
        attempt = session.scalar(select(CallAttempt).where(CallAttempt.id == direct).with_for_update())
        apply_call_status(session, attempt, status, sequence, duration=int(fields["CallDuration"])
                          if "CallDuration" in fields else None, answered_by=fields.get("AnsweredBy"),
                          error_code=fields.get("ErrorCode"))

    assert row(sessions, webhook) == row(sessions, direct)
