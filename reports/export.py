"""Exports: CSV (UTF-8 with a BOM, so Excel on a Chinese PC shows the Chinese) and XLSX (openpyxl in
write-only mode: percentages formatted, below-target cells highlighted, one sheet per report, frozen header).

Rows are written as they are produced, so an export holds one row at a time: the follow-up lists stream from
the database, and their memory stays flat however long they get. Phone numbers arrive already masked (or in
full on a cadre's own list) from the report functions; nothing here unmasks them.

A table is a list of :class:`Column` and an iterable of rows; a cell may be wrapped in :class:`Mark` to be
highlighted as below target.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from sqlalchemy.orm import Session

from reports.format import (
    FLAG_LABELS,
    PROGRESS_LABELS,
    flags_text,
    floor_percent,
    local_time,
    target_text,
)

CSV_ENCODING = "utf-8-sig"  # UTF-8 with a byte-order mark: Excel reads it as UTF-8, not as GBK
PERCENT_FORMAT = "0.0%"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm"
# Excel's own "bad" style: light red fill, dark red text.
BELOW_TARGET_FILL = PatternFill("solid", fgColor="FFC7CE")
BELOW_TARGET_FONT = Font(color="9C0006")
HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")
HEADER_FONT = Font(bold=True)
YES, NO = "是", "否"


@dataclass(frozen=True)
class Column:
    """A column: its title and kind (``text``, ``int``, ``percent``, ``float``, ``datetime``, ``bool``)."""

    title: str
    kind: str = "text"
    width: float | None = None


@dataclass(frozen=True)
class Mark:
    """A cell value to highlight (below target)."""

    value: Any


@dataclass(frozen=True)
class Table:
    title: str  # the sheet's name (at most 31 characters)
    columns: Sequence[Column]
    rows: Iterable[Sequence[Any]]
    freeze: str = "B2"  # the header row and the first column stay in view


# --- writers --------------------------------------------------------------------------------------------


def _csv_text(value: Any, kind: str, tz: ZoneInfo | None) -> str:
    if isinstance(value, Mark):
        value = value.value
    if value is None:
        return ""
    if kind == "percent":
        return floor_percent(value)
    if kind == "bool":
        return YES if value else NO
    if kind == "datetime":
        return local_time(value if isinstance(value, str) else value.isoformat(), tz)
    if kind == "float":
        return f"{value:.4f}"
    return str(value)


def write_csv(dest: Path | IO[str], table: Table, tz: ZoneInfo | None = None) -> None:
    """Write ``table`` as CSV, UTF-8 with a BOM, row by row.

    ``dest`` is a path, or a text stream already opened (the BOM is written to it first).
    """
    if isinstance(dest, Path):
        with dest.open("w", encoding=CSV_ENCODING, newline="") as handle:
            _write_csv(handle, table, tz, bom=False)
    else:
        _write_csv(dest, table, tz, bom=True)


def _write_csv(handle: IO[str], table: Table, tz: ZoneInfo | None, *, bom: bool) -> None:
    if bom:
        handle.write("\ufeff")
    writer = csv.writer(handle, lineterminator="\r\n")
    writer.writerow([column.title for column in table.columns])
    kinds = [column.kind for column in table.columns]
    for row in table.rows:
        writer.writerow([_csv_text(value, kind, tz) for value, kind in zip(row, kinds, strict=True)])


def csv_text(table: Table, tz: ZoneInfo | None = None) -> str:
    """The CSV as a string, starting with the BOM."""
    buffer = io.StringIO(newline="")
    write_csv(buffer, table, tz)
    return buffer.getvalue()


def write_xlsx(dest: Path | IO[bytes], tables: Iterable[Table], tz: ZoneInfo | None = None) -> None:
    """Write one sheet per table (openpyxl write-only: rows go to disk as they come)."""
    workbook = Workbook(write_only=True)
    for table in tables:
        sheet = workbook.create_sheet(title=table.title[:31])
        for index, column in enumerate(table.columns, 1):
            sheet.column_dimensions[get_column_letter(index)].width = column.width or _default_width(column)
        if table.freeze:
            sheet.freeze_panes = table.freeze
        header = []
        for column in table.columns:
            cell = WriteOnlyCell(sheet, value=column.title)
            cell.font = HEADER_FONT
            cell.fill = HEADER_FILL
            cell.alignment = Alignment(wrap_text=True, vertical="center")
            header.append(cell)
        sheet.append(header)
        for row in table.rows:
            sheet.append(
                [_xlsx_cell(sheet, value, column, tz) for value, column in zip(row, table.columns, strict=True)]
            )
    workbook.save(dest)


def _default_width(column: Column) -> float:
    return {"text": 14, "int": 9, "percent": 10, "float": 10, "datetime": 17, "bool": 8}.get(column.kind, 12)


def _xlsx_cell(sheet, value: Any, column: Column, tz: ZoneInfo | None) -> Any:
    marked = isinstance(value, Mark)
    if marked:
        value = value.value
    fmt = None
    if value is None:
        pass
    elif column.kind == "percent":
        fmt = PERCENT_FORMAT
    elif column.kind == "bool":
        value = YES if value else NO
    elif column.kind == "datetime":
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        value = (moment.astimezone(tz) if tz else moment).replace(tzinfo=None)
        fmt = DATETIME_FORMAT
    if not marked and fmt is None:
        return value
    cell = WriteOnlyCell(sheet, value=value)
    if fmt:
        cell.number_format = fmt
    if marked:
        cell.fill = BELOW_TARGET_FILL
        cell.font = BELOW_TARGET_FONT
    return cell


# --- the rates report -----------------------------------------------------------------------------------


def _rate_value(figures: Mapping[str, Any]) -> Any:
    rate = figures["rate"]
    return Mark(rate) if rate is not None and not figures["meets_target"] else rate


def rates_tables(report: Mapping[str, Any]) -> list[Table]:
    """The sheets of the rates report: rates, details per rate, progress, ranking and flags, notes."""
    round_ = report["round"]
    labels: Mapping[str, str] = round_["rate_labels"]
    entries = [*report["villages"], report["total"]]

    summary = Table(
        "各村三率",
        [
            Column("村"),
            Column("抽样", "int"),
            Column("完成", "int"),
            *(Column(label, "percent", 12) for label in labels.values()),
            Column("不满意答复", "int"),
            Column("样本不足", "bool"),
        ],
        [
            [
                e["village"],
                e["sampled"],
                e["completed"],
                *(_rate_value(e["rates"][k]) for k in labels),
                e["dissatisfied"],
                e["too_few"],
            ]
            for e in entries
        ],
    )
    details = Table(
        "指标明细",
        [
            Column("村"),
            Column("指标", width=18),
            Column("肯定", "int"),
            Column("有效", "int"),
            Column("比率", "percent"),
            Column("目标", "percent"),
            Column("达标", "bool"),
            Column("95%下限", "percent"),
            Column("95%上限", "percent"),
            Column("说不清", "int"),
            Column("说不清占比", "percent"),
            Column("否定", "int"),
            Column("排名", "int"),
            Column("样本不足", "bool"),
        ],
        (
            [
                e["village"],
                labels[k],
                f["positive"],
                f["valid"],
                _rate_value(f),
                f["target"],
                f["meets_target"],
                f["ci_low"],
                f["ci_high"],
                f["unsure"],
                f["unsure_share"],
                f["negative"],
                f["rank"],
                f["too_few"],
            ]
            for e in entries
            for k, f in ((k, e["rates"][k]) for k in labels)
        ),
        freeze="C2",
    )
    progress = Table(
        "调查进度",
        [
            Column("村"),
            *(Column(label, "percent" if key == "response_rate" else "int") for key, label in PROGRESS_LABELS.items()),
        ],
        [[e["village"], *(e[key] for key in PROGRESS_LABELS)] for e in entries],
    )
    ranking = Table(
        "排名与问责",
        [
            Column("村"),
            *(Column(f"{label}排名", "int", 12) for label in labels.values()),
            Column("不满意答复", "int"),
            Column("不满意排名", "int"),
            Column("要求回访", "int"),
            Column("不需回访", "int"),
            Column(FLAG_LABELS["most_dissatisfied_twice"], "bool", 16),
            Column(FLAG_LABELS["below_target_twice"], width=24),
        ],
        [
            [
                e["village"],
                *(e["rates"][k]["rank"] for k in labels),
                e["dissatisfied"],
                e["dissatisfied_rank"],
                e["visit_requested"],
                e["visit_declined"],
                e["flags"]["most_dissatisfied_twice"],
                "、".join(labels[k] for k in e["flags"]["below_target_twice"]),
            ]
            for e in report["villages"]
        ],
    )
    previous = round_.get("previous_round")
    notes = Table(
        "说明",
        [Column("项目", width=16), Column("内容", width=80)],
        [
            ["轮次", f"第 {round_['id']} 轮「{round_['name']}」"],
            ["状态", round_["status"]],
            ["目标", "，".join(f"{labels[k]} {target_text(report['total']['rates'][k]['target'])}" for k in labels)],
            ["说不清", "不计入有效样本" if round_["exclude_unsure"] else "计入有效样本，按未达成计"],
            ["样本不足", f"有效样本少于 {round_['min_sample']} 个，不足以判断"],
            ["置信区间", "95% Wilson 区间"],
            ["应答率", "完成 / (抽样 − 不符合条件)"],
            ["不满意答复", "安全感、执法满意度答“不太/不”的人次"],
            ["问责提示", f"对比第 {previous['id']} 轮「{previous['name']}」" if previous else "没有更早结束的轮次"],
            ["标红", "未达目标"],
        ],
        freeze="A2",
    )
    return [summary, details, progress, ranking, notes]


def rates_csv_table(report: Mapping[str, Any]) -> Table:
    """The rates report as one wide table (CSV holds one table): progress, then each rate's figures."""
    labels: Mapping[str, str] = report["round"]["rate_labels"]
    columns = [
        Column("村"),
        *(Column(label, "percent" if key == "response_rate" else "int") for key, label in PROGRESS_LABELS.items()),
    ]
    parts = (
        ("比率", "rate", "percent"),
        ("肯定", "positive", "int"),
        ("有效", "valid", "int"),
        ("目标", "target", "percent"),
        ("达标", "meets_target", "bool"),
        ("95%下限", "ci_low", "percent"),
        ("95%上限", "ci_high", "percent"),
        ("说不清", "unsure", "int"),
        ("说不清占比", "unsure_share", "percent"),
        ("排名", "rank", "int"),
        ("样本不足", "too_few", "bool"),
    )
    for label in labels.values():
        columns += [Column(f"{label}{title}", kind) for title, _key, kind in parts]
    columns += [
        Column("不满意答复", "int"),
        Column("不满意排名", "int"),
        Column("要求回访", "int"),
        Column("不需回访", "int"),
        Column("问责提示"),
    ]

    def row(e: Mapping[str, Any]) -> list[Any]:
        cells = [e["village"], *(e[key] for key in PROGRESS_LABELS)]
        for key in labels:
            cells += [e["rates"][key][field] for _title, field, _kind in parts]
        cells += [
            e["dissatisfied"],
            e["dissatisfied_rank"],
            e["visit_requested"],
            e["visit_declined"],
            flags_text(e["flags"], labels),
        ]
        return cells

    return Table("各村三率", columns, [row(e) for e in [*report["villages"], report["total"]]])


