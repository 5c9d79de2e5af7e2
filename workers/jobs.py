"""RQ jobs. Each takes ids, reloads state, and is safe to run twice.

- ``dispatch_round(round_id)``: one tick of a round's dialler: claims due targets inside the calling window
  and within the round's concurrency, enqueues a ``place_call`` per claim, ends the round at its deadline,
  and schedules its next tick. One chain per round: a tick that is not the round's current chain exits.
- ``place_call(attempt_id)``: places one claimed call through the provider, paced by the round's CPS.
- ``sweep()``: the periodic recovery job (every worker schedules it; a non-blocking lock lets one run at a
  time): restarts lost dispatch chains, releases or adopts claims whose worker died, settles calls that have
  no final status with the provider, and applies deadlines to rounds in any state.
- ``cancel_round_calls(round_id)``: cancels calls still queued (or ringing) at the provider.

Exactly-once dialling (see campaigns.calls): ``place_call`` marks "create started" on the attempt with a
conditional UPDATE before it sends the create request. A run that finds the mark (a retry after the worker
died, the sweeper) looks the call up at the provider first and adopts it if it exists; it never dials blindly.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from datetime import UTC, datetime, timedelta

from rq import get_current_job
from rq.job import JobStatus
from sqlalchemy import func, select

from campaigns import clock
from campaigns.calls import (
    CREATE_MARKS,
    CREATING,
    OpenClaim,
    apply_call_status,
    begin_create,
    claim_due_targets,
    create_not_sent,
    expire_deadline,
    live_calls,
    mark_ambiguous,
    mark_permanent_failure,
    mark_placed,
    open_claims,
    record_placed,
    release_claim,
    unsettled_attempts,
)
from campaigns.db import session_scope
from campaigns.models import (
    FINAL_CALL_STATUSES,
    CallAttempt,
    CallStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from campaigns.rounds import complete_if_done
from campaigns.runtime import Runtime, get_runtime
from campaigns.schedule import is_open, next_open
from campaigns.settings import Settings
from workers.limiter import reserve_slot, sleep_until, take_cap
from workers.queues import (
    Lease,
    enqueue,
    free_dead_scheduler_locks,
    jittered_retry,
    job_waiting,
    lease_held,
    namespaced_job_id,
    redis_connection,
    redis_key,
)
from workers.telephony import get_provider
from workers.telephony.base import (
    AmbiguousCreateError,
    CallInfo,
    CallRequest,
    ConfigurationError,
    PermanentNumberError,
    RateLimitedError,
    TelephonyError,
)

log = logging.getLogger("sanlv.jobs")

TICK_SECONDS = 1.0
IDLE_TICK_SECONDS = 30.0  # nothing due: look again at least this often (a pause may be lifted, a retry due)
# Claims waiting for their create, per round, as seconds of dialling at the round's CPS: enough that every slot
# is used although the next dispatch tick may come late (it queues behind place_call jobs), few enough that a
# pause or a closing window has little to give back. A place_call reserves its slot only when it starts, so
# it never waits long for it.
BACKLOG_SECONDS = 5.0
# DESIGN: a call with no final status is settled with the provider within ring timeout + 15 minutes. Sweeps
# run every few seconds, so a minute less leaves room.
STUCK_AFTER = timedelta(minutes=14)
# DESIGN: work claimed by a worker that died is released within 2 minutes. A claim is looked at once it is
# this old, its place_call job is not waiting in a queue, and no worker holds its lease.
CLAIM_GRACE = timedelta(seconds=20)
LEASE_SECONDS = 20.0  # a place_call's hold on its attempt, kept alive while it waits for its slot
RECHECK_AFTER = 1.0  # a place_call whose slot is further away than this checks again that the round dials
SLOT_LEAD = 0.1  # seconds before its slot it does so
DISPATCH_TICK_LIMIT = timedelta(seconds=60)  # a dispatch tick that has "run" longer than this belongs to a dead worker
# The sweep's lock: kept alive while a sweep works, so it frees soon after a worker dies holding it.
SWEEP_LOCK_SECONDS = 30
SWEEP_QUEUED_SECONDS = 30  # "a sweep is waiting in the queue": how long that claim lasts unless a sweep starts


class CreateMayBeInFlight(TelephonyError):
    """An earlier run's create request may still be on its way; look again later (RQ retries the job)."""


