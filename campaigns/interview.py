"""The interview state machine: persists what the pure flow (campaigns.flow) decides, one implementation of
each transition on both databases.

Every key press is stored once (KeyPress, unique per response and prompt sequence number); each answer is
written when its key press arrives; a replayed webhook changes nothing and gets the current prompt again.
A different key pressed later for an answered question (read-back "re-choose") replaces the answer and
keeps the old one in AnswerChange. The response completes the moment its last rate question is answered;
its target becomes final with it. Follow-up items are kept current here too, as the answers that decide them
are stored (campaigns.followups.sync_response).

Inbound calls (:func:`begin_inbound_call`): caller ID can be spoofed, so by default nobody answers on a call
they made to us. Every caller hears the same greeting and is called back by the dialler, which reaches only
whoever holds the number. A round created with ``inbound=answer`` interviews the caller instead: the caller's
number is found among its non-final targets, gets an inbound CallAttempt and resumes the interview here,
through the same transitions as an outbound call; the response is marked ``inbound``.

Read, then write
----------------
The voice and key-press webhooks each run in two steps, each its own transaction (ivr.views.in_transaction):

1. **Read** (:func:`read_call`, :func:`read_press`), in a read session (campaigns.db.make_read_session_factory,
   autocommit): the call, its interview and the answers so far, in one query. Everything is decided here,
   outside any lock: a bad request is refused (:class:`InterviewError`); a replay -- a press already stored --
   is answered from what is stored, with nothing to write; otherwise the whole turn is worked out: the press,
   the answer and its paradata, the next prompt, whether the interview completes or ends.
2. **Write** (:func:`begin_call`, :func:`store_press`), in one short write transaction. Its first statement
   moves the interview on *from exactly the prompt that was read*: an UPDATE of the response whose WHERE
   names the prompt's sequence number, its position and the status read. If another delivery moved the
   interview on in between, it matches no row and :class:`ConcurrentChange` rolls the transaction back; the
   caller runs both steps again, and the new read finds the press stored and answers it as a replay. The
   press, the answer, the target and the follow-up item are written after it, in the same transaction.

Why this is correct: every change to an interview changes what that first statement checks. Each prompt
played takes the next sequence number (``prompt_seq`` only grows), an interview that ends clears its
position (and only a new prompt, with a new number, sets it again), and the status is checked too. So when
the statement matches, the interview is still exactly as it was read, answers and paradata included, and
the decision taken on that read holds (the read's few statements need not share one snapshot: anything
newer than the first would have moved the prompt on). Two writers of one interview are serialised by the database: on
SQLite a write transaction holds the database's one write lock from its ``BEGIN IMMEDIATE`` to its commit;
on PostgreSQL the UPDATE locks the response's row until commit, and a concurrent one waits for it, then
re-checks its WHERE against the committed row and matches nothing. The unique keys -- (response, seq) on key
presses, (response, question) on answers, one response per target -- back this up: a violation is handled as
a concurrent delivery too. Rows of other tables are written with conditional statements that judge each row
as it is when written (campaigns.calls.mark_answered), or after locking it (the target, when the interview
settles it), in one order -- response, then attempt, then target -- that the status callbacks keep too (an
inbound call-back locks its target first, against the dialler, and starts only when no other call of the
household is live).

Why two steps: SQLite has one writer at a time, and a transaction that may write has to take the write lock
when it begins (a deferred one that reads first and writes later can fail with SQLITE_BUSY without waiting).
Reading inside the write transaction held that lock while the state was read and the turn computed, and
every webhook of every call queued behind it. Now the read takes no lock a writer needs (in WAL mode a
statement in autocommit reads the last commit), the lock is held only for the few statements that write, and
the writers of a process take it in turn instead of polling for it (campaigns.db.WriteGate). A replay is
answered by the read alone. PostgreSQL runs the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import (
    Boolean,
    Connection,
    Float,
    Integer,
    String,
    bindparam,
    case,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from campaigns import clock, dnc
from campaigns.calls import adopt_call_sid, finish_from_response, mark_answered, request_call_back
from campaigns.errors import SanlvError
from campaigns.flow import (
    Ask,
    End,
    KeyKind,
    Outcome,
    Turn,
    advance,
    parse_position,
    position_key,
    rates_complete,
    start,
)
from campaigns.followups import decides_followup, sync_response
from campaigns.models import (
    FINAL_CALL_STATUSES,
    FINAL_RESPONSE_STATUSES,
    FINAL_TARGET_STATES,
    Answer,
    AnswerChange,
    CallAttempt,
    CallDirection,
    CallStatus,
    InboundMode,
    KeyPress,
    QuestionnaireVersion,
    Response,
    ResponseStatus,
    Round,
    RoundStatus,
    RoundTarget,
    UTCDateTime,
    mirror_response_status,
)
from campaigns.phones import PhoneNumberError, normalise
from campaigns.questionnaire import (
    Questionnaire,
    builtin_questionnaire,
    parse_questionnaire,
)

log = logging.getLogger("sanlv.ivr")

ACTIVE_ROUND_STATUSES = (RoundStatus.RUNNING, RoundStatus.PAUSED)
# Outcomes of a key press at a question that count as a try (a repeat is the resident asking, not a try).
TRY_OUTCOMES = (KeyKind.ANSWER.value, KeyKind.INVALID.value, KeyKind.SILENCE.value)
# The final status an interview still in progress takes when the flow ends it (None: it stays in progress).
_END_STATUS = {
    Outcome.COMPLETED: ResponseStatus.COMPLETED,
    Outcome.REFUSED: ResponseStatus.REFUSED,
    Outcome.INELIGIBLE: ResponseStatus.INELIGIBLE,
    Outcome.OPTED_OUT: ResponseStatus.OPTED_OUT,
}


class ConcurrentChange(RuntimeError):
    """Another request changed the interview after this one read it: roll back and try again."""


class InterviewError(SanlvError, ValueError):
    """A webhook does not fit the interview's state (wrong step, unknown attempt). Answered with a 4xx."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Prompt:
    """What to play next: an Ask with the sequence number its Gather carries, or an End.

    ``chosen`` is the key being read back when the Ask is a confirmation.
    """

    action: Ask | End
    seq: int
    questionnaire: Questionnaire
    chosen: str | None = None


