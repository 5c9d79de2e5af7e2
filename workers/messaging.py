"""Sending notices: each running notice's chain of dispatcher ticks, and one job per message or call.

The same engine as the dialler's (``workers.dispatch`` and ``workers.placing``): windows, the rate limiter
shared by every worker through Redis, leases, exactly-once creates, pause, resume, cancel and recovery.

- ``dispatch_notice(notice_id)`` (an RQ job) is one tick: inside the notice's windows it claims due targets
  (a conditional UPDATE: pending -> sending), enqueues a ``send_notice`` per claim after the commit, applies
  the deadline, completes the notice when every target is final, and schedules its next tick. One chain per
  notice (a Redis key names its next job); ``rebuild_notice_dispatch`` restarts chains Redis lost.
- ``send_notice(target_id)`` (an RQ job) sends one SMS through the Messages API, or places one voice call,
  paced at the notice's rate across every worker. It marks "create started" in its own commit before the
  request; a run that finds the mark looks the message (or call) up at the provider first and adopts it if it
  exists. After an ambiguous error (a timeout, a 5xx) it looks before any retry: nobody is texted twice.
  A 429 takes the mark back (nothing was created) and RQ retries the job with jittered backoff.
- ``sweep_notices()`` (called by the sweeper) releases or adopts claims whose worker died and settles voice
  calls whose final status never came.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from datetime import UTC, datetime, timedelta

from rq import get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import func, select

from campaigns import clock
from campaigns.db import session_scope
from campaigns.models import (
    CallAttempt,
    Notice,
    NoticeChannel,
    NoticeStatus,
    NoticeTarget,
    NoticeTargetState,
)
from campaigns.notices import (
    apply_notice_call_status,
    begin_send,
    claim_due,
    complete_if_done,
    expire_deadline,
    mark_ambiguous,
    mark_invalid,
    record_call_placed,
    record_sms_sent,
    release_send,
    send_not_made,
)
from campaigns.runtime import Runtime, get_runtime
from campaigns.schedule import is_open, next_open
from campaigns.settings import Settings
from workers.leases import Lease, lease_held
from workers.limiter import reserve_slot, sleep_until, take_cap
from workers.queues import enqueue, jittered_retry, job_waiting, namespaced_job_id, redis_connection, redis_key
from workers.telephony import get_provider
from workers.telephony.base import (
    AmbiguousCreateError,
    CallRequest,
    ConfigurationError,
    MessageRequest,
    PermanentNumberError,
    RateLimitedError,
    TelephonyError,
    TelephonyProvider,
)

log = logging.getLogger("sanlv.jobs")

TICK_SECONDS = 1.0
IDLE_TICK_SECONDS = 30.0
BACKLOG_SECONDS = 5.0  # claims waiting for their send, as seconds of sending at the notice's rate
VOICE_MAX_LIVE = 20  # simultaneous voice-notice calls per notice
LEASE_SECONDS = 20.0
RECHECK_AFTER = 1.0
SLOT_LEAD = 0.1
CLAIM_GRACE = timedelta(seconds=20)  # a claim this old whose job is gone and lease free belongs to a dead worker
STUCK_AFTER = timedelta(minutes=14)  # a voice call with no final status is asked about after ring + this


class SendMayBeInFlight(TelephonyError):
    """An earlier run's create request may still be on its way; look again later (RQ retries the job)."""


# --- dispatch -------------------------------------------------------------------------------------------


def chain_key(settings: Settings, notice_id: int) -> str:
    return redis_key(settings, "notice-dispatch", notice_id)


def rate_key(settings: Settings, notice_id: int) -> str:
    return redis_key(settings, "notice-rate", notice_id)


def lease_key(settings: Settings, target_id: int) -> str:
    return redis_key(settings, "lease", "notice-target", target_id)


def kick_notice_dispatch(settings: Settings, notice_id: int) -> str:
    """Start (or restart) the notice's dispatch chain; an older chain stops at its next tick."""
    job_id = namespaced_job_id(settings, f"notice-dispatch-{notice_id}-{uuid.uuid4().hex[:12]}")
    redis_connection(settings).set(chain_key(settings, notice_id), job_id, ex=7 * 86400)
    enqueue(settings, dispatch_notice, notice_id, job_id=job_id)
    return job_id


def _continue_chain(settings: Settings, notice_id: int, delay: float) -> None:
    job_id = namespaced_job_id(settings, f"notice-dispatch-{notice_id}-{uuid.uuid4().hex[:12]}")
    redis_connection(settings).set(chain_key(settings, notice_id), job_id, ex=7 * 86400)
    enqueue(settings, dispatch_notice, notice_id, job_id=job_id, delay=timedelta(seconds=delay))


