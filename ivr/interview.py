"""The interview service: persists what the pure flow decides. Takes a Session; the view commits.

Every key press is stored once (KeyPress, unique per response and prompt sequence number); each answer is
written when its key press arrives; a replayed webhook changes nothing and gets the current prompt again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.calls import finish_from_response, mark_answered
from campaigns.models import (
    FINAL_RESPONSE_STATUSES,
    Answer,
    CallAttempt,
    DoNotCall,
    KeyPress,
    QuestionnaireVersion,
    Response,
    ResponseStatus,
    Round,
    RoundTarget,
)
from campaigns.questionnaire import Questionnaire, from_version
from ivr.flow import Ask, End, KeyKind, Outcome, advance, rates_complete, start

log = logging.getLogger("sanlv.ivr")


class InterviewError(ValueError):
    """A webhook does not fit the interview's state (wrong step, unknown attempt). Answered with a 4xx."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Prompt:
    """What to play next: an Ask with the sequence number its Gather carries, or an End."""

    action: Ask | End
    seq: int
    questionnaire: Questionnaire


_questionnaires: dict[int, Questionnaire] = {}


def questionnaire_for(session: Session, round_: Round) -> Questionnaire:
    """The round's questionnaire version (immutable, so cached per process by version id)."""
    cached = _questionnaires.get(round_.questionnaire_id)
    if cached is None:
        version = session.get(QuestionnaireVersion, round_.questionnaire_id)
        assert version is not None
        cached = from_version(version)
        _questionnaires[round_.questionnaire_id] = cached
    return cached


def answers_of(session: Session, response: Response) -> dict[str, str]:
    return dict(session.execute(select(Answer.question, Answer.digit).where(Answer.response_id == response.id)).all())


def _response_for(session: Session, target: RoundTarget) -> Response:
    response = session.scalar(select(Response).where(Response.target_id == target.id))
    if response is not None:
        return response
    response = Response(round_id=target.round_id, target_id=target.id, status=ResponseStatus.IN_PROGRESS)
    try:
        with session.begin_nested():
            session.add(response)
    except IntegrityError:
        # Another request created it first (one response per household per round).
        response = session.scalar(select(Response).where(Response.target_id == target.id))
        assert response is not None
    return response


def _ask(response: Response, ask: Ask) -> int:
    response.current_step = ask.step
    response.current_try = ask.try_number
    response.prompt_seq += 1
    response.prompted_at = clock.now()
    return response.prompt_seq


def begin_call(session: Session, attempt: CallAttempt) -> Prompt:
    """The call was answered by a person: start or resume the interview."""
    target = mark_answered(session, attempt)
    round_ = session.get(Round, target.round_id)
    assert round_ is not None
    questionnaire = questionnaire_for(session, round_)
    response = _response_for(session, target)
    if response.status in FINAL_RESPONSE_STATUSES and response.status != ResponseStatus.COMPLETED:
        return Prompt(End(Outcome(response.status.value), response.status.value), response.prompt_seq, questionnaire)
    answers = answers_of(session, response)
    action = start(questionnaire, answers)
    if isinstance(action, End):
        _finish(session, target, response, action, questionnaire, answers)
        return Prompt(action, response.prompt_seq, questionnaire)
    seq = _ask(response, action)
    log.info("event=interview_start attempt=%s response=%s step=%s resumed=%s", attempt.id, response.id, action.step, bool(answers))
    return Prompt(action, seq, questionnaire)


def current_prompt(session: Session, response: Response, questionnaire: Questionnaire) -> Prompt:
    """The prompt the interview is at now (for a replayed webhook)."""
    if response.current_step is None:
        raise InterviewError(f"response {response.id} has not started")
    return Prompt(Ask(response.current_step, response.current_try), response.prompt_seq, questionnaire)


