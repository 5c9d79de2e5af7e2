"""`sanlv demo` end to end, on the in-process Redis stand-in (no Redis answers at REDIS_URL)."""

from __future__ import annotations

import os
import subprocess
import sys

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
