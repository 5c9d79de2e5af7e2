"""The webhooks' defences and details over real HTTP: signatures on every endpoint, every malformed or
out-of-place parameter (4xx with a log line, nothing stored), replays (alone and concurrent), TwiML for
recordings and read-back (XPath), the recordings route, paradata under a controlled clock, inbound calls."""

from __future__ import annotations

import copy
import http.client
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from campaigns.clock import set_clock_file
from campaigns.models import (
    Answer,
    AnswerChange,
    CallAttempt,
    CallDirection,
    CallStatus,
    InboundMode,
    KeyPress,
    Response,
    ResponseStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from campaigns.questionnaire import (
    builtin_questionnaire,
    parse_questionnaire,
    store_version,
)
from campaigns.runtime import get_runtime
from tests.ivr.support import (
    PHONE,
    SID,
    base_params,
    gather_url,
    open_call,
    post,
    press,
    spoken,
    step_of,
    twiml,
)

Q = builtin_questionnaire()
OTHER_SID = "CA" + "b" * 32
INBOUND_SID = "CA" + "c" * 32


def counts(sessions) -> dict[str, int]:
    with sessions() as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model))
            for model in (KeyPress, Answer, AnswerChange, Response, CallAttempt)
        }


@pytest.fixture
def call(live_server, sessions):
    return live_server, open_call(sessions)


def inbound_params(**extra: str) -> dict[str, str]:
    return {"CallSid": INBOUND_SID, "AccountSid": "AC" + "0" * 32, "From": PHONE, "To": "+861000000000",
            "CallStatus": "ringing", "Direction": "inbound", **extra}


# ------------------------------------------------------------------------------------------------ signatures


@pytest.mark.parametrize("endpoint", ["voice", "gather", "status", "inbound"])
@pytest.mark.parametrize("forgery", ["unsigned", "garbage", "wrong token", "other url", "other params", "https"])
def test_every_webhook_refuses_a_bad_signature(call, sessions, endpoint, forgery):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    path = {
        "voice": f"/ivr/voice?attempt={attempt_id}",
        "gather": gather_url(doc).removeprefix(settings.public_base_url),
        "status": f"/ivr/status?attempt={attempt_id}",
        "inbound": "/ivr/inbound",
    }[endpoint]
    params = base_params(Digits="2", CallStatus="completed", SequenceNumber="9", CallDuration="10")
    url = settings.public_base_url + path
    signer = RequestValidator(get_runtime().webhook_token)
    headers = {
        "unsigned": {},
        "garbage": {"X-Twilio-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="},
        "wrong token": {"X-Twilio-Signature": RequestValidator("not-the-token").compute_signature(url, params)},
        "other url": {"X-Twilio-Signature": signer.compute_signature(url.replace("attempt=", "attempt=9"), params)},
        "other params": {"X-Twilio-Signature": signer.compute_signature(url, {**params, "Digits": "1"})},
        "https": {"X-Twilio-Signature": signer.compute_signature(url.replace("http://", "https://"), params)},
    }[forgery]
    if forgery == "other url" and endpoint == "inbound":
        headers = {"X-Twilio-Signature": signer.compute_signature(url + "?x=1", params)}
    before = counts(sessions)

    reply = requests.post(url, data=params, headers=headers, timeout=10)

    assert reply.status_code == 403
    assert counts(sessions) == before
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        assert attempt.status is CallStatus.IN_PROGRESS and attempt.last_sequence_number == -1


# ------------------------------------------------------------------------------------------ bad parameters


