"""Running an RQ worker: the scheduler on, Redis outages survived, work rebuilt from the database."""

from __future__ import annotations

import logging
import time

import redis
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import select

from campaigns.models import Round, RoundStatus
from campaigns.runtime import get_runtime
from campaigns.settings import Settings
from workers.queues import QUEUES, queue_name, redis_connection

log = logging.getLogger("sanlv.worker")


def reconnect_delay(failures: int) -> float:
    """Seconds to wait before reconnecting after ``failures`` consecutive Redis failures (capped)."""
    return min(30.0, 0.5 * 2 ** max(0, failures - 1))


def rebuild_dispatch(settings: Settings) -> list[int]:
    """Restart the dispatch chain of every running round whose chain is gone (e.g. Redis was restarted).

    The database is the source of truth; Redis only carries work.
    """
    from workers.jobs import _chain_key, kick_dispatch

    conn = redis_connection(settings)
    rt = get_runtime()
    with rt.sessions() as session:
        running = session.scalars(select(Round.id).where(Round.status == RoundStatus.RUNNING)).all()
    restarted = []
    for round_id in running:
        job_id = conn.get(_chain_key(settings, round_id))
        alive = False
        if job_id is not None:
            try:
                status = Job.fetch(job_id.decode(), connection=conn).get_status(refresh=False)
                alive = status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED)
            except NoSuchJobError:
                alive = False
        if not alive:
            kick_dispatch(settings, round_id)
            restarted.append(round_id)
    if restarted:
        log.info("event=dispatch_rebuilt rounds=%s", ",".join(map(str, restarted)))
    return restarted


def preload() -> None:
    """Import what jobs use before the worker forks its work-horses, so no job pays for imports."""
    import phonenumbers

    import workers.jobs  # noqa: F401
    from workers.telephony import get_provider  # noqa: F401

    if get_runtime().settings.telephony == "simulator":
        import workers.telephony.simulator  # noqa: F401
    else:
        import workers.telephony.twilio_provider  # noqa: F401
    phonenumbers.parse("+8613800000000", None)  # loads the region metadata once


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Run a worker on sanlv's queues with the scheduler, reconnecting with backoff if Redis goes away."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    preload()
    failures = 0
    while True:
        try:
            conn = redis_connection(settings)
            conn.ping()
            rebuild_dispatch(settings)
            queues = [Queue(queue_name(settings, name), connection=conn) for name in QUEUES]
            worker = Worker(queues, connection=conn)
            failures = 0
            worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            failures += 1
            delay = reconnect_delay(failures)
            log.warning("event=redis_unavailable failures=%s retry_in=%.1f error=%r", failures, delay, exc)
            time.sleep(delay)
