"""The simulated phone network's text messages: what Twilio's Messages API does for a notice.

``SimulatorProvider.send_message`` stores the message in Redis as ``queued`` and enqueues
:func:`deliver_message` on the simulator queue, which plays the carrier: status callbacks ``sent`` then
``delivered`` (or ``undelivered`` for a share of numbers), signed as Twilio signs them, to the message's
``StatusCallback``. A share of the residents then reply ``TD``: an inbound SMS, signed, to our number's SMS URL
(``{PUBLIC_BASE_URL}/ivr/sms/inbound``), as Twilio posts it.

Options from the environment: ``SANLV_SIM_UNDELIVERED`` (share of texts not delivered, default 0.03) and
``SANLV_SIM_TD_RATE`` (share of residents who reply TD, default 0.01). Each draw is seeded by
(``SANLV_SIM_SEED``, phone): the same seed replays the same notice.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from twilio.request_validator import RequestValidator

from campaigns.runtime import get_runtime
from campaigns.settings import Settings
from sim.store import sim_key
from workers.queues import redis_connection
from workers.telephony.base import MessageInfo

log = logging.getLogger("sanlv.simulator")

MESSAGE_TTL = 14 * 86400
HTTP_TIMEOUT = 15


@dataclass(frozen=True)
class MessageOptions:
    undelivered: float = 0.03
    td_rate: float = 0.01

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> MessageOptions:
        """Read ``SANLV_SIM_UNDELIVERED`` and ``SANLV_SIM_TD_RATE``.

        Raises:
            ValueError: naming the variable that is not a share from 0 to 1.
        """
        env = os.environ if environ is None else environ
        values = {}
        for name, key in (("SANLV_SIM_UNDELIVERED", "undelivered"), ("SANLV_SIM_TD_RATE", "td_rate")):
            raw = (env.get(name) or "").strip()
            if not raw:
                continue
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number") from None
            if not 0 <= value <= 1:
                raise ValueError(f"{name}={raw!r} must be a share from 0 to 1")
            values[key] = value
        return cls(**values)


def message_key(settings: Settings, sid: str) -> str:
    return sim_key(settings, "msg", sid)


class MessageStore:
    """Simulated messages in Redis, in the deployment's namespace, indexed by recipient."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.connection = redis_connection(settings)

    def create(self, to: str, from_: str, body: str, status_callback: str) -> MessageInfo:
        sid = "SM" + uuid.uuid4().hex
        created = time.time()
        key = message_key(self.settings, sid)
        index = sim_key(self.settings, "msgs", to)
        pipe = self.connection.pipeline()
        pipe.hset(key, mapping={"to": to, "from": from_, "body": body, "status": "queued", "created": repr(created),
                                "status_callback": status_callback})  # fmt: skip
        pipe.expire(key, MESSAGE_TTL)
        pipe.zadd(index, {sid: created})
        pipe.expire(index, MESSAGE_TTL)
        pipe.execute()
        return self.info(sid)  # type: ignore[return-value]

    def info(self, sid: str) -> MessageInfo | None:
        raw = self.connection.hgetall(message_key(self.settings, sid))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return MessageInfo(
            sid=sid,
            status=data.get("status", "queued"),
            to=data.get("to", ""),
            from_=data.get("from", ""),
            body=data.get("body", ""),
            date_created=datetime.fromtimestamp(float(data["created"]), UTC),
        )

    def set_status(self, sid: str, status: str) -> None:
        self.connection.hset(message_key(self.settings, sid), "status", status)

    def status_callback(self, sid: str) -> str:
        raw = self.connection.hget(message_key(self.settings, sid), "status_callback")
        return raw.decode() if raw else ""

    def sids_for(self, to: str, since: float) -> list[str]:
        return [s.decode() for s in self.connection.zrangebyscore(sim_key(self.settings, "msgs", to), since, "+inf")]


def _post(token: str, http: requests.Session, url: str, params: dict[str, str]) -> int | str:
    signature = RequestValidator(token).compute_signature(url, params)
    try:
        return http.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=HTTP_TIMEOUT).status_code
    except requests.RequestException as exc:
        return type(exc).__name__


def deliver_message(sid: str) -> str:
    """RQ job: the carrier's part for message ``sid``: ``sent``, then ``delivered`` or ``undelivered``, each
    reported to its status callback; then perhaps the resident's TD reply. Returns the final status."""
    runtime = get_runtime()
    settings = runtime.settings
    token = runtime.webhook_token  # the key the IVR checks (campaigns.secrets.webhook_token)
    store = MessageStore(settings)
    info = store.info(sid)
    if info is None:
        return "unknown"
    if info.status in ("delivered", "undelivered", "failed"):
        return info.status
    seed = (os.environ.get("SANLV_SIM_SEED") or "0").strip() or "0"
    options = MessageOptions.from_environ()
    rng = random.Random(f"{seed}:{info.to}:sms")
    final = "undelivered" if rng.random() < options.undelivered else "delivered"
    replies_td = final == "delivered" and rng.random() < options.td_rate
    url = store.status_callback(sid)
    account = settings.twilio_account_sid or "AC" + "0" * 32
    with requests.Session() as http:
        for status in ("sent", final):
            store.set_status(sid, status)
            if url:
                params = {"AccountSid": account, "ApiVersion": "2010-04-01", "From": info.from_, "To": info.to,
                          "MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status}  # fmt: skip
                if status == "undelivered":
                    params["ErrorCode"] = "30003"  # unreachable destination handset
                answered = _post(token, http, url, params)
                if answered != 204:
                    log.warning("event=sms_status_callback_failed sid=%s status=%s http=%s", sid, status, answered)
        if replies_td and settings.public_base_url:
            reply_sid = "SM" + uuid.uuid4().hex
            params = {"AccountSid": account, "ApiVersion": "2010-04-01", "MessageSid": reply_sid,
                      "SmsSid": reply_sid, "From": info.to, "To": info.from_, "Body": "TD", "NumSegments": "1",
                      "NumMedia": "0", "SmsStatus": "received"}  # fmt: skip
            _post(token, http, f"{settings.public_base_url}/ivr/sms/inbound", params)
            log.info("event=sim_td_reply sid=%s", sid)
    return final
