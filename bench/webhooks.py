"""Benchmark: complete questionnaires per second through the signed IVR webhooks, beside a bare Flask endpoint.

    python bench/webhooks.py [--db sqlite|postgres|both] [--calls N] [--clients C] [--harness http|client]
                             [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--profile FILE]
                             [--by-webhook] [--p99-calls N] [--p99-clients C]

For each database it builds a scratch copy of the real schema (the Alembic migrations) -- a temporary SQLite
file, or a PostgreSQL schema of its own, dropped at the end -- with one running round of N households, each
with a claimed attempt whose call "was placed". Then, in the same run:

- **sanlv**: the real app (``web.app.create_app``) answers N whole calls as Twilio would make them: the voice
  webhook, ten ``<Gather>`` actions (consent, screen, security 3, concern, awareness, participation,
  satisfaction 4, cadre contact, visit, the delivery check) and the final ``completed`` status callback -- twelve
  signed requests
  per call, each one validated (X-Twilio-Signature), each key press and answer committed to the database
  before the reply;
- **bare**: a Flask app with one route that returns a constant ``<Gather>`` TwiML document (no signature
  check, no database) gets the same twelve signed requests per call from the same client code.

Both apps are served the same way: ``--harness http`` (default) serves each with werkzeug's threaded server
on 127.0.0.1 and the client posts over real HTTP (``requests``, one keep-alive session per client thread);
``--harness client`` drives each in-process with Flask's test client (no sockets: the app's own cost only).
``--clients`` client threads share the calls. The calls are made in ``--rounds`` turns, sanlv then bare in
each, so that load from elsewhere on the machine falls on both alike. The output gives requests/s,
questionnaires/s and the mean cost per request of each app over all turns, and the ratio of sanlv's cost per
request to the bare endpoint's, overall and the median of the turns (goal: at most 3x). After the run the
database is checked: every call completed with its ten answers, every target and attempt completed.

**Tail latency**: then ``--p99-calls`` more calls (default 480) are made by ``--p99-clients`` client threads
(default 16: sixteen calls in progress at once), in ``--rounds`` turns; with ``--db both`` each turn goes to
SQLite, then to PostgreSQL, so that load from elsewhere on the machine falls on both alike. It prints the 99th
percentile of the time each request took (over every request of those calls), for sanlv and for the bare
endpoint, and with ``--db both`` the ratio of SQLite's p99 to PostgreSQL's (goal: at most 1.5x).

``--by-webhook`` also prints the median time of each of a call's twelve requests, for both apps (the press on
cadre_contact is the one that completes the interview, the one on the delivery check ends the call).

``--profile FILE`` writes a cProfile of the sanlv run (harness ``client``, one client) to FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import logging
import math
import re
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from flask import Flask, Response  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402
from twilio.twiml.voice_response import VoiceResponse  # noqa: E402
from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402

from bench._common import free_port, scratch_database  # noqa: E402
from campaigns.clock import now  # noqa: E402
from campaigns.db import session_scope  # noqa: E402
from campaigns.models import (  # noqa: E402
    Answer,
    Cadre,
    CallAttempt,
    CallStatus,
    Household,
    ResponseStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
    Village,
)
from campaigns.models import (
    Response as SurveyResponse,
)
from campaigns.questionnaire import builtin_questionnaire, store_version  # noqa: E402
from campaigns.runtime import Runtime  # noqa: E402
from campaigns.settings import Settings  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
KEYS = ["1", "1", "3", "2", "1", "1", "4", "1", "1", "1"]  # one whole interview, concern and visit included
STEPS = ["consent", "screen", "security", "concern", "awareness", "participation", "satisfaction", "cadre_contact",
         "visit", "delivery"]  # the question each of KEYS answers
# A call's requests, in order, as --by-webhook names them (the press on cadre_contact completes the interview,
# the one on the delivery check ends the call).
WEBHOOKS = ["voice", *(f"gather {step}" for step in STEPS), "status"]
REQUESTS_PER_CALL = 1 + len(KEYS) + 1  # voice, the gathers, the final status callback
ACTION = re.compile(rb'action="([^"]+)"')
TOKEN = "bench-token"


@dataclass(frozen=True)
class Figures:
    label: str
    seconds: float
    calls: int

    @property
    def requests(self) -> int:
        return self.calls * REQUESTS_PER_CALL

    @property
    def per_request_ms(self) -> float:
        return self.seconds / self.requests * 1000

    def line(self) -> str:
        return (
            f"  {self.label:<6} {self.requests / self.seconds:9.0f} req/s  {self.calls / self.seconds:8.1f} questionnaires/s"
            f"  {self.per_request_ms:7.3f} ms/request  ({self.calls} calls, {self.requests} requests, {self.seconds:.2f} s)"
        )


# ------------------------------------------------------------------------------------------------ databases




def load_calls(runtime: Runtime, calls: int) -> list[tuple[int, str, str]]:
    """One running round with ``calls`` households, each with a placed call: (attempt id, CallSid, phone)."""
    with session_scope(runtime.sessions) as session:
        version = store_version(session, builtin_questionnaire())
        village = Village(name="基准村")
        cadre = Cadre(name="基准干部", phone="")
        session.add_all([village, cadre])
        session.flush()
        round_ = Round(
            name="bench",
            questionnaire_id=version.id,
            status=RoundStatus.RUNNING,
            windows=[["00:00", "24:00"]],
            retry={"busy": 1800, "no-answer": 7200, "failed": 14400, "machine": 7200, "dropped": 3600},
        )
        session.add(round_)
        session.flush()
        stamp = now()
        phones = [f"+86138{n:08d}" for n in range(calls)]
        session.execute(
            insert(Household),
            [
                {"phone": p, "village_id": village.id, "cadre_id": cadre.id, "created_at": stamp, "updated_at": stamp}
                for p in phones
            ],
        )
        households = dict(session.execute(select(Household.phone, Household.id)).all())
        session.execute(
            insert(RoundTarget),
            [
                {
                    "round_id": round_.id,
                    "household_id": households[p],
                    "village_id": village.id,
                    "phone": p,
                    "state": TargetState.DIALING,
                    "attempts": 1,
                    "claimed_at": stamp,
                    "updated_at": stamp,
                }
                for p in phones
            ],
        )
        targets = dict(session.execute(select(RoundTarget.phone, RoundTarget.id)).all())
        sids = {p: "CA" + secrets.token_hex(16) for p in phones}
        session.execute(
            insert(CallAttempt),
            [
                {
                    "round_id": round_.id,
                    "target_id": targets[p],
                    "number": 1,
                    "call_sid": sids[p],
                    "status": CallStatus.RINGING,
                    "last_sequence_number": 1,
                    "created_at": stamp,
                    "placed_at": stamp,
                }
                for p in phones
            ],
        )
        rows = session.execute(select(CallAttempt.id, CallAttempt.call_sid, RoundTarget.phone).join(RoundTarget)).all()
    return [(attempt_id, sid, phone) for attempt_id, sid, phone in rows]


def check_database(runtime: Runtime, calls: int) -> str:
    with runtime.sessions() as session:
        answers = session.scalar(select(func.count()).select_from(Answer))
        completed = session.scalar(
            select(func.count()).select_from(SurveyResponse).where(SurveyResponse.status == ResponseStatus.COMPLETED)
        )
        targets = session.scalar(
            select(func.count()).select_from(RoundTarget).where(RoundTarget.state == TargetState.COMPLETED)
        )
        attempts = session.scalar(
            select(func.count()).select_from(CallAttempt).where(CallAttempt.status == CallStatus.COMPLETED)
        )
    expected = (calls * len(KEYS), calls, calls, calls)
    got = (answers, completed, targets, attempts)
    if got != expected:
        raise SystemExit(
            f"database check failed: (answers, completed responses, targets, attempts) = {got}, expected {expected}"
        )
    return f"{answers} answers, {completed} completed responses, targets and attempts"


# ---------------------------------------------------------------------------------------------------- apps


def bare_app(base: str) -> Flask:
    """One route, one constant <Gather>: the floor of answering a webhook with Flask."""
    app = Flask("bare")
    response = VoiceResponse()
    gather = response.gather(
        action=f"{base}/bare/gather?attempt=1&step=consent&n=1",
        method="POST",
        input="dtmf",
        num_digits=1,
        timeout=8,
        finish_on_key="",
    )
    gather.say("想占用您大约两分钟时间,问几个问题。愿意请按1,不愿意请按2。", language="cmn-CN", voice="Polly.Zhiyu")
    response.redirect(f"{base}/bare/gather?attempt=1&step=consent&n=1", method="POST")
    body = str(response)

    @app.post("/bare/<path:_anything>")
    def constant(_anything: str) -> Response:
        return Response(body, mimetype="text/xml")

    return app


class Harness:
    """Posts signed form requests to an app and returns (status, body)."""

    base: str

    def post(self, url: str, params: dict[str, str], signature: str) -> tuple[int, bytes]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class HttpHarness(Harness):
    """The app behind werkzeug's threaded server on loopback; one keep-alive requests session per thread."""

    def __init__(self, app: Flask, port: int):
        WSGIRequestHandler.protocol_version = "HTTP/1.1"  # keep-alive, for both apps alike
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.base = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.local = threading.local()

    def post(self, url: str, params: dict[str, str], signature: str) -> tuple[int, bytes]:
        http = getattr(self.local, "http", None)
        if http is None:
            http = self.local.http = requests.Session()
        reply = http.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=30)
        return reply.status_code, reply.content

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ClientHarness(Harness):
    """The app in-process through Flask's test client (no sockets)."""

    def __init__(self, app: Flask, base: str):
        self.app = app
        self.base = base
        self.local = threading.local()

    def post(self, url: str, params: dict[str, str], signature: str) -> tuple[int, bytes]:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.app.test_client()
        reply = client.post(
            url.removeprefix(self.base), data=params, headers={"X-Twilio-Signature": signature}, base_url=self.base
        )
        return reply.status_code, reply.data


