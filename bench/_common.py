"""Helpers shared by the dialler benchmarks (bench/dial_rate.py, bench/round_create.py): scratch databases
migrated with the real Alembic migrations, bulk-loaded rosters, a private redis-server, worker processes.

Nothing here is a benchmark by itself; it is imported by them, first (``from _common import ...``): importing
it puts the repository root on ``sys.path``, so that ``tests.support`` (the testing package the suite uses too)
imports whatever the current directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402 - after the path above

from campaigns.db import make_engine  # noqa: E402
from campaigns.migrate import upgrade  # noqa: E402
from tests.support.ports import free_port  # noqa: E402, F401 - the benchmarks' free_port
from tests.support.redis_server import RedisServer, RedisServerError  # noqa: E402
from tests.support.workers import start_workers, stop_workers  # noqa: E402, F401 - the benchmarks' workers

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NOW = datetime(2026, 3, 2, 1, 0)  # naive UTC, as the UTCDateTime columns store it


@contextlib.contextmanager
def scratch_database(kind: str, postgres_url: str = DEFAULT_POSTGRES_URL) -> Iterator[str]:
    """A migrated, empty database of its own: a temporary SQLite file, or a PostgreSQL schema. Dropped after."""
    if kind == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="sanlv-bench-"))
        url = f"sqlite:///{folder / 'bench.db'}"
        try:
            upgrade(url)
            yield url
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    schema = f"sanlv_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = make_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def load_roster(url: str, households: int, villages: int = 200, cadres_per_village: int = 4) -> None:
    """Bulk-insert a roster of ``households`` phone numbers (setup, not measured)."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO villages (id, name, created_at) VALUES (:id, :name, :at)"),
            [{"id": v, "name": f"村{v:03d}", "at": NOW} for v in range(1, villages + 1)],
        )
        cadres = villages * cadres_per_village
        conn.execute(
            text("INSERT INTO cadres (id, name, phone, created_at) VALUES (:id, :name, :phone, :at)"),
            [{"id": c, "name": f"干部{c:04d}", "phone": f"+86139{c:08d}", "at": NOW} for c in range(1, cadres + 1)],
        )
        chunk = 20_000
        for start in range(0, households, chunk):
            conn.execute(
                text(
                    "INSERT INTO households (id, phone, name, village_id, cadre_id, phone_status, created_at, updated_at)"
                    " VALUES (:id, :phone, NULL, :village, :cadre, 'ok', :at, :at)"
                ),
                [
                    {
                        "id": h,
                        "phone": f"+86138{h:08d}",
                        "village": (h - 1) % villages + 1,
                        "cadre": (h - 1) % cadres + 1,
                        "at": NOW,
                    }
                    for h in range(start + 1, min(households, start + chunk) + 1)
                ],
            )
        if url.startswith("postgresql"):
            for table in ("villages", "cadres", "households"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
            conn.execute(text("ANALYZE"))
    engine.dispose()


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the benchmark's own on a free loopback port (never the shared one)."""
    folder = tempfile.mkdtemp(prefix="sanlv-bench-redis-")
    try:
        server = RedisServer(folder).start()
    except RedisServerError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise SystemExit(str(exc)) from None
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def utcnow() -> datetime:
    return datetime.now(UTC)
