"""RQ jobs. Each takes ids, reloads state, and is safe to run twice.

- ``dispatch_round(round_id)``: one tick of a round's dialler: claims due targets inside the calling window
  and within the round's concurrency, enqueues a ``place_call`` per claim, settles stuck calls, and
  schedules its next tick. One chain per round: a tick that is not the round's current chain exits.
- ``place_call(attempt_id)``: places one claimed call through the provider, paced by the round's CPS.
- ``cancel_round_calls(round_id)``: cancels calls still queued or ringing at the provider.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from datetime import datetime, timedelta

from rq import Retry, get_current_job
from sqlalchemy import select

from campaigns import clock
from campaigns.calls import (
    apply_call_status,
    claim_due_targets,
    expire_deadline,
    live_calls,
    mark_permanent_failure,
    mark_placed,
)
from campaigns.db import session_scope
from campaigns.models import FINAL_CALL_STATUSES, CallAttempt, CallStatus, Round, RoundStatus, RoundTarget
from campaigns.rounds import complete_if_done, release_claim
from campaigns.runtime import get_runtime
from campaigns.schedule import is_open, next_open
from campaigns.settings import Settings
from workers.limiter import acquire_dial_slot
from workers.queues import enqueue, namespaced_job_id, redis_connection, redis_key
from workers.telephony import get_provider
from workers.telephony.base import (
    AmbiguousCreateError,
    CallRequest,
    ConfigurationError,
    PermanentNumberError,
    RateLimitedError,
)

log = logging.getLogger("sanlv.jobs")

TICK_SECONDS = 1.0
IDLE_TICK_SECONDS = 30.0  # nothing due: look again at least this often (a pause may be lifted, a retry due)
STUCK_GRACE = timedelta(minutes=15)  # DESIGN: settled with the provider within ring timeout + 15 minutes
# Transport-level retries for a create that was refused for load (429) or was ambiguous (after a look-up).
PLACE_RETRY = Retry(max=6, interval=[1, 2, 5, 10, 30, 60])


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
    next_delay: float | None = TICK_SECONDS
    with session_scope(rt.sessions) as session:
        round_ = session.get(Round, round_id)
        if round_ is None or round_.status not in (RoundStatus.RUNNING,):
            conn.delete(_chain_key(settings, round_id))
            return f"round is {round_.status.value if round_ else 'missing'}"
        stuck = _settle_stuck_calls(session, settings, round_, now)
        if round_.ends_at is not None and now >= round_.ends_at:
            expired = expire_deadline(session, round_, now)
            if expired:
                log.info("event=deadline round=%s unreachable=%s", round_id, expired)
            _cancel_queued_after(settings, session, round_)
        elif round_.starts_at is not None and now < round_.starts_at:
            next_delay = min((round_.starts_at - now).total_seconds(), IDLE_TICK_SECONDS)
        elif not is_open(round_.windows, round_.blocked_dates, now, settings.tz):
            opens = next_open(round_.windows, round_.blocked_dates, now, settings.tz)
            next_delay = IDLE_TICK_SECONDS if opens is None else min((opens - now).total_seconds(), IDLE_TICK_SECONDS)
        else:
            capacity = round_.max_concurrent - live_calls(session, round_id)
            per_tick = max(1, math.ceil(round_.cps * TICK_SECONDS * 2))
            claims = claim_due_targets(session, round_, now, min(capacity, per_tick))
            if not claims and capacity > 0:
                next_delay = _seconds_until_next_due(session, round_, now)
        done = complete_if_done(session, round_id)
    # Work follows the commit.
    for claim in claims:
        enqueue(settings, place_call, claim.attempt_id, job_id=f"place-call-{claim.attempt_id}", retry=PLACE_RETRY)
    if done:
        conn.delete(_chain_key(settings, round_id))
        log.info("event=round_completed round=%s", round_id)
        return "completed"
    _continue_chain(settings, round_id, next_delay if next_delay is not None else TICK_SECONDS)
    return f"claimed={len(claims)} stuck={stuck}"


def _seconds_until_next_due(session, round_: Round, now: datetime) -> float:
    from sqlalchemy import func

    from campaigns.models import TargetState

    nxt = session.scalar(
        select(func.min(RoundTarget.next_attempt_at)).where(
            RoundTarget.round_id == round_.id, RoundTarget.state == TargetState.PENDING
        )
    )
    if nxt is None:
        return TICK_SECONDS
    return max(TICK_SECONDS, min((nxt - now).total_seconds(), IDLE_TICK_SECONDS))


def _settle_stuck_calls(session, settings: Settings, round_: Round, now: datetime) -> int:
    """Attempts with no final status after ring timeout + 15 minutes are settled from the provider's record."""
    limit = now - timedelta(seconds=settings.ring_timeout) - STUCK_GRACE
    stuck = session.scalars(
        select(CallAttempt).where(
            CallAttempt.round_id == round_.id,
            CallAttempt.status.not_in(FINAL_CALL_STATUSES),
            CallAttempt.status != CallStatus.CLAIMED,
            CallAttempt.call_sid.is_not(None),
            CallAttempt.created_at < limit,
        )
    ).all()
    if not stuck:
        return 0
    provider = get_provider(settings)
    for attempt in stuck:
        try:
            info = provider.fetch_call(attempt.call_sid)
        except Exception as exc:  # noqa: BLE001 - one unreachable lookup must not stop the dialler
            log.warning("event=stuck_lookup_failed attempt=%s error=%r", attempt.id, exc)
            continue
        if CallStatus(info.status) in FINAL_CALL_STATUSES:
            apply_call_status(session, attempt, info.status, None, duration=info.duration)
            log.info("event=stuck_settled attempt=%s status=%s", attempt.id, info.status)
    return len(stuck)