# -------------------------------------------------------------------------------------------------- driving


def drive(
    harness: Harness,
    calls: list[tuple[int, str, str]],
    voice_path: Callable[[int], str],
    status_path: Callable[[int], str],
    clients: int,
    timings: dict[str, list[float]] | None = None,
) -> float:
    """Make every call through ``harness`` with ``clients`` threads; returns the wall time in seconds.

    ``timings``: filled with the seconds each request took, by its name in WEBHOOKS.
    """
    validator = RequestValidator(TOKEN)
    errors: list[str] = []

    def post(index: int, url: str, params: dict[str, str]) -> tuple[int, bytes]:
        signature = validator.compute_signature(url, params)
        started = time.perf_counter()
        reply = harness.post(url, params, signature)
        if timings is not None:
            timings.setdefault(WEBHOOKS[index], []).append(time.perf_counter() - started)
        return reply

    def one_call(attempt_id: int, sid: str, phone: str) -> None:
        params = {
            "CallSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": "+8610000000",
            "To": phone,
            "CallStatus": "in-progress",
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
        }
        url = harness.base + voice_path(attempt_id)
        status, body = post(0, url, params)
        for index, key in enumerate(KEYS, start=1):
            if status != 200:
                errors.append(f"{url}: HTTP {status} {body[:200]!r}")
                return
            url = ACTION.search(body).group(1).decode().replace("&amp;", "&")
            form = {**params, "Digits": key, "FinishedOnKey": ""}
            status, body = post(index, url, form)
        if status != 200 or b"<Hangup" not in body and b"bare" not in url.encode():
            errors.append(f"{url}: the interview did not end: HTTP {status} {body[:200]!r}")
            return
        url = harness.base + status_path(attempt_id)
        form = {**params, "CallStatus": "completed", "SequenceNumber": "3", "CallDuration": "95"}
        status, body = post(len(WEBHOOKS) - 1, url, form)
        if status not in (200, 204):
            errors.append(f"{url}: HTTP {status} {body[:200]!r}")

    shares = [calls[i::clients] for i in range(clients)]

    def client(share: list[tuple[int, str, str]]) -> None:
        for attempt_id, sid, phone in share:
            one_call(attempt_id, sid, phone)

    started = time.perf_counter()
    if clients == 1:
        client(calls)  # in this thread, so that --profile sees the work
    else:
        threads = [threading.Thread(target=client, args=(share,)) for share in shares]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} call(s) failed; first: {errors[0]}")
    return elapsed


