"""Benchmark: the time and peak memory to create and launch a round of 10,000, 50,000 and 100,000 households,
against a raw INSERT ... SELECT of the same rows measured in the same run.

    python bench/round_create.py [--sizes 10000,50000,100000] [--db sqlite|postgres|both] [--sample all]
                                 [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

For each database and size it builds a scratch copy of the real schema (the Alembic migrations: a temporary
SQLite file, or a PostgreSQL schema of its own) and bulk-loads a roster of that many households in 200
villages (setup, not measured). Then, in a fresh Python process (so that its memory figures are its own):

- ``baseline``: one raw ``INSERT INTO round_targets ... SELECT ... FROM households`` of the same rows (callable,
  still on the roster, not on the do-not-call list) for a round row inserted by hand, committed: the floor for
  writing the targets.
  Best of three runs (the rows deleted after each), the first of which also warms the database's pages;
- ``create+launch``: what ``sanlv round create`` and ``sanlv round launch`` do in the database:
  :func:`campaigns.rounds.create_round` (questionnaire version, round row, sampling with the do-not-call and
  invalid-number exclusions, the count) and :func:`campaigns.rounds.change_round` ``launch``, each committed
  (launch then enqueues one job in Redis, which is not measured here);
- memory: the growth of the process's peak resident set (ru_maxrss) over create+launch, and the peak of Python
  allocations (tracemalloc) while a second round of the same size is created and launched (tracemalloc slows
  Python down, so that one is not timed); flat memory means these do not grow with the round. The baseline
  runs first, so the resident set already holds SQLite's page cache: growth beyond it is what counts.

Prints one line per database and size with the times, the ratio create+launch / baseline, and the memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc

from _common import DEFAULT_POSTGRES_URL, load_roster, scratch_database
from sqlalchemy import text

from campaigns.clock import now
from campaigns.db import make_engine, make_session_factory, session_scope
from campaigns.models import Round
from campaigns.questionnaire import builtin_questionnaire, store_version
from campaigns.rounds import RoundOptions, change_round, create_round

BASELINE_RUNS = 3


def measure(url: str, sample: str) -> dict:
    """Run in a fresh process: the baseline, then create+launch; returns the figures."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with engine.begin() as conn:  # connect and warm the database file's pages once, for both runs alike
        conn.execute(text("SELECT count(*) FROM households")).scalar()
    round_id = _baseline_round(engine, sessions)
    timings = []
    for _ in range(BASELINE_RUNS):  # the first warms the database's pages; the best run counts
        began = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO round_targets (round_id, household_id, village_id, phone, state, attempts,"
                    " call_backs, updated_at) SELECT :round_id, h.id, h.village_id, h.phone, 'pending', 0, 0, :at"
                    " FROM households h"
                    " WHERE h.phone_status = 'ok' AND h.retired_at IS NULL"
                    " AND NOT EXISTS (SELECT 1 FROM do_not_call d WHERE d.phone = h.phone)"
                    " ORDER BY h.id"
                ),
                {"round_id": round_id, "at": now().replace(tzinfo=None)},
            )
        timings.append(time.perf_counter() - began)
        with engine.begin() as conn:  # the rows go, so every run writes into the same table
            conn.execute(text("DELETE FROM round_targets"))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM rounds"))
    baseline = min(timings)

    rss_before = _peak_rss_mb()
    began = time.perf_counter()
    with session_scope(sessions) as session:
        round_id = create_round(session, RoundOptions(name="bench", sample=sample, seed=1)).id
    created = time.perf_counter() - began
    with session_scope(sessions) as session:
        change_round(session, round_id, "launch")
    total = time.perf_counter() - began
    rss_growth = _peak_rss_mb() - rss_before
    with engine.begin() as conn:
        targets = conn.execute(text("SELECT count(*) FROM round_targets WHERE round_id = :r"), {"r": round_id}).scalar()
    # Python's allocations, in a second round of the same size (tracemalloc slows Python down: not timed).
    tracemalloc.start()
    with session_scope(sessions) as session:
        second = create_round(session, RoundOptions(name="bench 2", sample=sample, seed=2)).id
    with session_scope(sessions) as session:
        change_round(session, second, "launch")
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    engine.dispose()
    return {
        "baseline": baseline,
        "create": created,
        "total": total,
        "targets": targets,
        "tracemalloc_peak_mb": peak / 2**20,
        "rss_growth_mb": rss_growth,
    }


def _baseline_round(engine, sessions) -> int:
    """A round row for the baseline to write targets for (with the questionnaire version a round needs)."""
    # Through the model, so every column a round needs gets its default (the baseline times the targets only).
    with session_scope(sessions) as session:
        version_id = store_version(session, builtin_questionnaire()).id
        round_ = Round(name="baseline", questionnaire_id=version_id, windows=[], retry={})
        session.add(round_)
        session.flush()
        return round_.id


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--sample", default="all")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: the child process's database URL
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.sample)))
        return
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    print(f"create and launch a round (--sample {args.sample}); baseline: one raw INSERT ... SELECT of the same rows")
    print(
        f"{'db':<9} {'households':>10} {'targets':>8} {'baseline':>9} {'create':>8} {'+launch':>8} {'ratio':>6}"
        f" {'py peak':>8} {'rss +':>7}"
    )
    for kind in kinds:
        for size in (int(s) for s in args.sizes.split(",")):
            with scratch_database(kind, args.postgres_url) as url:
                load_roster(url, size)
                child = subprocess.run(
                    [sys.executable, __file__, "--measure", url, "--sample", args.sample],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if child.returncode != 0:
                    raise SystemExit(child.stderr)
                r = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"{kind:<9} {size:>10} {r['targets']:>8} {r['baseline']:>8.2f}s {r['create']:>7.2f}s {r['total']:>7.2f}s"
                f" {r['total'] / r['baseline']:>6.2f} {r['tracemalloc_peak_mb']:>6.1f}MB {r['rss_growth_mb']:>5.1f}MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