def _cases(attempt_id: int, gather: str):
    """(label, path, params, expected status)."""
    voice = f"/ivr/voice?attempt={attempt_id}"
    status = f"/ivr/status?attempt={attempt_id}"
    current = gather.split("?")[0] + f"?attempt={attempt_id}&step=consent&n=1"
    return [
        ("voice: unknown attempt and CallSid", "/ivr/voice?attempt=999", base_params(CallSid=OTHER_SID), 404),
        ("voice: attempt not a number", "/ivr/voice?attempt=abc", base_params(), 400),
        ("voice: attempt too large", "/ivr/voice?attempt=99999999999999999999", base_params(), 400),
        ("voice: attempt negative", "/ivr/voice?attempt=-1", base_params(), 400),
        ("voice: attempt in other digits", "/ivr/voice?attempt=%D9%A1%D9%A2", base_params(), 400),
        ("voice: attempt missing", "/ivr/voice", base_params(), 400),
        ("voice: CallSid missing", voice, {k: v for k, v in base_params().items() if k != "CallSid"}, 400),
        ("voice: CallSid malformed", voice, base_params(CallSid="CA123"), 400),
        ("voice: CallSid too long", voice, base_params(CallSid="CA" + "a" * 200), 400),
        ("voice: CallSid of another call", voice, base_params(CallSid=OTHER_SID), 409),
        ("voice: AnsweredBy unknown", voice, base_params(AnsweredBy="robot"), 400),
        ("gather: step missing", current.replace("&step=consent", ""), base_params(Digits="1"), 400),
        ("gather: step not a key", current.replace("step=consent", "step=..%2Fx%3Cy"), base_params(Digits="1"), 400),
        ("gather: step unknown", current.replace("step=consent", "step=nope"), base_params(Digits="1"), 400),
        ("gather: confirm without read-back", current.replace("step=consent", "step=security.confirm"), base_params(Digits="1"), 400),
        ("gather: step not current", current.replace("step=consent", "step=security"), base_params(Digits="1"), 409),
        ("gather: n missing", current.replace("&n=1", ""), base_params(Digits="1"), 400),
        ("gather: n not a number", current.replace("n=1", "n=1.5"), base_params(Digits="1"), 400),
        ("gather: n in the future", current.replace("n=1", "n=2"), base_params(Digits="1"), 409),
        ("gather: n from the past", current.replace("n=1", "n=0"), base_params(Digits="1"), 409),
        ("gather: Digits too long", current, base_params(Digits="1" * 21), 400),
        ("gather: Digits not keys", current, base_params(Digits="1a"), 400),
        ("gather: CallSid of another call", current, base_params(CallSid=OTHER_SID, Digits="1"), 409),
        ("gather: unknown attempt", current.replace(f"attempt={attempt_id}", "attempt=777"), base_params(Digits="1"), 404),
        ("status: CallStatus missing", status, {k: v for k, v in base_params().items() if k != "CallStatus"}, 400),
        ("status: CallStatus unknown", status, base_params(CallStatus="exploded"), 400),
        ("status: SequenceNumber negative", status, base_params(SequenceNumber="-1"), 400),
        ("status: SequenceNumber huge", status, base_params(SequenceNumber="9" * 30), 400),
        ("status: SequenceNumber superscript", status, base_params(SequenceNumber="²"), 400),
        ("status: CallDuration not a number", status, base_params(CallStatus="completed", CallDuration="ten"), 400),
        ("status: ErrorCode not a number", status, base_params(CallStatus="failed", ErrorCode="boom"), 400),
        ("status: unknown CallSid, no attempt", "/ivr/status", base_params(CallSid=OTHER_SID), 404),
        ("status: CallSid of another call", status, base_params(CallSid=OTHER_SID, CallStatus="completed"), 409),
        ("inbound: From missing", "/ivr/inbound", {k: v for k, v in inbound_params().items() if k != "From"}, 400),
        ("inbound: CallSid missing", "/ivr/inbound", {k: v for k, v in inbound_params().items() if k != "CallSid"}, 400),
        ("inbound: not inbound", "/ivr/inbound", inbound_params(Direction="outbound-api"), 400),
        ("inbound: CallSid of an outbound call", "/ivr/inbound", inbound_params(CallSid=SID), 409),
    ]


def test_bad_parameters_get_a_4xx_and_a_log_line_and_store_nothing(call, sessions, caplog):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    before = counts(sessions)
    caplog.set_level(logging.WARNING, logger="sanlv.ivr")

    for label, path, params, expected in _cases(attempt_id, gather_url(doc).removeprefix(settings.public_base_url)):
        caplog.clear()
        reply = post(settings, path, params)
        assert reply.status_code == expected, (label, reply.text)
        assert reply.json()["description"], label  # says what is wrong
        lines = [r.getMessage() for r in caplog.records if "event=bad_webhook" in r.getMessage()]
        assert len(lines) == 1 and f"status={expected}" in lines[0], (label, lines)

    assert counts(sessions) == before
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        response = session.scalar(select(Response))
        assert attempt.status is CallStatus.IN_PROGRESS and attempt.answered_by is None
        assert (response.current_step, response.prompt_seq) == ("consent", 1)
    # The interview goes on untouched.
    assert step_of(press(settings, doc, "1")) == "screen"


