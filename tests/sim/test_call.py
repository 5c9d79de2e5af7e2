"""One call through the simulated network (:class:`sim.call.SimulatedCall`), against the fake IVR over real
HTTP: status callbacks, the TwiML conversation, signatures, and how the call ends."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests
from twilio.request_validator import RequestValidator

from campaigns.settings import Settings
from sim.call import MAX_REQUESTS, SimulatedCall
from sim.residents import ScriptedResident
from sim.store import answers_from_transcript
from tests.sim.fake_ivr import CALLER_ID, FAKE_TOKEN, PHONE, FakeIvr, gathered, make_call, sim_settings, simulate


def test_answered_call_reaches_the_ivr_with_the_scripted_digits_and_valid_signatures(
    ivr: FakeIvr, http: requests.Session
) -> None:
    result = simulate(ivr, http, {"answers": {"q1": "2", "q2": "3", "q3": "1"}})

    assert result.status == "completed"
    assert result.end_reason == "twiml"
    assert result.duration > 0
    assert result.requests == 4
    assert all(r.signed for r in ivr.received)
    first = ivr.of("/ivr/voice")[0].form
    assert first["CallSid"] == result.sid
    assert first["CallStatus"] == "in-progress"
    assert first["Direction"] == "outbound-api"
    assert first["ApiVersion"] == "2010-04-01"
    assert first["AccountSid"].startswith("AC") and len(first["AccountSid"]) == 34
    assert (first["From"], first["To"]) == (CALLER_ID, PHONE)
    assert "AnsweredBy" not in first
    assert gathered(ivr) == [("q1", "1", "2"), ("q2", "1", "3"), ("q3", "1", "1")]
    assert all(r.form["FinishedOnKey"] == "" for r in ivr.of("/ivr/gather"))
    assert answers_from_transcript(result.transcript) == {"q1": "2", "q2": "3", "q3": "1"}
    presses = [e for e in result.transcript if "step" in e]
    assert presses[0] == {"step": "q1", "try": 1, "meant": "2", "digits": "2"}
    assert {"say": "您好"} in result.transcript
    assert {"say": "问题 q1"} in result.transcript


def test_status_callbacks_are_signed_numbered_and_end_with_the_duration(ivr: FakeIvr, http: requests.Session) -> None:
    result = simulate(ivr, http, {})

    callbacks = ivr.callbacks
    assert [c["CallStatus"] for c in callbacks] == ["initiated", "ringing", "in-progress", "completed"]
    assert [c["SequenceNumber"] for c in callbacks] == ["0", "1", "2", "3"]
    assert all(r.signed for r in ivr.of("/ivr/status"))
    assert all(c["CallbackSource"] == "call-progress-events" and c["CallSid"] == result.sid for c in callbacks)
    for callback in callbacks:
        assert parsedate_to_datetime(callback["Timestamp"]).tzinfo is not None
    assert [c.get("CallDuration") for c in callbacks] == [None, None, None, str(result.duration)]
    assert int(callbacks[-1]["CallDuration"]) > 0
    # Status callbacks come before the voice webhook and after the conversation, in that order.
    paths = [r.path for r in ivr.received]
    assert paths[:4] == ["/ivr/status", "/ivr/status", "/ivr/status", "/ivr/voice"]
    assert paths[-1] == "/ivr/status"


def test_silence_follows_the_redirect_and_never_requests_the_action(ivr: FakeIvr, http: requests.Session) -> None:
    result = simulate(ivr, http, {"presses": ["", "2"], "answers": {"q2": "1", "q3": "4"}})

    assert [r.query for r in ivr.of("/ivr/noinput")] == [{"attempt": "1", "step": "q1", "try": "1"}]
    assert gathered(ivr) == [("q1", "2", "2"), ("q2", "1", "1"), ("q3", "1", "4")]
    assert {"step": "q1", "try": 1, "meant": "1", "silence": True} in result.transcript
    assert any(e.get("redirect", "").endswith("/ivr/noinput?attempt=1&step=q1&try=1") for e in result.transcript)


def test_silence_at_every_try_ends_at_the_end_of_the_document(ivr: FakeIvr, http: requests.Session) -> None:
    result = simulate(ivr, http, {"answers": {"q1": ""}})

    assert ivr.of("/ivr/gather") == []
    assert len(ivr.of("/ivr/noinput")) == 2
    assert result.end_reason == "end"
    assert result.transcript[-2] == {"hangup": "end"}
    assert ivr.callbacks[-1]["CallStatus"] == "completed"


def test_action_on_empty_result_posts_empty_digits(ivr: FakeIvr, http: requests.Session) -> None:
    simulate(ivr, http, {"presses": ["", "1"]}, path="/ivr/voice-empty")

    assert gathered(ivr)[:2] == [("q1", "1", ""), ("q1", "1", "1")]
    assert ivr.of("/ivr/noinput") == []


def test_get_gather_puts_the_fields_in_the_signed_query(ivr: FakeIvr, http: requests.Session) -> None:
    simulate(ivr, http, {"answers": {"q1": "3"}}, path="/ivr/voice-get")

    action = ivr.of("/ivr/gather")[0]
    assert action.method == "GET"
    assert action.signed
    assert (action.query["step"], action.query["Digits"], action.query["CallSid"]) == ("q1", "3", "CA" + "0" * 31 + "1")


def test_answers_list_gives_successive_asks_and_star_repeats(ivr: FakeIvr, http: requests.Session) -> None:
    result = simulate(ivr, http, {"answers": {"q1": ["*", "4"], "q2": "2"}})

    assert gathered(ivr)[:3] == [("q1", "1", "*"), ("q1", "1", "4"), ("q2", "1", "2")]
    assert answers_from_transcript(result.transcript) == {"q1": "4", "q2": "2", "q3": "1"}


@pytest.mark.parametrize(
    ("script", "expected", "at"),
    [
        ({"hangup_at_step": "q2"}, [("q1", "1", "1")], "q2"),
        ({"hangup_after_presses": 2}, [("q1", "1", "1"), ("q2", "1", "1")], "q3"),
        (
            {"hangup_at_step": "q2", "hangup_after_presses": 2, "answers": {"q2": "*"}},
            [("q1", "1", "1"), ("q2", "1", "*")],
            "q2",
        ),
    ],
)
def test_resident_hangs_up_at_a_step(
    ivr: FakeIvr, http: requests.Session, script: dict[str, Any], expected: list[tuple[str, str, str]], at: str
) -> None:
    result = simulate(ivr, http, script)

    assert gathered(ivr) == expected
    assert result.status == "completed"
    assert result.end_reason == "resident"
    assert {"hangup": "resident", "step": at, "try": 1} in result.transcript
    assert ivr.callbacks[-1]["CallStatus"] == "completed"


@pytest.mark.parametrize(
    ("outcome", "events"),
    [
        ("busy", ["initiated", "ringing", "busy"]),
        ("no-answer", ["initiated", "ringing", "no-answer"]),
        ("failed", ["initiated", "failed"]),
    ],
)
def test_unanswered_calls_only_send_status_callbacks(
    ivr: FakeIvr, http: requests.Session, outcome: str, events: list[str]
) -> None:
    result = simulate(ivr, http, {"outcome": outcome})

    assert ivr.voice == []
    assert [c["CallStatus"] for c in ivr.callbacks] == events
    assert [c["SequenceNumber"] for c in ivr.callbacks] == [str(n) for n in range(len(events))]
    assert ivr.callbacks[-1]["CallDuration"] == "0"
    assert (result.status, result.duration, result.requests) == (outcome, 0, 0)


@pytest.mark.parametrize(
    ("outcome", "answered_by"), [("answer", "human"), ("machine", "machine_start"), ("fax", "fax")]
)
def test_machine_detection_sends_answered_by(
    ivr: FakeIvr, http: requests.Session, outcome: str, answered_by: str
) -> None:
    result = simulate(ivr, http, {"outcome": outcome}, machine_detection=True)

    assert ivr.of("/ivr/voice")[0].form["AnsweredBy"] == answered_by
    assert result.answered_by == answered_by
    assert ivr.callbacks[-1]["AnsweredBy"] == answered_by
    assert ivr.callbacks[-1]["CallStatus"] == "completed"


def test_an_answering_machine_never_presses_a_key(ivr: FakeIvr, http: requests.Session) -> None:
    result = simulate(ivr, http, {"outcome": "machine", "answers": {"q1": "1"}})

    assert "AnsweredBy" not in ivr.of("/ivr/voice")[0].form
    assert ivr.of("/ivr/gather") == []
    assert [e for e in result.transcript if "step" in e] == [
        {"step": "q1", "try": 1, "silence": True},
        {"step": "q1", "try": 2, "silence": True},
    ]


@pytest.mark.parametrize("path", ["/ivr/broken", "/ivr/not-twiml"])
def test_application_error_ends_the_call(ivr: FakeIvr, http: requests.Session, path: str) -> None:
    result = simulate(ivr, http, {}, path=path)

    assert result.status == "completed"
    assert result.end_reason == "error"
    errors = [e for e in result.transcript if e.get("error") == "application"]
    assert len(errors) == 1 and errors[0]["url"].endswith(f"{path}?attempt=1")
    assert len(ivr.of(path)) == 1
    assert ivr.callbacks[-1]["CallStatus"] == "completed"


def test_unreachable_ivr_is_an_application_error(http: requests.Session) -> None:
    dead = FakeIvr(token=FAKE_TOKEN, base="http://127.0.0.1:9")  # the discard port: nothing listens
    result = SimulatedCall(sim_settings(), make_call(dead), ScriptedResident({}), http, token=FAKE_TOKEN).run()

    assert result.status == "completed"
    assert result.end_reason == "error"
    assert [e["http"] for e in result.transcript if "callback" in e] == ["ConnectionError"] * 4


def test_a_looping_document_is_cut_off(ivr: FakeIvr, http: requests.Session) -> None:
    result = simulate(ivr, http, {}, path="/ivr/loop")

    assert result.requests == MAX_REQUESTS
    assert len(ivr.of("/ivr/loop")) == MAX_REQUESTS
    assert result.end_reason == "loop"
    assert ivr.callbacks[-1]["CallStatus"] == "completed"


def test_the_token_given_signs_every_request(ivr: FakeIvr, http: requests.Session) -> None:
    settings = Settings(telephony="simulator", twilio_auth_token="real-token", twilio_account_sid="AC" + "1" * 32)
    SimulatedCall(settings, make_call(ivr), ScriptedResident({}), http, token="real-token").run()

    validator = RequestValidator("real-token")
    assert ivr.received and not any(r.signed for r in ivr.received)  # not signed with the fake IVR's token
    assert all(validator.validate(r.url, r.form, r.signature) for r in ivr.received)
    assert ivr.callbacks[0]["AccountSid"] == "AC" + "1" * 32


def test_speed_makes_the_call_take_simulated_time(ivr: FakeIvr, http: requests.Session) -> None:
    started = time.monotonic()
    result = SimulatedCall(sim_settings(), make_call(ivr), ScriptedResident({}), http, speed=200.0, token=FAKE_TOKEN).run()
    elapsed = time.monotonic() - started

    # Ringing, prompts and key presses take `duration` simulated seconds (and more for the ringing).
    assert elapsed >= result.duration / 200.0
