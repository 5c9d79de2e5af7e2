"""The package arrows hold: import-linter's contracts in pyproject.toml, checked on the tree as it is, and
shown to bite on a copy of the tree with one wrong import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("campaigns", "ivr", "reports", "workers", "web", "sim")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # The tree at ``root`` comes first on the path, so the copy is analysed, not the installed packages.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_the_tree_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "broken"),
    [
        ("campaigns/clock.py", "import reports.rates", "Layers"),
        ("reports/stats.py", "import web.app", "Layers"),
        ("workers/limiter.py", "import ivr.twiml", "Layers"),
        ("web/app.py", "import sim.network", "never imports sim"),
        ("workers/queues.py", "import workers.runner", "No import cycle"),
    ],
)
def test_a_wrong_arrow_breaks_a_contract(tmp_path: Path, module: str, wrong_import: str, broken: str) -> None:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / module, "a", encoding="utf-8") as handle:
        handle.write(f"\n{wrong_import}  # noqa\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0
    broken_lines = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(broken in line for line in broken_lines), result.stdout
