"""One call through the simulated phone network, as Twilio would run it: the status callbacks in order and, once
answered, the TwiML conversation (the voice webhook, then every ``<Gather>`` action and ``<Redirect>``), each
request signed with ``X-Twilio-Signature``. Who answers and what they press is up to the call's
:class:`~sim.residents.Resident`.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests
from twilio.request_validator import RequestValidator

from campaigns.phones import mask
from campaigns.settings import Settings
from sim.residents import ANSWER, CREATE_ERRORS, FAX, MACHINE, SILENCE, Press, Resident
from sim.store import (
    BUSY,
    CANCELED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    INITIATED,
    NO_ANSWER,
    OUTBOUND,
    QUEUED,
    RINGING,
    CallStore,
    SimCall,
)

log = logging.getLogger("sanlv.simulator")

SIMULATOR_ACCOUNT_SID = "AC" + "5a" * 16
API_VERSION = "2010-04-01"
HTTP_TIMEOUT = 15.0  # Twilio gives a webhook 15 s before it is an application error
MAX_REQUESTS = 200  # webhook requests per call before the network gives up on a looping document
MAX_HTTP_REDIRECTS = 5

# Simulated seconds, for CallDuration and (with SANLV_SIM_SPEED) for real waiting.
SECONDS_TO_ANSWER = 6.0
TTS_CHARS_PER_SECOND = 4.0  # Mandarin TTS speaks about four characters a second
PLAY_SECONDS = 5.0
SECONDS_TO_PRESS = 2.0
GATHER_TIMEOUT = 5  # Twilio's default
ANSWERED_BY = {ANSWER: "human", MACHINE: "machine_start", FAX: "fax"}


def masked(phone: str) -> str:
    """``phone`` masked for a log line."""
    try:
        return mask(phone)
    except Exception:  # a malformed number must not break a log line
        return "***"


def _rfc2822(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC))


@dataclass(frozen=True)
class _Request:
    """The next webhook request the network makes."""

    url: str
    method: str
    params: dict[str, str]


@dataclass(frozen=True)
class _End:
    """The conversation is over; ``reason`` says who ended it."""

    reason: str  # resident | twiml | reject | end | loop | error


@dataclass
class CallResult:
    """How a simulated call went."""

    sid: str
    status: str
    duration: int = 0
    answered_by: str | None = None
    end_reason: str | None = None
    requests: int = 0  # webhook requests made (not counting status callbacks)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    direction: str = OUTBOUND


class SimulatedCall:
    """One call through the simulated network, run synchronously.

    Args:
        settings: for the account sid.
        call: the call to run.
        resident: who is at the other end.
        http_session: the HTTP session for every request of this call (a new one if not given).
        store: where the call's status and transcript live; None keeps everything in memory (tests).
        speed: 0 runs without waiting; otherwise simulated seconds are slept, divided by ``speed``.
        token: the key requests are signed with, the one the IVR checks (campaigns.secrets.webhook_token).
    """

    def __init__(
        self,
        settings: Settings,
        call: SimCall,
        resident: Resident,
        http_session: requests.Session | None = None,
        *,
        store: CallStore | None = None,
        speed: float = 0.0,
        token: str,
    ):
        self.settings = settings
        self.call = call
        self.resident = resident
        self._owns_http = http_session is None
        self.http = http_session if http_session is not None else requests.Session()
        self.store = store
        self.speed = speed
        # Signed as Twilio signs, with the token the IVR validates with (the auth token, or the deployment's).
        self.validator = RequestValidator(token)
        self.account_sid = settings.twilio_account_sid or SIMULATOR_ACCOUNT_SID
        self.transcript: list[dict[str, Any]] = []
        self.sequence = 0
        self.clock = 0.0  # simulated seconds since the call was answered
        self.requests = 0
        self.answered_by: str | None = None
        self.status = QUEUED

    # ------------------------------------------------------------------------------------------ lifecycle

    def run(self) -> CallResult:
        """Dial, ring, answer or not, converse, hang up: every status callback in order.

        The IVR's failures (errors, timeouts, bad TwiML) never raise: they end the call as Twilio would and
        are recorded in the transcript.
        """
        try:
            return self._run()
        finally:
            if self._owns_http:
                self.http.close()

    def _run(self) -> CallResult:
        if self.call.inbound:
            return self._run_inbound()
        if not self._advance((QUEUED,), INITIATED):
            return self._interrupted()
        self._status_callback("initiated", INITIATED)
        outcome = self.resident.outcome
        if outcome == FAILED or outcome in CREATE_ERRORS:
            return self._finish(FAILED)
        if not self._advance((INITIATED,), RINGING):
            return self._interrupted()
        self._status_callback("ringing", RINGING)
        if outcome == BUSY:
            self._wait(1.0)
            return self._finish(BUSY)
        if outcome == NO_ANSWER:
            self._wait(self.call.timeout)
            return self._finish(NO_ANSWER)
        self._wait(SECONDS_TO_ANSWER)
        if not self._advance((RINGING,), IN_PROGRESS, start_time=repr(time.time())):
            return self._interrupted()
        if self.call.machine_detection:
            self.answered_by = ANSWERED_BY.get(outcome, "unknown")
        self._status_callback("answered", IN_PROGRESS)
        end = self._converse()
        return self._finish(COMPLETED, reason=end.reason)

    def called_back(self, sid: str) -> None:
        """Note in this call's record and transcript that the resident called back as call ``sid``."""
        if self.store is not None:
            self.store.update(self.call.sid, call_back_sid=sid)
        self._record({"call_back": sid})

    def _run_inbound(self) -> CallResult:
        """A resident dialled our number: Twilio fetches the number's voice URL at once (no ringing callbacks)."""
        if not self._advance((QUEUED,), IN_PROGRESS, start_time=repr(time.time())):
            return self._interrupted()
        end = self._converse(first_status=RINGING)
        return self._finish(COMPLETED, reason=end.reason)

    def abandon(self, previous_status: str) -> CallResult:
        """End a call a previous job left unfinished (its worker died): completed if it was answered."""
        self.status = previous_status
        if self.store is not None:
            data = self.store.get(self.call.sid) or {}
            self.sequence = int(data.get("callbacks") or 0)
        final = COMPLETED if previous_status == IN_PROGRESS else FAILED
        log.warning("event=call_abandoned sid=%s previous=%s status=%s", self.call.sid, previous_status, final)
        try:
            return self._finish(final, reason="abandoned")
        finally:
            if self._owns_http:
                self.http.close()

    def _interrupted(self) -> CallResult:
        """The call changed under us: cancelled (say so with the final callback), or run by another job."""
        current = self.store.status(self.call.sid) if self.store is not None else None
        if current == CANCELED:
            return self._finish(CANCELED, reason="canceled")
        log.warning("event=call_taken_elsewhere sid=%s status=%s", self.call.sid, current)
        return CallResult(sid=self.call.sid, status=current or self.status, end_reason="duplicate run")

    def _advance(self, allowed: tuple[str, ...], status: str, **fields: Any) -> bool:
        """Move the call on, unless it was cancelled meanwhile (only queued or ringing calls can be)."""
        if self.store is not None and not self.store.transition(self.call.sid, allowed, status, **fields):
            return False
        self.status = status
        return True

    def _finish(self, status: str, *, reason: str | None = None) -> CallResult:
        duration = max(1, round(self.clock)) if status == COMPLETED else 0
        self.status = status
        ended = time.time()
        if self.store is not None:
            fields: dict[str, Any] = {"status": status, "duration": duration, "end_time": repr(ended)}
            if self.answered_by:
                fields["answered_by"] = self.answered_by
            if status != CANCELED and reason != "abandoned":
                fields["outcome"] = self.resident.outcome
            if reason:
                fields["end_reason"] = reason
            self.store.update(self.call.sid, **fields)
        self._status_callback("completed", status, duration=duration)
        log.info(
            "event=call_ended sid=%s attempt=%s to=%s status=%s duration=%s requests=%s reason=%s",
            self.call.sid,
            self.call.attempt_id,
            masked(self.call.to),
            status,
            duration,
            self.requests,
            reason or status,
        )
        return CallResult(
            sid=self.call.sid,
            status=status,
            duration=duration,
            answered_by=self.answered_by,
            end_reason=reason,
            requests=self.requests,
            transcript=list(self.transcript),
            direction=self.call.direction,
        )

    def _wait(self, seconds: float) -> None:
        if self.speed > 0 and seconds > 0:
            time.sleep(seconds / self.speed)

    def _record(self, entry: dict[str, Any]) -> None:
        self.transcript.append(entry)
        if self.store is not None:
            self.store.append(self.call.sid, entry)

    # ---------------------------------------------------------------------------------------------- HTTP

    def _base_params(self, call_status: str) -> dict[str, str]:
        return {
            "CallSid": self.call.sid,
            "AccountSid": self.account_sid,
            "From": self.call.from_,
            "To": self.call.to,
            "CallStatus": call_status,
            "Direction": self.call.direction,
            "ApiVersion": API_VERSION,
        }

    def _send(self, method: str, url: str, params: Mapping[str, str]) -> requests.Response:
        """One signed request, as Twilio sends it: POST form fields, or GET with them in the query."""
        if method == "GET":
            if params:
                url = f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(params)}"
            headers = {"X-Twilio-Signature": self.validator.compute_signature(url, {})}
            return self.http.get(url, headers=headers, timeout=HTTP_TIMEOUT, allow_redirects=False)
        headers = {"X-Twilio-Signature": self.validator.compute_signature(url, dict(params))}
        return self.http.post(url, data=dict(params), headers=headers, timeout=HTTP_TIMEOUT, allow_redirects=False)

    def _status_callback(self, event: str, call_status: str, *, duration: int | None = None) -> None:
        if not self.call.status_callback:
            return
        params = self._base_params(call_status)
        params["Timestamp"] = _rfc2822(time.time())
        if not self.call.inbound:
            # A number's status callback (inbound calls) is a plain "completed", not a call-progress event.
            params.update({"SequenceNumber": str(self.sequence), "CallbackSource": "call-progress-events"})
        if self.answered_by and call_status in (IN_PROGRESS, COMPLETED):
            params["AnsweredBy"] = self.answered_by
        if event == "completed":
            params["CallDuration"] = str(duration or 0)
        self.sequence += 1
        if self.store is not None:
            self.store.update(self.call.sid, callbacks=self.sequence)
        try:
            reply = self._send("POST", self.call.status_callback, params)
            http_status: int | str = reply.status_code
        except requests.RequestException as exc:
            http_status = type(exc).__name__
        entry: dict[str, Any] = {"callback": event, "status": call_status, "http": http_status}
        self._record(entry)
        if not isinstance(http_status, int) or not 200 <= http_status < 300:
            # Twilio only notes a failed status callback in its debugger; the call goes on.
            log.warning(
                "event=status_callback_failed sid=%s callback=%s http=%s", self.call.sid, event, http_status
            )

    def _fetch_twiml(self, request: _Request) -> ET.Element | None:
        """Request a TwiML document; None (recorded as an application error) if the reply is not usable."""
        method, url, params = request.method, request.url, request.params
        try:
            for _ in range(MAX_HTTP_REDIRECTS + 1):
                reply = self._send(method, url, params)
                if reply.is_redirect and reply.headers.get("Location"):
                    # Twilio follows a 3xx with a GET, and the form fields are lost.
                    method, url, params = "GET", urljoin(url, reply.headers["Location"]), {}
                    continue
                break
            else:
                return self._application_error(request.url, "too many HTTP redirects")
        except requests.RequestException as exc:
            return self._application_error(request.url, f"{type(exc).__name__}: {exc}")
        if not 200 <= reply.status_code < 300:
            return self._application_error(request.url, f"HTTP {reply.status_code}", http=reply.status_code)
        try:
            root = ET.fromstring(reply.content)
        except ET.ParseError as exc:
            return self._application_error(request.url, f"not TwiML: {exc}", http=reply.status_code)
        if root.tag != "Response":
            return self._application_error(request.url, f"not TwiML: root element <{root.tag}>", http=reply.status_code)
        return root

    def _application_error(self, url: str, detail: str, http: int | None = None) -> None:
        entry: dict[str, Any] = {"error": "application", "url": url, "detail": detail}
        if http is not None:
            entry["http"] = http
        self._record(entry)
        log.warning("event=application_error sid=%s url=%s detail=%s", self.call.sid, url, detail)
        return None

    # -------------------------------------------------------------------------------------- conversation

    def _converse(self, first_status: str = IN_PROGRESS) -> _End:
        params = self._base_params(first_status)
        if self.answered_by:
            params["AnsweredBy"] = self.answered_by  # only on the first request, as Twilio does
        next_step: _Request | _End = _Request(self.call.url, "POST", params)
        while isinstance(next_step, _Request):
            if self.requests >= MAX_REQUESTS:
                log.warning("event=loop_guard sid=%s requests=%s", self.call.sid, self.requests)
                self._record({"hangup": "loop", "requests": self.requests})
                return _End("loop")
            self.requests += 1
            document = self._fetch_twiml(next_step)
            if document is None:
                self._record({"hangup": "error"})
                return _End("error")
            next_step = self._execute(document, next_step.url)
        return next_step

    def _execute(self, document: ET.Element, url: str) -> _Request | _End:
        """Run the verbs of one document; the next request, or the end of the call."""
        for verb in document:
            tag = verb.tag
            if tag in ("Say", "Play", "Pause"):
                self._prompt(verb)
            elif tag == "Gather":
                result = self._gather(verb, url)
                if result is not None:
                    return result
            elif tag == "Redirect":
                target = (verb.text or "").strip()
                if not target:
                    self._application_error(url, "<Redirect> without a URL")
                    self._record({"hangup": "error"})
                    return _End("error")
                absolute = urljoin(url, target)
                self._record({"redirect": absolute})
                return _Request(absolute, (verb.get("method") or "POST").upper(), self._base_params(IN_PROGRESS))
            elif tag == "Hangup":
                self._record({"hangup": "twiml"})
                return _End("twiml")
            elif tag == "Reject":
                self._record({"hangup": "reject", "reason": verb.get("reason") or "rejected"})
                return _End("reject")
            else:
                self._record({"unsupported": tag})
                log.warning("event=unsupported_verb sid=%s verb=%s", self.call.sid, tag)
        self._record({"hangup": "end"})
        return _End("end")

    def _prompt(self, verb: ET.Element) -> None:
        """Say, Play or Pause: nobody listens, but the transcript and the clock record them."""
        loops = _int(verb.get("loop"), 1) or 1
        if verb.tag == "Say":
            text = "".join(verb.itertext()).strip()
            self._record({"say": text})
            seconds = loops * max(1.0, len(text) / TTS_CHARS_PER_SECOND)
        elif verb.tag == "Play":
            self._record({"play": (verb.text or "").strip()})
            seconds = loops * PLAY_SECONDS
        else:
            seconds = float(_int(verb.get("length"), 1))
        self.clock += seconds
        self._wait(seconds)

    def _gather(self, gather: ET.Element, url: str) -> _Request | _End | None:
        """Play the nested prompts, let the resident respond; None means "go on to the next verb"."""
        for child in gather:
            if child.tag in ("Say", "Play", "Pause"):
                self._prompt(child)
        action = urljoin(url, gather.get("action") or url)
        method = (gather.get("method") or "POST").upper()
        timeout = _int(gather.get("timeout"), GATHER_TIMEOUT)
        num_digits = _int(gather.get("numDigits"), 0)
        finish_on_key = gather.get("finishOnKey", "#")
        on_empty = (gather.get("actionOnEmptyResult") or "false").lower() == "true"

        query = parse_qs(urlsplit(action).query)
        step = query.get("step", [""])[0]
        try_number = _int(query.get("try", [""])[0], 0) or None
        if self.resident.outcome == ANSWER or self.call.inbound:
            press = self.resident.respond(step, try_number)
            meant = self.resident.meant(step)
        else:
            press, meant = SILENCE, None  # an answering machine or a fax never presses a key

        entry: dict[str, Any] = {"step": step, "try": try_number}
        if "n" in query:  # the IVR's own sequence number of the question, where it sends one
            entry["n"] = _int(query["n"][0], 0)
        if press.hangup:
            self._record({"hangup": "resident", **entry})
            return _End("resident")
        digits, finished_on = _collect(press, num_digits, finish_on_key)
        if meant is not None:
            entry["meant"] = meant
        if not digits and not finished_on:
            self._record({**entry, "silence": True})
            self.clock += timeout
            self._wait(timeout)
            if not on_empty:
                return None
        else:
            self._record({**entry, "digits": digits, **({"finished_on_key": finished_on} if finished_on else {})})
            self.clock += SECONDS_TO_PRESS
            self._wait(SECONDS_TO_PRESS)
        params = self._base_params(IN_PROGRESS)
        params.update({"Digits": digits, "FinishedOnKey": finished_on})
        return _Request(action, method, params)


def _collect(press: Press, num_digits: int, finish_on_key: str) -> tuple[str, str]:
    """The ``Digits`` a Gather collects from the keys pressed, and the finishing key if one ended it."""
    digits = ""
    for key in press.keys:
        if finish_on_key and key == finish_on_key:
            return digits, key
        digits += key
        if num_digits and len(digits) >= num_digits:
            break
    return digits, ""


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default
