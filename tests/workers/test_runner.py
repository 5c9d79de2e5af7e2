"""The worker itself: jobs run in the worker's own process (no work-horse per job), a job past its timeout is
stopped and the worker goes on, and a job stuck where the timeout cannot reach it ends the worker (the
watchdog), as rq's forking worker would have killed its work-horse.

The job functions below are what the workers run (RQ imports them by name).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import JobStatus

from campaigns.settings import Settings
from workers.runner import STUCK_EXIT_CODE, InProcessWorker, SanlvWorker, Watchdog

ROOT = Path(__file__).resolve().parents[2]


def sleep_for(seconds: float) -> int:
    """A job: sleep, then say which process ran it."""
    time.sleep(seconds)
    return os.getpid()


def stuck_where_no_alarm_reaches(seconds: float) -> None:
    """A job that rq's death penalty cannot stop: SIGALRM stays pending, as it would for a job stuck in C."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)


@pytest.fixture
def restored_signals() -> Iterator[None]:
    """rq's worker installs its own SIGINT/SIGTERM handlers (and the death penalty's SIGALRM): put them back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def wait_until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


# --- jobs in the worker's process ------------------------------------------------------------------------


def test_jobs_run_in_the_worker_process_and_one_past_its_timeout_is_stopped(
    env: Settings, redis_conn: redis.Redis, restored_signals
):
    q = Queue("runner-test", connection=redis_conn)
    slow = q.enqueue(sleep_for, 30, job_timeout=1)
    quick = q.enqueue(sleep_for, 0)
    worker = SanlvWorker([q], connection=redis_conn)

    began = time.monotonic()
    worker.work(burst=True)

    assert time.monotonic() - began < 10  # the slow job was interrupted at its timeout, not waited for
    assert slow.get_status() == JobStatus.FAILED
    assert "JobTimeoutException" in (slow.latest_result().exc_string or "")
    assert quick.get_status() == JobStatus.FINISHED
    assert quick.return_value() == os.getpid()  # no work-horse: the worker's own process ran it


# --- the watchdog ---------------------------------------------------------------------------------------


def test_the_watchdog_reports_a_job_that_outlives_its_timeout():
    stuck: list[str] = []
    watchdog = Watchdog(grace=0.2, on_stuck=stuck.append)
    watchdog.start()
    watchdog.arm("job-1", 0.1)
    assert wait_until(lambda: stuck, timeout=5)
    assert stuck == ["job-1"]


def test_the_watchdog_leaves_jobs_that_end_in_time_alone():
    stuck: list[str] = []
    watchdog = Watchdog(grace=0.2, on_stuck=stuck.append)
    watchdog.start()
    watchdog.arm("job-1", 0.1)
    time.sleep(0.05)
    watchdog.disarm()
    watchdog.arm("job-2", 0.3)  # its own deadline, later than job-1's would have been
    time.sleep(0.35)
    watchdog.disarm()
    time.sleep(0.5)
    assert stuck == []
    watchdog.arm("job-3", 0.0)  # and it still watches
    assert wait_until(lambda: stuck, timeout=5)
    assert stuck == ["job-3"]


_STUCK_WORKER = """
import sys
import redis
from rq import Queue
from workers.runner import SanlvWorker, Watchdog

conn = redis.Redis.from_url(sys.argv[1])
worker = SanlvWorker([Queue(sys.argv[2], connection=conn)], connection=conn)
worker.watchdog = Watchdog(grace=1.0)
worker.watchdog.worker = worker
worker.watchdog.start()
worker.work(burst=True)
print("the worker came back from its job")
"""


def test_a_job_stuck_past_its_timeout_ends_the_worker(env: Settings, redis_url: str, redis_conn: redis.Redis):
    q = Queue("runner-stuck", connection=redis_conn)
    job = q.enqueue(stuck_where_no_alarm_reaches, 60, job_timeout=1)
    child_env = {**os.environ, "PYTHONPATH": str(ROOT)}

    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _STUCK_WORKER, redis_url, q.name],
        env=child_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )

    assert done.returncode == STUCK_EXIT_CODE, done.stdout + done.stderr
    assert time.monotonic() - began < 30  # timeout 1 s + grace 1 s, plus start-up; not the job's 60 s
    assert f"event=job_stuck job={job.id}" in done.stderr
    assert "came back" not in done.stdout


def _listener_wins_the_race(pubsub) -> None:
    """Make ``pubsub.unsubscribe`` return only once the listener thread has read the reply and gone back to its
    loop: the ordering that, with rq's own unsubscribe and redis-py 8.2, stalls a shutdown for a minute."""
    send = pubsub.unsubscribe

    def unsubscribe(*args, **kwargs):
        result = send(*args, **kwargs)
        deadline = time.monotonic() + 5
        while pubsub.subscribed and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        return result

    pubsub.unsubscribe = unsubscribe


def test_a_worker_stops_listening_at_once_even_when_its_listener_reads_the_unsubscribe_first(redis_conn):
    worker = InProcessWorker([Queue("sanlv-test-listener", connection=redis_conn)], connection=redis_conn)
    worker.subscribe()
    time.sleep(0.1)  # the listener waits for a command
    _listener_wins_the_race(worker.pubsub)

    started = time.monotonic()
    worker.unsubscribe()

    assert time.monotonic() - started < 5  # not the listener's 60 s
    assert not worker.pubsub_thread.is_alive()
