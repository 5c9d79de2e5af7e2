"""Whole calls through the interview, on both databases: the prompts each call plays and the rows it leaves.

Each call is made over real HTTP as Twilio makes it: the voice webhook, then one signed Gather action per
prompt until the call hangs up. What it leaves -- response, target, attempt, answers with their paradata and
report copies, key presses -- and the TwiML of every prompt are checked against what the default
questionnaire says should happen.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from lxml import etree
from sqlalchemy import select

from campaigns import interview
from campaigns.db import make_read_session_factory
from campaigns.models import (
    Answer,
    CallAttempt,
    CallStatus,
    KeyPress,
    Response,
    ResponseStatus,
    RoundTarget,
    TargetState,
)
from campaigns.questionnaire import builtin_questionnaire
from tests.ivr.support import (
    base_params,
    gather_url,
    open_call,
    post,
    press,
    spoken,
    twiml,
)

Q = builtin_questionnaire()


@dataclass(frozen=True)
class Scenario:
    """A whole call: ``keys`` pressed one per prompt (None: silence) and what should come of it.

    ``prompts``: each prompt played, as the messages said before the question and the position asked
    ("intro consent", "silence security"), then ``end``, the message said before hanging up. ``presses``:
    (step, try, digits, outcome) of every key press, in order; ``answers``: question -> (key, tries, invalid
    keys, silences).
    """

    keys: list[str | None]
    prompts: list[str]
    end: str
    presses: list[tuple[str, int, str, str]]
    answers: dict[str, tuple[str, int, int, int]]
    status: ResponseStatus
    target: TargetState


def plain(keys: list[str], prompts: list[str]) -> dict:
    """Every prompt answered with its key at the first try."""
    steps = [prompt.split()[-1] for prompt in prompts]
    return {
        "presses": [(step, 1, key, "answer") for step, key in zip(steps, keys, strict=True)],
        "answers": {step: (key, 1, 0, 0) for step, key in zip(steps, keys, strict=True)},
    }


ASKED = ["intro consent", "screen", "security", "concern", "awareness", "participation", "satisfaction",
         "cadre_contact", "visit", "delivery"]  # fmt: skip
NO_WORRY = ["intro consent", "screen", "security", "awareness", "participation", "satisfaction", "cadre_contact",
            "delivery"]  # fmt: skip
LEFT_UNANSWERED = ["security", "silence security", "silence awareness", "silence awareness", "silence participation",
                   "silence participation", "silence satisfaction", "silence satisfaction", "silence cadre_contact",
                   "silence cadre_contact", "silence delivery", "silence delivery"]  # fmt: skip

SCENARIOS = {
    "completed, the visit and the delivery check asked last": Scenario(
        keys=["1", "1", "3", "2", "1", "2", "4", "1", "1", "2"], prompts=ASKED, end="completed",
        **plain(["1", "1", "3", "2", "1", "2", "4", "1", "1", "2"], ASKED),
        status=ResponseStatus.COMPLETED, target=TargetState.COMPLETED,
    ),
    "completed by the last question": Scenario(
        keys=["1", "1", "1", "1", "2", "1", "1", "1"], prompts=NO_WORRY, end="completed",
        **plain(["1", "1", "1", "1", "2", "1", "1", "1"], NO_WORRY),
        status=ResponseStatus.COMPLETED, target=TargetState.COMPLETED,
    ),
    "completed with the rates, silent at the delivery check": Scenario(
        keys=["1", "1", "1", "1", "2", "1", "1", None, None], prompts=[*NO_WORRY, "silence delivery"],
        end="completed",
        presses=plain(["1", "1", "1", "1", "2", "1", "1"], NO_WORRY[:-1])["presses"]
        + [("delivery", 1, "", "silence"), ("delivery", 2, "", "silence")],
        answers=plain(["1", "1", "1", "1", "2", "1", "1"], NO_WORRY[:-1])["answers"],
        status=ResponseStatus.COMPLETED, target=TargetState.COMPLETED,
    ),
    "wrong keys, silence and * on the way": Scenario(
        # consent; screen *, 1; security 7, 3; concern silence, 2; awareness *, 1; participation, satisfaction,
        # cadre contact, visit
        keys=["1", "*", "1", "7", "3", None, "2", "*", "1", "1", "4", "1", "2", "0"],
        prompts=["intro consent", "screen", "screen", "security", "invalid security", "concern", "silence concern",
                 "awareness", "awareness", "participation", "satisfaction", "cadre_contact", "visit", "delivery"],
        end="completed",
        presses=[("consent", 1, "1", "answer"), ("screen", 1, "*", "repeat"), ("screen", 1, "1", "answer"),
                 ("security", 1, "7", "invalid"), ("security", 2, "3", "answer"), ("concern", 1, "", "silence"),
                 ("concern", 2, "2", "answer"), ("awareness", 1, "*", "repeat"), ("awareness", 1, "1", "answer"),
                 ("participation", 1, "1", "answer"), ("satisfaction", 1, "4", "answer"),
                 ("cadre_contact", 1, "1", "answer"), ("visit", 1, "2", "answer"), ("delivery", 1, "0", "answer")],
        answers={"consent": ("1", 1, 0, 0), "screen": ("1", 1, 0, 0), "security": ("3", 2, 1, 0),
                 "concern": ("2", 2, 0, 1), "awareness": ("1", 1, 0, 0), "participation": ("1", 1, 0, 0),
                 "satisfaction": ("4", 1, 0, 0), "cadre_contact": ("1", 1, 0, 0), "visit": ("2", 1, 0, 0),
                 "delivery": ("0", 1, 0, 0)},
        status=ResponseStatus.COMPLETED, target=TargetState.COMPLETED,
    ),
    "refused": Scenario(
        keys=["2"], prompts=["intro consent"], end="refused", **plain(["2"], ["intro consent"]),
        status=ResponseStatus.REFUSED, target=TargetState.REFUSED,
    ),
    "ineligible": Scenario(
        keys=["1", "2"], prompts=["intro consent", "screen"], end="ineligible",
        **plain(["1", "2"], ["intro consent", "screen"]),
        status=ResponseStatus.INELIGIBLE, target=TargetState.INELIGIBLE,
    ),
    "every question left unanswered": Scenario(
        keys=["1", "1"] + [None] * 30, prompts=["intro consent", "screen", *LEFT_UNANSWERED], end="incomplete",
        presses=[("consent", 1, "1", "answer"), ("screen", 1, "1", "answer")]
        + [(step, try_, "", "silence") for step in ("security", "awareness", "participation", "satisfaction",
                                                     "cadre_contact", "delivery") for try_ in (1, 2)],
        answers={"consent": ("1", 1, 0, 0), "screen": ("1", 1, 0, 0)},
        status=ResponseStatus.IN_PROGRESS, target=TargetState.IN_CALL,  # the status callback settles it
    ),
}  # fmt: skip


def said(prompt: str) -> list[str]:
    """What a prompt says: its messages, then its question."""
    *messages, step = prompt.split()
    return [Q.messages[name] for name in messages] + [Q.step(step).prompt]


def make_call(settings, sessions, number: int, keys: list[str | None]) -> tuple[int, list]:
    """One whole call: the voice webhook, then ``keys`` until the call hangs up. (attempt id, TwiML seen)."""
    sid = f"CA{number:032x}"
    attempt_id = open_call(sessions, phone=f"+86138000{number:05d}", sid=sid)
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params(CallSid=sid)))
    seen = [doc]
    for digits in keys:
        if doc.xpath("/Response/Hangup"):
            break
        doc = press(settings, doc, digits, CallSid=sid)
        seen.append(doc)
    assert doc.xpath("/Response/Hangup"), "the call did not end"
    return attempt_id, seen


def rows(sessions, attempt_id: int) -> dict:
    """What a call left in the database, without ids and times (whether a time is set is kept)."""
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        target = session.get(RoundTarget, attempt.target_id)
        response = session.scalar(select(Response).where(Response.target_id == target.id))
        answers = session.scalars(select(Answer).where(Answer.response_id == response.id)).all()
        presses = session.scalars(select(KeyPress).where(KeyPress.response_id == response.id)).all()
        return {
            "attempt": (attempt.status, attempt.answered_at is not None, attempt.answered_by, attempt.ended_at),
            "target": (target.state, target.last_outcome, target.final_at is not None, target.next_attempt_at,
                       target.response_status, target.attempts, target.claimed_at is not None),
            "response": (response.status, response.current_step, response.current_try, response.prompt_seq,
                         response.prompted_at is not None, response.completed_at is not None),
            "answers": sorted(
                (a.question, a.digit, a.tries, a.invalid_keys, a.silences, a.seconds_to_answer is not None,
                 a.counted, a.village_id == target.village_id, a.round_id == target.round_id,
                 a.attempt_id == attempt_id)
                for a in answers
            ),
            "presses": sorted(
                (p.seq, p.step, p.try_number, p.digits, p.outcome, p.attempt_id == attempt_id) for p in presses
            ),
        }  # fmt: skip


def expected_rows(scenario: Scenario) -> dict:
    final = scenario.target is not TargetState.IN_CALL
    completed = scenario.status is ResponseStatus.COMPLETED
    return {
        "attempt": (CallStatus.IN_PROGRESS, True, None, None),  # in progress until its status callback
        "target": (scenario.target, scenario.target.value if final else None, final, None, scenario.status, 1, True),
        "response": (scenario.status, None, 0, len(scenario.presses), True, scenario.status is not
                     ResponseStatus.IN_PROGRESS),
        "answers": sorted(
            (question, key, tries, invalid, silences, True, completed, True, True, True)
            for question, (key, tries, invalid, silences) in scenario.answers.items()
        ),
        "presses": [(seq, step, try_, digits, outcome, True)
                    for seq, (step, try_, digits, outcome) in enumerate(scenario.presses, start=1)],
    }  # fmt: skip


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_whole_call_plays_its_prompts_and_leaves_its_rows(name, live_server, sessions):
    scenario = SCENARIOS[name]

    attempt_id, docs = make_call(live_server, sessions, 1, scenario.keys)

    *asked, end = docs
    assert [gather_url(doc).split("step=")[1] for doc in asked] == [
        f"{prompt.split()[-1]}&n={n}" for n, prompt in enumerate(scenario.prompts, start=1)
    ]
    assert [spoken(doc) for doc in asked] == [said(prompt) for prompt in scenario.prompts]
    assert end.xpath("/Response/Hangup") and spoken(end) == [Q.messages[scenario.end]]
    assert rows(sessions, attempt_id) == expected_rows(scenario)


def text_of(doc) -> str:
    return etree.tostring(doc, encoding="unicode")


def test_a_completed_interview_settles_its_target_and_counts_its_answers(live_server, sessions):
    attempt_id, _docs = make_call(live_server, sessions, 3, SCENARIOS["completed, the visit and the delivery check asked last"].keys)

    stored = rows(sessions, attempt_id)
    assert stored["response"][0] is ResponseStatus.COMPLETED and stored["response"][1] is None
    state, outcome, final, next_at, response_status, *_ = stored["target"]
    assert (state, outcome, final, next_at, response_status) == (
        TargetState.COMPLETED, "completed", True, None, ResponseStatus.COMPLETED,
    )
    assert all(answer[6] for answer in stored["answers"]), "every answer of a completed response counts"
    assert stored["attempt"][:2] == (CallStatus.IN_PROGRESS, True)


def test_the_last_press_delivered_twice_ends_the_call_once(live_server, sessions):
    keys = SCENARIOS["completed by the last question"].keys
    sid = f"CA{4:032x}"
    attempt_id = open_call(sessions, phone="+8613800000004", sid=sid)
    doc = twiml(post(live_server, f"/ivr/voice?attempt={attempt_id}", base_params(CallSid=sid)))
    for digits in keys[:-1]:
        doc = press(live_server, doc, digits, CallSid=sid)
    last_url = gather_url(doc)

    first = twiml(post(live_server, last_url, base_params(CallSid=sid, Digits=keys[-1])))
    again = twiml(post(live_server, last_url, base_params(CallSid=sid, Digits=keys[-1])))

    assert first.xpath("/Response/Hangup") and again.xpath("/Response/Hangup")
    assert text_of(first) == text_of(again)
    stored = rows(sessions, attempt_id)
    assert len(stored["presses"]) == len(keys)
    assert stored["response"][0] is ResponseStatus.COMPLETED


def test_a_second_start_of_the_same_call_writes_nothing_when_the_first_created_the_interview(
    live_server, sessions, engine
):
    """Two deliveries of the voice webhook that both found no interview: one creates it, the other writes
    nothing (not even the attempt's answered time) and is told to start over (as ivr.views does)."""
    sid = f"CA{5:032x}"
    attempt_id = open_call(sessions, phone="+8613800000005", sid=sid)
    reads = make_read_session_factory(engine)
    with reads() as session:
        first = interview.read_call(session, attempt_id, sid)
    with reads() as session:
        second = interview.read_call(session, attempt_id, sid)
    assert first.response_id is None and second.response_id is None

    with sessions.begin() as session:
        prompt = interview.begin_call(session, first)
    with sessions.begin() as session:  # as if the first had not answered the call yet
        attempt = session.get(CallAttempt, attempt_id)
        attempt.answered_at, attempt.status = None, CallStatus.RINGING
    with pytest.raises(interview.ConcurrentChange), sessions.begin() as session:
        interview.begin_call(session, second)

    assert (prompt.action.position, prompt.seq) == ("consent", 1)
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        target = session.get(RoundTarget, attempt.target_id)
        [response] = session.scalars(select(Response)).all()
    assert (attempt.status, attempt.answered_at) == (CallStatus.RINGING, None)
    assert (target.state, target.response_status) == (TargetState.IN_CALL, ResponseStatus.IN_PROGRESS)
    assert (response.current_step, response.prompt_seq) == ("consent", 1)


def test_a_press_read_before_the_interview_moved_on_writes_nothing(live_server, sessions, engine):
    """Two deliveries of one press that both read the interview before either wrote: one stores it."""
    sid = f"CA{6:032x}"
    attempt_id = open_call(sessions, phone="+8613800000006", sid=sid)
    twiml(post(live_server, f"/ivr/voice?attempt={attempt_id}", base_params(CallSid=sid)))
    reads = make_read_session_factory(engine)
    presses = []
    for _ in range(2):
        with reads() as session:
            presses.append(interview.read_press(session, attempt_id, sid, "consent", 1, "1"))

    with sessions.begin() as session:
        prompt = interview.store_press(session, presses[0])
    with pytest.raises(interview.ConcurrentChange), sessions.begin() as session:
        interview.store_press(session, presses[1])

    assert (prompt.action.position, prompt.seq) == ("screen", 2)
    with sessions() as session:
        [stored] = session.scalars(select(KeyPress)).all()
        [answer] = session.scalars(select(Answer)).all()
        response = session.scalar(select(Response))
    assert (stored.seq, stored.step, stored.digits, stored.outcome) == (1, "consent", "1", "answer")
    assert (answer.question, answer.digit, answer.tries) == ("consent", "1", 1)
    assert (response.current_step, response.prompt_seq) == ("screen", 2)
    # The loser's second try finds the press stored: a replay, with nothing to write.
    with reads() as session:
        replay = interview.read_press(session, attempt_id, sid, "consent", 1, "1")
    assert replay.nothing_to_write and (replay.replay.action.position, replay.replay.seq) == ("screen", 2)