# --- follow-ups -----------------------------------------------------------------------------------------

FOLLOWUP_COLUMNS = [
    Column("编号", "int", 8),
    Column("村"),
    Column("户主", width=10),
    Column("电话", width=15),
    Column("包户干部", width=10),
    Column("不满意", width=18),
    Column("担心的问题", width=12),
    Column("状态", width=10),
    Column("提出时间", "datetime"),
    Column("更新时间", "datetime"),
    Column("逾期", "bool", 6),
    Column("备注", width=40),
]


def followup_rows(items: Iterable[Mapping[str, Any]], labels: Mapping[str, str]) -> Iterator[list[Any]]:
    for item in items:
        yield [
            item["id"],
            item["village"],
            item["household"],
            item["phone"],
            item["cadre"],
            "、".join(labels.get(k, k) for k in item["negatives"]),
            item["concern"],
            item["status_label"],
            item["created_at"],
            item["updated_at"],
            Mark(True) if item["overdue"] else False,
            item["note"],
        ]


def followup_tables(
    header: Mapping[str, Any], items: Iterable[Mapping[str, Any]], villages: Sequence[Mapping[str, Any]] | None
) -> list[Table]:
    labels = header["round"]["rate_labels"]
    tables = [Table("整改回访", FOLLOWUP_COLUMNS, followup_rows(items, labels), freeze="A2")]
    if villages is not None:
        keys = ("requested", "declined", "pending", "visited", "resolved", "unreachable", "overdue")
        titles = ("要求回访", "不需回访", "待走访", "已走访", "已解决", "无法联系", "逾期")
        tables.append(
            Table(
                "各村回访",
                [Column("村"), *(Column(t, "int") for t in titles)],
                [[v["village"], *(v[k] for k in keys)] for v in villages],
            )
        )
    return tables


