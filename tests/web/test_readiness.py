"""``/readyz`` with each dependency taken away in turn: a private redis-server stopped, a database left at an old
migration or not answering, no worker running. The app is the real one over real HTTP; the worker is a real
``sanlv worker`` process; the body names the failing parts and nothing else (no address, no error text)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from rq import Worker

from campaigns.db import make_engine
from campaigns.migrate import head_revision, upgrade_engine
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings
from tests.conftest import TEST_SECRET_KEY
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, RedisServerError
from tests.support.twilio_standin import process_environment
from tests.support.workers import start_workers, stop_workers
from web.app import create_app
from workers.queues import redis_connection


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tmp_path).start()
    except RedisServerError as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


class Served:
    """The app for ``settings`` over HTTP on loopback (a new server for each configuration)."""

    def __init__(self, settings: Settings):
        from werkzeug.serving import make_server

        self.runtime = Runtime(settings)
        set_runtime(self.runtime)
        port = free_port()
        self.server = make_server("127.0.0.1", port, create_app(self.runtime), threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{port}"

    def readyz(self) -> requests.Response:
        return requests.get(self.url + "/readyz", timeout=30)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        self.runtime.dispose()
        set_runtime(None)


@pytest.fixture
def serve() -> Iterator:
    served: list[Served] = []

    def start(settings: Settings) -> Served:
        served.append(Served(settings))
        return served[-1]

    yield start
    for one in served:
        one.close()


def assert_reveals_nothing(response: requests.Response, settings: Settings) -> None:
    text = response.text
    for secret in (settings.database_url, settings.redis_url, str(settings.redis_url).rsplit(":", 1)[-1], "Traceback",
                   "Error(", "127.0.0.1", "postgres", TEST_SECRET_KEY):  # fmt: skip
        assert secret not in text, secret


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_ready_only_with_database_migrations_redis_and_a_worker(database_url, own_redis, serve, tmp_path):
    settings = Settings(
        database_url=database_url, redis_url=own_redis.url, secret_key=TEST_SECRET_KEY,
        namespace=f"ready-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    app = serve(settings)

    # No worker yet.
    reply = app.readyz()
    assert reply.status_code == 503
    assert reply.json()["status"] == "not ready"
    assert reply.json()["checks"] == {
        "database": "ok", "migrations": "ok", "redis": "ok",
        "workers": "no worker has a heartbeat (is sanlv worker running?)",
    }  # fmt: skip
    assert_reveals_nothing(reply, settings)

    # A real worker: ready.
    workers = start_workers(1, process_environment(settings), tmp_path / "worker.log")
    try:
        conn = redis_connection(settings)
        wait_for(lambda: Worker.count(connection=conn) >= 1, 60, "the worker to register")
        reply = app.readyz()
        assert reply.status_code == 200, reply.text
        assert reply.json() == {
            "status": "ready",
            "checks": {"database": "ok", "migrations": "ok", "redis": "ok", "workers": "ok"},
            "workers": 1,
        }

        # Redis stopped: Redis named, and the workers cannot be known.
        own_redis.stop()
        reply = app.readyz()
        assert reply.status_code == 503
        checks = reply.json()["checks"]
        assert checks["redis"] == "Redis does not answer"
        assert checks["workers"] == "unknown: Redis does not answer"
        assert (checks["database"], checks["migrations"]) == ("ok", "ok")
        assert_reveals_nothing(reply, settings)
        own_redis.start()
    finally:
        stop_workers(workers)

    # The worker stopped (a warm shutdown unregisters it): not ready again, the workers named.
    wait_for(lambda: app.readyz().status_code == 503, 30, "the stopped worker to be noticed")
    assert app.readyz().json()["checks"]["workers"].startswith("no worker has a heartbeat")


def test_a_database_at_an_old_migration_is_named_with_both_revisions(own_redis, serve, tmp_path):
    old = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(old)
    upgrade_engine(engine, "0003_accounts")
    engine.dispose()
    settings = Settings(database_url=old, redis_url=own_redis.url, secret_key=TEST_SECRET_KEY, namespace="old-db")
    reply = serve(settings).readyz()
    assert reply.status_code == 503
    assert reply.json()["checks"]["migrations"] == (
        f"the database is at migration 0003_accounts, this release needs {head_revision()}: run sanlv db upgrade"
    )
    assert reply.json()["checks"]["database"] == "ok"
    assert_reveals_nothing(reply, settings)

    never = f"sqlite:///{tmp_path / 'empty.db'}"
    make_engine(never).dispose()
    reply = serve(replace(settings, database_url=never)).readyz()
    assert reply.json()["checks"]["migrations"].startswith("the database is at migration none,")


def test_a_database_that_does_not_answer_is_named(own_redis, serve):
    port = free_port()  # nothing listens there
    settings = Settings(
        database_url=f"postgresql+psycopg://sanlv:pw-{uuid.uuid4().hex}@127.0.0.1:{port}/sanlv?connect_timeout=3",
        redis_url=own_redis.url, secret_key=TEST_SECRET_KEY, namespace="no-db",
    )  # fmt: skip
    reply = serve(settings).readyz()
    assert reply.status_code == 503
    assert reply.json()["checks"]["database"] == "the database does not answer"
    assert "migrations" in reply.json()["checks"] and reply.json()["checks"]["redis"] == "ok"
    assert_reveals_nothing(reply, settings)
    assert "pw-" not in reply.text


def test_healthz_stays_up_when_nothing_else_is(serve, tmp_path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'missing' / 'x.db'}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0", secret_key=TEST_SECRET_KEY,
    )  # fmt: skip
    app = serve(settings)
    assert requests.get(app.url + "/healthz", timeout=10).json() == {"status": "ok"}
    reply = app.readyz()
    assert reply.status_code == 503
    assert set(reply.json()["checks"]) == {"database", "migrations", "redis", "workers"}
