"""Readiness and metrics: ``/readyz`` on the app, ``/metrics`` on a listener of its own.

``/readyz`` (public: it says which part fails, never an address, a number or an error text) answers 200 when
the database answers and its migrations are this release's, Redis answers, and at least one worker has a
heartbeat; otherwise 503, naming each failing part.

``/metrics`` is never a route of the app. The web server binds a second listener at ``SANLV_METRICS_BIND``
(web.server), and :class:`MetricsListener`, in front of the app, answers requests that arrive on that listener
(and only those) with the metrics; every other path there is 404. A request on the public listener never
reaches it, whatever its headers say: the listener is told apart by the socket's own port, before the
trusted-proxy fix rewrites anything. The exposition joins three sources:

- what this web server's processes counted (the webhooks, ivr.metrics), through prometheus-client's
  multiprocess mode under gunicorn;
- what the workers counted (calls placed, Twilio errors, sweeper settlements), which they publish in Redis
  (workers.metrics);
- the state as it is at the scrape, read from the database and Redis: calls by outcome, live calls against
  each round's limit, its calls per second, whether it is dialling, queue depth and oldest job, readiness.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from flask import Flask, current_app, jsonify
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from rq import Queue, Worker
from rq.job import Job
from sqlalchemy import func, select

from campaigns import clock
from campaigns.migrate import current_revision, head_revision
from campaigns.models import FINAL_CALL_STATUSES, CallAttempt, Round, RoundStatus
from campaigns.runtime import Runtime
from campaigns.schedule import is_open
from web import security
from workers.metrics import read_counters
from workers.queues import QUEUES, queue_name, redis_connection

log = logging.getLogger("sanlv.web")

READY_PARTS = ("database", "migrations", "redis", "workers")
# A worker's registration in Redis expires unless it heartbeats (rq: every WORKER_TTL - 15 s or so); one
# silent for this long is gone.
WORKER_HEARTBEAT_MAX_AGE = timedelta(seconds=90)
METRICS_PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Readiness:
    problems: dict[str, str]  # part -> why it is not ready (no addresses, no error texts)
    workers: int

    @property
    def ready(self) -> bool:
        return not self.problems

    def body(self) -> dict[str, Any]:
        checks = {part: self.problems.get(part, "ok") for part in READY_PARTS}
        return {"status": "ready" if self.ready else "not ready", "checks": checks, "workers": self.workers}


def live_workers(rt: Runtime) -> int:
    """Workers on the dialler's queue whose heartbeat is recent (rq drops expired registrations itself)."""
    conn = redis_connection(rt.settings)
    dialer = Queue(queue_name(rt.settings, QUEUES[-1]), connection=conn)
    now = datetime.now(UTC)
    alive = 0
    for worker in Worker.all(queue=dialer):
        beat = worker.last_heartbeat
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        if beat is not None and now - beat <= WORKER_HEARTBEAT_MAX_AGE:
            alive += 1
    return alive


def check_readiness(rt: Runtime) -> Readiness:
    """Each part in turn; a failure is logged with its error and named (only) in the result."""
    problems: dict[str, str] = {}
    try:
        with rt.engine.connect() as connection:
            current = current_revision(connection)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database means "not ready"
        log.warning("event=not_ready part=database error=%r", exc)
        problems["database"] = "the database does not answer"
    else:
        head = head_revision()
        if current != head:
            problems["migrations"] = (
                f"the database is at migration {current or 'none'}, this release needs {head}: run sanlv db upgrade"
            )
    workers = 0
    try:
        redis_connection(rt.settings).ping()
    except redis.RedisError as exc:
        log.warning("event=not_ready part=redis error=%r", exc)
        problems["redis"] = "Redis does not answer"
        problems["workers"] = "unknown: Redis does not answer"
    else:
        try:
            workers = live_workers(rt)
        except redis.RedisError as exc:
            log.warning("event=not_ready part=workers error=%r", exc)
            problems["workers"] = "unknown: Redis does not answer"
        else:
            if workers == 0:
                problems["workers"] = "no worker has a heartbeat (is sanlv worker running?)"
    return Readiness(problems, workers)


def readyz():
    readiness = check_readiness(current_app.extensions["sanlv"])
    return jsonify(readiness.body()), 200 if readiness.ready else 503


def init_app(app: Flask) -> None:
    """Add ``/readyz`` (public). ``/metrics`` is not a route: see :class:`MetricsListener`."""
    app.add_url_rule(
        "/readyz",
        "readyz",
        security.public("readiness for the process supervisor and Prometheus; names failing parts only")(readyz),
        methods=["GET"],
    )


# --- metrics ----------------------------------------------------------------------------------------------


