"""Benchmark: village rates of a round with ~1,000,000 stored answers, against one raw GROUP BY.

    python bench/rates.py [--answers 1000000] [--db sqlite|postgres|both] [--repeat 5]
                          [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                          [--no-memory]

For each database it builds a scratch copy of the real schema (the Alembic migrations) -- a temporary SQLite
file, or a PostgreSQL schema of its own -- bulk-loads one finished round (executemany on SQLite, COPY on
PostgreSQL) over 200 villages, and then, in the same run and on the same answers table:

- times ``SELECT question, digit, count(*) FROM answers WHERE round_id = ? GROUP BY question, digit`` (the
  floor: one pass over the round's answers, no joins, no per-village split);
- times :func:`reports.rates.village_rates` (every figure of ``sanlv report rates``: per-village progress,
  rates, Wilson intervals, ranks, flags) and prints the ratio (the goal is at most 2x), and its two queries
  on their own;
- measures the export memory (tracemalloc peak) of the rates and follow-up exports as CSV and XLSX at two
  round sizes (a fifth of ``--answers`` and all of it), to show that it stays flat as the round grows. The
  follow-ups stream from the database 1,000 rows at a time, so their peak is about two such batches (one
  being written while the next is fetched): flat once a list holds more than two batches, which the
  smaller round already does at the default size.

Scratch files and schemas are dropped at the end, also on failure. Times are the best of ``--repeat`` runs
after one warm-up run, with the median beside it; the runs take turns so that load from elsewhere on the
machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from campaigns.db import make_engine, make_session_factory, session_scope  # noqa: E402
from campaigns.migrate import upgrade  # noqa: E402
from campaigns.models import Round, RoundStatus  # noqa: E402
from campaigns.questionnaire import builtin_questionnaire, store_version  # noqa: E402

RAW_GROUP_BY = "SELECT question, digit, count(*) FROM answers WHERE round_id = :round_id GROUP BY question, digit"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
VILLAGES = 200
CADRES_PER_VILLAGE = 4
T0 = datetime(2026, 3, 2, 1, 0)  # naive UTC, as the UTCDateTime columns store it

COLUMNS = {
    "villages": ("id", "name", "created_at"),
    "cadres": ("id", "name", "phone", "created_at"),
    "households": ("id", "phone", "name", "village_id", "cadre_id", "phone_status", "created_at", "updated_at"),
    "round_targets": (
        "id",
        "round_id",
        "household_id",
        "village_id",
        "phone",
        "state",
        "attempts",
        "last_outcome",
        "final_at",
        "response_status",
        "updated_at",
        "call_backs",
    ),
    "responses": (
        "id",
        "round_id",
        "target_id",
        "status",
        "current_try",
        "prompt_seq",
        "started_at",
        "completed_at",
        "updated_at",
        "inbound",
    ),
    "answers": (
        "id",
        "response_id",
        "round_id",
        "village_id",
        "counted",
        "question",
        "digit",
        "tries",
        "invalid_keys",
        "silences",
        "created_at",
        "updated_at",
    ),
}


# --- synthetic data -------------------------------------------------------------------------------------


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def generate(answers_wanted: int, round_id: int, seed: int = 2026) -> Iterator[tuple[str, tuple]]:
    """(table, row) pairs for one finished round with about ``answers_wanted`` answers, parents first."""
    rng = random.Random(seed)
    for v in range(1, VILLAGES + 1):
        yield "villages", (v, f"第{v}村", T0)
        for c in range(CADRES_PER_VILLAGE):
            cadre_id = (v - 1) * CADRES_PER_VILLAGE + c + 1
            yield "cadres", (cadre_id, f"干部{cadre_id}", f"+86139{cadre_id:08d}", T0)
    answers = 0
    target = 0
    response = 0
    answer_id = 0
    while answers < answers_wanted:
        target += 1
        village = rng.randint(1, VILLAGES)
        cadre = (village - 1) * CADRES_PER_VILLAGE + rng.randint(1, CADRES_PER_VILLAGE)
        phone = f"+86138{target:08d}"
        when = T0 + timedelta(seconds=target)
        yield "households", (target, phone, f"户主{target}", village, cadre, "ok", T0, T0)
        outcome = _pick(rng, {"completed": 0.80, "none": 0.12, "refused": 0.03, "ineligible": 0.02, "partial": 0.03})
        if outcome == "none":
            yield "round_targets", (
                target, round_id, target, village, phone, "unreachable", 3, "no-answer", when, None, when, 0
            )  # fmt: skip
            continue
        state = {"completed": "completed", "refused": "refused", "ineligible": "ineligible", "partial": "unreachable"}
        status = "in_progress" if outcome == "partial" else outcome
        attempts = rng.randint(1, 3)
        yield "round_targets", (
            target, round_id, target, village, phone, state[outcome], attempts, outcome, when, status, when, 0
        )  # fmt: skip
        response += 1
        yield "responses", (response, round_id, target, status, 0, 9, when, when, when, False)
        given = {"consent": "2" if outcome == "refused" else "1"}
        if outcome != "refused":
            given["screen"] = "2" if outcome == "ineligible" else "1"
        if outcome in ("completed", "partial"):
            given["security"] = _pick(rng, {"1": 0.55, "2": 0.3, "3": 0.07, "4": 0.03, "0": 0.05})
            if given["security"] in ("3", "4"):
                given["concern"] = str(rng.randint(1, 5))
            given["awareness"] = _pick(rng, {"1": 0.9, "2": 0.1})
            given["participation"] = _pick(rng, {"1": 0.7, "2": 0.3})
            given["satisfaction"] = _pick(rng, {"1": 0.6, "2": 0.28, "3": 0.05, "4": 0.02, "0": 0.05})
            given["cadre_contact"] = _pick(rng, {"1": 0.85, "2": 0.1, "0": 0.05})
            if given["security"] in ("3", "4") or given["satisfaction"] in ("3", "4"):
                given["visit"] = _pick(rng, {"1": 0.6, "2": 0.4})
            if outcome == "partial":
                given = dict(list(given.items())[: rng.randint(3, 5)])
        for question, digit in given.items():
            answer_id += 1
            answers += 1
            counted = outcome == "completed"
            yield "answers", (answer_id, response, round_id, village, counted, question, digit, 1, 0, 0, when, when)


def create_round(engine: Engine, name: str) -> int:
    sessions = make_session_factory(engine)
    with session_scope(sessions) as session:
        version = store_version(session, builtin_questionnaire())
        round_ = Round(
            name=name,
            questionnaire_id=version.id,
            status=RoundStatus.COMPLETED,
            windows=[["09:00", "20:30"]],
            retry={"no-answer": 7200},
            launched_at=datetime.now(UTC) - timedelta(days=3),
            finished_at=datetime.now(UTC),
        )
        session.add(round_)
        session.flush()
        return round_.id


def load(engine: Engine, answers_wanted: int) -> tuple[int, dict[str, int]]:
    """Create the round and bulk-load its roster, targets, responses and answers. Returns the round id."""
    round_id = create_round(engine, f"基准轮次 {answers_wanted}")
    counts = dict.fromkeys(COLUMNS, 0)
    batches: dict[str, list[tuple]] = {table: [] for table in COLUMNS}
    order = list(COLUMNS)  # parents before children, for the foreign keys
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            # COPY per table, in dependency order, from a spooled stream of rows per table.
            spools = {table: tempfile.TemporaryFile("w+", encoding="utf-8") for table in COLUMNS}
            for table, row in generate(answers_wanted, round_id):
                spools[table].write("\t".join(_copy_value(value) for value in row) + "\n")
                counts[table] += 1
            with raw.cursor() as cursor:
                for table in order:
                    spool = spools[table]
                    spool.seek(0)
                    with cursor.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as copy:
                        while chunk := spool.read(1 << 20):
                            copy.write(chunk)
                    spool.close()
                for table in order:
                    cursor.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                    )
                cursor.execute("ANALYZE")
            raw.commit()
        finally:
            raw.close()
        return round_id, counts

    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN")
        statements = {
            table: f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            for table, cols in COLUMNS.items()
        }

        def flush(upto: int) -> None:
            for table in order[: upto + 1]:
                if batches[table]:
                    cursor.executemany(statements[table], batches[table])
                    batches[table].clear()

        for table, row in generate(answers_wanted, round_id):
            batches[table].append(tuple(_sqlite_value(value) for value in row))
            counts[table] += 1
            if len(batches["answers"]) >= 50_000:
                flush(len(order) - 1)
        flush(len(order) - 1)
        cursor.execute("COMMIT")
        cursor.execute("ANALYZE")
        cursor.close()
    finally:
        raw.close()
    return round_id, counts


def _copy_value(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _sqlite_value(value):
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value


# --- scratch databases ----------------------------------------------------------------------------------


class Scratch:
    """A database of the benchmark's own: a temporary SQLite file or a PostgreSQL schema, dropped on exit."""

    def __init__(self, kind: str, postgres_url: str):
        self.kind = kind
        self.postgres_url = postgres_url
        self.url = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._schema = ""

    def __enter__(self) -> Scratch:
        if self.kind == "sqlite":
            self._tmp = tempfile.TemporaryDirectory(prefix="sanlv-bench-")
            self.url = f"sqlite:///{Path(self._tmp.name) / 'bench.db'}"
        else:
            self._schema = f"sanlv_bench_{os.getpid()}_{secrets.token_hex(3)}"
            admin = make_engine(self.postgres_url)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self._schema}"'))
            admin.dispose()
            separator = "&" if "?" in self.postgres_url else "?"
            self.url = f"{self.postgres_url}{separator}options=-csearch_path%3D{self._schema}"
        upgrade(self.url)
        return self

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
        if self._schema:
            admin = make_engine(self.postgres_url)
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{self._schema}" CASCADE'))
            admin.dispose()


