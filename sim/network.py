"""The simulated phone network: a telephony provider that behaves as Twilio does, without a Twilio account.

``SimulatorProvider.place_call`` stores the call in Redis as ``queued`` and enqueues :func:`run_call` on the
simulator queue. The job plays Twilio's part for that one call (shared/TWILIO.md):

* status callbacks ``initiated``, ``ringing``, ``answered`` (``CallStatus=in-progress``) and ``completed``
  (``CallStatus`` = the real outcome, with ``CallDuration``), numbered by ``SequenceNumber``; busy, no-answer
  and failed calls never fetch the voice URL;
* for answered calls, the TwiML conversation: the voice webhook, then every ``<Gather>`` action and
  ``<Redirect>``, with Twilio's form fields and an ``X-Twilio-Signature`` on every request;
* a transcript in Redis (``sanlv:sim:transcript:{sid}``) of what was said and what the resident pressed and
  meant, so a test can compare it with what the IVR stored.

Who answers and what they press is up to :mod:`sim.residents`.

Residents also call our number: :meth:`SimulatorProvider.call_in` places an inbound call (``Direction=inbound``,
``From`` = the resident, ``To`` = our number) to the number's voice URL (``/ivr/inbound``), as Twilio does when
someone dials the number; its only status callback is ``completed``, sent to the number's status URL. A
scripted resident with ``call_back`` who hangs up mid-survey calls back by itself (see ``set_script``).

Simulation options come from the environment: ``SANLV_SIM_SEED`` (default 0: the same seed replays the same
round) and ``SANLV_SIM_SPEED`` (unset or 0: no waiting at all; 1: real time; 10: ten times faster).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import redis
import requests
from twilio.request_validator import RequestValidator

from campaigns.runtime import get_runtime
from campaigns.settings import Settings
from sim.residents import (
    ANSWER,
    BLOCKED,
    BUSY,
    CREATE_ERRORS,
    FAILED,
    FAX,
    INVALID,
    MACHINE,
    NO_ANSWER,
    SILENCE,
    Press,
    Resident,
    resident_for_call,
    take_script,
)
from workers.queues import SIMULATOR_QUEUE, enqueue, redis_connection
from workers.telephony.base import (
    AmbiguousCreateError,
    CallInfo,
    CallRequest,
    PermanentNumberError,
    RateLimitedError,
    TelephonyError,
)

log = logging.getLogger("sanlv.simulator")

CALL_KEY = "sanlv:sim:call:{sid}"  # hash: the call as the network knows it
CALLS_BY_NUMBER_KEY = "sanlv:sim:calls:{to}"  # sorted set of sids, scored by creation time (epoch seconds)
CALLS_FROM_KEY = "sanlv:sim:calls-from:{caller}"  # inbound calls made by a resident, scored likewise
TRANSCRIPT_KEY = "sanlv:sim:transcript:{sid}"  # list of JSON entries
CALL_TTL = 7 * 86400
TRANSCRIPT_TTL = 86400

SIMULATOR_ACCOUNT_SID = "AC" + "5a" * 16
API_VERSION = "2010-04-01"
HTTP_TIMEOUT = 15.0  # Twilio gives a webhook 15 s before it is an application error
MAX_REQUESTS = 200  # webhook requests per call before the network gives up on a looping document
MAX_HTTP_REDIRECTS = 5
JOB_TIMEOUT = 3600  # a slowed-down simulation can take as long as a real call

# Twilio's call statuses, as the network reports them.
QUEUED = "queued"  # accepted, not dialled yet
INITIATED = "initiated"  # dialling
RINGING = "ringing"  # the phone rings
IN_PROGRESS = "in-progress"  # answered
COMPLETED = "completed"  # final: answered and ended
CANCELED = "canceled"  # final: cancelled while queued or ringing
CANCELABLE_STATUSES = (QUEUED, INITIATED, RINGING)
FINAL_STATUSES = (COMPLETED, BUSY, NO_ANSWER, FAILED, CANCELED)

# Simulated seconds, for CallDuration and (with SANLV_SIM_SPEED) for real waiting.
SECONDS_TO_ANSWER = 6.0
TTS_CHARS_PER_SECOND = 4.0  # Mandarin TTS speaks about four characters a second
PLAY_SECONDS = 5.0
SECONDS_TO_PRESS = 2.0
GATHER_TIMEOUT = 5  # Twilio's default
ANSWERED_BY = {ANSWER: "human", MACHINE: "machine_start", FAX: "fax"}

# Call directions, as Twilio names them in the Direction parameter.
OUTBOUND = "outbound-api"  # we placed the call through the REST API
INBOUND = "inbound"  # someone dialled our number
SIMULATED_NUMBER = "+8610000000"  # our number when TWILIO_FROM_NUMBER is not set (as place_call assumes)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _masked(phone: str) -> str:
    from campaigns.phones import mask

    try:
        return mask(phone)
    except Exception:  # a malformed number must not break a log line
        return "***"


def _now() -> float:
    return time.time()


def _rfc2822(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC))


@dataclass(frozen=True)
class SimulationOptions:
    """``seed`` makes rounds reproducible; ``speed`` > 0 waits realistically (1 = real time)."""

    seed: str = "0"
    speed: float = 0.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SimulationOptions:
        """Read ``SANLV_SIM_SEED`` and ``SANLV_SIM_SPEED``.

        Raises:
            ValueError: naming the variable that is malformed.
        """
        env = os.environ if environ is None else environ
        seed = (env.get("SANLV_SIM_SEED") or "0").strip() or "0"
        raw_speed = (env.get("SANLV_SIM_SPEED") or "0").strip() or "0"
        try:
            speed = float(raw_speed)
        except ValueError:
            raise ValueError(f"SANLV_SIM_SPEED={raw_speed!r} is not a number") from None
        if speed < 0 or math.isinf(speed) or math.isnan(speed):
            raise ValueError(f"SANLV_SIM_SPEED={raw_speed!r} must be 0 (no waiting) or a positive number")
        return cls(seed=seed, speed=speed)


@dataclass(frozen=True)
class SimCall:
    """A call as the simulated network knows it."""

    sid: str
    to: str
    from_: str
    url: str
    status_callback: str
    machine_detection: bool = False
    attempt_id: str = ""
    timeout: int = 30
    created: float = 0.0
    direction: str = OUTBOUND

    @property
    def inbound(self) -> bool:
        return self.direction == INBOUND

    @property
    def resident_phone(self) -> str:
        """The resident's number: who we called, or who called us."""
        return self.from_ if self.inbound else self.to

    @property
    def our_number(self) -> str:
        return self.to if self.inbound else self.from_

    @classmethod
    def from_request(cls, request: CallRequest, sid: str | None = None, created: float | None = None) -> SimCall:
        return cls(
            sid=sid or new_sid(),
            to=request.to,
            from_=request.from_,
            url=request.url,
            status_callback=request.status_callback,
            machine_detection=request.machine_detection,
            attempt_id=str(request.attempt_id),
            timeout=request.timeout,
            created=_now() if created is None else created,
        )

    @classmethod
    def from_hash(cls, sid: str, data: Mapping[str, str]) -> SimCall:
        return cls(
            sid=sid,
            to=data.get("to", ""),
            from_=data.get("from", ""),
            url=data.get("url", ""),
            status_callback=data.get("status_callback", ""),
            machine_detection=data.get("machine_detection") == "1",
            attempt_id=data.get("attempt_id", ""),
            timeout=int(data.get("timeout") or 30),
            created=float(data.get("created") or 0),
            direction=data.get("direction") or OUTBOUND,
        )

    def to_hash(self) -> dict[str, str]:
        return {
            "to": self.to,
            "from": self.from_,
            "url": self.url,
            "status_callback": self.status_callback,
            "machine_detection": "1" if self.machine_detection else "0",
            "attempt_id": self.attempt_id,
            "timeout": str(self.timeout),
            "created": repr(self.created),
            "status": QUEUED,
            "direction": self.direction,
        }


