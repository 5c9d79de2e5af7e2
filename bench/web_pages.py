"""Benchmark: what a web page costs beside the JSON API's answer for the same data, in the same run.

    python bench/web_pages.py [--db sqlite|postgres|both] [--answers 300000] [--households 100000]
                              [--repeat 7] [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Two pages, each against its JSON:

- the report page of a finished round over 200 villages (``/rounds/<id>/report``: tables, charts, ranking)
  beside ``/api/rounds/<id>/rates`` (the same ``village_rates`` report as JSON); the round is the one
  ``bench/rates.py`` builds, with about ``--answers`` stored answers;
- the roster's household list of a ``--households`` roster (``/roster/households``, a page in the middle of
  the list, and the first page of a search by the last digits of a number) beside ``/api/roster/households``
  with the same parameters.

Server time: each request goes through the whole Flask app in this process (the lock, the session, the
database, the template or the JSON encoder) through Flask's test client, signed in as an admin; no network in
between. Each scratch database (a temporary SQLite file, or a PostgreSQL schema of its own) is migrated with
the real migrations and dropped at the end. Times are the best of ``--repeat`` runs after one warm-up, the
median beside it; page and JSON take turns so that load from elsewhere falls on both alike. Goal: a page costs
at most 1.5x its JSON.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import time
from collections.abc import Callable

from _common import DEFAULT_POSTGRES_URL, load_roster, private_redis, scratch_database
from rates import load as load_round

from campaigns import accounts
from campaigns.db import make_engine
from campaigns.runtime import Runtime
from campaigns.settings import Settings
from web.app import create_app

GOAL = 1.5
PASSWORD = "bench password 2026"
SECRET_KEY = "sanlv-bench-secret-key-0123456789abcdef"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def signed_in_client(database_url: str, redis_url: str):
    """The app on ``database_url`` and a test client signed in as a new admin."""
    runtime = Runtime(Settings(database_url=database_url, redis_url=redis_url, secret_key=SECRET_KEY,
                               telephony="simulator", public_base_url="http://127.0.0.1:5000"))  # fmt: skip
    with runtime.sessions.begin() as session:
        accounts.create_user(session, "bench", "admin", PASSWORD)
    app = create_app(runtime)
    client = app.test_client()
    token = CSRF.search(client.get("/login").get_data(as_text=True)).group(1)
    signed = client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token})
    assert signed.status_code == 302, signed.get_data(as_text=True)
    return runtime, client


def timed(client, url: str) -> Callable[[], float]:
    def once() -> float:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, (url, response.status_code, response.get_data(as_text=True)[:300])
        return elapsed

    return once


def compare(name: str, page: Callable[[], float], data: Callable[[], float], repeat: int) -> dict:
    page(), data()  # warm-up: templates compiled, caches filled
    times: dict[str, list[float]] = {"page": [], "json": []}
    for turn in range(repeat):  # each goes first every other turn
        if turn % 2:
            times["json"].append(data())
            times["page"].append(page())
        else:
            times["page"].append(page())
            times["json"].append(data())
    best = {kind: min(values) for kind, values in times.items()}
    median = {kind: statistics.median(values) for kind, values in times.items()}
    ratio = best["page"] / best["json"]
    print(
        f"  {name:<34} page {best['page'] * 1000:8.1f} ms (median {median['page'] * 1000:7.1f})   "
        f"json {best['json'] * 1000:8.1f} ms (median {median['json'] * 1000:7.1f})   ratio {ratio:5.2f}x",
        flush=True,
    )
    return {"name": name, "page": best["page"], "json": best["json"], "ratio": ratio}


def run(kind: str, answers: int, households: int, repeat: int, postgres_url: str, redis_url: str) -> list[dict]:
    print(f"\n{kind}: a round of ~{answers:,} answers over 200 villages; a roster of {households:,} households")
    results = []
    with scratch_database(kind, postgres_url) as url:
        engine = make_engine(url)
        started = time.perf_counter()
        round_id, counts = load_round(engine, answers)
        engine.dispose()
        print(f"  loaded the round in {time.perf_counter() - started:.1f} s: {counts}", flush=True)
        runtime, client = signed_in_client(url, redis_url)
        try:
            results.append(
                compare(
                    "report page vs /api/.../rates",
                    timed(client, f"/rounds/{round_id}/report"),
                    timed(client, f"/api/rounds/{round_id}/rates"),
                    repeat,
                )
            )
        finally:
            runtime.dispose()
    with scratch_database(kind, postgres_url) as url:
        started = time.perf_counter()
        load_roster(url, households, villages=200)
        print(f"  loaded the roster in {time.perf_counter() - started:.1f} s", flush=True)
        runtime, client = signed_in_client(url, redis_url)
        middle = households // 2
        try:
            results.append(
                compare(
                    "households page (middle) vs JSON",
                    timed(client, f"/roster/households?after={middle}"),
                    timed(client, f"/api/roster/households?after={middle}"),
                    repeat,
                )
            )
            results.append(
                compare(
                    "households search by digits vs JSON",
                    timed(client, "/roster/households?phone=0042"),
                    timed(client, "/api/roster/households?phone=0042"),
                    repeat,
                )
            )
        finally:
            runtime.dispose()
    return [{**r, "db": kind} for r in results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--answers", type=int, default=300_000, help="answers stored in the report's round")
    parser.add_argument("--households", type=int, default=100_000, help="households in the roster")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("sanlv").setLevel(logging.WARNING)
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    with private_redis() as redis_url:
        for kind in kinds:
            results.extend(run(kind, args.answers, args.households, args.repeat, args.postgres_url, redis_url))
    print(f"\nsummary (best of {args.repeat}; goal: a page costs at most {GOAL}x its JSON):")
    print(f"    {'db':<10}{'what':<38}{'page ms':>10}{'json ms':>10}{'ratio':>8}  verdict")
    for r in results:
        verdict = "ok" if r["ratio"] <= GOAL else "over the goal"
        print(
            f"    {r['db']:<10}{r['name']:<38}{r['page'] * 1000:>10.1f}{r['json'] * 1000:>10.1f}{r['ratio']:>7.2f}x"
            f"  {verdict}"
        )
    print(f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
