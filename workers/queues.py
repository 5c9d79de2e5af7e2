"""Queues: their names, the Redis connection, the one enqueue helper, transport retries and what Redis knows
of a job. Work is enqueued only after the transaction that justifies it commits.

The leaf of the dialler: it imports no other ``workers`` module, so every other one (and the simulated
network) can import it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError, SchedulerNotFound
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler
from rq.scripts import release_lock

from campaigns.settings import Settings

log = logging.getLogger("sanlv.queues")

DIALER_QUEUE = "dialer"  # dispatching rounds and placing calls
SIMULATOR_QUEUE = "simulator"  # the simulated phone network's calls
# Workers take the simulated network's calls first: calls in progress before new ones (as a real network would).
QUEUES = (SIMULATOR_QUEUE, DIALER_QUEUE)


def queue_name(settings: Settings, name: str) -> str:
    """The Redis-side name of one of QUEUES, prefixed with the deployment's namespace."""
    return f"{settings.namespace}-{name}"


def namespaced_job_id(settings: Settings, job_id: str) -> str:
    """Job ids live in Redis beside other deployments' (and old demos'): keep them in our namespace."""
    prefix = f"{settings.namespace}-"
    return job_id if job_id.startswith(prefix) else prefix + job_id


def redis_key(settings: Settings, *parts: object) -> str:
    """A namespaced Redis key for sanlv's own bookkeeping."""
    return ":".join([settings.namespace, *map(str, parts)])


_connections: dict[str, redis.Redis] = {}


def redis_connection(settings: Settings) -> redis.Redis:
    """One client per Redis URL per process (redis-py pools its sockets and reconnects by itself)."""
    conn = _connections.get(settings.redis_url)
    if conn is None:
        conn = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=30,
            retry_on_timeout=True,
        )
        _connections[settings.redis_url] = conn
    return conn


# rq's scheduler heartbeats every second but holds its lock for a minute: a worker killed with its scheduler
# would leave scheduled work (dispatch ticks, retries) waiting that long.
SCHEDULER_SILENT = timedelta(seconds=10)


def free_dead_scheduler_locks(settings: Settings) -> list[str]:
    """Release the scheduler locks of our queues held by a scheduler that has stopped heartbeating (its
    worker died), so a live worker's scheduler takes over at its next maintenance instead of a minute later.

    Returns:
        The queues whose lock was released.
    """
    conn = redis_connection(settings)
    freed = []
    for name in QUEUES:
        key = RQScheduler.get_locking_key(queue_name(settings, name))
        owner = conn.get(key)
        if owner is None:
            continue
        try:
            beat = RQScheduler.fetch(owner.decode(), connection=conn).last_heartbeat
        except SchedulerNotFound:
            beat = None
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        if beat is None or datetime.now(UTC) - beat > SCHEDULER_SILENT:
            release_lock(conn, key, owner.decode())
            freed.append(name)
            log.warning("event=scheduler_lock_freed queue=%s owner=%s", name, owner.decode())
    return freed


def set_redis_connection(url: str, conn: redis.Redis) -> None:
    """Use ``conn`` for ``url`` (the demo's in-process Redis stand-in)."""
    _connections[url] = conn


def backoff_intervals(retries: int, base: float, cap: float, rng: random.Random) -> list[int]:
    """Seconds to wait before each of ``retries`` retries: exponential backoff with full jitter.

    The n-th wait is drawn uniformly from [base * 2**n / 2, base * 2**n] (capped at ``cap``), so jobs refused
    together (a burst of 429s) come back spread out instead of all at once. Whole seconds, at least 1: RQ
    schedules retries by the second.
    """
    intervals = []
    for n in range(retries):
        ceiling = min(cap, base * 2**n)
        intervals.append(max(1, round(rng.uniform(ceiling / 2, ceiling))))
    return intervals


def jittered_retry(retries: int = 6, base: float = 2.0, cap: float = 60.0, rng: random.Random | None = None) -> Retry:
    """An RQ ``Retry`` whose intervals are this job's own draw of :func:`backoff_intervals`."""
    return Retry(max=retries, interval=backoff_intervals(retries, base, cap, rng or random.Random()))


ALIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)
# A scheduled job this late is not going to run soon: no scheduler is running (its worker died; another worker
# takes the scheduler over when the dead one's lock expires, a minute later).
SCHEDULER_OVERDUE = timedelta(seconds=15)