def new_sid() -> str:
    """A call sid shaped like Twilio's: ``CA`` + 32 hex digits."""
    return "CA" + uuid.uuid4().hex


class CallStore:
    """The simulated network's memory, in Redis: calls, their index by number, and transcripts."""

    def __init__(self, connection: redis.Redis):
        self.connection = connection

    def create(self, call: SimCall) -> None:
        key = CALL_KEY.format(sid=call.sid)
        index = CALLS_BY_NUMBER_KEY.format(to=call.to)
        pipe = self.connection.pipeline()
        pipe.hset(key, mapping=call.to_hash())
        pipe.expire(key, CALL_TTL)
        pipe.zadd(index, {call.sid: call.created})
        pipe.zremrangebyscore(index, "-inf", call.created - CALL_TTL)
        pipe.expire(index, CALL_TTL)
        if call.inbound:
            by_caller = CALLS_FROM_KEY.format(caller=call.from_)
            pipe.zadd(by_caller, {call.sid: call.created})
            pipe.expire(by_caller, CALL_TTL)
        pipe.execute()

    def get(self, sid: str) -> dict[str, str] | None:
        raw = self.connection.hgetall(CALL_KEY.format(sid=sid))
        if not raw:
            return None
        return {_text(k): _text(v) for k, v in raw.items()}

    def update(self, sid: str, **fields: Any) -> None:
        self.connection.hset(CALL_KEY.format(sid=sid), mapping={k: str(v) for k, v in fields.items()})

    def transition(self, sid: str, allowed: tuple[str, ...], status: str, **fields: Any) -> bool:
        """Set ``status`` (and ``fields``) only if the call's status is one of ``allowed``; True if it was."""
        key = CALL_KEY.format(sid=sid)
        done = False

        def apply(pipe: Any) -> None:
            nonlocal done
            current = pipe.hget(key, "status")
            if current is None or _text(current) not in allowed:
                done = False
                return
            pipe.multi()
            pipe.hset(key, mapping={"status": status, **{k: str(v) for k, v in fields.items()}})
            done = True

        self.connection.transaction(apply, key)
        return done

    def status(self, sid: str) -> str | None:
        raw = self.connection.hget(CALL_KEY.format(sid=sid), "status")
        return None if raw is None else _text(raw)

    def sids_for(self, to: str, since: float) -> list[str]:
        return [_text(s) for s in self.connection.zrangebyscore(CALLS_BY_NUMBER_KEY.format(to=to), since, "+inf")]

    def sids_from(self, caller: str, since: float) -> list[str]:
        return [_text(s) for s in self.connection.zrangebyscore(CALLS_FROM_KEY.format(caller=caller), since, "+inf")]

    def append(self, sid: str, entry: Mapping[str, Any]) -> None:
        key = TRANSCRIPT_KEY.format(sid=sid)
        pipe = self.connection.pipeline()
        pipe.rpush(key, json.dumps(entry, ensure_ascii=False))
        pipe.expire(key, TRANSCRIPT_TTL)
        pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_transcript(connection: redis.Redis, sid: str) -> list[dict[str, Any]]:
    """The transcript of call ``sid``, oldest entry first (empty when unknown or expired)."""
    return [json.loads(item) for item in connection.lrange(TRANSCRIPT_KEY.format(sid=sid), 0, -1)]


