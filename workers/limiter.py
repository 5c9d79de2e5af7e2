"""A round's dial rate, shared by every worker process (on any machine) through Redis.

Two parts, both in Redis:

- **Pacing.** Each create reserves the round's next free *slot*; slots are ``(1 + PACING_MARGIN) / cps``
  seconds apart on Redis's own clock (an atomic Lua script, so workers on several machines agree). The worker
  sleeps until its slot. Creates are spread evenly instead of leaving in bursts, so Twilio never has to queue
  them, and whoever counts them as they arrive (Twilio) sees no more than ``cps`` in any second even when a
  request reaches it a few milliseconds later than its slot (up to ``PACING_MARGIN`` seconds of jitter).
- **The cap.** At its slot, a create also takes a hit in the ``limits`` library's moving window of ``cps``
  per second: the invariant itself ("never more than cps creates in any second, across any number of
  workers"). Pacing should always pass it; if anything ever disagrees (a round's CPS changed while slots were
  reserved, a clock step), the cap wins and the create waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction

import redis
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

# Slots are this fraction further apart than 1/cps: the achieved rate is at most cps / (1 + margin) (0.962 cps),
# and a request may reach Twilio up to this many seconds later than another (40 ms: a busy machine, a slow
# network) without cps + 1 creates falling into one second.
PACING_MARGIN = 0.04
KEEPALIVE_EVERY = 5.0  # seconds between keep-alive calls while a worker sleeps for its slot

_limiters: dict[int, MovingWindowRateLimiter] = {}

# KEYS[1]: the round's next free slot (microseconds on Redis's clock). ARGV: interval, max wait (microseconds).
# Returns the microseconds to wait for the reserved slot, or -1 (nothing reserved) if that is beyond max wait.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, free)
local wait = slot - now
if wait > tonumber(ARGV[2]) then
  return -1
end
local ttl = math.floor((wait + tonumber(ARGV[1])) / 1000) + 60000
redis.call('SET', KEYS[1], string.format('%.0f', slot + tonumber(ARGV[1])), 'PX', ttl)
return math.floor(wait)
"""
_scripts: dict[int, object] = {}

# KEYS[1]: the round's next free slot; KEYS[2..]: each allowed account's next free slot (microseconds on Redis's
# clock). ARGV[1]: the round's interval, ARGV[2]: max wait, ARGV[3..]: each account's interval (microseconds;
# 0: that account has no limit of its own). The account free soonest is taken (the first on ties); the slot is
# the later of the round's and that account's. Returns {wait, account index (0-based; -1: none given)}, or
# {-1, -1} (nothing reserved) if the slot is beyond max wait.
_RESERVE_POOLED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local best, best_free = 0, nil
for i = 2, #KEYS do
  local f = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tonumber(ARGV[i + 1]) == 0 then f = 0 end
  if best_free == nil or f < best_free then
    best, best_free = i, f
  end
end
local slot = math.max(now, free, best_free or 0)
local wait = slot - now
if wait > tonumber(ARGV[2]) then
  return {-1, -1}
end
local ttl = math.floor((wait + tonumber(ARGV[1])) / 1000) + 60000
redis.call('SET', KEYS[1], string.format('%.0f', slot + tonumber(ARGV[1])), 'PX', ttl)
if best > 0 and tonumber(ARGV[best + 1]) > 0 then
  local interval = tonumber(ARGV[best + 1])
  redis.call('SET', KEYS[best], string.format('%.0f', slot + interval), 'PX', math.floor((wait + interval) / 1000) + 60000)