# --- dispatch -------------------------------------------------------------------------------------------


def _chain_key(settings: Settings, round_id: int) -> str:
    return redis_key(settings, "dispatch", round_id)


def kick_dispatch(settings: Settings, round_id: int, at: datetime | None = None) -> str:
    """Start (or restart) the round's dispatch chain; any older chain stops at its next tick."""
    job_id = namespaced_job_id(settings, f"dispatch-{round_id}-{uuid.uuid4().hex[:12]}")
    conn = redis_connection(settings)
    # The key names the chain's next job before that job exists, so it never starts unrecognised.
    conn.set(_chain_key(settings, round_id), job_id, ex=7 * 86400)
    enqueue(settings, dispatch_round, round_id, job_id=job_id, at=at)
    return job_id


def _continue_chain(settings: Settings, round_id: int, delay: float) -> None:
    job_id = namespaced_job_id(settings, f"dispatch-{round_id}-{uuid.uuid4().hex[:12]}")
    conn = redis_connection(settings)
    conn.set(_chain_key(settings, round_id), job_id, ex=7 * 86400)
    if delay <= 0:
        enqueue(settings, dispatch_round, round_id, job_id=job_id)
    else:
        enqueue(settings, dispatch_round, round_id, job_id=job_id, delay=timedelta(seconds=delay))


def place_call_retry():
    """Transport retries of a place_call (429, an ambiguous create not found, no dial slot): each job draws its
    own jittered exponential intervals, so calls refused together do not come back together."""
    return jittered_retry(retries=6, base=2.0, cap=60.0)


def enqueue_place_call(settings: Settings, attempt_id: int) -> None:
    enqueue(settings, place_call, attempt_id, job_id=f"place-call-{attempt_id}", retry=place_call_retry())


def dispatch_round(round_id: int) -> str:
    """One dispatcher tick for ``round_id``; returns what it did (for logs and tests)."""
    rt = get_runtime()
    settings = rt.settings
    conn = redis_connection(settings)
    job = get_current_job()
    current = conn.get(_chain_key(settings, round_id))
    if job is not None and current is not None and current.decode() != job.id:
        return "stale chain"
    now = clock.now()
    claims = []
    cancel_queued = False
    next_delay: float = TICK_SECONDS
    with session_scope(rt.sessions) as session:
        round_ = session.get(Round, round_id)
        if round_ is None or round_.status not in (RoundStatus.RUNNING,):
            conn.delete(_chain_key(settings, round_id))
            return f"round is {round_.status.value if round_ else 'missing'}"
        if round_.ends_at is not None and now >= round_.ends_at:
            expired = expire_deadline(session, round_, now)
            if expired:
                log.info("event=deadline round=%s unreachable=%s", round_id, expired)
            cancel_queued = True
        elif round_.starts_at is not None and now < round_.starts_at:
            next_delay = min((round_.starts_at - now).total_seconds(), IDLE_TICK_SECONDS)
        elif not is_open(round_.windows, round_.blocked_dates, now, settings.tz):
            # A call in progress at the close finishes; calls still queued at the provider are cancelled.
            cancel_queued = True
            opens = next_open(round_.windows, round_.blocked_dates, now, settings.tz)
            next_delay = IDLE_TICK_SECONDS if opens is None else min((opens - now).total_seconds(), IDLE_TICK_SECONDS)
        else:
            capacity = round_.max_concurrent - live_calls(session, round_id)
            backlog = max(1, math.ceil(round_.cps * BACKLOG_SECONDS)) - _waiting_claims(session, round_id)
            claims = claim_due_targets(session, round_, now, min(capacity, backlog))
            if not claims and capacity > 0 and backlog > 0:
                next_delay = _seconds_until_next_due(session, round_, now)
        queued_calls = cancel_queued and _has_queued_calls(session, round_id)
        done = complete_if_done(session, round_id)
    # Work follows the commit.
    for claim in claims:
        enqueue_place_call(settings, claim.attempt_id)
    if queued_calls:
        enqueue(settings, cancel_round_calls, round_id, True, job_id=f"cancel-queued-{round_id}")
    if done:
        conn.delete(_chain_key(settings, round_id))
        log.info("event=round_completed round=%s", round_id)
        return "completed"
    _continue_chain(settings, round_id, max(0.1, next_delay))
    return f"claimed={len(claims)}"


