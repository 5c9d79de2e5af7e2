"""Placing a call at the provider, exactly once; adopting a call whose create got no usable answer;
cancelling a round's calls that have not been answered.

``place_call(attempt_id)`` (an RQ job) places one claimed call through the provider, paced by the round's CPS.
It is safe to run twice and concurrently: only the run that holds the attempt's lease works on it, and only a
``claimed`` attempt is dialled.

Exactly-once dialling (see campaigns.calls): ``place_call`` marks "create started" on the attempt with a
conditional UPDATE before it sends the create request. A run that finds the mark (a retry after the worker
died, the sweeper) looks the call up at the provider first and adopts it if it exists; it never dials blindly.

``cancel_round_calls(round_id)`` (an RQ job) cancels the round's calls still queued (or ringing) at the provider.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import literal, select
from sqlalchemy.orm import aliased

from campaigns import clock
from campaigns.callerids import choose_caller_id
from campaigns.calls import (
    CREATE_MARKS,
    CREATING,
    begin_create,
    create_not_sent,
    listed,
    mark_ambiguous,
    mark_permanent_failure,
    mark_placed,
    record_placed,
    release_claim,
)
from campaigns.db import session_scope
from campaigns.models import CallAttempt, CallerId, CallStatus, Round, RoundStatus, RoundTarget, Village
from campaigns.runtime import Runtime, get_runtime
from campaigns.schedule import is_open
from campaigns.settings import Settings
from workers.accounts import account_dial_key, effective_cps, from_number, providers_for, round_accounts
from workers.leases import Lease, attempt_lease_key
from workers.limiter import reserve_pooled_slot, sleep_until, take_cap
from workers.metrics import DIALS, count
from workers.queues import enqueue, enqueue_batch, jittered_retry, redis_connection, redis_key
from workers.telephony import get_provider
from workers.telephony.base import (
    AmbiguousCreateError,
    CallInfo,
    CallRequest,
    ConfigurationError,
    PermanentNumberError,
    RateLimitedError,
    TelephonyError,
    TelephonyProvider,
)

log = logging.getLogger("sanlv.jobs")

LEASE_SECONDS = 20.0  # a place_call's hold on its attempt, kept alive while it waits for its slot
RECHECK_AFTER = 1.0  # a place_call whose slot is further away than this checks again that the round dials
SLOT_LEAD = 0.1  # seconds before its slot it does so


class CreateMayBeInFlight(TelephonyError):
    """An earlier run's create request may still be on its way; look again later (RQ retries the job)."""


def place_call_retry():
    """Transport retries of a place_call (429, an ambiguous create not found, no dial slot): each job draws its
    own jittered exponential intervals, so calls refused together do not come back together."""
    return jittered_retry(retries=6, base=2.0, cap=60.0)


def enqueue_place_call(settings: Settings, attempt_id: int) -> None:
    enqueue(settings, place_call, attempt_id, job_id=f"place-call-{attempt_id}", retry=place_call_retry())


def enqueue_place_calls(settings: Settings, attempt_ids: list[int]) -> None:
    """:func:`enqueue_place_call` for each of ``attempt_ids``, in two Redis round trips (a dispatch tick's)."""
    enqueue_batch(
        settings, place_call, [((a,), f"place-call-{a}", place_call_retry()) for a in attempt_ids]
    )


