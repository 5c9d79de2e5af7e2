"""Crashes and outages in the middle of a round, with real worker processes (see test_campaign_rounds.py for
the harness): a worker killed with SIGKILL, Redis lost and restarted empty, Twilio answering with bursts of
429s and ambiguous 5xx. None may lose a target or ring anyone twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rq import Worker
from sqlalchemy import select

from campaigns.models import CallAttempt, CallStatus
from tests.support.redis_server import RedisServer, RedisServerError
from tests.support.workers import RETRY_FAST, kill_tree
from tests.workers.test_campaign_rounds import (
    ANSWERED,
    BUSY,
    NO_ANSWER,
    Campaign,
    _deployment,
    phones,
)
from workers.queues import redis_connection


def two_calls(phone: str, n: int) -> str:
    """First call: busy or unanswered; second: answered (and dropped): two calls for everyone."""
    if n == 1:
        return BUSY if int(phone[-1]) % 2 else NO_ANSWER
    return ANSWERED


@pytest.fixture
def campaign(database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Campaign]:
    from werkzeug.serving import make_server

    from web.app import create_app

    yield from _deployment(database_url, redis_url, tmp_path, monkeypatch, make_server, create_app, clock=False)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, that the test may kill and restart (empty)."""
    try:
        server = RedisServer(tmp_path).start()
    except RedisServerError as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def campaign_on_own_redis(database_url, own_redis, tmp_path, monkeypatch) -> Iterator[Campaign]:
    from werkzeug.serving import make_server

    from web.app import create_app

    yield from _deployment(database_url, own_redis.url, tmp_path, monkeypatch, make_server, create_app, clock=False)


def claims_left(c: Campaign, before: datetime) -> int:
    with c.sessions() as session:
        return len(
            session.scalars(
                select(CallAttempt.id).where(CallAttempt.status == CallStatus.CLAIMED, CallAttempt.created_at < before)
            ).all()
        )


# --- a worker killed with SIGKILL -----------------------------------------------------------------------


def test_a_worker_killed_mid_create_loses_no_target_and_doubles_no_call(campaign: Campaign):
    c = campaign
    numbers = phones(24)
    c.start_carrier(two_calls, ring=0.4, talk=0.5)
    round_id = c.create_round(numbers, cps=3, max_concurrent=30, max_attempts=2, retry=RETRY_FAST)
    c.start_workers(3)
    c.wait_for_workers(3)
    c.launch(round_id)
    c.wait_for("some calls", lambda: c.standin.created >= 4, timeout=30)

    # The next create is made at Twilio but its reply is held: kill the worker waiting for that reply.
    before = c.standin.created
    c.standin.delay_next(1.8)  # shorter than the client's 2 s timeout
    c.wait_for("the held create", lambda: c.standin.created > before, timeout=20)
    sid = c.standin.calls[-1]["sid"]
    url = c.standin.create_requests[-1].value("Url") or ""
    attempt_id = int(url.rsplit("attempt=", 1)[1])
    c.carrier.hold(sid, 60)  # no status callback adopts the call: the sweeper has to
    conn = redis_connection(c.settings)
    workers = {w.pid: w.get_current_job_id() for w in Worker.all(connection=conn)}
    victim = next(p for p in c.workers if (workers.get(p.pid) or "").endswith(f"place-call-{attempt_id}"))
    killed_at = datetime.now(UTC)
    kill_tree(victim)
    assert c.standin.created == before + 1

    # The dead worker's claim is resolved within 2 minutes: its call is found at Twilio and adopted.
    took = c.wait_for("the dead worker's claim to be resolved", lambda: claims_left(c, killed_at) == 0, timeout=120)
    with c.sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        assert attempt is not None and attempt.call_sid == sid
    c.carrier.held.clear()
    final = c.wait_until_final(round_id, timeout=150)

    assert took < 120
    assert final["status"] == "completed"
    assert sum(final["targets"].values()) == len(numbers)
    assert final["targets"]["unreachable"] == len(numbers)  # nobody lost: everyone had both calls
    c.assert_every_call_once(round_id, max_attempts=2)
    assert sorted(call["to"] for call in c.standin.calls) == sorted(numbers * 2)


# --- Redis lost and restarted ---------------------------------------------------------------------------


def test_redis_restarted_mid_round_loses_no_target_and_doubles_no_call(campaign_on_own_redis: Campaign, own_redis):
    c = campaign_on_own_redis
    numbers = phones(24)
    c.start_carrier(two_calls, ring=0.4, talk=0.5)
    round_id = c.create_round(numbers, cps=3, max_concurrent=30, max_attempts=2, retry=RETRY_FAST)
    c.start_workers(3)
    c.wait_for_workers(3)
    c.launch(round_id)
    c.wait_for("some calls", lambda: c.standin.created >= 8, timeout=30)

    own_redis.kill()  # every queue, scheduled job, lease and dispatch chain is gone
    time.sleep(3)
    assert all(w.poll() is None for w in c.workers), "a worker exited when Redis went away"
    own_redis.start()  # empty

    final = c.wait_until_final(round_id, timeout=150)

    assert all(w.poll() is None for w in c.workers), "a worker exited after Redis came back"
    assert final["status"] == "completed"
    assert final["targets"]["unreachable"] == len(numbers)
    c.assert_every_call_once(round_id, max_attempts=2)
    assert sorted(call["to"] for call in c.standin.calls) == sorted(numbers * 2)


def test_a_worker_started_while_redis_is_down_waits_for_it(campaign_on_own_redis: Campaign, own_redis):
    c = campaign_on_own_redis
    own_redis.kill()
    c.start_workers(1)
    # However slowly the worker starts (a loaded machine), it must find Redis down and wait, not exit.
    c.wait_for("the worker to find Redis down", lambda: "event=redis_unavailable" in c.log_tail(200), timeout=90)
    time.sleep(2)
    assert c.workers[0].poll() is None, "the worker gave up while Redis was down"

    own_redis.start()
    c.wait_for_workers(1)
    round_id = c.create_round(phones(3), cps=5, max_attempts=1)
    c.start_carrier(lambda phone, n: BUSY)
    c.launch(round_id)

    assert c.wait_until_final(round_id, timeout=60)["targets"]["unreachable"] == 3


# --- Twilio refusing: 429s and ambiguous 5xx ------------------------------------------------------------


def test_a_burst_of_429s_and_ambiguous_5xx_doubles_no_call(campaign: Campaign):
    c = campaign
    numbers = phones(20)
    c.start_carrier(two_calls, ring=0.4, talk=0.5)
    round_id = c.create_round(numbers, cps=5, max_concurrent=30, max_attempts=2, retry=RETRY_FAST)
    # Refused for load (nothing created), then 5xx after creating the call, then 5xx without creating it.
    c.standin.fail_next(status=429, times=10)
    c.standin.fail_next(status=500, create_anyway=True, times=3)
    c.standin.fail_next(status=503, times=3)
    c.standin.fail_next(status=429, times=5)
    c.standin.fail_next(status=502, create_anyway=True, times=2)
    c.start_workers(3)
    c.wait_for_workers(3)
    c.launch(round_id)

    final = c.wait_until_final(round_id, timeout=150)

    assert final["status"] == "completed"
    assert final["targets"]["unreachable"] == len(numbers)
    assert len(c.standin.create_requests) >= 2 * len(numbers) + 10 + 3 + 5  # the refusals were retried
    c.assert_every_call_once(round_id, max_attempts=2)
    assert sorted(call["to"] for call in c.standin.calls) == sorted(numbers * 2)
