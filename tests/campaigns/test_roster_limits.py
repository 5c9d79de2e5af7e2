"""Roster files have limits: the file's size, its data rows, and what an XLSX file unpacks to. Each is
checked before the rows are read (the header first of all), each breach names its limit and the setting that
moves it, and nothing is imported."""

from __future__ import annotations

import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from campaigns.models import Household
from campaigns.roster import MB, RosterError, RosterLimits, import_roster, read_roster
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings, load_settings
from tests.campaigns.test_roster import ROWS, write_csv, write_xlsx


def many_rows(count: int) -> list[tuple[str, ...]]:
    return [("城关村", f"户{n}", f"1381234{n:04d}", "李四", "") for n in range(count)]


def households(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Household))


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "big.csv", many_rows(400))

    with pytest.raises(RosterError) as caught:
        read_roster(path, RosterLimits(max_bytes=4096))

    assert caught.value.kind == "file"
    assert "over the limit of 0 MB (SANLV_ROSTER_MAX_MB)" in caught.value.summary()
    assert read_roster(path, RosterLimits())[2] == 400  # the defaults take it


def test_more_rows_than_the_limit_are_refused_naming_the_line(tmp_path: Path, session) -> None:
    path = write_csv(tmp_path / "rows.csv", many_rows(6))

    with pytest.raises(RosterError) as caught:
        import_roster(session, path, limits=RosterLimits(max_rows=5))

    summary = caught.value.summary()
    assert "more than 5 data rows, the limit (SANLV_ROSTER_MAX_ROWS; line 7)" in summary
    assert "数据行超过上限 5 行" in summary
    assert session.scalar(select(func.count()).select_from(Household)) == 0
    assert import_roster(session, path, limits=RosterLimits(max_rows=6), dry_run=True).rows == 6


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_the_header_is_checked_before_the_rows(tmp_path: Path, kind: str) -> None:
    header = ("村", "电话号码呀", "包户干部")
    rows = many_rows(50)
    path = (write_csv if kind == "csv" else write_xlsx)(tmp_path / f"bad.{kind}", rows, header=header)

    with pytest.raises(RosterError) as caught:
        read_roster(path, RosterLimits(max_rows=10))  # over the row limit too: the header is said first

    assert caught.value.kind == "header"


def xlsx_bomb(path: Path, unpacked_mb: int) -> Path:
    """A real roster workbook with one more part that unpacks to ``unpacked_mb`` MB of zeros (a few kB packed)."""
    write_xlsx(path, ROWS)
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("xl/media/padding.bin", "w", force_zip64=True) as part,
    ):
        chunk = bytes(MB)
        for _ in range(unpacked_mb):
            part.write(chunk)
    return path


def test_an_xlsx_that_unpacks_past_the_limit_is_refused_without_unpacking(tmp_path: Path) -> None:
    path = xlsx_bomb(tmp_path / "bomb.xlsx", 260)
    assert path.stat().st_size < 2 * MB  # small on disk: under the file size limit

    started = time.monotonic()
    with pytest.raises(RosterError) as caught:
        read_roster(path)  # the default limits
    elapsed = time.monotonic() - started

    summary = caught.value.summary()
    assert "the XLSX file unpacks to 260 MB, over the limit of 200 MB (SANLV_ROSTER_MAX_XLSX_MB)" in summary
    assert "XLSX 文件解压后有 260 MB" in summary
    assert elapsed < 2.0, f"took {elapsed:.1f} s: the parts were unpacked"
    assert read_roster(path, RosterLimits(max_xlsx_bytes=300 * MB))[2] == 3  # the roster itself is fine


def test_the_limits_come_from_the_settings() -> None:
    settings = load_settings({"SANLV_ROSTER_MAX_MB": "5", "SANLV_ROSTER_MAX_ROWS": "1000",
                              "SANLV_ROSTER_MAX_XLSX_MB": "50"})  # fmt: skip

    assert RosterLimits.from_settings(settings) == RosterLimits(5 * MB, 1000, 50 * MB)
    assert RosterLimits.from_settings(Settings()) == RosterLimits()


def test_the_command_line_names_the_breached_limit(env: Settings, tmp_path: Path, sessions) -> None:
    from web.cli import main

    set_runtime(Runtime(replace(env, roster_max_rows=2)))  # as SANLV_ROSTER_MAX_ROWS=2 would
    path = write_csv(tmp_path / "名单.csv", ROWS)

    result = CliRunner().invoke(main, ["roster", "import", str(path)])

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: 名单.csv: more than 2 data rows, the limit (SANLV_ROSTER_MAX_ROWS; line 4); split it into several"
        " files, nothing imported (导入失败: 数据行超过上限 2 行 (SANLV_ROSTER_MAX_ROWS, 第4行); 请分成几个文件导入,"
        " 未导入任何数据)"
    )
    assert households(sessions) == 0


def test_a_do_not_call_file_keeps_the_roster_limits(env: Settings, tmp_path: Path, sessions) -> None:
    from campaigns.models import DoNotCall
    from web.cli import main

    set_runtime(Runtime(replace(env, roster_max_rows=2)))  # as SANLV_ROSTER_MAX_ROWS=2 would
    path = tmp_path / "免打扰.csv"
    path.write_text("电话\n13800000001\n13800000002\n13800000003\n", encoding="utf-8")

    result = CliRunner().invoke(main, ["dnc", "import", str(path)])

    assert result.exit_code == 1
    assert "more than 2 rows, the limit (SANLV_ROSTER_MAX_ROWS; line 4)" in result.stderr.splitlines()[-1]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DoNotCall)) == 0
