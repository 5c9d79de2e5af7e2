"""The log lines of the real processes, in both formats (SANLV_LOG_FORMAT): ``sanlv web`` under gunicorn (the
app's events, gunicorn's own lines and its access log) and ``sanlv worker``. Every line on stderr is one event
with its time, level and role; the round, attempt and call sid where they apply; no phone number in full;
no query string in the access log; nothing on stdout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta

import pytest
import requests
from rq.job import Job

from campaigns import clock
from campaigns.models import RoundStatus
from tests.campaigns.test_logs import TEXT_LINE
from tests.conftest import TEST_SECRET_KEY
from tests.factories import make_round, make_target
from tests.ivr.support import SID, base_params, open_call, post
from tests.support.ports import free_port
from tests.support.twilio_standin import process_environment
from tests.support.workers import ROOT, kill_tree
from workers.queues import enqueue
from workers.runner import job_log_fields

FULL_NUMBER = "13812341234"


def parse(written: str, fmt: str) -> list[dict]:
    """Each stderr line as a dict of its fields; fails on a line that is not one event in ``fmt``."""
    entries = []
    for line in written.splitlines():
        if fmt == "json":
            entry = json.loads(line)
        else:
            match = TEXT_LINE.match(line)
            assert match, line
            entry = match.groupdict()
            for name in ("event", "round", "attempt", "sid"):
                found = [part.split("=", 1)[1] for part in entry["message"].split() if part.startswith(name + "=")]
                if found:
                    entry[name] = int(found[0]) if name in ("round", "attempt") and found[0].isdigit() else found[0]
        assert {"time", "level", "role", "logger", "message"} <= set(entry), line
        entries.append(entry)
    return entries


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_web_server_lines(fmt, settings, sessions, tmp_path, monkeypatch):
    port = free_port()
    live = replace(settings, public_base_url=f"http://127.0.0.1:{port}", namespace="logs-test")
    env = process_environment(live) | {"SANLV_LOG_FORMAT": fmt, "SECRET_KEY": TEST_SECRET_KEY}
    monkeypatch.setenv("PUBLIC_BASE_URL", live.public_base_url)
    err, out = tmp_path / "stderr.log", tmp_path / "stdout.log"
    with err.open("wb") as err_handle, out.open("wb") as out_handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "web", "web", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, stdout=out_handle, stderr=err_handle, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    attempt_id = open_call(sessions)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        form = base_params(CallStatus="ringing", SequenceNumber="0", To=f"+86{FULL_NUMBER}")
        assert post(live, f"/ivr/status?attempt={attempt_id}", form).status_code == 204
        # A refused webhook: its warning names the call by the URL and form it came with.
        assert post(live, f"/ivr/status?attempt={attempt_id}", base_params(CallStatus="bogus")).status_code == 400
        requests.get(f"http://127.0.0.1:{port}/login?phone={FULL_NUMBER}&next=/", timeout=5)
        deadline = time.monotonic() + 10
        while err.read_text().count("gunicorn.access") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
    written = err.read_text()
    assert out.read_text() == ""
    assert FULL_NUMBER not in written
    entries = parse(written, fmt)
    assert {e["role"] for e in entries} == {"web"}
    assert any(e["logger"] == "gunicorn.error" for e in entries)  # gunicorn's own lines, same format
    access = [e for e in entries if e["logger"] == "gunicorn.access"]
    assert len(access) >= 3 and all("?" not in e["message"] for e in access)
    assert any('"GET /login HTTP/1.1"' in e["message"] for e in access)
    [status] = [e for e in entries if e.get("event") == "call_status"]
    assert (status["level"], status["attempt"], status["sid"]) == ("INFO", attempt_id, SID)
    [refused] = [e for e in entries if e.get("event") == "bad_webhook"]
    assert (refused["level"], refused["attempt"], refused["sid"]) == ("WARNING", attempt_id, SID)
    if fmt == "text":  # the sid the message did not say is added from the webhook's context
        assert status["message"].endswith(f" sid={SID}")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_worker_lines(fmt, env, sessions):
    with sessions.begin() as session:
        round_ = make_round(session, windows=[["00:00", "24:00"]], ends_at=clock.now() - timedelta(minutes=1))
        round_.status = RoundStatus.RUNNING
        make_target(session, round_)
        round_id = round_.id
    settings = replace(env, namespace=f"logs-{fmt}")
    enqueue(settings, "workers.dispatch.dispatch_round", round_id)
    result = subprocess.run(
        [sys.executable, "-m", "web", "worker", "--burst"],
        env={**os.environ, "SANLV_NAMESPACE": settings.namespace, "SANLV_LOG_FORMAT": fmt},
        capture_output=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    entries = parse(result.stderr.decode(), fmt)
    assert entries and {e["role"] for e in entries} == {"worker"}
    deadline = [e for e in entries if e.get("event") == "deadline"]
    assert deadline and deadline[0]["round"] == round_id and deadline[0]["logger"] == "sanlv.jobs"
    assert any(e.get("event") == "round_completed" and e["round"] == round_id for e in entries)
    if fmt == "json":
        assert all(isinstance(e["round"], int) for e in entries if "round" in e)


def test_job_lines_name_the_round_or_attempt_the_job_was_called_with(redis_conn):
    conn = redis_conn
    place = Job.create("workers.placing.place_call", args=(12,), connection=conn)
    dispatch = Job.create("workers.dispatch.dispatch_round", kwargs={"round_id": 3}, connection=conn)
    sweep = Job.create("workers.sweeper.sweep", connection=conn)
    assert job_log_fields(place) == {"attempt": 12}
    assert job_log_fields(dispatch) == {"round": 3}
    assert job_log_fields(sweep) == {}