def make_harness(kind: str, app: Flask, port: int) -> Harness:
    return HttpHarness(app, port) if kind == "http" else ClientHarness(app, f"http://127.0.0.1:{port}")


def voice_path(attempt_id: int) -> str:
    return f"/ivr/voice?attempt={attempt_id}"


def status_path(attempt_id: int) -> str:
    return f"/ivr/status?attempt={attempt_id}"


def bare_voice_path(attempt_id: int) -> str:
    return f"/bare/voice?attempt={attempt_id}"


def bare_status_path(attempt_id: int) -> str:
    return f"/bare/status?attempt={attempt_id}"


@dataclass
class Served:
    """One database's scratch copy, with sanlv and the bare endpoint served beside it, and its calls to make."""

    kind: str
    runtime: Runtime
    ours: Harness
    bare: Harness
    warm: list[tuple[int, str, str]]
    measured: list[tuple[int, str, str]]
    tail: list[tuple[int, str, str]]  # the calls of the tail-latency turns

    @property
    def calls(self) -> int:
        return len(self.warm) + len(self.measured) + len(self.tail)


@contextlib.contextmanager
def served(kind: str, args: argparse.Namespace) -> Iterator[Served]:
    from web.app import create_app

    with scratch_database(kind, args.postgres_url) as url:
        port, bare_port = free_port(), free_port()
        settings = Settings(
            database_url=url,
            telephony="simulator",
            twilio_auth_token=TOKEN,
            public_base_url=f"http://127.0.0.1:{port}",
            secret_key="bench",
        )
        runtime = Runtime(settings)
        calls = load_calls(runtime, args.warmup + args.calls + args.p99_calls)
        app = create_app(runtime)
        logging.getLogger("sanlv").setLevel(logging.WARNING)  # one INFO line per webhook is not the point here
        ours = make_harness(args.harness, app, port)
        bare = make_harness(args.harness, bare_app(f"http://127.0.0.1:{bare_port}"), bare_port)
        try:
            yield Served(kind, runtime, ours, bare, calls[: args.warmup],
                         calls[args.warmup : args.warmup + args.calls], calls[args.warmup + args.calls :])
        finally:
            ours.close()
            bare.close()
            runtime.dispose()


