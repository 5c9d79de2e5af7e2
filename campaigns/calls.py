"""Call attempts and their targets: claiming work, recording what the provider reports, settling outcomes.

Every transition is one function here. They take a Session and never commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.models import (
    CALL_STATUS_ORDER,
    FINAL_CALL_STATUSES,
    FINAL_RESPONSE_STATUSES,
    FINAL_TARGET_STATES,
    CallAttempt,
    CallStatus,
    Household,
    PhoneStatus,
    Response,
    ResponseStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
)

log = logging.getLogger("sanlv.calls")

MACHINE_ANSWERS = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"})

RESPONSE_TO_TARGET = {
    ResponseStatus.COMPLETED: TargetState.COMPLETED,
    ResponseStatus.REFUSED: TargetState.REFUSED,
    ResponseStatus.INELIGIBLE: TargetState.INELIGIBLE,
    ResponseStatus.OPTED_OUT: TargetState.OPTED_OUT,
}


@dataclass(frozen=True)
class Claim:
    attempt_id: int
    target_id: int
    phone: str


def live_calls(session: Session, round_id: int) -> int:
    """Attempts of the round that are claimed or live (not final)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(CallAttempt)
            .where(CallAttempt.round_id == round_id, CallAttempt.status.not_in(FINAL_CALL_STATUSES))
        )
        or 0
    )


