"""What the workers count for Prometheus: calls placed, Twilio errors, calls the sweeper settled.

Workers serve no HTTP. Each event is one ``HINCRBY`` on a Redis hash shared by every worker (the workers need
Redis anyway; a field per label value), and the web app's metrics endpoint exports the hashes as Prometheus
counters (``web.monitoring``). So any number of workers, on any number of hosts or containers, publish
through the one endpoint Prometheus already scrapes, and a worker that restarts loses nothing it counted.
If Redis is lost, the counters start again from zero, which Prometheus reads as a counter reset.

Counting never fails the work it counts: a Redis error is logged and the event goes uncounted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from campaigns.settings import Settings
from workers.queues import redis_connection, redis_key

log = logging.getLogger("sanlv.metrics")


@dataclass(frozen=True)
class WorkerCounter:
    name: str  # the Prometheus name, without _total
    label: str  # the one label, whose values are the hash's fields
    help: str


DIALS = WorkerCounter("sanlv_dials", "round", "Calls created at the telephony provider, by round.")
TWILIO_ERRORS = WorkerCounter(
    "sanlv_twilio_errors", "code", "Requests the telephony provider refused or never answered, by error code."
)
SWEEPER_SETTLED = WorkerCounter(
    "sanlv_sweeper_settled",
    "outcome",
    "Calls whose final status never arrived, settled by the sweeper after asking the provider, by outcome.",
)
COUNTERS = (DIALS, TWILIO_ERRORS, SWEEPER_SETTLED)


def _key(settings: Settings, counter: WorkerCounter) -> str:
    return redis_key(settings, "metrics", counter.name)


def count(settings: Settings, counter: WorkerCounter, value: object, amount: int = 1) -> None:
    """Add ``amount`` to ``counter`` for label value ``value``."""
    try:
        redis_connection(settings).hincrby(_key(settings, counter), str(value), amount)
    except redis.RedisError as exc:
        log.warning("event=metric_not_counted metric=%s error=%r", counter.name, exc)


def read_counters(settings: Settings) -> dict[WorkerCounter, dict[str, int]]:
    """Every worker counter: label value -> count.

    Raises:
        redis.RedisError: Redis does not answer.
    """
    pipe = redis_connection(settings).pipeline(transaction=False)
    for counter in COUNTERS:
        pipe.hgetall(_key(settings, counter))
    found = {}
    for counter, values in zip(COUNTERS, pipe.execute(), strict=True):
        found[counter] = {_text(k): int(v) for k, v in values.items()}
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
