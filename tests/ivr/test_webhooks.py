"""The IVR webhooks through the real Flask app over real HTTP, signed as Twilio signs them."""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from campaigns.calls import claim_due_targets
from campaigns.clock import now
from campaigns.models import (
    Answer,
    CallAttempt,
    CallStatus,
    DoNotCall,
    KeyPress,
    Response,
    ResponseStatus,
    Round,
    RoundTarget,
    TargetState,
)
from campaigns.runtime import get_runtime
from tests.ivr.support import (
    base_params,
    gather_url,
    open_call,
    post,
    press,
    step_of,
    twiml,
)


@pytest.fixture
def call(live_server, sessions):
    """A running round with one household, one claimed attempt whose call was placed with SID."""
    return live_server, open_call(sessions)


def test_whole_interview_stores_every_answer_once(call, sessions):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    assert doc.xpath("/Response/Gather/@numDigits") == ["1"]
    assert doc.xpath("/Response/Gather/Say/@language") == ["cmn-CN", "cmn-CN"]
    assert doc.xpath("/Response/Gather/Say/@voice")[0] == "Polly.Zhiyu"
    assert "两分钟" in doc.xpath("string(/Response/Gather/Say[2])")
    asked = []
    for digits in ["1", "1", "3", "2", "1", "2", "4", "1", "1", "2"]:
        asked.append(step_of(doc))
        doc = press(settings, doc, digits)
    assert asked == ["consent", "screen", "security", "concern", "awareness", "participation", "satisfaction",
                     "cadre_contact", "visit", "delivery"]
    assert doc.xpath("/Response/Hangup") and "110" in doc.xpath("string(/Response/Say)")
    with sessions() as session:
        answers = dict(session.execute(select(Answer.question, Answer.digit)).all())
        response = session.scalar(select(Response))
        target = session.scalar(select(RoundTarget))
    assert answers == {"consent": "1", "screen": "1", "security": "3", "concern": "2", "awareness": "1",
                       "participation": "2", "satisfaction": "4", "cadre_contact": "1", "visit": "1",
                       "delivery": "2"}
    assert response.status is ResponseStatus.COMPLETED
    assert target.state is TargetState.COMPLETED


def test_replayed_gather_stores_nothing_twice(call, sessions):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    url = gather_url(doc)
    first = twiml(post(settings, url, base_params(Digits="1")))
    replay = twiml(post(settings, url, base_params(Digits="1")))
    assert gather_url(first) == gather_url(replay)  # the replay gets the current question again
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(KeyPress)) == 1
        assert session.scalar(select(func.count()).select_from(Answer)) == 1


def test_invalid_key_and_silence_reprompt_with_messages(call, sessions):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    doc = press(settings, doc, "7")
    assert doc.xpath("string(/Response/Gather/Say[1])") == "输入有误。"
    doc = press(settings, doc, None)
    # Two failed tries at consent (a gate question): the call ends politely, nothing stored as an answer.
    assert doc.xpath("/Response/Hangup")
    with sessions() as session:
        outcomes = session.scalars(select(KeyPress.outcome).order_by(KeyPress.seq)).all()
        assert outcomes == ["invalid", "silence"]
        assert session.scalar(select(func.count()).select_from(Answer)) == 0


def test_nine_puts_the_number_on_the_do_not_call_list(call, sessions):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    doc = press(settings, press(settings, doc, "1"), "9")
    assert "不会再给您打电话" in doc.xpath("string(/Response/Say)")
    with sessions() as session:
        assert session.scalar(select(DoNotCall).filter_by(phone="+8613800000001")) is not None
        assert session.scalar(select(RoundTarget.state)) is TargetState.OPTED_OUT


@pytest.mark.parametrize("signature", [None, "forged", "wrong-token"])
def test_unsigned_or_forged_webhooks_are_refused(call, sessions, signature):
    settings, attempt_id = call
    url = f"/ivr/voice?attempt={attempt_id}"
    if signature is None:
        reply = post(settings, url, base_params(), sign=False)
    elif signature == "forged":
        reply = requests.post(settings.public_base_url + url, data=base_params(),
                              headers={"X-Twilio-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}, timeout=10)
    else:
        reply = post(settings, url, base_params(), token="not-the-token")
    assert reply.status_code == 403
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Response)) == 0


def test_signature_over_other_params_is_refused(call):
    settings, attempt_id = call
    url = settings.public_base_url + f"/ivr/voice?attempt={attempt_id}"
    signature = RequestValidator(get_runtime().webhook_token).compute_signature(url, base_params())
    reply = requests.post(url, data=base_params(Digits="1"), headers={"X-Twilio-Signature": signature}, timeout=10)
    assert reply.status_code == 403


