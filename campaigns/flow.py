"""The survey flow as a pure function: (questionnaire, answers so far, where we are, input) -> what next.

No Flask, no database, no Redis: the views persist what this decides and render it as TwiML.

Keys: an option key answers the question; ``*`` repeats it; ``9`` stops the survey (do-not-call); anything
else is an invalid key. Silence (no key) re-asks. After ``max_tries`` failed tries (invalid or silent) the
question is left unanswered and the flow goes on (a gate question, one with ``end_on``, ends the call).

Read-back (``readback: true`` in the questionnaire): after a rate question is answered, the flow asks for
confirmation ("您选择的是……,确认请按1,重新选择请按2") at the position ``<step>.confirm``. The answer is
kept as soon as it is pressed; ``1`` confirms and goes on; ``2`` asks the question again, and the new key
replaces the answer. A resident may re-choose at most :data:`MAX_RECHOOSES` times per question; after that
the answer is taken without read-back. A confirmation left unanswered (invalid keys, silence) keeps the
answer and goes on.

A *position* names what is being asked: a step key (``security``) or its confirmation
(``security.confirm``). Positions are what the Gather URLs and ``Response.current_step`` carry.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from campaigns.questionnaire import REPEAT_KEY, STOP_KEY, Questionnaire, Step

CONFIRM_SUFFIX = ".confirm"
CONFIRM_KEY = "1"
RECHOOSE_KEY = "2"
MAX_RECHOOSES = 2


class Outcome(enum.StrEnum):
    COMPLETED = "completed"  # every rate question answered, and the flow reached its end
    REFUSED = "refused"  # consent: no
    INELIGIBLE = "ineligible"  # screening: no
    OPTED_OUT = "opted_out"  # pressed 9
    INCOMPLETE = "incomplete"  # reached the end with a rate question unanswered (tries used up)


class KeyKind(enum.StrEnum):
    ANSWER = "answer"  # an option key of the question
    INVALID = "invalid"  # a key that means nothing here
    SILENCE = "silence"  # no key before the Gather timed out
    REPEAT = "repeat"  # * : say it again
    STOP = "stop"  # 9 : stop, never call again
    CONFIRM = "confirm"  # read-back: 1, the answer stands
    RECHOOSE = "rechoose"  # read-back: 2, ask the question again


@dataclass(frozen=True)
class Ask:
    """Ask ``step`` (try ``try_number``), after saying the ``preface`` messages (names in messages).

    With ``confirm``, read back the answer given to ``step`` and ask for confirmation instead.
    """

    step: str
    try_number: int = 1
    preface: tuple[str, ...] = ()
    confirm: bool = False

    @property
    def position(self) -> str:
        return position_key(self.step, self.confirm)


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


def position_key(step: str, confirm: bool = False) -> str:
    return step + CONFIRM_SUFFIX if confirm else step


def parse_position(questionnaire: Questionnaire, position: str) -> tuple[Step, bool]:
    """The step and phase a position names.

    Raises:
        KeyError: not a step of the questionnaire, or a confirmation where nothing is read back.
    """
    confirm = position.endswith(CONFIRM_SUFFIX)
    key = position[: -len(CONFIRM_SUFFIX)] if confirm else position
    step = questionnaire.step(key)
    if confirm and not questionnaire.reads_back(step):
        raise KeyError(position)
    return step, confirm


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


def _go_on(
    questionnaire: Questionnaire, answers: Mapping[str, str], step: Step, preface: tuple[str, ...] = ()
) -> Ask | End:
    """The question after ``step`` that applies, or the end of the questions."""
    following = _next_step_after(questionnaire, answers, questionnaire.index(step.key))
    if following is None:
        return _end_of_questions(questionnaire, answers)
    return Ask(following.key, 1, preface)


def start(questionnaire: Questionnaire, answers: Mapping[str, str]) -> Ask | End:
    """Where a call begins: the first unanswered question that applies, with a greeting.

    A resumed interview (some answers already kept) is greeted with ``welcome_back`` and never asked again
    what was answered.
    """
    step = _next_step_after(questionnaire, answers, -1)
    if step is None:
        return _end_of_questions(questionnaire, answers)
    return Ask(step.key, 1, ("welcome_back",) if answers else ("intro",))


def classify(step: Step, digits: str | None, confirm: bool = False) -> KeyKind:
    if not digits:
        return KeyKind.SILENCE
    key = digits[0]
    if key == REPEAT_KEY:
        return KeyKind.REPEAT
    if key == STOP_KEY:
        return KeyKind.STOP
    if confirm:
        if digits == CONFIRM_KEY:
            return KeyKind.CONFIRM
        if digits == RECHOOSE_KEY:
            return KeyKind.RECHOOSE
        return KeyKind.INVALID
    if digits in step.options:
        return KeyKind.ANSWER
    return KeyKind.INVALID


def advance(
    questionnaire: Questionnaire,
    answers: Mapping[str, str],
    position: str,
    try_number: int,
    digits: str | None,
    *,
    rechosen: int = 0,
) -> Turn:
    """One input at ``position`` (try ``try_number``): ``digits`` is the key(s) pressed, None/"" for silence.

    ``rechosen`` is how many times the resident already re-chose this question's answer at its read-back.

    Raises:
        KeyError: ``position`` is not a position of the questionnaire (the caller validates it first).
    """
    step, confirm = parse_position(questionnaire, position)
    kind = classify(step, digits, confirm)

    if kind is KeyKind.STOP:
        return Turn(kind, End(Outcome.OPTED_OUT, "opted_out"))
    if kind is KeyKind.REPEAT:
        # A repeat is the resident asking, not a failed try: the try count stays.
        return Turn(kind, Ask(step.key, try_number, (), confirm))
    if kind is KeyKind.CONFIRM:
        return Turn(kind, _go_on(questionnaire, answers, step))
    if kind is KeyKind.RECHOOSE:
        return Turn(kind, Ask(step.key, 1))
    if kind is KeyKind.ANSWER:
        assert digits is not None
        outcome = step.end_on.get(digits)
        if outcome == "refused":
            return Turn(kind, End(Outcome.REFUSED, "refused"), (step.key, digits))
        if outcome == "ineligible":
            return Turn(kind, End(Outcome.INELIGIBLE, "ineligible"), (step.key, digits))
        if questionnaire.reads_back(step) and rechosen < MAX_RECHOOSES:
            return Turn(kind, Ask(step.key, 1, (), True), (step.key, digits))
        merged = {**answers, step.key: digits}
        return Turn(kind, _go_on(questionnaire, merged, step), (step.key, digits))

    # Invalid key or silence: ask again, or give up on this question once the tries are used up.
    message = "invalid" if kind is KeyKind.INVALID else "silence"
    if try_number < questionnaire.max_tries:
        return Turn(kind, Ask(step.key, try_number + 1, (message,), confirm))
    if confirm:
        # The answer was pressed and kept; an unanswered confirmation does not undo it.
        return Turn(kind, _go_on(questionnaire, answers, step, (message,)))
    if step.end_on:
        # A gate question (consent, screening) left unanswered ends the call; the resident may be retried.
        return Turn(kind, End(Outcome.INCOMPLETE, "incomplete"))
    return Turn(kind, _go_on(questionnaire, answers, step, (message,)))
