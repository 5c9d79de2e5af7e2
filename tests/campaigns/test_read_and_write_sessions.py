"""Read sessions and write sessions: a read session writes nothing and waits for no writer; SQLite's writers in
one process take turns at the engine's gate, in order of arrival, and a turn ends with its transaction
(commit, rollback, a closed connection)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from campaigns.db import (
    ReadOnlyError,
    WriteGate,
    make_engine,
    make_read_session_factory,
    make_session_factory,
)
from campaigns.models import DoNotCall, Village


def queued(gate: WriteGate, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(gate._waiters) < count:
        assert time.monotonic() < deadline, "the waiter never queued"
        time.sleep(0.001)


def test_waiting_writers_are_served_in_order_of_arrival() -> None:
    gate = WriteGate()
    assert gate.acquire()
    served: list[str] = []

    def writer(name: str) -> None:
        assert gate.acquire()
        served.append(name)
        gate.release()

    threads = []
    for number, name in enumerate("abcde", start=1):
        thread = threading.Thread(target=writer, args=(name,))
        thread.start()
        queued(gate, number)
        threads.append(thread)
    gate.release()
    for thread in threads:
        thread.join(timeout=5)

    assert served == list("abcde")
    assert gate.acquire()  # free again


def test_a_writer_that_waited_too_long_goes_on_without_its_turn() -> None:
    gate = WriteGate(timeout=0.05)
    assert gate.acquire()

    assert gate.acquire() is False

    gate.release()  # nobody is waiting any more: the gate is free, not handed to the one that gave up
    assert gate.acquire()


def _acquire_in_child(gate: WriteGate, result) -> None:
    result.value = int(gate.acquire())


def test_a_child_process_starts_with_a_free_gate() -> None:
    gate = WriteGate(timeout=2)
    assert gate.acquire()  # held by this process when it forks
    result = multiprocessing.get_context("fork").Value("i", -1)
    child = multiprocessing.get_context("fork").Process(target=_acquire_in_child, args=(gate, result))
    child.start()
    child.join(timeout=10)

    assert child.exitcode == 0 and result.value == 1


@pytest.fixture
def sqlite_engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
    yield engine
    engine.dispose()


def gate_of(engine) -> WriteGate:
    with engine.connect() as conn:
        return type(conn.connection.dbapi_connection).gate


@pytest.mark.parametrize("ending", ["commit", "rollback", "close", "invalidate"])
def test_a_turn_ends_with_its_transaction(sqlite_engine, ending) -> None:
    gate = gate_of(sqlite_engine)
    conn = sqlite_engine.connect()
    conn.execute(text("INSERT INTO t VALUES (1)"))
    assert gate._held

    if ending in ("commit", "rollback"):
        getattr(conn, ending)()
    elif ending == "close":
        conn.close()
    else:
        conn.invalidate()

    assert not gate._held
    conn.close()


def test_the_next_writer_waits_at_the_gate_and_a_reader_does_not(sqlite_engine) -> None:
    sessions, reads = make_session_factory(sqlite_engine), make_read_session_factory(sqlite_engine)
    gate = gate_of(sqlite_engine)
    holder = sessions()
    holder.execute(text("INSERT INTO t VALUES (1)"))
    wrote = threading.Event()

    def writer() -> None:
        with sessions.begin() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
        wrote.set()

    thread = threading.Thread(target=writer)
    thread.start()
    queued(gate, 1)  # the second writer waits at the gate, not in SQLite's busy handler
    with reads() as session:  # a reader goes on: it sees the last committed state
        assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
    assert not wrote.is_set()

    holder.commit()
    holder.close()
    thread.join(timeout=5)

    assert wrote.is_set()
    with reads() as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 2
    assert not gate._held


def test_a_read_session_refuses_to_write_and_sees_what_is_committed(engine, sessions) -> None:
    reads = make_read_session_factory(engine)
    with sessions.begin() as session:
        session.add(Village(name="东村"))

    with reads() as session:
        assert session.scalars(select(Village.name)).all() == ["东村"]
        session.add(DoNotCall(phone="+8613800000001", reason="test"))
        with pytest.raises(ReadOnlyError, match="a read session may not write"):
            session.flush()

    with sessions() as session:
        assert session.scalars(select(DoNotCall)).all() == []
