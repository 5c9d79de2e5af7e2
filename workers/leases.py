"""Leases: short-lived, owned Redis keys that say "a worker is on this now".

A ``place_call`` holds its attempt's lease while it works and keeps it alive while it waits for its dial slot.
The sweeper reads a missing lease (with the job not waiting in a queue) as "the worker that held it is gone".
"""

from __future__ import annotations

import logging
import uuid

import redis

from campaigns.settings import Settings
from workers.queues import redis_key

log = logging.getLogger("sanlv.leases")

_EXTEND = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Lease:
    """A short-lived, owned Redis key: "someone is working on this now". It expires unless kept alive.

    A job holds one while it works on something; whoever finds the key missing (and the job not waiting in a
    queue) knows the worker that held it is gone.
    """

    def __init__(self, conn: redis.Redis, key: str):
        self.conn = conn
        self.key = key
        self.token = uuid.uuid4().hex

    def acquire(self, seconds: float) -> bool:
        """Take the lease unless someone else holds it."""
        return bool(self.conn.set(self.key, self.token, nx=True, px=int(seconds * 1000)))

    def extend(self, seconds: float) -> bool:
        """Keep the lease for ``seconds`` from now; False if it is no longer ours (it expired, Redis lost it)."""
        return bool(self.conn.eval(_EXTEND, 1, self.key, self.token, int(seconds * 1000)))

    def release(self) -> None:
        try:
            self.conn.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as exc:  # it expires by itself
            log.warning("event=lease_release_failed key=%s error=%r", self.key, exc)


def lease_held(conn: redis.Redis, key: str) -> bool:
    return bool(conn.exists(key))


def attempt_lease_key(settings: Settings, attempt_id: int) -> str:
    """The key of the lease a ``place_call`` holds on its attempt."""
    return redis_key(settings, "lease", "attempt", attempt_id)
