"""Dispatch: each running round's chain of dispatcher ticks.

``dispatch_round(round_id)`` (an RQ job) is one tick: it claims due targets inside the calling window and
within the round's concurrency, enqueues a ``place_call`` per claim, ends the round at its deadline, and
schedules its next tick. One chain per round: a Redis key names the chain's next job, and a tick that is not
the round's current chain exits. ``kick_dispatch`` starts (or restarts) a chain; ``rebuild_dispatch`` restarts
the chains Redis lost, from the database.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime, timedelta

from rq import get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import func, select

from campaigns import clock
from campaigns.calls import claim_due_targets, expire_deadline, live_calls
from campaigns.db import session_scope
from campaigns.models import CallAttempt, CallStatus, Round, RoundStatus, RoundTarget, TargetState
from campaigns.rounds import complete_if_done
from campaigns.runtime import get_runtime
from campaigns.schedule import is_open, next_open
from campaigns.settings import Settings
from workers.accounts import effective_cps
from workers.placing import cancel_round_calls, enqueue_place_calls
from workers.queues import enqueue, job_waiting, namespaced_job_id, redis_connection, redis_key

log = logging.getLogger("sanlv.jobs")

TICK_SECONDS = 1.0
IDLE_TICK_SECONDS = 30.0  # nothing due: look again at least this often (a pause may be lifted, a retry due)
# Claims waiting for their create, per round, as seconds of dialling at the round's CPS: enough that every slot
# is used although the next dispatch tick may come late (every worker busy), few enough that a pause or a
# closing window has little to give back. A place_call reserves its slot only when it starts, so
# it never waits long for it.
BACKLOG_SECONDS = 5.0
DISPATCH_TICK_LIMIT = timedelta(seconds=60)  # a dispatch tick that has "run" longer than this belongs to a dead worker


def chain_key(settings: Settings, round_id: int) -> str:
    """The key naming the round's current chain: the id of its next dispatch job."""
    return redis_key(settings, "dispatch", round_id)


def kick_dispatch(settings: Settings, round_id: int, at: datetime | None = None) -> str:
    """Start (or restart) the round's dispatch chain; any older chain stops at its next tick."""
    job_id = namespaced_job_id(settings, f"dispatch-{round_id}-{uuid.uuid4().hex[:12]}")
    conn = redis_connection(settings)
    # The key names the chain's next job before that job exists, so it never starts unrecognised.
    conn.set(chain_key(settings, round_id), job_id, ex=7 * 86400)
    enqueue(settings, dispatch_round, round_id, job_id=job_id, at=at, at_front=True)
    return job_id


def _continue_chain(settings: Settings, round_id: int, delay: float) -> None:
    job_id = namespaced_job_id(settings, f"dispatch-{round_id}-{uuid.uuid4().hex[:12]}")
    conn = redis_connection(settings)
    conn.set(chain_key(settings, round_id), job_id, ex=7 * 86400)
    # Ahead of the place_call jobs waiting (BACKLOG_SECONDS of them): behind them the tick would come once
    # per backlog, not once a second, and claim a whole backlog at once, stalling the worker that runs it.
    if delay <= 0:
        enqueue(settings, dispatch_round, round_id, job_id=job_id, at_front=True)
    else:
        enqueue(settings, dispatch_round, round_id, job_id=job_id, delay=timedelta(seconds=delay), at_front=True)


def dispatch_round(round_id: int) -> str:
    """One dispatcher tick for ``round_id``; returns what it did (for logs and tests)."""
    rt = get_runtime()
    settings = rt.settings
    conn = redis_connection(settings)
    job = get_current_job()
    current = conn.get(chain_key(settings, round_id))
    if job is not None and current is not None and current.decode() != job.id:
        return "stale chain"
    now = clock.now()
    claims = []
    cancel_queued = False
    next_delay: float = TICK_SECONDS
    with session_scope(rt.sessions) as session:
        round_ = session.get(Round, round_id)
        if round_ is None or round_.status not in (RoundStatus.RUNNING,):
            conn.delete(chain_key(settings, round_id))
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
            cps = effective_cps(settings, round_.cps, round_.accounts)
            backlog = max(1, math.ceil(cps * BACKLOG_SECONDS)) - _waiting_claims(session, round_id)
            claims = claim_due_targets(session, round_, now, min(capacity, backlog))
            if not claims and capacity > 0 and backlog > 0:
                next_delay = _seconds_until_next_due(session, round_, now)
        queued_calls = cancel_queued and _has_queued_calls(session, round_id)
        done = complete_if_done(session, round_id)
    # Work follows the commit.
    enqueue_place_calls(settings, [claim.attempt_id for claim in claims])
    if queued_calls:
        enqueue(settings, cancel_round_calls, round_id, True, job_id=f"cancel-queued-{round_id}")
    if done:
        conn.delete(chain_key(settings, round_id))
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
        job_id = conn.get(chain_key(settings, round_id))
        if job_id is None or not _chain_alive(settings, job_id.decode()):
            kick_dispatch(settings, round_id)
            restarted.append(round_id)
    if restarted:
        log.info("event=dispatch_rebuilt rounds=%s", ",".join(map(str, restarted)))
    return restarted


def _chain_alive(settings: Settings, job_id: str) -> bool:
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
