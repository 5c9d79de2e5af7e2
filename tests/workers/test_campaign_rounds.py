"""Rounds through real parts, as in production: several real ``sanlv worker`` processes (RQ, with the
scheduler), real Redis, the real database, the real Flask app over HTTP, and the real twilio client talking to
the local stand-in of Twilio's REST API.

The stand-in only does REST. The phone network's part (calls ringing, being answered or not, and Twilio's
signed status callbacks to the app) is played by ``Carrier``, a thread of this test process that follows the
calls the workers create at the stand-in. Time is under the test's control where it matters
(SANLV_CLOCK_FILE, read by every process).

The harness here is also used by test_campaign_recovery.py.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from campaigns.clock import set_clock_file
from campaigns.db import session_scope
from campaigns.models import (
    CallAttempt,
    CallDirection,
    CallStatus,
    Round,
    RoundTarget,
    TargetState,
)
from campaigns.rounds import (
    RoundOptions,
    change_round,
    create_round,
    round_status_report,
)
from campaigns.runtime import Runtime, set_runtime
from campaigns.schedule import is_open, parse_retry
from campaigns.settings import Settings
from tests.factories import make_household
from tests.support.ports import free_port
from tests.support.twilio_standin import (
    TwilioStandIn,
    process_environment,
    stand_in_settings,
)
from tests.support.workers import stop_workers
from workers import dispatch, placing
from workers.lifecycle import after_round_change
from workers.queues import queue, redis_connection

SHANGHAI = ZoneInfo("Asia/Shanghai")

# What the carrier does with a call: an outcome Twilio reports, or "answered" (in progress for ``talk``
# seconds, then completed: the survey dropped), or "hold" (stays queued until cancelled).
BUSY, NO_ANSWER, FAILED, ANSWERED, HOLD = "busy", "no-answer", "failed", "answered", "hold"


# --- the phone network ----------------------------------------------------------------------------------


@dataclass
class CallLife:
    sid: str
    to: str
    created: float  # time.monotonic()
    outcome: str
    ended: float | None = None
    sequence: int = 0


class Carrier(threading.Thread):
    """Plays the phone network for the calls created at the stand-in, sending Twilio's signed status callbacks.

    Args:
        script: ``(phone, n)`` -> what happens to the n-th call (1-based) to ``phone``.
        ring: seconds from creation to the final status (or to being answered).
        talk: seconds an answered call lasts.
        chaos: send every callback twice, in a shuffled order (Twilio may do both).
    """

    def __init__(
        self,
        standin: TwilioStandIn,
        script: Callable[[str, int], str],
        *,
        ring: float = 0.4,
        talk: float = 0.5,
        chaos: bool = False,
        seed: int = 0,
    ):
        super().__init__(name="carrier", daemon=True)
        self.standin = standin
        self.script = script
        self.ring = ring
        self.talk = talk
        self.chaos = chaos
        self.rng = random.Random(seed)
        self.lives: dict[str, CallLife] = {}
        self.by_phone: dict[str, list[CallLife]] = defaultdict(list)
        self.errors: list[str] = []
        self.posted = 0
        self.held: dict[str, float] = {}  # sid -> monotonic time until which the network says nothing
        self._halt = threading.Event()
        self._session = requests.Session()
        self._validator = RequestValidator(standin.auth_token)

    def hold(self, sid: str, seconds: float) -> None:
        """Say nothing about call ``sid`` for ``seconds`` (no callback adopts it meanwhile)."""
        self.held[sid] = time.monotonic() + seconds

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        self._session.close()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - reported by the test, never silently lost
                self.errors.append(f"carrier: {exc!r}")
            self._halt.wait(0.05)

    def _calls(self) -> list[tuple[str, str, str, dict]]:
        # The stand-in keeps each create request's form with its call (the StatusCallback URL is in it).
        with self.standin._lock:
            return [(c.sid, c.to, c.status, c.form) for c in self.standin._calls.values()]

    def _step(self) -> None:
        now = time.monotonic()
        for sid, to, status, form in self._calls():
            life = self.lives.get(sid)
            if life is None:
                n = len(self.by_phone[to]) + 1
                life = CallLife(sid, to, now, self.script(to, n))
                self.lives[sid] = life
                self.by_phone[to].append(life)
            if life.ended is not None or self.held.get(sid, 0) > now:
                continue
            url = (form.get("StatusCallback") or [""])[0]
            if status == "canceled":  # we were asked to cancel it (round cancelled, window closed)
                self._end(life, url, "canceled")
                continue
            if life.outcome == HOLD:
                continue
            age = now - life.created
            if life.outcome == ANSWERED:
                if status == "queued" and age >= self.ring:
                    self.standin.set_call_status(sid, "in-progress", answered_by="human")
                    self._post(url, life, [("initiated", "initiated"), ("ringing", "ringing"), ("answered", "in-progress")])
                elif status == "in-progress" and age >= self.ring + self.talk:
                    self.standin.set_call_status(sid, "completed")
                    self._end(life, url, "completed", duration=int(self.talk))
            elif age >= self.ring:
                self.standin.set_call_status(sid, life.outcome)
                life.ended = time.monotonic()
                self._post(url, life, [("initiated", "initiated"), ("ringing", "ringing"), ("completed", life.outcome)])

    def _end(self, life: CallLife, url: str, status: str, duration: int = 0) -> None:
        life.ended = time.monotonic()
        self._post(url, life, [("completed", status)], duration=duration)

    def _post(self, url: str, life: CallLife, events, *, duration: int = 0) -> None:
        requests_ = []
        for event, status in events:
            params = {
                "AccountSid": self.standin.account_sid,
                "CallSid": life.sid,
                "CallStatus": status,
                "SequenceNumber": str(life.sequence),
                "StatusCallbackEvent": event,
                "To": life.to,
                "From": "+861012345678",
                "Direction": "outbound-api",
                "ApiVersion": "2010-04-01",
            }
            if status in ("completed", "busy", "no-answer", "failed", "canceled"):
                params["CallDuration"] = str(duration)
            life.sequence += 1
            requests_.append(params)
        if self.chaos:
            requests_ = requests_ * 2
            self.rng.shuffle(requests_)
        for params in requests_:
            signature = self._validator.compute_signature(url, params)
            response = self._session.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=15)
            self.posted += 1
            if response.status_code >= 300:
                self.errors.append(f"{url} {params['CallStatus']}: HTTP {response.status_code} {response.text[:200]}")

    def overlapping_calls(self) -> list[str]:
        """Phones that were in two calls at once."""
        found = []
        for phone, lives in self.by_phone.items():
            spans = sorted((life.created, life.ended or float("inf")) for life in lives)
            if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
                found.append(phone)
        return found


# --- the deployment -------------------------------------------------------------------------------------


@dataclass
class Campaign:
    settings: Settings
    standin: TwilioStandIn
    sessions: object
    tmp: Path
    env: dict[str, str]
    clock_file: Path | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    carrier: Carrier | None = None
    clock_marks: list[tuple[float, datetime]] = field(default_factory=list)  # (monotonic, controlled time)
    _log: object = None

    # time
    def set_clock(self, when: datetime) -> None:
        """The controlled time is ``when`` now, and runs on in real time."""
        assert self.clock_file is not None
        set_clock_file(self.clock_file, when, running=True)
        self.clock_marks.append((time.monotonic(), when))

    def controlled(self, at: float) -> datetime:
        """The controlled time at monotonic instant ``at``."""
        mark, value = max((m for m in self.clock_marks if m[0] <= at), key=lambda m: m[0])
        return value + timedelta(seconds=at - mark)

    def controlled_now(self) -> datetime:
        return self.controlled(time.monotonic())

    # processes
    def start_workers(self, count: int) -> None:
        for _ in range(count):
            self.workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "web", "worker"],
                    env=self.env,
                    stdout=self._log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def wait_for_workers(self, count: int) -> None:
        from rq import Worker

        conn = redis_connection(self.settings)
        self.wait_for(f"{count} workers", lambda: Worker.count(connection=conn) >= count, timeout=60)

    def start_carrier(self, script: Callable[[str, int], str], **options) -> Carrier:
        self.carrier = Carrier(self.standin, script, **options)
        self.carrier.start()
        return self.carrier

    def sanlv(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "web", *args], env=self.env, capture_output=True, text=True, timeout=60, check=False
        )

    # the round
    def create_round(self, phones: list[str], **options) -> int:
        with session_scope(self.sessions) as session:
            for phone in phones:
                make_household(session, phone=phone)
            values = {"name": "campaign", "windows": [["00:00", "24:00"]], **options}
            return create_round(session, RoundOptions(**values)).id

    def launch(self, round_id: int) -> None:
        with session_scope(self.sessions) as session:
            change_round(session, round_id, "launch")
        after_round_change(self.settings, round_id, "launch")

    def status(self, round_id: int) -> dict:
        with self.sessions() as session:
            return round_status_report(session, round_id, tz=self.settings.tz)

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> float:
        """Wait until ``check()``; returns the seconds it took. Fails naming ``what`` (and a dead worker)."""
        began = time.monotonic()
        while not check():
            if time.monotonic() - began > timeout:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; log: {self.log_tail()}")
            dead = [w.pid for w in self.workers if w.poll() is not None and w.returncode != -signal.SIGKILL]
            if dead:
                pytest.fail(f"worker processes {dead} exited while waiting for {what}; log: {self.log_tail()}")
            time.sleep(0.2)
        return time.monotonic() - began

    def wait_until_final(self, round_id: int, timeout: float) -> dict:
        self.wait_for(f"round {round_id} to finish", lambda: self.status(round_id)["status"] in ("completed", "cancelled") and self.open_targets(round_id) == 0, timeout)
        return self.status(round_id)

    def open_targets(self, round_id: int) -> int:
        with self.sessions() as session:
            return session.scalar(
                select(func.count())
                .select_from(RoundTarget)
                .where(
                    RoundTarget.round_id == round_id,
                    RoundTarget.state.in_([TargetState.PENDING, TargetState.DIALING, TargetState.IN_CALL]),
                )
            )

    def log_tail(self, lines: int = 40) -> str:
        path = self.tmp / "workers.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def assert_every_call_once(self, round_id: int, max_attempts: int) -> None:
        """No doubled call: every call at the provider is one attempt's, no phone was in two calls at once,
        no phone was called more than the budget, and each target counts exactly the calls it got."""
        with self.sessions() as session:
            attempts = session.execute(
                select(CallAttempt.call_sid, CallAttempt.status, RoundTarget.phone, RoundTarget.attempts)
                .join(RoundTarget, RoundTarget.id == CallAttempt.target_id)
                .where(CallAttempt.round_id == round_id, CallAttempt.direction == CallDirection.OUTBOUND)
            ).all()
            targets = dict(
                session.execute(
                    select(RoundTarget.phone, RoundTarget.attempts).where(RoundTarget.round_id == round_id)
                ).all()
            )
        by_sid = defaultdict(int)
        for sid, _status, _phone, _n in attempts:
            if sid is not None:
                by_sid[sid] += 1
        calls = self.standin.calls
        orphans = [c["sid"] for c in calls if by_sid.get(c["sid"]) != 1]
        assert orphans == [], f"calls at the provider that are not exactly one attempt's: {orphans}"
        assert all(status != CallStatus.CLAIMED for _sid, status, _p, _n in attempts), "a claim was left behind"
        per_phone = defaultdict(int)
        for call in calls:
            per_phone[call["to"]] += 1
        for phone, count in per_phone.items():
            assert count <= max_attempts, f"{phone} was called {count} times (budget {max_attempts})"
            assert targets[phone] == count, f"{phone}: target counts {targets[phone]} calls, it got {count}"
        if self.carrier is not None:
            assert self.carrier.overlapping_calls() == []
            assert self.carrier.errors == []


@pytest.fixture
def campaign(database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Campaign]:
    """A deployment: the app on a loopback port, the Twilio stand-in, workers started on demand."""
    from werkzeug.serving import make_server

    from web.app import create_app

    yield from _deployment(database_url, redis_url, tmp_path, monkeypatch, make_server, create_app, clock=False)


@pytest.fixture
def clocked_campaign(database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same, with every process reading the controlled clock."""
    from werkzeug.serving import make_server

    from web.app import create_app

    yield from _deployment(database_url, redis_url, tmp_path, monkeypatch, make_server, create_app, clock=True)