def after_notice_change(settings: Settings, notice_id: int, command: str) -> None:
    """Called after a notice's launch, pause, resume or cancel is committed (registered by web.wiring)."""
    if command in ("launch", "resume"):
        kick_notice_dispatch(settings, notice_id)
    elif command == "cancel":
        enqueue(settings, cancel_notice_calls, notice_id, job_id=f"cancel-notice-{notice_id}")


def dispatch_notice(notice_id: int) -> str:
    """One dispatcher tick for ``notice_id``; returns what it did (for logs and tests)."""
    rt = get_runtime()
    settings = rt.settings
    conn = redis_connection(settings)
    job = get_current_job()
    current = conn.get(chain_key(settings, notice_id))
    if job is not None and current is not None and current.decode() != job.id:
        return "stale chain"
    now = clock.now()
    claims = []
    next_delay = TICK_SECONDS
    with session_scope(rt.sessions) as session:
        notice = session.get(Notice, notice_id)
        if notice is None or notice.status != NoticeStatus.RUNNING:
            conn.delete(chain_key(settings, notice_id))
            return f"notice is {notice.status.value if notice else 'missing'}"
        if notice.ends_at is not None and now >= notice.ends_at:
            expired = expire_deadline(session, notice, now)
            if expired:
                log.info("event=notice_deadline notice=%s failed=%s", notice_id, expired)
        elif notice.starts_at is not None and now < notice.starts_at:
            next_delay = min((notice.starts_at - now).total_seconds(), IDLE_TICK_SECONDS)
        elif not is_open(notice.windows, notice.blocked_dates or [], now, settings.tz):
            opens = next_open(notice.windows, notice.blocked_dates or [], now, settings.tz)
            next_delay = IDLE_TICK_SECONDS if opens is None else min((opens - now).total_seconds(), IDLE_TICK_SECONDS)
        else:
            backlog = max(1, math.ceil(notice.cps * BACKLOG_SECONDS)) - _waiting_claims(session, notice_id)
            if notice.channel == NoticeChannel.VOICE:
                backlog = min(backlog, VOICE_MAX_LIVE - _live_calls(session, notice_id))
            claims = claim_due(session, notice, now, backlog)
            if not claims and backlog > 0:
                next_delay = _seconds_until_next_due(session, notice_id, now)
        done = complete_if_done(session, notice_id)
    for claim in claims:
        enqueue_send(settings, claim.target_id)
    if done:
        conn.delete(chain_key(settings, notice_id))
        log.info("event=notice_completed notice=%s", notice_id)
        return "completed"
    _continue_chain(settings, notice_id, max(0.1, next_delay))
    return f"claimed={len(claims)}"


def _waiting_claims(session, notice_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(NoticeTarget)
            .where(
                NoticeTarget.notice_id == notice_id,
                NoticeTarget.state == NoticeTargetState.SENDING,
                NoticeTarget.message_sid.is_(None),
                NoticeTarget.call_sid.is_(None),
            )
        )
        or 0
    )


def _live_calls(session, notice_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(NoticeTarget)
            .where(NoticeTarget.notice_id == notice_id, NoticeTarget.state == NoticeTargetState.SENDING)
        )
        or 0
    )


def _seconds_until_next_due(session, notice_id: int, now: datetime) -> float:
    nxt = session.scalar(
        select(func.min(NoticeTarget.next_attempt_at)).where(
            NoticeTarget.notice_id == notice_id, NoticeTarget.state == NoticeTargetState.PENDING
        )
    )
    if nxt is None:
        return TICK_SECONDS
    return max(TICK_SECONDS, min((nxt - now).total_seconds(), IDLE_TICK_SECONDS))


def rebuild_notice_dispatch(settings: Settings) -> list[int]:
    """Restart the chain of every running notice whose chain is gone (Redis restarted, a worker died)."""
    conn = redis_connection(settings)
    with get_runtime().sessions() as session:
        running = session.scalars(select(Notice.id).where(Notice.status == NoticeStatus.RUNNING)).all()
    restarted = []
    for notice_id in running:
        job_id = conn.get(chain_key(settings, notice_id))
        if job_id is None or not _chain_alive(settings, job_id.decode()):
            kick_notice_dispatch(settings, notice_id)
            restarted.append(notice_id)
    if restarted:
        log.info("event=notice_dispatch_rebuilt notices=%s", ",".join(map(str, restarted)))
    return restarted


