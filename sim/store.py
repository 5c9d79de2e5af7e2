"""The simulated network's memory, in Redis: the calls it knows (by sid, by number called, by caller) and each
call's transcript of what was said, pressed and meant. Every key is namespaced (``SANLV_NAMESPACE``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from campaigns.settings import Settings
from workers.queues import redis_connection, redis_key
from workers.telephony.base import CallRequest

# Keys, under ``{namespace}:sim:``: ``call:{sid}`` (a hash: the call as the network knows it), ``calls:{to}``
# (sids of the calls to a number, scored by creation time in epoch seconds), ``calls-from:{caller}`` (inbound
# calls a resident made, scored likewise), ``transcript:{sid}`` (a list of JSON entries).
CALL_TTL = 7 * 86400
TRANSCRIPT_TTL = 86400

# Twilio's call statuses, as the network reports them. Busy, no-answer and failed are also residents' outcomes.
QUEUED = "queued"  # accepted, not dialled yet
INITIATED = "initiated"  # dialling
RINGING = "ringing"  # the phone rings
IN_PROGRESS = "in-progress"  # answered
COMPLETED = "completed"  # final: answered and ended
BUSY = "busy"  # final: the line was busy
NO_ANSWER = "no-answer"  # final: rang out
FAILED = "failed"  # final: could not be connected
CANCELED = "canceled"  # final: cancelled while queued or ringing
CANCELABLE_STATUSES = (QUEUED, INITIATED, RINGING)
FINAL_STATUSES = (COMPLETED, BUSY, NO_ANSWER, FAILED, CANCELED)

# Call directions, as Twilio names them in the Direction parameter.
OUTBOUND = "outbound-api"  # we placed the call through the REST API
INBOUND = "inbound"  # someone dialled our number


def sim_key(settings: Settings, *parts: object) -> str:
    """A key of the simulated network's, in the deployment's namespace."""
    return redis_key(settings, "sim", *parts)


def call_key(settings: Settings, sid: str) -> str:
    return sim_key(settings, "call", sid)


def transcript_key(settings: Settings, sid: str) -> str:
    return sim_key(settings, "transcript", sid)


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
            created=time.time() if created is None else created,
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
    """The simulated network's memory, in Redis: calls, their index by number, and transcripts.

    Its keys are in the deployment's namespace (``{SANLV_NAMESPACE}:sim:...``): two deployments (or a demo and a
    test run) on one Redis never see each other's calls.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.connection = redis_connection(settings)

    def create(self, call: SimCall) -> None:
        key = call_key(self.settings, call.sid)
        index = sim_key(self.settings, "calls", call.to)
        pipe = self.connection.pipeline()
        pipe.hset(key, mapping=call.to_hash())
        pipe.expire(key, CALL_TTL)
        pipe.zadd(index, {call.sid: call.created})
        pipe.zremrangebyscore(index, "-inf", call.created - CALL_TTL)
        pipe.expire(index, CALL_TTL)
        if call.inbound:
            by_caller = sim_key(self.settings, "calls-from", call.from_)
            pipe.zadd(by_caller, {call.sid: call.created})
            pipe.expire(by_caller, CALL_TTL)
        pipe.execute()

    def get(self, sid: str) -> dict[str, str] | None:
        raw = self.connection.hgetall(call_key(self.settings, sid))
        if not raw:
            return None
        return {_text(k): _text(v) for k, v in raw.items()}

    def update(self, sid: str, **fields: Any) -> None:
        self.connection.hset(call_key(self.settings, sid), mapping={k: str(v) for k, v in fields.items()})

    def transition(self, sid: str, allowed: tuple[str, ...], status: str, **fields: Any) -> bool:
        """Set ``status`` (and ``fields``) only if the call's status is one of ``allowed``; True if it was."""
        key = call_key(self.settings, sid)
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
        raw = self.connection.hget(call_key(self.settings, sid), "status")
        return None if raw is None else _text(raw)

    def sids_for(self, to: str, since: float) -> list[str]:
        key = sim_key(self.settings, "calls", to)
        return [_text(s) for s in self.connection.zrangebyscore(key, since, "+inf")]

    def sids_from(self, caller: str, since: float) -> list[str]:
        key = sim_key(self.settings, "calls-from", caller)
        return [_text(s) for s in self.connection.zrangebyscore(key, since, "+inf")]

    def forget(self, phone: str, sids: list[str]) -> int:
        """Delete every call of ``phone`` (to it, from it, and ``sids``) and their transcripts; returns how many
        keys went."""
        by_to, by_from = sim_key(self.settings, "calls", phone), sim_key(self.settings, "calls-from", phone)
        known = {_text(s) for s in self.connection.zrange(by_to, 0, -1)} | {
            _text(s) for s in self.connection.zrange(by_from, 0, -1)
        }
        keys = [by_to, by_from]
        for sid in known | set(sids):
            keys += [call_key(self.settings, sid), transcript_key(self.settings, sid)]
        return int(self.connection.delete(*keys))

    def append(self, sid: str, entry: Mapping[str, Any]) -> None:
        key = transcript_key(self.settings, sid)
        pipe = self.connection.pipeline()
        pipe.rpush(key, json.dumps(entry, ensure_ascii=False))
        pipe.expire(key, TRANSCRIPT_TTL)
        pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_transcript(settings: Settings, sid: str) -> list[dict[str, Any]]:
    """The transcript of call ``sid``, oldest entry first (empty when unknown or expired)."""
    connection = redis_connection(settings)
    return [json.loads(item) for item in connection.lrange(transcript_key(settings, sid), 0, -1)]


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