def _waiting_claims(session, round_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(CallAttempt)
            .where(CallAttempt.round_id == round_id, CallAttempt.status == CallStatus.CLAIMED)
        )
        or 0
    )


def _has_queued_calls(session, round_id: int) -> bool:
    return (
        session.scalar(
            select(CallAttempt.id)
            .where(
                CallAttempt.round_id == round_id,
                CallAttempt.status == CallStatus.QUEUED,
                CallAttempt.call_sid.is_not(None),
            )
            .limit(1)
        )
        is not None
    )


def _seconds_until_next_due(session, round_: Round, now: datetime) -> float:
    nxt = session.scalar(
        select(func.min(RoundTarget.next_attempt_at)).where(
            RoundTarget.round_id == round_.id, RoundTarget.state == TargetState.PENDING
        )
    )
    if nxt is None:
        return TICK_SECONDS
    return max(TICK_SECONDS, min((nxt - now).total_seconds(), IDLE_TICK_SECONDS))


def rebuild_dispatch(settings: Settings) -> list[int]:
    """Restart the dispatch chain of every running round whose chain is gone (Redis was restarted, a worker
    died in the middle of a tick). The database is the source of truth; Redis only carries work."""
    conn = redis_connection(settings)
    rt = get_runtime()
    with rt.sessions() as session:
        running = session.scalars(select(Round.id).where(Round.status == RoundStatus.RUNNING)).all()
    restarted = []
    for round_id in running:
        job_id = conn.get(_chain_key(settings, round_id))
        if job_id is None or not _chain_alive(settings, job_id.decode()):
            kick_dispatch(settings, round_id)
            restarted.append(round_id)
    if restarted:
        log.info("event=dispatch_rebuilt rounds=%s", ",".join(map(str, restarted)))
    return restarted


def _chain_alive(settings: Settings, job_id: str) -> bool:
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(job_id, connection=redis_connection(settings))
    except NoSuchJobError:
        return False
    if job_waiting(settings, job_id):
        return True
    if job.get_status(refresh=False) == JobStatus.STARTED:
        started = job.started_at
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        # A tick takes well under a second; one "running" for a minute lost its worker.
        return started is None or datetime.now(UTC) - started < DISPATCH_TICK_LIMIT
    return False


# --- placing a call -------------------------------------------------------------------------------------


def _webhooks(settings: Settings, attempt_id: int) -> tuple[str, str]:
    base = settings.public_base_url
    if not base:
        raise ConfigurationError("PUBLIC_BASE_URL is not set: the phone network cannot reach the webhooks")
    return f"{base}/ivr/voice?attempt={attempt_id}", f"{base}/ivr/status?attempt={attempt_id}"


def lease_key(settings: Settings, attempt_id: int) -> str:
    return redis_key(settings, "lease", "attempt", attempt_id)


def dial_key(settings: Settings, round_id: int) -> str:
    return redis_key(settings, "dial", round_id)


def max_slot_wait(cps: float) -> float:
    """How long a place_call may wait for its dial slot (the dispatcher keeps about 2 s of claims waiting)."""
    return min(30.0, max(5.0, 3.0 / cps))


def create_settle_time(settings: Settings, cps: float) -> timedelta:
    """After this long, a "create started" mark left by a run that is gone can no longer have a request on
    its way: that run would have waited for its slot and its HTTP timeout by then."""
    return timedelta(seconds=max_slot_wait(cps) + settings.twilio_http_timeout + 10)


