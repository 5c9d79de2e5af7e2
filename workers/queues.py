"""Queues and the one enqueue helper. Work is enqueued only after the transaction that justifies it commits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

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


def set_redis_connection(url: str, conn: redis.Redis) -> None:
    """Use ``conn`` for ``url`` (the demo's in-process Redis stand-in)."""
    _connections[url] = conn


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
) -> Job | None:
    """Enqueue ``func(*args)``; with ``job_id``, a job that is already waiting or running is not duplicated.

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
    options: dict[str, Any] = {"job_id": job_id, "retry": retry, "job_timeout": timeout, "result_ttl": 600, "failure_ttl": 7 * 86400}
    if at is not None:
        return q.enqueue_at(at, func, *args, **options)
    if delay is not None:
        return q.enqueue_in(delay, func, *args, **options)
    return q.enqueue(func, *args, **options)


def clear_namespace(settings: Settings) -> int:
    """Delete every queue, job and key of this namespace (the demo cleans up after itself)."""
    conn = redis_connection(settings)
    deleted = 0
    for pattern in (f"rq:*{settings.namespace}*", f"{settings.namespace}:*"):
        keys = list(conn.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            deleted += conn.delete(*keys[start : start + 500])
    return deleted


def after_round_change(settings: Settings, round_id: int, command: str) -> None:
    """Called by the CLI and web after a round's lifecycle change is committed."""
    from workers import jobs

    if command in ("launch", "resume"):
        jobs.kick_dispatch(settings, round_id)
    elif command == "cancel":
        enqueue(settings, jobs.cancel_round_calls, round_id, job_id=f"cancel-round-{round_id}")
