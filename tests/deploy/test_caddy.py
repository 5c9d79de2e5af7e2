"""deploy/Caddyfile, served by a real Caddy in front of a recording backend.

The Caddyfile is adapted as it is; for the test only its site address is plain HTTP on a loopback port
(SANLV_DOMAIN accepts any site address), its upstream (``web:8000`` unless SANLV_UPSTREAM says otherwise, as on
a VM) is the backend, and its admin API is off (runs in parallel must not share port 2019). Skipped where Caddy is not installed
(``apt-get install caddy``).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "deploy" / "Caddyfile"
CADDY = shutil.which("caddy")
pytestmark = pytest.mark.skipif(CADDY is None, reason="caddy is not installed (apt-get install caddy)")


def adapt(tmp_path: Path, **env: str) -> dict:
    """The Caddyfile as Caddy reads it with ``env`` (and none of the caller's own SANLV_* variables)."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("SANLV_")}
    result = subprocess.run(
        [CADDY, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env={**inherited, "HOME": str(tmp_path), **env}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def handlers(config: object) -> list[dict]:
    """Every handler object anywhere in an adapted config."""
    found = []
    if isinstance(config, dict):
        if "handler" in config:
            found.append(config)
        for value in config.values():
            found += handlers(value)
    elif isinstance(config, list):
        for value in config:
            found += handlers(value)
    return found


class Backend(http.server.BaseHTTPRequestHandler):
    seen: list[dict] = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        type(self).seen.append({"path": self.path, "headers": dict(self.headers), "size": len(body)})
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"backend")

    do_GET = do_POST = _answer  # noqa: N815 - http.server's names

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy(tmp_path):
    """Caddy on a loopback port with the real Caddyfile, in front of :class:`Backend`; uploads capped at 1 MiB."""
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    Backend.seen = []
    port = free_port()
    config = adapt(tmp_path, SANLV_DOMAIN=f"http://127.0.0.1:{port}", SANLV_MAX_UPLOAD_MB="1",
                   SANLV_UPSTREAM=f"127.0.0.1:{backend.server_address[1]}")
    config["admin"] = {"disabled": True}
    path = tmp_path / "caddy.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    log = (tmp_path / "caddy.log").open("wb")
    proc = subprocess.Popen(
        [CADDY, "run", "--config", str(path)],
        env={**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(base + "/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, (tmp_path / "caddy.log").read_text()
                assert time.monotonic() < deadline, "caddy did not start"
                time.sleep(0.2)
        Backend.seen = []
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        backend.shutdown()
        backend.server_close()


def test_the_public_site_gets_automatic_https_in_front_of_the_web_service(tmp_path):
    config = adapt(tmp_path, SANLV_DOMAIN="survey.example.cn")
    proxies = [h for h in handlers(config) if h["handler"] == "reverse_proxy"]
    assert [u["dial"] for h in proxies for u in h["upstreams"]] == ["web:8000"]
    server = config["apps"]["http"]["servers"]["srv0"]
    assert server["listen"] == [":443"]
    assert server["routes"][0]["match"] == [{"host": ["survey.example.cn"]}]
    assert "automatic_https" not in server  # not disabled: Caddy obtains and renews the certificate


def test_requests_reach_the_app_with_the_original_host_and_forwarded_headers(proxy):
    host = proxy.removeprefix("http://")
    # A client's own X-Forwarded-For is not believed: Caddy is the edge.
    reply = requests.post(proxy + "/ivr/voice?attempt=7", data={"Digits": "1"},
                          headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example"}, timeout=5)
    assert reply.status_code == 200 and reply.text == "backend"
    (seen,) = Backend.seen
    assert seen["path"] == "/ivr/voice?attempt=7"
    assert seen["headers"]["Host"] == host
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert seen["headers"]["X-Forwarded-Proto"] == "http"  # https in production
    assert seen["headers"]["X-Forwarded-Host"] == host
    assert "Server" not in reply.headers and reply.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/METRICS", "//metrics", "/metrics?name=x", "/%6detrics"])
def test_metrics_are_never_served_through_the_proxy(proxy, path):
    reply = requests.get(proxy + path, timeout=5)
    assert reply.status_code == 404
    assert Backend.seen == []


def test_bodies_over_the_upload_limit_are_refused_before_the_app(proxy):
    small = requests.post(proxy + "/roster/import", data=b"x" * (1024 * 1024 - 1024), timeout=10)
    assert small.status_code == 200 and Backend.seen[-1]["size"] == 1024 * 1024 - 1024
    big = requests.post(proxy + "/roster/import", data=b"x" * (1024 * 1024 + 1), timeout=10)
    # 413 since Caddy 2.7 (the caddy:2 image); older Caddy (Debian 12 has 2.6) answered 502 (caddy#5652).
    assert big.status_code in ((413,) if _caddy_version() >= (2, 7) else (413, 502))
    assert all(seen["size"] <= 1024 * 1024 for seen in Backend.seen)  # the app never got the whole body


def _caddy_version() -> tuple[int, int]:
    out = subprocess.run([CADDY, "version"], capture_output=True, text=True, timeout=30).stdout
    major, minor = out.strip().lstrip("v").split(".")[:2]
    return int(major), int(minor)