def _chain_alive(settings: Settings, job_id: str) -> bool:
    """The chain's next job waits in a queue (or is scheduled), or is running and not for long."""
    if job_waiting(settings, job_id):
        return True
    try:
        job = Job.fetch(job_id, connection=redis_connection(settings))
    except NoSuchJobError:
        return False
    if job.get_status(refresh=False) != JobStatus.STARTED:
        return False
    started = job.started_at
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    # A tick takes well under a second; one "running" for a minute lost its worker.
    return started is None or datetime.now(UTC) - started < timedelta(seconds=60)


# --- sending one --------------------------------------------------------------------------------------------


def send_retry():
    return jittered_retry(retries=6, base=2.0, cap=60.0)


def enqueue_send(settings: Settings, target_id: int) -> None:
    enqueue(settings, send_notice, target_id, job_id=f"send-notice-{target_id}", retry=send_retry())


def max_slot_wait(cps: float) -> float:
    return min(30.0, max(5.0, 3.0 / cps))


def settle_time(settings: Settings, cps: float) -> timedelta:
    """After this long, a "create started" mark whose run is gone can have no request on its way."""
    return timedelta(seconds=max_slot_wait(cps) + settings.twilio_http_timeout + 10)


def _urls(settings: Settings, target_id: int, number: int) -> dict[str, str]:
    base = settings.public_base_url
    if not base:
        raise ConfigurationError("PUBLIC_BASE_URL is not set: the phone network cannot reach the webhooks")
    return {
        "sms_status": f"{base}/ivr/sms/status?target={target_id}",
        "voice": f"{base}/ivr/notice/voice?target={target_id}&n={number}",
        "voice_status": f"{base}/ivr/notice/status?target={target_id}&n={number}",
    }


def send_notice(target_id: int) -> str:
    """Send one notice target's SMS or place its call. Safe to run twice and concurrently."""
    rt = get_runtime()
    conn = redis_connection(rt.settings)
    lease = Lease(conn, lease_key(rt.settings, target_id))
    if not lease.acquire(LEASE_SECONDS):
        return "in flight"
    try:
        return _send(rt, lease, target_id)
    finally:
        lease.release()