# --------------------------------------------------------------------------------------------------- replays


def test_a_replayed_press_with_other_digits_changes_nothing(call, sessions):
    settings, attempt_id = call
    first = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    doc = press(settings, first, "1")
    doc = press(settings, doc, "1")
    before = counts(sessions)

    replay = press(settings, first, "2")  # consent again, now "no": a replay must not refuse

    assert step_of(replay) == step_of(doc) == "security"
    assert counts(sessions) == before
    with sessions() as session:
        assert session.scalar(select(Response.status)) is ResponseStatus.IN_PROGRESS
        assert session.scalar(select(Answer.digit).where(Answer.question == "consent")) == "1"


def test_replaying_the_last_press_of_an_ended_call_ends_it_again(call, sessions):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    end = press(settings, doc, "2")
    assert end.xpath("/Response/Hangup") and spoken(end) == [Q.messages["refused"]]
    before = counts(sessions)

    again = press(settings, doc, "2")

    assert again.xpath("/Response/Hangup") and spoken(again) == [Q.messages["refused"]]
    assert counts(sessions) == before


def test_concurrent_deliveries_of_one_press_store_it_once(call, sessions):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    url = gather_url(doc)

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: post(settings, url, base_params(Digits="1")), range(8)))

    assert [r.status_code for r in replies] == [200] * 8
    assert {step_of(twiml(r)) for r in replies} == {"screen"}
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(KeyPress)) == 1
        assert session.scalar(select(func.count()).select_from(Answer)) == 1


def test_replayed_status_callbacks_without_sequence_numbers_keep_final_final(call, sessions):
    settings, attempt_id = call
    url = f"/ivr/status?attempt={attempt_id}"
    assert post(settings, url, base_params(CallStatus="no-answer", CallDuration="0")).status_code == 204
    assert post(settings, url, base_params(CallStatus="ringing")).status_code == 204
    assert post(settings, url, base_params(CallStatus="no-answer", CallDuration="0")).status_code == 204
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        target = session.get(RoundTarget, attempt.target_id)
        assert attempt.status is CallStatus.NO_ANSWER
        assert target.state is TargetState.PENDING and target.last_outcome == "no-answer"


# ------------------------------------------------------------------------------------- TwiML and recordings


def test_each_question_is_a_gather_with_a_redirect_for_silence(call):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))

    [gather] = doc.xpath("/Response/Gather")
    assert gather.get("input") == "dtmf" and gather.get("numDigits") == "1"
    assert gather.get("timeout") == str(Q.gather_timeout) and gather.get("finishOnKey") == ""
    assert gather.get("method") == "POST"
    assert gather.get("action") == f"{settings.public_base_url}/ivr/gather?attempt={attempt_id}&step=consent&n=1"
    assert doc.xpath("/Response/Redirect/@method") == ["POST"]
    assert doc.xpath("count(/Response/*)") == 2  # nothing after the Redirect: the call never just hangs up
    assert spoken(doc) == [Q.messages["intro"], Q.step("consent").prompt]
    silent = press(settings, doc, None)
    assert spoken(silent) == [Q.messages["silence"], Q.step("consent").prompt]
    assert step_of(silent) == "consent"
    repeat = press(settings, silent, "*")
    assert spoken(repeat) == [Q.step("consent").prompt]


def test_recorded_prompts_are_played_and_missing_ones_spoken(call, tmp_path, monkeypatch):
    settings, attempt_id = call
    monkeypatch.chdir(tmp_path)  # the default SANLV_RECORDINGS_DIR is ./recordings
    folder = tmp_path / "recordings" / "default"
    folder.mkdir(parents=True)
    (folder / "message-intro.wav").write_bytes(b"RIFF-intro")
    (folder / "step-screen.mp3").write_bytes(b"ID3-screen")

    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))

    [play] = doc.xpath("/Response/Gather/Play/text()")
    assert play.startswith(f"{settings.public_base_url}/ivr/recordings/default/message-intro.wav?v=")
    assert doc.xpath("/Response/Gather/*[1]")[0].tag == "Play"  # the greeting first, then the question
    assert doc.xpath("/Response/Gather/Say/text()") == [Q.step("consent").prompt]
    doc = press(settings, doc, "1")
    [screen] = doc.xpath("/Response/Gather/Play/text()")
    assert "/step-screen.mp3" in screen and doc.xpath("/Response/Gather/Say") == []
    # The app serves the recording it points at; Twilio fetches media without a signature.
    served = requests.get(screen, timeout=10)
    assert served.status_code == 200 and served.content == b"ID3-screen"
    assert served.headers["Content-Type"].startswith("audio/")