# --- measurements ---------------------------------------------------------------------------------------


def interleaved(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[float, float]]:
    """(best, median) seconds of each run, after one warm-up each.

    The runs take turns (raw, rates, raw, rates, ...) so that a burst of load from elsewhere on the machine
    hits all of them alike instead of one whole series.
    """
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: (min(values), statistics.median(values)) for name, values in times.items()}


def measure_rates(engine: Engine, round_id: int, repeat: int) -> dict[str, tuple[float, float]]:
    """The raw GROUP BY, the whole report, and the report's two queries on their own."""
    from reports import rates as module
    from reports.rates import village_rates

    sessions = make_session_factory(engine)
    questions = ["security", "awareness", "participation", "satisfaction", "cadre_contact", "visit"]

    def raw() -> None:
        with engine.connect() as conn:
            conn.execute(text(RAW_GROUP_BY), {"round_id": round_id}).all()

    def report() -> None:
        with sessions() as session:
            village_rates(session, round_id)

    def answers_query() -> None:
        with sessions() as session:
            module._answer_counts(session, round_id, questions)

    def progress_query() -> None:
        with sessions() as session:
            module._village_progress(session, round_id)

    # Everything but the two queries (the round, its questionnaire, the previous round, folding, ranks,
    # intervals, flags): the report with both queries answered from memory.
    with sessions() as session:
        answers_rows = module._answer_counts(session, round_id, questions)
        progress_rows = module._village_progress(session, round_id)

    def rest() -> None:
        real = module._answer_counts, module._village_progress
        module._answer_counts = lambda *_args: answers_rows
        module._village_progress = lambda *_args: progress_rows
        try:
            with sessions() as session:
                village_rates(session, round_id)
        finally:
            module._answer_counts, module._village_progress = real

    return interleaved(
        {
            "raw": raw,
            "rates": report,
            "answers_query": answers_query,
            "progress_query": progress_query,
            "rest": rest,
        },
        repeat,
    )