class StateCollector(Collector):
    """What the database and Redis say at the scrape, and what the workers counted."""

    def __init__(self, rt: Runtime):
        self.rt = rt

    def collect(self) -> Iterable[Metric]:
        readiness = check_readiness(self.rt)
        ready = GaugeMetricFamily("sanlv_ready", "1 when /readyz answers 200, else 0.")
        ready.add_metric([], 1.0 if readiness.ready else 0.0)
        yield ready
        parts = GaugeMetricFamily("sanlv_ready_check", "1 for each part /readyz checks that is fine.", labels=["part"])
        for part in READY_PARTS:
            parts.add_metric([part], 0.0 if part in readiness.problems else 1.0)
        yield parts
        workers = GaugeMetricFamily("sanlv_workers", "Workers with a recent heartbeat.")
        workers.add_metric([], readiness.workers)
        yield workers
        if "database" not in readiness.problems and "migrations" not in readiness.problems:
            yield from self._database()
        if "redis" not in readiness.problems:
            yield from self._redis()

    def _database(self) -> Iterator[Metric]:
        settings = self.rt.settings
        now = clock.now()
        with self.rt.reads() as session:
            outcomes = session.execute(
                select(CallAttempt.status, func.count())
                .where(CallAttempt.status.in_(sorted(FINAL_CALL_STATUSES)))
                .group_by(CallAttempt.status)
            ).all()
            rounds = session.scalars(
                select(Round).where(Round.status.in_([RoundStatus.RUNNING, RoundStatus.PAUSED]))
            ).all()
            live = dict(
                session.execute(
                    select(CallAttempt.round_id, func.count())
                    .where(
                        CallAttempt.round_id.in_([r.id for r in rounds]),
                        CallAttempt.status.not_in(sorted(FINAL_CALL_STATUSES)),
                    )
                    .group_by(CallAttempt.round_id)
                ).all()
            ) if rounds else {}  # fmt: skip
        calls = CounterMetricFamily("sanlv_calls", "Calls that ended, by outcome (their final status).", labels=["outcome"])
        for status, count in outcomes:
            calls.add_metric([status.value], count)
        yield calls
        live_calls = GaugeMetricFamily("sanlv_live_calls", "Calls claimed or live, by round.", labels=["round"])
        limit = GaugeMetricFamily("sanlv_max_concurrent", "A round's limit of simultaneous calls.", labels=["round"])
        cps = GaugeMetricFamily("sanlv_round_cps", "A round's calls-per-second limit.", labels=["round"])
        dialling = GaugeMetricFamily(
            "sanlv_round_dialling", "1 for a round that is running inside its calling window now.", labels=["round"]
        )
        for round_ in rounds:
            label = [str(round_.id)]
            live_calls.add_metric(label, live.get(round_.id, 0))
            limit.add_metric(label, round_.max_concurrent)
            cps.add_metric(label, round_.cps)
            inside = (
                round_.status == RoundStatus.RUNNING
                and (round_.ends_at is None or now < round_.ends_at)
                and is_open(round_.windows, round_.blocked_dates or [], now, settings.tz)
            )
            dialling.add_metric(label, 1.0 if inside else 0.0)
        yield from (live_calls, limit, cps, dialling)

    def _redis(self) -> Iterator[Metric]:
        settings = self.rt.settings
        conn = redis_connection(settings)
        depth = GaugeMetricFamily("sanlv_queue_depth", "Jobs waiting in a queue.", labels=["queue"])
        oldest = GaugeMetricFamily(
            "sanlv_queue_oldest_job_seconds", "How long the oldest job in a queue has waited.", labels=["queue"]
        )
        now = datetime.now(UTC)
        for name in QUEUES:
            queue = Queue(queue_name(settings, name), connection=conn)
            depth.add_metric([name], queue.count)
            waited = 0.0
            first = queue.get_job_ids(0, 1)
            if first:
                job = Job.fetch(first[0], connection=conn) if conn.exists(Job.key_for(first[0])) else None
                if job is not None and job.enqueued_at is not None:
                    enqueued = job.enqueued_at if job.enqueued_at.tzinfo else job.enqueued_at.replace(tzinfo=UTC)
                    waited = max(0.0, (now - enqueued).total_seconds())
            oldest.add_metric([name], waited)
        yield depth
        yield oldest
        for counter, values in read_counters(settings).items():
            family = CounterMetricFamily(counter.name, counter.help, labels=[counter.label])
            for value, count in sorted(values.items()):
                family.add_metric([value], count)
            yield family


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess directory, when this server counts in several processes."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(rt: Runtime) -> bytes:
    """The metrics text: this server's counts (every process's under gunicorn), then the state."""
    if multiprocess_dir():
        counted = CollectorRegistry()
        MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    state = CollectorRegistry(auto_describe=False)
    state.register(StateCollector(rt))
    return generate_latest(counted) + generate_latest(state)


class MetricsListener:
    """WSGI middleware: requests on the metrics listener's port get the metrics (or 404); the rest go on.

    Args:
        app: the WSGI app behind (the public one).
        port: the metrics listener's port, as the server reports it in ``SERVER_PORT`` (the socket's own).
        runtime: where the metrics read the database and Redis.
    """

    def __init__(self, app: Callable, port: int, runtime: Runtime):
        self.app = app
        self.port = str(port)
        self.runtime = runtime

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("SERVER_PORT") != self.port:
            return self.app(environ, start_response)
        if environ.get("PATH_INFO") != METRICS_PATH or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: this listener serves /metrics only\n"]
        try:
            body = exposition(self.runtime)
        except Exception:
            log.exception("event=metrics_failed")
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"metrics failed; see the web server's log\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
        return [body]
