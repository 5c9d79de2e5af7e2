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
    heard_from,
    open_claims,
    quiet_calls,
    release_claim,
)
from campaigns.db import session_scope
from campaigns.interview import questionnaire_for
from campaigns.models import FINAL_CALL_STATUSES, CallAttempt, CallStatus, Round, RoundStatus
from campaigns.questionnaire import Questionnaire, longest_silence
from campaigns.runtime import Runtime, get_runtime
from campaigns.settings import Settings
from workers.accounts import effective_cps, providers_for, round_accounts
from workers.dispatch import rebuild_dispatch
from workers.leases import attempt_lease_key, lease_held
from workers.metrics import SWEEPER_SETTLED, count
from workers.messaging import sweep_notices
from workers.placing import adopt_existing, cancel_late_call, create_settle_time, round_stopped
from workers.queues import enqueue, free_dead_scheduler_locks, job_waiting, redis_connection, redis_key
from workers.telephony.base import CallInfo, TelephonyError, TelephonyProvider

log = logging.getLogger("sanlv.jobs")

# Recovery bound (docs/architecture.md): a call with no final status is settled with the provider about two
# minutes after it ended. A live call is never quiet (no webhook about it) for longer than its questionnaire's
# longest silence, or the ring timeout before it is answered; this much longer and the provider is asked.
QUIET_MARGIN = timedelta(seconds=15)
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
        rounds = {
            r.id: r
            for r in session.execute(
                select(Round.id, Round.cps, Round.accounts).where(Round.id.in_({c.round_id for c in claims}))
            )
        }
    released = adopted = 0
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
        round_ = rounds[claim.round_id]
        try:
            names = [a.name for a in round_accounts(settings, round_.accounts or [])]
        except TelephonyError as exc:
            log.warning("event=claim_lookup_failed attempt=%s error=%r", claim.attempt_id, exc)
            continue
        cps = effective_cps(settings, round_.cps, names)
        if claim.mark == CREATING and now - claim.create_started < create_settle_time(settings, cps):
            continue  # its request may still be on its way; look next time
        try:
            # The call may have gone through any account the round may use: ask each.
            found = None
            for name, provider in providers_for(settings, names):
                if adopt_existing(provider, rt, claim.attempt_id, claim.phone, claim.created_at - timedelta(seconds=5),
                                  account=name):
                    found = provider
                    break
            if found is not None:
                adopted += 1
                _after_adoption(rt, found, claim)
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


def quiet_limit(settings: Settings, questionnaire: Questionnaire) -> timedelta:
    """How long a call of ``questionnaire`` may go without a webhook before the provider is asked about it."""
    return timedelta(seconds=max(settings.ring_timeout, longest_silence(questionnaire))) + QUIET_MARGIN


def _settle_unsettled_calls(rt: Runtime, keepalive: Callable[[], None]) -> int:
    """Calls not final and quiet for longer than their questionnaire allows: ask the provider how they are.

    An ended call is settled as the provider reports it; a live one counts as heard of now, so it is asked
    about again only after another quiet spell.
    """
    settings = rt.settings
    now = clock.now()
    with rt.sessions() as session:
        candidates = quiet_calls(session, now - timedelta(seconds=settings.ring_timeout) - QUIET_MARGIN)
        limits: dict[int, timedelta] = {}
        for call in candidates:
            if call.round_id not in limits:
                round_ = session.get(Round, call.round_id)
                limits[call.round_id] = quiet_limit(settings, questionnaire_for(session, round_))
    quiet = [call for call in candidates if call.heard_at < now - limits[call.round_id]]
    if not quiet:
        return 0
    settled = 0
    for call in quiet:
        keepalive()
        try:
            info = fetch_from_accounts(settings, call.call_sid, call.account)
            status, duration, answered_by = info.status, info.duration, info.extra.get("answered_by")
        except TelephonyError as exc:
            if exc.status != 404:
                log.warning("event=quiet_lookup_failed attempt=%s sid=%s error=%r", call.attempt_id, call.call_sid, exc)
                continue
            # The provider does not know the call: it cannot be live. Count it as failed (it is retried).
            status, duration, answered_by = CallStatus.FAILED.value, None, None
        settled_as = None
        with session_scope(rt.sessions) as session:
            attempt = session.get(CallAttempt, call.attempt_id, with_for_update=True)
            if attempt is None or attempt.status in FINAL_CALL_STATUSES:
                continue
            try:
                apply_call_status(session, attempt, status, None, duration=duration, answered_by=answered_by)
            except ValueError:
                log.warning("event=quiet_unknown_status attempt=%s status=%s", call.attempt_id, status)
                continue
            if attempt.status in FINAL_CALL_STATUSES:
                settled_as = attempt.status.value
            else:
                heard_from(session, call.attempt_id)
        if settled_as is not None:
            settled += 1
            count(settings, SWEEPER_SETTLED, settled_as)
            log.info(
                "event=quiet_call_settled attempt=%s sid=%s round=%s status=%s quiet_for=%.0f",
                call.attempt_id, call.call_sid, call.round_id, settled_as, (now - call.heard_at).total_seconds(),
            )  # fmt: skip
    return settled


def fetch_from_accounts(settings: Settings, sid: str, account: str | None) -> CallInfo:
    """The call at the account it went through; an attempt that does not know it asks every account in turn
    (the one that knows the call answers, the others say 404)."""
    names = [account] if account is not None else [a.name for a in settings.accounts] or [None]
    error: TelephonyError | None = None
    for _name, provider in providers_for(settings, names):
        try:
            return provider.fetch_call(sid)
        except TelephonyError as exc:
            if exc.status != 404:
                raise
            error = exc
    assert error is not None
    raise error


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