@pytest.mark.parametrize(
    "path",
    [
        "/ivr/recordings/default/..%2F..%2Fsecret.wav",
        "/ivr/recordings/default/../../secret.wav",
        "/ivr/recordings/..%2Frecordings/default%2Fmessage-intro.wav",
        "/ivr/recordings/default/%2E%2E%2Fsecret.wav",
        "/ivr/recordings/default/secret.txt",
        "/ivr/recordings/default/.hidden.wav",
        "/ivr/recordings/default/absent.wav",
        "/ivr/recordings/other/message-intro.wav",
        "/ivr/recordings/default/link.wav",
    ],
)
def test_the_recordings_route_serves_nothing_outside_the_folder(live_server, tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "recordings" / "default"
    folder.mkdir(parents=True)
    (folder / "message-intro.wav").write_bytes(b"RIFF")
    (folder / ".hidden.wav").write_bytes(b"RIFF")
    (folder / "secret.txt").write_text("secret")
    (tmp_path / "secret.wav").write_bytes(b"SECRET")
    (tmp_path / "recordings" / "secret.wav").write_bytes(b"SECRET")
    (folder / "link.wav").symlink_to(tmp_path / "secret.wav")
    base = urlsplit(live_server.public_base_url)
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=10)  # sends the path as written

    connection.request("GET", path)
    reply = connection.getresponse()
    body = reply.read()
    connection.close()

    assert b"SECRET" not in body
    assert reply.status == 404
    assert requests.get(f"{live_server.public_base_url}/ivr/recordings/default/message-intro.wav", timeout=10).content == b"RIFF"


# ----------------------------------------------------------------------------------------------- read-back


@pytest.fixture
def readback_call(live_server, sessions):
    content = copy.deepcopy(dict(Q.content))
    content["readback"] = True
    with sessions.begin() as session:
        version_id = store_version(session, parse_questionnaire(content)).id
    return live_server, open_call(sessions, questionnaire_id=version_id)


def test_read_back_twiml_and_re_choosing(readback_call, sessions):
    settings, attempt_id = readback_call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    doc = press(settings, press(settings, doc, "1"), "1")
    assert step_of(doc) == "security"

    confirm = press(settings, doc, "3")

    assert step_of(confirm) == "security.confirm"
    assert spoken(confirm) == ["您选择的是不太安全,确认请按1,重新选择请按2。"]
    with sessions() as session:
        assert session.scalar(select(Answer.digit).where(Answer.question == "security")) == "3"  # kept at once
    # A replay of the confirmation prompt reads back the same choice.
    doc_again = twiml(post(settings, gather_url(doc), base_params(Digits="3")))
    assert spoken(doc_again) == spoken(confirm)

    again = press(settings, confirm, "2")
    assert step_of(again) == "security" and spoken(again) == [Q.step("security").prompt]
    confirm = press(settings, again, "4")
    assert spoken(confirm) == ["您选择的是不安全,确认请按1,重新选择请按2。"]
    following = press(settings, confirm, "1")
    assert step_of(following) == "concern"

    with sessions() as session:
        security = session.scalar(select(Answer).where(Answer.question == "security"))
        changes = session.execute(select(AnswerChange.old_digit, AnswerChange.new_digit, AnswerChange.attempt_id)).all()
    assert security.digit == "4" and security.tries == 2
    assert changes == [("3", "4", attempt_id)]


def test_re_choosing_the_same_key_keeps_no_history(readback_call, sessions):
    settings, attempt_id = readback_call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    doc = press(settings, press(settings, doc, "1"), "1")
    doc = press(settings, press(settings, press(settings, doc, "2"), "2"), "2")
    assert step_of(doc) == "security.confirm"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AnswerChange)) == 0
        assert session.scalar(select(Answer.digit).where(Answer.question == "security")) == "2"


# ------------------------------------------------------------------------------------------------ paradata


