"""``sanlv roster import`` through click: exit codes, what goes to stdout and stderr, and what is written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from campaigns.models import Household
from campaigns.settings import Settings
from tests.campaigns.test_roster import ROWS, write_csv, write_xlsx


def sanlv() -> tuple[click.Group, list[str]]:
    """The console script's group, or the roster group alone while ``ivr.commands`` is still being written."""
    try:
        from web.cli import main
    except ModuleNotFoundError:
        from campaigns.cli import roster_group

        return roster_group, ["import"]
    return main, ["roster", "import"]


def roster_import(*args: str) -> Result:
    group, prefix = sanlv()
    return CliRunner().invoke(group, [*prefix, *args])


def household_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Household)) or 0


def stderr_lines(result: Result) -> Sequence[str]:
    return [line for line in result.stderr.splitlines() if line]


def test_import_prints_a_summary_and_writes(env: Settings, tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(tmp_path / "花名册.csv", ROWS, encoding="gbk")

    result = roster_import(str(path))

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "花名册.csv: 3 rows; 3 households created, 0 updated, 0 unchanged; 2 villages and 2 cadres created "
        "(导入完成: 共3行, 新增3户, 更新0户, 0户不变, 新建2个村、2名干部)"
    )
    assert household_count(sessions) == 3

    again = roster_import(str(path))

    assert again.exit_code == 0, again.output
    assert "0 households created, 0 updated, 3 unchanged" in again.stdout
    assert household_count(sessions) == 3


def test_bad_rows_exit_non_zero_list_each_and_import_nothing(
    env: Settings, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    path = write_xlsx(
        tmp_path / "r.xlsx",
        [
            ("城关村", "张三", 13812345678, "李四", None),
            ("城关村", "王五", 12345, "李四", None),
            (None, "赵六", 13812345679, "李四", None),
        ],
    )

    result = roster_import(str(path))

    assert result.exit_code != 0
    assert result.stdout == ""
    assert stderr_lines(result) == [
        "第3行 电话 '12345': 号码位数或号段不正确 / "
        "line 3, column 电话 '12345': not a valid number (wrong length or prefix)",
        "第4行 村: 村名为空 / line 4, column 村: the village is missing",
        "Error: r.xlsx: 2 bad rows, nothing imported (导入失败: 2行有误, 未导入任何数据)",
    ]
    assert household_count(sessions) == 0


def test_bad_header_exits_non_zero(env: Settings, tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(tmp_path / "r.csv", [("1", "城关村", "13812345678")], header=("序号", "村", "电话"))

    result = roster_import(str(path), "--skip-invalid")

    assert result.exit_code != 0
    lines = stderr_lines(result)
    assert lines[0].startswith("第1行 序号: 无法识别的列名")
    assert lines[1] == "第1行: 缺少必需的列: 包户干部/cadre / line 1: missing required column: 包户干部/cadre"
    assert lines[-1].startswith("Error: r.csv: 2 problems in the header row, nothing imported")
    assert household_count(sessions) == 0


def test_missing_file_exits_non_zero_with_one_line(env: Settings, tmp_path: Path) -> None:
    result = roster_import(str(tmp_path / "nope.csv"))

    assert result.exit_code != 0
    assert (
        stderr_lines(result)[-1]
        == "Error: nope.csv: no such file, nothing imported (导入失败: 文件不存在, 未导入任何数据)"
    )


def test_skip_invalid_imports_the_good_rows_and_lists_the_skipped(
    env: Settings, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    path = write_csv(tmp_path / "r.csv", [*ROWS, ("城关村", "坏号", "12345", "李四", "")])

    result = roster_import(str(path), "--skip-invalid")

    assert result.exit_code == 0, result.output
    assert stderr_lines(result) == [
        "skipped: 第5行 电话 '12345': 号码位数或号段不正确 / "
        "line 5, column 电话 '12345': not a valid number (wrong length or prefix)"
    ]
    assert "3 households created" in result.stdout and "1 row skipped" in result.stdout
    assert household_count(sessions) == 3


@pytest.mark.parametrize("extra", [[], ["--skip-invalid"]])
def test_dry_run_reports_and_writes_nothing(
    env: Settings, tmp_path: Path, sessions: sessionmaker[Session], extra: list[str]
) -> None:
    path = write_csv(tmp_path / "r.csv", ROWS, encoding="utf-8-sig")

    result = roster_import(str(path), "--dry-run", *extra)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("r.csv: dry run, nothing written: 3 rows; would create 3 households")
    assert household_count(sessions) == 0
