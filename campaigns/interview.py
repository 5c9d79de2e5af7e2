"""The interview service: persists what the pure flow decides. Takes a Session; the view commits.

Every key press is stored once (KeyPress, unique per response and prompt sequence number); each answer is
written when its key press arrives; a replayed webhook changes nothing and gets the current prompt again.
A different key pressed later for an answered question (read-back "re-choose") replaces the answer and
keeps the old one in AnswerChange.

Inbound calls: a resident calling our number is found by caller number among the non-final targets of the
active rounds (running or paused, the latest first), gets an inbound CallAttempt and resumes the interview.
"""

from __future__ import annotations

import logging
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
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.calls import (
    RESPONSE_TO_TARGET,
    answered_values,
    finish_from_response,
    finish_target_values,
    mark_answered,
)
from campaigns.errors import SanlvError
from campaigns.flow import (
    Ask,
    End,
    KeyKind,
    Outcome,
    advance,
    parse_position,
    position_key,
    rates_complete,
    start,
)
from campaigns.models import (
    FINAL_CALL_STATUSES,
    FINAL_RESPONSE_STATUSES,
    FINAL_TARGET_STATES,
    Answer,
    AnswerChange,
    CallAttempt,
    CallDirection,
    CallStatus,
    DoNotCall,
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


class ConcurrentChange(RuntimeError):
    """Another request changed the interview while this one worked on it: roll back and try again."""


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
    """An inbound call: the interview's prompt for a known caller, or a polite ``message`` and hang up."""

    questionnaire: Questionnaire
    attempt_id: int | None = None
    prompt: Prompt | None = None
    message: str | None = None


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


def answers_of(session: Session, response: Response) -> dict[str, str]:
    return dict(session.execute(select(Answer.question, Answer.digit).where(Answer.response_id == response.id)).all())


def _response_for(session: Session, target: RoundTarget) -> tuple[Response, bool]:
    """The target's interview, and whether it was created just now (then it has no answers yet).

    Created with INSERT ... ON CONFLICT DO NOTHING: a concurrent request may create it first (one response per
    household per round, a unique target_id), and then this one reads theirs; no savepoint is needed.
    """
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    now = clock.now()
    created = session.scalars(
        insert(Response)
        .values(round_id=target.round_id, target_id=target.id, status=ResponseStatus.IN_PROGRESS,
                current_try=0, prompt_seq=0, started_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["target_id"])
        .returning(Response)
    ).one_or_none()
    if created is not None:
        # Written with an INSERT statement, not the unit of work: the ORM listener does not see it.
        mirror_response_status(session.connection(), created.id, target.id, created.status, session)
        return created, True
    response = session.scalar(select(Response).where(Response.target_id == target.id))
    assert response is not None
    return response, False


def _ask(response: Response, ask: Ask, now: datetime | None = None) -> int:
    response.current_step = ask.position
    response.current_try = ask.try_number
    response.prompt_seq += 1
    response.prompted_at = now or clock.now()
    return response.prompt_seq


def begin_call(session: Session, attempt: CallAttempt) -> Prompt:
    """The call was answered by a person: start or resume the interview."""
    # The target, its round and the questionnaire version's checksum in one query; mark_answered then finds
    # the target in the session.
    _target, round_, checksum = session.execute(
        select(RoundTarget, Round, QuestionnaireVersion.checksum)
        .join(Round, Round.id == RoundTarget.round_id)
        .join(QuestionnaireVersion, QuestionnaireVersion.id == Round.questionnaire_id)
        .where(RoundTarget.id == attempt.target_id)
    ).one()
    target = mark_answered(session, attempt)
    questionnaire = _cached_questionnaire(session, round_.questionnaire_id, checksum)
    response, created = _response_for(session, target)
    if response.status in FINAL_RESPONSE_STATUSES and response.status != ResponseStatus.COMPLETED:
        return Prompt(End(Outcome(response.status.value), response.status.value), response.prompt_seq, questionnaire)
    answers = {} if created else answers_of(session, response)
    action = start(questionnaire, answers)
    if isinstance(action, End):
        _finish(session, target, response, action)
        return Prompt(action, response.prompt_seq, questionnaire)
    seq = _ask(response, action)
    log.info(
        "event=interview_start attempt=%s direction=%s response=%s step=%s resumed=%s",
        attempt.id, attempt.direction.value, response.id, action.step, bool(answers),
    )
    return Prompt(action, seq, questionnaire)


def _row_update_cte(name: str, table, id_param: str, values: dict, condition):
    """A CTE that updates the row of ``table`` whose id is the parameter ``id_param``, if ``condition`` holds."""
    update = table.update().where(table.c.id == bindparam(id_param, type_=Integer), condition).values(values)
    return update.returning(table.c.id).cte(name)


@lru_cache(maxsize=2)
def _quick_start(with_answered_by: bool):
    """PostgreSQL, outside a transaction: one statement that creates the interview at its first prompt and,
    only if it created it, marks the call answered (campaigns.calls.answered_values) and copies the new
    response's status to the target -- all of it or nothing. Its row is the new response's id; none if the
    target had a response already (then nothing was written).

    No parameter is named after a column: an UPDATE or INSERT in the statement would take it as a value.
    """
    now = bindparam("answered_now", type_=UTCDateTime())
    in_progress = literal(ResponseStatus.IN_PROGRESS, _responses.c.status.type)
    started = (
        postgresql_insert(_responses)
        .values(
            round_id=bindparam("start_round_id", type_=Integer),
            target_id=bindparam("start_target_id", type_=Integer),
            status=in_progress,
            current_step=bindparam("first_position", type_=String),
            current_try=bindparam("first_try", type_=Integer),
            prompt_seq=1,
            prompted_at=now,
            started_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["target_id"])
        .returning(_responses.c.id)
        .cte("started")
    )
    created = select(started.c.id).exists()
    attempt_values, target_values = answered_values()
    if with_answered_by:
        attempt_values["answered_by"] = bindparam("new_answered_by", type_=String)
    answered = _row_update_cte("answered", _attempts, "start_attempt_id", attempt_values, created)
    # updated_at as the copy of the response status sets it on the ORM path (mirror_response_status).
    target_values |= {"response_status": literal(ResponseStatus.IN_PROGRESS, _targets.c.response_status.type),
                      "updated_at": now}
    in_call = _row_update_cte("in_call", _targets, "start_target_id", target_values, created)
    return select(started.c.id).add_cte(answered, in_call)


def quick_begin_call(db: Connection, attempt_id: int, call_sid: str, answered_by: str | None) -> Prompt | None:
    """The common voice webhook on PostgreSQL, in two statements outside any transaction: a person answered a
    call whose household has no interview yet, and it starts at its first question, as :func:`begin_call`
    would do it. None for anything else (a resumed interview, an unknown attempt or CallSid, a race with
    another delivery): nothing was written, and the caller runs the full path in a transaction.

    ``db`` must be in autocommit mode: each statement is its own transaction.
    """
    row = db.execute(_CALL_STATE, {"attempt_id": attempt_id}).first()
    if row is None:
        return None
    known_sid, target_id, direction, round_id, version_id, checksum, response_id = row
    if known_sid != call_sid or response_id is not None:
        return None
    questionnaire = _cached_questionnaire(db, version_id, checksum)
    action = start(questionnaire, {})
    if isinstance(action, End):
        return None
    params = {"answered_now": clock.now(), "start_round_id": round_id, "start_target_id": target_id,
              "start_attempt_id": attempt_id, "first_position": action.position, "first_try": action.try_number}
    if answered_by:
        params["new_answered_by"] = answered_by
    response_id = db.execute(_quick_start(bool(answered_by)), params).scalar()
    if response_id is None:
        return None  # another delivery created the interview meanwhile: nothing was written
    log.info(
        "event=interview_start attempt=%s direction=%s response=%s step=%s resumed=%s",
        attempt_id, CallDirection(direction).value, response_id, action.step, False,
    )
    return Prompt(action, 1, questionnaire)


def begin_inbound_call(session: Session, call_sid: str, caller: str) -> InboundReply:
    """A resident called our number: resume their interview in the latest active round, or say why not.

    Raises:
        InterviewError: ``call_sid`` belongs to an outbound call.
    """
    known = session.scalar(select(CallAttempt).where(CallAttempt.call_sid == call_sid))
    if known is not None:
        if known.direction != CallDirection.INBOUND:
            raise InterviewError(f"CallSid {call_sid} belongs to outbound attempt {known.id}")
        # Twilio asked again for the same call (a retried webhook): carry on with the same attempt.
        prompt = begin_call(session, known)
        return InboundReply(prompt.questionnaire, known.id, prompt)
    try:
        phone = normalise(caller)
    except PhoneNumberError:
        log.info("event=inbound_unknown_caller sid=%s reason=unparsable_number", call_sid)
        return InboundReply(_greeting_questionnaire(session), message="unknown_caller")

    rows = session.execute(
        select(RoundTarget, Round)
        .join(Round, Round.id == RoundTarget.round_id)
        .where(RoundTarget.phone == phone, Round.status.in_(ACTIVE_ROUND_STATUSES))
        .order_by(Round.id.desc())
    ).all()
    if not rows:
        log.info("event=inbound_unknown_caller sid=%s reason=no_active_round_target", call_sid)
        return InboundReply(_greeting_questionnaire(session), message="unknown_caller")
    open_rows = [(t, r) for t, r in rows if t.state not in FINAL_TARGET_STATES]
    if not open_rows:
        target, round_ = rows[0]
        questionnaire = questionnaire_for(session, round_)
        log.info("event=inbound_already_done sid=%s target=%s state=%s", call_sid, target.id, target.state.value)
        return InboundReply(questionnaire, message=_message_or(questionnaire, "already_done", "unknown_caller"))
    target, round_ = open_rows[0]
    questionnaire = questionnaire_for(session, round_)
    # Locked: the dispatcher's claim (a conditional UPDATE on the same row) waits for us, and we for it.
    session.refresh(target, with_for_update=True)
    live = session.scalar(
        select(func.count())
        .select_from(CallAttempt)
        .where(CallAttempt.target_id == target.id, CallAttempt.status.not_in(FINAL_CALL_STATUSES))
    )
    if target.state in FINAL_TARGET_STATES or live:
        # We are dialling this household (or it is in another call): never two live calls at once.
        log.info("event=inbound_while_live sid=%s target=%s state=%s", call_sid, target.id, target.state.value)
        return InboundReply(questionnaire, message=_message_or(questionnaire, "call_later", "unknown_caller"))
    # Outbound attempts are numbered 1, 2, ... by the dialler; call-backs count down from -1 so the two
    # never collide under the (target, number) uniqueness rule and call-backs use no dialling budget.
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
    log.info("event=inbound_call attempt=%s target=%s round=%s", attempt.id, target.id, round_.id)
    prompt = begin_call(session, attempt)
    return InboundReply(questionnaire, attempt.id, prompt)


def _greeting_questionnaire(session: Session) -> Questionnaire:
    """Whose messages an unknown caller hears: the latest active round's questionnaire, else the default."""
    round_ = session.scalar(
        select(Round).where(Round.status.in_(ACTIVE_ROUND_STATUSES)).order_by(Round.id.desc()).limit(1)
    )
    return questionnaire_for(session, round_) if round_ is not None else default_questionnaire()


def _message_or(questionnaire: Questionnaire, name: str, fallback: str) -> str:
    return name if questionnaire.messages.get(name, "").strip() else fallback


def current_prompt(session: Session, response: Response, questionnaire: Questionnaire) -> Prompt:
    """The prompt the interview is at now (for a replayed webhook)."""
    if response.current_step is None:
        raise InterviewError(f"response {response.id} has not started")
    step, confirm = parse_position(questionnaire, response.current_step)
    chosen = None
    if confirm:
        chosen = session.scalar(
            select(Answer.digit).where(Answer.response_id == response.id, Answer.question == step.key)
        )
    return Prompt(Ask(step.key, response.current_try, (), confirm), response.prompt_seq, questionnaire, chosen)


# The key-press webhook is the hot path (every press of every resident). Its statements are built once, on
# the tables (Core): a handful of round trips and no unit-of-work bookkeeping; on PostgreSQL most presses take
# two statements and no transaction (quick_input, which also completes and ends interviews with the SQL forms
# of the service rules: campaigns.calls.finish_target_values). Elsewhere the rarer transitions (an interview
# ending or completing, 9, a changed answer) load the ORM objects and use the shared service functions.
# tests/ivr/test_quick_path.py holds the two ways to the same rows.
_attempts, _targets, _rounds = CallAttempt.__table__, RoundTarget.__table__, Round.__table__
_versions, _responses, _answers = QuestionnaireVersion.__table__, Response.__table__, Answer.__table__
_presses, _changes = KeyPress.__table__, AnswerChange.__table__

# A call attempt with its target, round and the round's questionnaire version.
_CALL = (
    _attempts.join(_targets, _targets.c.id == _attempts.c.target_id)
    .join(_rounds, _rounds.c.id == _targets.c.round_id)
    .join(_versions, _versions.c.id == _rounds.c.questionnaire_id)
)
_INPUT_STATE = (
    select(
        _attempts.c.call_sid,
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
        _answers.c.id,
        _answers.c.question,
        _answers.c.digit,
    )
    .select_from(
        _CALL.join(_responses, _responses.c.target_id == _targets.c.id).outerjoin(
            _answers, _answers.c.response_id == _responses.c.id
        )
    )
    .where(_attempts.c.id == bindparam("attempt_id"))
)
# The voice webhook's read (quick_begin_call): the call, its questionnaire and whether an interview exists.
_CALL_STATE = (
    select(
        _attempts.c.call_sid,
        _attempts.c.target_id,
        _attempts.c.direction,
        _targets.c.round_id,
        _rounds.c.questionnaire_id,
        _versions.c.checksum,
        _responses.c.id,
    )
    .select_from(_CALL.outerjoin(_responses, _responses.c.target_id == _targets.c.id))
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
_PRESS = ("response_id", "attempt_id", "seq", "step", "try_number", "digits", "outcome", "received_at")


def _new_answer_statement(*, this_press_stored: bool = True, only_if=None):
    """INSERT a new answer whose paradata is counted from the presses at the question, in one statement.

    With ``this_press_stored`` false, the press being answered is not in the table yet (see :func:`_quick_turn`)
    and the ``extra_*`` parameters add it. ``only_if``: a condition without which nothing is inserted.
    """
    # No parameter is named after a column: an UPDATE beside this statement (see _quick_turn) would take such
    # a parameter as a value to SET.
    response_id = bindparam("answer_response_id", type_=Integer)
    question = bindparam("answer_question", type_=String)
    now = bindparam("now", type_=UTCDateTime())

    def presses(outcome: KeyKind):
        counted = func.coalesce(func.sum(case((_presses.c.outcome == outcome.value, 1), else_=0)), 0)
        if this_press_stored:
            return counted
        return counted + bindparam(f"extra_{'invalid' if outcome is KeyKind.INVALID else 'silences'}", type_=Integer)

    counted = select(
        response_id,
        bindparam("answer_round_id", type_=Integer),
        bindparam("answer_village_id", type_=Integer),
        bindparam("answer_counted", type_=Boolean),
        question,
        bindparam("answer_digit", type_=String),
        bindparam("answer_attempt_id", type_=Integer),
        func.count() if this_press_stored else func.count() + bindparam("extra_tries", type_=Integer),
        presses(KeyKind.INVALID),
        presses(KeyKind.SILENCE),
        bindparam("seconds", type_=Float),
        now,
        now,
    ).where(_presses.c.response_id == response_id, _presses.c.step == question, _presses.c.outcome.in_(TRY_OUTCOMES))
    if only_if is not None:
        counted = counted.having(only_if)  # the aggregate's one row, or none
    columns = ["response_id", "round_id", "village_id", "counted", "question", "digit", "attempt_id", "tries",
               "invalid_keys", "silences", "seconds_to_answer", "created_at", "updated_at"]
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
_ASK_NEXT = (
    _responses.update()
    # Only from the prompt this press answered: a concurrent change to the interview makes it match nothing.
    .where(_responses.c.id == bindparam("response_id"), _responses.c.prompt_seq == bindparam("answered_seq"))
    .values(
        current_step=bindparam("next_position"),
        current_try=bindparam("next_try"),
        prompt_seq=bindparam("next_seq"),
        prompted_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
)


def _moving_statement(*, ends: bool, settles: bool):
    """UPDATE the interview from exactly the prompt a press answered, to its next prompt or (``ends``) to no
    prompt; with ``settles``, it also takes its final status. Matches nothing if the interview moved meanwhile."""
    now = bindparam("now", type_=UTCDateTime())
    moving = _responses.update().where(
        _responses.c.id == bindparam("moving_response_id", type_=Integer),
        _responses.c.prompt_seq == bindparam("answered_seq", type_=Integer),
        _responses.c.current_step == bindparam("answered_position", type_=String),
        _responses.c.status == bindparam("answered_status", type_=_responses.c.status.type),
    )
    values = {"updated_at": now}
    if ends:
        # As _finish: no prompt is pending; the sequence number stays that of the last prompt played.
        values |= {"current_step": None, "current_try": 0}
    else:
        values |= {"current_step": bindparam("next_position", type_=String),
                   "current_try": bindparam("next_try", type_=Integer),
                   "prompt_seq": bindparam("next_seq", type_=Integer), "prompted_at": now}
    if settles:
        values |= {"status": bindparam("settled_status", type_=_responses.c.status.type), "completed_at": now}
    return moving.values(values)


@lru_cache(maxsize=32)
def _quick_turn(with_answer: bool, ends: bool = False, settles: bool = False, finishes: bool = False):
    """PostgreSQL, outside a transaction: one statement that moves the interview on (see
    :func:`_moving_statement`) and, only if that happened, stores the press and the new answer and does what
    the interview's new state asks of its target -- all of it or nothing (see :func:`quick_input`).

    ``settles``: the response takes a final status, copied to its target, and a completed one's answers are
    counted from now on (see "Report figures" in campaigns.models); ``finishes``: the target is finished as
    ``finish_from_response`` would (campaigns.calls.finish_target_values).

    Its row is how many prompts it moved on: 1, or 0 (nothing written) if the interview was no longer at the
    prompt this press answered.

    No parameter is named after a column: an UPDATE in the statement would take it as a value to SET.
    """
    moving = _moving_statement(ends=ends, settles=settles).returning(_responses.c.id).cte("moving")
    moved = select(func.count()).select_from(moving).scalar_subquery()
    press_values = select(*(bindparam(f"press_{name}", type_=_presses.c[name].type) for name in _PRESS)).where(
        moved == 1
    )
    parts = [_presses.insert().from_select(list(_PRESS), press_values).returning(_presses.c.id).cte("press")]
    if with_answer:
        answer = _new_answer_statement(this_press_stored=False, only_if=moved == 1)
        parts.append(answer.returning(_answers.c.id).cte("answer"))
    target_values = {}
    if settles:
        target_values["response_status"] = bindparam("target_response_status", type_=_targets.c.response_status.type)
        # The answer stored by this statement is not seen by this UPDATE: it is inserted already counted.
        counted = (
            _answers.update()
            .where(_answers.c.response_id == bindparam("counted_response_id", type_=Integer), ~_answers.c.counted)
            .where(bindparam("settled_completed", type_=Boolean), moved == 1)
            # Set here: a column's Python-side onupdate default is not applied inside a CTE.
            .values(counted=True, updated_at=bindparam("now", type_=UTCDateTime()))
        )
        parts.append(counted.returning(_answers.c.id).cte("counted"))
    if finishes:
        target_values |= finish_target_values()
    if target_values:
        parts.append(_row_update_cte("target", _targets, "finish_target_id", target_values, moved == 1))
    return select(func.count()).select_from(moving).add_cte(*parts)


def _answer_params(
    response_id: int,
    copies: tuple[int, int, bool],
    attempt_id: int,
    answer: tuple[str, str],
    now: datetime,
    prompted_at: datetime | None,
    kind: KeyKind,
) -> dict[str, object]:
    """The parameters of :func:`_new_answer_statement` (``extra_*``: this press, when it is not stored yet)."""
    round_id, village_id, counted = copies
    return {"answer_response_id": response_id, "answer_round_id": round_id, "answer_village_id": village_id,
            "answer_counted": counted, "answer_question": answer[0], "answer_digit": answer[1],
            "answer_attempt_id": attempt_id, "now": now,
            "seconds": round((now - prompted_at).total_seconds(), 3) if prompted_at else None,
            "extra_tries": int(kind.value in TRY_OUTCOMES), "extra_invalid": int(kind is KeyKind.INVALID),
            "extra_silences": int(kind is KeyKind.SILENCE)}


# The outcomes a press may have on the quick path (9 ends the call and keeps the number off every round: the
# full path); read-backs are the full path's too.
_QUICK_KINDS = frozenset({KeyKind.ANSWER, KeyKind.INVALID, KeyKind.SILENCE, KeyKind.REPEAT})
# The final status an interview still in progress takes when the flow ends it (None: it stays in progress).
_END_STATUS = {
    Outcome.COMPLETED: ResponseStatus.COMPLETED,
    Outcome.REFUSED: ResponseStatus.REFUSED,
    Outcome.INELIGIBLE: ResponseStatus.INELIGIBLE,
    Outcome.OPTED_OUT: ResponseStatus.OPTED_OUT,
}


def quick_input(
    db: Connection, attempt_id: int, call_sid: str, position: str, seq: int, digits: str | None
) -> tuple[Prompt | None, list | None]:
    """The common key press on PostgreSQL, in two statements outside any transaction.

    Returns:
        ``(prompt, None)`` when it was one; else ``(None, state)``, where ``state`` is the interview as read
        (to hand to :func:`handle_input`), or None when it is stale (another delivery moved it on).

    The common press: the prompt being asked is answered with a new answer, a wrong key, silence or ``*``, and
    the interview goes on to its next prompt or ends -- completing, refused, ineligible, or with tries used
    up -- as :func:`handle_input` would do it. Not a read-back or an answer changed, not ``9``, not a replay.
    The state is read once, and one statement (:func:`_quick_turn`) moves the interview on from exactly that
    prompt, stores the press and the answer and settles the response and its target, atomically and durably,
    or writes nothing if another delivery got there first. Anything else is given back unwritten (no
    prompt), and the caller runs :func:`handle_input` in a transaction, which also answers bad requests and
    replays.

    ``db`` must be in autocommit mode: each statement is its own transaction.
    """
    rows = db.execute(_INPUT_STATE, {"attempt_id": attempt_id}).all()
    if not rows:
        return None, rows
    (known_sid, target_id, round_id, _phone, village_id, version_id, checksum, response_id, status, current,
     try_number, prompt_seq, prompted_at, *_answer) = rows[0]
    if known_sid != call_sid or seq != prompt_seq or position != current:
        return None, rows
    questionnaire = _cached_questionnaire(db, version_id, checksum)
    try:
        step, confirm = parse_position(questionnaire, position)
    except KeyError:
        return None, rows
    if confirm or questionnaire.reads_back(step):
        return None, rows
    answers = {row[-2]: row[-1] for row in rows if row[-3] is not None}
    turn = advance(questionnaire, answers, position, try_number, digits)
    action = turn.next
    ends = isinstance(action, End)
    if turn.kind not in _QUICK_KINDS or not ends and action.confirm:
        return None, rows
    if turn.answer is not None:
        if turn.answer[0] in answers:
            return None, rows  # a changed answer keeps its history: the full path
        answers[turn.answer[0]] = turn.answer[1]
    # As handle_input: completed the moment the last rate question is answered; else an end may settle it.
    settled = status
    if status == ResponseStatus.IN_PROGRESS and rates_complete(questionnaire, answers):
        settled = ResponseStatus.COMPLETED
    if ends and settled == ResponseStatus.IN_PROGRESS:
        settled = _END_STATUS.get(action.outcome, settled)
    settles = settled != status
    finished_state = RESPONSE_TO_TARGET.get(settled) if settles or ends else None
    now = clock.now()
    params = {"press_response_id": response_id, "press_attempt_id": attempt_id, "press_seq": seq,
              "press_step": position, "press_try_number": try_number, "press_digits": digits or "",
              "press_outcome": turn.kind.value, "press_received_at": now,
              "moving_response_id": response_id, "answered_seq": seq, "answered_position": position,
              "answered_status": status, "now": now}
    if not ends:
        params |= {"next_position": action.position, "next_try": action.try_number, "next_seq": seq + 1}
    if settles:
        params |= {"settled_status": settled, "target_response_status": settled, "counted_response_id": response_id,
                   "settled_completed": settled == ResponseStatus.COMPLETED}
    if finished_state is not None:
        params |= {"finish_target_id": target_id, "finish_state": finished_state, "finish_outcome": settled.value,
                   "finish_now": now}
    if turn.answer is not None:
        copies = (round_id, village_id, settled == ResponseStatus.COMPLETED)
        params |= _answer_params(response_id, copies, attempt_id, turn.answer, now, prompted_at, turn.kind)
    statement = _quick_turn(turn.answer is not None, ends, settles, finished_state is not None)
    if db.execute(statement, params).scalar_one() != 1:
        return None, None  # moved on meanwhile: nothing was written; the full path answers it as a replay
    if ends:
        log.info("event=interview_end response=%s outcome=%s status=%s", response_id, action.outcome.value,
                 settled.value)
        return Prompt(action, seq, questionnaire), None
    return Prompt(action, seq + 1, questionnaire), None


def handle_input(
    session: Session,
    attempt_id: int,
    call_sid: str,
    position: str,
    seq: int,
    digits: str | None,
    state: list | None = None,
) -> Prompt:
    """One Gather result (``digits``) or silence (None) for prompt ``seq`` asking ``position`` in the call
    ``call_sid`` of attempt ``attempt_id``. ``state``: the interview as :func:`quick_input` just read it.

    Raises:
        InterviewError: the attempt is unknown (404) or belongs to another call (409), no interview has
            started (409), the position is not a question (400), or it is not the one being asked (409).
    """
    db = session.connection()  # the hot path's statements go straight to the transaction's connection
    # One round trip: the call, its interview and the answers so far (a row per answer). Nothing is locked:
    # two deliveries of one press race to store it, the (response, seq) uniqueness rule lets one win, and
    # the other is answered as a replay (see ivr.views.in_transaction).
    rows = state if state is not None else db.execute(_INPUT_STATE, {"attempt_id": attempt_id}).all()
    if not rows:
        attempt = session.get(CallAttempt, attempt_id)
        if attempt is None:
            raise InterviewError(f"attempt {attempt_id} is not known", 404)
        check_call_sid(session, attempt, call_sid)
        raise InterviewError(f"attempt {attempt_id}: no interview has started", 409)
    (known_sid, _target_id, round_id, phone, village_id, version_id, checksum, response_id, status, current,
     try_number, prompt_seq, prompted_at, *_answer) = rows[0]
    if known_sid != call_sid:
        check_call_sid(session, session.get(CallAttempt, attempt_id), call_sid)
    questionnaire = _cached_questionnaire(session, version_id, checksum)
    try:
        step, confirm = parse_position(questionnaire, position)
    except KeyError:
        raise InterviewError(f"step={position!r} is not a question of this questionnaire", 400) from None
    if seq != prompt_seq or position != current:
        # Not the prompt being asked: a replay of one already answered (its press is stored), or wrong.
        if db.execute(_PRESS_AT, {"response_id": response_id, "seq": seq}).first() is not None:
            log.info("event=replayed_webhook attempt=%s response=%s seq=%s", attempt_id, response_id, seq)
            return _replay(session, session.get(Response, response_id), questionnaire)
        raise InterviewError(
            f"step={position} n={seq} is not the current question (current: {current} n={prompt_seq})"
        )

    answer_rows = {row[-2]: (row[-3], row[-1]) for row in rows if row[-3] is not None}
    answers = {question: digit for question, (_id, digit) in answer_rows.items()}
    rechosen = 0
    if not confirm and questionnaire.reads_back(step):
        confirmation = position_key(step.key, True)
        rechosen = db.execute(_RECHOSEN, {"response_id": response_id, "position": confirmation}).scalar_one()
    turn = advance(questionnaire, answers, position, try_number, digits, rechosen=rechosen)
    now = clock.now()
    action = turn.next
    press = {"response_id": response_id, "attempt_id": attempt_id, "seq": seq, "step": position,
             "try_number": try_number, "digits": digits or "", "outcome": turn.kind.value, "received_at": now}
    ask = None if isinstance(action, End) else {
        "response_id": response_id, "answered_seq": seq, "next_position": action.position,
        "next_try": action.try_number, "next_seq": seq + 1, "now": now}
    existing = answer_rows.get(turn.answer[0]) if turn.answer is not None else None
    # Later answers of a completed response (visit, concern) count at once; see "Report figures" in models.
    copies = (round_id, village_id, status == ResponseStatus.COMPLETED)
    # The (response, seq) uniqueness rule stores this press once; a second delivery of it fails here and the
    # view answers it as a replay.
    db.execute(_INSERT_PRESS, press)
    if turn.answer is not None:
        question, digit = turn.answer
        _store_answer(db, response_id, copies, attempt_id, question, digit, now, prompted_at, existing)
    if ask is not None and db.execute(_ASK_NEXT, ask).rowcount != 1:
        raise ConcurrentChange(f"response {response_id} moved on from prompt {seq} meanwhile")
    if turn.answer is not None:
        answers[turn.answer[0]] = turn.answer[1]

    loaded: tuple[Response, RoundTarget] | None = None
    if status == ResponseStatus.IN_PROGRESS and rates_complete(questionnaire, answers):
        # Completed the moment the last rate question is answered, whatever happens after (DESIGN.md).
        response, target = loaded = _interview_objects(session, response_id)
        response.status = ResponseStatus.COMPLETED
        response.completed_at = now
        finish_from_response(session, target, response)
    if turn.kind is KeyKind.STOP:
        add_to_do_not_call(session, phone, round_id, "pressed 9 during the survey")
    if isinstance(action, End):
        response, target = loaded or _interview_objects(session, response_id)
        _finish(session, target, response, action)
        return Prompt(action, seq, questionnaire)
    chosen = answers.get(action.step) if action.confirm else None
    return Prompt(action, seq + 1, questionnaire, chosen)


def _interview_objects(session: Session, response_id: int) -> tuple[Response, RoundTarget]:
    """The response and its target as ORM objects, in one query: the rarer transitions need both."""
    response, target = session.execute(
        select(Response, RoundTarget).join(RoundTarget, RoundTarget.id == Response.target_id).where(
            Response.id == response_id
        )
    ).one()
    return response, target


def check_call_sid(session: Session, attempt: CallAttempt, call_sid: str) -> None:
    """The webhook's CallSid must be the attempt's; a call whose sid was never saved (the worker died right
    after creating it) is adopted.

    Raises:
        InterviewError: 409, the CallSid belongs to another call.
    """
    if attempt.call_sid == call_sid:
        return
    if attempt.call_sid is not None:
        raise InterviewError(f"CallSid does not match attempt {attempt.id}", 409)
    other = session.scalar(select(CallAttempt.id).where(CallAttempt.call_sid == call_sid))
    if other is not None:
        raise InterviewError(f"CallSid {call_sid} belongs to another attempt", 409)
    attempt.call_sid = call_sid
    session.flush()
    log.info("event=call_adopted attempt=%s sid=%s", attempt.id, call_sid)


def _replay(session: Session, response: Response, questionnaire: Questionnaire) -> Prompt:
    if response.current_step is None:
        status = response.status.value if response.status in FINAL_RESPONSE_STATUSES else "incomplete"
        return Prompt(End(Outcome(status), status), response.prompt_seq, questionnaire)
    return current_prompt(session, response, questionnaire)


def _store_answer(
    db: Connection,
    response_id: int,
    copies: tuple[int, int, bool],
    attempt_id: int,
    question: str,
    digit: str,
    now: datetime,
    prompted_at: datetime | None,
    existing: tuple[int, str] | None,
) -> None:
    """Write the answer with its paradata; a different key for an answered question replaces it, with history.

    Paradata, over every call of the interview: ``tries`` = key presses and silences at the question (not
    counting ``*``), ``invalid_keys`` and ``silences`` among them, ``seconds_to_answer`` = from the prompt
    that was answered to the key press. The press being answered is already stored, so it counts.

    ``copies`` are the new answer's copies of its round, village and whether its response is completed (see
    "Report figures" in campaigns.models).
    """
    if existing is None:
        params = _answer_params(response_id, copies, attempt_id, (question, digit), now, prompted_at, KeyKind.ANSWER)
        db.execute(_INSERT_NEW_ANSWER, params)
        return
    seconds = round((now - prompted_at).total_seconds(), 3) if prompted_at else None
    counts = dict(db.execute(_TRIES, {"response_id": response_id, "question": question}).all())
    tries = sum(counts.values())
    invalid = counts.get(KeyKind.INVALID.value, 0)
    silences = counts.get(KeyKind.SILENCE.value, 0)
    answer_id, old_digit = existing
    if old_digit != digit:
        db.execute(
            _INSERT_CHANGE,
            {"answer_id": answer_id, "old_digit": old_digit, "new_digit": digit, "attempt_id": attempt_id,
             "changed_at": now},
        )
        log.info("event=answer_changed response=%s question=%s old=%s new=%s", response_id, question, old_digit, digit)
    db.execute(
        _UPDATE_ANSWER,
        {"answer_id": answer_id, "new_digit": digit, "new_attempt_id": attempt_id, "new_tries": tries,
         "new_invalid_keys": invalid, "new_silences": silences, "new_seconds": seconds, "now": now},
    )


def _finish(session: Session, target: RoundTarget, response: Response, end: End) -> None:
    now = clock.now()
    response.current_step = None
    response.current_try = 0
    if response.status == ResponseStatus.IN_PROGRESS:
        final = _END_STATUS.get(end.outcome)
        if final is not None:
            response.status = final
            response.completed_at = now
    finish_from_response(session, target, response)
    log.info("event=interview_end response=%s outcome=%s status=%s", response.id, end.outcome.value, response.status.value)


def add_to_do_not_call(session: Session, phone: str, round_id: int | None, reason: str) -> None:
    if session.get(DoNotCall, phone) is None:
        try:
            with session.begin_nested():
                session.add(DoNotCall(phone=phone, reason=reason, round_id=round_id))
        except IntegrityError:
            pass