EXPORTS = (
    ("rates.csv", "rates", "csv"),
    ("rates.xlsx", "rates", "xlsx"),
    ("followups.csv", "followups", "csv"),
    ("followups.xlsx", "followups", "xlsx"),
)


def _write_export(session: Session, round_id: int, kind: str, fmt: str, path: Path) -> None:
    """What ``sanlv report rates|followups --format csv|xlsx --output FILE`` does, the session kept open."""
    from reports.followups import followup_report
    from reports.rates import village_rates
    from reports.render import render

    if kind == "rates":
        report = village_rates(session, round_id)
    else:
        report = followup_report(session, round_id, stream=True)
    with path.open("wb") as handle:
        render(report, fmt, handle)


def export_peaks(engine: Engine, round_id: int) -> tuple[int, dict[str, int]]:
    """(follow-up items, tracemalloc peak in bytes of each export written to a scratch file)."""
    from sqlalchemy import func, select

    from campaigns.followups import sync_followups
    from campaigns.models import FollowUp

    sessions = make_session_factory(engine)
    with session_scope(sessions) as session:
        sync_followups(session, round_id)
        items = session.scalar(select(func.count()).select_from(FollowUp).where(FollowUp.round_id == round_id)) or 0
    peaks: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="sanlv-bench-export-") as folder:
        for name, kind, fmt in EXPORTS:
            path = Path(folder) / name
            # Once untraced first: compiled-statement caches and lazy imports are paid once per process, and
            # would otherwise land on whichever round size happens to be measured first.
            with sessions() as session:
                _write_export(session, round_id, kind, fmt, path)
            with sessions() as session:
                tracemalloc.start()
                try:
                    _write_export(session, round_id, kind, fmt, path)
                    peaks[name] = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
    return items, peaks


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def run(kind: str, answers: int, repeat: int, postgres_url: str, memory_sizes: list[int]) -> dict:
    results: dict = {"db": kind, "answers": answers}
    with Scratch(kind, postgres_url) as scratch:
        engine = make_engine(scratch.url)
        try:
            start = time.perf_counter()
            round_id, counts = load(engine, answers)
            results["load_seconds"] = time.perf_counter() - start
            results["rows"] = counts
            print(
                f"[{kind}] loaded {counts['answers']:,} answers, {counts['responses']:,} responses, "
                f"{counts['round_targets']:,} targets, {VILLAGES} villages in {results['load_seconds']:.1f}s",
                flush=True,
            )
            timing = measure_rates(engine, round_id, repeat)
            results["timing"] = timing
            ratio = timing["rates"][0] / timing["raw"][0]
            results["ratio"] = ratio
            print(
                f"[{kind}] raw GROUP BY {ms(timing['raw'][0])} ms (median {ms(timing['raw'][1])}); "
                f"village_rates {ms(timing['rates'][0])} ms (median {ms(timing['rates'][1])}); "
                f"ratio {ratio:.2f}x (goal <= 2x)",
                flush=True,
            )
            print(
                f"[{kind}]   of which: answers per village {ms(timing['answers_query'][0])} ms, "
                f"progress per village {ms(timing['progress_query'][0])} ms, the rest {ms(timing['rest'][0])} ms",
                flush=True,
            )
            if memory_sizes and memory_sizes[-1] == answers:
                results.setdefault("memory", {})[answers] = export_peaks(engine, round_id)
        finally:
            engine.dispose()
    for size in memory_sizes[:-1]:
        with Scratch(kind, postgres_url) as scratch:
            engine = make_engine(scratch.url)
            try:
                round_id, _counts = load(engine, size)
                results.setdefault("memory", {})[size] = export_peaks(engine, round_id)
            finally:
                engine.dispose()
    if "memory" in results:
        sizes = sorted(results["memory"])
        print(f"[{kind}] export memory, tracemalloc peak (KiB):", flush=True)
        print("    " + f"{'export':<16}" + "".join(f"{f'{size:,} answers':>18}" for size in sizes))
        print("    " + f"{'(follow-ups)':<16}" + "".join(f"{results['memory'][size][0]:>18,}" for size in sizes))
        for name, _kind, _fmt in EXPORTS:
            print(
                "    " + f"{name:<16}" + "".join(f"{results['memory'][size][1][name] / 1024:>18,.0f}" for size in sizes)
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=1_000_000, help="answers in the benchmark round")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs after a warm-up (best is reported)")
    parser.add_argument("--postgres-url", default=os.environ.get("SANLV_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--no-memory", action="store_true", help="skip the export memory measurement")
    args = parser.parse_args(argv)
    if args.answers < 10_000:
        parser.error("--answers must be at least 10000")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    # A fifth and all: even the smaller round's follow-up list spans more than two fetch batches.
    memory_sizes = [] if args.no_memory else [args.answers // 5, args.answers]
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    summary = [
        run(kind, args.answers, args.repeat, args.postgres_url, memory_sizes) for kind in kinds
    ]
    print(f"\nsummary (best of {args.repeat}):")
    print(f"    {'db':<10}{'answers':>12}{'raw ms':>10}{'rates ms':>10}{'ratio':>8}")
    for result in summary:
        print(
            f"    {result['db']:<10}{result['rows']['answers']:>12,}{ms(result['timing']['raw'][0]):>10}"
            f"{ms(result['timing']['rates'][0]):>10}{result['ratio']:>7.2f}x"
        )
    print(f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
