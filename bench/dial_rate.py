"""Benchmark: the achieved dial rate of a round against its configured calls per second, with 1, 2 and 4 real
worker processes, measured where Twilio would measure it (at the local Twilio stand-in).

    python bench/dial_rate.py [--cps 10] [--seconds 20] [--workers 1,2,4] [--db sqlite|postgres]
                              [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

For each worker count it starts, from scratch: a migrated database (a temporary SQLite file, or a PostgreSQL
schema of its own), a private redis-server, the Twilio stand-in (tests/support/twilio_standin.py, the real
twilio client talks to it over HTTP), and that many ``sanlv worker`` processes (RQ, with the scheduler). It
launches a round with enough households to dial for the whole run, calling windows open all day and no
concurrency limit in the way, and lets it dial for ``--seconds`` after the first call.

It prints, per worker count, from the stand-in's arrival time of every create request:

- ``rate``: calls created per second over the run after a 2-second warm-up, and ``ratio`` = rate / cps
  (goal: at least 0.95);
- ``max/1s``: the most creates in any 1-second window over the whole run, warm-up included (must never be
  above the cps: the invariant "a round's dial rate never exceeds its calls-per-second limit");
- ``min/1s``: the fewest creates in a 1-second bucket after the warm-up (gaps in the pacing).

The pacing spaces creates (1 + 0.04) / cps apart, so the ratio cannot exceed 0.962: that margin is what keeps
up to 40 ms of jitter between a create's slot and its arrival at Twilio from putting cps + 1 creates into one
second there.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
from _common import (
    DEFAULT_POSTGRES_URL,
    ROOT,
    private_redis,
    scratch_database,
    start_workers,
    stop_workers,
)
from rq import Worker

from campaigns.db import make_engine, make_session_factory, session_scope
from campaigns.models import Household, Village
from campaigns.rounds import RoundOptions, change_round, create_round
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings
from tests.support.twilio_standin import (
    TwilioStandIn,
    process_environment,
    stand_in_settings,
)
from workers.lifecycle import after_round_change

WARM_UP = 2.0


@dataclass
class Result:
    workers: int
    created: int
    rate: float
    ratio: float
    max_per_second: int
    min_per_second: int


def run(worker_count: int, cps: float, seconds: float, db: str, postgres_url: str, log: Path) -> Result:
    households = int(cps * (seconds + 15))
    with scratch_database(db, postgres_url) as url, private_redis() as redis_url, TwilioStandIn() as standin:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with session_scope(sessions) as session:
            village = Village(name="村")
            session.add(village)
            session.flush()
            session.add_all(Household(phone=f"+86138{n:08d}", village_id=village.id) for n in range(households))
        settings = stand_in_settings(
            Settings(database_url=url, redis_url=redis_url),
            standin,
            namespace=f"bench-{uuid.uuid4().hex[:8]}",
            twilio_http_timeout=Settings.twilio_http_timeout,
        )
        env = process_environment(settings) | {"PYTHONPATH": str(ROOT)}
        set_runtime(Runtime(settings))
        workers = start_workers(worker_count, env, log)
        try:
            _wait_for_workers(redis_url, worker_count)
            with session_scope(sessions) as session:
                options = RoundOptions(
                    name="bench", windows=[["00:00", "24:00"]], cps=cps, max_concurrent=households, max_attempts=1
                )
                round_id = create_round(session, options).id
                change_round(session, round_id, "launch")
            after_round_change(settings, round_id, "launch")
            deadline = time.monotonic() + 60
            while not standin.create_times and time.monotonic() < deadline:
                time.sleep(0.05)
            if not standin.create_times:
                raise SystemExit(f"no call was placed within 60 s; see {log}")
            time.sleep(max(0.0, standin.create_times[0] + seconds - time.monotonic()))
        finally:
            stop_workers(workers)
            set_runtime(None)
            engine.dispose()
        times = standin.create_times
    first = times[0]
    measured = [t for t in times if first + WARM_UP <= t < first + seconds]
    span = seconds - WARM_UP
    rate = len(measured) / span
    buckets = [0] * int(span)
    for t in measured:
        index = int(t - first - WARM_UP)
        if index < len(buckets):
            buckets[index] += 1
    return Result(
        workers=worker_count,
        created=len(times),
        rate=rate,
        ratio=rate / cps,
        max_per_second=_max_in_window([t for t in times if t < first + seconds], 1.0),
        min_per_second=min(buckets) if buckets else 0,
    )


def _max_in_window(times: list[float], width: float) -> int:
    peak, low = 0, 0
    for high, at in enumerate(times):
        while at - times[low] >= width:
            low += 1
        peak = max(peak, high - low + 1)
    return peak


def _wait_for_workers(redis_url: str, count: int) -> None:
    conn = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while Worker.count(connection=conn) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{count} workers did not start within 60 s")
        time.sleep(0.1)
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    if args.seconds < WARM_UP + 1:
        parser.error(f"--seconds must be at least {WARM_UP + 1:g}: the first {WARM_UP:g} s are a warm-up, not measured")
    if args.cps <= 0:
        parser.error("--cps must be greater than 0")
    log = Path(f"/tmp/sanlv-bench-dial-rate-{os.getpid()}.log")
    print(f"dial rate at {args.cps:g} cps for {args.seconds:g} s on {args.db} (worker log: {log})")
    print(f"{'workers':>7} {'created':>8} {'rate/s':>8} {'ratio':>6} {'max/1s':>7} {'min/1s':>7}  verdict")
    for count in (int(n) for n in args.workers.split(",")):
        r = run(count, args.cps, args.seconds, args.db, args.postgres_url, log)
        ok = r.ratio >= 0.95 and r.max_per_second <= args.cps
        print(
            f"{r.workers:>7} {r.created:>8} {r.rate:>8.2f} {r.ratio:>6.3f} {r.max_per_second:>7} {r.min_per_second:>7}"
            f"  {'ok' if ok else 'MISSED'} (goal: ratio >= 0.95, max/1s <= {args.cps:g})",
            flush=True,
        )


if __name__ == "__main__":
    main()
