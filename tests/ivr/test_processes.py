"""`sanlv web` (gunicorn) and `sanlv worker --burst` as the real processes an operator starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import requests
from sqlalchemy import select

from campaigns.models import RoundStatus
from tests.factories import make_round
from workers.queues import enqueue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_web_serves_the_app_under_gunicorn(env):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "web", "web", "--port", str(port), "--workers", "1"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        assert reply.status_code == 200 and reply.json() == {"status": "ok"}
        # A webhook without a signature is refused by the served app.
        assert requests.post(f"http://127.0.0.1:{port}/ivr/voice?attempt=1", data={"CallSid": "CA1"}, timeout=5).status_code == 403
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    assert "gunicorn" in output.lower() or "Booting worker" in output


def test_worker_burst_runs_queued_jobs_and_exits(env, redis_url, sessions):
    from dataclasses import replace

    settings = replace(env, namespace="burst-test")
    with sessions.begin() as session:
        round_ = make_round(session, windows=[["00:00", "24:00"]])
        round_.status = RoundStatus.RUNNING
        round_id = round_.id
    enqueue(settings, "workers.dispatch.dispatch_round", round_id)
    result = subprocess.run(
        [sys.executable, "-m", "web", "worker", "--burst"],
        env={**os.environ, "SANLV_NAMESPACE": "burst-test"}, capture_output=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    with sessions() as session:
        from campaigns.models import Round

        # The round had no targets: the dispatcher's tick found it done and completed it.
        assert session.scalar(select(Round.status).where(Round.id == round_id)) is RoundStatus.COMPLETED