def answers_from_transcript(
    entries: list[dict[str, Any]], options: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """What the resident answered, step by step: the last keys pressed at each step.

    ``*`` (repeat), ``9`` (stop), silence and read-back confirmations (``<step>.confirm``) are not answers;
    a key pressed again after re-choosing replaces the earlier one. With ``options`` (step -> valid keys),
    keys that are not valid for the step are skipped too, as the IVR skips them.
    """
    answers: dict[str, str] = {}
    for entry in entries:
        step, digits = entry.get("step"), entry.get("digits")
        if not step or not digits or digits in ("*", "9") or step.endswith(".confirm"):
            continue
        if options is not None and step in options and digits not in options[step]:
            continue
        answers[step] = digits
    return answers


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
        settings: for the signing token (``settings.webhook_token``) and the account sid.
        call: the call to run.
        resident: who is at the other end.
        http_session: the HTTP session for every request of this call (a new one if not given).
        store: where the call's status and transcript live; None keeps everything in memory (tests).
        speed: 0 runs without waiting; otherwise simulated seconds are slept, divided by ``speed``.
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
    ):
        self.settings = settings
        self.call = call
        self.resident = resident
        self._owns_http = http_session is None
        self.http = http_session if http_session is not None else requests.Session()
        self.store = store
        self.speed = speed
        # Signed as Twilio signs, with the token the IVR validates with (the auth token, or a fixed one).
        self.validator = RequestValidator(settings.webhook_token)
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
        if not self._advance((RINGING,), IN_PROGRESS, start_time=repr(_now())):
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
        if not self._advance((QUEUED,), IN_PROGRESS, start_time=repr(_now())):
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
        ended = _now()
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
            _masked(self.call.to),
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
        params["Timestamp"] = _rfc2822(_now())
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
                    # Twilio follows a 3xx with a GET and the form fields are lost (TWILIO.md).
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


# ------------------------------------------------------------------------------------------------- provider


