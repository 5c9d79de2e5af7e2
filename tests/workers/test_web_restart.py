"""The web server crashes and restarts in the middle of a round, through real processes: gunicorn (``sanlv web``),
two ``sanlv worker`` processes, real Redis and database, the real twilio client talking to the Twilio stand-in,
and the phone network played by the ``Carrier`` of test_campaign_rounds.py.

While the web server is down, the calls in progress end and their final status callbacks are lost (Twilio
does not retry them): phantom calls, still live in the database, holding the round's call slots. The sweeper
must ask the provider about each one once it has been quiet for longer than its questionnaire allows, and
settle it. The settle time is measured from each call's end at the provider to its attempt being final, and
to the next call the freed slots let the round place.

The thresholds are the real ones, computed from the round's questionnaire; the test makes them short with a
questionnaire of its own whose prompts are short and whose keypad wait is 3 seconds, and a 5-second ring
timeout. The default questionnaire's limit is checked against the two-minute bound at the end.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import FINAL_CALL_STATUSES, CallAttempt, CallStatus
from campaigns.questionnaire import builtin_questionnaire, load_questionnaire_file
from campaigns.rounds import RoundOptions, change_round, create_round
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings
from tests.factories import make_household
from tests.support.ports import free_port
from tests.support.twilio_standin import TwilioStandIn, process_environment, stand_in_settings
from tests.support.workers import ROOT, kill_tree, start_workers, stop_workers
from tests.workers.test_campaign_rounds import ANSWERED, Carrier, phones
from workers import sweeper
from workers.lifecycle import after_round_change
from workers.metrics import DIALS, SWEEPER_SETTLED, read_counters
from workers.runner import MAINTENANCE_SECONDS

SECRET = "restart-test-" + "k" * 32
RING_TIMEOUT = 5
TALK = 6.0  # seconds an answered call lasts


class Web:
    """``sanlv web`` (gunicorn, 2 workers) on a loopback port, which the test kills and starts again."""

    def __init__(self, port: int, env: dict[str, str], log: Path):
        self.port, self.env, self.log = port, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "web", "web", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2"],
                env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)

    def crash(self) -> None:
        """SIGKILL the master and its workers: nothing is finished, nothing is flushed."""
        assert self.proc is not None
        kill_tree(self.proc)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc)


def short_questionnaire(path: Path) -> Path:
    """The default questionnaire with every prompt and message cut to a few characters and a 3-second wait."""
    content = yaml.safe_load((ROOT / "campaigns" / "questionnaires" / "default.yaml").read_text(encoding="utf-8"))
    content["key"] = "short"
    content["gather_timeout"] = 3
    content["messages"] = {name: ("您选择{answer}" if name == "readback" else "好。") for name in content["messages"]}
    for step in content["steps"]:
        step["prompt"] = "请按键。"
    path.write_text(yaml.safe_dump(content, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def deployment(database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    standin = TwilioStandIn().start()
    port = free_port()
    settings = stand_in_settings(
        Settings(database_url=database_url, redis_url=redis_url),
        standin,
        public_base_url=f"http://127.0.0.1:{port}",
        secret_key=SECRET,
        namespace=f"restart-{uuid.uuid4().hex[:8]}",
        ring_timeout=RING_TIMEOUT,
    )
    env = process_environment(settings) | {"SANLV_TIMEZONE": "Asia/Shanghai", "SANLV_RING_TIMEOUT": str(RING_TIMEOUT)}
    for name, value in env.items():
        if name.startswith(("SANLV_", "TWILIO_")) or name in ("DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL"):
            monkeypatch.setenv(name, value)
    runtime = Runtime(settings)
    set_runtime(runtime)
    web = Web(port, env, tmp_path / "web.log")
    workers: list[subprocess.Popen] = []
    carrier: Carrier | None = None
    parts = {"settings": settings, "standin": standin, "sessions": runtime.sessions, "web": web, "env": env,
             "workers": workers, "tmp": tmp_path}  # fmt: skip
    try:
        yield parts
    finally:
        carrier = parts.get("carrier")
        if carrier is not None:
            carrier.stop()
        stop_workers(workers)
        web.stop()
        standin.stop()
        set_runtime(None)


def wait_for(what: str, check, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(p.read_text(errors="replace")[-2500:] for p in logs if p.exists())
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.1)


def test_calls_left_live_by_a_web_restart_settle_within_the_quiet_limit(deployment):
    d = deployment
    settings, standin, sessions, web = d["settings"], d["standin"], d["sessions"], d["web"]
    logs = [d["tmp"] / "web.log", d["tmp"] / "workers.log"]
    questionnaire_file = short_questionnaire(d["tmp"] / "short.yaml")
    quiet = sweeper.quiet_limit(settings, load_questionnaire_file(questionnaire_file))
    assert quiet < timedelta(seconds=30)  # short enough for a test; the default's bound is checked below

    web.start()
    d["workers"].extend(start_workers(2, d["env"], d["tmp"] / "workers.log"))
    carrier = d["carrier"] = Carrier(standin, lambda phone, n: ANSWERED, ring=0.3, talk=TALK)
    carrier.start()
    numbers = phones(8)
    with session_scope(sessions) as session:
        for phone in numbers:
            make_household(session, phone=phone)
        round_id = create_round(
            session,
            RoundOptions(name="restart", questionnaire=str(questionnaire_file), windows=[["00:00", "24:00"]],
                         cps=10, max_concurrent=4, max_attempts=1),
        ).id  # fmt: skip
        change_round(session, round_id, "launch")
    after_round_change(settings, round_id, "launch")

    def in_progress() -> list[int]:
        with sessions() as session:
            return list(session.scalars(select(CallAttempt.id).where(CallAttempt.status == CallStatus.IN_PROGRESS)))

    # Four calls answered (every slot taken), then the web server crashes in the middle of them.
    wait_for("four calls in progress", lambda: len(in_progress()) == 4, 60, logs)
    phantoms = in_progress()
    web.crash()
    crashed = time.monotonic()
    wait_for("the calls to end at the provider", lambda: sum(1 for c in standin.calls if c["status"] == "completed") == 4,
             TALK + 10, logs)  # fmt: skip
    ended = {life.sid: life.ended for life in carrier.lives.values() if life.ended is not None}
    assert len(ended) == 4
    time.sleep(1)
    web.start()
    assert time.monotonic() - crashed < TALK + 15
    assert standin.created == 4  # no slot was free: the phantom calls hold them all

    # The phantom calls settle once quiet for longer than the questionnaire allows; the freed slots dial.
    bound = quiet.total_seconds() + MAINTENANCE_SECONDS + 10  # + one sweep's cadence + a loaded machine's slack
    settled_at: dict[int, float] = {}

    def all_settled() -> bool:
        with sessions() as session:
            rows = session.execute(
                select(CallAttempt.id, CallAttempt.status).where(CallAttempt.id.in_(phantoms))
            ).all()
        for attempt_id, status in rows:
            if status in FINAL_CALL_STATUSES and attempt_id not in settled_at:
                settled_at[attempt_id] = time.monotonic()
        return len(settled_at) == 4

    wait_for("the phantom calls to settle", all_settled, bound + 30, logs)
    with sessions() as session:
        attempts = {a.id: a for a in session.scalars(select(CallAttempt).where(CallAttempt.id.in_(phantoms)))}
    settle_times = [settled_at[a_id] - ended[attempts[a_id].call_sid] for a_id in phantoms]
    last_end = max(ended.values())
    wait_for("the freed slots to dial", lambda: standin.created > 4, 30, logs)
    redial = standin.create_times[4] - last_end
    print(f"quiet limit {quiet.total_seconds():.1f} s; settle times after each call's end: "
          f"{', '.join(f'{t:.1f}' for t in sorted(settle_times))} s; next call {redial:.1f} s after the last end")  # fmt: skip
    assert all(a.status == CallStatus.COMPLETED for a in attempts.values())  # as the provider reported them
    # Not before the quiet limit (counted from the last webhook, the "answered" callback, before the end) ...
    assert min(settled_at.values()) - min(ended.values()) > quiet.total_seconds() - TALK - 1
    # ... and within it, plus a sweep: the slots are free again as soon.
    assert max(settle_times) < bound
    assert redial < bound + 5
    assert "event=quiet_call_settled" in (d["tmp"] / "workers.log").read_text(errors="replace")

    # The rest of the round runs on the restarted server and the round completes.
    wait_for("the round to complete", lambda: standin.created == 8 and all_final(sessions, round_id), 90, logs)
    assert carrier.overlapping_calls() == []
    # What the workers published for Prometheus: every call placed, the four settled by the sweeper.
    counted = read_counters(settings)
    assert counted[DIALS] == {str(round_id): 8}
    assert counted[SWEEPER_SETTLED] == {"completed": 4}

    # With the default questionnaire and ring timeout, the same path settles within about two minutes.
    default_quiet = sweeper.quiet_limit(Settings(), builtin_questionnaire())
    assert default_quiet + timedelta(seconds=MAINTENANCE_SECONDS) < timedelta(minutes=2)


def all_final(sessions, round_id: int) -> bool:
    with sessions() as session:
        statuses = session.scalars(select(CallAttempt.status).where(CallAttempt.round_id == round_id)).all()
    return len(statuses) == 8 and all(s in FINAL_CALL_STATUSES for s in statuses)
