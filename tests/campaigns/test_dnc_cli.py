"""``sanlv dnc ...`` and ``sanlv roster import --replace`` through the console script, on the real database."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sqlalchemy import func, select

from campaigns.models import AuditEntry, DncAction, DncSource, DoNotCall, DoNotCallEvent, Household, RoundTarget
from campaigns.rounds import RoundOptions, create_round
from campaigns.settings import Settings
from tests.campaigns.test_cli import one_line_error, sanlv


def write(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_add_list_and_remove(env: Settings, sessions) -> None:
    added = sanlv("dnc", "add", "138 1234 5678", "--reason", "居民来电要求")
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith("138****5678 added")
    assert "already on the do-not-call list" in one_line_error(sanlv("dnc", "add", "13812345678", "--reason", "x"))
    assert "a reason is required" in one_line_error(sanlv("dnc", "add", "13900000000", "--reason", ""))
    assert "号码" in one_line_error(sanlv("dnc", "add", "12345", "--reason", "x"))
    sanlv("dnc", "add", "13900001234", "--reason", "=HYPERLINK(\"http://x\")")

    listed = sanlv("dnc", "list", "--format", "csv")
    assert listed.exit_code == 0, listed.output
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert [(r["phone"], r["source"], r["reason"]) for r in rows] == [
        ("139****1234", "office", "'=HYPERLINK(\"http://x\")"),  # a formula is neutralised
        ("138****5678", "office", "居民来电要求"),
    ]
    assert all(r["added_by"].startswith("cli:") for r in rows)
    text = sanlv("dnc", "list")
    assert "2 numbers on the do-not-call list" in text.stdout and "13812345678" not in text.stdout

    assert "not on the do-not-call list" in one_line_error(sanlv("dnc", "remove", "13700000000", "--reason", "x"))
    removed = sanlv("dnc", "remove", "+8613812345678", "--reason", "居民本人要求参加调查")
    assert removed.exit_code == 0, removed.output
    with sessions() as session:
        assert session.scalars(select(DoNotCall.phone)).all() == ["+8613900001234"]
        events = session.execute(
            select(DoNotCallEvent.action, DoNotCallEvent.reason, DoNotCallEvent.phone_masked).order_by(DoNotCallEvent.id)
        ).all()
        assert events[-1] == (DncAction.REMOVED, "居民本人要求参加调查", "138****5678")
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions == ["dnc.add", "dnc.add", "dnc.remove"]


def test_import_is_all_or_nothing_and_names_each_bad_row(env: Settings, sessions, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.csv", [["电话", "原因"], ["13800000001", "来电"], ["12345", ""], ["abc", "x"]], "gbk")
    result = sanlv("dnc", "import", str(bad))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("第3行 电话 '12345'") and lines[1].startswith("第4行 电话 'abc'")
    assert lines[-1] == "Error: bad.csv: 2 bad rows, nothing imported (导入失败: 2行有误, 未导入任何数据)"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DoNotCall)) == 0

    sanlv("dnc", "add", "13800000002", "--reason", "已有")
    good = write(
        tmp_path / "list.csv", [["phone", "reason"], ["13800000001", "来电"], ["13800000002", ""], ["138 0000 0001", ""],
                                ["13800000003", ""]],
    )  # fmt: skip
    result = sanlv("dnc", "import", str(good))
    assert result.exit_code == 0, result.output
    assert "2 added to the do-not-call list, 1 already on it, 1 repeated" in result.stdout
    with sessions() as session:
        entries = {e.phone: (e.source, e.reason) for e in session.scalars(select(DoNotCall))}
    assert entries == {
        "+8613800000001": (DncSource.IMPORT, "来电"),
        "+8613800000002": (DncSource.OFFICE, "已有"),
        "+8613800000003": (DncSource.IMPORT, "imported from list.csv"),
    }
    bare = write(tmp_path / "bare.csv", [["13800000009"]])
    assert "1 added" in sanlv("dnc", "import", str(bare)).stdout


# --- roster import --replace --------------------------------------------------------------------------------

HEADER = ["村", "户主", "电话", "包户干部"]
FULL = [["东村", "张三", "13811110001", "林建明"], ["东村", "李四", "13811110002", "林建明"],
        ["西村", "王五", "13811110003", "陈志强"]]  # fmt: skip


def test_replace_retires_households_a_full_roster_no_longer_lists(env: Settings, sessions, tmp_path: Path) -> None:
    assert sanlv("roster", "import", str(write(tmp_path / "full.csv", [HEADER, *FULL]))).exit_code == 0
    with sessions() as session:
        first = create_round(session, RoundOptions(name="第一轮"))
        session.commit()
        first_id = first.id
    smaller = write(tmp_path / "new.csv", [HEADER, *FULL[:2]])

    dry = sanlv("roster", "import", str(smaller), "--replace", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would retire: 西村 王五 138****0003" in dry.stdout
    assert "would retire 1 household the file does not list" in dry.stdout
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Household).where(Household.retired_at.is_not(None))) == 0

    assert "cannot be combined with --skip-invalid" in one_line_error(
        sanlv("roster", "import", str(smaller), "--replace", "--skip-invalid")
    )
    done = sanlv("roster", "import", str(smaller), "--replace")
    assert done.exit_code == 0, done.output
    assert "retired: 西村 王五 138****0003" in done.stdout
    with sessions() as session:
        retired = session.scalar(select(Household).where(Household.phone == "+8613811110003"))
        assert retired is not None and retired.retired_at is not None  # kept, with its history
        assert session.scalar(select(func.count()).select_from(RoundTarget).where(RoundTarget.round_id == first_id)) == 3
        second = create_round(session, RoundOptions(name="第二轮"))
        sampled = session.scalars(select(RoundTarget.phone).where(RoundTarget.round_id == second.id)).all()
        assert sorted(sampled) == ["+8613811110001", "+8613811110002"]
        session.rollback()

    # Without --replace, a roster leaves missing households alone; with it, a listed retired one comes back.
    assert "retire" not in sanlv("roster", "import", str(smaller)).stdout
    back = sanlv("roster", "import", str(write(tmp_path / "again.csv", [HEADER, *FULL])), "--replace")
    assert "retired 0 households the file does not list, 1 retired listed again" in back.stdout
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Household).where(Household.retired_at.is_not(None))) == 0