class SimulatorProvider:
    """The simulated phone network as a :class:`~workers.telephony.base.TelephonyProvider`.

    Args:
        settings: the application settings (Redis URL for the simulator queue, signing token).
        connection: a Redis client for the same Redis as ``settings.redis_url`` (default: the shared one).
    """

    name = "simulator"

    def __init__(self, settings: Settings, connection: redis.Redis | None = None):
        self.settings = settings
        self.connection = connection if connection is not None else redis_connection(settings)
        self.store = CallStore(self.connection)

    def place_call(self, request: CallRequest) -> CallInfo:
        """Accept the call as ``queued`` and hand it to a simulator worker.

        Raises:
            PermanentNumberError: ``to`` is not an E.164 number (21211), or a script says invalid / blocked.
            RateLimitedError: a script says rate-limited (20429); nothing was created.
            TelephonyError: no voice URL (21205).
            AmbiguousCreateError: Redis failed; the call may or may not exist.
        """
        if not E164.match(request.to or ""):
            raise _invalid_number(request.to)
        if not request.url:
            raise TelephonyError("Url is not a valid URL", code=21205, status=400)
        try:
            scripted_error = take_script(self.connection, request.to, only_outcomes=CREATE_ERRORS)
        except redis.RedisError as exc:
            raise AmbiguousCreateError(f"simulator: Redis unavailable: {exc}", status=503) from exc
        if scripted_error is not None:
            outcome = scripted_error["outcome"]
            log.info(
                "event=create_refused attempt=%s to=%s outcome=%s", request.attempt_id, _masked(request.to), outcome
            )
            if outcome == INVALID:
                raise _invalid_number(request.to)
            if outcome == BLOCKED:
                raise PermanentNumberError(f"Call blocked to {_masked(request.to)}", code=21216, status=400)
            raise RateLimitedError("Too Many Requests", code=20429, status=429)

        call = SimCall.from_request(request)
        try:
            self.store.create(call)
        except redis.RedisError as exc:
            raise AmbiguousCreateError(f"simulator: Redis unavailable: {exc}", status=503) from exc
        try:
            enqueue(
                self.settings,
                "sim.network.run_call",
                call.sid,
                job_id=f"sim-{call.sid}",
                queue_name=SIMULATOR_QUEUE,
                timeout=JOB_TIMEOUT,
            )
        except redis.RedisError as exc:
            try:
                self.store.update(call.sid, status=FAILED, end_reason="not enqueued")
            except redis.RedisError:
                pass
            raise AmbiguousCreateError(f"simulator: could not queue the call: {exc}", status=503) from exc
        log.info("event=call_placed sid=%s attempt=%s to=%s", call.sid, request.attempt_id, _masked(request.to))
        return CallInfo(sid=call.sid, status=QUEUED, to=call.to, date_created=datetime.fromtimestamp(call.created, UTC))

    def fetch_call(self, sid: str) -> CallInfo:
        """The call as the network knows it.

        Raises:
            TelephonyError: no such call (20404).
        """
        data = self.store.get(sid)
        if data is None:
            raise TelephonyError(f"The requested resource /Calls/{sid}.json was not found", code=20404, status=404)
        return _call_info(sid, data)

    def find_calls(self, to: str, since: datetime) -> list[CallInfo]:
        """Calls to ``to`` created at or after ``since``, oldest first."""
        infos = []
        for sid in self.store.sids_for(to, since.timestamp()):
            data = self.store.get(sid)
            if data is not None:
                infos.append(_call_info(sid, data))
        return infos

    def call_in(
        self,
        phone: str,
        inbound_url: str,
        *,
        to: str | None = None,
        status_callback: str | None = None,
        delay: float = 0.0,
    ) -> CallInfo:
        """The resident at ``phone`` dials our number: an inbound call to the number's voice URL.

        Args:
            phone: the caller, E.164 (Twilio's ``From``).
            inbound_url: the voice URL configured on our number (``{PUBLIC_BASE_URL}/ivr/inbound``).
            to: our number (``To``); default TWILIO_FROM_NUMBER.
            status_callback: the number's status callback URL; default ``/ivr/status`` on the same host;
                "" for none.
            delay: real seconds before the network places the call (RQ's scheduler runs it).

        Raises:
            ValueError: ``phone`` is not E.164.
            TelephonyError: Redis failed; no call was made.
        """
        if not E164.match(phone or ""):
            raise ValueError(f"the caller {phone!r} is not an E.164 number")
        call = SimCall(
            sid=new_sid(),
            to=to or self.settings.twilio_from_number or SIMULATED_NUMBER,
            from_=phone,
            url=inbound_url,
            status_callback=urljoin(inbound_url, "/ivr/status") if status_callback is None else status_callback,
            direction=INBOUND,
            created=_now(),
        )
        try:
            self.store.create(call)
            enqueue(
                self.settings,
                "sim.network.run_call",
                call.sid,
                job_id=f"sim-{call.sid}",
                queue_name=SIMULATOR_QUEUE,
                timeout=JOB_TIMEOUT,
                delay=timedelta(seconds=delay) if delay > 0 else None,
            )
        except redis.RedisError as exc:
            raise TelephonyError(f"simulator: Redis unavailable: {exc}", status=503) from exc
        log.info("event=inbound_call sid=%s from=%s", call.sid, _masked(phone))
        return CallInfo(sid=call.sid, status=QUEUED, to=call.to, date_created=datetime.fromtimestamp(call.created, UTC))

    def find_calls_from(self, phone: str, since: datetime) -> list[CallInfo]:
        """Inbound calls the resident at ``phone`` made to us at or after ``since``, oldest first."""
        infos = []
        for sid in self.store.sids_from(phone, since.timestamp()):
            data = self.store.get(sid)
            if data is not None:
                infos.append(_call_info(sid, data))
        return infos

    def household_calls(self, phone: str, since: datetime) -> list[CallInfo]:
        """Every call between us and ``phone`` since ``since`` (ours and theirs), oldest first."""
        calls = self.find_calls(phone, since) + self.find_calls_from(phone, since)
        return sorted(calls, key=lambda c: c.date_created or datetime.min.replace(tzinfo=UTC))

    def cancel_call(self, sid: str) -> None:
        """Cancel a queued or ringing call; a call in progress or finished is left alone (as Twilio does).

        Raises:
            TelephonyError: no such call (20404).
        """
        if self.store.get(sid) is None:
            raise TelephonyError(f"The requested resource /Calls/{sid}.json was not found", code=20404, status=404)
        if self.store.transition(sid, CANCELABLE_STATUSES, CANCELED, end_time=repr(_now())):
            log.info("event=call_canceled sid=%s", sid)


