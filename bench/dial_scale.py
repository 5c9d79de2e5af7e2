"""Benchmark: dialling one large round through a pool of Twilio accounts, each with its own calls-per-second
limit, with several real worker processes, measured where Twilio would measure it (at the Twilio stand-in).

    python bench/dial_scale.py [--households 200000] [--workers 4] [--accounts 3] [--account-cps 10]
                               [--seconds 60] [--db postgres|sqlite]
                               [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

It builds a migrated scratch database (a PostgreSQL schema of its own by default) with a roster of
``--households`` phone numbers in 200 villages, a private redis-server, and the Twilio stand-in
(tests/support/twilio_standin.py) knowing ``--accounts`` accounts; the real twilio client in each worker talks
to it over HTTP. Then two runs, each with ``--workers`` fresh ``sanlv worker`` processes and a new round of
every household (calling windows open all day, no concurrency limit in the way):

- ``baseline``: the round may dial through one account of ``--account-cps``;
- ``pool``: the round may dial through all ``--accounts`` accounts, ``--account-cps`` each (its own CPS is
  the pool's sum).

Each run dials for ``--seconds`` after its first call (a 200,000-household round takes hours to dial at
30 calls/s: the run measures the sustained rate of a round that size, not the whole round). It prints, per run,
from the arrival time of every create request at the stand-in:

- ``rate``: creates per second after a 5-second warm-up, and ``ratio`` = rate / the pool's CPS (goal: at
  least 0.95; the pacing's 4 % margin caps it at 0.962);
- ``max/1s``: per account, the most creates in any 1-second window over the whole run, warm-up included
  (goal: never above the account's CPS);
- worker memory: the resident set (VmRSS) of each worker process, sampled every 5 s; ``rss growth`` is the
  largest growth of one worker from its first sample after the warm-up to its last (goal: flat).

Then the ratio of the pool's rate to the baseline's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field, replace
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
from sqlalchemy import text

from campaigns.db import make_engine, make_session_factory, session_scope
from campaigns.rounds import RoundOptions, change_round, create_round
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings, TwilioAccount
from tests.support.twilio_standin import TwilioStandIn, process_environment, stand_in_settings
from workers.lifecycle import after_round_change

WARM_UP = 5.0
SAMPLE_EVERY = 5.0


@dataclass
class Run:
    name: str
    accounts: list[str]
    pool_cps: float
    created: int = 0
    rate: float = 0.0
    max_per_second: dict[str, int] = field(default_factory=dict)
    rss: list[list[int]] = field(default_factory=list)  # per sample: kB of each worker
    sample_times: list[float] = field(default_factory=list)  # seconds after the first create
    round_create_seconds: float = 0.0
    per_second: list[int] = field(default_factory=list)  # creates in each second after the warm-up
    cpu_per_call_ms: float = 0.0  # worker CPU (user + system) per call created, after the warm-up
    load: tuple[float, float] = (0.0, 0.0)
    redis_peak_mb: float = 0.0  # Redis's peak memory during the run (INFO memory: used_memory_peak)  # the machine's 1-minute load average at the start and the end

    @property
    def ratio(self) -> float:
        return self.rate / self.pool_cps

    @property
    def rss_growth_kb(self) -> int:
        after = [sample for t, sample in zip(self.sample_times, self.rss, strict=True) if t >= WARM_UP]
        if len(after) < 2:
            return 0
        return max(last - first for first, last in zip(after[0], after[-1], strict=True))


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def max_in_window(times: list[float], width: float = 1.0) -> int:
    peak, low = 0, 0
    for high, at in enumerate(times):
        while at - times[low] >= width:
            low += 1
        peak = max(peak, high - low + 1)
    return peak


def table_sizes(url: str) -> dict[str, int]:
    """Bytes on disk of the tables a round fills (PostgreSQL only: tables with their indexes)."""
    if not url.startswith("postgresql"):
        return {}
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: int(conn.execute(text(f"SELECT pg_total_relation_size('{table}')")).scalar() or 0)
                for table in ("households", "round_targets", "call_attempts")
            }
    finally:
        engine.dispose()


def wait_for_workers(redis_url: str, count: int) -> None:
    conn = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 120
    while Worker.count(connection=conn) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{count} workers did not start within 120 s")
        time.sleep(0.2)
    conn.close()


def dial(
    run: Run,
    base: Settings,
    standin: TwilioStandIn,
    accounts: tuple[TwilioAccount, ...],
    worker_count: int,
    seconds: float,
    log: Path,
) -> None:
    settings = stand_in_settings(
        base,
        standin,
        namespace=f"bench-scale-{uuid.uuid4().hex[:8]}",
        twilio_http_timeout=Settings.twilio_http_timeout,
    )
    settings = replace(settings, twilio_account_sid=None, twilio_auth_token=None, twilio_accounts=accounts)
    env = process_environment(settings) | {"PYTHONPATH": str(ROOT)}
    set_runtime(Runtime(settings))
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    before = len(standin.create_requests)
    workers: list[subprocess.Popen] = start_workers(worker_count, env, log)
    round_id = None
    try:
        wait_for_workers(settings.redis_url, worker_count)
        started = time.monotonic()
        with session_scope(sessions) as session:
            options = RoundOptions(
                name=f"bench {run.name}", windows=[["00:00", "24:00"]], cps=run.pool_cps,
                max_concurrent=10_000, max_attempts=1, accounts=tuple(run.accounts),
            )
            round_id = create_round(session, options).id
            change_round(session, round_id, "launch")
        run.round_create_seconds = time.monotonic() - started
        after_round_change(settings, round_id, "launch")
        deadline = time.monotonic() + 120
        while len(standin.create_requests) == before:
            if time.monotonic() > deadline:
                raise SystemExit(f"no call was placed within 120 s; see {log}")
            time.sleep(0.05)
        first = standin.create_requests[before].at
        next_sample = first
        cpu_start: float | None = None
        load_start = os.getloadavg()[0]
        while time.monotonic() < first + seconds:
            if cpu_start is None and time.monotonic() >= first + WARM_UP:
                cpu_start = sum(cpu_seconds(w.pid) for w in workers)
            if time.monotonic() >= next_sample:
                run.sample_times.append(time.monotonic() - first)
                run.rss.append([rss_kb(w.pid) for w in workers])
                next_sample += SAMPLE_EVERY
            if any(w.poll() is not None for w in workers):
                raise SystemExit(f"a worker died; see {log}")
            time.sleep(0.1)
        run.sample_times.append(time.monotonic() - first)
        run.rss.append([rss_kb(w.pid) for w in workers])
        cpu_used = sum(cpu_seconds(w.pid) for w in workers) - (cpu_start or 0.0)
        conn = redis.Redis.from_url(settings.redis_url)
        run.redis_peak_mb = int(conn.info("memory")["used_memory_peak"]) / 1e6
        conn.close()
        run.load = (load_start, os.getloadavg()[0])
    finally:
        if round_id is not None:
            with session_scope(sessions) as session:
                change_round(session, round_id, "cancel")
        stop_workers(workers)
        set_runtime(None)
        engine.dispose()
    creates = [r for r in standin.create_requests[before:] if r.at < first + seconds]
    run.created = len(creates)
    measured = [r for r in creates if r.at >= first + WARM_UP]
    run.rate = len(measured) / (seconds - WARM_UP)
    run.per_second = [0] * int(seconds - WARM_UP)
    for r in measured:
        index = int(r.at - first - WARM_UP)
        if index < len(run.per_second):
            run.per_second[index] += 1
    run.cpu_per_call_ms = 1000 * cpu_used / len(measured) if measured else 0.0
    for account in accounts:
        if account.name in run.accounts:
            times = [r.at for r in creates if r.username == account.sid]
            run.max_per_second[account.name] = max_in_window(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--account-cps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    if args.seconds < WARM_UP + 2:
        parser.error(f"--seconds must be at least {WARM_UP + 2:g}: the first {WARM_UP:g} s are a warm-up")
    if args.households < 1 or args.accounts < 1 or args.workers < 1 or args.account_cps <= 0:
        parser.error("--households, --accounts, --workers and --account-cps must be positive")
    names = [chr(ord("a") + i) for i in range(args.accounts)]
    sids = {name: "AC" + f"{i + 1:x}" * 32 for i, name in enumerate(names)}
    tokens = {name: uuid.uuid4().hex for name in names}
    accounts = tuple(
        TwilioAccount(name, sids[name], tokens[name], args.account_cps, f"+865912234{i:04d}")
        for i, name in enumerate(names)
    )
    log = Path(f"/tmp/sanlv-bench-dial-scale-{os.getpid()}.log")
    print(
        f"dial scale: {args.households} households on {args.db}, {args.workers} workers, {args.accounts} accounts of"
        f" {args.account_cps:g} cps, {args.seconds:g} s per run (warm-up {WARM_UP:g} s; worker log: {log})",
        flush=True,
    )
    setup = time.monotonic()
    with scratch_database(args.db, args.postgres_url) as url, private_redis() as redis_url, TwilioStandIn(
        sids[names[0]], tokens[names[0]], more_accounts={sids[n]: tokens[n] for n in names[1:]}
    ) as standin:
        load_roster(url, args.households)
        print(f"roster of {args.households} loaded in {time.monotonic() - setup:.1f} s", flush=True)
        base = Settings(database_url=url, redis_url=redis_url)
        runs = [
            Run("baseline", names[:1], args.account_cps),
            Run("pool", names, args.account_cps * args.accounts),
        ]
        for run in runs:
            dial(run, base, standin, accounts, args.workers, args.seconds, log)
            print(
                f"{run.name}: round of {args.households} created and launched in {run.round_create_seconds:.1f} s",
                flush=True,
            )
        sizes = table_sizes(url)
    print()
    print(
        f"{'run':<9} {'accounts':>8} {'pool cps':>8} {'created':>8} {'rate/s':>7} {'ratio':>6} {'cpu/call':>9}"
        f" {'load':>11}  max/1s per account"
    )
    for run in runs:
        peaks = " ".join(f"{name}={peak}" for name, peak in run.max_per_second.items())
        load = f"{run.load[0]:.1f}->{run.load[1]:.1f}"
        print(
            f"{run.name:<9} {len(run.accounts):>8} {run.pool_cps:>8g} {run.created:>8} {run.rate:>7.2f}"
            f" {run.ratio:>6.3f} {run.cpu_per_call_ms:>6.1f} ms {load:>11}  {peaks}"
        )
    print(f"(cpu/call: user + system CPU of the worker processes per call created, after the warm-up;"
          f" load: this machine's 1-minute load average, {os.cpu_count()} CPUs)")
    for run in runs:
        print(f"{run.name}: Redis peak memory {run.redis_peak_mb:.1f} MB")
    if sizes:
        print("database sizes after both runs (two rounds of every household): " + ", ".join(
            f"{table} {size / 1e6:.1f} MB" for table, size in sizes.items()))
    print()
    for run in runs:
        print(f"{run.name}: creates in each second after the warm-up: {' '.join(map(str, run.per_second))}")
    print()
    for run in runs:
        print(f"{run.name}: worker RSS (MB) every {SAMPLE_EVERY:g} s, one column per worker:")
        for at, sample in zip(run.sample_times, run.rss, strict=True):
            print(f"  t={at:6.1f}s  " + " ".join(f"{kb / 1024:6.1f}" for kb in sample))
        print(f"  rss growth after warm-up: {run.rss_growth_kb / 1024:.1f} MB (largest of one worker)")
    baseline, pool = runs
    ok_rate = pool.ratio >= 0.95
    ok_peak = all(peak <= args.account_cps for run in runs for peak in run.max_per_second.values())
    print()
    print(f"pool rate / baseline rate: {pool.rate / baseline.rate if baseline.rate else float('nan'):.2f}x"
          f" (accounts: {args.accounts}x)")
    print(
        f"verdict: ratio {pool.ratio:.3f} {'ok' if ok_rate else 'MISSED'} (goal >= 0.95 of {pool.pool_cps:g} cps);"
        f" max/1s {'ok' if ok_peak else 'MISSED'} (goal <= {args.account_cps:g} per account)"
    )


if __name__ == "__main__":
    main()