def _send(rt: Runtime, lease: Lease, target_id: int) -> str:
    settings = rt.settings
    with session_scope(rt.sessions) as session:
        row = session.execute(
            select(
                NoticeTarget.state,
                NoticeTarget.message_sid,
                NoticeTarget.call_sid,
                NoticeTarget.create_started_at,
                NoticeTarget.claimed_at,
                NoticeTarget.phone,
                NoticeTarget.attempts,
                Notice.id,
                Notice.channel,
                Notice.text,
                Notice.cps,
                Notice.windows,
                Notice.blocked_dates,
                Notice.starts_at,
                Notice.ends_at,
            )
            .join(Notice, Notice.id == NoticeTarget.notice_id)
            .where(NoticeTarget.id == target_id)
        ).one_or_none()
        if row is None or row.state != NoticeTargetState.SENDING or row.message_sid or row.call_sid:
            return "already handled"
        started = row.create_started_at
        now = clock.now()
        begun = None if started else begin_send(session, target_id, None, now)
        if begun is False:
            return _not_begun(session, target_id, None)
    urls = _urls(settings, target_id, row.attempts)
    provider = get_provider(settings)
    from_number = settings.twilio_from_number or "+8610000000"
    since = (row.claimed_at or clock.now()) - timedelta(seconds=5)
    if started is not None:
        # An earlier run marked "create started": the message (or call) may exist. Look before anything else.
        if _adopt_existing(provider, rt, target_id, row, from_number, since):
            return "adopted"
        if clock.now() - started < settle_time(settings, row.cps):
            raise SendMayBeInFlight(f"notice target {target_id}: an earlier request may still be on its way")
        now = clock.now()
        with session_scope(rt.sessions) as session:
            if not begin_send(session, target_id, started, now):
                return _not_begun(session, target_id, started)
    started = now

    key = rate_key(settings, row.id)
    slot = reserve_slot(lease.conn, key, row.cps, max_slot_wait(row.cps))
    if slot is None:
        _take_back(rt, target_id, started)
        raise RateLimitedError(f"notice target {target_id}: no send slot within {max_slot_wait(row.cps):.0f} s")
    schedule = (row.windows, row.blocked_dates or [], row.starts_at, row.ends_at)
    if slot - time.monotonic() > RECHECK_AFTER:
        sleep_until(slot - SLOT_LEAD, keepalive=lambda: lease.extend(LEASE_SECONDS))
        with rt.sessions() as session:
            status = session.scalar(select(Notice.status).where(Notice.id == row.id))
        reason = "notice not running" if status != NoticeStatus.RUNNING else _outside(schedule, clock.now(), settings)
        if reason is not None:
            with session_scope(rt.sessions) as session:
                released = release_send(session, target_id, f"not sent: {reason}", started=started)
            return "released" if released else "already handled"
    lease.extend(max(0.0, slot - time.monotonic()) + settings.twilio_http_timeout + 10)
    sleep_until(slot)
    if not take_cap(lease.conn, key, row.cps, give_up_after=RECHECK_AFTER):
        _take_back(rt, target_id, started)
        raise RateLimitedError(f"notice target {target_id}: the notice's send rate is used up")
    reason = _outside(schedule, clock.now(), settings)
    if reason is not None:
        with session_scope(rt.sessions) as session:
            released = release_send(session, target_id, f"not sent: {reason}", started=started)
        return "released" if released else "already handled"
    try:
        if row.channel == NoticeChannel.SMS:
            info = provider.send_message(
                MessageRequest(target_id, row.phone, from_number, row.text or "", urls["sms_status"])
            )
            sid, status = info.sid, info.status
        else:
            call = provider.place_call(
                CallRequest(
                    attempt_id=target_id,
                    to=row.phone,
                    from_=from_number,
                    url=urls["voice"],
                    status_callback=urls["voice_status"],
                    timeout=settings.ring_timeout,
                )
            )
            sid, status = call.sid, call.status
    except PermanentNumberError as exc:
        with session_scope(rt.sessions) as session:
            mark_invalid(session, target_id, exc.code, str(exc))
        log.info("event=notice_refused target=%s code=%s permanent=true", target_id, exc.code)
        return "invalid number"
    except AmbiguousCreateError as exc:
        log.warning("event=ambiguous_send target=%s status=%s error=%r", target_id, exc.status, exc)
        with session_scope(rt.sessions) as session:
            mark_ambiguous(session, target_id, started, str(exc))
        time.sleep(1.0)
        if _adopt_existing(provider, rt, target_id, row, from_number, since):
            return "adopted"
        raise  # RQ retries; the next run finds the mark and looks again before sending
    except ConfigurationError:
        with session_scope(rt.sessions) as session:
            release_send(session, target_id, "not sent: telephony configuration", started=started)
        raise
    except TelephonyError:
        _take_back(rt, target_id, started)  # refused (429, another 4xx): nothing was created
        raise
    with session_scope(rt.sessions) as session:
        if row.channel == NoticeChannel.SMS:
            record_sms_sent(session, target_id, sid, status, clock.now())
            stopped = False  # a text cannot be called back
        else:
            record_call_placed(session, target_id, sid, clock.now())
            stopped = session.scalar(select(Notice.status).where(Notice.id == row.id)) == NoticeStatus.CANCELLED
    log.info("event=notice_sent target=%s sid=%s", target_id, sid)
    if stopped:
        _cancel_quietly(provider, sid)
    return sid


def _not_begun(session, target_id: int, started: datetime | None) -> str:
    target = session.get(NoticeTarget, target_id)
    if target is None or target.state != NoticeTargetState.SENDING or target.message_sid or target.call_sid:
        return "already handled"
    if target.create_started_at != started:
        return "already handled"
    released = release_send(session, target_id, "not sent: notice not running", started=started)
    return "released" if released else "already handled"


def _take_back(rt: Runtime, target_id: int, started: datetime) -> None:
    with session_scope(rt.sessions) as session:
        send_not_made(session, target_id, started)


def _outside(schedule: tuple, now: datetime, settings: Settings) -> str | None:
    windows, blocked, starts_at, ends_at = schedule
    if ends_at is not None and now >= ends_at:
        return "deadline"
    if starts_at is not None and now < starts_at:
        return "not started"
    if not is_open(windows, blocked, now, settings.tz):
        return "window closed"
    return None


