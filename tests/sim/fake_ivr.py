"""A tiny TwiML app served over real HTTP on 127.0.0.1, for the simulated phone network's tests.

The app asks three questions (q1, q2, q3) with ``<Gather action="/ivr/gather?attempt=1&step=qN&try=T">``
followed by a ``<Redirect>`` for silence, validates ``X-Twilio-Signature`` on every request and records what
it received, so each test can compare what the network sent with what the resident meant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Flask, Response, request
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Gather, VoiceResponse

from campaigns.settings import Settings
from sim.call import CallResult, SimulatedCall
from sim.residents import ScriptedResident
from sim.store import SimCall
from workers.telephony.base import CallRequest

PHONE = "+8613800000001"
FAKE_TOKEN = "fake-ivr-signing-key"  # the key the fake IVR checks and the simulated calls sign with
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
            # As Twilio signs: the base URL + path + the raw query string, not request.url.
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


def simulate(ivr: FakeIvr, http: requests.Session, script: dict[str, Any], **call_options: Any) -> CallResult:
    call = make_call(ivr, **call_options)
    return SimulatedCall(sim_settings(), call, ScriptedResident(script), http, token=FAKE_TOKEN).run()


def gathered(ivr: FakeIvr) -> list[tuple[str, str, str]]:
    """(step, try, Digits) of every Gather action the app received."""
    return [
        (r.query["step"], r.query["try"], (r.form or r.query).get("Digits", "")) for r in ivr.of("/ivr/gather")
    ]