# --- compare and cadres ---------------------------------------------------------------------------------


def compare_table(report: Mapping[str, Any]) -> Table:
    labels: Mapping[str, str] = report["rate_labels"]
    columns = [Column("村")]
    for label in labels.values():
        columns += [
            Column(f"{label}（前）", "percent"),
            Column(f"{label}（后）", "percent"),
            Column(f"{label}变化", "percent"),
            Column(f"{label}p值", "float"),
            Column(f"{label}显著", "bool"),
        ]

    def row(e: Mapping[str, Any]) -> list[Any]:
        cells: list[Any] = [e["village"]]
        for key in labels:
            f = e["rates"][key]
            cells += [
                f["a"]["rate"] if f["a"] else None,
                f["b"]["rate"] if f["b"] else None,
                f["change"],
                f["p_value"],
                f["significant"],
            ]
        return cells

    return Table("两轮对比", columns, [row(e) for e in [*report["villages"], report["total"]]])


def cadres_table(report: Mapping[str, Any]) -> Table:
    def contact(entry: Mapping[str, Any], field: str) -> Any:
        figures = entry["contact"]
        if figures is None:
            return None
        return _rate_value(figures) if field == "rate" else figures[field]

    columns = [
        Column("干部"),
        Column("电话", width=15),
        Column("村", width=20),
        Column("户数", "int"),
        Column("抽样", "int"),
        Column("接通", "int"),
        Column("完成", "int"),
        Column("重视率", "percent"),
        Column("联系过", "int"),
        Column("有效", "int"),
        Column("95%下限", "percent"),
        Column("95%上限", "percent"),
        Column("样本不足", "bool"),
        Column("未结回访", "int"),
        Column("逾期回访", "int"),
        Column("已解决", "int"),
    ]
    rows = [
        [
            e["cadre"],
            e.get("phone"),
            "、".join(e.get("villages", ())),
            e["households"],
            e["sampled"],
            e["reached"],
            e["completed"],
            contact(e, "rate"),
            contact(e, "positive"),
            contact(e, "valid"),
            contact(e, "ci_low"),
            contact(e, "ci_high"),
            contact(e, "too_few"),
            e["followups"]["open"],
            e["followups"]["overdue"],
            e["followups"]["resolved"],
        ]
        for e in [*report["cadres"], report["total"]]
    ]
    return Table("干部联系情况", columns, rows)


