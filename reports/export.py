"""Exports: CSV (UTF-8 with a BOM, so Excel on a Chinese PC shows the Chinese) and XLSX (openpyxl in
write-only mode: percentages formatted, highlighted cells, one sheet per table, frozen header).

Both draw the tables of a report's column specification (``tables`` in its module). Rows are written as
they are produced, so an export holds one row at a time: the follow-up lists stream from the database, and
their memory stays flat however long they get. Phone numbers arrive already masked (or in full on a cadre's
own list) from the report functions; nothing here unmasks them.

No text cell can run as a formula when the file is opened (OWASP, "CSV Injection"): text that a spreadsheet
would read as one -- starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return -- gets a leading
single quote, every CSV field is quoted, and XLSX text cells are written as strings. Numbers are written as
numbers, negative ones included. :func:`spreadsheet_text` is the one place that does it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES, ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from campaigns.spreadsheets import spreadsheet_text
from reports import rates
from reports.columns import Column, Kind, Table
from reports.format import floor_percent, local_time, targets_text, unsure_rule

BOM = "\ufeff"  # first in a CSV file: Excel then reads it as UTF-8, not as GBK
PERCENT_FORMAT = "0.0%"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm"
# Excel's own "bad" style: light red fill, dark red text.
ALERT_FILL = PatternFill("solid", fgColor="FFC7CE")
ALERT_FONT = Font(color="9C0006")
HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")
HEADER_FONT = Font(bold=True)
YES, NO = "是", "否"
DEFAULT_WIDTHS = {
    Kind.TEXT: 14,
    Kind.INT: 9,
    Kind.PERCENT: 10,
    Kind.FLOAT: 10,
    Kind.DATETIME: 17,
    Kind.BOOL: 8,
    Kind.RATE: 10,
}


# --- CSV ------------------------------------------------------------------------------------------------


def write_csv(out: IO[bytes], table: Table, tz: ZoneInfo | None = None) -> None:
    """Write ``table`` to the binary stream ``out`` as CSV (UTF-8 with a BOM), row by row."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        text.write(BOM)
        writer = csv.writer(text, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
        columns = table.shown_in("csv")
        writer.writerow([spreadsheet_text(column.title) for column in columns])
        for row in chain(table.rows, table.total):
            writer.writerow([_csv_cell(column, column.value(row), tz) for column in columns])
    finally:
        text.flush()
        text.detach()  # the caller owns ``out``


def _csv_cell(column: Column, value: Any, tz: ZoneInfo | None) -> str:
    kind = column.kind
    if kind is Kind.RATE:
        value = value.rate if value is not None else None
        kind = Kind.PERCENT
    if value is None:
        return ""
    if kind is Kind.TEXT:
        return spreadsheet_text(str(value))
    if kind is Kind.PERCENT:
        return floor_percent(value)
    if kind is Kind.BOOL:
        return YES if value else NO
    if kind is Kind.DATETIME:
        return local_time(value, tz)
    if kind is Kind.FLOAT:
        return f"{value:.4f}"
    if kind is Kind.INT:
        return str(value)
    raise ValueError(f"a {kind.value} column ({column.key}) has no CSV form")


# --- XLSX -----------------------------------------------------------------------------------------------


def write_xlsx(out: Path | IO[bytes], tables: Iterable[Table], tz: ZoneInfo | None = None) -> None:
    """Write one sheet per table (openpyxl write-only: rows go to disk as they come)."""
    workbook = Workbook(write_only=True)
    for table in tables:
        sheet = workbook.create_sheet(title=table.title[:31])
        columns = table.shown_in("xlsx")
        for index, column in enumerate(columns, 1):
            sheet.column_dimensions[get_column_letter(index)].width = column.width or DEFAULT_WIDTHS[column.kind]
        if table.freeze:
            sheet.freeze_panes = table.freeze
        header = []
        for column in columns:
            cell = _text_cell(sheet, column.title)
            cell.font = HEADER_FONT
            cell.fill = HEADER_FILL
            cell.alignment = Alignment(wrap_text=True, vertical="center")
            header.append(cell)
        sheet.append(header)
        for row in chain(table.rows, table.total):
            sheet.append([_xlsx_cell(sheet, column, row, tz) for column in columns])
    workbook.save(out)


def _text_cell(sheet, text: str) -> WriteOnlyCell:
    """A string cell holding ``text`` made inert (characters XML cannot hold become U+FFFD)."""
    cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("\ufffd", spreadsheet_text(text)))
    # openpyxl guesses the type from the value: "=..." would be a formula and "#N/A" an error.
    cell.data_type = "s"
    return cell


def _stored_as_is(text: str) -> bool:
    """Whether openpyxl, given ``text`` plainly, stores exactly that text as a string."""
    return spreadsheet_text(text) == text and text not in ERROR_CODES and not ILLEGAL_CHARACTERS_RE.search(text)


def _xlsx_cell(sheet, column: Column, row: Any, tz: ZoneInfo | None) -> Any:
    value = column.value(row)
    kind = column.kind
    if kind is Kind.RATE:
        value = value.rate if value is not None else None
        kind = Kind.PERCENT
    cell = None
    fmt = None
    if value is None:
        pass
    elif kind is Kind.TEXT:
        value = str(value)
        if not _stored_as_is(value):
            cell = _text_cell(sheet, value)
    elif kind is Kind.PERCENT:
        fmt = PERCENT_FORMAT
    elif kind is Kind.BOOL:
        value = YES if value else NO
    elif kind is Kind.DATETIME:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        value = (moment.astimezone(tz) if tz else moment).replace(tzinfo=None)
        fmt = DATETIME_FORMAT
    elif kind not in (Kind.INT, Kind.FLOAT):
        raise ValueError(f"a {kind.value} column ({column.key}) has no XLSX form")
    alert = column.is_alert(row)
    if cell is None:
        if not alert and fmt is None:
            return value  # the common case: a plain value, no cell object to build
        cell = WriteOnlyCell(sheet, value=value)
    if fmt:
        cell.number_format = fmt
    if alert:
        cell.fill, cell.font = ALERT_FILL, ALERT_FONT
    return cell


# --- what each report's files hold ----------------------------------------------------------------------


def rates_sheets(report: rates.RatesReport) -> list[Table]:
    """The rates report's workbook: rates, every figure, progress, ranking and flags, and notes."""
    tables = rates.tables(report)
    round_ = report.round
    previous = round_.previous_round
    notes = Table(
        "说明",
        [Column("item", "项目", get=itemgetter(0), width=16), Column("text", "内容", get=itemgetter(1), width=80)],
        [
            ("轮次", f"第 {round_.id} 轮「{round_.name}」"),
            ("状态", round_.status),
            ("目标", targets_text(report)),
            ("说不清", unsure_rule(round_.exclude_unsure)),
            ("样本不足", f"有效样本少于 {round_.min_sample} 个，不足以判断"),
            ("置信区间", "95% Wilson 区间"),
            ("应答率", "完成 / (抽样 − 不符合条件)"),
            ("不满意答复", "安全感、执法满意度答“不太/不”的人次"),
            ("问责提示", f"对比第 {previous.id} 轮「{previous.name}」" if previous else "没有更早结束的轮次"),
            ("标红", "未达目标"),
        ],
        freeze="A2",
    )
    return [tables.summary, tables.details, tables.progress, tables.ranking, notes]