def place_call(attempt_id: int) -> str:
    """Place the call of a claimed attempt. Safe to run twice and concurrently: only one run may hold the
    attempt's lease, only a ``claimed`` attempt is dialled, and a "create started" mark is looked up first."""
    rt = get_runtime()
    settings = rt.settings
    conn = redis_connection(settings)
    lease = Lease(conn, lease_key(settings, attempt_id))
    if not lease.acquire(LEASE_SECONDS):
        return "in flight"  # another run of this attempt is working on it
    try:
        return _place_call(rt, lease, attempt_id)
    finally:
        lease.release()


def _place_call(rt: Runtime, lease: Lease, attempt_id: int) -> str:
    settings = rt.settings
    conn = lease.conn
    voice_url, status_url = _webhooks(settings, attempt_id)
    with session_scope(rt.sessions) as session:
        row = session.execute(
            select(
                CallAttempt.status,
                CallAttempt.call_sid,
                CallAttempt.created_at,
                CallAttempt.error_code,
                CallAttempt.placed_at,
                RoundTarget.phone,
                Round.id,
                Round.cps,
                Round.machine_detection,
                Round.windows,
                Round.blocked_dates,
                Round.starts_at,
                Round.ends_at,
            )
            .join(RoundTarget, RoundTarget.id == CallAttempt.target_id)
            .join(Round, Round.id == CallAttempt.round_id)
            .where(CallAttempt.id == attempt_id)
        ).one_or_none()
        if row is None or row.status != CallStatus.CLAIMED or row.call_sid:
            return "already handled"
        marked = row.error_code if row.error_code in CREATE_MARKS else None
        started = row.placed_at if marked else None
        now = clock.now()
        # The usual case, in the same transaction: nothing was ever sent for this claim; mark and go.
        begun = None if marked else begin_create(session, attempt_id, None, now)
        if begun is False:
            return _not_begun(session, attempt_id, None)
    request = CallRequest(
        attempt_id=attempt_id,
        to=row.phone,
        from_=settings.twilio_from_number or "+8610000000",
        url=voice_url,
        status_callback=status_url,
        timeout=settings.ring_timeout,
        machine_detection=row.machine_detection,
    )
    round_id, cps, claimed_at = row.id, row.cps, row.created_at
    schedule = (list(row.windows), list(row.blocked_dates or []), row.starts_at, row.ends_at)
    provider = get_provider(settings)
    since = claimed_at - timedelta(seconds=5)
    if marked:
        # An earlier run marked "create started": the call may exist. Look before doing anything else.
        if _adopt_existing(provider, rt, attempt_id, request.to, since):
            return "adopted"
        if marked == CREATING and clock.now() - started < create_settle_time(settings, cps):
            raise CreateMayBeInFlight(f"attempt {attempt_id}: an earlier create request may still be on its way")
        now = clock.now()
        with session_scope(rt.sessions) as session:
            if not begin_create(session, attempt_id, started, now):
                return _not_begun(session, attempt_id, started)
    started = now

    # Pace creates at the round's CPS across every worker: reserve a slot, wait for it.
    slot = reserve_slot(conn, dial_key(settings, round_id), cps, max_slot_wait(cps))
    if slot is None:
        _take_back(rt, attempt_id, started)
        raise RateLimitedError(f"attempt {attempt_id}: no dial slot within {max_slot_wait(cps):.0f} s")
    if slot - time.monotonic() > RECHECK_AFTER:
        sleep_until(slot - SLOT_LEAD, keepalive=lambda: lease.extend(LEASE_SECONDS))
        # A long wait: just before the slot, does the round still dial (pause, cancel, deadline)? After a
        # short one, begin_create's own check is recent enough for "no call more than 3 s after a pause".
        with rt.sessions() as session:
            reason = _why_not_dialling(session, round_id, clock.now() + timedelta(seconds=SLOT_LEAD), settings)
        if reason is not None:
            with session_scope(rt.sessions) as session:
                released = release_claim(session, attempt_id, f"not placed: {reason}", started=started)
            return "released" if released else "already handled"
    # The request and its reply can take the HTTP timeout: hold the lease that long.
    lease.extend(max(0.0, slot - time.monotonic()) + settings.twilio_http_timeout + 10)
    sleep_until(slot)
    # (It always has room after a reserved slot; if it ever has not, a wait could outlast a pause: give up soon.)
    if not take_cap(conn, dial_key(settings, round_id), cps, give_up_after=RECHECK_AFTER):
        _take_back(rt, attempt_id, started)
        raise RateLimitedError(f"attempt {attempt_id}: the round's dial rate is used up")
    # The last word, as the request leaves (the database read above may have been slow): no call outside
    # the windows.
    reason = _outside_schedule(schedule, clock.now(), settings)
    if reason is not None:
        with session_scope(rt.sessions) as session:
            released = release_claim(session, attempt_id, f"not placed: {reason}", started=started)
        return "released" if released else "already handled"
    try:
        info = provider.place_call(request)
    except PermanentNumberError as exc:
        with session_scope(rt.sessions) as session:
            attempt = session.get(CallAttempt, attempt_id)
            assert attempt is not None
            mark_permanent_failure(session, attempt, exc.code, str(exc))
        log.info("event=call_refused attempt=%s code=%s permanent=true", attempt_id, exc.code)
        return "invalid number"
    except AmbiguousCreateError as exc:
        log.warning("event=ambiguous_create attempt=%s status=%s error=%r", attempt_id, exc.status, exc)
        if exc.status is not None:
            # Twilio answered (5xx): whatever it did is done, and its list of calls says what.
            with session_scope(rt.sessions) as session:
                mark_ambiguous(session, attempt_id, started, str(exc))
        time.sleep(1.0)
        if _adopt_existing(provider, rt, attempt_id, request.to, since):
            return "adopted"
        raise
    except ConfigurationError:
        with session_scope(rt.sessions) as session:
            release_claim(session, attempt_id, "not placed: telephony configuration", started=started)
        raise
    except TelephonyError:
        # Refused (429, another 4xx): nothing was created.
        _take_back(rt, attempt_id, started)
        raise
    with session_scope(rt.sessions) as session:
        record_placed(session, attempt_id, info.sid, info.status, clock.now())
        stopped = _round_stopped(session, round_id)
    log.info("event=call_placed attempt=%s sid=%s", attempt_id, info.sid)
    if stopped:
        _cancel_call(provider, round_id, info.sid)
    return info.sid