# --- whole exports (the CLI and the benchmark) ----------------------------------------------------------


def write_tables(fmt: str, dest: Path | IO, tables: list[Table], tz: ZoneInfo | None = None) -> None:
    """CSV takes the first table; XLSX gets one sheet per table."""
    if fmt == "csv":
        write_csv(dest, tables[0], tz)
    elif fmt == "xlsx":
        write_xlsx(dest, tables, tz)
    else:
        raise ValueError(f"not a file export format: {fmt}")


def export_rates(
    session: Session,
    round_id: int,
    fmt: str,
    dest: Path | IO,
    *,
    min_sample: int | None = None,
    tz: ZoneInfo | None = None,
) -> None:
    """Compute the rates report of ``round_id`` and write it as ``csv`` or ``xlsx``."""
    from reports.rates import DEFAULT_MIN_SAMPLE, village_rates

    report = village_rates(session, round_id, min_sample=min_sample or DEFAULT_MIN_SAMPLE)
    write_tables(fmt, dest, [rates_csv_table(report)] if fmt == "csv" else rates_tables(report), tz)


def export_followups(
    session: Session,
    round_id: int,
    fmt: str,
    dest: Path | IO,
    *,
    cadre_id: int | None = None,
    own: bool = False,
    statuses: tuple | None = None,
    overdue_only: bool = False,
    now: datetime | None = None,
    overdue_days: int | None = None,
    tz: ZoneInfo | None = None,
) -> None:
    """Write the follow-up list of ``round_id`` as ``csv`` or ``xlsx``, streaming the items from the database.

    The same list as :func:`reports.followups.followup_report` with the same arguments: phones are masked
    unless ``own`` and ``cadre_id`` are given (a cadre's own list), which also leaves out the per-village
    counts.

    Raises:
        ReportError: unknown round or cadre.
    """
    from campaigns import clock
    from reports.followups import (
        DEFAULT_OVERDUE_DAYS,
        followup_header,
        iter_followup_items,
        village_followups,
    )

    days = overdue_days or DEFAULT_OVERDUE_DAYS
    now = now or clock.now()
    header = followup_header(session, round_id, cadre_id=cadre_id, overdue_days=days)
    reveal = own and cadre_id is not None
    items = iter_followup_items(
        session,
        round_id=round_id,
        cadre_id=cadre_id,
        reveal_phones=reveal,
        statuses=statuses,
        overdue_only=overdue_only,
        now=now,
        overdue_days=days,
    )
    villages = None if reveal else village_followups(session, round_id, cadre_id=cadre_id, now=now, overdue_days=days)
    write_tables(fmt, dest, followup_tables(header, items, villages), tz)