def job_waiting(settings: Settings, job_id: str) -> bool:
    """Job ``job_id`` waits in a queue, or is scheduled and not overdue: some worker will run it."""
    conn = redis_connection(settings)
    try:
        job = Job.fetch(namespaced_job_id(settings, job_id), connection=conn)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status in (JobStatus.QUEUED, JobStatus.DEFERRED):
        return True
    if status != JobStatus.SCHEDULED:
        return False
    try:
        at = ScheduledJobRegistry(job.origin, connection=conn).get_scheduled_time(job)
    except NoSuchJobError:
        return False  # scheduled, but not in the registry: nothing will ever enqueue it
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at >= datetime.now(UTC) - SCHEDULER_OVERDUE


def job_status(settings: Settings, job_id: str) -> JobStatus | None:
    """The status of job ``job_id`` (namespaced here), None if Redis does not know it (finished long ago, lost)."""
    try:
        return Job.fetch(namespaced_job_id(settings, job_id), connection=redis_connection(settings)).get_status(
            refresh=False
        )
    except NoSuchJobError:
        return None


def queue(settings: Settings, name: str = DIALER_QUEUE) -> Queue:
    return Queue(queue_name(settings, name), connection=redis_connection(settings))


def enqueue(
    settings: Settings,
    func: Callable[..., Any] | str,
    *args: Any,
    job_id: str | None = None,
    queue_name: str = DIALER_QUEUE,
    at: datetime | None = None,
    delay: timedelta | None = None,
    retry: Retry | None = None,
    timeout: int = 180,
    at_front: bool = False,
) -> Job | None:
    """Enqueue ``func(*args)``; with ``job_id``, a job that is already waiting or running is not duplicated.

    ``at_front``: the job goes ahead of the jobs waiting in its queue (when it is due, for ``at``/``delay``).

    Returns the job, or None when an identical job id is already queued, scheduled or running.
    """
    q = queue(settings, queue_name)
    if job_id is not None:
        job_id = namespaced_job_id(settings, job_id)
        try:
            existing = Job.fetch(job_id, connection=q.connection)
        except NoSuchJobError:
            existing = None
        if existing is not None:
            status = existing.get_status(refresh=False)
            if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED):
                return None
    options: dict[str, Any] = {
        "job_id": job_id, "retry": retry, "job_timeout": timeout, "result_ttl": 600, "failure_ttl": 7 * 86400,
        "at_front": at_front,
    }
    if at is not None:
        return q.enqueue_at(at, func, *args, **options)
    if delay is not None:
        return q.enqueue_in(delay, func, *args, **options)
    return q.enqueue(func, *args, **options)


def enqueue_batch(
    settings: Settings,
    func: Callable[..., Any] | str,
    calls: list[tuple[tuple[Any, ...], str, Retry | None]],
    *,
    queue_name: str = DIALER_QUEUE,
    timeout: int = 180,
) -> int:
    """Enqueue ``func(*args)`` for each ``(args, job_id, retry)`` of ``calls`` in two Redis round trips (one
    to look up the ids, one pipeline to enqueue), skipping a job id that is already queued, scheduled or
    running, as :func:`enqueue` does. Returns how many jobs were enqueued.
    """
    if not calls:
        return 0
    q = queue(settings, queue_name)
    ids = [namespaced_job_id(settings, job_id) for _args, job_id, _retry in calls]
    with q.connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(Job.key_for(job_id), "status")
        statuses = pipe.execute()
    busy = {status.value for status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED)}
    datas = [
        Queue.prepare_data(
            func, args, job_id=job_id, retry=retry, timeout=timeout, result_ttl=600, failure_ttl=7 * 86400
        )
        for (args, _id, retry), job_id, status in zip(calls, ids, statuses, strict=True)
        if status is None or status.decode() not in busy
    ]
    if datas:
        with q.connection.pipeline() as pipe:
            q.enqueue_many(datas, pipeline=pipe)
            pipe.execute()
    return len(datas)


def clear_namespace(settings: Settings) -> int:
    """Delete every queue, job and key of this namespace (the demo cleans up after itself)."""
    conn = redis_connection(settings)
    deleted = 0
    for pattern in (f"rq:*{settings.namespace}*", f"{settings.namespace}:*"):
        keys = list(conn.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            deleted += conn.delete(*keys[start : start + 500])
    return deleted
