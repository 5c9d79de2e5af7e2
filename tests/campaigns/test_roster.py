"""Roster import: formats, headers, bad rows, all-or-nothing, skip-invalid, dry run, idempotence, updates."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from campaigns.models import Cadre, Household, Village
from campaigns.roster import ImportResult, RosterError, RowProblem, import_roster

HEADER_ZH = ("村", "户主", "电话", "包户干部", "干部电话")
HEADER_EN = ("village", "household", "phone", "cadre", "cadre_phone")

ROWS = (
    ("城关村", "张三", "13812345678", "李四", "13900000001"),
    ("城关村", "王五", "0593-2612345", "李四", "13900000001"),
    ("溪口村", "赵六", "138 1234 5679", "陈七", ""),
)


# --- factories -----------------------------------------------------------------------------------------------


def write_csv(
    path: Path,
    rows: Sequence[Sequence[Any]],
    *,
    header: Sequence[str] | None = HEADER_ZH,
    encoding: str = "utf-8",
) -> Path:
    """A CSV as Excel writes it: CRLF line ends, in the given encoding (``utf-8-sig`` adds the BOM)."""
    lines = ([",".join(header)] if header is not None else []) + [",".join(str(c) for c in row) for row in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def write_xlsx(path: Path, rows: Sequence[Sequence[Any]], *, header: Sequence[str] | None = HEADER_ZH) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    if header is not None:
        sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    workbook.save(path)
    return path


def households(sessions: sessionmaker[Session]) -> dict[str, tuple[str | None, str, str, str]]:
    """phone -> (household name, village, cadre name, cadre phone), read in a fresh session."""
    with sessions() as s:
        rows = s.execute(
            select(Household.phone, Household.name, Village.name, Cadre.name, Cadre.phone)
            .join(Village, Household.village_id == Village.id)
            .join(Cadre, Household.cadre_id == Cadre.id)
        ).all()
        return {phone: (name, village, cadre, cadre_phone) for phone, name, village, cadre, cadre_phone in rows}


def counts(sessions: sessionmaker[Session]) -> tuple[int, int, int]:
    """(villages, cadres, households) in a fresh session."""
    with sessions() as s:
        return (
            s.scalar(select(func.count()).select_from(Village)) or 0,
            s.scalar(select(func.count()).select_from(Cadre)) or 0,
            s.scalar(select(func.count()).select_from(Household)) or 0,
        )


def run_import(sessions: sessionmaker[Session], path: Path, **options: bool) -> ImportResult:
    """Import in its own transaction, committed unless it is a dry run (as the CLI does)."""
    with sessions() as s:
        result = import_roster(s, path, **options)
        if options.get("dry_run"):
            s.rollback()
        else:
            s.commit()
    return result


def import_error(sessions: sessionmaker[Session], path: Path, **options: bool) -> RosterError:
    with sessions() as s, pytest.raises(RosterError) as caught:
        import_roster(s, path, **options)
    return caught.value


def problem_keys(problems: Sequence[RowProblem]) -> list[tuple[int, str, str]]:
    return [(p.line, p.column, p.value) for p in problems]


EXPECTED = {
    "+8613812345678": ("张三", "城关村", "李四", "+8613900000001"),
    "+865932612345": ("王五", "城关村", "李四", "+8613900000001"),
    "+8613812345679": ("赵六", "溪口村", "陈七", ""),
}


# --- formats -------------------------------------------------------------------------------------------------


def test_gbk_csv_with_chinese_headers(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(tmp_path / "花名册.csv", ROWS, encoding="gbk")

    result = run_import(sessions, path)

    assert (result.rows, result.created, result.updated, result.unchanged) == (3, 3, 0, 0)
    assert (result.villages_created, result.cadres_created, result.skipped) == (2, 2, [])
    assert households(sessions) == EXPECTED
    assert counts(sessions) == (2, 2, 3)


def test_gb18030_csv_with_a_name_outside_gbk(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    name = "王䶮𠀀"  # rare characters in real names; GB18030 has them, GBK does not
    with pytest.raises(UnicodeEncodeError):
        name.encode("gbk")
    path = write_csv(tmp_path / "r.csv", [("城关村", name, "13812345678", "李四", "")], encoding="gb18030")

    run_import(sessions, path)

    assert households(sessions)["+8613812345678"][0] == name


def test_utf8_bom_csv(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(tmp_path / "r.csv", ROWS, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")

    result = run_import(sessions, path)

    assert result.created == 3
    assert households(sessions) == EXPECTED


def test_plain_utf8_with_english_headers_in_any_case_and_spacing(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    header = (" Village ", "HOUSEHOLD", "phone", "Cadre", "Cadre Phone")
    path = write_csv(tmp_path / "r.csv", ROWS, header=header)

    result = run_import(sessions, path)

    assert result.created == 3
    assert households(sessions) == EXPECTED


def test_header_synonyms_and_optional_columns(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    # No household and no cadre-phone column: both are optional.
    path = write_csv(tmp_path / "r.csv", [("城关村", "13812345678", "李四")], header=("村名", "手机号码", "网格员"))

    run_import(sessions, path)

    assert households(sessions) == {"+8613812345678": (None, "城关村", "李四", "")}


def test_xlsx_with_chinese_headers_numbers_as_ints_and_floats(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_xlsx(
        tmp_path / "r.xlsx",
        [
            ("城关村", "张三", 13812345678, "李四", 13900000001.0),
            (None, None, None, None, None),  # Excel leaves fully empty rows; they are skipped
            ("城关村", "王五", "0593-2612345", "李四", 13900000001),
            ("溪口村", "赵六", 13812345679.0, "陈七", None),
        ],
    )

    result = run_import(sessions, path)

    assert (result.rows, result.created) == (3, 3)
    assert households(sessions) == EXPECTED


def test_xlsx_line_numbers_count_empty_rows(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_xlsx(
        tmp_path / "r.xlsx",
        [("城关村", "张三", 13812345678, "李四", None), (), (), ("城关村", "王五", 12345, "李四", None)],
    )

    error = import_error(sessions, path)

    # Header is row 1, data row 2, two empty rows, the bad row is row 5 as Excel shows it.
    assert problem_keys(error.problems) == [(5, "电话", "12345")]


def test_landline_with_area_code(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [("城关村", "", "0593-2612345", "李四", ""), ("城关村", "", "010-12345678", "李四", "0593 2612346")],
    )

    run_import(sessions, path)

    found = households(sessions)
    assert set(found) == {"+865932612345", "+861012345678"}
    assert found["+861012345678"][3] == "+865932612346"


def test_whitespace_and_full_width_spaces_are_stripped(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [("\u3000城关村 ", " 张三\u3000", " 138 1234 5678 ", "\u3000李四", " ")],
        header=("\u3000村 ", "户主", " 电 话", "包户干部\u3000", "干部电话"),
    )

    run_import(sessions, path)

    assert households(sessions) == {"+8613812345678": ("张三", "城关村", "李四", "")}


def test_trailing_empty_csv_rows_and_columns_are_ignored(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes("村,电话,包户干部,,\r\n城关村,13812345678,李四,,\r\n,,,,\r\n,,,,\r\n".encode("gbk"))

    result = run_import(sessions, path)

    assert (result.rows, result.created) == (1, 1)


def test_tab_separated_utf16_text_as_excel_unicode_export(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = tmp_path / "r.txt"
    path.write_bytes("村\t电话\t包户干部\r\n城关村\t13812345678\t李四\r\n".encode("utf-16"))

    run_import(sessions, path)

    assert households(sessions) == {"+8613812345678": (None, "城关村", "李四", "")}


# --- bad rows: all or nothing ----------------------------------------------------------------------------------


def test_every_kind_of_bad_row_is_listed_and_nothing_is_imported(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [
            ("城关村", "张三", "13812345678", "李四", "13900000001"),  # 2 good
            ("城关村", "王五", "12345", "李四", ""),  # 3 bad number
            ("", "赵六", "13812345679", "李四", ""),  # 4 missing village
            ("城关村", "孙八", "13812345670", "", ""),  # 5 missing cadre
            ("城关村", "周九", "", "李四", ""),  # 6 missing phone
            ("城关村", "吴十", "138-1234-5678", "李四", ""),  # 7 duplicates line 2
            ("城关村", "郑一", "13812345671", "李四", "999"),  # 8 bad cadre phone
            ("城关村", "钱二", "1.38123E+10", "李四", ""),  # 9 Excel's scientific notation
        ],
        encoding="gbk",
    )

    error = import_error(sessions, path)

    assert error.kind == "rows"
    assert problem_keys(error.problems) == [
        (3, "电话", "12345"),
        (4, "村", ""),
        (5, "包户干部", ""),
        (6, "电话", ""),
        (7, "电话", "138-1234-5678"),
        (8, "干部电话", "999"),
        (9, "电话", "1.38123E+10"),
    ]
    reasons = {p.line: (p.reason_zh, p.reason_en) for p in error.problems}
    assert reasons[3] == ("号码位数或号段不正确", "not a valid number (wrong length or prefix)")
    assert reasons[4] == ("村名为空", "the village is missing")
    assert reasons[5] == ("包户干部为空", "the cadre is missing")
    assert reasons[6] == ("电话为空", "the phone number is missing")
    assert reasons[7] == ("与第2行的号码重复", "same number as line 2")
    assert "科学计数法" in reasons[9][0] and "scientific notation" in reasons[9][1]
    assert error.bad_rows == 7
    assert error.summary() == "r.csv: 7 bad rows, nothing imported (导入失败: 7行有误, 未导入任何数据)"
    assert counts(sessions) == (0, 0, 0)


def test_a_row_with_several_problems_lists_each_and_counts_once(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    path = write_csv(tmp_path / "r.csv", [("", "", "12345", "", "")])

    error = import_error(sessions, path)

    assert problem_keys(error.problems) == [(2, "村", ""), (2, "包户干部", ""), (2, "电话", "12345")]
    assert error.bad_rows == 1
    assert "1 bad row," in error.summary()


def test_describe_names_line_column_value_and_reasons() -> None:
    problem = RowProblem(3, "电话", "12345", "号码位数或号段不正确", "not a valid number (wrong length or prefix)")

    assert problem.describe() == (
        "第3行 电话 '12345': 号码位数或号段不正确 / "
        "line 3, column 电话 '12345': not a valid number (wrong length or prefix)"
    )
    assert RowProblem(4, "", "", "某原因", "a reason").describe() == "第4行: 某原因 / line 4: a reason"
    assert RowProblem(0, "", "r.csv", "文件不存在", "no such file").describe() == (
        "文件 'r.csv': 文件不存在 / file 'r.csv': no such file"
    )


def test_data_under_an_unnamed_column_is_a_bad_row(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = tmp_path / "r.csv"
    path.write_text("村,电话,包户干部\n城关村,13812345678,李四,备注\n", encoding="utf-8")

    error = import_error(sessions, path)

    assert [(p.line, p.value, p.reason_en) for p in error.problems] == [(2, "备注", "column 4 has data but no header")]


def test_a_name_too_long_for_the_database_is_a_bad_row(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(tmp_path / "r.csv", [("村" * 101, "", "13812345678", "李四", "")])

    error = import_error(sessions, path)

    assert problem_keys(error.problems) == [(2, "村", "村" * 101)]


# --- header problems -----------------------------------------------------------------------------------------


def test_unknown_header_names_the_column(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(
        tmp_path / "r.csv", [("1", "城关村", "13812345678", "李四")], header=("序号", "村", "电话", "干部")
    )

    error = import_error(sessions, path, skip_invalid=True)  # a bad header is never skippable

    assert error.kind == "header"
    assert problem_keys(error.problems) == [(1, "序号", "")]
    assert "无法识别的列名" in error.problems[0].reason_zh
    assert "unknown column" in error.problems[0].reason_en
    assert error.summary() == (
        "r.csv: 1 problem in the header row, nothing imported (导入失败: 表头有1处错误, 未导入任何数据)"
    )
    assert counts(sessions) == (0, 0, 0)


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        (("户主", "电话", "包户干部"), "村/village"),
        (("村", "户主", "包户干部"), "电话/phone"),
        (("村", "电话", "干部电话"), "包户干部/cadre"),
    ],
)
def test_missing_required_column(
    tmp_path: Path, sessions: sessionmaker[Session], header: tuple[str, ...], missing: str
) -> None:
    path = write_csv(tmp_path / "r.csv", [("a", "13812345678", "b")], header=header)

    error = import_error(sessions, path)

    assert [(p.line, p.column) for p in error.problems] == [(1, "")]
    assert error.problems[0].reason_zh == f"缺少必需的列: {missing}"
    assert error.problems[0].reason_en == f"missing required column: {missing}"


def test_duplicated_column_is_an_error_even_through_a_synonym(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(
        tmp_path / "r.csv", [("城关村", "13812345678", "13812345679", "李四")], header=("村", "电话", "手机", "干部")
    )

    error = import_error(sessions, path)

    assert problem_keys(error.problems) == [(1, "手机", "")]
    assert error.problems[0].reason_en == "duplicates column '电话': both mean 电话/phone"


def test_header_below_leading_empty_rows_keeps_spreadsheet_line_numbers(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    path = write_xlsx(tmp_path / "r.xlsx", [HEADER_ZH, ("城关村", "", 123, "李四", None)], header=None)
    sheet_path = tmp_path / "r2.xlsx"
    workbook = openpyxl.load_workbook(path)
    workbook.active.insert_rows(1)  # the header is now on row 2
    workbook.save(sheet_path)

    error = import_error(sessions, sheet_path)

    assert problem_keys(error.problems) == [(3, "电话", "123")]


# --- file-level problems -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "reason_en"),
    [
        ("r.pdf", b"%PDF-1.4", "unsupported file type '.pdf'; use .csv or .xlsx"),
        ("r", b"x", "unsupported file type '(no extension)'; use .csv or .xlsx"),
        ("r.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "the old Excel 97-2003 (.xls) format"),
        ("r.csv", b"", "the file is empty: no header row"),
        ("r.csv", "村,电话,包户干部\r\n,,\r\n".encode("gbk"), "no data rows under the header"),
        ("r.csv", b"\x81\x30\xff\xff\xfe", "cannot decode the file"),
        ("r.csv", b"PK\x03\x04rest", "this is an Excel workbook, not CSV text"),
        ("r.xlsx", "村,电话\n".encode(), "cannot read the XLSX file"),
        ("r.csv", b"a,b\x00c\n", "not a text file"),
    ],
)
def test_file_level_problems(
    tmp_path: Path, sessions: sessionmaker[Session], name: str, content: bytes, reason_en: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    error = import_error(sessions, path, skip_invalid=True)

    assert error.kind == "file"
    assert [(p.line, p.column, p.value) for p in error.problems] == [(0, "", name)]
    assert error.problems[0].reason_en.startswith(reason_en)
    assert error.problems[0].reason_zh
    assert error.summary().startswith(f"{name}: {error.problems[0].reason_en}, nothing imported (导入失败: ")


def test_missing_file(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    error = import_error(sessions, tmp_path / "nope.csv")

    assert error.kind == "file"
    assert error.problems[0].reason_en == "no such file"


# --- skip-invalid and dry run --------------------------------------------------------------------------------


def test_skip_invalid_imports_the_good_rows_and_lists_the_bad(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [
            ("城关村", "张三", "13812345678", "李四", ""),
            ("城关村", "王五", "12345", "李四", ""),
            ("", "赵六", "13812345679", "李四", ""),
            ("城关村", "吴十", "13812345678", "李四", ""),
            ("溪口村", "孙八", "13812345670", "陈七", ""),
        ],
    )

    result = run_import(sessions, path, skip_invalid=True)

    assert (result.rows, result.created, result.skipped_rows) == (5, 2, 3)
    assert problem_keys(result.skipped) == [(3, "电话", "12345"), (4, "村", ""), (5, "电话", "13812345678")]
    assert set(households(sessions)) == {"+8613812345678", "+8613812345670"}
    assert "; 3 rows skipped" in result.summary() and "跳过3行" in result.summary()


def test_dry_run_reports_and_writes_nothing(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(tmp_path / "r.csv", ROWS)

    with sessions() as s:
        result = import_roster(s, path, dry_run=True)
        # Even before the caller's rollback, the dry run has put nothing into the session or the database.
        assert not s.new and not s.dirty
        assert s.scalar(select(func.count()).select_from(Household)) == 0
        s.rollback()

    assert (result.created, result.updated, result.unchanged) == (3, 0, 0)
    assert (result.villages_created, result.cadres_created) == (2, 2)
    assert result.summary(dry_run=True).startswith("r.csv: dry run, nothing written: 3 rows; would create 3")
    assert "试运行, 未写入" in result.summary(dry_run=True)
    assert counts(sessions) == (0, 0, 0)


def test_dry_run_of_a_changed_file_reports_updates_without_making_them(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    run_import(sessions, write_csv(tmp_path / "r.csv", ROWS))
    changed = [list(row) for row in ROWS]
    changed[0][0] = "新村"
    path = write_csv(tmp_path / "r2.csv", changed)

    result = run_import(sessions, path, dry_run=True)

    assert (result.created, result.updated, result.unchanged, result.villages_created) == (0, 1, 2, 1)
    assert households(sessions) == EXPECTED
    assert counts(sessions) == (2, 2, 3)


def test_the_service_does_not_commit(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        import_roster(s, write_csv(tmp_path / "r.csv", ROWS))
        s.rollback()

    assert counts(sessions) == (0, 0, 0)


# --- idempotence and updates ---------------------------------------------------------------------------------


def test_reimporting_the_same_file_changes_nothing(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    path = write_csv(tmp_path / "r.csv", ROWS, encoding="gbk")
    run_import(sessions, path)
    with sessions() as s:
        before = {phone: at for phone, at in s.execute(select(Household.phone, Household.updated_at))}

    again = run_import(sessions, path)

    assert (again.rows, again.created, again.updated, again.unchanged) == (3, 0, 0, 3)
    assert (again.villages_created, again.cadres_created) == (0, 0)
    assert counts(sessions) == (2, 2, 3)
    with sessions() as s:
        assert {phone: at for phone, at in s.execute(select(Household.phone, Household.updated_at))} == before


def test_the_same_roster_as_xlsx_after_csv_is_unchanged(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    run_import(sessions, write_csv(tmp_path / "r.csv", ROWS, encoding="gbk"))
    xlsx_rows = [(v, h, p.replace(" ", ""), c, int(cp) if cp else None) for v, h, p, c, cp in ROWS]

    again = run_import(sessions, write_xlsx(tmp_path / "r.xlsx", xlsx_rows))

    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)


def test_changed_cadre_village_or_name_updates_the_household(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    run_import(sessions, write_csv(tmp_path / "r.csv", ROWS))
    changed = [
        ("溪口村", "张三", "13812345678", "李四", "13900000001"),  # moved village
        ("城关村", "王五", "0593-2612345", "李四", ""),  # a different cadre: (李四, "") is not (李四, 139...)
        ("溪口村", "赵六六", "13812345679", "陈七", ""),  # renamed household
        ("溪口村", "新户", "13812345600", "陈七", ""),  # new
    ]

    result = run_import(sessions, write_csv(tmp_path / "r2.csv", changed))

    assert (result.rows, result.created, result.updated, result.unchanged) == (4, 1, 3, 0)
    assert (result.villages_created, result.cadres_created) == (0, 1)
    assert households(sessions) == {
        "+8613812345678": ("张三", "溪口村", "李四", "+8613900000001"),
        "+865932612345": ("王五", "城关村", "李四", ""),
        "+8613812345679": ("赵六六", "溪口村", "陈七", ""),
        "+8613812345600": ("新户", "溪口村", "陈七", ""),
    }
    assert counts(sessions) == (2, 3, 4)


def test_an_update_advances_updated_at_and_refreshes_loaded_households(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    run_import(sessions, write_csv(tmp_path / "r.csv", ROWS))
    changed = [list(row) for row in ROWS]
    changed[0][0] = "新村"

    with sessions() as s:
        household = s.scalars(select(Household).where(Household.phone == "+8613812345678")).one()
        before = household.updated_at
        assert household.village.name == "城关村"
        import_roster(s, write_csv(tmp_path / "r2.csv", changed))
        # The caller's object must not keep showing the old village.
        assert household.village.name == "新村"
        assert household.updated_at > before
        s.commit()


def test_without_a_household_column_existing_names_are_kept(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    run_import(sessions, write_csv(tmp_path / "r.csv", ROWS))
    no_names = [(v, p, c, cp) for v, _h, p, c, cp in ROWS]

    result = run_import(
        sessions, write_csv(tmp_path / "r2.csv", no_names, header=("村", "电话", "包户干部", "干部电话"))
    )

    assert (result.updated, result.unchanged) == (0, 3)
    assert households(sessions) == EXPECTED


def test_numbers_not_in_the_file_are_left_alone(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    run_import(sessions, write_csv(tmp_path / "r.csv", ROWS))

    result = run_import(sessions, write_csv(tmp_path / "r2.csv", ROWS[:1]))

    assert (result.rows, result.unchanged) == (1, 1)
    assert counts(sessions) == (2, 2, 3)


# --- performance: a bounded number of statements, not one per row ---------------------------------------------


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_a_large_roster_takes_a_bounded_number_of_statements(
    tmp_path: Path, sessions: sessionmaker[Session], statements: list[str]
) -> None:
    n = 3000
    rows = [(f"村{i % 40}", f"户{i}", f"138{i:08d}", f"干部{i % 150}", f"139{i % 150:08d}") for i in range(n)]
    path = write_csv(tmp_path / "big.csv", rows)

    statements.clear()
    first = run_import(sessions, path)
    first_count = len(statements)
    statements.clear()
    changed = [(v, h + "改" if i % 2 else h, p, c, cp) for i, (v, h, p, c, cp) in enumerate(rows)]
    second = run_import(sessions, write_csv(tmp_path / "big2.csv", changed))
    second_count = len(statements)

    assert (first.created, first.villages_created, first.cadres_created) == (n, 40, 150)
    assert (second.updated, second.unchanged) == (n // 2, n // 2)
    # Loads in IN-chunks of 500 (6 for households) plus a handful of inserts/updates; far from one per row.
    assert first_count < 40, [st.split("\n")[0][:60] for st in statements]
    assert second_count < 40, statements
    assert counts(sessions) == (40, 150, n)
