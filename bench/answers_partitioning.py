"""Benchmark: the answers table partitioned by round (PostgreSQL ``PARTITION BY LIST (round_id)``) against the
plain table of the current schema, holding the same rows, measured in the same run.

    python bench/answers_partitioning.py [--rounds 10] [--answers-per-round 200000] [--repeat 3]
                                         [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

In a PostgreSQL schema of its own (migrated with the real Alembic migrations, dropped at the end) it creates
two copies of ``answers`` with its columns and indexes: ``answers_flat`` (as today, one table) and
``answers_part`` (one partition per round; the primary key and the unique key then include ``round_id``, as
PostgreSQL requires of a partitioned table). Both get the same ``--rounds`` x ``--answers-per-round`` rows
(8 questions per response, 200 villages), then VACUUM ANALYZE. It prints, each the best of ``--repeat``:

- ``rates of one round``: the village roll-up the rates report runs (``GROUP BY village_id, question, digit``
  over one round's counted answers), flat vs partitioned;
- ``retire one round``: deleting one round's answers (``DELETE ... WHERE round_id``, what retention does to a
  plain table) vs detaching and dropping its partition (measured once each, on different rounds);
- the size on disk of each table with its indexes, and bytes per answer.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from _common import DEFAULT_POSTGRES_URL, scratch_database
from sqlalchemy import text

from campaigns.db import make_engine

COLUMNS = (
    "id, response_id, round_id, village_id, counted, question, digit, attempt_id, tries, invalid_keys, silences,"
    " seconds_to_answer, created_at, updated_at"
)


def fill(conn, table: str, rounds: int, per_round: int) -> None:
    conn.execute(
        text(
            f"INSERT INTO {table} ({COLUMNS})"
            " SELECT g, (g - 1) / 8 + 1, (g - 1) / :per_round + 1, (g / 8) % 200 + 1, (g % 10) <> 0,"
            " 'q' || (g % 8), ((g * 7) % 5)::text, NULL, 1, 0, 0, 3.5, now(), now()"
            " FROM generate_series(1, :total) AS g"
        ),
        {"per_round": per_round, "total": rounds * per_round},
    )


def timed(action: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--answers-per-round", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", choices=["postgres"], default="postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    if args.rounds < 3 or args.answers_per_round < 8:
        parser.error("--rounds must be at least 3 and --answers-per-round at least 8")
    rounds, per_round = args.rounds, args.answers_per_round
    print(f"answers partitioned by round: {rounds} rounds x {per_round} answers on PostgreSQL", flush=True)
    with scratch_database("postgres", args.postgres_url) as url:
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE answers_flat (LIKE answers INCLUDING DEFAULTS INCLUDING INDEXES)"))
                conn.execute(
                    text(
                        "CREATE TABLE answers_part (LIKE answers INCLUDING DEFAULTS) PARTITION BY LIST (round_id)"
                    )
                )
                conn.execute(text("ALTER TABLE answers_part ADD PRIMARY KEY (round_id, id)"))
                conn.execute(text("CREATE UNIQUE INDEX ON answers_part (round_id, response_id, question)"))
                for r in range(1, rounds + 1):
                    conn.execute(text(f"CREATE TABLE answers_part_{r} PARTITION OF answers_part FOR VALUES IN ({r})"))
                started = time.perf_counter()
                fill(conn, "answers_flat", rounds, per_round)
                flat_load = time.perf_counter() - started
                started = time.perf_counter()
                fill(conn, "answers_part", rounds, per_round)
                part_load = time.perf_counter() - started
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE answers_flat"))
                conn.execute(text("VACUUM ANALYZE answers_part"))
            print(f"loaded: flat {flat_load:.1f} s, partitioned {part_load:.1f} s", flush=True)

            def sizes() -> tuple[int, int]:
                with engine.connect() as conn:
                    flat = conn.execute(text("SELECT pg_total_relation_size('answers_flat')")).scalar()
                    part = conn.execute(
                        text(
                            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                            " WHERE inhparent = 'answers_part'::regclass"
                        )
                    ).scalar()
                return int(flat), int(part)

            flat_size, part_size = sizes()
            rollup = (
                "SELECT village_id, question, digit, count(*) FROM {table}"
                " WHERE round_id = :r AND counted GROUP BY village_id, question, digit"
            )
            middle = rounds // 2

            def query(table: str) -> Callable[[], object]:
                def run() -> object:
                    with engine.connect() as conn:
                        return conn.execute(text(rollup.format(table=table)), {"r": middle}).all()

                return run

            query("answers_flat")()  # warm both
            query("answers_part")()
            flat_q = timed(query("answers_flat"), args.repeat)
            part_q = timed(query("answers_part"), args.repeat)

            started = time.perf_counter()
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM answers_flat WHERE round_id = 1"))
            flat_retire = time.perf_counter() - started
            started = time.perf_counter()
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE answers_part DETACH PARTITION answers_part_2"))
                conn.execute(text("DROP TABLE answers_part_2"))
            part_retire = time.perf_counter() - started
        finally:
            engine.dispose()
    total = rounds * per_round
    print()
    print(f"{'':<22} {'flat':>10} {'partitioned':>12} {'flat / partitioned':>19}")
    print(
        f"{'rates of one round':<22} {flat_q[0] * 1000:>8.1f}ms {part_q[0] * 1000:>10.1f}ms"
        f" {flat_q[0] / part_q[0]:>18.2f}x   (best of {args.repeat}; medians {flat_q[1] * 1000:.1f} / "
        f"{part_q[1] * 1000:.1f} ms)"
    )
    print(
        f"{'retire one round':<22} {flat_retire * 1000:>8.1f}ms {part_retire * 1000:>10.1f}ms"
        f" {flat_retire / part_retire:>18.1f}x   (DELETE vs DETACH + DROP; the DELETE also leaves dead rows"
        " for VACUUM)"
    )
    print(
        f"{'size with indexes':<22} {flat_size / 1e6:>8.1f}MB {part_size / 1e6:>10.1f}MB"
        f"   bytes per answer: {flat_size / total:.0f} flat, {part_size / total:.0f} partitioned"
    )


if __name__ == "__main__":
    main()
