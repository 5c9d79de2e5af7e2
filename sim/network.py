"""The simulated phone network: a telephony provider that behaves as Twilio does, without a Twilio account.

``SimulatorProvider.place_call`` stores the call in Redis as ``queued`` and enqueues :func:`run_call` on the
simulator queue. The job plays Twilio's part for that one call (:class:`sim.call.SimulatedCall`):

* status callbacks ``initiated``, ``ringing``, ``answered`` (``CallStatus=in-progress``) and ``completed``
  (``CallStatus`` = the real outcome, with ``CallDuration``), numbered by ``SequenceNumber``; busy, no-answer
  and failed calls never fetch the voice URL;
* for answered calls, the TwiML conversation: the voice webhook, then every ``<Gather>`` action and
  ``<Redirect>``, with Twilio's form fields and an ``X-Twilio-Signature`` on every request;
* a transcript in Redis (:mod:`sim.store`, in the namespace) of what was said and what the resident pressed and
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

import logging
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin, urlsplit

import redis
import requests

from campaigns.runtime import get_runtime
from campaigns.settings import Settings
from sim.call import SimulatedCall, masked
from sim.messages import MessageStore, deliver_message
from sim.residents import BLOCKED, CREATE_ERRORS, INVALID, Resident, resident_for_call, script_key, take_script
from sim.store import (
    CANCELABLE_STATUSES,
    CANCELED,
    FAILED,
    FINAL_STATUSES,
    IN_PROGRESS,
    INBOUND,
    INITIATED,
    QUEUED,
    RINGING,
    CallStore,
    SimCall,
    new_sid,
)
from workers.queues import SIMULATOR_QUEUE, enqueue
from workers.telephony.base import (
    AmbiguousCreateError,
    CallInfo,
    CallRequest,
    MessageInfo,
    MessageRequest,
    PermanentNumberError,
    RateLimitedError,
    TelephonyError,
)

log = logging.getLogger("sanlv.simulator")

JOB_TIMEOUT = 3600  # a slowed-down simulation can take as long as a real call
SIMULATED_NUMBER = "+8610000000"  # our number when TWILIO_FROM_NUMBER is not set (as place_call assumes)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


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


class SimulatorProvider:
    """The simulated phone network as a :class:`~workers.telephony.base.TelephonyProvider`.

    Args:
        settings: the application settings (Redis URL and namespace for the calls and the simulator queue,
            signing token).
    """

    name = "simulator"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = CallStore(settings)

    def forget_number(self, phone: str, sids: list[str]) -> int:
        """Erase the network's calls of ``phone``, their transcripts and the resident's script."""
        return self.store.forget(phone, sids) + int(self.store.connection.delete(script_key(self.settings, phone)))

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
            scripted_error = take_script(self.settings, request.to, only_outcomes=CREATE_ERRORS)
        except redis.RedisError as exc:
            raise AmbiguousCreateError(f"simulator: Redis unavailable: {exc}", status=503) from exc
        if scripted_error is not None:
            outcome = scripted_error["outcome"]
            log.info(
                "event=create_refused attempt=%s to=%s outcome=%s", request.attempt_id, masked(request.to), outcome
            )
            if outcome == INVALID:
                raise _invalid_number(request.to)
            if outcome == BLOCKED:
                raise PermanentNumberError(f"Call blocked to {masked(request.to)}", code=21216, status=400)
            raise RateLimitedError("Too Many Requests", code=20429, status=429)

        call = SimCall.from_request(request)
        try:
            self.store.create(call)
        except redis.RedisError as exc:
            raise AmbiguousCreateError(f"simulator: Redis unavailable: {exc}", status=503) from exc
        try:
            enqueue(
                self.settings,
                run_call,
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
        log.info("event=call_placed sid=%s attempt=%s to=%s", call.sid, request.attempt_id, masked(request.to))
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
            created=time.time(),
        )
        try:
            self.store.create(call)
            enqueue(
                self.settings,
                run_call,
                call.sid,
                job_id=f"sim-{call.sid}",
                queue_name=SIMULATOR_QUEUE,
                timeout=JOB_TIMEOUT,
                delay=timedelta(seconds=delay) if delay > 0 else None,
            )
        except redis.RedisError as exc:
            raise TelephonyError(f"simulator: Redis unavailable: {exc}", status=503) from exc
        log.info("event=inbound_call sid=%s from=%s", call.sid, masked(phone))
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

    def send_message(self, request: MessageRequest) -> MessageInfo:
        """Accept the SMS as ``queued`` and hand it to a simulator worker (``sim.messages.deliver_message``).

        Raises:
            PermanentNumberError: ``to`` is not an E.164 number (21211).
            AmbiguousCreateError: Redis failed; the message may or may not exist.
        """
        if not E164.match(request.to or ""):
            raise _invalid_number(request.to)
        store = MessageStore(self.settings)
        try:
            info = store.create(request.to, request.from_, request.body, request.status_callback)
            enqueue(self.settings, deliver_message, info.sid, job_id=f"sim-{info.sid}", queue_name=SIMULATOR_QUEUE)
        except redis.RedisError as exc:
            raise AmbiguousCreateError(f"simulator: Redis unavailable: {exc}", status=503) from exc
        log.info("event=message_sent sid=%s target=%s to=%s", info.sid, request.target_id, masked(request.to))
        return info

    def fetch_message(self, sid: str) -> MessageInfo:
        info = MessageStore(self.settings).info(sid)
        if info is None:
            raise TelephonyError(f"The requested resource /Messages/{sid}.json was not found", code=20404, status=404)
        return info

    def find_messages(self, to: str, from_: str, since: datetime) -> list[MessageInfo]:
        store = MessageStore(self.settings)
        infos = [store.info(sid) for sid in store.sids_for(to, since.timestamp())]
        return [i for i in infos if i is not None and (not from_ or i.from_ == from_)]

    def cancel_call(self, sid: str) -> None:
        """Cancel a queued or ringing call; a call in progress or finished is left alone (as Twilio does).

        Raises:
            TelephonyError: no such call (20404).
        """
        if self.store.get(sid) is None:
            raise TelephonyError(f"The requested resource /Calls/{sid}.json was not found", code=20404, status=404)
        if self.store.transition(sid, CANCELABLE_STATUSES, CANCELED, end_time=repr(time.time())):
            log.info("event=call_canceled sid=%s", sid)


def _invalid_number(to: str) -> PermanentNumberError:
    return PermanentNumberError(f"The 'To' number {masked(to)} is not a valid phone number.", code=21211, status=400)


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
    store = CallStore(settings)
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
            settings, call.resident_phone, call.attempt_id or sid, sessions=runtime.sessions, seed=options.seed
        )
    else:
        resident = Resident()  # cancelled or abandoned: nobody will pick up
    with requests.Session() as http:
        simulated = SimulatedCall(
            settings, call, resident, http, store=store, speed=options.speed, token=runtime.webhook_token
        )
        if status in (INITIATED, RINGING, IN_PROGRESS):
            result = simulated.abandon(status)
        else:
            result = simulated.run()
    if result.end_reason == "resident" and resident.call_back_after is not None:
        _call_back(settings, simulated, resident.call_back_after, options.speed)
    return result.status


def _call_back(settings: Settings, simulated: SimulatedCall, after: float, speed: float) -> None:
    """The resident who just hung up mid-survey dials our number (after ``after`` simulated seconds).

    Our number's webhooks are on the host that served the call just ended (PUBLIC_BASE_URL in production).
    """
    call = simulated.call
    parts = urlsplit(call.url)
    base = f"{parts.scheme}://{parts.netloc}"
    delay = after / speed if speed > 0 else 0.0
    provider = SimulatorProvider(settings)
    info = provider.call_in(
        call.resident_phone,
        f"{base}/ivr/inbound",
        to=call.our_number,
        status_callback=f"{base}/ivr/status",
        delay=delay,
    )
    simulated.called_back(info.sid)
