"""`sanlv demo` end to end, on the in-process Redis stand-in (no Redis answers at REDIS_URL)."""

from __future__ import annotations

import os
import subprocess
import sys


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