end
return {math.floor(wait), best - 2}
"""
_pooled_scripts: dict[int, object] = {}


def rate_item(cps: float) -> RateLimitItemPerSecond:
    """``cps`` as "amount per multiples seconds": 2 -> 2/1 s, 0.5 -> 1/2 s, 2.5 -> 5/2 s."""
    fraction = Fraction(cps).limit_denominator(60)
    if fraction <= 0:
        raise ValueError(f"calls per second must be positive, got {cps}")
    return RateLimitItemPerSecond(fraction.numerator, fraction.denominator, namespace="sanlv-dial")


def slot_interval(cps: float) -> float:
    """Seconds between two reserved slots of a round dialling at ``cps``."""
    if cps <= 0:
        raise ValueError(f"calls per second must be positive, got {cps}")
    return (1.0 + PACING_MARGIN) / cps


def _limiter(conn: redis.Redis) -> MovingWindowRateLimiter:
    limiter = _limiters.get(id(conn))
    if limiter is None:
        kwargs = conn.connection_pool.connection_kwargs
        uri = f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        storage = RedisStorage(uri, connection_pool=conn.connection_pool)
        limiter = MovingWindowRateLimiter(storage)
        _limiters[id(conn)] = limiter
    return limiter


def reserve_slot(conn: redis.Redis, key: str, cps: float, max_wait: float) -> float | None:
    """Reserve the round's next free dial slot.

    Returns:
        The time (``time.monotonic()``) of the slot, or None if the next free slot is more than ``max_wait``
        seconds away (then nothing is reserved).
    """
    script = _scripts.get(id(conn))
    if script is None:
        script = _scripts[id(conn)] = conn.register_script(_RESERVE)
    asked = time.monotonic()
    wait_us = int(script(keys=[f"{key}:slot"], args=[int(slot_interval(cps) * 1e6), int(max_wait * 1e6)]))
    if wait_us < 0:
        return None
    return asked + wait_us / 1e6


def reserve_pooled_slot(
    conn: redis.Redis, key: str, cps: float, accounts: list[tuple[str, float | None]], max_wait: float
) -> tuple[float, int] | None:
    """Reserve the round's next free dial slot together with a slot of one of ``accounts``.

    Args:
        key: the round's dial key.
        cps: the round's calls per second.
        accounts: ``(dial key, cps)`` of each account the round may use (cps None: no limit of its own).
        max_wait: give up (reserve nothing) if the slot is further away than this many seconds.

    Returns:
        ``(time.monotonic() of the slot, index in accounts of the account it belongs to)``, or None.
    """
    if not accounts:
        slot = reserve_slot(conn, key, cps, max_wait)
        return None if slot is None else (slot, -1)
    script = _pooled_scripts.get(id(conn))
    if script is None:
        script = _pooled_scripts[id(conn)] = conn.register_script(_RESERVE_POOLED)
    keys = [f"{key}:slot", *(f"{account_key}:slot" for account_key, _ in accounts)]
    intervals = [int(slot_interval(c) * 1e6) if c else 0 for _, c in accounts]
    asked = time.monotonic()
    wait_us, index = script(keys=keys, args=[int(slot_interval(cps) * 1e6), int(max_wait * 1e6), *intervals])
    if int(wait_us) < 0:
        return None
    return asked + int(wait_us) / 1e6, int(index)


def sleep_until(moment: float, keepalive: Callable[[], None] | None = None) -> None:
    """Sleep until ``time.monotonic()`` reaches ``moment``, calling ``keepalive`` every few seconds."""
    while True:
        left = moment - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, KEEPALIVE_EVERY))
        if keepalive is not None and moment - time.monotonic() > 0:
            keepalive()


def take_cap(conn: redis.Redis, key: str, cps: float, give_up_after: float, scope: str = "round") -> bool:
    """One hit in the moving window of ``cps`` per second of ``key`` (a round's, or with ``scope="account"``
    a Twilio account's); waits for room up to ``give_up_after``."""
    limiter = _limiter(conn)
    item = rate_item(cps)
    deadline = time.monotonic() + give_up_after
    while True:
        if limiter.hit(item, scope, key):
            return True
        stats = limiter.get_window_stats(item, scope, key)
        wait = max(0.005, min(stats.reset_time - time.time(), 0.25))
        if time.monotonic() + wait > deadline:
            return False
        time.sleep(wait)


def acquire_dial_slot(
    conn: redis.Redis,
    key: str,
    cps: float,
    give_up_after: float = 60.0,
    keepalive: Callable[[], None] | None = None,
) -> bool:
    """Block until the round may create one more call (pacing, then the cap); False if not within the limit."""
    slot = reserve_slot(conn, key, cps, give_up_after)
    if slot is None:
        return False
    sleep_until(slot, keepalive)
    return take_cap(conn, key, cps, give_up_after=max(1.0, slot_interval(cps)))
