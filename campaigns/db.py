"""Database plumbing: the declarative Base, engines and sessions.

Nothing connects at import time. Services take a ``Session`` and never commit; the caller (a request, a job,
a CLI command) owns the transaction, usually through :func:`session_scope`.

Two kinds of session:

- :func:`make_session_factory`: the ordinary one, for work that writes. On SQLite its transactions begin with
  ``BEGIN IMMEDIATE``: they take the database's one write lock at once, so a transaction that reads and then
  writes (a claim) never finds its snapshot overtaken (SQLite would refuse the write with SQLITE_BUSY at once,
  without waiting), and writers queue for the lock instead.
- :func:`make_read_session_factory`: for reads that must not wait for writers nor make them wait (the
  interview reads its state with one, then writes in a short write transaction; see campaigns.interview). On
  SQLite its transactions begin with a plain deferred ``BEGIN``: in WAL mode that is a snapshot that takes no
  lock a writer needs. On PostgreSQL they are ``READ ONLY`` (a write in one is an error, which the test suite
  would show). Nothing may be written in one: on SQLite a deferred transaction that tries to write can fail
  with SQLITE_BUSY without waiting.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC. Stored naive-UTC in the database (see UTCDateTime)."""
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - exercised by every sqlite test
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# The execution option that marks a read session's connections (see make_read_session_factory).
READ_ONLY = "sanlv_read_only"


def _sqlite_begin(conn) -> None:
    # SQLAlchemy fires "begin" for every transaction, whatever the isolation level: a read session's begins
    # deferred (no lock until it reads, and never the write lock), every other one takes the write lock.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine for ``url``.

    SQLite gets WAL, foreign keys and a busy timeout, since the web app, workers and CLI share one file.
    """
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
            # One in-memory database exists per connection: keep exactly one.
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN and breaks SELECT ... then UPDATE claims; take it over.
        event.listen(engine, "connect", lambda conn, _r: setattr(conn, "isolation_level", None))
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


# A pooled connection idle for longer than this is pinged before use; one used more recently is not.
PING_IDLE_AFTER = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only if it sat idle for PING_IDLE_AFTER seconds or more.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip per webhook, when a connection handed
    back a moment ago is all but certainly alive. An idle one (the server may have restarted, a firewall may
    have dropped it) is pinged, and replaced if it is gone (raising DisconnectionError makes the pool connect
    afresh). A connection that died within the last second fails on its first statement instead; SQLAlchemy
    then invalidates the pool's older connections, and the webhooks retry once (ivr.views.in_transaction).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        checked_in = record.info.get("checked_in")
        if checked_in is None or time.monotonic() - checked_in < PING_IDLE_AFTER:
            return  # new, or in use a moment ago
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError(f"pooled connection is gone: {exc}") from exc
            raise


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose transactions only read, and take no lock that a writer waits for (see the module's
    docstring). Close them (or roll back) when done; there is nothing to commit."""
    options = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    return sessionmaker(bind=engine.execution_options(**options), expire_on_commit=False)


@contextlib.contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