@dataclass(frozen=True)
class InboundReply:
    """An inbound call: the interview's prompt (a round that answers on inbound calls), or ``message`` and
    hang up."""

    questionnaire: Questionnaire
    attempt_id: int | None = None
    prompt: Prompt | None = None
    message: str | None = None
    call_back_round: int | None = None  # the round whose dialler calls the number back (after the commit)


@dataclass(frozen=True)
class Call:
    """A call attempt and its household's interview as one read found them (see "Read, then write")."""

    attempt_id: int
    direction: CallDirection
    adopt_sid: str | None  # the webhook's CallSid, to be saved: the attempt never got one
    target_id: int
    round_id: int
    phone: str
    village_id: int
    questionnaire: Questionnaire
    response_id: int | None  # None: no interview has started
    status: ResponseStatus | None
    current_step: str | None
    current_try: int
    prompt_seq: int
    prompted_at: datetime | None
    heard_at: datetime | None  # the attempt's last_heard_at (see campaigns.calls.heard_from)
    answers: Mapping[str, tuple[int, str]]  # question -> (answer id, key)

    @property
    def digits(self) -> dict[str, str]:
        """The answers so far: question -> key."""
        return {question: digit for question, (_id, digit) in self.answers.items()}


@dataclass(frozen=True)
class Press:
    """One Gather result as :func:`read_press` found it: a replay to answer again, or the turn to store."""

    call: Call
    position: str
    seq: int
    digits: str | None
    turn: Turn | None = None
    replay: Prompt | None = None  # a press already stored: play this prompt again, store nothing

    @property
    def nothing_to_write(self) -> bool:
        return self.replay is not None and self.call.adopt_sid is None


# Stored versions are immutable: parsed once per process, keyed by id and checksum (the checksum guards
# against a database that was recreated under a running process, as tests do).
_questionnaires: dict[tuple[int, str], Questionnaire] = {}


def _cached_questionnaire(db: Session | Connection, version_id: int, checksum: str) -> Questionnaire:
    cached = _questionnaires.get((version_id, checksum))
    if cached is None:
        content = db.scalar(select(QuestionnaireVersion.content).where(QuestionnaireVersion.id == version_id))
        assert content is not None
        cached = parse_questionnaire(content, f"questionnaire version {version_id}")
        _questionnaires[(version_id, checksum)] = cached
    return cached


def questionnaire_for(session: Session, round_: Round) -> Questionnaire:
    """The questionnaire version the round launched with."""
    checksum = session.scalar(
        select(QuestionnaireVersion.checksum).where(QuestionnaireVersion.id == round_.questionnaire_id)
    )
    assert checksum is not None
    return _cached_questionnaire(session, round_.questionnaire_id, checksum)


