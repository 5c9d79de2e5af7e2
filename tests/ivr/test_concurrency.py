"""Webhooks delivered at once, over real HTTP to the threaded server, on both databases: many calls in
progress together, every press delivered several times at the same moment. Each press is stored exactly once,
every delivery gets the same reply, and none gets a 500. A replay is answered while another transaction
holds the database's write lock (SQLite) or the interview's row (PostgreSQL): reading takes neither."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from lxml import etree
from sqlalchemy import func, select, text

from campaigns.models import (
    Answer,
    FollowUp,
    KeyPress,
    Response,
    ResponseStatus,
    RoundTarget,
    TargetState,
)
from tests.conftest import is_postgres
from tests.ivr.support import (
    base_params,
    gather_url,
    open_call,
    post,
    press,
    step_of,
    twiml,
)

CALLS = 8
DELIVERIES = 3  # of every press, at the same moment
KEYS = ["1", "1", "3", "2", "1", "2", "4", "1", "1", "1"]  # a whole interview that asks for a visit


def whole_call(settings, attempt_id: int, sid: str) -> list[int]:
    """Make one call, each press delivered DELIVERIES times at once; returns every status code seen."""
    codes = []
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params(CallSid=sid)))
    with ThreadPoolExecutor(max_workers=DELIVERIES) as pool:
        for key in KEYS:
            url = gather_url(doc)
            replies = list(pool.map(lambda _: post(settings, url, base_params(CallSid=sid, Digits=key)),
                                    range(DELIVERIES)))  # fmt: skip
            codes += [reply.status_code for reply in replies]
            bodies = {reply.content for reply in replies}
            assert len(bodies) == 1, f"deliveries of one press got different replies: {bodies}"
            doc = etree.fromstring(replies[0].content)
    assert doc.xpath("/Response/Hangup")
    return codes


def test_many_calls_at_once_with_every_press_delivered_several_times(live_server, sessions):
    calls = [(open_call(sessions, phone=f"+86138000{n:05d}", sid=f"CA{n:032x}"), f"CA{n:032x}")
             for n in range(1, CALLS + 1)]  # fmt: skip

    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        codes = [code for call in pool.map(lambda c: whole_call(live_server, *c), calls) for code in call]

    assert codes == [200] * (CALLS * len(KEYS) * DELIVERIES)
    with sessions() as session:
        presses = session.execute(
            select(KeyPress.response_id, func.count(), func.count(func.distinct(KeyPress.seq))).group_by(
                KeyPress.response_id
            )
        ).all()
        assert [(count, distinct) for _response, count, distinct in presses] == [(len(KEYS), len(KEYS))] * CALLS
        assert session.scalar(select(func.count()).select_from(Answer)) == CALLS * len(KEYS)
        assert set(session.scalars(select(Response.status))) == {ResponseStatus.COMPLETED}
        assert set(session.scalars(select(RoundTarget.state))) == {TargetState.COMPLETED}
        assert session.scalar(select(func.count()).select_from(FollowUp)) == CALLS  # one item each


@pytest.fixture
def answered(live_server, sessions):
    """A call whose first press (consent 1) is stored: (settings, the consent prompt, the reply to it)."""
    attempt_id = open_call(sessions)
    first = twiml(post(live_server, f"/ivr/voice?attempt={attempt_id}", base_params()))
    return live_server, first, press(live_server, first, "1")


def test_a_replay_is_answered_while_another_transaction_holds_the_lock_a_write_needs(answered, engine, database_url):
    settings, first, reply = answered
    if is_postgres():
        holder = engine.connect()
        holder.execute(text("SELECT id FROM responses FOR UPDATE"))  # the row every press of this call writes
    else:
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the database's one write lock
    done = threading.Event()
    replies = []

    def replay() -> None:
        replies.append(post(settings, gather_url(first), base_params(Digits="1")))
        done.set()

    threading.Thread(target=replay, daemon=True).start()
    try:
        answered_in_time = done.wait(timeout=10)
    finally:
        holder.rollback()
        holder.close()

    assert answered_in_time, "the replay waited for the lock"
    assert replies[0].status_code == 200 and step_of(twiml(replies[0])) == step_of(reply) == "screen"