def _not_begun(session, attempt_id: int, started: datetime | None) -> str:
    """begin_create said no: placed or released meanwhile, re-marked by another run, or the round stopped."""
    attempt = session.get(CallAttempt, attempt_id)
    if attempt is None or attempt.status != CallStatus.CLAIMED or attempt.call_sid:
        return "already handled"
    current = attempt.placed_at if attempt.error_code in CREATE_MARKS else None
    if current != started:
        return "already handled"
    # The round is not dialling (paused, cancelled): the claim goes back; we looked, no call exists.
    released = release_claim(session, attempt_id, "not placed: round not dialling", started=started)
    return "released" if released else "already handled"


def _take_back(rt: Runtime, attempt_id: int, started: datetime) -> None:
    with session_scope(rt.sessions) as session:
        create_not_sent(session, attempt_id, started)


def _why_not_dialling(session, round_id: int, now: datetime, settings: Settings) -> str | None:
    row = session.execute(
        select(Round.status, Round.windows, Round.blocked_dates, Round.starts_at, Round.ends_at).where(
            Round.id == round_id
        )
    ).one_or_none()
    if row is None or row.status != RoundStatus.RUNNING:
        return f"round {row.status.value if row else 'missing'}"
    return _outside_schedule((row.windows, row.blocked_dates or [], row.starts_at, row.ends_at), now, settings)


def _outside_schedule(schedule: tuple, now: datetime, settings: Settings) -> str | None:
    windows, blocked, starts_at, ends_at = schedule
    if ends_at is not None and now >= ends_at:
        return "deadline"
    if starts_at is not None and now < starts_at:
        return "not started"
    if not is_open(windows, blocked, now, settings.tz):
        return "window closed"
    return None


def _round_stopped(session, round_id: int) -> bool:
    """The round was cancelled or reached its deadline (a call created just then is cancelled at once)."""
    row = session.execute(select(Round.status, Round.ends_at).where(Round.id == round_id)).one_or_none()
    if row is None or row.status == RoundStatus.CANCELLED:
        return True
    return row.ends_at is not None and clock.now() >= row.ends_at