def throughput(db: Served, args: argparse.Namespace) -> tuple[Figures, Figures, float, dict, dict]:
    """(sanlv, bare, median ratio of the turns, and each app's seconds per request by webhook)."""
    drive(db.ours, db.warm, voice_path, status_path, 1)
    drive(db.bare, db.warm, bare_voice_path, bare_status_path, 1)
    profiler = cProfile.Profile() if args.profile else None
    ours_seconds = bare_seconds = 0.0
    ratios = []
    ours_times: dict[str, list[float]] = {}
    bare_times: dict[str, list[float]] = {}
    for turn in range(args.rounds):
        chunk = db.measured[turn :: args.rounds]
        if profiler:
            profiler.enable()
        ours_turn = drive(db.ours, chunk, voice_path, status_path, args.clients, ours_times)
        if profiler:
            profiler.disable()
        bare_turn = drive(db.bare, chunk, bare_voice_path, bare_status_path, args.clients, bare_times)
        ours_seconds += ours_turn
        bare_seconds += bare_turn
        ratios.append(ours_turn / bare_turn)
    if profiler:
        profiler.dump_stats(f"{args.profile}.{db.kind}")
    ours_figures = Figures("sanlv", ours_seconds, len(db.measured))
    bare_figures = Figures("bare", bare_seconds, len(db.measured))
    return ours_figures, bare_figures, statistics.median(ratios), ours_times, bare_times


def p99(seconds: list[float]) -> float:
    """The 99th percentile, in milliseconds (the nearest rank: a value that was measured)."""
    ordered = sorted(seconds)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] * 1000


