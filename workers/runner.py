"""Running an RQ worker: the scheduler on, the sweeper scheduled, Redis outages survived.

What rq's ``Worker.work`` does when Redis goes away (rq 2.x): while it waits for a job, a connection error is
retried inside its dequeue loop with growing pauses; anywhere else (while it runs maintenance, executes a job
or records a job's result) the error ends ``work()``, which then returns (or raises, when tearing down also
needs Redis) as if the worker had been told to stop, and its scheduler process exits on the error too.
``run_worker`` therefore treats any end of ``work()`` that no signal asked for as an outage: it waits with
backoff and starts a fresh worker (and scheduler) on the same queues, and the sweeper (scheduled from every
worker's maintenance, every few seconds) rebuilds lost work from the database.
"""

from __future__ import annotations

import gc
import logging
import signal
import time

import redis
from rq import Queue, Worker

from campaigns.runtime import get_runtime
from campaigns.settings import Settings
from workers.queues import QUEUES, queue_name, redis_connection

log = logging.getLogger("sanlv.worker")

MAINTENANCE_SECONDS = 10  # how often a worker runs rq's maintenance (which restarts a dead scheduler) and
# schedules the sweeper
WORKER_TTL = 25  # rq waits WORKER_TTL - 15 seconds for a job before it runs maintenance again
HEALTHY_AFTER = 60.0  # a worker that ran this long before failing starts its backoff afresh


def reconnect_delay(failures: int) -> float:
    """Seconds to wait before reconnecting after ``failures`` consecutive Redis failures (capped)."""
    return min(30.0, 0.5 * 2 ** max(0, failures - 1))


def rebuild_dispatch(settings: Settings) -> list[int]:
    """Restart the dispatch chain of every running round whose chain is gone (see workers.jobs)."""
    from workers.jobs import rebuild_dispatch as rebuild

    return rebuild(settings)


class SanlvWorker(Worker):
    """rq's Worker, whose periodic maintenance also schedules sanlv's sweeper, and which remembers whether a
    signal asked it to stop (so that an ``work()`` ended by an outage is told apart from a shutdown)."""

    stop_signalled = False

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        from workers.jobs import schedule_sweep

        schedule_sweep(get_runtime().settings)

    def request_stop(self, signum, frame):
        self.stop_signalled = True
        super().request_stop(signum, frame)

    def fork_work_horse(self, job, queue):
        # The work-horse inherits this process's heap. Frozen, the inherited objects are left out of the
        # horse's garbage collections: otherwise, at the same point in every horse of this worker (the
        # collector's counters are inherited too), a full collection walks the whole heap, tens of
        # milliseconds in the middle of a job, and writes to every page it touches.
        gc.freeze()
        try:
            super().fork_work_horse(job, queue)
        finally:
            if not self.is_horse:
                gc.unfreeze()  # this process goes on collecting its own garbage


def preload() -> None:
    """Import what jobs use before the worker forks its work-horses, so no job pays for imports."""
    import phonenumbers

    import workers.jobs
    from workers.telephony import get_provider  # noqa: F401

    if get_runtime().settings.telephony == "simulator":
        import workers.telephony.simulator
    else:
        from twilio.rest import Client

        import workers.telephony.twilio_provider  # noqa: F401

        # The client imports its REST resources on first use (about 0.1 s): once here, not in every work-horse.
        # No connection is opened: building the client and its resource objects sends nothing.
        Client("AC" + "0" * 32, "preload").api.v2010.account.calls  # noqa: B018
    from campaigns.phones import mask

    phonenumbers.parse("+8613800000000", None)  # loads the region metadata once
    mask("+8613800000000")  # and compiles the patterns that masking numbers in log lines uses


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Run a worker on sanlv's queues with the scheduler until a signal stops it (or, with ``burst``, until
    the queues are empty), reconnecting with backoff whenever Redis is lost."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    preload()
    failures = 0
    while True:
        worker: SanlvWorker | None = None
        began = time.monotonic()
        try:
            conn = redis_connection(settings)
            conn.ping()
            _rebuild_quietly(settings)
            queues = [Queue(queue_name(settings, name), connection=conn) for name in QUEUES]
            worker = SanlvWorker(
                queues, connection=conn, maintenance_interval=MAINTENANCE_SECONDS, worker_ttl=WORKER_TTL
            )
            worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
            if burst or worker.stop_signalled:
                return
            error: object = "the worker loop ended without a stop signal"
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if worker is not None and worker.stop_signalled:
                return
            error = exc
        failures = 1 if time.monotonic() - began > HEALTHY_AFTER else failures + 1
        delay = reconnect_delay(failures)
        log.warning("event=redis_unavailable failures=%s retry_in=%.1f error=%r", failures, delay, error)
        if _sleep_unless_stopped(delay):
            return


def _rebuild_quietly(settings: Settings) -> None:
    """Restart lost dispatch chains at start-up; the sweeper tries again if the database is not there yet."""
    try:
        rebuild_dispatch(settings)
    except (redis.ConnectionError, redis.TimeoutError):
        raise
    except Exception as exc:  # noqa: BLE001 - the worker must start; the sweeper retries
        log.warning("event=rebuild_failed error=%r", exc)


def _sleep_unless_stopped(seconds: float) -> bool:
    """Sleep ``seconds``; True if SIGTERM or SIGINT arrived meanwhile (then the worker should exit)."""
    stopped: list[int] = []

    def stop(signum, _frame) -> None:
        stopped.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        deadline = time.monotonic() + seconds
        while not stopped and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return bool(stopped)