def test_paradata_counts_tries_invalid_keys_silences_and_seconds(call, sessions, tmp_path, monkeypatch):
    settings, attempt_id = call
    clock = tmp_path / "clock"
    t0 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
    set_clock_file(clock, t0)
    monkeypatch.setenv("SANLV_CLOCK_FILE", str(clock))

    def at(seconds: float) -> None:
        set_clock_file(clock, t0 + timedelta(seconds=seconds))

    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))  # consent asked at 0
    at(4.5)
    doc = press(settings, doc, "1")  # answered after 4.5 s; screen asked at 4.5
    at(7)
    doc = press(settings, doc, "7")  # invalid; asked again at 7
    at(9)
    doc = press(settings, doc, "*")  # repeated at 9: not a try
    at(12.25)
    doc = press(settings, doc, "1")  # answered 3.25 s after the repeat
    at(20)
    doc = press(settings, doc, None)  # security: silence; asked again at 20
    at(21)
    doc = press(settings, doc, "2")

    with sessions() as session:
        rows = {a.question: (a.tries, a.invalid_keys, a.silences, a.seconds_to_answer) for a in session.scalars(select(Answer))}
    assert rows == {
        "consent": (1, 0, 0, 4.5),
        "screen": (2, 1, 0, 3.25),
        "security": (2, 0, 1, 1.0),
    }


# --------------------------------------------------------------------------------------------- inbound, AMD


def test_by_default_an_inbound_call_asks_nothing_and_asks_for_one_call_back(call, sessions):
    settings, attempt_id = call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    doc = press(settings, press(settings, press(settings, doc, "1"), "1"), "1")
    post(settings, f"/ivr/status?attempt={attempt_id}", base_params(CallStatus="completed", SequenceNumber="3", CallDuration="30"))

    inbound = twiml(post(settings, "/ivr/inbound", inbound_params(From="+86 138-0000-0001")))
    replayed = twiml(post(settings, "/ivr/inbound", inbound_params(From="+86 138-0000-0001")))

    for doc in (inbound, replayed):
        assert doc.xpath("/Response/Gather") == [] and doc.xpath("/Response/*")[-1].tag == "Hangup"
        assert spoken(doc) == [Q.messages["call_back"]]
    with sessions() as session:
        assert session.scalars(select(CallAttempt.direction)).all() == [CallDirection.OUTBOUND]
        target = session.scalar(select(RoundTarget))
    assert (target.state, target.call_backs, target.attempts) == (TargetState.PENDING, 1, 1)
    assert target.next_attempt_at <= target.call_back_requested_at + timedelta(seconds=1)
    # Our number's status callback for that call: nothing to record, and not an error either.
    ended = post(settings, "/ivr/status", inbound_params(CallStatus="completed", CallDuration="9"))
    assert ended.status_code == 204
    with sessions() as session:
        assert session.scalars(select(CallAttempt.direction)).all() == [CallDirection.OUTBOUND]


@pytest.fixture
def answering_call(live_server, sessions):
    return live_server, open_call(sessions, inbound=InboundMode.ANSWER)


def test_inbound_call_back_resumes_and_its_status_callback_needs_no_attempt_id(answering_call, sessions):
    settings, attempt_id = answering_call
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    doc = press(settings, press(settings, press(settings, doc, "1"), "1"), "1")
    post(settings, f"/ivr/status?attempt={attempt_id}", base_params(CallStatus="completed", SequenceNumber="3", CallDuration="30"))

    # The resident calls back from the same number written the way a carrier may send it.
    inbound = twiml(post(settings, "/ivr/inbound", inbound_params(From="+86 138-0000-0001")))
    replayed = twiml(post(settings, "/ivr/inbound", inbound_params(From="+86 138-0000-0001")))

    assert spoken(inbound)[0] == Q.messages["welcome_back"]
    assert step_of(inbound) == step_of(replayed) == "awareness"
    with sessions() as session:
        attempts = session.scalars(select(CallAttempt).order_by(CallAttempt.id)).all()
    assert [(a.direction, a.number, a.call_sid) for a in attempts] == [
        (CallDirection.OUTBOUND, 1, SID), (CallDirection.INBOUND, -1, INBOUND_SID)
    ]
    inbound_id = attempts[1].id
    assert f"attempt={inbound_id}&" in gather_url(replayed)
    doc = replayed
    for digits in ["1", "1", "1", "1", "1"]:  # the rest of the rates, then the delivery check
        doc = twiml(post(settings, gather_url(doc), inbound_params(Digits=digits, CallStatus="in-progress")))
    assert doc.xpath("/Response/Hangup") and "110" in spoken(doc)[0]
    # Our number's status callback URL carries no attempt: the CallSid finds it.
    assert post(settings, "/ivr/status", inbound_params(CallStatus="completed", CallDuration="50")).status_code == 204
    with sessions() as session:
        attempt = session.get(CallAttempt, inbound_id)
        target = session.get(RoundTarget, attempt.target_id)
        assert attempt.status is CallStatus.COMPLETED and attempt.duration_seconds == 50
        assert target.state is TargetState.COMPLETED and target.attempts == 1