def _cancel_queued_after(settings: Settings, session, round_: Round) -> None:
    queued = session.scalars(
        select(CallAttempt.call_sid).where(
            CallAttempt.round_id == round_.id,
            CallAttempt.status.in_([CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.RINGING]),
            CallAttempt.call_sid.is_not(None),
        )
    ).all()
    if queued:
        enqueue(settings, cancel_round_calls, round_.id, job_id=f"cancel-round-{round_.id}")


def _webhooks(settings: Settings, attempt_id: int) -> tuple[str, str]:
    base = settings.public_base_url
    if not base:
        raise ConfigurationError("PUBLIC_BASE_URL is not set: the phone network cannot reach the webhooks")
    return f"{base}/ivr/voice?attempt={attempt_id}", f"{base}/ivr/status?attempt={attempt_id}"


def place_call(attempt_id: int) -> str:
    """Place the call of a claimed attempt. Safe to run twice: only a ``claimed`` attempt is dialled."""
    rt = get_runtime()
    settings = rt.settings
    with session_scope(rt.sessions) as session:
        attempt = session.get(CallAttempt, attempt_id)
        if attempt is None or attempt.status != CallStatus.CLAIMED or attempt.call_sid:
            return "already handled"
        target = session.get(RoundTarget, attempt.target_id)
        round_ = session.get(Round, attempt.round_id)
        assert target is not None and round_ is not None
        if round_.status != RoundStatus.RUNNING or not is_open(round_.windows, round_.blocked_dates, clock.now(), settings.tz):
            release_claim(session, attempt, reason="not placed: round not dialling")
            return "released"
        voice_url, status_url = _webhooks(settings, attempt_id)
        request = CallRequest(
            attempt_id=attempt_id,
            to=target.phone,
            from_=settings.twilio_from_number or "+8610000000",
            url=voice_url,
            status_callback=status_url,
            timeout=settings.ring_timeout,
        )
        round_id, cps, created_at = round_.id, round_.cps, attempt.created_at
        ambiguous_before = attempt.error_code == "ambiguous"
    provider = get_provider(settings)
    if ambiguous_before and _adopt_existing(provider, session_factory=rt.sessions, attempt_id=attempt_id, to=request.to, since=created_at):
        return "adopted"
    # Pace creates at the round's CPS across every worker (a shared limiter in Redis).
    if not acquire_dial_slot(redis_connection(settings), redis_key(settings, round_id), cps, give_up_after=60):
        raise RateLimitedError("dial slot not available within 60 s")
    with session_scope(rt.sessions) as session:
        round_ = session.get(Round, round_id)
        attempt = session.get(CallAttempt, attempt_id)
        assert round_ is not None and attempt is not None
        if attempt.status != CallStatus.CLAIMED:
            return "already handled"
        if round_.status != RoundStatus.RUNNING:
            # Paused or cancelled while we waited for a slot: the claim goes back.
            release_claim(session, attempt, reason="not placed: round not dialling")
            return "released"
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
        log.warning("event=ambiguous_create attempt=%s error=%r", attempt_id, exc)
        with session_scope(rt.sessions) as session:
            attempt = session.get(CallAttempt, attempt_id)
            assert attempt is not None
            attempt.error_code = "ambiguous"
            attempt.error_message = str(exc)[:2000]
        time.sleep(1.0)
        if _adopt_existing(provider, session_factory=rt.sessions, attempt_id=attempt_id, to=request.to, since=created_at):
            return "adopted"
        raise
    except ConfigurationError:
        with session_scope(rt.sessions) as session:
            attempt = session.get(CallAttempt, attempt_id)
            if attempt is not None and attempt.status == CallStatus.CLAIMED:
                release_claim(session, attempt, reason="not placed: telephony configuration")
        raise
    with session_scope(rt.sessions) as session:
        attempt = session.get(CallAttempt, attempt_id)
        assert attempt is not None
        mark_placed(session, attempt, info.sid, info.status, clock.now())
    log.info("event=call_placed attempt=%s sid=%s", attempt_id, info.sid)
    return info.sid


def _adopt_existing(provider, *, session_factory, attempt_id: int, to: str, since: datetime) -> bool:
    """After an ambiguous create: if the provider has a call to this number since the attempt began, adopt it."""
    calls = provider.find_calls(to, since - timedelta(seconds=5))
    with session_scope(session_factory) as session:
        known = set(session.scalars(select(CallAttempt.call_sid).where(CallAttempt.call_sid.in_([c.sid for c in calls]))))
        fresh = [c for c in calls if c.sid not in known]
        if not fresh:
            return False
        attempt = session.get(CallAttempt, attempt_id)
        assert attempt is not None
        mark_placed(session, attempt, fresh[0].sid, fresh[0].status, clock.now())
        attempt.error_code = None
    log.info("event=call_adopted attempt=%s sid=%s", attempt_id, fresh[0].sid)
    return True


def cancel_round_calls(round_id: int) -> int:
    """Cancel the round's calls that are still queued or ringing at the provider; live calls finish."""
    rt = get_runtime()
    with rt.sessions() as session:
        sids = session.scalars(
            select(CallAttempt.call_sid).where(
                CallAttempt.round_id == round_id,
                CallAttempt.status.in_([CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.RINGING]),
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
