"""The round's dial-rate limit, shared by every worker process through Redis (the ``limits`` library).

A moving window of one period: however many workers run, no window of that length ever holds more call
creates than the round's calls-per-second allow.
"""

from __future__ import annotations

import time
from fractions import Fraction

import redis
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

_limiters: dict[int, MovingWindowRateLimiter] = {}


def rate_item(cps: float) -> RateLimitItemPerSecond:
    """``cps`` as "amount per multiples seconds": 2 -> 2/1 s, 0.5 -> 1/2 s, 2.5 -> 5/2 s."""
    fraction = Fraction(cps).limit_denominator(60)
    if fraction <= 0:
        raise ValueError(f"calls per second must be positive, got {cps}")
    return RateLimitItemPerSecond(fraction.numerator, fraction.denominator, namespace="sanlv-dial")


def _limiter(conn: redis.Redis) -> MovingWindowRateLimiter:
    limiter = _limiters.get(id(conn))
    if limiter is None:
        kwargs = conn.connection_pool.connection_kwargs
        uri = f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        storage = RedisStorage(uri, connection_pool=conn.connection_pool)
        limiter = MovingWindowRateLimiter(storage)
        _limiters[id(conn)] = limiter
    return limiter


def acquire_dial_slot(conn: redis.Redis, key: str, cps: float, give_up_after: float = 60.0) -> bool:
    """Block until the round may create one more call; False if that takes longer than ``give_up_after``."""
    limiter = _limiter(conn)
    item = rate_item(cps)
    deadline = time.monotonic() + give_up_after
    while True:
        if limiter.hit(item, "round", key):
            return True
        stats = limiter.get_window_stats(item, "round", key)
        wait = max(0.005, min(stats.reset_time - time.time(), 0.25))
        if time.monotonic() + wait > deadline:
            return False
        time.sleep(wait)