@pytest.mark.parametrize("caller", ["anonymous", "+266696687", "+8613999999999"])
def test_unknown_or_hidden_callers_hear_a_polite_message(call, sessions, caller):
    settings, _attempt_id = call

    doc = twiml(post(settings, "/ivr/inbound", inbound_params(From=caller)))

    assert doc.xpath("/Response/Hangup") and doc.xpath("/Response/Gather") == []
    assert spoken(doc) == [Q.messages["call_back"]]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallAttempt)) == 1


def test_a_machine_is_hung_up_on_at_once(call, sessions):
    settings, attempt_id = call

    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params(AnsweredBy="machine_start")))
    post(settings, f"/ivr/status?attempt={attempt_id}",
         base_params(CallStatus="completed", SequenceNumber="3", CallDuration="4", AnsweredBy="machine_start"))

    assert doc.xpath("/Response/*")[-1].tag == "Hangup" and doc.xpath("/Response/Gather") == []
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        target = session.get(RoundTarget, attempt.target_id)
        round_ = session.get(Round, target.round_id)
        assert session.scalar(select(func.count()).select_from(Response)) == 0
    assert attempt.answered_by == "machine_start"
    assert target.state is TargetState.PENDING and target.last_outcome == "machine"
    assert abs((target.next_attempt_at - attempt.ended_at).total_seconds() - round_.retry["machine"]) < 5
    assert round_.status is RoundStatus.RUNNING


def test_no_recordings_folder_means_tts_everywhere(call, tmp_path, monkeypatch):
    settings, attempt_id = call
    monkeypatch.chdir(tmp_path)
    assert not Path("recordings").exists()

    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))

    assert doc.xpath("//Play") == [] and len(spoken(doc)) == 2


def test_a_recording_added_or_removed_is_used_from_the_next_prompt_on(tmp_path):
    """Rendered prompts are cached; the recordings on disk are part of what a cached prompt depends on."""
    import os

    from lxml import etree

    from campaigns.flow import Ask
    from campaigns.settings import Settings
    from ivr.twiml import render

    settings = Settings(recordings_dir=str(tmp_path))
    ask = Ask("consent", 1)

    def prompt(attempt_id: int, seq: int):
        return etree.fromstring(render(settings, "https://ivr.example", Q, attempt_id, ask, seq).encode())

    spoken_first = prompt(7, 3)
    (tmp_path / "default").mkdir()
    recording = tmp_path / "default" / "step-consent.wav"
    recording.write_bytes(b"RIFF")
    played = prompt(8, 4)
    os.utime(recording, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))  # replaced: a new version
    replayed = prompt(8, 5)
    recording.unlink()
    spoken_again = prompt(9, 6)

    assert spoken_first.xpath("/Response/Gather/Say/text()") == [Q.step("consent").prompt]
    assert spoken_first.xpath("/Response/Gather/@action") == [
        "https://ivr.example/ivr/gather?attempt=7&step=consent&n=3"
    ]
    assert spoken_first.xpath("/Response/Redirect/text()") == spoken_first.xpath("/Response/Gather/@action")
    assert played.xpath("/Response/Gather/Say") == []
    [url] = played.xpath("/Response/Gather/Play/text()")
    assert "/ivr/recordings/default/step-consent.wav?v=" in url
    assert played.xpath("/Response/Gather/@action") == ["https://ivr.example/ivr/gather?attempt=8&step=consent&n=4"]
    assert replayed.xpath("/Response/Gather/Play/text()") == [url.split("?v=")[0] + "?v=1700000000"]
    assert spoken_again.xpath("/Response/Gather/Say/text()") == [Q.step("consent").prompt]
    assert spoken_again.xpath("/Response/Redirect/text()") == [
        "https://ivr.example/ivr/gather?attempt=9&step=consent&n=6"
    ]