def _adopt_existing(provider: TelephonyProvider, rt: Runtime, target_id: int, row, from_number: str, since) -> bool:
    """If the provider has a message (or call) to the target's number since it was claimed that nothing of
    ours knows, it is this target's (a create request that got no usable answer): adopt it."""
    if row.channel == NoticeChannel.SMS:
        found = [m for m in provider.find_messages(row.phone, from_number, since) if m.body == (row.text or "")]
        sids = [m.sid for m in found]
        column = NoticeTarget.message_sid
    else:
        found = provider.find_calls(row.phone, since)
        sids = [c.sid for c in found]
        column = NoticeTarget.call_sid
    if not sids:
        return False
    with session_scope(rt.sessions) as session:
        known = set(session.scalars(select(column).where(column.in_(sids))))
        if row.channel == NoticeChannel.VOICE:
            known |= set(session.scalars(select(CallAttempt.call_sid).where(CallAttempt.call_sid.in_(sids))))
        fresh = sorted(
            (item for item in found if item.sid not in known),
            key=lambda item: item.date_created or datetime.min.replace(tzinfo=UTC),
        )
        if not fresh:
            return False
        if len(fresh) > 1:
            log.error("event=several_unknown_sends target=%s sids=%s", target_id, ",".join(f.sid for f in fresh))
        now = clock.now()
        if row.channel == NoticeChannel.SMS:
            adopted = record_sms_sent(session, target_id, fresh[0].sid, fresh[0].status, now)
        else:
            adopted = record_call_placed(session, target_id, fresh[0].sid, now)
    if adopted:
        log.info("event=notice_adopted target=%s sid=%s", target_id, fresh[0].sid)
    return adopted


def _cancel_quietly(provider: TelephonyProvider, sid: str) -> None:
    try:
        provider.cancel_call(sid)
    except TelephonyError as exc:
        log.warning("event=cancel_failed sid=%s error=%r", sid, exc)


def cancel_notice_calls(notice_id: int) -> int:
    """Cancel a voice notice's calls still queued or ringing at the provider; calls in progress finish."""
    rt = get_runtime()
    with rt.sessions() as session:
        sids = session.scalars(
            select(NoticeTarget.call_sid).where(
                NoticeTarget.notice_id == notice_id,
                NoticeTarget.state == NoticeTargetState.SENDING,
                NoticeTarget.call_sid.is_not(None),
                NoticeTarget.provider_status.in_(["queued", "initiated", "ringing"]),
            )
        ).all()
    if sids:
        provider = get_provider(rt.settings)
        for sid in sids:
            _cancel_quietly(provider, sid)
    return len(sids)


# --- recovery (the sweeper) ---------------------------------------------------------------------------------


def sweep_notices(keepalive=lambda: None) -> tuple[int, int, int, int]:
    """Restart lost chains, recover claims whose worker died, settle stuck voice calls.

    Returns:
        (chains rebuilt, claims released, sends adopted, calls settled).
    """
    rt = get_runtime()
    settings = rt.settings
    rebuilt = len(rebuild_notice_dispatch(settings))
    now = clock.now()
    with rt.sessions() as session:
        claims = session.execute(
            select(NoticeTarget.id, NoticeTarget.create_started_at)
            .where(
                NoticeTarget.state == NoticeTargetState.SENDING,
                NoticeTarget.message_sid.is_(None),
                NoticeTarget.call_sid.is_(None),
                NoticeTarget.claimed_at < now - CLAIM_GRACE,
            )
            .limit(500)
        ).all()
    released = adopted = 0
    conn = redis_connection(settings)
    for target_id, started in claims:
        keepalive()
        if lease_held(conn, lease_key(settings, target_id)) or job_waiting(settings, f"send-notice-{target_id}"):
            continue
        if started is None:
            with session_scope(rt.sessions) as session:
                released += release_send(session, target_id, "released: worker gone")
            continue
        # A mark is left: the job that set it is gone. Its run again looks the message up before anything else.
        enqueue_send(settings, target_id)
        adopted += 1
    settled = _settle_stuck_calls(rt, keepalive)
    return rebuilt, released, adopted, settled


def _settle_stuck_calls(rt: Runtime, keepalive) -> int:
    limit = clock.now() - timedelta(seconds=rt.settings.ring_timeout) - STUCK_AFTER
    with rt.sessions() as session:
        stuck = session.execute(
            select(NoticeTarget.id, NoticeTarget.call_sid).where(
                NoticeTarget.state == NoticeTargetState.SENDING,
                NoticeTarget.call_sid.is_not(None),
                NoticeTarget.updated_at < limit,
            )
        ).all()
    if not stuck:
        return 0
    provider = get_provider(rt.settings)
    settled = 0
    for target_id, sid in stuck:
        keepalive()
        try:
            status = provider.fetch_call(sid).status
        except TelephonyError as exc:
            if exc.status != 404:
                continue
            status = "failed"
        with session_scope(rt.sessions) as session:
            target = session.get(NoticeTarget, target_id, with_for_update=True)
            if target is None or target.call_sid != sid:
                continue
            apply_notice_call_status(session, target, status, None)
            settled += target.state != NoticeTargetState.SENDING
    return settled
