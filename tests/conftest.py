"""Shared fixtures: a real database (SQLite by default, PostgreSQL with SANLV_TEST_DATABASE_URL) and a real Redis.

The database is migrated with Alembic once per session; each test gets empty tables. Redis uses its own
server of this test run's own (a `redis-server` started on a free loopback port, so parallel runs never
flush each other's queues), or the one at SANLV_TEST_REDIS_URL; it is flushed around each test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from campaigns.db import Base, make_engine, make_session_factory
from campaigns.migrate import upgrade
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings
from sim.cli import register as register_simulator
from web.wiring import wire

for _name in ("TWILIO_REGION", "TWILIO_EDGE"):  # they rewrite the Twilio client's host: tests talk to the stand-in
    os.environ.pop(_name, None)

# As the ``sanlv`` script does at start-up: the dialler hears of round changes; the simulator is a provider.
wire()
register_simulator()

TEST_DATABASE_URL = os.environ.get("SANLV_TEST_DATABASE_URL", "").strip()
TEST_REDIS_URL = os.environ.get("SANLV_TEST_REDIS_URL", "").strip()
WEBHOOK_BASE = "http://127.0.0.1:5000"
# A key `sanlv web` accepts (32+ characters, not an example value); tests sign their sessions with it.
TEST_SECRET_KEY = "sanlv-test-secret-key-0123456789abcdef"


def is_postgres() -> bool:
    return TEST_DATABASE_URL.startswith("postgresql")


@pytest.fixture(scope="session")
def _migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Migrate once: a template SQLite file, or a PostgreSQL schema of this test run's own.

    Each run gets its own PostgreSQL schema (search_path in the URL), so runs sharing one database never
    disturb each other; the schema is dropped at the end.
    """
    if is_postgres():
        schema = f"sanlv_test_{os.getpid()}_{secrets.token_hex(3)}"
        admin = make_engine(TEST_DATABASE_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        separator = "&" if "?" in TEST_DATABASE_URL else "?"
        url = f"{TEST_DATABASE_URL}{separator}options=-csearch_path%3D{schema}"
        upgrade(url)
        yield url
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        return
    template = tmp_path_factory.mktemp("db-template") / "template.db"
    upgrade(f"sqlite:///{template}")
    yield str(template)


@pytest.fixture
def database_url(_migrated: str, tmp_path: Path) -> Iterator[str]:
    if is_postgres():
        engine = make_engine(_migrated)
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        engine.dispose()
        yield _migrated
        return
    path = tmp_path / "sanlv.db"
    shutil.copyfile(_migrated, path)
    yield f"sqlite:///{path}"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture(scope="session")
def _redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test run's Redis: SANLV_TEST_REDIS_URL, else a private redis-server, else 127.0.0.1:6379/15."""
    if TEST_REDIS_URL:
        yield TEST_REDIS_URL
        return
    from tests.support.redis_server import RedisServer, RedisServerError

    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except RedisServerError:  # not installed: the shared Redis, a database of its own
        yield "redis://127.0.0.1:6379/15"
        return
    try:
        server.start()
    except RedisServerError as exc:
        pytest.fail(str(exc))
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(_redis_server: str) -> Iterator[str]:
    conn = redis.Redis.from_url(_redis_server)
    try:
        conn.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - the environment is broken, say so plainly
        pytest.fail(f"Redis is not reachable at {_redis_server}: {exc}")
    conn.flushdb()
    yield _redis_server
    conn.flushdb()
    conn.close()


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def settings(database_url: str, _redis_server: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=_redis_server,
        telephony="simulator",
        public_base_url=WEBHOOK_BASE,
        secret_key=TEST_SECRET_KEY,
    )


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Put the test settings into the environment (for CLI commands and child processes) and the runtime."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("SANLV_TELEPHONY", settings.telephony)
    monkeypatch.setenv("PUBLIC_BASE_URL", settings.public_base_url or "")
    monkeypatch.setenv("SECRET_KEY", settings.secret_key or "")
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "TWILIO_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    set_runtime(Runtime(settings))
    yield settings
    set_runtime(None)


@pytest.fixture
def live_server(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch):
    """The real Flask app over real HTTP on loopback; PUBLIC_BASE_URL points at it.

    Yields the Settings (with ``public_base_url`` = the server's URL). The runtime and the environment carry
    the same settings, so RQ jobs run in this process (or in child processes) see the same database.
    """
    import threading

    from werkzeug.serving import make_server

    from web.app import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    live = Settings(
        database_url=database_url,
        redis_url=redis_url,
        telephony="simulator",
        public_base_url=f"http://127.0.0.1:{port}",
        secret_key=TEST_SECRET_KEY,
        namespace="sanlv-test",
    )
    for name, value in (
        ("DATABASE_URL", live.database_url),
        ("REDIS_URL", live.redis_url),
        ("SANLV_TELEPHONY", "simulator"),
        ("PUBLIC_BASE_URL", live.public_base_url),
        ("SECRET_KEY", TEST_SECRET_KEY),
        ("SANLV_NAMESPACE", live.namespace),
    ):
        monkeypatch.setenv(name, value)
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "TWILIO_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    runtime = Runtime(live)
    set_runtime(runtime)
    server = make_server("127.0.0.1", port, create_app(runtime), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield live
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    set_runtime(None)