def _cancel_call(provider, round_id: int, sid: str) -> None:
    try:
        provider.cancel_call(sid)
        log.info("event=late_call_cancelled round=%s sid=%s", round_id, sid)
    except TelephonyError as exc:
        log.warning("event=cancel_failed sid=%s error=%r", sid, exc)


def _adopt_existing(provider, rt: Runtime, attempt_id: int, to: str, since: datetime) -> bool:
    """If the provider has a call to ``to`` since the attempt was claimed that no attempt knows, it is this
    attempt's (a create request that got no usable answer): adopt it."""
    calls: list[CallInfo] = provider.find_calls(to, since)
    with session_scope(rt.sessions) as session:
        sids = [c.sid for c in calls]
        known = set(session.scalars(select(CallAttempt.call_sid).where(CallAttempt.call_sid.in_(sids)))) if sids else set()
        fresh = sorted(
            (c for c in calls if c.sid not in known),
            key=lambda c: c.date_created or datetime.min.replace(tzinfo=UTC),
        )
        if not fresh:
            return False
        attempt = session.get(CallAttempt, attempt_id)
        if attempt is None or attempt.status != CallStatus.CLAIMED or attempt.call_sid:
            return False
        if len(fresh) > 1:
            log.error("event=several_unknown_calls attempt=%s sids=%s", attempt_id, ",".join(c.sid for c in fresh))
        mark_placed(session, attempt, fresh[0].sid, fresh[0].status, clock.now())
    log.info("event=call_adopted attempt=%s sid=%s", attempt_id, fresh[0].sid)
    return True


# --- cancelling -----------------------------------------------------------------------------------------


def cancel_round_calls(round_id: int, only_queued: bool = False) -> int:
    """Cancel the round's calls still queued at the provider (and, unless ``only_queued``, ringing ones);
    calls in progress finish."""
    rt = get_runtime()
    statuses = [CallStatus.QUEUED] if only_queued else [CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.RINGING]
    with rt.sessions() as session:
        sids = session.scalars(
            select(CallAttempt.call_sid).where(
                CallAttempt.round_id == round_id,
                CallAttempt.status.in_(statuses),
                CallAttempt.call_sid.is_not(None),
            )
        ).all()
    provider = get_provider(rt.settings)
    for sid in sids:
        try:
            provider.cancel_call(sid)
        except Exception as exc:  # noqa: BLE001 - keep cancelling the others
            log.warning("event=cancel_failed sid=%s error=%r", sid, exc)
    return len(sids)


# --- the sweeper ----------------------------------------------------------------------------------------


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
    finally:
        try:
            lock.release()
        except Exception as exc:  # noqa: BLE001 - it expires by itself (e.g. Redis was restarted meanwhile)
            log.warning("event=sweep_unlock_failed error=%r", exc)
    summary = f"rebuilt={len(rebuilt)} released={released} adopted={adopted} settled={settled} expired={expired}"
    if rebuilt or released or adopted or settled or expired:
        log.info("event=sweep %s", summary)
    return summary


def _claim_alive(settings: Settings, attempt_id: int) -> bool:
    """A worker is on it (holds the lease) or its place_call job waits in a queue (or a scheduled retry)."""
    if lease_held(redis_connection(settings), lease_key(settings, attempt_id)):
        return True
    return job_waiting(settings, f"place-call-{attempt_id}")


def _recover_claims(rt: Runtime, keepalive) -> tuple[int, int]:
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
            if _adopt_existing(provider, rt, claim.attempt_id, claim.phone, claim.created_at - timedelta(seconds=5)):
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


def _after_adoption(rt: Runtime, provider, claim: OpenClaim) -> None:
    with rt.sessions() as session:
        sid = session.scalar(select(CallAttempt.call_sid).where(CallAttempt.id == claim.attempt_id))
        stopped = _round_stopped(session, claim.round_id)
    if sid and stopped:
        _cancel_call(provider, claim.round_id, sid)


def _settle_unsettled_calls(rt: Runtime, keepalive) -> int:
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