def _invalid_number(to: str) -> PermanentNumberError:
    return PermanentNumberError(f"The 'To' number {_masked(to)} is not a valid phone number.", code=21211, status=400)


def _call_info(sid: str, data: Mapping[str, str]) -> CallInfo:
    start = data.get("start_time")
    created = data.get("created")
    duration = data.get("duration")
    extra = {
        key: data[key]
        for key in ("attempt_id", "answered_by", "outcome", "end_reason", "from", "url", "direction", "call_back_sid")
        if data.get(key)
    }
    return CallInfo(
        sid=sid,
        status=data.get("status", QUEUED),
        to=data.get("to", ""),
        duration=int(duration) if duration not in (None, "") else None,
        start_time=datetime.fromtimestamp(float(start), UTC) if start else None,
        date_created=datetime.fromtimestamp(float(created), UTC) if created else None,
        extra=extra,
    )


# ------------------------------------------------------------------------------------------------------ job


def run_call(sid: str) -> str:
    """RQ job: play the network's part for call ``sid`` from dialling to the final status callback.

    Safe to run twice: a finished call is left alone; a call a dead worker left half-way is ended.
    Returns the call's final status.
    """
    runtime = get_runtime()
    settings = runtime.settings
    connection = redis_connection(settings)
    store = CallStore(connection)
    data = store.get(sid)
    if data is None:
        log.warning("event=unknown_call sid=%s", sid)
        return "unknown"
    status = data.get("status", QUEUED)
    if status in FINAL_STATUSES and (status != CANCELED or data.get("callbacks")):
        log.info("event=call_already_final sid=%s status=%s", sid, status)
        return status
    options = SimulationOptions.from_environ()
    call = SimCall.from_hash(sid, data)
    if status == QUEUED:
        resident = resident_for_call(
            connection, call.resident_phone, call.attempt_id or sid, sessions=runtime.sessions, seed=options.seed
        )
    else:
        resident = Resident()  # cancelled or abandoned: nobody will pick up
    with requests.Session() as http:
        simulated = SimulatedCall(settings, call, resident, http, store=store, speed=options.speed)
        if status in (INITIATED, RINGING, IN_PROGRESS):
            result = simulated.abandon(status)
        else:
            result = simulated.run()
    if result.end_reason == "resident" and resident.call_back_after is not None:
        _call_back(settings, connection, simulated, resident.call_back_after, options.speed)
    return result.status


def _call_back(
    settings: Settings, connection: redis.Redis, simulated: SimulatedCall, after: float, speed: float
) -> None:
    """The resident who just hung up mid-survey dials our number (after ``after`` simulated seconds).

    Our number's webhooks are on the host that served the call just ended (PUBLIC_BASE_URL in production).
    """
    call = simulated.call
    parts = urlsplit(call.url)
    base = f"{parts.scheme}://{parts.netloc}"
    delay = after / speed if speed > 0 else 0.0
    provider = SimulatorProvider(settings, connection)
    info = provider.call_in(
        call.resident_phone, f"{base}/ivr/inbound", to=call.our_number, status_callback=f"{base}/ivr/status",
        delay=delay,
    )
    simulated.called_back(info.sid)