@lru_cache(maxsize=1)
def default_questionnaire() -> Questionnaire:
    """The built-in questionnaire: its messages greet callers that belong to no round."""
    return builtin_questionnaire()


# --- reading ---------------------------------------------------------------------------------------------


def read_call(session: Session, attempt_id: int, call_sid: str) -> Call:
    """The call of attempt ``attempt_id`` and its interview, for a webhook of the call ``call_sid``.

    A call whose CallSid was never saved (the worker died right after creating it) is adopted: the writing
    step saves it (``adopt_sid``).

    Raises:
        InterviewError: the attempt is unknown (404), or the CallSid is another call's (409).
    """
    rows = session.connection().execute(_CALL_STATE, {"attempt_id": attempt_id}).all()
    if not rows:
        raise InterviewError(f"attempt {attempt_id} is not known", 404)
    (known_sid, direction, target_id, round_id, phone, village_id, version_id, checksum, response_id, status,
     current, try_number, prompt_seq, prompted_at, heard_at, *_answer) = rows[0]  # fmt: skip
    return Call(
        attempt_id=attempt_id,
        direction=direction,
        adopt_sid=_sid_to_adopt(session, attempt_id, known_sid, call_sid),
        target_id=target_id,
        round_id=round_id,
        phone=phone,
        village_id=village_id,
        questionnaire=_cached_questionnaire(session, version_id, checksum),
        response_id=response_id,
        status=status,
        current_step=current,
        current_try=try_number or 0,
        prompt_seq=prompt_seq or 0,
        prompted_at=prompted_at,
        heard_at=heard_at,
        answers={row[-2]: (row[-3], row[-1]) for row in rows if row[-3] is not None},
    )


def _sid_to_adopt(session: Session, attempt_id: int, known: str | None, call_sid: str) -> str | None:
    """The CallSid to save on the attempt (None: it has it already).

    Raises:
        InterviewError: 409, the CallSid belongs to another call.
    """
    if known == call_sid:
        return None
    if known is not None:
        raise InterviewError(f"CallSid does not match attempt {attempt_id}", 409)
    other = session.scalar(select(CallAttempt.id).where(CallAttempt.call_sid == call_sid))
    if other is not None:
        raise InterviewError(f"CallSid {call_sid} belongs to another attempt", 409)
    return call_sid


def check_call_sid(session: Session, attempt: CallAttempt, call_sid: str) -> None:
    """For a webhook handled in one write transaction (status callbacks): the webhook's CallSid must be the
    attempt's; a call whose sid was never saved is adopted.

    Raises:
        InterviewError: 409, the CallSid belongs to another call.
    """
    sid = _sid_to_adopt(session, attempt.id, attempt.call_sid, call_sid)
    if sid is not None:
        _adopt(session, attempt.id, sid)
        set_committed_value(attempt, "call_sid", sid)


def _adopt(session: Session, attempt_id: int, call_sid: str) -> None:
    if not adopt_call_sid(session, attempt_id, call_sid):
        raise ConcurrentChange(f"attempt {attempt_id} got a CallSid meanwhile")


def read_press(
    session: Session, attempt_id: int, call_sid: str, position: str, seq: int, digits: str | None
) -> Press:
    """One Gather result (``digits``) or silence (None) for prompt ``seq`` asking ``position`` in the call
    ``call_sid`` of attempt ``attempt_id``: the reading step (see "Read, then write").

    Raises:
        InterviewError: the attempt is unknown (404) or belongs to another call (409), no interview has
            started (409), the position is not a question (400), or it is not the one being asked (409).
    """
    call = read_call(session, attempt_id, call_sid)
    if call.response_id is None:
        raise InterviewError(f"attempt {attempt_id}: no interview has started", 409)
    questionnaire = call.questionnaire
    try:
        step, confirm = parse_position(questionnaire, position)
    except KeyError:
        raise InterviewError(f"step={position!r} is not a question of this questionnaire", 400) from None
    db = session.connection()
    if seq != call.prompt_seq or position != call.current_step:
        # Not the prompt being asked: a replay of one already answered (its press is stored), or wrong.
        if db.execute(_PRESS_AT, {"response_id": call.response_id, "seq": seq}).first() is not None:
            log.info("event=replayed_webhook attempt=%s response=%s seq=%s", attempt_id, call.response_id, seq)
            return Press(call, position, seq, digits, replay=_current_prompt(call))
        raise InterviewError(
            f"step={position} n={seq} is not the current question (current: {call.current_step} n={call.prompt_seq})"
        )
    rechosen = 0
    if not confirm and questionnaire.reads_back(step):
        confirmation = position_key(step.key, True)
        rechosen = db.execute(_RECHOSEN, {"response_id": call.response_id, "position": confirmation}).scalar_one()
    turn = advance(questionnaire, call.digits, position, call.current_try, digits, rechosen=rechosen)
    return Press(call, position, seq, digits, turn=turn)


