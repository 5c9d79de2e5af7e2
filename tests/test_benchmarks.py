"""The benchmarks in bench/ still run against the current schema and code: each one, at a tiny size, on this
run's database kind, as a newcomer would start it. Their figures are not checked here (timed assertions in
unit tests are noise); that they run to the end and print their verdict is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_DATABASE_URL, is_postgres

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> str:
    db = ["--db", "postgres", "--postgres-url", TEST_DATABASE_URL] if is_postgres() else ["--db", "sqlite"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANLV_", "TWILIO_")) and k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *db, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_webhooks_benchmark_runs() -> None:
    out = run_bench(
        "webhooks.py",
        "--calls",
        "3",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--by-webhook",
        "--p99-calls",
        "4",
        "--p99-clients",
        "4",
    )

    assert "cost per request, sanlv / bare:" in out
    assert "tail latency, 4 calls at once" in out
    [tail] = [line for line in out.splitlines() if "p99 per request: sanlv" in line]
    assert tail.split()[0] == ("postgres" if is_postgres() else "sqlite")
    requests = [line.split()[:2] for line in out.splitlines() if line.startswith(("  voice", "  gather", "  status"))]
    assert [r[0] if r[0] != "gather" else r[1] for r in requests] == [
        "voice",
        "consent",
        "screen",
        "security",
        "concern",
        "awareness",
        "participation",
        "satisfaction",
        "cadre_contact",
        "visit",
        "status",
    ]


def test_rates_benchmark_runs() -> None:
    out = run_bench("rates.py", "--answers", "10000", "--repeat", "1", "--no-memory")

    assert "village_rates" in out and "ratio" in out


def test_round_create_benchmark_runs() -> None:
    out = run_bench("round_create.py", "--sizes", "1000")

    assert "households" in out and " 1000 " in out


@pytest.mark.skipif(is_postgres(), reason="the dial rate is a worker and Redis figure; once, on SQLite, is enough")
def test_dial_rate_benchmark_runs() -> None:
    out = run_bench("dial_rate.py", "--cps", "5", "--seconds", "4", "--workers", "1")

    assert "verdict" in out and "goal: ratio >= 0.95" in out


def test_dial_scale_benchmark_runs() -> None:
    out = run_bench("dial_scale.py", "--households", "300", "--seconds", "8", "--workers", "2", "--account-cps", "3")

    assert "verdict: ratio" in out and "goal <= 3 per account" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:9].strip() in ("baseline", "pool")
            and line.split()[1].isdigit()}
    baseline, pool = rows["baseline"], rows["pool"]
    assert baseline[1:3] == ["1", "3"] and pool[1:3] == ["3", "9"]  # accounts, pool cps
    assert [p.split("=")[0] for p in pool[-3:]] == ["a", "b", "c"]  # the peak of each account of the pool
    assert "rss growth after warm-up" in out


def test_web_pages_benchmark_runs() -> None:
    out = run_bench("web_pages.py", "--answers", "3000", "--households", "500", "--repeat", "1")

    assert "goal: a page costs at most 1.5x its JSON" in out
    verdicts = re.findall(r"^    (sqlite|postgres) .* \d+\.\d\dx  (ok|over the goal)$", out, re.MULTILINE)
    assert len(verdicts) == 3, out


def test_notice_rate_benchmark_runs() -> None:
    out = run_bench("notice_rate.py", "--households", "300", "--limit", "5", "--seconds", "4", "--workers", "1")

    assert "notice created in" in out and "300 households," in out
    assert "verdict" in out and "goal: ratio >= 0.95, max/1s <= 5, no doubles" in out
