"""Call attempts and their targets: claiming work, recording what the provider reports, settling outcomes.

Every transition is one function here. They take a Session and never commit.

Exactly-once dialling rests on conditional UPDATEs of the attempt row:

- ``claim_due_targets``: a pending target becomes ``dialing`` with a ``claimed`` attempt (one winner).
- ``begin_create``: just before the create request is sent, a ``claimed`` attempt of a running round is
  marked "create started" (``error_code`` = ``creating``, ``placed_at`` = then). Whoever finds the mark later
  (a re-run of the job, the sweeper) knows the call may exist and looks it up at the provider before doing
  anything else; it never dials blindly.
- ``release_claim``: only an attempt whose create never started is deleted and its target made ``pending``
  again, so a claim can never be released under a create request that is on its way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.logs import mask_phones
from campaigns.models import (
    CALL_STATUS_ORDER,
    FINAL_CALL_STATUSES,
    FINAL_RESPONSE_STATUSES,
    FINAL_TARGET_STATES,
    CallAttempt,
    CallDirection,
    CallStatus,
    DoNotCall,
    Household,
    PhoneStatus,
    Response,
    ResponseStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from campaigns.schedule import NOT_DIALLED, next_open, plan_retry

log = logging.getLogger("sanlv.calls")

# The create-started marks (CallAttempt.error_code of a ``claimed`` attempt, with placed_at = when):
CREATING = "creating"  # a create request was (or is being) sent; its outcome is unknown
AMBIGUOUS = "ambiguous"  # a create request got a 5xx: the call may exist; look it up before anything else
CREATE_MARKS = (CREATING, AMBIGUOUS)

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


def listed(phone_column=RoundTarget.phone):
    """True where the number in ``phone_column`` is on the do-not-call list (a correlated EXISTS)."""
    return select(DoNotCall.id).where(DoNotCall.phone == phone_column).exists()


DNC_OUTCOME = "do-not-call"


def finish_listed_targets(session: Session, phone: str | None = None, round_id: int | None = None) -> int:
    """Targets still waiting (``pending``) whose number is on the do-not-call list end as ``opted_out``.

    With ``phone``: that number's targets in every round (the moment it is listed). With ``round_id``: that
    round's (the dispatcher, once nothing else is due). Targets being dialled or in a call are left to the
    placing step and to the call's end, which check the list too.
    """
    now = clock.now()
    stmt = update(RoundTarget).where(RoundTarget.state == TargetState.PENDING)
    if phone is not None:
        stmt = stmt.where(RoundTarget.phone == phone)
    if round_id is not None:
        stmt = stmt.where(RoundTarget.round_id == round_id, listed())
    result = session.execute(
        stmt.values(
            state=TargetState.OPTED_OUT, last_outcome=DNC_OUTCOME, final_at=now, updated_at=now, next_attempt_at=None
        ).execution_options(synchronize_session=False)
    )
    count = result.rowcount or 0
    if count:
        log.info("event=dnc_targets_finished round=%s count=%s", round_id if round_id is not None else "any", count)
    return count


def claim_due_targets(session: Session, round_: Round, now: datetime, limit: int) -> list[Claim]:
    """Claim up to ``limit`` due pending targets with one conditional UPDATE, and a ``claimed`` attempt each.

    A target claimed by another dispatcher in the meantime is skipped (it no longer matches the UPDATE), so a
    duplicated or re-run job never creates a second attempt; nor can two attempts get the same number.

    Numbers on the do-not-call list are never claimed, whenever they were added: both the candidates' query
    and the conditional UPDATE exclude them. Once nothing else is due, the round's listed targets end as
    ``opted_out`` (so the round can complete).
    """
    if limit <= 0:
        return []
    due = or_(RoundTarget.next_attempt_at.is_(None), RoundTarget.next_attempt_at <= now)
    candidates = session.scalars(
        select(RoundTarget.id)
        .where(
            RoundTarget.round_id == round_.id,
            RoundTarget.state == TargetState.PENDING,
            due,
            RoundTarget.attempts < round_.max_attempts + RoundTarget.call_backs,
            ~listed(),
        )
        # A call-back the household asked for comes first, then what has waited longest.
        .order_by(
            RoundTarget.call_back_requested_at.is_(None),
            RoundTarget.call_back_requested_at,
            RoundTarget.next_attempt_at.is_not(None),
            RoundTarget.next_attempt_at,
            RoundTarget.id,
        )
        .limit(limit)
    ).all()
    if not candidates:
        finish_listed_targets(session, round_id=round_.id)
        return []
    # One conditional UPDATE for them all: a target another dispatcher took meanwhile no longer matches.
    claimed = session.execute(
        update(RoundTarget)
        .where(
            RoundTarget.id.in_(candidates),
            RoundTarget.state == TargetState.PENDING,
            due,
            RoundTarget.attempts < round_.max_attempts + RoundTarget.call_backs,
            ~listed(),
        )
        .values(
            state=TargetState.DIALING,
            attempts=RoundTarget.attempts + 1,
            claimed_at=now,
            updated_at=now,
        )
        .returning(RoundTarget.id, RoundTarget.phone, RoundTarget.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        return []
    claimed.sort()
    # The attempt number is the target's new count: (target, number) is unique, so no claim is made twice.
    rows = session.execute(
        insert(CallAttempt).returning(CallAttempt.id, sort_by_parameter_order=True),
        [
            {
                "round_id": round_.id,
                "target_id": target_id,
                "number": attempts,
                "status": CallStatus.CLAIMED,
                "direction": CallDirection.OUTBOUND,
                "last_sequence_number": -1,
                "created_at": now,
            }
            for target_id, _phone, attempts in claimed
        ],
    ).all()
    return [Claim(row[0], target_id, phone) for row, (target_id, phone, _n) in zip(rows, claimed, strict=True)]


def _create_started_is(started: datetime | None):
    return CallAttempt.placed_at.is_(None) if started is None else CallAttempt.placed_at == started


def begin_create(session: Session, attempt_id: int, started: datetime | None, now: datetime) -> bool:
    """Mark "create started" on a claimed attempt of a running round, just before the create request.

    Args:
        started: the mark the caller saw (None: none); a mark changed meanwhile by another run means no.

    Returns:
        True if this caller may send the create request now; False if the attempt was released, placed or
        re-marked, its round is no longer running (paused, cancelled), or its number is on the do-not-call list
        by now — then nothing may be sent.
    """
    round_running = (
        select(Round.id).where(Round.id == CallAttempt.round_id, Round.status == RoundStatus.RUNNING).exists()
    )
    number_listed = (
        select(DoNotCall.id)
        .join(RoundTarget, RoundTarget.phone == DoNotCall.phone)
        .where(RoundTarget.id == CallAttempt.target_id)
        .exists()
    )
    result = session.execute(
        update(CallAttempt)
        .where(
            CallAttempt.id == attempt_id,
            CallAttempt.status == CallStatus.CLAIMED,
            CallAttempt.call_sid.is_(None),
            _create_started_is(started),
            round_running,
            ~number_listed,
        )
        .values(error_code=CREATING, error_message=None, placed_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def create_not_sent(session: Session, attempt_id: int, started: datetime) -> bool:
    """Take back our "create started" mark: the request was never sent, or was refused (429, 4xx) unprocessed."""
    result = session.execute(
        update(CallAttempt)
        .where(
            CallAttempt.id == attempt_id,
            CallAttempt.status == CallStatus.CLAIMED,
            CallAttempt.call_sid.is_(None),
            _create_started_is(started),
        )
        .values(error_code=None, placed_at=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_ambiguous(session: Session, attempt_id: int, started: datetime, message: str) -> None:
    """The create request got a 5xx: the call may exist (the provider's list will say)."""
    session.execute(
        update(CallAttempt)
        .where(
            CallAttempt.id == attempt_id,
            CallAttempt.status == CallStatus.CLAIMED,
            CallAttempt.call_sid.is_(None),
            _create_started_is(started),
        )
        .values(error_code=AMBIGUOUS, error_message=mask_phones(message)[:2000])
        .execution_options(synchronize_session=False)
    )


def release_claim(session: Session, attempt_id: int, reason: str, started: datetime | None = None) -> bool:
    """Undo a claim whose call was never created: the attempt row goes, the target is pending again.

    Conditional: only a ``claimed`` attempt without a CallSid whose create mark is still ``started`` (None:
    no create ever started) is released. Returns False, changing nothing, otherwise.
    """
    target_id = session.scalar(select(CallAttempt.target_id).where(CallAttempt.id == attempt_id))
    if target_id is None:
        return False
    result = session.execute(
        delete(CallAttempt).where(
            CallAttempt.id == attempt_id,
            CallAttempt.status == CallStatus.CLAIMED,
            CallAttempt.call_sid.is_(None),
            _create_started_is(started),
        )
    )
    if result.rowcount != 1:
        return False
    # The attempt never happened: it does not count against the household's budget.
    session.execute(
        update(RoundTarget)
        .where(RoundTarget.id == target_id, RoundTarget.attempts > 0)
        .values(attempts=RoundTarget.attempts - 1)
    )
    session.execute(
        update(RoundTarget)
        .where(RoundTarget.id == target_id, RoundTarget.state == TargetState.DIALING)
        .values(state=TargetState.PENDING, claimed_at=None, last_outcome=reason)
    )
    cancelled = select(Round.id).where(Round.id == RoundTarget.round_id, Round.status == RoundStatus.CANCELLED)
    now = clock.now()
    # A claim released after its round was cancelled (a create that never happened) ends with the round.
    session.execute(
        update(RoundTarget)
        .where(RoundTarget.id == target_id, RoundTarget.state == TargetState.PENDING, cancelled.exists())
        .values(state=TargetState.CANCELLED, final_at=now, updated_at=now, last_outcome="cancelled")
    )
    # A claim given back because its number was listed meanwhile ends here: it is never claimed again.
    session.execute(
        update(RoundTarget)
        .where(RoundTarget.id == target_id, RoundTarget.state == TargetState.PENDING, listed())
        .values(state=TargetState.OPTED_OUT, final_at=now, updated_at=now, last_outcome=DNC_OUTCOME)
    )
    return True


def mark_placed(session: Session, attempt: CallAttempt, sid: str, status: str, now: datetime) -> None:
    """The provider accepted the call (or a look-up found the call a create request made)."""
    attempt.call_sid = sid
    new = _parse_status(status) or CallStatus.QUEUED
    if attempt.status == CallStatus.CLAIMED:
        attempt.status = new if new not in FINAL_CALL_STATUSES else CallStatus.QUEUED
    if attempt.error_code in CREATE_MARKS:
        attempt.error_code = None
        attempt.error_message = None
    attempt.placed_at = now


def record_placed(
    session: Session,
    attempt_id: int,
    sid: str,
    status: str,
    now: datetime,
    *,
    account: str | None = None,
    from_number: str | None = None,
) -> None:
    """``mark_placed`` as one UPDATE, for the dialler's hot path (the attempt need not be loaded); also the
    Twilio account the call went through and the caller ID it shows."""
    new = _parse_status(status) or CallStatus.QUEUED
    if new in FINAL_CALL_STATUSES:
        new = CallStatus.QUEUED
    placed = session.execute(
        update(CallAttempt)
        .where(CallAttempt.id == attempt_id, CallAttempt.status == CallStatus.CLAIMED)
        .values(
            status=new, call_sid=sid, placed_at=now, error_code=None, error_message=None,
            account=account, from_number=from_number,
        )
        .execution_options(synchronize_session=False)
    )
    if placed.rowcount == 1:
        return  # the usual case: the sid is set, nothing below would match
    # A status callback may have adopted the call first (and moved it on): only the sid is ours to set then.
    session.execute(
        update(CallAttempt)
        .where(CallAttempt.id == attempt_id, CallAttempt.call_sid.is_(None))
        .values(call_sid=sid, placed_at=now, account=account, from_number=from_number)
        .execution_options(synchronize_session=False)
    )


def adopt_call_sid(session: Session, attempt_id: int, call_sid: str) -> bool:
    """Save the CallSid of a call whose attempt never got one (its worker died right after creating the call):
    a webhook names both. Returns False, changing nothing, if the attempt has a CallSid by now.

    The CallSid's uniqueness rule refuses one that another attempt has (IntegrityError).
    """
    result = session.execute(
        update(CallAttempt)
        .where(CallAttempt.id == attempt_id, CallAttempt.call_sid.is_(None))
        .values(call_sid=call_sid)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    log.info("event=call_adopted attempt=%s sid=%s", attempt_id, call_sid)
    return True


def mark_permanent_failure(session: Session, attempt: CallAttempt, code: int | None, message: str) -> None:
    """The number can never be called: the attempt was not placed, the target and the household say so."""
    now = clock.now()
    # The provider's wording may quote the number (21211: "The 'To' number +86... is not valid"): kept masked.
    message = mask_phones(message)
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
    if attempt.status == CallStatus.CLAIMED and attempt.error_code in CREATE_MARKS:
        # The provider reports on the call: whatever the create request's fate looked like, it exists.
        attempt.error_code = None
        attempt.error_message = None
    if new in FINAL_CALL_STATUSES:
        never_rang = new == CallStatus.CANCELED and attempt.status in (CallStatus.CLAIMED, CallStatus.QUEUED)
        attempt.status = new
        attempt.ended_at = now
        if duration is not None:
            attempt.duration_seconds = duration
        if error_code:
            attempt.error_code = error_code
        settle_attempt(session, attempt, now, outcome=NOT_DIALLED if never_rang else None)
        return True
    if CALL_STATUS_ORDER.get(new, 0) > CALL_STATUS_ORDER.get(attempt.status, 0):
        attempt.status = new
        if new == CallStatus.IN_PROGRESS:
            attempt.answered_at = attempt.answered_at or now
    return True


# Picking up moves a call that has not got that far to in-progress, and a target being dialled to in-call.
ANSWERABLE_CALL_STATUSES = frozenset(
    s
    for s in CallStatus
    if s not in FINAL_CALL_STATUSES and CALL_STATUS_ORDER.get(s, 0) < CALL_STATUS_ORDER[CallStatus.IN_PROGRESS]
)
ANSWERABLE_TARGET_STATES = frozenset({TargetState.PENDING, TargetState.DIALING})
_CALL_STATUS = CallAttempt.__table__.c.status.type


def mark_answered(session: Session, attempt_id: int, target_id: int, answered_by: str | None = None) -> None:
    """The resident picked up (the voice webhook arrived): the call is in progress, its target in a call.

    Conditional statements, each row judged as it is when it is written: a call that a status callback has
    moved on (or ended) keeps its status, a target that is final or no longer being dialled keeps its state.
    So the caller need not have read either row in its transaction (see campaigns.interview).
    """
    now = clock.now()
    values = {
        "status": case(
            (CallAttempt.status.in_(sorted(ANSWERABLE_CALL_STATUSES)), literal(CallStatus.IN_PROGRESS, _CALL_STATUS)),
            else_=CallAttempt.status,
        ),
        "answered_at": func.coalesce(CallAttempt.answered_at, now),
    }
    if answered_by:
        values["answered_by"] = answered_by
    session.execute(
        update(CallAttempt)
        .where(CallAttempt.id == attempt_id)
        .values(values)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(RoundTarget)
        .where(RoundTarget.id == target_id, RoundTarget.state.in_(sorted(ANSWERABLE_TARGET_STATES)))
        .values(state=TargetState.IN_CALL, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def finish_target(session: Session, target: RoundTarget, state: TargetState, outcome: str, now: datetime) -> None:
    """Move a target to a final state (a final state is never left)."""
    if target.state in FINAL_TARGET_STATES:
        return
    target.state = state
    target.last_outcome = outcome
    target.call_back_requested_at = None
    target.final_at = now
    target.updated_at = now
    target.next_attempt_at = None


def finish_from_response(session: Session, target: RoundTarget, status: ResponseStatus) -> None:
    """The interview reached a final ``status``: so does the target."""
    state = RESPONSE_TO_TARGET.get(status)
    if state is not None:
        finish_target(session, target, state, status.value, clock.now())


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


def settle_attempt(session: Session, attempt: CallAttempt, now: datetime, outcome: str | None = None) -> None:
    """A call ended: decide what happens to its target (final, or pending with a scheduled retry).

    Args:
        outcome: the retry outcome when the caller knows better than the call's status (``not-dialled``).
    """
    target = session.get(RoundTarget, attempt.target_id, with_for_update=True)
    assert target is not None
    if target.state in FINAL_TARGET_STATES:
        return
    response = session.scalar(select(Response).where(Response.target_id == target.id))
    if response is not None and response.status in FINAL_RESPONSE_STATUSES:
        finish_from_response(session, target, response.status)
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
    outcome = outcome or outcome_of(attempt, response)
    if round_.status == RoundStatus.CANCELLED:
        finish_target(session, target, TargetState.CANCELLED, "cancelled", now)
        return
    if target.phone is not None and session.scalar(select(listed(literal(target.phone)))):
        # Listed while the call was on: no retry, in this round or any other.
        finish_target(session, target, TargetState.OPTED_OUT, DNC_OUTCOME, now)
        return
    plan = plan_retry(
        now,
        outcome,
        target.attempts,
        max_attempts=round_.max_attempts + target.call_backs,
        retry=round_.retry,
        windows=round_.windows,
        blocked=round_.blocked_dates or [],
        tz=_timezone(),
        ends_at=round_.ends_at,
    )
    if plan.at is None:
        # Attempts or calling time used up without an interview: not reached.
        finish_target(session, target, TargetState.UNREACHABLE, outcome, now)
        log.info("event=target_unreachable target=%s outcome=%s reason=%s", target.id, outcome, plan.reason.replace(" ", "_"))
        return
    target.state = TargetState.PENDING
    target.last_outcome = outcome
    target.next_attempt_at = plan.at
    target.call_back_requested_at = None  # a call-back that was placed is spent, whatever became of it
    target.claimed_at = None
    target.updated_at = now
    log.info(
        "event=retry_scheduled target=%s outcome=%s at=%s attempts=%s",
        target.id,
        outcome,
        plan.at.isoformat(),
        target.attempts,
    )


# Call-backs a household may ask for in one round. Caller ID can be spoofed: whoever calls "from" a number
# can make us ring it, but only this often.
CALL_BACKS_PER_ROUND = 2
# Targets an inbound call may ask to call back: waiting to be dialled, or given up after the attempt budget
# was used (a call-back is one dial beyond the budget). A target being dialled or in a call needs none.
CALL_BACK_STATES = (TargetState.PENDING, TargetState.UNREACHABLE)


def request_call_back(session: Session, target: RoundTarget, round_: Round, now: datetime) -> datetime | None:
    """The household of ``target`` called our number: call it back before any other target of the round, at
    ``now`` if a calling window is open, else when the next one opens. The call-back is one dial beyond the
    round's attempt budget; a target the budget had made unreachable is pending again for it.

    The caller holds the target's row lock (the dispatcher's claim waits for it).

    Returns:
        When the call-back is due; None if there is none: the round is not running or paused, the target is
        final (but for an exhausted budget) or has a call live, a call-back is pending already, the round's
        call-backs of this household are used up, the number is on the do-not-call list, or no window opens
        before the round's deadline.
    """
    if round_.status not in (RoundStatus.RUNNING, RoundStatus.PAUSED):
        return None
    if target.state not in CALL_BACK_STATES or target.call_back_requested_at is not None:
        return None
    if target.state == TargetState.UNREACHABLE and target.last_outcome == "deadline":
        return None
    if target.call_backs >= CALL_BACKS_PER_ROUND:
        return None
    if target.phone is None or session.scalar(select(listed(literal(target.phone)))):
        return None
    live = session.scalar(
        select(func.count())
        .select_from(CallAttempt)
        .where(CallAttempt.target_id == target.id, CallAttempt.status.not_in(FINAL_CALL_STATUSES))
    )
    if live:
        return None
    start = max(now, round_.starts_at) if round_.starts_at is not None else now
    at = next_open(round_.windows, round_.blocked_dates or [], start, _timezone())
    if at is None or (round_.ends_at is not None and at >= round_.ends_at):
        return None
    at = at.astimezone(UTC)
    target.call_backs += 1
    target.call_back_requested_at = now
    target.next_attempt_at = at
    target.updated_at = now
    if target.state == TargetState.UNREACHABLE:
        target.state = TargetState.PENDING
        target.final_at = None
        target.last_outcome = "call-back"
    log.info("event=call_back_requested target=%s round=%s at=%s", target.id, round_.id, at.isoformat())
    return at


def _timezone():
    """SANLV_TIMEZONE, where calling windows live (read through the settings, validated once)."""
    from campaigns.runtime import get_runtime

    return get_runtime().settings.tz


def expire_deadline(session: Session, round_: Round, now: datetime) -> int:
    """At the deadline the round stops dialling: remaining pending targets end as not reached."""
    result = session.execute(
        update(RoundTarget)
        .where(RoundTarget.round_id == round_.id, RoundTarget.state == TargetState.PENDING)
        .values(state=TargetState.UNREACHABLE, final_at=now, updated_at=now, last_outcome="deadline")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


# --- the sweeper's queries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenClaim:
    """A ``claimed`` attempt: its create request has not (or not knowingly) succeeded."""

    attempt_id: int
    round_id: int
    phone: str
    created_at: datetime
    create_started: datetime | None  # the create-started mark's time, None if no create ever started
    mark: str | None


def open_claims(session: Session, claimed_before: datetime) -> list[OpenClaim]:
    """Claimed attempts (any round) claimed before ``claimed_before``, oldest first."""
    rows = session.execute(
        select(
            CallAttempt.id,
            CallAttempt.round_id,
            RoundTarget.phone,
            CallAttempt.created_at,
            CallAttempt.placed_at,
            CallAttempt.error_code,
        )
        .join(RoundTarget, RoundTarget.id == CallAttempt.target_id)
        .where(
            CallAttempt.status == CallStatus.CLAIMED,
            CallAttempt.call_sid.is_(None),
            CallAttempt.direction == CallDirection.OUTBOUND,
            CallAttempt.created_at < claimed_before,
        )
        .order_by(CallAttempt.id)
    ).all()
    return [
        OpenClaim(
            attempt_id=row[0],
            round_id=row[1],
            phone=row[2],
            created_at=row[3],
            create_started=row[4] if row[5] in CREATE_MARKS else None,
            mark=row[5] if row[5] in CREATE_MARKS else None,
        )
        for row in rows
    ]


# ``last_heard_at`` is written at most this often per call: the sweeper's quiet limit is a minute or more
# (campaigns.questionnaire), so a mark up to this much older than the last webhook only makes it ask the
# provider about a live call a little sooner, while most of a call's dozen webhooks skip one UPDATE.
HEARD_EVERY = timedelta(seconds=10)
_HEARD = (
    update(CallAttempt.__table__)
    .where(CallAttempt.__table__.c.id == bindparam("attempt_id"))
    .values(last_heard_at=bindparam("now"))
)


def heard_from(
    session: Session, attempt_id: int, now: datetime | None = None, *, last: datetime | None = None
) -> None:
    """A webhook about the attempt's call arrived (or the provider said it is still live): it is not quiet.

    One UPDATE by primary key in the caller's transaction (the row need not have been read), skipped when
    ``last`` (the attempt's ``last_heard_at`` as the caller read it) is less than HEARD_EVERY old.
    """
    now = now or clock.now()
    if last is not None and timedelta(0) <= now - last < HEARD_EVERY:
        return
    session.connection().execute(_HEARD, {"attempt_id": attempt_id, "now": now})


@dataclass(frozen=True)
class QuietCall:
    attempt_id: int
    round_id: int
    call_sid: str
    heard_at: datetime  # the last webhook about it, else when it was placed (or claimed)
    account: str | None  # the Twilio account it went through (None: the single account)


def quiet_calls(session: Session, heard_before: datetime) -> list[QuietCall]:
    """Calls (any round, any direction) with a CallSid and no final status, last heard of before the limit."""
    # coalesce() takes its first argument's type (UTCDateTime): aware UTC out, naive UTC bound.
    heard = func.coalesce(CallAttempt.last_heard_at, CallAttempt.placed_at, CallAttempt.created_at)
    rows = session.execute(
        select(CallAttempt.id, CallAttempt.round_id, CallAttempt.call_sid, heard, CallAttempt.account)
        .where(
            CallAttempt.status.not_in(FINAL_CALL_STATUSES),
            CallAttempt.call_sid.is_not(None),
            heard < heard_before,
        )
        .order_by(CallAttempt.id)
    ).all()
    return [QuietCall(*row) for row in rows]
