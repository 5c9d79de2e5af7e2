"""Exports read back: CSV with its BOM, XLSX with openpyxl (formats, fills, frozen header, sheets), the HTML
meeting report (charts, masked phones, nothing external)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from sqlalchemy.orm import Session

from campaigns.followups import sync_followups
from campaigns.models import RoundStatus
from reports.cli import report_group
from reports.followups import followup_report
from reports.html import render_rates_html
from reports.rates import village_rates
from reports.render import render_bytes
from tests.factories import interview_answers, make_interview, make_round, make_village
from tests.reports.scenarios import visits_township

RATE_LABELS = ["群众安全感率", "执法满意率", "平安建设知晓率", "平安建设参与率", "干部联系率(重视率)"]
BAD_FILL = "FFC7CE"


@pytest.fixture
def rated(session: Session):
    """东村: 20 interviews, every rate met except awareness (18/20 < 95%). 西村: 2 interviews (too few), all
    positive. 北村: sampled, nobody completed."""
    round_ = make_round(session, name="2026年上半年", status=RoundStatus.COMPLETED)
    east, west, north = (make_village(session, name=n) for n in ("东村", "西村", "北村"))
    for i in range(20):
        make_interview(session, round_, interview_answers(awareness="2" if i < 2 else "1"), village=east)
    for _ in range(2):
        make_interview(session, round_, interview_answers(), village=west)
    make_interview(session, round_, {"consent": "2"}, village=north, status="refused")
    session.flush()
    return round_


def run(*args: str):
    result = CliRunner().invoke(report_group, list(args))
    assert result.exit_code == 0, result.output
    return result


def fill_of(cell) -> str | None:
    if cell.fill is None or cell.fill.fill_type != "solid":
        return None
    return cell.fill.fgColor.rgb[-6:]


# --- rates ----------------------------------------------------------------------------------------------


def test_rates_csv_has_a_bom_and_every_figure(session: Session, rated, env, tmp_path: Path) -> None:
    round_id = rated.id
    session.commit()
    path = tmp_path / "rates.csv"

    run("rates", str(round_id), "--format", "csv", "--output", str(path))
    stdout = run("rates", str(round_id), "--format", "csv").stdout

    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw.decode("utf-8-sig").replace("\r\n", "\n") == stdout.removeprefix("\ufeff")  # click's output: \n
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [row["村"] for row in rows] == ["东村", "北村", "西村", "全镇"]
    east = rows[0]
    assert (east["抽样"], east["完成"], east["应答率"]) == ("20", "20", "100.0%")
    assert (east["平安建设知晓率比率"], east["平安建设知晓率肯定"], east["平安建设知晓率有效"]) == ("90.0%", "18", "20")
    assert (east["平安建设知晓率目标"], east["平安建设知晓率达标"], east["平安建设知晓率样本不足"]) == (
        "95.0%",
        "否",
        "否",
    )
    # 0.69898 and 0.97208: percentages in the CSV are rounded down, like the terminal table's.
    assert (east["平安建设知晓率95%下限"], east["平安建设知晓率95%上限"]) == ("69.8%", "97.2%")
    assert rows[2]["群众安全感率样本不足"] == "是"
    assert rows[1]["群众安全感率比率"] == ""  # no valid answers
    assert rows[3]["抽样"] == "23"


def test_rates_xlsx_sheets_formats_highlights_and_frozen_headers(session: Session, rated, env, tmp_path: Path) -> None:
    round_id = rated.id
    report = village_rates(session, round_id).to_json()
    session.commit()
    path = tmp_path / "rates.xlsx"

    run("rates", str(round_id), "--format", "xlsx", "--output", str(path))

    book = load_workbook(path)
    assert book.sheetnames == ["各村三率", "指标明细", "调查进度", "排名与问责", "说明"]
    for sheet in book.worksheets:
        assert sheet.freeze_panes in ("B2", "C2", "A2")
        assert all(cell.font.bold for cell in sheet[1])
    summary = book["各村三率"]
    assert summary.freeze_panes == "B2"
    assert [c.value for c in summary[1]] == ["村", "抽样", "完成", *RATE_LABELS, "不满意答复", "样本不足"]
    rows = {row[0].value: row for row in summary.iter_rows(min_row=2)}
    assert list(rows) == ["东村", "北村", "西村", "全镇"]
    awareness = rows["东村"][5]
    assert awareness.value == pytest.approx(0.9)
    assert awareness.number_format == "0.0%"
    assert fill_of(awareness) == BAD_FILL  # below the 95% target
    security = rows["东村"][3]
    assert (security.value, security.number_format, fill_of(security)) == (1.0, "0.0%", None)
    assert rows["北村"][3].value is None and fill_of(rows["北村"][3]) is None
    assert rows["西村"][-1].value == "是"
    # Every rate cell agrees with the report, and is highlighted exactly when below target.
    for entry in [*report["villages"], report["total"]]:
        for index, key in enumerate(report["round"]["rate_labels"]):
            cell = rows[entry["village"]][3 + index]
            figures = entry["rates"][key]
            assert cell.value == (pytest.approx(figures["rate"]) if figures["rate"] is not None else None)
            assert (fill_of(cell) == BAD_FILL) == (figures["rate"] is not None and not figures["meets_target"])
    details = book["指标明细"]
    header = [c.value for c in details[1]]
    east_awareness = next(
        r for r in details.iter_rows(min_row=2, values_only=True) if r[:2] == ("东村", "平安建设知晓率")
    )
    assert dict(zip(header, east_awareness, strict=True)) == {
        "村": "东村",
        "指标": "平安建设知晓率",
        "肯定": 18,
        "有效": 20,
        "比率": pytest.approx(0.9),
        "目标": pytest.approx(0.95),
        "达标": "否",
        "95%下限": pytest.approx(0.6990, abs=1e-4),
        "95%上限": pytest.approx(0.9721, abs=1e-4),
        "说不清": 0,
        "说不清占比": 0,
        "否定": 2,
        "排名": 2,
        "样本不足": "否",
    }
    progress = book["调查进度"]
    assert [c.value for c in progress[1]][:7] == ["村", "抽样", "已拨打", "接通", "完成", "其中呼入完成", "拒访"]
    north = next(r for r in progress.iter_rows(min_row=2) if r[0].value == "北村")
    assert (north[1].value, north[6].value, north[-1].value, north[-1].number_format) == (1, 1, 0, "0.0%")


def test_xlsx_needs_an_output_file(session: Session, rated, env) -> None:
    round_id = rated.id
    session.commit()

    result = CliRunner().invoke(report_group, ["rates", str(round_id), "--format", "xlsx"])

    assert result.exit_code == 2 and "--output" in result.output


def test_unwritable_output(session: Session, rated, env, tmp_path: Path) -> None:
    round_id = rated.id
    session.commit()

    result = CliRunner().invoke(
        report_group, ["rates", str(round_id), "--format", "json", "--output", str(tmp_path / "missing" / "rates.json")]
    )

    assert result.exit_code == 1 and "cannot write" in result.stderr


# --- the meeting report ---------------------------------------------------------------------------------


def test_html_report_has_a_chart_per_rate_masked_phones_and_nothing_external(session: Session, env, tmp_path) -> None:
    visits = visits_township(session)
    round_id = visits.round.id
    sync_followups(session, round_id)  # the answers were stored by the factories, not by the interview
    session.commit()
    path = tmp_path / "report.html"

    run("rates", str(round_id), "--format", "html", "--output", str(path))

    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and '<html lang="zh-CN">' in html
    assert html.count("<svg") == 5
    for label in RATE_LABELS:
        assert f'aria-label="{label}：各村比率与目标"' in html
    assert html.count('class="target"') == 5  # a target line in every chart
    # 东村 misses the 100% security target: its bar is drawn as failing.
    security_chart = html[html.index('aria-label="群众安全感率') : html.index("</svg>")]
    assert 'class="fail"' in security_chart and "目标 100%" in security_chart
    assert "138****0001" in html and "138****0005" in html
    assert not re.search(r"1381111000\d", html)  # no number in full
    assert "王五" not in html and "周八" not in html  # declined a visit: counted, never named
    assert "@page" in html and "@media print" in html
    assert not re.search(r"<(link|script|img)\b", html)
    assert not re.search(r"(src|href)=", html)
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"] * 5


def test_html_marks_below_target_cells_and_flags(session: Session) -> None:
    visits = visits_township(session)
    report = village_rates(session, visits.round.id)

    html = render_rates_html(report)

    assert html.count('<td class="below">') >= 1
    assert "没有更早结束的轮次" in html
    assert "整改回访" not in html  # no follow-up section unless given


# --- follow-ups, compare, cadres ------------------------------------------------------------------------


def test_followups_xlsx_masks_phones(session: Session, env, tmp_path: Path, monkeypatch) -> None:
    from datetime import datetime, timedelta

    from campaigns.clock import set_clock_file
    from tests.reports.scenarios import ASKED

    clock = tmp_path / "clock"
    set_clock_file(clock, ASKED + timedelta(days=7, minutes=3))
    monkeypatch.setenv("SANLV_CLOCK_FILE", str(clock))
    visits = visits_township(session)
    round_id, lin = visits.round.id, visits.cadres["lin"].id
    sync_followups(session, round_id)
    session.commit()
    office, own = tmp_path / "office.xlsx", tmp_path / "own.xlsx"

    run("followups", str(round_id), "--format", "xlsx", "--output", str(office))
    run("followups", str(round_id), "--cadre", str(lin), "--format", "xlsx", "--output", str(own))

    book = load_workbook(office)
    assert book.sheetnames == ["整改回访", "各村回访"]
    sheet = book["整改回访"]
    assert sheet.freeze_panes == "A2"
    header = [c.value for c in sheet[1]]
    assert header[:6] == ["编号", "村", "户主", "电话", "包户干部", "不满意"]
    rows = [dict(zip(header, r, strict=True)) for r in sheet.iter_rows(min_row=2)]
    assert sorted(r["电话"].value for r in rows) == ["138****0001", "138****0002", "138****0005", "138****0007"]
    first = next(r for r in rows if r["户主"].value == "张三")
    assert (first["不满意"].value, first["担心的问题"].value, first["状态"].value) == (
        "群众安全感率",
        "电信诈骗",
        "待走访",
    )
    assert first["提出时间"].number_format == "yyyy-mm-dd hh:mm"
    # In Shanghai time: 10:00 plus the response id in minutes (see the scenario).
    assert first["提出时间"].value == datetime(2026, 3, 2, 10, 0) + timedelta(minutes=visits.people["A"].id)
    # Seven days and three minutes after ASKED: the requests of the first three minutes are overdue.
    overdue = {r["户主"].value: r["逾期"].value for r in rows}
    assert overdue == {
        name: ("是" if visits.people[key].id < 3 else "否")
        for key, name in (("A", "张三"), ("B", "李四"), ("E", None), ("G", "吴九"))
    }
    assert fill_of(first["逾期"]) == (BAD_FILL if first["逾期"].value == "是" else None)
    villages = [[c.value for c in r] for r in book["各村回访"].iter_rows()]
    assert villages[:1] == [["村", "要求回访", "不需回访", "待走访", "已走访", "已解决", "无法联系", "逾期"]]
    assert [row[:7] for row in villages[1:]] == [["东村", 2, 1, 2, 0, 0, 0], ["西村", 2, 1, 2, 0, 0, 0]]
    assert sum(row[7] for row in villages[1:]) == sum(value == "是" for value in overdue.values())
    own_book = load_workbook(own)
    assert own_book.sheetnames == ["整改回访"]  # no counts about other residents
    phones = sorted(r[3] for r in own_book["整改回访"].iter_rows(min_row=2, values_only=True))
    assert phones == ["13811110001", "13811110002"]


def test_overdue_cells_are_highlighted(session: Session) -> None:
    from datetime import timedelta

    from tests.reports.scenarios import ASKED

    visits = visits_township(session)
    sync_followups(session, visits.round.id)  # the factories write answers directly, not through the interview
    report = followup_report(session, visits.round.id, now=ASKED + timedelta(days=30), stream=True)

    sheet = load_workbook(io.BytesIO(render_bytes(report, "xlsx")))["整改回访"]
    late = [row[10] for row in sheet.iter_rows(min_row=2)]
    assert [c.value for c in late] == ["是"] * 4
    assert {fill_of(c) for c in late} == {BAD_FILL}


def test_followups_csv_stdout_has_bom(session: Session, env) -> None:
    visits = visits_township(session)
    round_id = visits.round.id
    sync_followups(session, round_id)
    session.commit()

    out = run("followups", str(round_id), "--format", "csv").stdout

    assert out.startswith('\ufeff"编号","村","户主","电话"')  # every field quoted
    assert "138****0001" in out and "13811110001" not in out


def test_compare_and_cadres_exports(session: Session, env, tmp_path: Path) -> None:
    village = make_village(session, name="东村")
    a = make_round(session, status=RoundStatus.COMPLETED)
    b = make_round(session, status=RoundStatus.COMPLETED)
    for round_, unsatisfied in ((a, 8), (b, 0)):
        for i in range(20):
            make_interview(
                session, round_, interview_answers(satisfaction="4" if i < unsatisfied else "1"), village=village
            )
    session.commit()
    compare_path, cadres_path = tmp_path / "compare.xlsx", tmp_path / "cadres.csv"

    run("compare", str(a.id), str(b.id), "--format", "xlsx", "--output", str(compare_path))
    run("cadres", str(b.id), "--format", "csv", "--output", str(cadres_path))

    sheet = load_workbook(compare_path)["两轮对比"]
    header = [c.value for c in sheet[1]]
    east = dict(zip(header, next(sheet.iter_rows(min_row=2)), strict=True))
    assert (east["执法满意率（前）"].value, east["执法满意率（后）"].value) == (pytest.approx(0.6), 1.0)
    assert east["执法满意率变化"].number_format == "0.0%" and east["执法满意率显著"].value == "是"
    rows = list(csv.DictReader(io.StringIO(cadres_path.read_bytes().decode("utf-8-sig"))))
    assert rows[-1]["干部"] == "合计" and rows[-1]["完成"] == "20"
    assert all("****" in row["电话"] for row in rows[:-1])
