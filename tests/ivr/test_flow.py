"""The survey flow as a pure function: no Flask, no database, no Redis."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from campaigns.flow import (
    MAX_RECHOOSES,
    Ask,
    End,
    KeyKind,
    Outcome,
    advance,
    parse_position,
    rates_complete,
    start,
)
from campaigns.questionnaire import (
    RATE_KEYS,
    QuestionnaireError,
    builtin_questionnaire,
    parse_questionnaire,
    without_steps,
)

Q = builtin_questionnaire()
FULL = {"consent": "1", "screen": "1", "security": "1", "awareness": "1", "participation": "2",
        "satisfaction": "2", "cadre_contact": "1"}


def run(keys: list[str | None], answers: dict[str, str] | None = None) -> tuple[dict[str, str], list, Ask | End]:
    """Drive the flow with ``keys`` (None = silence); returns the answers, the turns, and where it stopped."""
    answers = dict(answers or {})
    action = start(Q, answers)
    turns = []
    for key in keys:
        if isinstance(action, End):
            break
        turn = advance(Q, answers, action.step, action.try_number, key)
        turns.append(turn)
        if turn.answer:
            answers[turn.answer[0]] = turn.answer[1]
        action = turn.next
    return answers, turns, action


def test_asks_in_order_and_completes():
    answers, _turns, action = run(["1", "1", "1", "1", "2", "2", "1"])
    assert answers == FULL
    # The delivery check comes after the rates: the interview is complete before it is asked.
    assert action == Ask("delivery", 1)
    assert rates_complete(Q, answers)
    answers, _turns, action = run(["1", "1", "1", "1", "2", "2", "1", "2"])
    assert answers == {**FULL, "delivery": "2"}
    assert action == End(Outcome.COMPLETED, "completed")


def test_a_round_without_the_delivery_check_completes_after_the_rates():
    without = without_steps(Q, ["delivery"])
    before = {key: digit for key, digit in FULL.items() if key != "cadre_contact"}
    assert advance(without, before, "cadre_contact", 1, "1").next == End(Outcome.COMPLETED, "completed")
    # With it, silence at the delivery check leaves it unanswered; the interview is complete all the same.
    answers, _turns, action = run(["1", "1", "1", "1", "2", "2", "1", None, None])
    assert action == End(Outcome.COMPLETED, "completed") and "delivery" not in answers


def test_first_prompt_has_intro_and_resume_has_welcome_back():
    assert start(Q, {}) == Ask("consent", 1, ("intro",))
    assert start(Q, {"consent": "1", "screen": "1", "security": "2"}) == Ask("awareness", 1, ("welcome_back",))


def test_concern_only_after_security_3_or_4_and_visit_after_either():
    answers, _t, action = run(["1", "1", "3", "2", "1", "1", "1", "1", "1", "1"])
    assert answers["concern"] == "2" and answers["visit"] == "1" and answers["delivery"] == "1"
    assert action.outcome is Outcome.COMPLETED
    answers, _t, _a = run(["1", "1", "2", "1", "1", "4", "1", "2"])
    assert "concern" not in answers and answers["visit"] == "2"


def test_consent_no_refuses_and_screen_no_is_ineligible():
    assert run(["2"])[2] == End(Outcome.REFUSED, "refused")
    assert run(["1", "2"])[2] == End(Outcome.INELIGIBLE, "ineligible")


def test_invalid_then_silence_leaves_question_unanswered_and_moves_on():
    answers, turns, action = run(["1", "1", "7", None])
    assert [t.kind for t in turns[2:]] == [KeyKind.INVALID, KeyKind.SILENCE]
    assert turns[2].next == Ask("security", 2, ("invalid",))
    assert action == Ask("awareness", 1, ("silence",))
    assert "security" not in answers


def test_star_repeats_without_using_a_try():
    _a, turns, action = run(["1", "*", "*", "5"])
    assert turns[1].next == Ask("screen", 1) and turns[2].next == Ask("screen", 1)
    assert action == Ask("screen", 2, ("invalid",))


def test_nine_opts_out_anywhere():
    assert run(["1", "1", "9"])[2] == End(Outcome.OPTED_OUT, "opted_out")


def test_unanswered_rate_question_ends_incomplete():
    _answers, _t, action = run(["1", "1", "1", "1", "2", "2", None, None, "1"])
    assert action == End(Outcome.INCOMPLETE, "incomplete")


def test_silent_consent_ends_the_call_after_the_tries():
    assert run([None, None])[2] == End(Outcome.INCOMPLETE, "incomplete")


def test_unknown_step_raises_key_error():
    with pytest.raises(KeyError):
        advance(Q, {}, "nope", 1, "1")


KEYS = st.one_of(st.none(), st.sampled_from(list("0123456789*#")), st.text(alphabet="0123456789*#", min_size=2, max_size=3))


@settings(max_examples=400, deadline=None)
@given(st.lists(KEYS, max_size=60))
def test_any_key_sequence_ends_in_a_defined_state(keys):
    answers, turns, action = run(keys)
    assert isinstance(action, Ask | End)
    # Never more re-prompts than allowed: per step, failed tries never exceed max_tries.
    for turn in turns:
        if isinstance(turn.next, Ask):
            assert 1 <= turn.next.try_number <= Q.max_tries
    for key, digit in answers.items():
        assert digit in Q.step(key).options
    if isinstance(action, End) and action.outcome is Outcome.COMPLETED:
        assert all(step.key in answers for step in Q.rate_steps)


@settings(max_examples=200, deadline=None)
@given(st.lists(KEYS, max_size=80))
def test_flow_always_terminates_within_bounded_turns(keys):
    # Worst case: every step exhausts its tries; the flow must end within steps * tries inputs of non-repeats.
    _answers, _turns, action = run([k for k in keys if k != "*"] + [None] * (len(Q.steps) * Q.max_tries + 1))
    assert isinstance(action, End)


# --------------------------------------------------------------------------------------------- read-back


def with_readback(questionnaire=Q):
    content = copy.deepcopy(dict(questionnaire.content))
    content["readback"] = True
    return parse_questionnaire(content)


QR = with_readback()


def test_readback_asks_for_confirmation_after_each_rate_answer_only():
    consent = advance(QR, {}, "consent", 1, "1")
    assert consent.next == Ask("screen", 1)  # not a rate question: no read-back
    turn = advance(QR, {"consent": "1", "screen": "1"}, "security", 1, "3")
    assert turn.answer == ("security", "3")  # kept at once, before the confirmation
    assert turn.next == Ask("security", 1, (), True) and turn.next.position == "security.confirm"


def test_confirming_goes_on_and_re_choosing_asks_again():
    answers = {"consent": "1", "screen": "1", "security": "3"}
    confirmed = advance(QR, answers, "security.confirm", 1, "1")
    assert confirmed.kind is KeyKind.CONFIRM and confirmed.answer is None
    assert confirmed.next == Ask("concern", 1)
    rechose = advance(QR, answers, "security.confirm", 1, "2")
    assert rechose.kind is KeyKind.RECHOOSE and rechose.next == Ask("security", 1)
    again = advance(QR, answers, "security", 1, "1", rechosen=1)
    assert again.answer == ("security", "1") and again.next == Ask("security", 1, (), True)
    # The new answer decides the branching: security 1 skips concern.
    assert advance(QR, {**answers, "security": "1"}, "security.confirm", 1, "1").next == Ask("awareness", 1)


def test_after_the_last_re_choice_the_answer_is_taken_without_read_back():
    answers = {"consent": "1", "screen": "1"}
    turn = advance(QR, answers, "security", 1, "2", rechosen=MAX_RECHOOSES)
    assert turn.answer == ("security", "2") and turn.next == Ask("awareness", 1)


def test_keys_at_a_confirmation():
    answers = {"consent": "1", "screen": "1", "security": "4"}
    assert advance(QR, answers, "security.confirm", 1, "*").next == Ask("security", 1, (), True)
    assert advance(QR, answers, "security.confirm", 1, "9").next == End(Outcome.OPTED_OUT, "opted_out")
    wrong = advance(QR, answers, "security.confirm", 1, "3")
    assert wrong.kind is KeyKind.INVALID and wrong.next == Ask("security", 2, ("invalid",), True)
    # Tries used up at a confirmation: the answer pressed stands and the survey goes on.
    assert advance(QR, answers, "security.confirm", 2, None).next == Ask("concern", 1, ("silence",))


def test_positions_are_validated():
    assert parse_position(QR, "security.confirm") == (QR.step("security"), True)
    for bad in ("consent.confirm", "nope", "nope.confirm", "security.confirm.confirm"):
        with pytest.raises(KeyError):
            parse_position(QR, bad)
    with pytest.raises(KeyError):
        parse_position(Q, "security.confirm")  # no read-back in the default questionnaire


# ------------------------------------------------------------------- properties, over random questionnaires

HANGUP = "hangup"
EVENTS = st.one_of(KEYS, st.just(HANGUP))


@st.composite
def questionnaires(draw):
    """A random questionnaire that validates: steps, options, gates, branches, rates, read-back on or off."""
    count = draw(st.integers(2, 7))
    rates = draw(st.lists(st.sampled_from(RATE_KEYS), unique=True, max_size=min(count, 3)))
    rate_at = dict(zip(draw(st.permutations(range(count)))[: len(rates)], rates, strict=True))
    steps = []
    for index in range(count):
        options = draw(st.lists(st.sampled_from("012345678"), min_size=1, max_size=4, unique=True))
        step = {"key": f"s{index}", "prompt": f"问题{index}", "options": {d: f"选项{d}" for d in options}}
        if index in rate_at:
            step.update(rate=rate_at[index], positive=options[:1])
        else:
            if index and draw(st.booleans()):
                other = steps[draw(st.integers(0, index - 1))]
                step["ask_if"] = {other["key"]: draw(st.lists(st.sampled_from(sorted(other["options"])), min_size=1, unique=True))}
            if len(options) > 1 and draw(st.booleans()):
                step["end_on"] = {options[-1]: draw(st.sampled_from(["refused", "ineligible"]))}
        steps.append(step)
    content = copy.deepcopy(dict(Q.content))
    content.update(
        key="random",
        steps=steps,
        rates={rate: {"label": rate, "target": 0.9} for rate in rates},
        max_tries=draw(st.integers(1, 3)),
        readback=draw(st.booleans()),
    )
    try:
        return parse_questionnaire(content)
    except QuestionnaireError:
        assume(False)


def drive(questionnaire, events):
    """Play ``events`` (keys, None for silence, HANGUP to end the call and be called again) through the flow.

    Checks, at every turn, what must always hold; returns the answers and where the flow stopped.
    """
    answers: dict[str, str] = {}
    rechosen: Counter[str] = Counter()
    asks: Counter[str] = Counter()
    action = start(questionnaire, answers)
    if isinstance(action, Ask):
        asks[action.step] += 1
    for event in events:
        if isinstance(action, End):
            break
        if event == HANGUP:
            action = start(questionnaire, answers)  # the next call, or the resident calling back
            if isinstance(action, Ask):
                assert action.step not in answers, "a resumed call asks again what was answered"
                assert action.preface == (("welcome_back",) if answers else ("intro",))
                asks[action.step] += 1
            continue
        turn = advance(questionnaire, answers, action.position, action.try_number, event, rechosen=rechosen[action.step])
        if turn.kind is KeyKind.RECHOOSE:
            rechosen[action.step] += 1
        if turn.answer:
            question, digit = turn.answer
            assert digit in questionnaire.step(question).options
            answers[question] = digit
        action = turn.next
        if isinstance(action, Ask):
            assert 1 <= action.try_number <= questionnaire.max_tries
            assert not action.confirm or questionnaire.reads_back(questionnaire.step(action.step))
            if turn.kind is not KeyKind.REPEAT and action.try_number == 1 and not action.confirm:
                asks[action.step] += 1
                # A question is put once, again only after a re-choice or in a new call (never if answered).
                assert asks[action.step] <= 1 + rechosen[action.step] + events.count(HANGUP)
    assert all(count <= MAX_RECHOOSES for count in rechosen.values())
    return answers, action


@settings(max_examples=300, deadline=None)
@given(questionnaires(), st.lists(EVENTS, max_size=60))
def test_any_events_on_any_questionnaire_end_in_a_defined_state(questionnaire, events):
    answers, action = drive(questionnaire, events)
    assert isinstance(action, Ask | End)
    if isinstance(action, End):
        if action.outcome is Outcome.COMPLETED:
            assert all(step.key in answers for step in questionnaire.rate_steps)
        if action.outcome in (Outcome.REFUSED, Outcome.INELIGIBLE):
            gate = [key for key, digit in answers.items() if questionnaire.step(key).end_on.get(digit)]
            assert len(gate) == 1
    for key in answers:
        assert key in {step.key for step in questionnaire.steps}


@settings(max_examples=300, deadline=None)
@given(questionnaires(), st.lists(EVENTS, max_size=60))
def test_the_flow_always_ends_within_a_bounded_number_of_inputs(questionnaire, events):
    # The worst case per step: every ask and every read-back uses all its tries, re-choosing each time.
    bound = len(questionnaire.steps) * (MAX_RECHOOSES + 1) * 2 * questionnaire.max_tries + 1
    keys = [e for e in events if e not in ("*", HANGUP) and not (isinstance(e, str) and e.startswith("*"))]
    _answers, action = drive(questionnaire, keys + [None] * bound)
    assert isinstance(action, End)


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENTS, max_size=80))
def test_default_questionnaire_with_readback_under_any_events(events):
    answers, action = drive(QR, events)
    assert isinstance(action, Ask | End)
    if isinstance(action, End) and action.outcome is Outcome.COMPLETED:
        assert set(answers) >= {step.key for step in QR.rate_steps}