def test_bad_parameters_get_4xx_not_500(call, sessions):
    settings, attempt_id = call
    assert post(settings, "/ivr/voice?attempt=999", base_params()).status_code == 404
    assert post(settings, "/ivr/voice?attempt=abc", base_params()).status_code == 400
    assert post(settings, f"/ivr/voice?attempt={attempt_id}", {"From": "+1"}).status_code == 400
    assert post(settings, f"/ivr/voice?attempt={attempt_id}", base_params(CallSid="CA" + "b" * 32)).status_code == 409
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    # A key press for a question that is not the current one.
    wrong = gather_url(doc).replace("step=consent", "step=security")
    assert post(settings, wrong, base_params(Digits="1")).status_code == 409
    assert post(settings, gather_url(doc).replace("step=consent", "step=nope"), base_params(Digits="1")).status_code == 400
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Answer)) == 0


def test_status_callbacks_in_sequence_order_and_final_stays_final(call, sessions):
    settings, attempt_id = call
    url = f"/ivr/status?attempt={attempt_id}"
    assert post(settings, url, base_params(CallStatus="busy", SequenceNumber="2", CallDuration="0")).status_code == 204
    # An older (reordered) and a duplicated callback change nothing.
    assert post(settings, url, base_params(CallStatus="ringing", SequenceNumber="1")).status_code == 204
    assert post(settings, url, base_params(CallStatus="busy", SequenceNumber="2")).status_code == 204
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        target = session.get(RoundTarget, attempt.target_id)
        round_ = session.get(Round, target.round_id)
        assert attempt.status is CallStatus.BUSY
        assert target.state is TargetState.PENDING and target.last_outcome == "busy"
        delay = (target.next_attempt_at - attempt.ended_at).total_seconds()
        assert abs(delay - round_.retry["busy"]) < 5


def test_dropped_call_is_resumed_without_asking_again(call, sessions):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    for digits in ["1", "1", "2"]:
        doc = press(settings, doc, digits)
    assert step_of(doc) == "awareness"
    post(settings, f"/ivr/status?attempt={attempt_id}", base_params(CallStatus="completed", SequenceNumber="3", CallDuration="40"))
    with sessions.begin() as session:
        target = session.scalar(select(RoundTarget))
        assert target.state is TargetState.PENDING and target.last_outcome == "dropped"
        target.next_attempt_at = None
        round_ = session.get(Round, target.round_id)
        [claim] = claim_due_targets(session, round_, now(), 1)
        second = session.get(CallAttempt, claim.attempt_id)
        second.call_sid = "CA" + "c" * 32
    doc = twiml(post(settings, f"/ivr/voice?attempt={claim.attempt_id}", base_params(CallSid="CA" + "c" * 32)))
    assert doc.xpath("string(/Response/Gather/Say[1])").startswith("欢迎回来")
    assert step_of(doc) == "awareness"


# --- a lost database connection -------------------------------------------------------------------------


def _app_connection_pids() -> set[int]:
    """The server processes behind the live app's pooled connections (PostgreSQL)."""
    from sqlalchemy import text

    from campaigns.runtime import get_runtime

    pool = get_runtime().engine.pool
    pids = set()
    held = [pool.connect() for _ in range(pool.checkedin())]  # every idle pooled connection, at once
    try:
        for connection in held:
            cursor = connection.cursor()
            cursor.execute(text("SELECT pg_backend_pid()").text)
            pids.add(cursor.fetchone()[0])
            cursor.close()
            connection.rollback()
    finally:
        for connection in held:
            connection.close()
    return pids


def test_a_webhook_on_a_connection_the_server_dropped_is_answered_and_stored_once(call, sessions, engine):
    from sqlalchemy import text

    from tests.conftest import is_postgres

    if not is_postgres():
        pytest.skip("kills PostgreSQL server processes")
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    pids = _app_connection_pids()
    assert pids
    with engine.begin() as conn:  # the server restarting, as far as these connections can tell
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    # At once: no ping (the connection was in use a moment ago), its first statement fails, the request retries.
    answered = post(settings, gather_url(doc), base_params(Digits="1"))

    assert answered.status_code == 200, answered.text
    assert step_of(twiml(answered)) == "screen"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(KeyPress)) == 1
        assert dict(session.execute(select(Answer.question, Answer.digit)).all()) == {"consent": "1"}


def test_a_plain_press_is_committed_with_everything_before_it_is_answered(call, sessions):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    seq = int(gather_url(doc).split("n=")[1])

    answered = twiml(post(settings, gather_url(doc), base_params(Digits="1")))

    assert step_of(answered) == "screen" and gather_url(answered).endswith(f"n={seq + 1}")
    with sessions() as session:  # committed: another connection sees all of it
        [press_] = session.scalars(select(KeyPress)).all()
        [answer] = session.scalars(select(Answer)).all()
        response = session.scalar(select(Response))
    assert (press_.seq, press_.step, press_.digits, press_.outcome) == (seq, "consent", "1", "answer")
    assert (answer.question, answer.digit, answer.tries, answer.village_id is not None) == ("consent", "1", 1, True)
    assert (response.current_step, response.prompt_seq) == ("screen", seq + 1)