def _current_prompt(call: Call) -> Prompt:
    """The prompt the interview is at (for a replayed webhook)."""
    questionnaire = call.questionnaire
    if call.current_step is None:
        status = call.status.value if call.status in FINAL_RESPONSE_STATUSES else "incomplete"
        return Prompt(End(Outcome(status), status), call.prompt_seq, questionnaire)
    step, confirm = parse_position(questionnaire, call.current_step)
    chosen = call.digits.get(step.key) if confirm else None
    return Prompt(Ask(step.key, call.current_try, (), confirm), call.prompt_seq, questionnaire, chosen)


# --- writing ---------------------------------------------------------------------------------------------


def begin_call(session: Session, call: Call, answered_by: str | None = None) -> Prompt:
    """The call was answered by a person: start or resume the interview (the writing step; ``call`` is what
    :func:`read_call` found).

    Raises:
        ConcurrentChange: another delivery started or moved the interview since ``call`` was read.
    """
    questionnaire = call.questionnaire
    if call.adopt_sid is not None:
        _adopt(session, call.attempt_id, call.adopt_sid)
    now = clock.now()
    response_id = call.response_id
    if call.status in FINAL_RESPONSE_STATUSES and call.status != ResponseStatus.COMPLETED:
        prompt = Prompt(End(Outcome(call.status.value), call.status.value), call.prompt_seq, questionnaire)
    elif response_id is None:
        action = start(questionnaire, {})
        # A checked questionnaire's first step is asked unconditionally (a condition names earlier answers).
        assert isinstance(action, Ask), action
        response_id = _create(session, call, action, now)
        prompt = Prompt(action, 1, questionnaire)
    else:
        prompt, settled = _move_on(session, call, start(questionnaire, call.digits), None, now)
        if settled != call.status:
            _settle(session, call, settled)
        if call.direction == CallDirection.INBOUND:
            session.execute(_MARK_INBOUND, {"response_id": response_id})
    mark_answered(session, call.attempt_id, call.target_id, answered_by)
    if isinstance(prompt.action, Ask):
        log.info(
            "event=interview_start attempt=%s direction=%s response=%s step=%s resumed=%s",
            call.attempt_id, call.direction.value, response_id, prompt.action.step, bool(call.answers),
        )  # fmt: skip
    return prompt


def machine_answered(session: Session, call: Call, answered_by: str) -> None:
    """An answering machine (or fax) picked up: nothing is asked; the status callback settles the attempt
    as ``machine`` (retried)."""
    if call.adopt_sid is not None:
        _adopt(session, call.attempt_id, call.adopt_sid)
    session.execute(_ANSWERED_BY, {"attempt_id": call.attempt_id, "answered_by": answered_by})
    log.info("event=machine_answer attempt=%s answered_by=%s", call.attempt_id, answered_by)


