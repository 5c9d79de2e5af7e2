"""The simulated phone network, against a tiny TwiML app served over real HTTP on 127.0.0.1.

The app asks three questions (q1, q2, q3) with ``<Gather action="/ivr/gather?attempt=1&step=qN&try=T">``
followed by a ``<Redirect>`` for silence, validates ``X-Twilio-Signature`` on every request and records what
it received, so each test can compare what the network sent with what the resident meant.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import redis
import requests
from flask import Flask, Response, request
from rq.job import Job
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Gather, VoiceResponse
from werkzeug.serving import make_server

from campaigns.settings import Settings
from sim.network import (
    MAX_REQUESTS,
    SimCall,
    SimulatedCall,
    SimulationOptions,
    SimulatorProvider,
    answers_from_transcript,
    read_transcript,
    run_call,
)
from sim.residents import (
    PopulationResident,
    ScriptedResident,
    VillageProfile,
    resident_for_call,
    set_script,
    take_script,
)
from tests.factories import make_household, make_village
from workers.queues import SIMULATOR_QUEUE, namespaced_job_id, queue
from workers.runner import InProcessWorker
from workers.telephony.base import (
    CallRequest,
    PermanentNumberError,
    RateLimitedError,
    TelephonyError,
)

PHONE = "+8613800000001"
CALLER_ID = "+8659312345678"
STEPS = ("q1", "q2", "q3")


@dataclass
class Received:
    path: str
    query: dict[str, str]
    form: dict[str, str]
    method: str
    signed: bool  # valid for the app's token (the simulator's default)
    url: str
    signature: str


@dataclass
class FakeIvr:
    """A three-question survey that remembers every request it was sent."""

    token: str
    base: str = ""
    received: list[Received] = field(default_factory=list)

    def of(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    @property
    def callbacks(self) -> list[dict[str, str]]:
        return [r.form for r in self.of("/ivr/status")]

    @property
    def voice(self) -> list[Received]:
        return [r for r in self.received if r.path != "/ivr/status"]

    def app(self) -> Flask:
        app = Flask(__name__)
        validator = RequestValidator(self.token)

        def record() -> Received:
            # TWILIO.md: validate against the base URL + path + the raw query string, not request.url.
            query = request.query_string.decode()
            url = f"{self.base}{request.path}" + (f"?{query}" if query else "")
            params = request.form.to_dict() if request.method == "POST" else {}
            signature = request.headers.get("X-Twilio-Signature", "")
            signed = validator.validate(url, params, signature)
            received = Received(request.path, request.args.to_dict(), params, request.method, signed, url, signature)
            self.received.append(received)
            return received

        def twiml(response: VoiceResponse) -> Response:
            return Response(str(response), mimetype="text/xml")

        def ask(
            step: str, try_number: int, *, method: str = "POST", on_empty: bool = False, intro: str = ""
        ) -> Response:
            response = VoiceResponse()
            if intro:
                response.say(intro)
            options: dict[str, Any] = {}
            if on_empty:
                options["action_on_empty_result"] = True
            gather = Gather(
                action=f"/ivr/gather?attempt=1&step={step}&try={try_number}",
                method=method,
                num_digits=1,
                timeout=5,
                **options,
            )
            gather.say(f"问题 {step}")
            response.append(gather)
            response.redirect(f"/ivr/noinput?attempt=1&step={step}&try={try_number}")
            return twiml(response)

        @app.post("/ivr/voice")
        def voice() -> Response:
            record()
            return ask("q1", 1, intro="您好")

        @app.route("/ivr/gather", methods=["GET", "POST"])
        def gather() -> Response:
            received = record()
            values = received.form if request.method == "POST" else received.query
            step, try_number = received.query["step"], int(received.query["try"])
            digits = values.get("Digits", "")
            if digits in ("", "*"):
                return ask(step, try_number)
            if digits == "9":
                response = VoiceResponse()
                response.say("再见")
                response.hangup()
                return twiml(response)
            index = STEPS.index(step)
            if index + 1 < len(STEPS):
                return ask(STEPS[index + 1], 1)
            response = VoiceResponse()
            response.say("谢谢,再见。")
            response.hangup()
            return twiml(response)

        @app.post("/ivr/noinput")
        def noinput() -> Response:
            received = record()
            step, try_number = received.query["step"], int(received.query["try"])
            if try_number < 2:
                return ask(step, try_number + 1)
            response = VoiceResponse()
            response.say("没有听到您的按键,再见。")
            return twiml(response)  # end of document: the call hangs up

        @app.post("/ivr/inbound")
        def inbound() -> Response:
            record()
            return ask("q1", 1, intro="欢迎来电")

        @app.post("/ivr/voice-get")
        def voice_get() -> Response:
            record()
            return ask("q1", 1, method="GET")

        @app.post("/ivr/voice-empty")
        def voice_empty() -> Response:
            record()
            return ask("q1", 1, on_empty=True)

        @app.post("/ivr/broken")
        def broken() -> tuple[str, int]:
            record()
            return "boom", 500

        @app.post("/ivr/not-twiml")
        def not_twiml() -> Response:
            record()
            return Response("hello", mimetype="text/plain")

        @app.post("/ivr/loop")
        def loop() -> Response:
            record()
            response = VoiceResponse()
            response.redirect("/ivr/loop")
            return twiml(response)

        @app.post("/ivr/status")
        def status() -> tuple[str, int]:
            record()
            return "", 204

        return app


@pytest.fixture(autouse=True)
def _no_sim_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANLV_SIM_SEED", raising=False)
    monkeypatch.delenv("SANLV_SIM_SPEED", raising=False)


@pytest.fixture
def ivr() -> Iterator[FakeIvr]:
    fake = FakeIvr(token=Settings().webhook_token)
    server = make_server("127.0.0.1", 0, fake.app(), threaded=True)
    fake.base = f"http://127.0.0.1:{server.port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def sim_settings() -> Settings:
    return Settings(telephony="simulator")


def make_call(ivr: FakeIvr, *, path: str = "/ivr/voice", machine_detection: bool = False, to: str = PHONE) -> SimCall:
    return SimCall(
        sid="CA" + "0" * 31 + "1",
        to=to,
        from_=CALLER_ID,
        url=f"{ivr.base}{path}?attempt=1",
        status_callback=f"{ivr.base}/ivr/status?attempt=1",
        machine_detection=machine_detection,
        attempt_id="1",
    )


def call_request(ivr: FakeIvr, *, attempt: int = 1, to: str = PHONE, path: str = "/ivr/voice") -> CallRequest:
    return CallRequest(
        attempt_id=attempt,
        to=to,
        from_=CALLER_ID,
        url=f"{ivr.base}{path}?attempt={attempt}",
        status_callback=f"{ivr.base}/ivr/status?attempt={attempt}",
    )


def simulate(ivr: FakeIvr, http: requests.Session, script: dict[str, Any], **call_options: Any):
    call = make_call(ivr, **call_options)
    return SimulatedCall(sim_settings(), call, ScriptedResident(script), http).run()


def gathered(ivr: FakeIvr) -> list[tuple[str, str, str]]:
    """(step, try, Digits) of every Gather action the app received."""
    return [
        (r.query["step"], r.query["try"], (r.form or r.query).get("Digits", "")) for r in ivr.of("/ivr/gather")
    ]


# ---------------------------------------------------------------------------------------- conversations


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
    dead = FakeIvr(token=Settings().webhook_token, base="http://127.0.0.1:9")  # the discard port: nothing listens
    result = SimulatedCall(sim_settings(), make_call(dead), ScriptedResident({}), http).run()

    assert result.status == "completed"
    assert result.end_reason == "error"
    assert [e["http"] for e in result.transcript if "callback" in e] == ["ConnectionError"] * 4


def test_a_looping_document_is_cut_off(ivr: FakeIvr, http: requests.Session) -> None:
    result = simulate(ivr, http, {}, path="/ivr/loop")

    assert result.requests == MAX_REQUESTS
    assert len(ivr.of("/ivr/loop")) == MAX_REQUESTS
    assert result.end_reason == "loop"
    assert ivr.callbacks[-1]["CallStatus"] == "completed"


def test_the_auth_token_signs_when_configured(ivr: FakeIvr, http: requests.Session) -> None:
    settings = Settings(telephony="simulator", twilio_auth_token="real-token", twilio_account_sid="AC" + "1" * 32)
    SimulatedCall(settings, make_call(ivr), ScriptedResident({}), http).run()

    validator = RequestValidator("real-token")
    assert ivr.received and not any(r.signed for r in ivr.received)  # not signed with the default token
    assert all(validator.validate(r.url, r.form, r.signature) for r in ivr.received)
    assert ivr.callbacks[0]["AccountSid"] == "AC" + "1" * 32


# ---------------------------------------------------------------------------------------------- inbound


def test_a_resident_calls_our_number(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(env, redis_conn)
    set_script(redis_conn, PHONE, {"answers": {"q1": "2", "q2": "3", "q3": "4"}})
    before = datetime.now(UTC) - timedelta(seconds=1)

    info = provider.call_in(PHONE, f"{ivr.base}/ivr/inbound", to=CALLER_ID)
    worker = InProcessWorker([queue(env, SIMULATOR_QUEUE)], connection=redis_conn)
    assert worker.work(burst=True)

    first = ivr.of("/ivr/inbound")[0]
    assert first.signed and first.form["CallSid"] == info.sid
    assert (first.form["Direction"], first.form["From"], first.form["To"]) == ("inbound", PHONE, CALLER_ID)
    assert first.form["CallStatus"] == "ringing"  # Twilio fetches the number's voice URL while it rings
    assert gathered(ivr) == [("q1", "1", "2"), ("q2", "1", "3"), ("q3", "1", "4")]
    assert all(r.form["Direction"] == "inbound" for r in ivr.received)
    # The number's status callback: only "completed", and no call-progress sequence numbers.
    assert [c["CallStatus"] for c in ivr.callbacks] == ["completed"]
    assert "SequenceNumber" not in ivr.callbacks[0] and int(ivr.callbacks[0]["CallDuration"]) > 0
    assert all(r.signed for r in ivr.of("/ivr/status"))
    done = provider.fetch_call(info.sid)
    assert (done.status, done.to, done.extra["from"], done.extra["direction"]) == ("completed", CALLER_ID, PHONE, "inbound")
    assert [c.sid for c in provider.find_calls_from(PHONE, before)] == [info.sid]
    assert provider.find_calls(PHONE, before) == []  # not a call *to* the resident: never adopted as ours
    assert [c.sid for c in provider.household_calls(PHONE, before)] == [info.sid]


def test_call_in_refuses_a_caller_that_is_not_e164(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    with pytest.raises(ValueError, match="E.164"):
        SimulatorProvider(env, redis_conn).call_in("13800000001", f"{ivr.base}/ivr/inbound")


def test_a_resident_who_hangs_up_calls_back_when_the_script_says_so(
    env: Settings, redis_conn: redis.Redis, ivr: FakeIvr
) -> None:
    provider = SimulatorProvider(env, redis_conn)
    set_script(redis_conn, PHONE, [{"hangup_at_step": "q2", "call_back": True}, {"answers": {"q1": "5"}}])
    before = datetime.now(UTC) - timedelta(seconds=1)

    outbound = provider.place_call(call_request(ivr))
    worker = InProcessWorker([queue(env, SIMULATOR_QUEUE)], connection=redis_conn)
    assert worker.work(burst=True)

    calls = provider.household_calls(PHONE, before)
    assert calls[0].sid == outbound.sid and len(calls) == 2
    back = calls[1]
    assert provider.fetch_call(outbound.sid).extra["call_back_sid"] == back.sid
    assert read_transcript(redis_conn, outbound.sid)[-1] == {"call_back": back.sid}
    assert back.extra["direction"] == "inbound" and back.extra["from"] == PHONE
    assert [r.form["CallSid"] for r in ivr.of("/ivr/inbound")] == [back.sid]
    # The call-back follows the next script: it answers q1 with 5.
    assert answers_from_transcript(read_transcript(redis_conn, back.sid)) == {"q1": "5", "q2": "1", "q3": "1"}


def test_no_call_back_without_the_script_field_or_after_a_full_interview(
    env: Settings, redis_conn: redis.Redis, ivr: FakeIvr
) -> None:
    provider = SimulatorProvider(env, redis_conn)
    set_script(redis_conn, PHONE, [{"hangup_at_step": "q2"}, {"call_back": True}])
    before = datetime.now(UTC) - timedelta(seconds=1)

    provider.place_call(call_request(ivr))  # hangs up, no call_back
    provider.place_call(call_request(ivr, attempt=2))  # call_back, but never hangs up mid-survey
    worker = InProcessWorker([queue(env, SIMULATOR_QUEUE)], connection=redis_conn)
    assert worker.work(burst=True)

    assert provider.find_calls_from(PHONE, before) == []
    assert ivr.of("/ivr/inbound") == []


# ----------------------------------------------------------------------------------------------- scripts


def test_a_script_list_is_consumed_one_per_call_and_the_last_repeats(redis_conn: redis.Redis) -> None:
    set_script(redis_conn, PHONE, [{"outcome": "busy"}, {"outcome": "no-answer"}, {"answers": {"q1": "3"}}])

    outcomes = [take_script(redis_conn, PHONE) for _ in range(5)]

    assert [o.get("outcome", "answer") for o in outcomes] == ["busy", "no-answer", "answer", "answer", "answer"]
    assert take_script(redis_conn, "+8613999999999") is None


def test_a_single_script_object_applies_to_every_call(redis_conn: redis.Redis) -> None:
    redis_conn.set(f"sanlv:sim:script:{PHONE}", '{"outcome": "busy"}')  # written by hand, as a test may

    assert [take_script(redis_conn, PHONE) for _ in range(3)] == [{"outcome": "busy"}] * 3


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"answers": ["1"]}, "answers"),
        ({"presses": "12"}, "presses"),
        ({"hangup_after_presses": -1}, "hangup_after_presses"),
        ({"whatever": 1}, "whatever"),
        ({"call_back": "soon"}, "call_back"),
        ({"call_back": -1}, "call_back"),
        ([], "empty"),
    ],
)
def test_set_script_rejects_a_malformed_script(redis_conn: redis.Redis, script: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        set_script(redis_conn, PHONE, script)
    assert redis_conn.get(f"sanlv:sim:script:{PHONE}") is None


def test_read_back_confirmations_are_confirmed_unless_scripted_and_are_not_answers() -> None:
    resident = ScriptedResident({"answers": {"security": ["3", "1"], "security.confirm": ["2", "1"]}})

    assert resident.respond("security", 1).keys == "3"
    assert resident.respond("security.confirm", 1).keys == "2"
    assert resident.respond("security", 1).keys == "1"
    assert resident.respond("security.confirm", 1).keys == "1"
    assert resident.respond("awareness.confirm", 1).keys == "1"
    assert resident.meant("security.confirm") is None and resident.meant("security") == "1"
    habits = {"silence": 0, "repeat": 0, "wrong_key": 0, "drop": 0, "opt_out": 0}
    population = PopulationResident(VillageProfile(name=None, **habits), PHONE, 1)
    assert population.respond("awareness.confirm", 1).keys == "1" and population.meant("awareness.confirm") is None
    transcript = [
        {"step": "security", "digits": "3"},
        {"step": "security.confirm", "digits": "2"},
        {"step": "security", "digits": "1"},
        {"step": "security.confirm", "digits": "1"},
    ]
    assert answers_from_transcript(transcript) == {"security": "1"}


def test_scripted_resident_defaults_and_unknown_steps() -> None:
    resident = ScriptedResident({"answers": {"security": "3"}})

    assert resident.respond("consent", 1).keys == "1"
    assert resident.respond("security", 1).keys == "3"
    assert resident.respond("visit", 1).keys == "2"
    assert resident.respond("no-such-step", 1).keys == "1"
    assert resident.meant("security") == "3"


# ---------------------------------------------------------------------------------- provider and RQ job


def test_place_call_stores_the_call_and_enqueues_the_job(
    settings: Settings, redis_conn: redis.Redis, ivr: FakeIvr
) -> None:
    provider = SimulatorProvider(settings, redis_conn)

    info = provider.place_call(call_request(ivr, attempt=12))

    assert info.sid.startswith("CA") and len(info.sid) == 34 and int(info.sid[2:], 16) >= 0
    assert (info.status, info.to) == ("queued", PHONE)
    stored = redis_conn.hgetall(f"sanlv:sim:call:{info.sid}")
    assert stored[b"status"] == b"queued"
    assert stored[b"attempt_id"] == b"12"
    assert stored[b"url"].decode() == f"{ivr.base}/ivr/voice?attempt=12"
    job = Job.fetch(namespaced_job_id(settings, f"sim-{info.sid}"), connection=redis_conn)
    assert job.func_name == "sim.network.run_call"
    assert job.args == (info.sid,)
    assert job.origin == queue(settings, SIMULATOR_QUEUE).name
    fetched = provider.fetch_call(info.sid)
    assert (fetched.status, fetched.extra["attempt_id"]) == ("queued", "12")


def test_place_call_refuses_what_twilio_refuses(settings: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(settings, redis_conn)
    with pytest.raises(PermanentNumberError) as invalid:
        provider.place_call(call_request(ivr, to="13800000001"))
    assert invalid.value.code == 21211

    set_script(redis_conn, PHONE, [{"outcome": "rate-limited"}, {"outcome": "blocked"}, {"outcome": "busy"}])
    with pytest.raises(RateLimitedError):
        provider.place_call(call_request(ivr))
    with pytest.raises(PermanentNumberError) as blocked:
        provider.place_call(call_request(ivr))
    assert blocked.value.code == 21216
    assert provider.find_calls(PHONE, datetime.now(UTC) - timedelta(minutes=1)) == []
    provider.place_call(call_request(ivr))  # the busy script is left for the call itself
    assert take_script(redis_conn, PHONE) == {"outcome": "busy"}


def test_fetch_and_cancel_an_unknown_call(settings: Settings, redis_conn: redis.Redis) -> None:
    provider = SimulatorProvider(settings, redis_conn)
    with pytest.raises(TelephonyError) as missing:
        provider.fetch_call("CA" + "f" * 32)
    assert missing.value.code == 20404
    with pytest.raises(TelephonyError):
        provider.cancel_call("CA" + "f" * 32)


def test_cancel_before_the_call_runs(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(env, redis_conn)
    info = provider.place_call(call_request(ivr))

    provider.cancel_call(info.sid)
    assert provider.fetch_call(info.sid).status == "canceled"
    assert run_call(info.sid) == "canceled"
    assert run_call(info.sid) == "canceled"  # a second run sends nothing more

    assert ivr.voice == []
    callbacks = [(c["CallStatus"], c["SequenceNumber"], c["CallDuration"]) for c in ivr.callbacks]
    assert callbacks == [("canceled", "0", "0")]
    assert provider.fetch_call(info.sid).status == "canceled"


def test_cancel_leaves_a_finished_call_alone(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(env, redis_conn)
    set_script(redis_conn, PHONE, {"answers": {"q1": "2"}})
    info = provider.place_call(call_request(ivr))
    assert run_call(info.sid) == "completed"

    provider.cancel_call(info.sid)

    assert provider.fetch_call(info.sid).status == "completed"
    assert run_call(info.sid) == "completed"
    assert len(ivr.callbacks) == 4  # the second run did not call again


def test_rq_worker_runs_calls_end_to_end(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(env, redis_conn)
    other = "+8613800000002"
    set_script(redis_conn, PHONE, [{"outcome": "busy"}, {"answers": {"q1": "4", "q2": "2", "q3": "0"}}])
    set_script(redis_conn, other, {"outcome": "no-answer"})
    before = datetime.now(UTC) - timedelta(seconds=1)
    busy = provider.place_call(call_request(ivr, attempt=1))
    answered = provider.place_call(call_request(ivr, attempt=2))
    unanswered = provider.place_call(call_request(ivr, attempt=3, to=other))

    worker = InProcessWorker([queue(env, SIMULATOR_QUEUE)], connection=redis_conn)
    assert worker.work(burst=True)

    assert provider.fetch_call(busy.sid).status == "busy"
    assert provider.fetch_call(unanswered.sid).status == "no-answer"
    done = provider.fetch_call(answered.sid)
    assert done.status == "completed"
    assert done.duration is not None and done.duration > 0
    assert done.start_time is not None and done.date_created is not None
    assert done.extra["outcome"] == "answer"
    assert [c.sid for c in provider.find_calls(PHONE, before)] == [busy.sid, answered.sid]
    assert provider.find_calls(PHONE, datetime.now(UTC) + timedelta(seconds=1)) == []

    transcript = read_transcript(redis_conn, answered.sid)
    assert answers_from_transcript(transcript) == {"q1": "4", "q2": "2", "q3": "0"}
    assert [r.query["attempt"] for r in ivr.of("/ivr/voice")] == ["2"]
    assert [(r.form["CallSid"], r.form["Digits"]) for r in ivr.of("/ivr/gather")] == [
        (answered.sid, "4"),
        (answered.sid, "2"),
        (answered.sid, "0"),
    ]
    by_call = Counter(c["CallSid"] for c in ivr.callbacks)
    assert by_call == {busy.sid: 3, answered.sid: 4, unanswered.sid: 3}
    assert all(r.signed for r in ivr.received)


def test_a_call_left_half_way_by_a_dead_worker_is_ended(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(env, redis_conn)
    info = provider.place_call(call_request(ivr))
    redis_conn.hset(f"sanlv:sim:call:{info.sid}", mapping={"status": "in-progress", "callbacks": "3"})

    assert run_call(info.sid) == "completed"

    assert [(c["CallStatus"], c["SequenceNumber"]) for c in ivr.callbacks] == [("completed", "3")]
    assert provider.fetch_call(info.sid).extra["end_reason"] == "abandoned"


# ------------------------------------------------------------------------------------------- population


def _rates(village: str, count: int = 300, seed: str = "0") -> dict[str, float]:
    profile = VillageProfile.for_village(village)
    positive: Counter[str] = Counter()
    for n in range(count):
        resident = PopulationResident(profile, f"+86138{n:08d}", attempt=1, seed=seed)
        positive["security"] += resident.meant("security") in ("1", "2")
        positive["participation"] += resident.meant("participation") == "1"
        positive["cadre_contact"] += resident.meant("cadre_contact") == "1"
    return {key: value / count for key, value in positive.items()}


def test_villages_differ_and_each_follows_its_profile() -> None:
    east, west = VillageProfile.for_village("东山村"), VillageProfile.for_village("西河村")
    assert east == VillageProfile.for_village("东山村")  # derived from the name, nothing else
    # The precondition that makes the comparison meaningful: the two profiles are far apart.
    assert abs(east.participation - west.participation) > 0.15

    east_rates, west_rates = _rates("东山村"), _rates("西河村")

    for profile, rates in ((east, east_rates), (west, west_rates)):
        # 300 draws: a binomial standard error is at most 0.029; 0.09 is three of them.
        assert abs(rates["participation"] - profile.participation) < 0.09
        assert abs(rates["security"] - profile.security_positive) < 0.09
    assert abs(east_rates["participation"] - west_rates["participation"]) > 0.1
    assert (east_rates["participation"] > west_rates["participation"]) == (east.participation > west.participation)


def test_profiles_stay_in_their_ranges() -> None:
    for name in ("东山村", "西河村", "南岭村", "北坡村", "Village 7"):
        profile = VillageProfile.for_village(name)
        assert 0.85 <= profile.security_positive <= 0.995
        assert 0.80 <= profile.satisfaction_positive <= 0.99
        assert 0.85 <= profile.awareness <= 0.99
        assert 0.40 <= profile.participation <= 0.80
        assert 0.60 <= profile.cadre_contact <= 0.95
        assert 0.06 <= profile.busy <= 0.10
    assert VillageProfile.for_village(None).name is None


def test_population_is_reproducible_and_opinions_survive_a_new_attempt() -> None:
    profile = VillageProfile.for_village("东山村")
    steps = ("consent", "security", "awareness", "satisfaction", "visit", "unknown")

    def interview(attempt: int, seed: str) -> list[str]:
        resident = PopulationResident(profile, PHONE, attempt, seed)
        return [resident.meant(step) or "" for step in steps]

    assert interview(1, "0") == interview(1, "0") == interview(2, "0")
    assert interview(1, "0")[-1] == "1"  # unknown steps get "1"
    seeds = {tuple(_rates("东山村", 100, seed).values()) for seed in ("0", "1")}
    assert len(seeds) == 2


def test_population_call_outcomes_follow_the_profile() -> None:
    profile = VillageProfile.for_village("南岭村")
    outcomes = Counter(PopulationResident(profile, f"+86138{n:08d}", 1).outcome for n in range(2000))

    assert abs(outcomes["busy"] / 2000 - profile.busy) < 0.025
    assert abs(outcomes["no-answer"] / 2000 - profile.no_answer) < 0.025
    assert outcomes["answer"] / 2000 > 0.7


def test_population_resident_talks_to_the_ivr(ivr: FakeIvr, http: requests.Session) -> None:
    answered = 0
    for n in range(20):
        phone = f"+86138{n:08d}"
        resident = PopulationResident(VillageProfile.for_village("东山村"), phone, 1)
        result = SimulatedCall(sim_settings(), make_call(ivr, to=phone), resident, http).run()
        if resident.outcome != "answer":
            continue
        answered += 1
        pressed = [e for e in result.transcript if "digits" in e]
        assert all(e["meant"] == "1" for e in pressed)  # q1..q3 are unknown steps: a resident means "1"
        assert {e["digits"] for e in pressed} <= {"1", "*", "7", "9"}  # the answer, repeat, a slip, or stop
    assert answered >= 10


def test_resident_for_call_uses_the_households_village(
    redis_conn: redis.Redis, session: Any, sessions: Any
) -> None:
    village = make_village(session, name="东山村")
    household = make_household(session, village=village)
    session.commit()

    known = resident_for_call(redis_conn, household.phone, 1, sessions=sessions)
    unknown = resident_for_call(redis_conn, "+8613999999999", 1, sessions=sessions)
    set_script(redis_conn, household.phone, {"outcome": "busy"})
    scripted = resident_for_call(redis_conn, household.phone, 2, sessions=sessions)

    assert isinstance(known, PopulationResident) and known.profile.name == "东山村"
    assert isinstance(unknown, PopulationResident) and unknown.profile.name is None
    assert isinstance(scripted, ScriptedResident) and scripted.outcome == "busy"


def test_simulation_options_from_the_environment() -> None:
    assert SimulationOptions.from_environ({}) == SimulationOptions(seed="0", speed=0.0)
    assert SimulationOptions.from_environ({"SANLV_SIM_SEED": "42", "SANLV_SIM_SPEED": "20"}) == SimulationOptions(
        seed="42", speed=20.0
    )
    for bad in ("fast", "-1", "inf"):
        with pytest.raises(ValueError, match="SANLV_SIM_SPEED"):
            SimulationOptions.from_environ({"SANLV_SIM_SPEED": bad})


def test_speed_makes_the_call_take_simulated_time(ivr: FakeIvr, http: requests.Session) -> None:
    started = time.monotonic()
    result = SimulatedCall(sim_settings(), make_call(ivr), ScriptedResident({}), http, speed=200.0).run()
    elapsed = time.monotonic() - started

    # Ringing, prompts and key presses take `duration` simulated seconds (and more for the ringing).
    assert elapsed >= result.duration / 200.0
