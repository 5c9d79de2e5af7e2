"""The notice webhooks over real HTTP: signatures, parameters that do not fit, the voice notice's documents
(a recording played when there is one), and late requests of an earlier call."""

from __future__ import annotations

import io
import json
import math
import struct
import wave

import pytest
import requests
from sqlalchemy import select

from campaigns.models import NoticeChannel, NoticeStatus, NoticeTarget, NoticeTargetState
from tests.campaigns.test_cli import sanlv
from tests.factories import make_household, make_notice, make_notice_target, make_village
from tests.ivr.support import post, twiml

CALL = "CA" + "b" * 32
MESSAGE = "SM" + "c" * 32


@pytest.fixture
def voice_target(live_server, sessions):
    with sessions.begin() as session:
        notice = make_notice(session, channel=NoticeChannel.VOICE, text="今晚有大风。", status=NoticeStatus.RUNNING)
        target = make_notice_target(session, notice, state=NoticeTargetState.SENDING, attempts=1, call_sid=CALL)
        return live_server, target.id


def params(**extra):
    return {"CallSid": CALL, "AccountSid": "AC" + "0" * 32, "CallStatus": "in-progress", **extra}


def test_unsigned_or_missigned_requests_are_refused(voice_target):
    settings, target_id = voice_target
    for path in (
        f"/ivr/notice/voice?target={target_id}&n=1",
        f"/ivr/sms/status?target={target_id}",
        "/ivr/sms/inbound",
    ):
        assert post(settings, path, params(), sign=False).status_code == 403
        assert post(settings, path, params(), token="wrong").status_code == 403


def test_the_voice_notice_says_the_text_and_comes_back_when_it_ends(voice_target, sessions):
    settings, target_id = voice_target
    doc = twiml(post(settings, f"/ivr/notice/voice?target={target_id}&n=1", params()))
    assert doc.xpath("string(/Response/Gather/Say)") == "今晚有大风。"
    heard_url = doc.xpath("string(/Response/Redirect)")
    hint = twiml(post(settings, heard_url, params()))
    assert "重听请按星号键" in hint.xpath("string(/Response/Gather/Say)")
    with sessions() as session:
        target = session.get(NoticeTarget, target_id)
        assert (target.plays, target.delivered, target.heard_to_end) == (1, True, True)


def test_a_late_request_of_an_earlier_call_or_another_call_is_refused(voice_target):
    settings, target_id = voice_target
    assert post(settings, f"/ivr/notice/voice?target={target_id}&n=2", params()).status_code == 409
    other = params(CallSid="CA" + "d" * 32)
    assert post(settings, f"/ivr/notice/voice?target={target_id}&n=1", other).status_code == 409
    assert post(settings, "/ivr/notice/voice?target=999&n=1", params()).status_code == 404
    assert post(settings, "/ivr/notice/voice?target=x&n=1", params()).status_code == 400
    # A status callback of an earlier call changes nothing (and is not an error: Twilio would retry it).
    stale = post(settings, f"/ivr/notice/status?target={target_id}&n=7", params(CallStatus="completed"))
    assert stale.status_code == 204


def test_sms_status_checks_its_parameters(live_server, sessions):
    settings = live_server
    with sessions.begin() as session:
        notice = make_notice(session, status=NoticeStatus.RUNNING)
        target = make_notice_target(session, notice, state=NoticeTargetState.SENT, message_sid=MESSAGE,
                                    provider_status="sent")  # fmt: skip
        target_id = target.id
    url = f"/ivr/sms/status?target={target_id}"
    base = {"AccountSid": "AC" + "0" * 32, "MessageSid": MESSAGE}
    assert post(settings, url, base | {"MessageStatus": "bogus"}).status_code == 400
    assert post(settings, url, base | {"MessageSid": "SMx", "MessageStatus": "sent"}).status_code == 400
    assert post(settings, url, base | {"MessageSid": "SM" + "e" * 32, "MessageStatus": "sent"}).status_code == 409
    assert post(settings, url, base | {"MessageStatus": "undelivered", "ErrorCode": "30003"}).status_code == 204
    assert post(settings, url, base | {"MessageStatus": "delivered"}).status_code == 204  # after a final: stale
    with sessions() as session:
        stored = session.get(NoticeTarget, target_id)
        assert (stored.provider_status, stored.error_code, stored.delivered) == ("undelivered", "30003", False)


def tone_wav(seconds: float = 2.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8))) for i in range(int(8000 * seconds))))
    return buffer.getvalue()


def test_a_voice_notice_with_a_recording_plays_it(live_server, sessions, tmp_path, monkeypatch):
    settings = live_server
    with sessions.begin() as session:
        make_household(session, make_village(session))
    recording = tmp_path / "notice.wav"
    recording.write_bytes(tone_wav())
    monkeypatch.chdir(tmp_path)  # the recordings folder is relative ("recordings"): the command and the app share it
    created = sanlv("notice", "create", "--name", "录音通知", "--channel", "voice", "--recording", str(recording))
    assert created.exit_code == 0, created.output
    notice_id = int(created.stdout.strip())
    report = json.loads(sanlv("notice", "status", str(notice_id), "--format", "json").stdout)
    assert report["channel"] == "voice" and report["households"] == 1
    with sessions.begin() as session:
        target = session.scalar(select(NoticeTarget).where(NoticeTarget.notice_id == notice_id))
        target.state, target.attempts, target.call_sid = NoticeTargetState.SENDING, 1, CALL
        target_id = target.id
    doc = twiml(post(settings, f"/ivr/notice/voice?target={target_id}&n=1", params()))
    [play] = doc.xpath("/Response/Gather/Play/text()")
    assert "/ivr/recordings/notices/notice-" in play
    fetched = requests.get(play, timeout=10)
    assert fetched.status_code == 200 and fetched.content == recording.read_bytes()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    refused = sanlv("notice", "create", "--name", "x", "--channel", "voice", "--recording", str(bad))
    assert refused.exit_code == 1 and "--recording:" in refused.stderr
