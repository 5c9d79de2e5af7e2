"""The sweeper: the periodic recovery job. The database says what should be happening; the sweeper puts
right what crashes and outages leave behind.

Every worker schedules ``sweep()`` from its maintenance, every few seconds; a non-blocking Redis lock lets one
run at a time (an overlapping run skips). A sweep frees the scheduler locks of dead workers, restarts lost
dispatch chains, releases or adopts claims whose worker died, settles calls that have no final status with the
provider, and applies deadlines to rounds in any state.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select

from campaigns import clock
from campaigns.calls import (
    CREATING,
    OpenClaim,
    apply_call_status,
    expire_deadline,
    open_claims,
    release_claim,
    unsettled_attempts,
)
from campaigns.db import session_scope
from campaigns.models import FINAL_CALL_STATUSES, CallAttempt, CallStatus, Round, RoundStatus
from campaigns.runtime import Runtime, get_runtime
from campaigns.settings import Settings
from workers.dispatch import rebuild_dispatch
from workers.leases import attempt_lease_key, lease_held
from workers.messaging import sweep_notices
from workers.placing import adopt_existing, cancel_late_call, create_settle_time, round_stopped
from workers.queues import enqueue, free_dead_scheduler_locks, job_waiting, redis_connection, redis_key
from workers.telephony import get_provider
from workers.telephony.base import TelephonyError, TelephonyProvider

log = logging.getLogger("sanlv.jobs")

# Recovery bound (docs/architecture.md): a call with no final status is settled with the provider within ring
# timeout + 15 minutes. Sweeps run every few seconds, so a minute less leaves room.
STUCK_AFTER = timedelta(minutes=14)
# Recovery bound (docs/architecture.md): work claimed by a worker that died is released within 2 minutes. A
# claim is looked at once it is this old, its place_call job is not waiting in a queue, and no worker holds its
# lease.
CLAIM_GRACE = timedelta(seconds=20)
# The sweep's lock: kept alive while a sweep works, so it frees soon after a worker dies holding it.
SWEEP_LOCK_SECONDS = 30
SWEEP_QUEUED_SECONDS = 30  # "a sweep is waiting in the queue": how long that claim lasts unless a sweep starts


def schedule_sweep(settings: Settings) -> None:
    """Queue a sweep unless one is already waiting (every worker calls this every few seconds)."""
    conn = redis_connection(settings)
    if conn.set(redis_key(settings, "sweep", "queued"), "1", nx=True, ex=SWEEP_QUEUED_SECONDS):
        enqueue(settings, sweep, job_id=f"sweep-{uuid.uuid4().hex[:12]}", timeout=300)


def sweep() -> str:
    """Recover from what crashes and outages leave behind; the database says what should be happening.

    Runs under a non-blocking Redis lock: an overlapping run skips.
    """
    rt = get_runtime()
    settings = rt.settings
    conn = redis_connection(settings)
    conn.delete(redis_key(settings, "sweep", "queued"))
    lock = conn.lock(redis_key(settings, "sweep-lock"), timeout=SWEEP_LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return "skipped: another sweep is running"

    def keepalive() -> None:
        lock.reacquire()

    try:
        free_dead_scheduler_locks(settings)
        rebuilt = rebuild_dispatch(settings)
        released, adopted = _recover_claims(rt, keepalive)
        settled = _settle_unsettled_calls(rt, keepalive)
        expired = _apply_deadlines(rt)
        notice_work = sweep_notices(keepalive)
    finally:
        try:
            lock.release()
        except Exception as exc:  # noqa: BLE001 - it expires by itself (e.g. Redis was restarted meanwhile)
            log.warning("event=sweep_unlock_failed error=%r", exc)
    summary = f"rebuilt={len(rebuilt)} released={released} adopted={adopted} settled={settled} expired={expired}"
    if any(notice_work):
        summary += " notices(rebuilt,released,relooked,settled)=" + ",".join(map(str, notice_work))
    if rebuilt or released or adopted or settled or expired or any(notice_work):
        log.info("event=sweep %s", summary)
    return summary


def _claim_alive(settings: Settings, attempt_id: int) -> bool:
    """A worker is on it (holds the lease) or its place_call job waits in a queue (or a scheduled retry)."""
    if lease_held(redis_connection(settings), attempt_lease_key(settings, attempt_id)):
        return True
    return job_waiting(settings, f"place-call-{attempt_id}")


def _recover_claims(rt: Runtime, keepalive: Callable[[], None]) -> tuple[int, int]:
    """Claims whose worker died: released if no create started; else looked up, adopted or released."""
    settings = rt.settings
    now = clock.now()
    with rt.sessions() as session:
        claims = open_claims(session, now - CLAIM_GRACE)
        cps = dict(session.execute(select(Round.id, Round.cps).where(Round.id.in_({c.round_id for c in claims}))).all())
    released = adopted = 0
    provider = None
    for claim in claims:
        keepalive()
        if _claim_alive(settings, claim.attempt_id):
            continue
        if claim.create_started is None:
            with session_scope(rt.sessions) as session:
                if release_claim(session, claim.attempt_id, "released: worker gone"):
                    released += 1
                    log.info("event=claim_released attempt=%s reason=worker_gone", claim.attempt_id)
            continue
        if claim.mark == CREATING and now - claim.create_started < create_settle_time(settings, cps[claim.round_id]):
            continue  # its request may still be on its way; look next time
        provider = provider or get_provider(settings)
        try:
            if adopt_existing(provider, rt, claim.attempt_id, claim.phone, claim.created_at - timedelta(seconds=5)):
                adopted += 1
                _after_adoption(rt, provider, claim)
                continue
        except TelephonyError as exc:
            log.warning("event=claim_lookup_failed attempt=%s error=%r", claim.attempt_id, exc)
            continue
        with session_scope(rt.sessions) as session:
            if release_claim(session, claim.attempt_id, "released: no call was created", started=claim.create_started):
                released += 1
                log.info("event=claim_released attempt=%s reason=no_call_found", claim.attempt_id)
    return released, adopted


def _after_adoption(rt: Runtime, provider: TelephonyProvider, claim: OpenClaim) -> None:
    with rt.sessions() as session:
        sid = session.scalar(select(CallAttempt.call_sid).where(CallAttempt.id == claim.attempt_id))
        stopped = round_stopped(session, claim.round_id)
    if sid and stopped:
        cancel_late_call(provider, claim.round_id, sid)


def _settle_unsettled_calls(rt: Runtime, keepalive: Callable[[], None]) -> int:
    """Calls with no final status after ring timeout + STUCK_AFTER: ask the provider how they ended."""
    settings = rt.settings
    limit = clock.now() - timedelta(seconds=settings.ring_timeout) - STUCK_AFTER
    with rt.sessions() as session:
        stuck = [(a.id, a.call_sid) for a in unsettled_attempts(session, limit)]
    if not stuck:
        return 0
    provider = get_provider(settings)
    settled = 0
    for attempt_id, sid in stuck:
        keepalive()
        try:
            info = provider.fetch_call(sid)
            status, duration, answered_by = info.status, info.duration, info.extra.get("answered_by")
        except TelephonyError as exc:
            if exc.status != 404:
                log.warning("event=stuck_lookup_failed attempt=%s error=%r", attempt_id, exc)
                continue
            # The provider does not know the call: it cannot be live. Count it as failed (it is retried).
            status, duration, answered_by = CallStatus.FAILED.value, None, None
        with session_scope(rt.sessions) as session:
            attempt = session.get(CallAttempt, attempt_id, with_for_update=True)
            if attempt is None or attempt.status in FINAL_CALL_STATUSES:
                continue
            try:
                apply_call_status(session, attempt, status, None, duration=duration, answered_by=answered_by)
            except ValueError:
                log.warning("event=stuck_unknown_status attempt=%s status=%s", attempt_id, status)
                continue
            if attempt.status in FINAL_CALL_STATUSES:
                settled += 1
                log.info("event=stuck_settled attempt=%s status=%s", attempt_id, status)
    return settled


def _apply_deadlines(rt: Runtime) -> int:
    """Rounds past their deadline stop dialling whatever their state (a paused round too)."""
    now = clock.now()
    expired = 0
    with session_scope(rt.sessions) as session:
        rounds = session.scalars(
            select(Round).where(
                Round.status.in_([RoundStatus.RUNNING, RoundStatus.PAUSED]),
                Round.ends_at.is_not(None),
                Round.ends_at <= now,
            )
        ).all()
        for round_ in rounds:
            expired += expire_deadline(session, round_, now)
    return expired
