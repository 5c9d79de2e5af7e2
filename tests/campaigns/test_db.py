"""Engines: pooled PostgreSQL connections are pinged only after sitting idle, and replaced if they are gone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from campaigns import db
from tests.conftest import TEST_DATABASE_URL, is_postgres


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    if not is_postgres():
        pytest.skip("kills PostgreSQL server processes")
    engine = db.make_engine(TEST_DATABASE_URL, pool_size=1)
    yield engine
    engine.dispose()


def pooled_pid_killed(engine: Engine, killer: Engine) -> int:
    """Use the pool's one connection, hand it back, then end its server process."""
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with killer.begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    return pid


def test_an_idle_connection_that_is_gone_is_replaced_before_use(
    pg_engine: Engine, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = pooled_pid_killed(pg_engine, engine)
    monkeypatch.setattr(db, "PING_IDLE_AFTER", 0.0)  # it has been idle long enough to be pinged

    with pg_engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()

    assert pid != dead


def test_a_connection_used_a_moment_ago_is_not_pinged(
    pg_engine: Engine, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled_pid_killed(pg_engine, engine)
    monkeypatch.setattr(db, "PING_IDLE_AFTER", 3600.0)

    with pytest.raises(DBAPIError) as failed, pg_engine.connect() as conn:
        conn.execute(text("SELECT 1"))

    assert failed.value.connection_invalidated  # what the webhooks' retry looks for (ivr.views)
    with pg_engine.connect() as conn:  # and the pool has replaced it
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