def _create(session: Session, call: Call, ask: Ask, now: datetime) -> int:
    """A new interview at its first prompt; returns its id. Created with INSERT ... ON CONFLICT DO NOTHING:
    if a concurrent delivery created it first (one response per target), nothing is written here and
    ConcurrentChange says so."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    created = session.execute(
        insert(Response)
        .values(round_id=call.round_id, target_id=call.target_id, status=ResponseStatus.IN_PROGRESS,
                current_step=ask.position, current_try=ask.try_number, prompt_seq=1, prompted_at=now,
                started_at=now, updated_at=now, inbound=call.direction == CallDirection.INBOUND)
        .on_conflict_do_nothing(index_elements=["target_id"])
        .returning(Response.id)
    ).scalar()  # fmt: skip
    if created is None:
        raise ConcurrentChange(f"target {call.target_id}: another delivery started the interview")
    # Written with an INSERT statement, not the unit of work: the ORM listener does not see it.
    mirror_response_status(session.connection(), created, call.target_id, ResponseStatus.IN_PROGRESS, session)
    return created


def store_press(session: Session, press: Press) -> Prompt:
    """Store what :func:`read_press` worked out: the press, its answer, the next prompt, and what follows
    from them (the writing step; see "Read, then write").

    Raises:
        ConcurrentChange: another delivery moved the interview on since it was read.
    """
    call = press.call
    if call.adopt_sid is not None:
        _adopt(session, call.attempt_id, call.adopt_sid)
    if press.replay is not None:
        return press.replay
    turn = press.turn
    assert turn is not None and call.response_id is not None
    now = clock.now()
    prompt, settled = _move_on(session, call, turn.next, turn.answer, now)
    db = session.connection()
    # The (response, seq) uniqueness rule stores this press once (a second delivery of it has found the
    # interview moved on, above, unless the database says so here).
    db.execute(
        _INSERT_PRESS,
        {"response_id": call.response_id, "attempt_id": call.attempt_id, "seq": press.seq, "step": press.position,
         "try_number": call.current_try, "digits": press.digits or "", "outcome": turn.kind.value,
         "received_at": now},
    )  # fmt: skip
    if turn.answer is not None:
        _store_answer(db, call, turn.answer, now)
    if settled != call.status:
        _settle(session, call, settled)
    if turn.kind is KeyKind.STOP:
        add_to_do_not_call(session, call.phone, call.round_id, "pressed 9 during the survey")
    if turn.answer is not None:
        question, digit = turn.answer
        if decides_followup(call.questionnaire, question, {**call.digits, question: digit}):
            # An answer that decides the response's follow-up item is stored: keep the item current.
            sync_response(session, call.round_id, call.response_id, call.questionnaire)
    return prompt


def _settled(
    status: ResponseStatus, questionnaire: Questionnaire, answers: Mapping[str, str], action: Ask | End
) -> ResponseStatus:
    """The interview's status after a turn: completed the moment the last rate question is answered, whatever
    happens after; else an end may give it a final status; else it stays as it is."""
    if status != ResponseStatus.IN_PROGRESS:
        return status
    if rates_complete(questionnaire, answers):
        return ResponseStatus.COMPLETED
    if isinstance(action, End):
        return _END_STATUS.get(action.outcome, status)
    return status


def _move_on(
    session: Session, call: Call, action: Ask | End, answer: tuple[str, str] | None, now: datetime
) -> tuple[Prompt, ResponseStatus]:
    """Move the interview from the prompt ``call`` found to ``action`` (the next prompt, or none), with the
    status the turn gives it: one conditional UPDATE, the first write of a turn. Returns the prompt to play
    and the interview's status now (the caller settles it, :func:`_settle`, if it changed).

    Raises:
        ConcurrentChange: the interview is no longer at the prompt that was read.
    """
    assert call.response_id is not None and call.status is not None
    answers = {**call.digits, **dict([answer] if answer else [])}
    settled = _settled(call.status, call.questionnaire, answers, action)
    ends = isinstance(action, End)
    params = {"response_id": call.response_id, "read_seq": call.prompt_seq, "read_position": call.current_step,
              "read_status": call.status, "now": now}  # fmt: skip
    if not ends:
        params |= {"next_position": action.position, "next_try": action.try_number, "next_seq": call.prompt_seq + 1}
    if settled != call.status:
        params["settled_status"] = settled
    statement = _moving_statement(ends=ends, settles=settled != call.status)
    if session.connection().execute(statement, params).rowcount != 1:
        raise ConcurrentChange(f"response {call.response_id} moved on from prompt {call.prompt_seq} meanwhile")
    if ends:
        log.info("event=interview_end response=%s outcome=%s status=%s", call.response_id, action.outcome.value,
                 settled.value)  # fmt: skip
        return Prompt(action, call.prompt_seq, call.questionnaire), settled
    chosen = answers.get(action.step) if action.confirm else None
    return Prompt(action, call.prompt_seq + 1, call.questionnaire, chosen), settled


def _settle(session: Session, call: Call, status: ResponseStatus) -> None:
    """The interview took ``status``: its target copies it (and its answers count once it is completed; see
    "Report figures" in campaigns.models), and becomes final with a final one."""
    assert call.response_id is not None
    mirror_response_status(session.connection(), call.response_id, call.target_id, status, session)
    if status in FINAL_RESPONSE_STATUSES:
        # Locked: a status callback settling the same target (campaigns.calls.settle_attempt) waits for us.
        target = session.get(RoundTarget, call.target_id, with_for_update=True)
        assert target is not None
        finish_from_response(session, target, status)


def _store_answer(db: Connection, call: Call, answer: tuple[str, str], now: datetime) -> None:
    """Write the answer with its paradata; a different key for an answered question replaces it, with history.

    Paradata, over every call of the interview: ``tries`` = key presses and silences at the question (not
    counting ``*``), ``invalid_keys`` and ``silences`` among them, ``seconds_to_answer`` = from the prompt
    that was answered to the key press. The press being answered is already stored, so it counts.

    A new answer carries copies of its round, village and whether its response is completed (see "Report
    figures" in campaigns.models).
    """
    assert call.response_id is not None
    question, digit = answer
    seconds = round((now - call.prompted_at).total_seconds(), 3) if call.prompted_at else None
    existing = call.answers.get(question)
    if existing is None:
        db.execute(
            _INSERT_NEW_ANSWER,
            {"answer_response_id": call.response_id, "answer_round_id": call.round_id,
             "answer_village_id": call.village_id, "answer_counted": call.status == ResponseStatus.COMPLETED,
             "answer_question": question, "answer_digit": digit, "answer_attempt_id": call.attempt_id,
             "seconds": seconds, "now": now},
        )  # fmt: skip
        return
    counts = dict(db.execute(_TRIES, {"response_id": call.response_id, "question": question}).all())
    answer_id, old_digit = existing
    if old_digit != digit:
        db.execute(
            _INSERT_CHANGE,
            {"answer_id": answer_id, "old_digit": old_digit, "new_digit": digit, "attempt_id": call.attempt_id,
             "changed_at": now},
        )
        log.info("event=answer_changed response=%s question=%s old=%s new=%s", call.response_id, question,
                 old_digit, digit)  # fmt: skip
    db.execute(
        _UPDATE_ANSWER,
        {"answer_id": answer_id, "new_digit": digit, "new_attempt_id": call.attempt_id,
         "new_tries": sum(counts.values()), "new_invalid_keys": counts.get(KeyKind.INVALID.value, 0),
         "new_silences": counts.get(KeyKind.SILENCE.value, 0), "new_seconds": seconds, "now": now},
    )  # fmt: skip


def add_to_do_not_call(session: Session, phone: str, round_id: int | None, reason: str) -> None:
    # The keypad's reason is the list's own (campaigns.dnc.KEYPAD_REASON); ``reason`` is kept for callers.
    dnc.add_from_keypad(session, phone, round_id)


# --- inbound calls ---------------------------------------------------------------------------------------


def begin_inbound_call(session: Session, call_sid: str, caller: str) -> InboundReply:
    """A resident called our number.

    Caller ID can be spoofed, so by default an inbound call takes no answers: every caller hears the same
    greeting (the office calls back now), whether or not the number is in a sample, and the call hangs up.
    If the number is a household of an active round's sample that may be called again, the dialler calls it
    back first, within the round's windows (campaigns.calls.request_call_back); so only whoever holds the
    number can answer. A round created with ``inbound=answer`` instead interviews the caller on the inbound
    call (an inbound CallAttempt resumes the interview; the response is marked ``inbound``).

    One write transaction (inbound calls are rare): it reads the call inside it, then writes as
    :func:`begin_call` does.

    Raises:
        InterviewError: ``call_sid`` belongs to an outbound call.
    """
    known = session.scalar(select(CallAttempt).where(CallAttempt.call_sid == call_sid))
    if known is not None:
        if known.direction != CallDirection.INBOUND:
            raise InterviewError(f"CallSid {call_sid} belongs to outbound attempt {known.id}")
        # Twilio asked again for the same call (a retried webhook): carry on with the same attempt.
        prompt = begin_call(session, read_call(session, known.id, call_sid))
        return InboundReply(prompt.questionnaire, known.id, prompt)
    greeting = _greeting_questionnaire(session)
    reply = InboundReply(greeting, message=_message_or(greeting, "call_back", "unknown_caller"))
    try:
        phone = normalise(caller)
    except PhoneNumberError:
        log.info("event=inbound_call sid=%s outcome=unparsable_number", call_sid)
        return reply
    if dnc.is_listed(session, phone):
        # A listed number takes no interview and is not called back; it hears what every caller hears.
        log.info("event=inbound_call sid=%s outcome=do_not_call", call_sid)
        return reply
    rows = session.execute(
        select(RoundTarget, Round)
        .join(Round, Round.id == RoundTarget.round_id)
        .where(RoundTarget.phone == phone, Round.status.in_(ACTIVE_ROUND_STATUSES))
        .order_by(Round.id.desc())
    ).all()
    for target, round_ in rows:
        # Locked: the dispatcher's claim (a conditional UPDATE on the same row) waits for us, and we for it.
        session.refresh(target, with_for_update=True)
        if round_.inbound == InboundMode.ANSWER and target.state not in FINAL_TARGET_STATES:
            answered = _answer_inbound(session, call_sid, target, round_)
            if answered is not None:
                return answered
            break  # the household is in a call now (we are dialling it): nothing to call back either
        at = request_call_back(session, target, round_, clock.now())
        if at is not None:
            log.info("event=inbound_call sid=%s outcome=call_back target=%s round=%s", call_sid, target.id, round_.id)
            return InboundReply(greeting, message=reply.message, call_back_round=round_.id)
        if target.state not in FINAL_TARGET_STATES:
            break  # the latest round with this household still open decides; older ones wait their turn
    log.info("event=inbound_call sid=%s outcome=greeting", call_sid)
    return reply


def _answer_inbound(session: Session, call_sid: str, target: RoundTarget, round_: Round) -> InboundReply | None:
    """Interview the caller on the inbound call (a round with ``inbound=answer``); None if the household has a
    call live (never two live calls at once)."""
    live = session.scalar(
        select(func.count())
        .select_from(CallAttempt)
        .where(CallAttempt.target_id == target.id, CallAttempt.status.not_in(FINAL_CALL_STATUSES))
    )
    if live:
        log.info("event=inbound_while_live sid=%s target=%s state=%s", call_sid, target.id, target.state.value)
        return None
    # Outbound attempts are numbered 1, 2, ... by the dialler; inbound calls count down from -1 so the two
    # never collide under the (target, number) uniqueness rule and they use no dialling budget.
    lowest = session.scalar(
        select(func.min(CallAttempt.number)).where(CallAttempt.target_id == target.id, CallAttempt.number < 0)
    )
    now = clock.now()
    attempt = CallAttempt(
        round_id=round_.id,
        target_id=target.id,
        number=(lowest or 0) - 1,
        direction=CallDirection.INBOUND,
        call_sid=call_sid,
        status=CallStatus.IN_PROGRESS,
        created_at=now,
        placed_at=now,
    )
    session.add(attempt)
    session.flush()
    log.info("event=inbound_call sid=%s outcome=answer attempt=%s target=%s round=%s", call_sid, attempt.id,
             target.id, round_.id)  # fmt: skip
    prompt = begin_call(session, read_call(session, attempt.id, call_sid))
    return InboundReply(prompt.questionnaire, attempt.id, prompt)


def _greeting_questionnaire(session: Session) -> Questionnaire:
    """Whose messages a caller who is not interviewed hears: the latest active round's questionnaire, else the
    default (the same for every caller, on the roster or not)."""
    round_ = session.scalar(
        select(Round).where(Round.status.in_(ACTIVE_ROUND_STATUSES)).order_by(Round.id.desc()).limit(1)
    )
    return questionnaire_for(session, round_) if round_ is not None else default_questionnaire()


def _message_or(questionnaire: Questionnaire, name: str, fallback: str) -> str:
    return name if questionnaire.messages.get(name, "").strip() else fallback


# --- statements ------------------------------------------------------------------------------------------
#
# Built once, on the tables (Core): the webhooks run them with a handful of round trips and no unit-of-work
# bookkeeping. The rarer transitions (an interview settling, 9) use the shared service functions.
_attempts, _targets, _rounds = CallAttempt.__table__, RoundTarget.__table__, Round.__table__
_versions, _responses, _answers = QuestionnaireVersion.__table__, Response.__table__, Answer.__table__
_presses, _changes = KeyPress.__table__, AnswerChange.__table__

# The reading step's one query: the call attempt, its target, round and questionnaire version, the target's
# interview if it has one, and the answers so far (a row per answer).
_CALL_STATE = (
    select(
        _attempts.c.call_sid,
        _attempts.c.direction,
        _attempts.c.target_id,
        _targets.c.round_id,
        _targets.c.phone,
        _targets.c.village_id,
        _rounds.c.questionnaire_id,
        _versions.c.checksum,
        _responses.c.id,
        _responses.c.status,
        _responses.c.current_step,
        _responses.c.current_try,
        _responses.c.prompt_seq,
        _responses.c.prompted_at,
        _attempts.c.last_heard_at,
        _answers.c.id,
        _answers.c.question,
        _answers.c.digit,
    )
    .select_from(
        _attempts.join(_targets, _targets.c.id == _attempts.c.target_id)
        .join(_rounds, _rounds.c.id == _targets.c.round_id)
        .join(_versions, _versions.c.id == _rounds.c.questionnaire_id)
        .outerjoin(_responses, _responses.c.target_id == _targets.c.id)
        .outerjoin(_answers, _answers.c.response_id == _responses.c.id)
    )
    .where(_attempts.c.id == bindparam("attempt_id"))
)
_PRESS_AT = select(_presses.c.id).where(
    _presses.c.response_id == bindparam("response_id"), _presses.c.seq == bindparam("seq")
)
_RECHOSEN = select(func.count()).select_from(_presses).where(
    _presses.c.response_id == bindparam("response_id"),
    _presses.c.step == bindparam("position"),
    _presses.c.outcome == KeyKind.RECHOOSE.value,
)
_TRIES = (
    select(_presses.c.outcome, func.count())
    .where(
        _presses.c.response_id == bindparam("response_id"),
        _presses.c.step == bindparam("question"),
        _presses.c.outcome.in_(TRY_OUTCOMES),
    )
    .group_by(_presses.c.outcome)
)
_INSERT_PRESS = _presses.insert()
# An interview resumed on a call the resident made to us (a round that answers on inbound calls).
_MARK_INBOUND = (
    _responses.update()
    .where(_responses.c.id == bindparam("response_id"), _responses.c.inbound.is_(False))
    .values(inbound=True)
)
_ANSWERED_BY = (
    _attempts.update().where(_attempts.c.id == bindparam("attempt_id")).values(answered_by=bindparam("answered_by"))
)


def _new_answer_statement():
    """INSERT a new answer whose paradata is counted from the presses at the question (this one included)."""
    # No parameter is named after a column: SQLAlchemy would take it as the column's value.
    response_id = bindparam("answer_response_id", type_=Integer)
    question = bindparam("answer_question", type_=String)
    now = bindparam("now", type_=UTCDateTime())

    def presses(outcome: KeyKind):
        return func.coalesce(func.sum(case((_presses.c.outcome == outcome.value, 1), else_=0)), 0)

    counted = select(
        response_id,
        bindparam("answer_round_id", type_=Integer),
        bindparam("answer_village_id", type_=Integer),
        bindparam("answer_counted", type_=Boolean),
        question,
        bindparam("answer_digit", type_=String),
        bindparam("answer_attempt_id", type_=Integer),
        func.count(),
        presses(KeyKind.INVALID),
        presses(KeyKind.SILENCE),
        bindparam("seconds", type_=Float),
        now,
        now,
    ).where(_presses.c.response_id == response_id, _presses.c.step == question, _presses.c.outcome.in_(TRY_OUTCOMES))
    columns = ["response_id", "round_id", "village_id", "counted", "question", "digit", "attempt_id", "tries",
               "invalid_keys", "silences", "seconds_to_answer", "created_at", "updated_at"]  # fmt: skip
    return _answers.insert().from_select(columns, counted)


_INSERT_NEW_ANSWER = _new_answer_statement()
_INSERT_CHANGE = _changes.insert()
_UPDATE_ANSWER = (
    _answers.update()
    .where(_answers.c.id == bindparam("answer_id"))
    .values(
        digit=bindparam("new_digit"),
        attempt_id=bindparam("new_attempt_id"),
        tries=bindparam("new_tries"),
        invalid_keys=bindparam("new_invalid_keys"),
        silences=bindparam("new_silences"),
        seconds_to_answer=bindparam("new_seconds"),
        updated_at=bindparam("now"),
    )
)


@lru_cache(maxsize=4)
def _moving_statement(*, ends: bool, settles: bool):
    """UPDATE the interview from exactly the prompt that was read, to its next prompt or (``ends``) to no
    prompt; with ``settles``, it also takes its new status. Matches nothing if the interview moved meanwhile."""
    now = bindparam("now", type_=UTCDateTime())
    moving = _responses.update().where(
        _responses.c.id == bindparam("response_id", type_=Integer),
        _responses.c.prompt_seq == bindparam("read_seq", type_=Integer),
        _responses.c.current_step.is_not_distinct_from(bindparam("read_position", type_=String)),
        _responses.c.status == bindparam("read_status", type_=_responses.c.status.type),
    )
    values = {"updated_at": now}
    if ends:
        # No prompt is pending; the sequence number stays that of the last prompt played.
        values |= {"current_step": None, "current_try": 0}
    else:
        values |= {"current_step": bindparam("next_position", type_=String),
                   "current_try": bindparam("next_try", type_=Integer),
                   "prompt_seq": bindparam("next_seq", type_=Integer), "prompted_at": now}  # fmt: skip
    if settles:
        values |= {"status": bindparam("settled_status", type_=_responses.c.status.type), "completed_at": now}
    return moving.values(values)
