"""docker-compose.yml: only Caddy is published, volumes and healthchecks are there, every variable is listed.

There is no Docker engine here: the file is read as YAML, its healthcheck commands are run against real
servers (an HTTP server for the web check, a real ``sanlv worker`` and Redis for the worker check), and the
installed compose command validates it (deploy/check-compose, which CI runs too).
"""

from __future__ import annotations

import ast
import http.server
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.support.workers import start_workers, stop_workers

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
APP_SERVICES = ("migrate", "web", "worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def env_example_names() -> list[str]:
    """Every variable .env.example lists, set (``KEY=``) or shown with its default (``#KEY=``)."""
    return re.findall(r"^#?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(encoding="utf-8"), flags=re.MULTILINE)


def settings_variable_names() -> set[str]:
    """Every environment variable campaigns/settings.py names (a string constant shaped like one)."""
    tree = ast.parse((ROOT / "campaigns" / "settings.py").read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"(SANLV|TWILIO)_[A-Z0-9_]+|DATABASE_URL|REDIS_URL|PUBLIC_BASE_URL|SECRET_KEY", node.value)
    }


def test_only_caddy_publishes_ports(compose):
    published = {name for name, service in services(compose).items() if service.get("ports")}
    assert published == {"caddy"}
    caddy = services(compose)["caddy"]
    assert caddy["image"].startswith("caddy:2")
    assert {str(port).split(":")[0] for port in caddy["ports"]} == {"80", "443"}
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert (ROOT / "deploy" / "Caddyfile").is_file()


def test_web_listens_on_the_compose_network_only(compose):
    web = services(compose)["web"]
    assert "ports" not in web
    assert [str(port) for port in web["expose"]] == ["8000"]
    command = web["command"]
    assert command[0] == "web" and command[command.index("--port") + 1] == "8000"


def test_volumes_keep_the_database_redis_recordings_and_caddys_certificates(compose):
    declared = set(compose["volumes"])
    mounts = {
        name: {str(v).split(":")[0]: str(v).split(":")[1] for v in service.get("volumes", [])}
        for name, service in services(compose).items()
    }
    assert mounts["postgres"]["pgdata"] == "/var/lib/postgresql/data"
    assert mounts["redis"]["redisdata"] == "/data"
    assert mounts["caddy"]["caddy_data"] == "/data" and mounts["caddy"]["caddy_config"] == "/config"
    recordings = services(compose)["web"]["environment"]["SANLV_RECORDINGS_DIR"]
    assert mounts["web"]["recordings"] == recordings and mounts["worker"]["recordings"] == recordings
    named = {source for mount in mounts.values() for source in mount if not source.startswith(".")}
    assert named <= declared and {"pgdata", "redisdata", "recordings", "caddy_data", "caddy_config"} <= declared


def test_redis_keeps_an_append_only_file(compose):
    command = services(compose)["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_the_app_gets_its_database_redis_secrets_and_public_url(compose):
    subnet = ipaddress.ip_network(compose["networks"]["sanlv"]["ipam"]["config"][0]["subnet"])
    caddy_ip = ipaddress.ip_address(services(compose)["caddy"]["networks"]["sanlv"]["ipv4_address"])
    assert caddy_ip in subnet
    for name in APP_SERVICES:
        env = services(compose)[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://sanlv:") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["PUBLIC_BASE_URL"].startswith("https://${SANLV_DOMAIN")
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")
        # Forwarded headers are trusted from Caddy alone.
        assert [ipaddress.ip_address(a) for a in env["SANLV_TRUSTED_PROXIES"].split(",")] == [caddy_ip]
        assert services(compose)[name]["networks"] == ["sanlv"]


def test_web_healthcheck_asks_readyz_and_workers_have_one_too(compose):
    web_check = services(compose)["web"]["healthcheck"]["test"]
    assert web_check[0] == "CMD" and "http://127.0.0.1:8000/readyz" in web_check[-1]
    worker = services(compose)["worker"]
    assert worker["healthcheck"]["test"][0] == "CMD"
    assert worker["restart"] == "unless-stopped" and worker["deploy"]["replicas"] >= 2
    # Workers do not wait for the web app: its readiness needs a worker heartbeat.
    assert set(worker["depends_on"]) == {"migrate", "redis"}


class _Status(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"database: ok")

    def log_message(self, *args):
        pass


def test_web_healthcheck_command_passes_on_200_and_fails_on_503(compose):
    command = services(compose)["web"]["healthcheck"]["test"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    code = command[-1].replace("127.0.0.1:8000", f"127.0.0.1:{server.server_address[1]}")
    try:
        _Status.status = 200
        ok = subprocess.run([sys.executable, *command[2:-1], code], capture_output=True, timeout=30)
        _Status.status = 503
        failing = subprocess.run([sys.executable, *command[2:-1], code], capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert command[1] == "python"
    assert ok.returncode == 0, ok.stderr.decode()
    assert failing.returncode != 0 and b"503" in failing.stderr
    assert _Status.paths == ["/readyz", "/readyz"]


def test_worker_healthcheck_passes_only_while_a_worker_of_this_host_is_registered(compose, env, redis_url, tmp_path):
    command = services(compose)["worker"]["healthcheck"]["test"]
    assert command[1] == "python"
    child_env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def check() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *command[2:]], env=child_env, cwd=tmp_path, capture_output=True,
                              timeout=60)

    assert check().returncode == 1  # no worker yet
    workers = start_workers(1, child_env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while (result := check()).returncode != 0:
            assert workers[0].poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, result.stderr.decode()
            time.sleep(0.5)
    finally:
        stop_workers(workers)
    assert check().returncode == 1  # a worker that stopped unregisters


def test_env_example_lists_every_variable_the_settings_read():
    listed = set(env_example_names())
    missing = settings_variable_names() - listed
    assert not missing, f".env.example lacks {sorted(missing)}"
    # The ones being added with issue #13 and its siblings are there already.
    assert {
        "SANLV_SESSION_IDLE_MINUTES", "SANLV_SESSION_MAX_HOURS", "SANLV_TRUSTED_PROXIES", "SANLV_LOG_FORMAT",
        "SANLV_RETENTION_DAYS", "SANLV_METRICS_BIND",
    } <= listed


def test_env_example_describes_each_variable_once_and_holds_no_secret():
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    names = env_example_names()
    assert len(names) == len(set(names)), "a variable is listed twice"
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^#?[A-Z][A-Z0-9_]*=", line):
            above = lines[index - 1]
            assert above.startswith("# ") or re.match(r"^#?[A-Z][A-Z0-9_]*=", above), f"no description: {line}"
    for secret in ("SECRET_KEY", "POSTGRES_PASSWORD", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID"):
        assert re.search(rf"^{secret}=$", text, flags=re.MULTILINE), f"{secret} must be left empty"


def test_compose_passes_on_every_listed_variable():
    text = COMPOSE.read_text(encoding="utf-8")
    for name in env_example_names():
        assert re.search(rf"\b{name}\b", text), f"docker-compose.yml never uses {name}"


def test_compose_config_accepts_the_file():
    if not (shutil.which("docker-compose") or _docker_compose_v2()):
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)")
    script = ROOT / "deploy" / "check-compose"
    accepted = subprocess.run([str(script)], capture_output=True, text=True, timeout=120)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    # The check bites: a required value left empty is refused, naming it.
    refused = subprocess.run([str(script)], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "SANLV_DOMAIN": ""})
    assert refused.returncode != 0 and "SANLV_DOMAIN" in refused.stderr


def _docker_compose_v2() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
