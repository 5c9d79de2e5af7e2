"""The quick paths on PostgreSQL store exactly what the full transactional path stores.

On PostgreSQL the voice webhook that starts an interview (``interview.quick_begin_call``) and most key presses
(``interview.quick_input``: answers, wrong keys, silences, ``*``, the press that completes the interview and
the one that ends the call) take two statements outside any transaction, written apart from the ORM path
that SQLite and every other case take. Each whole call below is made twice over real HTTP: once as the app
runs, once with the quick paths switched off; the rows it leaves -- response, target, attempt, answers with
their paradata and report copies, key presses -- must be the same.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from campaigns import interview
from campaigns.clock import now
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
from tests.conftest import is_postgres
from tests.ivr.support import base_params, gather_url, open_call, post, press, twiml

pytestmark = pytest.mark.skipif(not is_postgres(), reason="the quick paths are PostgreSQL's")

# Keys pressed, one per prompt, until the call hangs up (None: silence). The default questionnaire asks
# consent, screen, security, [concern], awareness, participation, satisfaction, cadre_contact, [visit].
CALLS = {
    "completed, the visit asked last": (["1", "1", "3", "2", "1", "2", "4", "1", "1"], ResponseStatus.COMPLETED),
    "completed by the last question": (["1", "1", "1", "1", "2", "1", "1"], ResponseStatus.COMPLETED),
    "wrong keys, silence and * on the way": (
        # consent; screen *, 1; security 7, 3; concern silence, 2; awareness *, 1; participation, satisfaction,
        # cadre contact, visit
        ["1", "*", "1", "7", "3", None, "2", "*", "1", "1", "4", "1", "2"],
        ResponseStatus.COMPLETED,
    ),
    "refused": (["2"], ResponseStatus.REFUSED),
    "ineligible": (["1", "2"], ResponseStatus.INELIGIBLE),
    "every question left unanswered": (["1", "1"] + [None] * 30, ResponseStatus.IN_PROGRESS),
}


def _make_call(settings, sessions, number: int, keys: list[str | None]) -> tuple[int, list]:
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


def _rows(sessions, attempt_id: int) -> dict:
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
        }


@pytest.fixture
def quick_spy(monkeypatch):
    """Counts the requests each quick path answered itself."""
    answered = {"voice": 0, "gather": 0}
    begin, quick = interview.quick_begin_call, interview.quick_input

    def begin_spy(*args, **kwargs):
        prompt = begin(*args, **kwargs)
        answered["voice"] += prompt is not None
        return prompt

    def quick_spy_(*args, **kwargs):
        prompt, state = quick(*args, **kwargs)
        answered["gather"] += prompt is not None
        return prompt, state

    monkeypatch.setattr(interview, "quick_begin_call", begin_spy)
    monkeypatch.setattr(interview, "quick_input", quick_spy_)
    return answered


@pytest.mark.parametrize("name", list(CALLS))
def test_a_whole_call_on_the_quick_paths_stores_what_the_full_path_stores(
    name, live_server, sessions, quick_spy, monkeypatch
):
    keys, status = CALLS[name]

    quick_id, quick_docs = _make_call(live_server, sessions, 1, keys)
    quick_rows = _rows(sessions, quick_id)
    # Every request of these calls is one the quick paths take.
    assert quick_spy == {"voice": 1, "gather": len(quick_docs) - 1}

    monkeypatch.setattr(interview, "quick_begin_call", lambda *args: None)
    monkeypatch.setattr(interview, "quick_input", lambda *args: (None, None))
    full_id, full_docs = _make_call(live_server, sessions, 2, keys)
    full_rows = _rows(sessions, full_id)

    assert quick_rows == full_rows
    assert quick_rows["response"][0] is status
    # The same prompts were played, in the same order (the documents differ only in the attempt's id).
    strip = [text_of(doc).replace(f"attempt={quick_id}", "attempt=N") for doc in quick_docs]
    assert strip == [text_of(doc).replace(f"attempt={full_id}", "attempt=N") for doc in full_docs]


def text_of(doc) -> str:
    from lxml import etree

    return etree.tostring(doc, encoding="unicode")


def test_a_completed_interview_settles_its_target_and_counts_its_answers_on_the_quick_path(
    live_server, sessions, quick_spy
):
    attempt_id, _docs = _make_call(live_server, sessions, 3, CALLS["completed, the visit asked last"][0])

    rows = _rows(sessions, attempt_id)
    assert rows["response"][0] is ResponseStatus.COMPLETED and rows["response"][1] is None
    state, outcome, final, next_at, response_status, *_ = rows["target"]
    assert (state, outcome, final, next_at, response_status) == (
        TargetState.COMPLETED, "completed", True, None, ResponseStatus.COMPLETED,
    )
    assert all(answer[6] for answer in rows["answers"]), "every answer of a completed response counts"
    assert rows["attempt"][:2] == (CallStatus.IN_PROGRESS, True)


def test_the_last_press_delivered_twice_ends_the_call_once(live_server, sessions):
    keys = CALLS["completed by the last question"][0]
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
    rows = _rows(sessions, attempt_id)
    assert len(rows["presses"]) == len(keys)
    assert rows["response"][0] is ResponseStatus.COMPLETED


def test_the_start_statement_writes_nothing_when_the_interview_exists(live_server, sessions, engine):
    """Two deliveries of the voice webhook that both found no interview: one creates it, the other writes
    nothing (not even the attempt's answered time)."""
    attempt_id = open_call(sessions, phone="+8613800000005", sid=f"CA{5:032x}")
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        target = session.get(RoundTarget, attempt.target_id)
        params = {"answered_now": now(), "start_round_id": target.round_id, "start_target_id": target.id,
                  "start_attempt_id": attempt_id, "first_position": "consent", "first_try": 1}

    with engine.connect() as conn:
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        first = auto.execute(interview._quick_start(False), params).scalar()
        auto.execute(text("UPDATE call_attempts SET answered_at = NULL, status = 'ringing'"))
        second = auto.execute(interview._quick_start(False), params).scalar()

    assert first is not None and second is None
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        target = session.get(RoundTarget, attempt.target_id)
        response = session.scalar(select(Response))
    assert (attempt.status, attempt.answered_at) == (CallStatus.RINGING, None)
    assert (target.state, target.response_status) == (TargetState.IN_CALL, ResponseStatus.IN_PROGRESS)
    assert (response.id, response.current_step, response.prompt_seq) == (first, "consent", 1)
