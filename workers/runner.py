"""Running an RQ worker: the scheduler on, the sweeper scheduled, Redis outages survived.

What rq's ``Worker.work`` does when Redis goes away (rq 2.x): while it waits for a job, a connection error is
retried inside its dequeue loop with growing pauses; anywhere else (while it runs maintenance, executes a job
or records a job's result) the error ends ``work()``, which then returns (or raises, when tearing down also
needs Redis) as if the worker had been told to stop, and its scheduler process exits on the error too.
``run_worker`` therefore treats any end of ``work()`` that no signal asked for as an outage: it waits with
backoff and starts a fresh worker (and scheduler) on the same queues, and the sweeper (scheduled from every
worker's maintenance, every few seconds) rebuilds lost work from the database.

Jobs run in the worker process itself (rq's ``SimpleWorker``), not in a work-horse forked for each job. A
``place_call`` is a few milliseconds of work (two short transactions, one HTTP request) around a wait for its
dial slot; forked per job, every call also paid for the fork and the horse's exit, a new Redis connection, a
new database connection (a new server process on PostgreSQL), SQL compiled afresh for a cold statement cache
and a new HTTP connection to Twilio (a TLS handshake in production, between the slot and the request, where
it widens the jitter the pacing margin has to absorb): about 40 ms a call on an idle machine, more than the
104 ms between slots at 10 calls per second on a busy one, so a single worker fell behind its round's rate.
In one long-lived process the connections and caches stay warm. What the work-horse gave is kept:

- job timeouts: rq's death penalty (SIGALRM, in this process) interrupts a job at its timeout wherever it is
  in Python code, and every blocking call a job makes has its own timeout (Redis, the database, Twilio). For
  a job stuck in C code that ignores the alarm, :class:`Watchdog` ends the worker at the moment rq would have
  killed a work-horse (timeout + 60 s); the process supervisor restarts it.
- crash recovery does not depend on how a job runs: a worker that dies in a job (SIGKILL, a crash, the
  watchdog) is one whose leases stop being renewed, and the sweeper releases or adopts its claims from the
  database (workers.sweeper).
- a warm shutdown (SIGTERM) still finishes the current job first; a second signal interrupts it, as killing
  a work-horse did, and the create-started mark makes that safe.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import phonenumbers
import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from twilio.rest import Client

from campaigns.logs import configure_logging, log_context, mask_phones
from campaigns.phones import mask
from campaigns.runtime import get_runtime
from campaigns.settings import Settings
from workers.dispatch import rebuild_dispatch
from workers.queues import QUEUES, queue_name, redis_connection
from workers.sweeper import schedule_sweep

log = logging.getLogger("sanlv.worker")

MAINTENANCE_SECONDS = 10  # how often a worker runs rq's maintenance (which restarts a dead scheduler) and
# schedules the sweeper
WORKER_TTL = 25  # rq waits WORKER_TTL - 15 seconds for a job before it runs maintenance again
HEALTHY_AFTER = 60.0  # a worker that ran this long before failing starts its backoff afresh
# rq's forking worker kills a work-horse still running this long past its job's timeout: the death penalty
# (SIGALRM) has not stopped it, so it is stuck where no signal handler runs. The watchdog does the same.
JOB_OVERRUN_GRACE = 60.0
STUCK_EXIT_CODE = 70  # EX_SOFTWARE: the worker ended itself, stuck in a job


def reconnect_delay(failures: int) -> float:
    """Seconds to wait before reconnecting after ``failures`` consecutive Redis failures (capped)."""
    return min(30.0, 0.5 * 2 ** max(0, failures - 1))


class Watchdog(threading.Thread):
    """Ends the worker process if a job outlives its timeout by ``grace`` seconds.

    A job runs in the worker's main thread, and rq's death penalty (SIGALRM) interrupts it at its timeout. A
    signal handler only runs between Python bytecodes, though: a job stuck in C code (a driver call that
    ignores the alarm) would hold the worker forever, where the forking worker used to kill its work-horse.
    That thread cannot be freed from outside, so the process ends, as if it had crashed: its claims are
    recovered by the sweeper, and the process supervisor (``restart: unless-stopped``) starts a fresh worker.
    One per process; ``run_worker`` hands it to each worker it starts.

    Args:
        grace: seconds past a job's timeout before it counts as stuck.
        on_stuck: called (in the watchdog's thread) with the stuck job's id; by default, stop the worker's
            scheduler process and end this process with ``STUCK_EXIT_CODE``.
    """

    def __init__(self, grace: float = JOB_OVERRUN_GRACE, on_stuck: Callable[[str], None] | None = None):
        super().__init__(name="sanlv-watchdog", daemon=True)
        self.grace = grace
        self.on_stuck = on_stuck or self._end_process
        self.worker: SanlvWorker | None = None  # whose scheduler process to stop before ending
        self._changed = threading.Condition()
        self._job: str | None = None
        self._deadline = 0.0

    def arm(self, job_id: str, timeout: float) -> None:
        """Job ``job_id`` starts now and may run ``timeout`` seconds."""
        with self._changed:
            self._job = job_id
            self._deadline = time.monotonic() + timeout + self.grace
            self._changed.notify()

    def disarm(self) -> None:
        """The job armed for has ended."""
        with self._changed:
            self._job = None
            self._changed.notify()

    def run(self) -> None:
        while True:
            with self._changed:
                while self._job is None or time.monotonic() < self._deadline:
                    self._changed.wait(None if self._job is None else self._deadline - time.monotonic())
                job_id, self._job = self._job, None
            log.critical("event=job_stuck job=%s grace=%.0f", job_id, self.grace)
            self.on_stuck(job_id)

    def _end_process(self, job_id: str) -> None:
        if self.worker is not None:
            self.worker.stop_scheduler_quietly()
        log.critical("event=worker_exit reason=job_stuck job=%s code=%s", job_id, STUCK_EXIT_CODE)
        os._exit(STUCK_EXIT_CODE)


class InProcessWorker(SimpleWorker):
    """rq's non-forking worker, with a shutdown that cannot stall for a minute.

    rq (2.12) ends its command listener by unsubscribing, then calling ``stop()`` on the listener thread;
    redis-py (8.2) made ``stop()`` wait for the thread to end. If the thread reads the reply to the
    unsubscribe before ``stop()`` clears its running flag, it goes back to wait up to the listener's
    ``sleep_time`` (60 s) for a subscription that never comes, and the worker's shutdown -- a deploy, the end
    of a burst, a test -- waits with it. Here the flag is cleared first: the unsubscribe reply wakes the
    thread, which then ends.
    """

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry=None, exc_string: str = ""):
        # The traceback is kept in Redis (the failed-job registry, the job's results): numbers in an exception
        # message (a provider's error quoting the number it refused) are masked before it is stored.
        return super().handle_job_failure(
            job, queue, started_job_registry=started_job_registry, exc_string=mask_phones(exc_string or "")
        )

    def unsubscribe(self) -> None:
        thread = self.pubsub_thread
        if not thread:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        try:
            thread.stop(timeout=0)  # redis-py >= 8.2: clear the flag, do not wait yet
        except TypeError:
            thread.stop()  # older redis-py: stop() only clears the flag
        self.pubsub.unsubscribe()
        thread.join(timeout=2)
        self.pubsub.close()


class SanlvWorker(InProcessWorker):
    """rq's non-forking worker (see the module docstring for why), whose periodic maintenance also schedules
    sanlv's sweeper, which remembers whether a signal asked it to stop (so that a ``work()`` ended by an outage
    is told apart from a shutdown), and whose jobs a :class:`Watchdog` (if given one) watches."""

    stop_signalled = False
    watchdog: Watchdog | None = None

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        schedule_sweep(get_runtime().settings)

    def request_stop(self, signum, frame):
        self.stop_signalled = True
        super().request_stop(signum, frame)

    def execute_job(self, job: Job, queue: Queue) -> None:
        with log_context(**job_log_fields(job)):
            self._execute_watched(job, queue)

    def _execute_watched(self, job: Job, queue: Queue) -> None:
        # -1: the job has no timeout (rq's convention); none of sanlv's jobs is enqueued so.
        if self.watchdog is None or job.timeout == -1:
            super().execute_job(job, queue)
            return
        self.watchdog.arm(job.id, job.timeout or self.queue_class.DEFAULT_TIMEOUT)
        try:
            super().execute_job(job, queue)
        finally:
            self.watchdog.disarm()

    def stop_scheduler_quietly(self) -> None:
        """Stop this worker's scheduler process (if any) without waiting long: the worker is about to end."""
        process = getattr(self.scheduler, "_process", None) if self.scheduler else None
        if process is None or not process.pid:
            return
        try:
            os.kill(process.pid, signal.SIGTERM)
            process.join(5)
        except (OSError, AssertionError):
            pass  # already gone, or not this process's child


