"""The survey flow as a pure function: no Flask, no database, no Redis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.questionnaire import builtin_questionnaire
from ivr.flow import Ask, End, KeyKind, Outcome, advance, start

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
    assert action == End(Outcome.COMPLETED, "completed")


def test_first_prompt_has_intro_and_resume_has_welcome_back():
    assert start(Q, {}) == Ask("consent", 1, ("intro",))
    assert start(Q, {"consent": "1", "screen": "1", "security": "2"}) == Ask("awareness", 1, ("welcome_back",))


def test_concern_only_after_security_3_or_4_and_visit_after_either():
    answers, _t, action = run(["1", "1", "3", "2", "1", "1", "1", "1", "1"])
    assert answers["concern"] == "2" and answers["visit"] == "1"
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
    _answers, _t, action = run(["1", "1", "1", "1", "2", "2", None, None])
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
    _answers, turns, action = run([k for k in keys if k != "*"] + [None] * (len(Q.steps) * Q.max_tries + 1))
    assert isinstance(action, End)
