"""Benchmark: an SMS notice to a 100,000-household roster on PostgreSQL, sent at the Twilio stand-in's limit of
30 messages per second, measured where Twilio would measure it (at the stand-in).

    python bench/notice_rate.py [--households 100000] [--limit 30] [--seconds 60] [--workers 8] [--full]
                                [--db postgres|sqlite] [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

It starts, from scratch: a migrated database (a PostgreSQL schema of its own, or a temporary SQLite file), a
private redis-server, the Twilio stand-in (the real twilio client talks to it over HTTP) refusing with 429 any
message beyond ``--limit`` in a second (an account's messaging limit), and ``--workers`` real ``sanlv worker``
processes. It creates the notice (every household, 10% held out by village) with its rate set to the limit,
launches it, and measures for ``--seconds`` after the first message (``--full``: until every message is sent;
100,000 at 30/s take about an hour).

It prints:

- the time to create the notice (sample its households, draw the hold-out, store 100k targets);
- ``rate``: messages created per second after a 2-second warm-up, and ``ratio`` = rate / limit (the baseline,
  measured in the same run by the stand-in's own clock; goal: at least 0.95);
- ``max/1s``: the most messages created in any 1-second window, warm-up included (must never be above the
  limit), ``min/1s`` the fewest in a 1-second bucket after the warm-up;
- ``429s``: creates the stand-in refused for exceeding its limit (0 when the pacing holds), and ``doubles``:
  numbers texted more than once (must be 0).

The pacing spaces sends (1 + 0.04) / limit apart (workers.limiter), so the ratio cannot exceed 0.962.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections import Counter
from pathlib import Path

import redis
from _common import (
    DEFAULT_POSTGRES_URL,
    ROOT,
    load_roster,
    private_redis,
    scratch_database,
    start_workers,
    stop_workers,
)
from rq import Worker

from campaigns.db import make_engine, make_session_factory, session_scope
from campaigns.models import NoticeChannel
from campaigns.notices import NoticeOptions, change_notice, create_notice, notice_status_report
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings
from tests.support.twilio_standin import TwilioStandIn, process_environment, stand_in_settings
from workers.messaging import after_notice_change

WARM_UP = 2.0
TEXT = "【平安建设】县综治办提醒：谨防电信诈骗，陌生来电要核实，转账汇款先商量。紧急情况请拨110。"


def max_in_window(times: list[float], width: float) -> int:
    peak = low = 0
    for high, at in enumerate(times):
        while at - times[low] >= width:
            low += 1
        peak = max(peak, high - low + 1)
    return peak


def wait_for_workers(redis_url: str, count: int) -> None:
    conn = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while Worker.count(connection=conn) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{count} workers did not start within 60 s")
        time.sleep(0.1)
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=100_000)
    parser.add_argument("--limit", type=float, default=30.0, help="the stand-in's messages per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--full", action="store_true", help="send the whole notice, not only --seconds of it")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    if args.seconds < WARM_UP + 1:
        parser.error(f"--seconds must be at least {WARM_UP + 1:g} (the first {WARM_UP:g} s are a warm-up)")
    log = Path(f"/tmp/sanlv-bench-notice-rate-{os.getpid()}.log")
    print(f"SMS notice to {args.households} households at the stand-in's limit of {args.limit:g}/s, "
          f"{args.workers} workers, on {args.db} (worker log: {log})")  # fmt: skip

    with scratch_database(args.db, args.postgres_url) as url, private_redis() as redis_url, TwilioStandIn() as standin:
        standin.message_rate_limit = args.limit
        load_roster(url, args.households)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        settings = stand_in_settings(
            Settings(database_url=url, redis_url=redis_url),
            standin,
            namespace=f"bench-{uuid.uuid4().hex[:8]}",
            twilio_http_timeout=Settings.twilio_http_timeout,
        )
        env = process_environment(settings) | {"PYTHONPATH": str(ROOT)}
        set_runtime(Runtime(settings))
        workers = start_workers(args.workers, env, log)
        try:
            wait_for_workers(redis_url, args.workers)
            began = time.perf_counter()
            with session_scope(sessions) as session:
                options = NoticeOptions(name="bench", channel=NoticeChannel.SMS, text=TEXT, holdout=0.1, seed=1,
                                        windows=[["00:00", "24:00"]], cps=args.limit, max_attempts=1)  # fmt: skip
                notice_id = create_notice(session, options).id
            created_in = time.perf_counter() - began
            with session_scope(sessions) as session:
                change_notice(session, notice_id, "launch")
                report = notice_status_report(session, notice_id)
            to_send = report["households"] - report["held_out"]
            print(f"notice created in {created_in:.1f} s: {report['households']} households, "
                  f"{report['held_out']} held out, {to_send} to send, {report['segments']} segment(s) each")  # fmt: skip
            after_notice_change(settings, notice_id, "launch")
            deadline = time.monotonic() + 60
            while not standin.message_create_times and time.monotonic() < deadline:
                time.sleep(0.05)
            if not standin.message_create_times:
                raise SystemExit(f"no message was sent within 60 s; see {log}")
            first = standin.message_create_times[0]
            if args.full:
                while standin.messages_created < to_send:
                    time.sleep(1.0)
                    if any(w.poll() is not None for w in workers):
                        raise SystemExit(f"a worker died; see {log}")
                seconds = standin.message_create_times[-1] - first
            else:
                seconds = args.seconds
                time.sleep(max(0.0, first + seconds - time.monotonic()))
            with session_scope(sessions) as session:
                change_notice(session, notice_id, "cancel")
        finally:
            stop_workers(workers)
            set_runtime(None)
            engine.dispose()
        times = standin.message_create_times
        doubles = sum(1 for n in Counter(m["to"] for m in standin.messages).values() if n > 1)
        refused = standin.refused_for_rate

    measured = [t for t in times if first + WARM_UP <= t < first + seconds]
    span = seconds - WARM_UP
    rate = len(measured) / span
    buckets = [0] * max(1, int(span))
    for t in measured:
        index = int(t - first - WARM_UP)
        if index < len(buckets):
            buckets[index] += 1
    peak = max_in_window([t for t in times if t < first + seconds], 1.0)
    ratio = rate / args.limit
    ok = ratio >= 0.95 and peak <= args.limit and doubles == 0
    print(f"{'sent':>7} {'rate/s':>8} {'ratio':>6} {'max/1s':>7} {'min/1s':>7} {'429s':>5} {'doubles':>7}  verdict")
    print(
        f"{len(times):>7} {rate:>8.2f} {ratio:>6.3f} {peak:>7} {min(buckets):>7} {refused:>5} {doubles:>7}"
        f"  {'ok' if ok else 'MISSED'} (goal: ratio >= 0.95, max/1s <= {args.limit:g}, no doubles)",
        flush=True,
    )


if __name__ == "__main__":
    main()
