"""Database plumbing: the declarative Base, engines and sessions.

Nothing connects at import time. Services take a ``Session`` and never commit; the caller (a request, a job,
a CLI command) owns the transaction, usually through :func:`session_scope`.

Two kinds of session:

- :func:`make_session_factory`: the ordinary one, for work that writes. On SQLite its transactions begin with
  ``BEGIN IMMEDIATE``: they take the database's one write lock at once, so a transaction that reads and then
  writes (a claim) never finds its snapshot overtaken (SQLite would refuse the write with SQLITE_BUSY at once,
  without waiting), and writers queue for the lock instead. Within one process they queue in turn (see
  :class:`WriteGate`); across processes SQLite's busy timeout makes them wait.
- :func:`make_read_session_factory`: for reads that must not wait for writers nor make them wait (the
  interview reads its state with one, then writes in a short write transaction; see campaigns.interview). Each
  statement runs in autocommit: on SQLite (WAL) it reads a snapshot of the last commit and takes no lock a
  writer needs; on PostgreSQL no BEGIN or ROLLBACK round trip is spent on it. A read of several statements
  does not see one snapshot: callers that decide on such a read must check, when they write, that what they
  read still holds (the interview's conditional UPDATE does). A write through one is refused
  (:class:`ReadOnlyError`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import deque
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


BUSY_TIMEOUT = 30  # seconds a SQLite writer waits for the write lock before giving up


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - exercised by every sqlite test
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT * 1000}")
    cursor.close()


# The execution option that marks a read session's connections (see make_read_session_factory).
READ_ONLY = "sanlv_read_only"


class WriteGate:
    """The writers of one SQLite database in this process, served one at a time in order of arrival.

    SQLite has one write lock per database. A ``BEGIN IMMEDIATE`` that finds it taken waits in SQLite's busy
    handler, which polls the lock with growing sleeps (up to 100 ms each): a writer that sleeps through the
    lock's release finds it taken again by one that arrived later, and can lose it again and again, however
    briefly each holds it. With sixteen calls at once, webhooks whose transactions held the lock for a
    millisecond waited over a second for it. So the writers of a process queue here first, and each is woken
    the moment the one before it ends; ``BEGIN IMMEDIATE`` then waits only for other processes.

    A turn begins before ``BEGIN IMMEDIATE`` and ends when the connection commits, rolls back or closes
    (:class:`_SQLiteConnection`). A writer that waits longer than the busy timeout goes on without its turn
    (and SQLite's own wait decides). A child process starts with an empty queue.
    """

    def __init__(self, timeout: float = BUSY_TIMEOUT):
        self.timeout = timeout
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False

    def acquire(self) -> bool:
        """Wait for this writer's turn; False if it did not come within the timeout."""
        with self._mutex:
            if self._pid != os.getpid():
                self._reset()  # forked: the queue and its holder were the parent's
            if not self._held:
                self._held = True
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=self.timeout):
            return True  # handed over by release()
        with self._mutex:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                return True  # handed over just as the wait timed out
        return False

    def release(self) -> None:
        """End the current turn: hand it to the longest waiting writer, if any."""
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


class _SQLiteConnection(sqlite3.Connection):
    """pysqlite's connection, ending its writer's turn at the gate (:class:`WriteGate`) when its transaction
    does. Each engine has a subclass whose ``gate`` is the engine's."""

    gate: WriteGate
    in_turn = False

    def begin_write(self) -> None:
        self.in_turn = self.gate.acquire()
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.end_turn()
            raise

    def end_turn(self) -> None:
        if self.in_turn:
            self.in_turn = False
            self.gate.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.end_turn()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.end_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.end_turn()


def _sqlite_begin(conn) -> None:
    # SQLAlchemy fires "begin" for every transaction, even on a connection meant to run in autocommit: a read
    # session's connection begins nothing (pysqlite then runs each statement in autocommit, taking no lock a
    # writer needs), every other one takes the write lock in its turn.
    if not conn.get_execution_options().get(READ_ONLY):
        conn.connection.dbapi_connection.begin_write()


class ReadOnlyError(RuntimeError):
    """A statement that writes was run through a read session (a bug: reads and writes would not be one
    transaction, and on SQLite the write would skip the writers' queue)."""


def _refuse_writes(conn, _cursor, statement, _parameters, context, _executemany) -> None:
    if context is not None and context.execution_options.get(READ_ONLY):
        if context.isinsert or context.isupdate or context.isdelete:
            raise ReadOnlyError(f"a read session may not write: {statement[:80]}")


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine for ``url``.

    SQLite gets WAL, foreign keys and a busy timeout, since the web app, workers and CLI share one file, and
    its writers queue at a :class:`WriteGate` of the engine's.
    """
    if url.startswith("sqlite"):
        gated = type("_GatedSQLiteConnection", (_SQLiteConnection,), {"gate": WriteGate()})
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT, "check_same_thread": False, "factory": gated,
                                  **kwargs.get("connect_args", {})}  # fmt: skip
        if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
            # One in-memory database exists per connection: keep exactly one.
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN and breaks SELECT ... then UPDATE claims; take it over.
        event.listen(engine, "connect", lambda conn, _r: setattr(conn, "isolation_level", None))
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "before_cursor_execute", _refuse_writes)
        return engine
    engine = create_engine(url, **kwargs)
    event.listen(engine, "before_cursor_execute", _refuse_writes)
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
    if engine.dialect.name != "sqlite":
        # pysqlite is in autocommit already (see make_engine); setting it through SQLAlchemy would have it
        # reset pysqlite's own transaction handling when the connection goes back to the pool.
        options["isolation_level"] = "AUTOCOMMIT"
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
