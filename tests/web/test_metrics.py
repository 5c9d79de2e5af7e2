"""``/metrics`` from the real ``sanlv web`` (gunicorn, two workers, prometheus-client's multiprocess mode) on its
own listener (SANLV_METRICS_BIND), scraped over HTTP and parsed with ``prometheus_client.parser``.

Signed webhooks go to the public listener (whichever gunicorn worker takes each, the counts add up); the
workers' counters are published through Redis as the workers do it (workers.metrics); the state gauges
are read from the database and Redis at the scrape. Every metric name the alert rules use is exported, and
the public listener never answers ``/metrics``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from campaigns.models import CallAttempt, CallStatus, RoundStatus
from tests.conftest import TEST_SECRET_KEY
from tests.factories import make_household, make_round, make_target
from tests.ivr.support import base_params, gather_url, open_call, post, twiml
from tests.support.ports import free_port
from tests.support.twilio_standin import process_environment
from tests.support.workers import ROOT, kill_tree
from workers.metrics import DIALS, SWEEPER_SETTLED, TWILIO_ERRORS, count
from workers.queues import enqueue

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


@pytest.fixture
def web(settings, tmp_path: Path, monkeypatch) -> Iterator[tuple]:
    """``sanlv web`` with two gunicorn workers and a metrics listener; yields (settings, metrics URL, log)."""
    port, metrics_port = free_port(), free_port()
    live = replace(settings, public_base_url=f"http://127.0.0.1:{port}", namespace="metrics-test")
    env = process_environment(live) | {
        "SANLV_METRICS_BIND": f"127.0.0.1:{metrics_port}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "SECRET_KEY": TEST_SECRET_KEY,
    }
    for name in ("DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL", "SANLV_NAMESPACE"):
        monkeypatch.setenv(name, env[name])
    log = tmp_path / "web.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "web", "web", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        yield live, f"http://127.0.0.1:{metrics_port}", log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_tree(proc)


def scrape(url: str) -> dict[str, list]:
    reply = requests.get(url + "/metrics", timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(reply.text)}


def value(families: dict[str, list], sample_name: str, **labels: str) -> float:
    found = [s.value for s in families[sample_name.removesuffix("_total").removesuffix("_bucket")
                                      .removesuffix("_count").removesuffix("_sum")]
             if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]  # fmt: skip
    assert found, (sample_name, labels)
    return sum(found)


def test_metrics_count_webhooks_answers_calls_and_worker_events(web, sessions):
    settings, metrics_url, log = web
    # A running round: one call answered and one key press stored, one call still live; one call ended.
    attempt_id = open_call(sessions, cps=3.0, max_concurrent=7)
    with sessions.begin() as session:
        round_id = session.get(CallAttempt, attempt_id).round_id  # type: ignore[union-attr]
    doc = twiml(post(settings, f"/ivr/voice?attempt={attempt_id}", base_params()))
    twiml(post(settings, gather_url(doc), base_params(Digits="1")))
    for n in range(6):  # several status callbacks: both gunicorn workers answer some
        reply = post(settings, f"/ivr/status?attempt={attempt_id}", base_params(CallStatus="in-progress",
                                                                                 SequenceNumber=str(n)))  # fmt: skip
        assert reply.status_code == 204
    assert post(settings, f"/ivr/status?attempt={attempt_id}", base_params(), sign=False).status_code == 403
    with sessions.begin() as session:
        ended = make_round(session, windows=[["00:00", "24:00"]])
        ended.status = RoundStatus.COMPLETED
        session.add(CallAttempt(round_id=ended.id, target_id=make_target(session, ended, make_household(session)).id,
                                number=1, status=CallStatus.BUSY, call_sid="CA" + "e" * 32))  # fmt: skip
    # What the workers count, as they count it.
    count(settings, DIALS, round_id, 5)
    count(settings, TWILIO_ERRORS, 21215)
    count(settings, SWEEPER_SETTLED, "completed", 2)
    enqueue(settings, "workers.sweeper.sweep", job_id="metrics-test-waiting")  # no worker: it waits

    families = scrape(metrics_url)

    assert value(families, "sanlv_webhook_responses_total", route="/ivr/status", status="204") == 6
    assert value(families, "sanlv_webhook_responses_total", route="/ivr/status", status="403") == 1
    assert value(families, "sanlv_webhook_responses_total", route="/ivr/voice", status="200") == 1
    assert value(families, "sanlv_webhook_seconds_count", route="/ivr/status") == 7
    assert value(families, "sanlv_webhook_seconds_bucket", route="/ivr/gather", le="+Inf") == 1
    assert value(families, "sanlv_answers_total") == 1
    assert value(families, "sanlv_calls_total", outcome="busy") == 1
    assert value(families, "sanlv_live_calls", round=str(round_id)) == 1
    assert value(families, "sanlv_max_concurrent", round=str(round_id)) == 7
    assert value(families, "sanlv_round_cps", round=str(round_id)) == 3.0
    assert value(families, "sanlv_round_dialling", round=str(round_id)) == 1
    assert value(families, "sanlv_dials_total", round=str(round_id)) == 5
    assert value(families, "sanlv_twilio_errors_total", code="21215") == 1
    assert value(families, "sanlv_sweeper_settled_total", outcome="completed") == 2
    assert value(families, "sanlv_queue_depth", queue="dialer") == 1
    assert 0 <= value(families, "sanlv_queue_oldest_job_seconds", queue="dialer") < 60
    assert value(families, "sanlv_ready") == 0  # no worker has a heartbeat
    assert value(families, "sanlv_ready_check", part="workers") == 0
    assert value(families, "sanlv_ready_check", part="database") == 1
    # Counted in both gunicorn workers, or at least exported as one sum whichever served: the log says both ran.
    assert len(set(re.findall(r"Booting worker with pid: (\d+)", log.read_text(errors="replace")))) == 2

    # Counts grow across scrapes.
    post(settings, f"/ivr/status?attempt={attempt_id}", base_params(CallStatus="completed", SequenceNumber="9"))
    again = scrape(metrics_url)
    assert value(again, "sanlv_webhook_responses_total", route="/ivr/status", status="204") == 7
    assert value(again, "sanlv_calls_total", outcome="completed") == 1
    assert value(again, "sanlv_live_calls", round=str(round_id)) == 0


def test_every_metric_the_alerts_use_is_exported(web, sessions):
    settings, metrics_url, _log = web
    attempt_id = open_call(sessions)
    with sessions() as session:
        round_id = session.scalar(select(CallAttempt.round_id).where(CallAttempt.id == attempt_id))
    post(settings, f"/ivr/status?attempt={attempt_id}", base_params(CallStatus="completed", SequenceNumber="0"))
    count(settings, DIALS, round_id)
    count(settings, TWILIO_ERRORS, 20429)
    count(settings, SWEEPER_SETTLED, "failed")
    reply = requests.get(metrics_url + "/metrics", timeout=30)
    samples = {s.name for family in text_string_to_metric_families(reply.text) for s in family.samples}
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    used = {name for group in rules["groups"] for rule in group["rules"]
            for name in re.findall(r"\bsanlv_[a-z_]+", rule["expr"])}  # fmt: skip
    assert used and used <= samples, used - samples


def test_the_public_listener_never_serves_metrics_and_the_metrics_listener_nothing_else(web):
    settings, metrics_url, _log = web
    public = settings.public_base_url
    for path in ("/metrics", "/metrics/", "//metrics", "/METRICS"):
        reply = requests.get(public + path, timeout=10, allow_redirects=False)
        assert reply.status_code in (302, 404), (path, reply.status_code)
        assert "sanlv_" not in reply.text
    # Forwarded headers do not make the public listener the metrics one.
    port = metrics_url.rsplit(":", 1)[1]
    reply = requests.get(public + "/metrics", timeout=10, allow_redirects=False,
                         headers={"X-Forwarded-Port": port, "X-Forwarded-Host": f"127.0.0.1:{port}",
                                  "Host": f"127.0.0.1:{port}"})  # fmt: skip
    assert "sanlv_" not in reply.text
    for path in ("/readyz", "/healthz", "/", "/ivr/status", "/login"):
        assert requests.get(metrics_url + path, timeout=10).status_code == 404, path
    assert requests.post(metrics_url + "/metrics", timeout=10).status_code == 404
