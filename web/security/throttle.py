"""Sign-in throttling: failed sign-ins counted per account and per address (the ``limits`` library).

The counts live in the app's own Redis (REDIS_URL, keys under the deployment's namespace), so every gunicorn
worker and every web host shares one count and a restart does not reset it: a per-process memory count would
multiply the allowance by the number of processes. If Redis does not answer, sign-in still works, counted in
this process's memory for the time being (one log line per fall-back): the pages must not depend on the
dialler's Redis being up, and argon2 already makes each guess slow.

Only failures count. An account that failed ``ACCOUNT_LIMIT`` times, or an address that failed
``ADDRESS_LIMIT`` times, within the window is refused (429) until the oldest failure leaves the window, even
with the right password; a successful sign-in clears its account's count.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

from campaigns.settings import Settings

log = logging.getLogger("sanlv.web")

ACCOUNT_LIMIT = parse("5/15minutes")
ADDRESS_LIMIT = parse("20/15minutes")

T = TypeVar("T")


class LoginThrottle:
    def __init__(self, settings: Settings):
        storage = RedisStorage(
            settings.redis_url,
            key_prefix=f"{settings.namespace}-login",
            socket_connect_timeout=1,
            socket_timeout=1,
        )
        self._shared = MovingWindowRateLimiter(storage)
        self._local = MovingWindowRateLimiter(MemoryStorage())

    def _run(self, work: Callable[[MovingWindowRateLimiter], T]) -> T:
        try:
            return work(self._shared)
        except redis.RedisError as exc:
            log.warning("event=login_throttle_local reason=%r", str(exc))
            return work(self._local)

    def _keys(self, account: str, address: str | None) -> list[tuple[RateLimitItem, str]]:
        keys = [(ACCOUNT_LIMIT, f"account:{account.strip().lower()}")]
        if address:
            keys.append((ADDRESS_LIMIT, f"address:{address}"))
        return keys

    def wait_seconds(self, account: str, address: str | None) -> int:
        """0 if a sign-in may be tried now; else how many seconds until it may."""

        def wait(limiter: MovingWindowRateLimiter) -> int:
            longest = 0.0
            for item, key in self._keys(account, address):
                if not limiter.test(item, key):
                    reset = limiter.get_window_stats(item, key).reset_time
                    longest = max(longest, reset - time.time(), 1.0)
            return math.ceil(longest)

        return self._run(wait)

    def failed(self, account: str, address: str | None) -> None:
        def hit(limiter: MovingWindowRateLimiter) -> None:
            for item, key in self._keys(account, address):
                limiter.hit(item, key)

        self._run(hit)

    def succeeded(self, account: str) -> None:
        self._run(lambda limiter: limiter.clear(ACCOUNT_LIMIT, f"account:{account.strip().lower()}"))