def tail_latency(dbs: list[Served], args: argparse.Namespace) -> dict[str, tuple[float, float, int]]:
    """Each database's (sanlv p99 ms, bare p99 ms, requests) with ``--p99-clients`` calls at once, the
    databases taking turns."""
    ours: dict[str, list[float]] = {db.kind: [] for db in dbs}
    bare: dict[str, list[float]] = {db.kind: [] for db in dbs}
    for turn in range(args.rounds):
        for db in dbs:
            chunk = db.tail[turn :: args.rounds]
            for harness, paths, seconds in ((db.ours, (voice_path, status_path), ours[db.kind]),
                                            (db.bare, (bare_voice_path, bare_status_path), bare[db.kind])):
                timings: dict[str, list[float]] = {}
                drive(harness, chunk, *paths, args.p99_clients, timings)
                seconds.extend(t for times in timings.values() for t in times)
    return {kind: (p99(ours[kind]), p99(bare[kind]), len(ours[kind])) for kind in ours}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--calls", type=int, default=300, help="measured calls per app and database")
    parser.add_argument("--warmup", type=int, default=20, help="calls made first and not measured")
    parser.add_argument("--clients", type=int, default=1, help="client threads")
    parser.add_argument("--rounds", type=int, default=5, help="turns of sanlv-then-bare calls")
    parser.add_argument("--harness", choices=["http", "client"], default="http")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--profile", default=None, help="write a cProfile of each sanlv run to FILE.<db>")
    parser.add_argument("--by-webhook", action="store_true", help="also print the median time of each request")
    parser.add_argument("--p99-calls", type=int, default=480, help="calls per app and database for the p99")
    parser.add_argument("--p99-clients", type=int, default=16, help="calls at once for the p99")
    args = parser.parse_args(argv)
    if args.calls < args.rounds or args.clients < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--clients and --rounds must be at least 1, --calls at least --rounds, --warmup at least 0")
    if args.p99_calls < args.rounds or args.p99_clients < 1:
        parser.error("--p99-clients must be at least 1, --p99-calls at least --rounds")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log lines, for both apps alike
    harness = {
        "http": "werkzeug threaded server on 127.0.0.1, requests over HTTP/1.1 keep-alive",
        "client": "Flask test client in-process (no sockets)",
    }[args.harness]
    print(
        f"harness: {harness}; {args.clients} client thread(s); {REQUESTS_PER_CALL} signed requests per call "
        f"(voice, {len(KEYS)} gathers, status callback)"
    )
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    with contextlib.ExitStack() as stack:
        dbs = [stack.enter_context(served(kind, args)) for kind in kinds]
        for db in dbs:
            ours, bare, median, ours_times, bare_times = throughput(db, args)
            ratio = ours.per_request_ms / bare.per_request_ms
            print(f"{db.kind}:")
            print(ours.line())
            print(bare.line())
            print(
                f"  cost per request, sanlv / bare: {ratio:.2f}x overall, {median:.2f}x median of {args.rounds} turns"
                f" (goal: at most 3x) -> {'met' if ratio <= 3 else 'missed'}"
            )
            if args.by_webhook:
                print(f"  {'request of a call':<22} {'sanlv ms':>9} {'bare ms':>9} {'ratio':>7}  (medians)")
                for name in WEBHOOKS:
                    ours_ms = statistics.median(ours_times[name]) * 1000
                    bare_ms = statistics.median(bare_times[name]) * 1000
                    print(f"  {name:<22} {ours_ms:9.2f} {bare_ms:9.2f} {ours_ms / bare_ms:6.2f}x")
        tails = tail_latency(dbs, args)
        turns = f"{args.rounds} turns" + (", the databases taking turns" if len(dbs) > 1 else "")
        print(f"tail latency, {args.p99_clients} calls at once ({args.p99_calls} calls per database, {turns}):")
        for kind, (ours_p99, bare_p99, count) in tails.items():
            print(f"  {kind:<8} p99 per request: sanlv {ours_p99:7.1f} ms, bare {bare_p99:6.1f} ms  ({count} requests)")
        if len(tails) == 2:
            ratio = tails["sqlite"][0] / tails["postgres"][0]
            verdict = "met" if ratio <= 1.5 else "missed"
            print(f"  p99, sqlite / postgres: {ratio:.2f}x (goal: at most 1.5x) -> {verdict}")
        for db in dbs:
            print(f"{db.kind}: {check_database(db.runtime, db.calls)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