def _webhooks(settings: Settings, attempt_id: int) -> tuple[str, str]:
    base = settings.public_base_url
    if not base:
        raise ConfigurationError("PUBLIC_BASE_URL is not set: the phone network cannot reach the webhooks")
    return f"{base}/ivr/voice?attempt={attempt_id}", f"{base}/ivr/status?attempt={attempt_id}"


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
    lease = Lease(conn, attempt_lease_key(settings, attempt_id))
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
    village_caller, round_caller = aliased(CallerId), aliased(CallerId)
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
                Round.accounts,
                village_caller.number.label("village_number"),
                village_caller.account.label("village_account"),
                round_caller.number.label("round_number"),
                round_caller.account.label("round_account"),
            )
            .join(RoundTarget, RoundTarget.id == CallAttempt.target_id)
            .join(Round, Round.id == CallAttempt.round_id)
            .join(Village, Village.id == RoundTarget.village_id)
            .outerjoin(village_caller, village_caller.id == Village.caller_id_id)
            .outerjoin(round_caller, round_caller.id == Round.caller_id_id)
            .where(CallAttempt.id == attempt_id)
        ).one_or_none()
        if row is None or row.status != CallStatus.CLAIMED or row.call_sid:
            return "already handled"
        marked = row.error_code if row.error_code in CREATE_MARKS else None
        started = row.placed_at if marked else None
        now = clock.now()
        try:
            allowed = round_accounts(settings, row.accounts or [])
        except ConfigurationError as exc:
            # None of the round's accounts is configured: no create may be sent; the claim goes back.
            release_claim(session, attempt_id, "not placed: configuration", started=started)
            log.error("event=no_account attempt=%s round=%s error=%r", attempt_id, row.id, exc)
            return "released"
        # The usual case, in the same transaction: nothing was ever sent for this claim; mark and go.
        begun = None if marked else begin_create(session, attempt_id, None, now)
        if begun is False:
            return _not_begun(session, attempt_id, None)
    round_id, claimed_at = row.id, row.created_at
    # The accounts this call may go through, and the number it shows: the village's caller ID, else the
    # round's, else the account's default. A caller ID owned by one account sends the call through it.
    caller_number, caller_account = choose_caller_id(
        [(row.village_number, row.village_account), (row.round_number, row.round_account)],
        [account.name for account in allowed],
    )
    if caller_account is not None:
        allowed = [account for account in allowed if account.name == caller_account]
    cps = effective_cps(settings, row.cps, [account.name for account in allowed])
    schedule = (list(row.windows), list(row.blocked_dates or []), row.starts_at, row.ends_at)
    since = claimed_at - timedelta(seconds=5)
    if marked:
        # An earlier run marked "create started": the call may exist. Look before doing anything else, at
        # every account it may have gone through.
        for name, provider in providers_for(settings, [account.name for account in allowed]):
            if adopt_existing(provider, rt, attempt_id, row.phone, since, account=name):
                return "adopted"
        if marked == CREATING and clock.now() - started < create_settle_time(settings, cps):
            raise CreateMayBeInFlight(f"attempt {attempt_id}: an earlier create request may still be on its way")
        now = clock.now()
        with session_scope(rt.sessions) as session:
            if not begin_create(session, attempt_id, started, now):
                return _not_begun(session, attempt_id, started)
    started = now

    # Pace creates at the round's CPS and its account's, across every worker: reserve a slot, wait for it.
    pool = [(account_dial_key(settings, account.name), account.cps) for account in allowed]
    reserved = reserve_pooled_slot(conn, dial_key(settings, round_id), row.cps, pool, max_slot_wait(cps))
    if reserved is None:
        _take_back(rt, attempt_id, started)
        raise RateLimitedError(f"attempt {attempt_id}: no dial slot within {max_slot_wait(cps):.0f} s")
    slot, index = reserved
    account = allowed[index] if index >= 0 else None
    provider = get_provider(settings, account.name if account else None)
    request = CallRequest(
        attempt_id=attempt_id,
        to=row.phone,
        from_=caller_number or from_number(settings, account),
        url=voice_url,
        status_callback=status_url,
        timeout=settings.ring_timeout,
        machine_detection=row.machine_detection,
    )
    if slot - time.monotonic() > RECHECK_AFTER:
        sleep_until(slot - SLOT_LEAD, keepalive=lambda: lease.extend(LEASE_SECONDS))
        # A long wait: just before the slot, does the round still dial (pause, cancel, deadline)? After a
        # short one, begin_create's own check is recent enough for "no call more than 3 s after a pause".
        with rt.sessions() as session:
            reason = _why_not_dialling(
                session, round_id, clock.now() + timedelta(seconds=SLOT_LEAD), settings, request.to
            )
        if reason is not None:
            with session_scope(rt.sessions) as session:
                released = release_claim(session, attempt_id, f"not placed: {reason}", started=started)
            return "released" if released else "already handled"
    # The request and its reply can take the HTTP timeout: hold the lease that long.
    lease.extend(max(0.0, slot - time.monotonic()) + settings.twilio_http_timeout + 10)
    sleep_until(slot)
    # (It always has room after a reserved slot; if it ever has not, a wait could outlast a pause: give up soon.)
    if not take_cap(conn, dial_key(settings, round_id), row.cps, give_up_after=RECHECK_AFTER):
        _take_back(rt, attempt_id, started)
        raise RateLimitedError(f"attempt {attempt_id}: the round's dial rate is used up")
    if account is not None and account.cps and not take_cap(
        conn, account_dial_key(settings, account.name), account.cps, give_up_after=RECHECK_AFTER, scope="account"
    ):
        _take_back(rt, attempt_id, started)
        raise RateLimitedError(f"attempt {attempt_id}: Twilio account {account.name}'s dial rate is used up")
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
        if adopt_existing(provider, rt, attempt_id, request.to, since, account=account.name if account else None):
            return "adopted"
        raise
    except ConfigurationError:
        with session_scope(rt.sessions) as session:
            release_claim(session, attempt_id, "not placed: configuration", started=started)
        raise
    except TelephonyError:
        # Refused (429, another 4xx): nothing was created.
        _take_back(rt, attempt_id, started)
        raise
    with session_scope(rt.sessions) as session:
        record_placed(
            session, attempt_id, info.sid, info.status, clock.now(),
            account=account.name if account else None, from_number=request.from_,
        )
        stopped = round_stopped(session, round_id)
    log.info("event=call_placed attempt=%s sid=%s", attempt_id, info.sid)
    count(settings, DIALS, round_id)
    if stopped:
        cancel_late_call(provider, round_id, info.sid)
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