# Job parameters that name what a job's log lines are about (jobs take ids: place_call(attempt_id), ...).
JOB_LOG_PARAMETERS = {"attempt_id": "attempt", "round_id": "round"}


def job_log_fields(job: Job) -> dict[str, object]:
    """``round`` and ``attempt`` for every line a job logs, from the ids it was called with."""
    try:
        parameters = list(inspect.signature(job.func).parameters)
        args, kwargs = job.args, job.kwargs
    except Exception:  # noqa: BLE001 - a job that cannot be inspected is still run (and fails there if broken)
        return {}
    named = dict(zip(parameters, args, strict=False)) | dict(kwargs)
    return {field: named[name] for name, field in JOB_LOG_PARAMETERS.items() if isinstance(named.get(name), int)}


def preload() -> None:
    """Load what jobs use lazily before the first job, so that no job (the first call of a round) pays for it.

    The job modules themselves are imported with this one.
    """
    if get_runtime().settings.telephony == "twilio":
        # The client imports its REST resources on first use (about 0.1 s): here, not in the first call's slot.
        # No connection is opened: building the client and its resource objects sends nothing.
        Client("AC" + "0" * 32, "preload").api.v2010.account.calls  # noqa: B018
    phonenumbers.parse("+8613800000000", None)  # loads the region metadata once
    mask("+8613800000000")  # and compiles the patterns that masking numbers in log lines uses


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Run a worker on sanlv's queues with the scheduler until a signal stops it (or, with ``burst``, until
    the queues are empty), reconnecting with backoff whenever Redis is lost."""
    configure_logging("worker", settings)
    preload()
    # What is loaded by now lives as long as the process: frozen, it is left out of garbage collections, so a
    # full collection walks only the jobs' own objects instead of the whole heap (tens of milliseconds, which
    # could fall between a call's dial slot and its request).
    gc.freeze()
    watchdog = Watchdog()
    watchdog.start()
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
            worker.watchdog = watchdog
            watchdog.worker = worker
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