def _deployment(database_url, redis_url, tmp_path, monkeypatch, make_server, create_app, *, clock: bool):
    standin = TwilioStandIn().start()
    port = free_port()
    settings = stand_in_settings(
        Settings(database_url=database_url, redis_url=redis_url),
        standin,
        public_base_url=f"http://127.0.0.1:{port}",
        secret_key="test-secret",
        namespace=f"campaign-{uuid.uuid4().hex[:8]}",
    )
    env = process_environment(settings) | {"SANLV_TIMEZONE": "Asia/Shanghai"}
    clock_file = None
    if clock:
        clock_file = tmp_path / "clock"
        env["SANLV_CLOCK_FILE"] = str(clock_file)
        monkeypatch.setenv("SANLV_CLOCK_FILE", str(clock_file))
        set_clock_file(clock_file, datetime.now(UTC) - timedelta(days=2), running=True)
    for name, value in env.items():
        if name.startswith(("SANLV_", "TWILIO_")) or name in ("DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL"):
            monkeypatch.setenv(name, value)
    runtime = Runtime(settings)
    set_runtime(runtime)
    server = make_server("127.0.0.1", port, create_app(runtime), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log = (tmp_path / "workers.log").open("ab")
    deployment = Campaign(settings, standin, runtime.sessions, tmp_path, env, clock_file, _log=log)
    try:
        yield deployment
    finally:
        stop_workers(deployment.workers)
        if deployment.carrier is not None:
            deployment.carrier.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        standin.stop()
        log.close()
        set_runtime(None)


def phones(count: int, prefix: str = "+86138") -> list[str]:
    return [f"{prefix}{n:08d}" for n in range(1, count + 1)]


# --- windows and the retry schedule, the clock under control ----------------------------------------------


def test_no_dial_outside_the_windows_and_retries_follow_the_schedule(clocked_campaign: Campaign):
    c = clocked_campaign
    day = (datetime.now(SHANGHAI) - timedelta(days=2)).date()  # behind the real clock (see the module doc)

    def local(hh: int, mm: int, ss: int = 0) -> datetime:
        return datetime.combine(day, dtime(hh, mm, ss), SHANGHAI)

    numbers = phones(8)
    outcome = {1: BUSY, 2: NO_ANSWER, 3: BUSY}
    c.start_carrier(lambda phone, n: outcome[n], ring=0.3)
    round_id = c.create_round(
        numbers,
        windows=[["09:00", "11:30"], ["14:30", "20:30"]],
        retry=parse_retry("busy=30m,no-answer=2h"),
        max_attempts=3,
        cps=4,
        max_concurrent=20,
    )
    c.start_workers(3)
    c.wait_for_workers(3)
    c.set_clock(local(11, 29, 45))
    c.launch(round_id)

    # The morning window closes at 11:30: whoever was not called by then waits for 14:30.
    c.wait_for("the window to close", lambda: c.controlled_now() >= local(11, 30, 3), timeout=30)
    closed_calls = c.standin.created
    assert closed_calls == len(numbers)  # two seconds of dialling at 4 per second
    c.wait_for("first calls to end", lambda: all(life.ended for life in c.carrier.lives.values()), timeout=15)
    with c.sessions() as session:
        retries = [
            t.next_attempt_at
            for t in session.scalars(select(RoundTarget).where(RoundTarget.round_id == round_id))
            if t.attempts == 1
        ]
    # Busy at 11:29: due at 11:59, in the lunch rest: moved to 14:30.
    assert retries and set(retries) == {local(14, 30).astimezone(UTC)}
    time.sleep(2)
    assert c.standin.created == closed_calls  # nothing while closed

    # 14:29:57: still closed for three seconds; then everyone due is called.
    c.set_clock(local(14, 29, 57))
    dispatch.kick_dispatch(c.settings, round_id)  # the dispatcher naps up to 30 s while closed; wake it now
    c.wait_for("the afternoon calls", lambda: c.standin.created >= closed_calls + len(numbers), timeout=30)
    c.wait_for("their ends", lambda: all(life.ended for life in c.carrier.lives.values()), timeout=15)

    def second_retries_scheduled() -> bool:
        # The carrier has hung up; the status callbacks may still be on their way to the app.
        with c.sessions() as session:
            targets = session.scalars(select(RoundTarget).where(RoundTarget.round_id == round_id)).all()
            return all(t.attempts == 2 and t.state is TargetState.PENDING for t in targets)

    c.wait_for("the second retries to be scheduled", second_retries_scheduled, timeout=15)
    with c.sessions() as session:
        second_retries = {
            t.next_attempt_at for t in session.scalars(select(RoundTarget).where(RoundTarget.round_id == round_id))
        }
    assert local(16, 30).astimezone(UTC) <= min(second_retries)  # no answer at 14:30: two hours later
    assert max(second_retries) <= local(16, 31).astimezone(UTC)

    c.set_clock(local(16, 29, 58))
    dispatch.kick_dispatch(c.settings, round_id)
    final = c.wait_until_final(round_id, timeout=60)

    assert final["status"] == "completed"
    assert final["targets"]["unreachable"] == len(numbers)  # three calls each, none answered
    c.assert_every_call_once(round_id, max_attempts=3)
    # Every create reached Twilio inside a window (by the controlled clock, as the stand-in received it).
    windows = [["09:00", "11:30"], ["14:30", "20:30"]]
    for created in c.standin.create_times:
        when = c.controlled(created)
        assert is_open(windows, [], when - timedelta(seconds=0.05), SHANGHAI) or is_open(windows, [], when, SHANGHAI), when
    # ...and each household's calls follow the schedule.
    with c.sessions() as session:
        placed = defaultdict(list)
        for phone, at in session.execute(
            select(RoundTarget.phone, CallAttempt.placed_at)
            .join(RoundTarget, RoundTarget.id == CallAttempt.target_id)
            .order_by(CallAttempt.id)
        ):
            placed[phone].append(at)
    for phone in numbers:
        first, second, third = placed[phone]
        assert local(11, 29, 45) <= first < local(11, 30)
        assert second >= local(14, 30)  # busy: 30 minutes later is the lunch rest; the next window
        assert third >= second + timedelta(hours=2)  # no answer: two hours


# --- pause, resume, cancel ------------------------------------------------------------------------------


def test_pause_resume_and_cancel_with_several_workers(campaign: Campaign):
    c = campaign
    numbers = phones(60)
    held = set(numbers[-10:])  # queued at Twilio until cancelled

    def script(phone: str, n: int) -> str:
        if phone in held:
            return HOLD
        return ANSWERED if int(phone[-2:]) % 3 == 0 else NO_ANSWER

    c.start_carrier(script, ring=0.5, talk=1.5)
    round_id = c.create_round(
        numbers, cps=6, max_concurrent=60, max_attempts=2, retry=parse_retry("busy=1s,no-answer=1s,dropped=1s")
    )
    c.start_workers(3)
    c.wait_for_workers(3)
    c.launch(round_id)
    c.wait_for("some calls", lambda: c.standin.created >= 12, timeout=30)

    paused = c.sanlv("round", "pause", str(round_id))
    returned = time.monotonic()
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"round {round_id}: paused"
    status = json.loads(c.sanlv("round", "status", str(round_id), "--format", "json").stdout)
    assert status["status"] == "paused"
    time.sleep(5)
    late = [t - returned for t in c.standin.create_times if t > returned]
    assert all(lag <= 3.0 for lag in late), f"calls placed {late} s after pause returned"
    # Calls in progress finished and were served; claimed work went back to pending; nothing is claimed.
    c.wait_for("live calls to end", lambda: c.status(round_id)["live_calls"] <= len(held), timeout=20)
    with c.sessions() as session:
        assert session.scalar(select(func.count()).where(CallAttempt.status == CallStatus.CLAIMED)) == 0
    paused_count = c.standin.created
    time.sleep(2)
    assert c.standin.created == paused_count

    resumed = c.sanlv("round", "resume", str(round_id))
    assert resumed.stdout.strip() == f"round {round_id}: running"
    c.wait_for("dialling to resume", lambda: c.standin.created > paused_count + 6, timeout=30)
    c.wait_for("every household to be called", lambda: len({call["to"] for call in c.standin.calls}) == 60, timeout=60)

    cancelled = c.sanlv("round", "cancel", str(round_id))
    returned = time.monotonic()
    assert cancelled.stdout.strip() == f"round {round_id}: cancelled"
    # Calls queued at Twilio are cancelled there; calls in progress finish; every target ends.
    c.wait_for(
        "the queued calls to be cancelled",
        lambda: all(call["status"] == "canceled" for call in c.standin.calls if call["to"] in held),
        timeout=20,
    )
    final = c.wait_until_final(round_id, timeout=30)
    assert final["status"] == "cancelled"
    assert all(t - returned <= 3.0 for t in c.standin.create_times if t > returned)
    with c.sessions() as session:
        states = dict(
            session.execute(select(RoundTarget.phone, RoundTarget.state).where(RoundTarget.round_id == round_id)).all()
        )
    assert {states[p] for p in held} == {TargetState.CANCELLED}
    assert set(states.values()) <= {TargetState.CANCELLED, TargetState.UNREACHABLE}
    c.assert_every_call_once(round_id, max_attempts=2)


# --- callbacks and duplicated jobs ----------------------------------------------------------------------


def test_duplicated_and_reordered_callbacks_change_nothing(campaign: Campaign):
    c = campaign
    numbers = phones(12)
    outcome = {1: BUSY, 2: NO_ANSWER}
    carrier = c.start_carrier(lambda phone, n: outcome[n], ring=0.3, chaos=True, seed=4)
    round_id = c.create_round(numbers, cps=8, max_attempts=2, retry=parse_retry("busy=1s,no-answer=1s"))
    c.start_workers(2)
    c.launch(round_id)

    final = c.wait_until_final(round_id, timeout=60)

    assert final["status"] == "completed"
    assert final["targets"]["unreachable"] == 12
    assert carrier.posted >= 12 * 2 * 3 * 2  # two calls each, three callbacks a call, each sent twice
    with c.sessions() as session:
        outcomes = defaultdict(list)
        for phone, status in session.execute(
            select(RoundTarget.phone, CallAttempt.status)
            .join(RoundTarget, RoundTarget.id == CallAttempt.target_id)
            .order_by(CallAttempt.number)
        ):
            outcomes[phone].append(status)
    assert all(outcomes[p] == [CallStatus.BUSY, CallStatus.NO_ANSWER] for p in numbers), outcomes
    c.assert_every_call_once(round_id, max_attempts=2)


def test_a_duplicated_job_places_one_call(campaign: Campaign):
    c = campaign
    round_id = c.create_round(phones(1), cps=10)
    with session_scope(c.sessions) as session:
        change_round(session, round_id, "launch")  # no dispatcher: this test claims by hand
        from campaigns.calls import claim_due_targets
        from campaigns.clock import now

        [claim] = claim_due_targets(session, session.get(Round, round_id), now(), 1)
    dialer = queue(c.settings)
    # The same place_call delivered five times (e.g. re-enqueued by hand, a retry racing a re-run).
    for n in range(5):
        dialer.enqueue(placing.place_call, claim.attempt_id, job_id=f"{c.settings.namespace}-dup-{n}")
    c.start_workers(3)

    c.wait_for("the jobs to run", lambda: dialer.count == 0 and c.standin.created >= 1, timeout=30)
    time.sleep(2)

    assert c.standin.created == 1
    with c.sessions() as session:
        assert session.get(CallAttempt, claim.attempt_id).call_sid == c.standin.calls[0]["sid"]  # type: ignore[union-attr]