def _why_not_dialling(session, round_id: int, now: datetime, settings: Settings, phone: str) -> str | None:
    row = session.execute(
        select(Round.status, Round.windows, Round.blocked_dates, Round.starts_at, Round.ends_at).where(
            Round.id == round_id
        )
    ).one_or_none()
    if row is None or row.status != RoundStatus.RUNNING:
        return f"round {row.status.value if row else 'missing'}"
    if session.scalar(select(listed(literal(phone)))):
        return "do-not-call"  # listed while the call waited for its slot (release_claim ends the target)
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


def round_stopped(session, round_id: int) -> bool:
    """The round was cancelled or reached its deadline (a call created just then is cancelled at once)."""
    row = session.execute(select(Round.status, Round.ends_at).where(Round.id == round_id)).one_or_none()
    if row is None or row.status == RoundStatus.CANCELLED:
        return True
    return row.ends_at is not None and clock.now() >= row.ends_at


def cancel_late_call(provider: TelephonyProvider, round_id: int, sid: str) -> None:
    """Cancel a call created just as its round stopped (cancelled, past its deadline)."""
    try:
        provider.cancel_call(sid)
        log.info("event=late_call_cancelled round=%s sid=%s", round_id, sid)
    except TelephonyError as exc:
        log.warning("event=cancel_failed sid=%s error=%r", sid, exc)


def adopt_existing(
    provider: TelephonyProvider, rt: Runtime, attempt_id: int, to: str, since: datetime, account: str | None = None
) -> bool:
    """If the provider has a call to ``to`` since the attempt was claimed that no attempt knows, it is this
    attempt's (a create request that got no usable answer): adopt it (``account``: whose call it is)."""
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
        round_id = attempt.round_id
        if account is not None:
            attempt.account = account
    log.info("event=call_adopted attempt=%s sid=%s", attempt_id, fresh[0].sid)
    count(rt.settings, DIALS, round_id)  # created by a request whose answer was lost: counted now
    return True


def cancel_round_calls(round_id: int, only_queued: bool = False) -> int:
    """Cancel the round's calls still queued at the provider (and, unless ``only_queued``, ringing ones);
    calls in progress finish."""
    rt = get_runtime()
    statuses = [CallStatus.QUEUED] if only_queued else [CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.RINGING]
    with rt.sessions() as session:
        calls = session.execute(
            select(CallAttempt.call_sid, CallAttempt.account).where(
                CallAttempt.round_id == round_id,
                CallAttempt.status.in_(statuses),
                CallAttempt.call_sid.is_not(None),
            )
        ).all()
    for sid, account in calls:
        try:
            # Each call is cancelled at the account it went through (unknown: the first, as before accounts).
            provider = get_provider(rt.settings, account)
            provider.cancel_call(sid)
        except Exception as exc:  # noqa: BLE001 - keep cancelling the others
            log.warning("event=cancel_failed sid=%s error=%r", sid, exc)
    return len(calls)
