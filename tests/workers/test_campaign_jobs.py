"""The dialler's recovery paths, job by job: the create-started mark, the lease, the sweeper, the limiter and
transport retries. Real database, real Redis, the real twilio client against the local Twilio stand-in; jobs
are called directly (plain functions taking ids), and time is under the test's control (SANLV_CLOCK_FILE).

The controlled clock stays behind the real one: the stand-in stamps calls with real time, and a look-up
asks for the calls to a number since the attempt was claimed (by the controlled clock).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from rq.job import Job
from rq.scheduler import RQScheduler
from sqlalchemy import select

from campaigns.calls import begin_create, claim_due_targets
from campaigns.clock import set_clock_file
from campaigns.models import (
    CallAttempt,
    CallStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from campaigns.questionnaire import builtin_questionnaire
from campaigns.rounds import change_round
from campaigns.runtime import Runtime, set_runtime
from tests.factories import make_household, make_round, make_target
from tests.support.twilio_standin import (  # noqa: F401
    TwilioStandIn,
    stand_in_settings,
    twilio_standin,
)
from workers import dispatch, placing, sweeper
from workers.leases import Lease, attempt_lease_key
from workers.limiter import PACING_MARGIN, reserve_slot, slot_interval, take_cap
from workers.queues import (
    DIALER_QUEUE,
    SIMULATOR_QUEUE,
    backoff_intervals,
    free_dead_scheduler_locks,
    namespaced_job_id,
    queue,
    queue_name,
    redis_connection,
    redis_key,
)
from workers.runner import reconnect_delay
from workers.telephony.base import RateLimitedError

T0 = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)


@pytest.fixture
def clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "clock"
    set_clock_file(path, T0)
    monkeypatch.setenv("SANLV_CLOCK_FILE", str(path))

    def move_to(when: datetime) -> None:
        set_clock_file(path, when)

    return move_to


@pytest.fixture
def twilio_env(env, redis_url, twilio_standin, clock):  # noqa: F811 - the fixture above
    settings = stand_in_settings(env, twilio_standin, namespace="campaign-jobs-test")
    set_runtime(Runtime(settings))
    yield settings, twilio_standin
    set_runtime(None)


def claimed(sessions, *, cps: float = 50, phone: str = "+8613800000001", **round_over) -> tuple[int, int]:
    """A running round with one claimed target: (round id, attempt id)."""
    with sessions.begin() as session:
        household = make_household(session, phone=phone)
        round_ = make_round(session, windows=[["00:00", "24:00"]], cps=cps, status=RoundStatus.RUNNING, **round_over)
        make_target(session, round_, household)
        [claim] = claim_due_targets(session, round_, T0, 1)
        return round_.id, claim.attempt_id


def attempt_of(sessions, attempt_id: int) -> CallAttempt | None:
    with sessions() as session:
        return session.get(CallAttempt, attempt_id)


def target_of(sessions, round_id: int) -> RoundTarget:
    with sessions() as session:
        target = session.scalar(select(RoundTarget).where(RoundTarget.round_id == round_id))
        assert target is not None
        return target


def fetches(standin, sid: str) -> int:
    """How many times the call was looked up at the stand-in."""
    return sum(1 for r in standin.recorded if r.method == "GET" and r.path.endswith(f"/Calls/{sid}.json"))


def after_recovery_waits(settings) -> datetime:
    """A moment when a claim of T0 is old enough to look at and a create mark of T0 can no longer be live."""
    return T0 + max(sweeper.CLAIM_GRACE, placing.create_settle_time(settings, 50)) + timedelta(seconds=1)


def mark_create_started(sessions, attempt_id: int, when: datetime = T0) -> None:
    """What a place_call leaves behind when its worker dies between marking and recording the call."""
    with sessions.begin() as session:
        assert begin_create(session, attempt_id, None, when)


# --- place_call: the create-started mark ------------------------------------------------------------------


def test_a_rerun_after_the_worker_died_mid_create_adopts_the_call(twilio_env, sessions):
    _settings, standin = twilio_env
    _round_id, attempt_id = claimed(sessions)
    mark_create_started(sessions, attempt_id)
    sid = standin.add_call("+8613800000001", status="queued")  # the create the dead worker sent

    assert placing.place_call(attempt_id) == "adopted"

    assert standin.created == 0  # no second create request
    attempt = attempt_of(sessions, attempt_id)
    assert attempt is not None
    assert (attempt.call_sid, attempt.status, attempt.error_code) == (sid, CallStatus.QUEUED, None)


def test_a_rerun_waits_while_an_earlier_create_may_still_be_on_its_way(twilio_env, sessions, clock):
    settings, standin = twilio_env
    _round_id, attempt_id = claimed(sessions)
    mark_create_started(sessions, attempt_id)

    with pytest.raises(placing.CreateMayBeInFlight):
        placing.place_call(attempt_id)
    assert standin.created == 0

    # Later than any slot wait plus the HTTP timeout: the earlier request is over and made no call.
    clock(T0 + placing.create_settle_time(settings, 50) + timedelta(seconds=1))
    assert placing.place_call(attempt_id).startswith("CA")
    assert standin.created == 1


def test_a_create_that_timed_out_is_looked_up_and_adopted(twilio_env, sessions):
    _settings, standin = twilio_env
    _round_id, attempt_id = claimed(sessions)
    standin.delay_next(3.0)  # the call is created, the reply comes after the client's 2 s timeout

    assert placing.place_call(attempt_id) == "adopted"

    assert standin.created == 1
    assert attempt_of(sessions, attempt_id).call_sid == standin.calls[0]["sid"]  # type: ignore[union-attr]


def test_a_run_finding_the_attempt_leased_does_nothing(twilio_env, sessions):
    settings, standin = twilio_env
    _round_id, attempt_id = claimed(sessions)
    other = Lease(redis_connection(settings), attempt_lease_key(settings, attempt_id))
    assert other.acquire(30)

    assert placing.place_call(attempt_id) == "in flight"

    assert standin.created == 0
    other.release()
    assert placing.place_call(attempt_id).startswith("CA")


def test_a_rate_limited_create_takes_its_mark_back_and_is_retried_later(twilio_env, sessions):
    _settings, standin = twilio_env
    _round_id, attempt_id = claimed(sessions)
    standin.fail_next(status=429)

    with pytest.raises(RateLimitedError):
        placing.place_call(attempt_id)

    attempt = attempt_of(sessions, attempt_id)
    assert attempt is not None
    assert (attempt.status, attempt.error_code, attempt.placed_at) == (CallStatus.CLAIMED, None, None)
    assert placing.place_call(attempt_id).startswith("CA")
    assert standin.created == 1


def test_pause_while_a_call_waits_for_its_slot_places_nothing(twilio_env, sessions):
    _settings, standin = twilio_env
    # 0.4 calls per second: the second call's slot is 2.6 s after the first.
    round_id, first = claimed(sessions, cps=0.4)
    with sessions.begin() as session:
        round_ = session.get(Round, round_id)
        make_target(session, round_, make_household(session, phone="+8613800000002"))
        [second] = claim_due_targets(session, round_, T0, 1)
    assert placing.place_call(first).startswith("CA")
    results: list[str] = []
    waiting = threading.Thread(target=lambda: results.append(placing.place_call(second.attempt_id)))
    waiting.start()
    time.sleep(1.0)
    with sessions.begin() as session:
        change_round(session, round_id, "pause")
    paused_at = time.monotonic()
    waiting.join(timeout=10)

    assert results == ["released"]
    assert standin.created == 1
    assert all(at < paused_at for at in standin.create_times)
    with sessions() as session:
        assert session.get(CallAttempt, second.attempt_id) is None
        states = sorted(t.state for t in session.scalars(select(RoundTarget)))
    assert states == [TargetState.DIALING, TargetState.PENDING]


def test_a_call_outside_the_window_at_its_slot_is_not_placed(twilio_env, sessions, clock):
    _settings, standin = twilio_env
    local = T0.astimezone(twilio_env[0].tz)
    minute = local.hour * 60 + local.minute
    window = [f"{minute // 60:02d}:{minute % 60:02d}", f"{(minute + 1) // 60:02d}:{(minute + 1) % 60:02d}"]
    if minute + 1 >= 24 * 60:
        pytest.skip("the controlled time is at the end of the day")
    round_id, attempt_id = claimed(sessions, cps=50)
    with sessions.begin() as session:
        session.get(Round, round_id).windows = [window]  # type: ignore[union-attr]
    clock(T0.replace(second=0) + timedelta(minutes=1))  # the window has just closed

    assert placing.place_call(attempt_id) == "released"
    assert standin.created == 0
    assert target_of(sessions, round_id).state == TargetState.PENDING


# --- the sweeper ------------------------------------------------------------------------------------------


def test_the_sweeper_releases_a_claim_whose_worker_is_gone(twilio_env, sessions, clock):
    _settings, standin = twilio_env
    round_id, attempt_id = claimed(sessions)
    clock(T0 + sweeper.CLAIM_GRACE + timedelta(seconds=1))

    assert "released=1" in sweeper.sweep()

    assert attempt_of(sessions, attempt_id) is None
    target = target_of(sessions, round_id)
    assert (target.state, target.attempts) == (TargetState.PENDING, 0)
    assert standin.requests == 0


def test_the_sweeper_leaves_young_claims_and_claims_with_a_waiting_job(twilio_env, sessions, clock):
    settings, _standin = twilio_env
    _round_id, young = claimed(sessions, phone="+8613800000001")
    assert "released=0" in sweeper.sweep()  # claimed just now

    _round_id, queued = claimed(sessions, phone="+8613800000002")
    placing.enqueue_place_call(settings, queued)
    clock(T0 + sweeper.CLAIM_GRACE + timedelta(seconds=1))
    assert "released=1" in sweeper.sweep()

    assert attempt_of(sessions, young) is None
    assert attempt_of(sessions, queued) is not None  # its job waits in the queue: a worker will run it


def test_the_sweeper_leaves_a_claim_whose_worker_holds_the_lease(twilio_env, sessions, clock):
    settings, _standin = twilio_env
    _round_id, attempt_id = claimed(sessions)
    lease = Lease(redis_connection(settings), attempt_lease_key(settings, attempt_id))
    assert lease.acquire(30)
    clock(T0 + sweeper.CLAIM_GRACE + timedelta(seconds=1))

    assert "released=0" in sweeper.sweep()
    lease.release()
    assert "released=1" in sweeper.sweep()


def test_the_sweeper_adopts_the_call_of_a_worker_that_died_mid_create(twilio_env, sessions, clock):
    settings, standin = twilio_env
    round_id, attempt_id = claimed(sessions)
    mark_create_started(sessions, attempt_id)
    sid = standin.add_call("+8613800000001", status="ringing")
    clock(after_recovery_waits(settings))

    assert "adopted=1" in sweeper.sweep()

    attempt = attempt_of(sessions, attempt_id)
    assert attempt is not None and (attempt.call_sid, attempt.status) == (sid, CallStatus.RINGING)
    assert target_of(sessions, round_id).state == TargetState.DIALING
    assert standin.created == 0


def test_the_sweeper_waits_out_a_create_that_may_be_on_its_way_then_releases_it(twilio_env, sessions, clock):
    settings, standin = twilio_env
    round_id, attempt_id = claimed(sessions)
    mark_create_started(sessions, attempt_id, when=T0 + sweeper.CLAIM_GRACE)
    clock(T0 + sweeper.CLAIM_GRACE + timedelta(seconds=1))
    assert sweeper.sweep().startswith("rebuilt=1 released=0 adopted=0")  # its request may be on its way

    clock(T0 + sweeper.CLAIM_GRACE + placing.create_settle_time(settings, 50) + timedelta(seconds=1))
    assert "released=1" in sweeper.sweep()  # looked up: no call was created

    assert attempt_of(sessions, attempt_id) is None
    assert target_of(sessions, round_id).state == TargetState.PENDING
    assert standin.created == 0


def test_a_call_adopted_for_a_cancelled_round_is_cancelled(twilio_env, sessions, clock):
    settings, standin = twilio_env
    round_id, attempt_id = claimed(sessions)
    mark_create_started(sessions, attempt_id)
    sid = standin.add_call("+8613800000001", status="queued")
    with sessions.begin() as session:
        change_round(session, round_id, "cancel")
    clock(after_recovery_waits(settings))

    assert "adopted=1" in sweeper.sweep()

    assert standin.call(sid)["status"] == "canceled"


@pytest.mark.parametrize("status", [RoundStatus.RUNNING, RoundStatus.PAUSED, RoundStatus.CANCELLED])
def test_the_sweeper_settles_calls_with_no_final_status_in_any_round(twilio_env, sessions, clock, status):
    settings, standin = twilio_env
    round_id, attempt_id = claimed(sessions)
    sid = standin.add_call("+8613800000001", status="queued")
    _other_round, unknown_attempt = claimed(sessions, phone="+8613800000002")
    with sessions.begin() as session:
        for attempt_id_, sid_ in ((attempt_id, sid), (unknown_attempt, "CA" + "f" * 32)):
            attempt = session.get(CallAttempt, attempt_id_)
            attempt.call_sid, attempt.status, attempt.last_heard_at = sid_, CallStatus.RINGING, T0
        for round_ in session.scalars(select(Round)):
            round_.status = status
    standin.set_call_status(sid, "no-answer")
    quiet = sweeper.quiet_limit(settings, builtin_questionnaire())

    clock(T0 + quiet - timedelta(seconds=1))
    assert "settled=0" in sweeper.sweep()
    assert fetches(standin, sid) == 0  # not even asked while the call may still be live
    clock(T0 + quiet + timedelta(seconds=1))
    assert "settled=2" in sweeper.sweep()

    assert attempt_of(sessions, attempt_id).status == CallStatus.NO_ANSWER  # type: ignore[union-attr]
    # Twilio does not know the other call (404): it cannot be live; it counts as failed.
    assert attempt_of(sessions, unknown_attempt).status == CallStatus.FAILED  # type: ignore[union-attr]
    expected = TargetState.CANCELLED if status == RoundStatus.CANCELLED else TargetState.PENDING
    assert target_of(sessions, round_id).state == expected
    # Settled well within two minutes of the last webhook, so well within two minutes of the call's end.
    assert quiet + timedelta(seconds=1) < timedelta(seconds=90)


def test_many_quiet_calls_are_looked_up_at_once(twilio_env, sessions, clock):
    """A restart can leave a whole round's calls live: with Twilio taking 0.3 s per look-up, 40 of them are
    settled in one sweep in well under the 12 s that one look-up after another would take."""
    settings, standin = twilio_env
    attempts = []
    for n in range(40):
        _round_id, attempt_id = claimed(sessions, phone=f"+86138{n:08d}")
        sid = standin.add_call(f"+86138{n:08d}", status="completed")
        with sessions.begin() as session:
            attempt = session.get(CallAttempt, attempt_id)
            attempt.call_sid, attempt.status, attempt.last_heard_at = sid, CallStatus.IN_PROGRESS, T0
        attempts.append(attempt_id)
    standin.fetch_delay = 0.3
    clock(T0 + sweeper.quiet_limit(settings, builtin_questionnaire()) + timedelta(seconds=1))

    began = time.monotonic()
    assert "settled=40" in sweeper.sweep()
    took = time.monotonic() - began

    assert took < 40 * 0.3 / 2, took
    assert all(attempt_of(sessions, a).status == CallStatus.COMPLETED for a in attempts)  # type: ignore[union-attr]


def test_a_call_is_quiet_from_its_last_webhook_not_from_its_creation(twilio_env, sessions, clock):
    settings, standin = twilio_env
    _round_id, attempt_id = claimed(sessions)
    sid = standin.add_call("+8613800000001", status="completed")
    later = T0 + timedelta(minutes=10)
    with sessions.begin() as session:
        attempt = session.get(CallAttempt, attempt_id)
        attempt.call_sid, attempt.status, attempt.last_heard_at = sid, CallStatus.IN_PROGRESS, later
    quiet = sweeper.quiet_limit(settings, builtin_questionnaire())

    clock(later + quiet - timedelta(seconds=1))
    assert "settled=0" in sweeper.sweep()
    clock(later + quiet + timedelta(seconds=1))
    assert "settled=1" in sweeper.sweep()
    assert attempt_of(sessions, attempt_id).status == CallStatus.COMPLETED  # type: ignore[union-attr]


def test_the_quiet_limit_follows_the_questionnaires_longest_silence(env):
    questionnaire = builtin_questionnaire()
    slow = replace(questionnaire, gather_timeout=30)
    assert sweeper.quiet_limit(env, slow) - sweeper.quiet_limit(env, questionnaire) == timedelta(seconds=22)
    # Before an answer, the ring timeout is the longest silence.
    ringing = replace(env, ring_timeout=600)
    assert sweeper.quiet_limit(ringing, questionnaire) == timedelta(seconds=600) + sweeper.QUIET_MARGIN


def test_the_sweeper_leaves_a_long_interview_alone_and_asks_again_only_after_another_quiet_spell(
    twilio_env, sessions, clock
):
    settings, standin = twilio_env
    _round_id, attempt_id = claimed(sessions)
    sid = standin.add_call("+8613800000001", status="in-progress")
    with sessions.begin() as session:
        attempt = session.get(CallAttempt, attempt_id)
        attempt.call_sid, attempt.status = sid, CallStatus.IN_PROGRESS
    clock(T0 + timedelta(hours=1))

    sweeper.sweep()
    assert fetches(standin, sid) == 1
    sweeper.sweep()
    assert fetches(standin, sid) == 1

    assert attempt_of(sessions, attempt_id).status == CallStatus.IN_PROGRESS  # type: ignore[union-attr]
    assert attempt_of(sessions, attempt_id).last_heard_at == T0 + timedelta(hours=1)  # type: ignore[union-attr]
    clock(T0 + timedelta(hours=1) + sweeper.quiet_limit(settings, builtin_questionnaire()) + timedelta(seconds=1))
    sweeper.sweep()
    assert fetches(standin, sid) == 2


def test_the_sweeper_ends_a_paused_rounds_pending_targets_at_its_deadline(twilio_env, sessions, clock):
    with sessions.begin() as session:
        round_ = make_round(session, status=RoundStatus.PAUSED, ends_at=T0 + timedelta(hours=1))
        target = make_target(session, round_)
        round_id, target_id = round_.id, target.id
    assert "expired=0" in sweeper.sweep()

    clock(T0 + timedelta(hours=1))
    assert "expired=1" in sweeper.sweep()

    with sessions() as session:
        stored = session.get(RoundTarget, target_id)
        assert (stored.state, stored.last_outcome) == (TargetState.UNREACHABLE, "deadline")  # type: ignore[union-attr]
        assert session.get(Round, round_id).status == RoundStatus.PAUSED  # type: ignore[union-attr]


def test_an_overlapping_sweep_skips(twilio_env):
    settings, _standin = twilio_env
    lock = redis_connection(settings).lock(redis_key(settings, "sweep-lock"), timeout=30, blocking=False)
    assert lock.acquire()

    assert sweeper.sweep() == "skipped: another sweep is running"
    lock.release()
    assert sweeper.sweep().startswith("rebuilt=")


def test_the_sweeper_restarts_a_running_rounds_lost_dispatch_chain(twilio_env, sessions):
    settings, _standin = twilio_env
    with sessions.begin() as session:
        running = make_round(session, status=RoundStatus.RUNNING).id
        make_round(session, status=RoundStatus.PAUSED)
    conn = redis_connection(settings)

    assert sweeper.sweep().startswith("rebuilt=1")
    chain = conn.get(dispatch.chain_key(settings, running))
    assert chain is not None
    assert sweeper.sweep().startswith("rebuilt=0")  # its chain's job is waiting

    # A chain whose job has "run" for minutes lost its worker (SIGKILL): it is restarted.
    job = Job.fetch(chain.decode(), connection=conn)
    job.set_status("started")
    job.started_at = datetime.now(UTC) - timedelta(minutes=5)
    job.save()
    assert sweeper.sweep().startswith("rebuilt=1")
    assert conn.get(dispatch.chain_key(settings, running)) != chain


def test_a_claim_whose_scheduled_retry_is_overdue_has_no_live_job(twilio_env, sessions, clock):
    settings, _standin = twilio_env
    _round_id, soon = claimed(sessions, phone="+8613800000001")
    _round_id, overdue = claimed(sessions, phone="+8613800000002")
    dialer = queue(settings)
    real_now = datetime.now(UTC)
    for attempt_id, at in ((soon, real_now + timedelta(seconds=30)), (overdue, real_now - timedelta(seconds=20))):
        dialer.enqueue_at(at, placing.place_call, attempt_id, job_id=namespaced_job_id(settings, f"place-call-{attempt_id}"))
    clock(T0 + sweeper.CLAIM_GRACE + timedelta(seconds=1))

    assert "released=1" in sweeper.sweep()  # no scheduler has run the overdue one: nothing will

    assert attempt_of(sessions, soon) is not None
    assert attempt_of(sessions, overdue) is None


def test_the_lock_of_a_dead_scheduler_is_freed(twilio_env):
    settings, _standin = twilio_env
    conn = redis_connection(settings)
    dialer_lock = RQScheduler.get_locking_key(queue_name(settings, DIALER_QUEUE))
    simulator_lock = RQScheduler.get_locking_key(queue_name(settings, SIMULATOR_QUEUE))
    alive = RQScheduler([queue(settings)], connection=conn, name="alive-scheduler")
    alive.register_birth()  # heartbeats now
    conn.set(dialer_lock, "alive-scheduler")
    conn.set(simulator_lock, "dead-scheduler")  # its worker was killed: no heartbeat at all

    assert free_dead_scheduler_locks(settings) == [SIMULATOR_QUEUE]

    assert conn.get(dialer_lock) == b"alive-scheduler"
    assert conn.get(simulator_lock) is None


def test_workers_schedule_one_sweep_at_a_time(twilio_env):
    settings, _standin = twilio_env
    conn = redis_connection(settings)
    for _ in range(3):
        sweeper.schedule_sweep(settings)

    queued = [job_id.decode() for job_id in conn.lrange(f"rq:queue:{settings.namespace}-dialer", 0, -1)]
    assert len(queued) == 1 and queued[0].startswith(namespaced_job_id(settings, "sweep-"))

    sweeper.sweep()  # a sweep that starts lets the next one be queued
    sweeper.schedule_sweep(settings)
    assert conn.llen(f"rq:queue:{settings.namespace}-dialer") == 2


def test_a_sweep_lock_left_by_a_dead_worker_frees_itself(twilio_env):
    settings, _standin = twilio_env
    conn = redis_connection(settings)
    key = redis_key(settings, "sweep-lock")
    dead = conn.lock(key, timeout=1, blocking=False)
    assert dead.acquire()  # and its holder dies without releasing it

    assert sweeper.sweep() == "skipped: another sweep is running"
    time.sleep(1.1)
    assert sweeper.sweep().startswith("rebuilt=")
    # A sweep holds its lock for at most half a minute at a time (it renews it as it works).
    assert conn.lock(key, timeout=sweeper.SWEEP_LOCK_SECONDS, blocking=False).acquire()
    assert 0 < conn.pttl(key) <= 30_000


# --- dispatch ---------------------------------------------------------------------------------------------


def test_dispatch_keeps_a_short_backlog_of_claims(twilio_env, sessions):
    _settings, _standin = twilio_env
    with sessions.begin() as session:
        round_ = make_round(session, windows=[["00:00", "24:00"]], cps=2, max_concurrent=100, status=RoundStatus.RUNNING)
        for _ in range(30):
            make_target(session, round_)
        round_id = round_.id

    assert dispatch.dispatch_round(round_id) == f"claimed={int(2 * dispatch.BACKLOG_SECONDS)}"  # seconds of dialling at 2/s
    assert dispatch.dispatch_round(round_id) == "claimed=0"  # none of them placed yet


def test_the_next_dispatch_tick_goes_ahead_of_the_calls_it_queued(twilio_env, sessions):
    # Behind its own backlog of place_call jobs a tick would run once per backlog (5 s), not once a second,
    # and then claim a whole backlog at once.
    settings, _standin = twilio_env
    with sessions.begin() as session:
        round_ = make_round(
            session, windows=[["00:00", "24:00"]], cps=2, max_concurrent=100, status=RoundStatus.RUNNING
        )
        for _ in range(30):
            make_target(session, round_)
        round_id = round_.id
    conn = redis_connection(settings)
    dialer = queue(settings)

    assert dispatch.dispatch_round(round_id) == "claimed=10"

    place_calls = dialer.job_ids
    assert len(place_calls) == 10 and all("place-call-" in job_id for job_id in place_calls)
    job = Job.fetch(place_calls[0], connection=conn)
    assert job.retries_left == 6 and len(job.retry_intervals) == 6  # each job its own jittered backoff
    time.sleep(dispatch.TICK_SECONDS + 0.1)  # the next tick is due
    scheduler = RQScheduler([dialer], connection=conn)
    scheduler.acquire_locks()
    scheduler.enqueue_scheduled_jobs()
    scheduler.release_locks()
    assert dialer.job_ids == [conn.get(dispatch.chain_key(settings, round_id)).decode(), *place_calls]


def test_a_batch_of_place_calls_skips_the_attempts_already_queued(twilio_env, sessions):
    settings, _standin = twilio_env
    placing.enqueue_place_call(settings, 7)
    placing.enqueue_place_calls(settings, [5, 7, 9])
    assert sorted(queue(settings).job_ids) == [
        namespaced_job_id(settings, f"place-call-{attempt_id}") for attempt_id in (5, 7, 9)
    ]


def test_dispatch_outside_the_windows_cancels_calls_queued_at_the_provider(twilio_env, sessions, clock):
    settings, standin = twilio_env
    round_id, attempt_id = claimed(sessions)
    sid = standin.add_call("+8613800000001", status="queued")
    with sessions.begin() as session:
        attempt = session.get(CallAttempt, attempt_id)
        attempt.call_sid, attempt.status = sid, CallStatus.QUEUED
        session.get(Round, round_id).blocked_dates = [T0.astimezone(settings.tz).date().isoformat()]  # type: ignore[union-attr]

    dispatch.dispatch_round(round_id)
    queued = redis_connection(settings).lrange(f"rq:queue:{settings.namespace}-dialer", 0, -1)
    assert namespaced_job_id(settings, f"cancel-queued-{round_id}").encode() in queued

    assert placing.cancel_round_calls(round_id, True) == 1
    assert standin.call(sid)["status"] == "canceled"


def test_dispatch_ends_the_round_at_its_deadline(twilio_env, sessions, clock):
    with sessions.begin() as session:
        round_ = make_round(session, windows=[["00:00", "24:00"]], status=RoundStatus.RUNNING, ends_at=T0)
        make_target(session, round_)
        round_id = round_.id

    assert dispatch.dispatch_round(round_id) == "completed"

    with sessions() as session:
        assert session.get(Round, round_id).status == RoundStatus.COMPLETED  # type: ignore[union-attr]
        assert session.scalar(select(RoundTarget.state)) == TargetState.UNREACHABLE


# --- the limiter and transport retries --------------------------------------------------------------------


def test_slots_are_spaced_a_little_more_than_one_over_cps(redis_conn: redis.Redis):
    slots = [reserve_slot(redis_conn, "test:pace", 10, max_wait=5) for _ in range(20)]

    gaps = [b - a for a, b in itertools.pairwise(slots)]  # type: ignore[operator]
    assert min(gaps) >= slot_interval(10) - 0.005
    assert max(gaps) <= slot_interval(10) + 0.02
    assert slot_interval(10) == pytest.approx((1 + PACING_MARGIN) / 10)


def test_no_slot_is_reserved_beyond_the_longest_wait(redis_conn: redis.Redis):
    first = reserve_slot(redis_conn, "test:far", 1, max_wait=2)
    second = reserve_slot(redis_conn, "test:far", 1, max_wait=2)
    assert first is not None and second is not None
    assert second - first == pytest.approx(slot_interval(1), abs=0.02)

    assert reserve_slot(redis_conn, "test:far", 1, max_wait=2) is None  # two intervals away: too far

    third = reserve_slot(redis_conn, "test:far", 1, max_wait=5)
    assert third is not None and third - first == pytest.approx(2 * slot_interval(1), abs=0.02)  # none reserved


def test_the_cap_allows_cps_creates_per_second(redis_conn: redis.Redis):
    hits = [take_cap(redis_conn, "test:cap", 5, give_up_after=0) for _ in range(6)]

    assert hits == [True] * 5 + [False]


def test_backoff_intervals_grow_with_jitter_and_a_cap():
    draws = [backoff_intervals(6, 2.0, 60.0, random.Random(seed)) for seed in range(50)]

    for intervals in draws:
        for n, wait in enumerate(intervals):
            ceiling = min(60.0, 2.0 * 2**n)
            assert max(1, round(ceiling / 2)) <= wait <= round(ceiling)
    assert len({tuple(d) for d in draws}) > 10  # jobs refused together come back apart
    assert backoff_intervals(3, 2.0, 60.0, random.Random(1)) == backoff_intervals(3, 2.0, 60.0, random.Random(1))


def test_each_place_call_job_gets_its_own_retry_intervals(twilio_env):
    settings, _standin = twilio_env
    for attempt_id in range(1, 9):
        placing.enqueue_place_call(settings, attempt_id)
    conn = redis_connection(settings)
    intervals = {
        tuple(Job.fetch(namespaced_job_id(settings, f"place-call-{n}"), connection=conn).retry_intervals)
        for n in range(1, 9)
    }

    assert len(intervals) > 1
    assert all(len(i) == 6 for i in intervals)


def test_reconnect_backoff_doubles_up_to_half_a_minute():
    assert [reconnect_delay(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
