"""`sanlv demo` end to end, on the in-process Redis stand-in (no Redis answers at REDIS_URL)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner

from web.cli import main


def test_demo_runs_a_round_to_its_report_without_redis(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SANLV_", "DATABASE_URL"))}
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there: the demo must fall back to fakeredis
    result = subprocess.run(
        [sys.executable, "-m", "web", "demo", "--households", "40", "--villages", "8", "--dir", str(tmp_path),
         "--timeout", "100"],
        env=env, capture_output=True, timeout=150, cwd=tmp_path,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "fakeredis" in out
    assert "结束 40/40" in out  # every target reached a final state
    assert "各村三率" in out and "全镇" in out
    for village in ("东山村", "西溪村", "南坪村", "北岭村", "上洋村", "下坂村", "溪口村", "桥头村"):
        assert village in out
    assert (tmp_path / "sanlv-demo.db").exists() and (tmp_path / "roster-gbk.csv").exists()


def test_the_demo_without_redis_or_fakeredis_says_to_install_the_demo_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fakeredis", None)  # not installed: importing it raises ImportError
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    for name in ("DATABASE_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "SANLV_TELEPHONY"):
        monkeypatch.delenv(name, raising=False)

    result = CliRunner().invoke(main, ["demo", "--households", "10", "--villages", "2", "--dir", str(tmp_path)])

    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "sanlv[demo]" in lines[0] and "redis://127.0.0.1:1/0" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_demo_serve_keeps_the_web_app_running_with_demo_logins(tmp_path):
    """``--serve``: after the round, the printed URL answers, each printed login signs in, Ctrl-C/SIGTERM stops."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SANLV_", "DATABASE_URL"))}
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # the in-process stand-in: the quickest start
    proc = subprocess.Popen(
        [sys.executable, "-m", "web", "demo", "--households", "20", "--villages", "2", "--dir", str(tmp_path),
         "--timeout", "100", "--serve"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 150
        while not any("demo-cadre" in line for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        out = "".join(lines)
        url = re.search(r"(http://127\.0\.0\.1:\d+)/login", out).group(1)
        logins = dict(re.findall(r"用户名 (demo-\w+)\s+密码 (\S+)", out))
        assert set(logins) == {"demo-admin", "demo-jiwei", "demo-cadre"}
        for username, home in (("demo-admin", "/"), ("demo-jiwei", "/supervisor"), ("demo-cadre", "/my")):
            browser = requests.Session()
            token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get(f"{url}/login").text).group(1)
            signed = browser.post(
                f"{url}/login",
                data={"username": username, "password": logins[username], "csrf_token": token},
                allow_redirects=False,
            )
            assert signed.status_code == 302 and signed.headers["Location"] == home, username
            assert browser.get(f"{url}{home}").status_code == 200, username
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=2)
