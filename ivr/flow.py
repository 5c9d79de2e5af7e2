"""The survey flow as a pure function: (questionnaire, answers so far, where we are, input) -> what next.

No Flask, no database, no Redis: the views persist what this decides and render it as TwiML.

Keys: an option key answers the question; ``*`` repeats it; ``9`` stops the survey (do-not-call); anything
else is an invalid key. Silence (no key) re-asks. After ``max_tries`` failed tries (invalid or silent) the
question is left unanswered and the flow goes on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from campaigns.questionnaire import REPEAT_KEY, STOP_KEY, Questionnaire, Step


class Outcome(enum.StrEnum):
    COMPLETED = "completed"  # every rate question answered, and the flow reached its end
    REFUSED = "refused"  # consent: no
    INELIGIBLE = "ineligible"  # screening: no
    OPTED_OUT = "opted_out"  # pressed 9
    INCOMPLETE = "incomplete"  # reached the end with a rate question unanswered (tries used up)


class KeyKind(enum.StrEnum):
    ANSWER = "answer"
    INVALID = "invalid"
    SILENCE = "silence"
    REPEAT = "repeat"
    STOP = "stop"


@dataclass(frozen=True)
class Ask:
    """Ask ``step`` (try ``try_number``), after saying the ``preface`` messages (names in messages)."""

    step: str
    try_number: int = 1
    preface: tuple[str, ...] = ()


@dataclass(frozen=True)
class End:
    """Say ``message`` (a name in messages) and hang up."""

    outcome: Outcome
    message: str


@dataclass(frozen=True)
class Turn:
    """The result of one key press (or silence)."""

    kind: KeyKind
    next: Ask | End
    answer: tuple[str, str] | None = None  # (question, digit) to store


def is_asked(step: Step, answers: Mapping[str, str]) -> bool:
    """A step is asked when it has no condition, or ANY listed earlier answer is one of its keys."""
    if not step.ask_if:
        return True
    return any(answers.get(key) in digits for key, digits in step.ask_if.items())


def rates_complete(questionnaire: Questionnaire, answers: Mapping[str, str]) -> bool:
    return all(step.key in answers for step in questionnaire.rate_steps)


def _next_step_after(questionnaire: Questionnaire, answers: Mapping[str, str], index: int) -> Step | None:
    for step in questionnaire.steps[index + 1 :]:
        if step.key not in answers and is_asked(step, answers):
            return step
    return None


def _end_of_questions(questionnaire: Questionnaire, answers: Mapping[str, str]) -> End:
    if rates_complete(questionnaire, answers):
        return End(Outcome.COMPLETED, "completed")
    return End(Outcome.INCOMPLETE, "incomplete")


def start(questionnaire: Questionnaire, answers: Mapping[str, str]) -> Ask | End:
    """Where a call begins: the first unanswered question that applies, with a greeting.

    A resumed interview (some answers already kept) is greeted with ``welcome_back`` and never asked again
    what was answered.
    """
    step = _next_step_after(questionnaire, answers, -1)
    if step is None:
        return _end_of_questions(questionnaire, answers)
    return Ask(step.key, 1, ("welcome_back",) if answers else ("intro",))


def classify(step: Step, digits: str | None) -> KeyKind:
    if not digits:
        return KeyKind.SILENCE
    key = digits[0]
    if key == REPEAT_KEY:
        return KeyKind.REPEAT
    if key == STOP_KEY:
        return KeyKind.STOP
    if digits in step.options:
        return KeyKind.ANSWER
    return KeyKind.INVALID


def advance(
    questionnaire: Questionnaire,
    answers: Mapping[str, str],
    step_key: str,
    try_number: int,
    digits: str | None,
) -> Turn:
    """One input at ``step_key`` (try ``try_number``): ``digits`` is the key(s) pressed, None/"" for silence.

    Raises:
        KeyError: ``step_key`` is not a step of the questionnaire (the caller validates it first).
    """
    for index, step in enumerate(questionnaire.steps):
        if step.key == step_key:
            break
    else:
        raise KeyError(step_key)
    kind = classify(step, digits)

    if kind is KeyKind.STOP:
        return Turn(kind, End(Outcome.OPTED_OUT, "opted_out"))
    if kind is KeyKind.REPEAT:
        # A repeat is the resident asking, not a failed try: the try count stays.
        return Turn(kind, Ask(step.key, try_number))
    if kind is KeyKind.ANSWER:
        assert digits is not None
        outcome = step.end_on.get(digits)
        if outcome == "refused":
            return Turn(kind, End(Outcome.REFUSED, "refused"), (step.key, digits))
        if outcome == "ineligible":
            return Turn(kind, End(Outcome.INELIGIBLE, "ineligible"), (step.key, digits))
        merged = {**answers, step.key: digits}
        following = _next_step_after(questionnaire, merged, index)
        if following is None:
            return Turn(kind, _end_of_questions(questionnaire, merged), (step.key, digits))
        return Turn(kind, Ask(following.key, 1), (step.key, digits))

    # Invalid key or silence: ask again, or leave the question unanswered once the tries are used up.
    message = "invalid" if kind is KeyKind.INVALID else "silence"
    if try_number < questionnaire.max_tries:
        return Turn(kind, Ask(step.key, try_number + 1, (message,)))
    if step.end_on:
        # A gate question (consent, screening) left unanswered ends the call; the resident may be retried.
        return Turn(kind, End(Outcome.INCOMPLETE, "incomplete"))
    following = _next_step_after(questionnaire, answers, index)
    if following is None:
        return Turn(kind, _end_of_questions(questionnaire, answers))
    return Turn(kind, Ask(following.key, 1, (message,)))