def handle_input(
    session: Session, attempt: CallAttempt, step: str, seq: int, digits: str | None
) -> Prompt:
    """One Gather result (``digits``) or silence (None) for prompt ``seq`` asking ``step``.

    Raises:
        InterviewError: the step or sequence number is not the interview's current one.
    """
    target = session.get(RoundTarget, attempt.target_id)
    assert target is not None
    round_ = session.get(Round, target.round_id)
    assert round_ is not None
    questionnaire = questionnaire_for(session, round_)
    response = session.scalar(select(Response).where(Response.target_id == target.id))
    if response is None:
        raise InterviewError(f"attempt {attempt.id}: no interview has started", 409)
    if not questionnaire.has_step(step):
        raise InterviewError(f"step={step!r} is not a question of this questionnaire", 400)
    already = session.scalar(select(KeyPress.id).where(KeyPress.response_id == response.id, KeyPress.seq == seq))
    if already is not None:
        log.info("event=replayed_webhook attempt=%s response=%s seq=%s", attempt.id, response.id, seq)
        if response.status in FINAL_RESPONSE_STATUSES and response.current_step is None:
            return Prompt(End(Outcome(response.status.value), response.status.value), seq, questionnaire)
        return _replay(session, response, questionnaire)
    if seq != response.prompt_seq or step != response.current_step:
        raise InterviewError(
            f"step={step} n={seq} is not the current question (current: {response.current_step} n={response.prompt_seq})"
        )
    answers = answers_of(session, response)
    turn = advance(questionnaire, answers, step, response.current_try, digits)
    now = clock.now()
    press = KeyPress(
        response_id=response.id,
        attempt_id=attempt.id,
        seq=seq,
        step=step,
        try_number=response.current_try,
        digits=digits or "",
        outcome=turn.kind.value,
        received_at=now,
    )
    try:
        with session.begin_nested():
            session.add(press)
    except IntegrityError:
        # The same webhook is being processed concurrently; the other request wins.
        return _replay(session, response, questionnaire)
    if turn.answer is not None:
        question, digit = turn.answer
        _store_answer(session, response, attempt, question, digit, now)
        answers[question] = digit
    if response.status == ResponseStatus.IN_PROGRESS and rates_complete(questionnaire, answers):
        # Completed the moment the last rate question is answered, whatever happens after (DESIGN.md).
        response.status = ResponseStatus.COMPLETED
        response.completed_at = now
        finish_from_response(session, target, response)
    if turn.kind is KeyKind.STOP:
        add_to_do_not_call(session, target.phone, round_.id, "pressed 9 during the survey")
    action = turn.next
    if isinstance(action, End):
        _finish(session, target, response, action, questionnaire, answers)
        return Prompt(action, seq, questionnaire)
    return Prompt(action, _ask(response, action), questionnaire)


def _replay(session: Session, response: Response, questionnaire: Questionnaire) -> Prompt:
    if response.current_step is None:
        status = response.status.value if response.status in FINAL_RESPONSE_STATUSES else "incomplete"
        return Prompt(End(Outcome(status), status), response.prompt_seq, questionnaire)
    return current_prompt(session, response, questionnaire)


def _store_answer(
    session: Session, response: Response, attempt: CallAttempt, question: str, digit: str, now
) -> None:
    counts = dict(
        session.execute(
            select(KeyPress.outcome, func.count())
            .where(KeyPress.response_id == response.id, KeyPress.step == question)
            .group_by(KeyPress.outcome)
        ).all()
    )
    seconds = (now - response.prompted_at).total_seconds() if response.prompted_at else None
    existing = session.scalar(select(Answer).where(Answer.response_id == response.id, Answer.question == question))
    values = {
        "digit": digit,
        "attempt_id": attempt.id,
        "tries": response.current_try,
        "invalid_keys": counts.get(KeyKind.INVALID.value, 0),
        "silences": counts.get(KeyKind.SILENCE.value, 0),
        "seconds_to_answer": seconds,
    }
    if existing is None:
        session.add(Answer(response_id=response.id, round_id=response.round_id, question=question, **values))
    else:
        for name, value in values.items():
            setattr(existing, name, value)
    session.flush()


def _finish(
    session: Session,
    target: RoundTarget,
    response: Response,
    end: End,
    questionnaire: Questionnaire,
    answers: dict[str, str],
) -> None:
    now = clock.now()
    response.current_step = None
    response.current_try = 0
    if response.status == ResponseStatus.IN_PROGRESS:
        final = {
            Outcome.COMPLETED: ResponseStatus.COMPLETED,
            Outcome.REFUSED: ResponseStatus.REFUSED,
            Outcome.INELIGIBLE: ResponseStatus.INELIGIBLE,
            Outcome.OPTED_OUT: ResponseStatus.OPTED_OUT,
        }.get(end.outcome)
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