def claim_due_targets(session: Session, round_: Round, now: datetime, limit: int) -> list[Claim]:
    """Claim up to ``limit`` due pending targets with a conditional UPDATE each.

    A target claimed by another dispatcher in the meantime is skipped (the UPDATE matches no row), so a
    duplicated or re-run job never creates a second attempt.
    """
    if limit <= 0:
        return []
    candidates = session.execute(
        select(RoundTarget.id, RoundTarget.phone, RoundTarget.attempts)
        .where(
            RoundTarget.round_id == round_.id,
            RoundTarget.state == TargetState.PENDING,
            or_(RoundTarget.next_attempt_at.is_(None), RoundTarget.next_attempt_at <= now),
            RoundTarget.attempts < round_.max_attempts,
        )
        .order_by(RoundTarget.next_attempt_at.is_not(None), RoundTarget.next_attempt_at, RoundTarget.id)
        .limit(limit)
    ).all()
    claims: list[Claim] = []
    for target_id, phone, attempts in candidates:
        result = session.execute(
            update(RoundTarget)
            .where(
                RoundTarget.id == target_id,
                RoundTarget.state == TargetState.PENDING,
                RoundTarget.attempts == attempts,
            )
            .values(state=TargetState.DIALING, attempts=attempts + 1, claimed_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            continue
        attempt = CallAttempt(
            round_id=round_.id, target_id=target_id, number=attempts + 1, status=CallStatus.CLAIMED, created_at=now
        )
        session.add(attempt)
        session.flush()
        claims.append(Claim(attempt.id, target_id, phone))
    return claims


def mark_placed(session: Session, attempt: CallAttempt, sid: str, status: str, now: datetime) -> None:
    """The provider accepted the call."""
    attempt.call_sid = sid
    new = _parse_status(status) or CallStatus.QUEUED
    if attempt.status == CallStatus.CLAIMED:
        attempt.status = new if new not in FINAL_CALL_STATUSES else CallStatus.QUEUED
    attempt.placed_at = attempt.placed_at or now


def mark_permanent_failure(session: Session, attempt: CallAttempt, code: int | None, message: str) -> None:
    """The number can never be called: the attempt was not placed, the target and the household say so."""
    now = clock.now()
    attempt.status = CallStatus.NOT_PLACED
    attempt.error_code = str(code) if code is not None else None
    attempt.error_message = message[:2000]
    attempt.ended_at = now
    target = session.get(RoundTarget, attempt.target_id)
    assert target is not None
    household = session.get(Household, target.household_id)
    if household is not None:
        household.phone_status = PhoneStatus.BLOCKED if code in (21215, 21216) else PhoneStatus.INVALID
        household.phone_status_reason = f"{code}: {message}"[:200]
    finish_target(session, target, TargetState.INVALID, "invalid", now)


def _parse_status(value: str | None) -> CallStatus | None:
    try:
        return CallStatus(value) if value else None
    except ValueError:
        return None


def apply_call_status(
    session: Session,
    attempt: CallAttempt,
    status: str,
    sequence: int | None,
    *,
    duration: int | None = None,
    answered_by: str | None = None,
    error_code: str | None = None,
) -> bool:
    """Apply one status callback. Returns True if it changed anything.

    Callbacks are applied in SequenceNumber order: an older or repeated one changes nothing, a final status
    stays final, and a status never moves backwards.
    """
    new = _parse_status(status)
    if new is None:
        raise ValueError(f"unknown CallStatus {status!r}")
    if sequence is not None:
        if sequence <= attempt.last_sequence_number:
            return False
        attempt.last_sequence_number = sequence
    if attempt.status in FINAL_CALL_STATUSES:
        return sequence is not None
    now = clock.now()
    if answered_by:
        attempt.answered_by = answered_by
    if new in FINAL_CALL_STATUSES:
        attempt.status = new
        attempt.ended_at = now
        if duration is not None:
            attempt.duration_seconds = duration
        if error_code:
            attempt.error_code = error_code
        settle_attempt(session, attempt, now)
        return True
    if CALL_STATUS_ORDER.get(new, 0) > CALL_STATUS_ORDER.get(attempt.status, 0):
        attempt.status = new
        if new == CallStatus.IN_PROGRESS:
            attempt.answered_at = attempt.answered_at or now
    return True


def mark_answered(session: Session, attempt: CallAttempt) -> RoundTarget:
    """The resident picked up (the voice webhook arrived): the target is in a call."""
    now = clock.now()
    if attempt.status not in FINAL_CALL_STATUSES and CALL_STATUS_ORDER.get(attempt.status, 0) < 4:
        attempt.status = CallStatus.IN_PROGRESS
    attempt.answered_at = attempt.answered_at or now
    target = session.get(RoundTarget, attempt.target_id)
    assert target is not None
    if target.state in (TargetState.PENDING, TargetState.DIALING):
        target.state = TargetState.IN_CALL
        target.updated_at = now
    return target


def finish_target(session: Session, target: RoundTarget, state: TargetState, outcome: str, now: datetime) -> None:
    """Move a target to a final state (a final state is never left)."""
    if target.state in FINAL_TARGET_STATES:
        return
    target.state = state
    target.last_outcome = outcome
    target.final_at = now
    target.updated_at = now
    target.next_attempt_at = None


def finish_from_response(session: Session, target: RoundTarget, response: Response) -> None:
    """The interview reached a final status: so does the target."""
    state = RESPONSE_TO_TARGET.get(response.status)
    if state is not None:
        finish_target(session, target, state, response.status.value, clock.now())


def outcome_of(attempt: CallAttempt, response: Response | None) -> str:
    """The retry outcome of an ended call whose target is not final (see schedule.DEFAULT_RETRY)."""
    if attempt.answered_by in MACHINE_ANSWERS:
        return "machine"
    if attempt.status == CallStatus.BUSY:
        return "busy"
    if attempt.status == CallStatus.FAILED:
        return "failed"
    if attempt.status in (CallStatus.NO_ANSWER, CallStatus.CANCELED):
        return "no-answer"
    if attempt.status == CallStatus.COMPLETED and attempt.answered_at is None and response is None:
        return "no-answer"
    return "dropped"


def settle_attempt(session: Session, attempt: CallAttempt, now: datetime) -> None:
    """A call ended: decide what happens to its target (final, or pending with a scheduled retry)."""
    target = session.get(RoundTarget, attempt.target_id, with_for_update=True)
    assert target is not None
    if target.state in FINAL_TARGET_STATES:
        return
    response = session.scalar(select(Response).where(Response.target_id == target.id))
    if response is not None and response.status in FINAL_RESPONSE_STATUSES:
        finish_from_response(session, target, response)
        return
    round_ = session.get(Round, target.round_id)
    assert round_ is not None
    # Another live attempt for this target (an inbound call-back) keeps it in its current state.
    other_live = session.scalar(
        select(func.count())
        .select_from(CallAttempt)
        .where(
            CallAttempt.target_id == target.id,
            CallAttempt.id != attempt.id,
            CallAttempt.status.not_in(FINAL_CALL_STATUSES),
        )
    )
    if other_live:
        return
    outcome = outcome_of(attempt, response)
    if round_.status == RoundStatus.CANCELLED:
        finish_target(session, target, TargetState.CANCELLED, "cancelled", now)
        return
    if target.attempts >= round_.max_attempts:
        finish_target(session, target, TargetState.UNREACHABLE, outcome, now)
        return
    delay = int(round_.retry.get(outcome, round_.retry.get("no-answer", 7200)))
    target.state = TargetState.PENDING
    target.last_outcome = outcome
    target.next_attempt_at = now + timedelta(seconds=delay)
    target.claimed_at = None
    target.updated_at = now
    log.info("event=retry_scheduled target=%s outcome=%s in_seconds=%s attempts=%s", target.id, outcome, delay, target.attempts)


def expire_deadline(session: Session, round_: Round, now: datetime) -> int:
    """At the deadline the round stops dialling: remaining pending targets end as not reached."""
    result = session.execute(
        update(RoundTarget)
        .where(RoundTarget.round_id == round_.id, RoundTarget.state == TargetState.PENDING)
        .values(state=TargetState.UNREACHABLE, final_at=now, updated_at=now, last_outcome="deadline")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0
