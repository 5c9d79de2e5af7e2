"""Plain-text rendering of reports for a terminal: aligned tables that hold Chinese text."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

BELOW_TARGET = "✗"
NO_DATA = "—"
ROUND_STATUS_NAMES = {
    "draft": "草稿",
    "running": "进行中",
    "paused": "已暂停",
    "completed": "已完成",
    "cancelled": "已取消",
}


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: CJK and other wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in text)


def text_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    footer: Sequence[Sequence[str]] = (),
    *,
    right_from: int = 1,
) -> str:
    """An aligned table, two spaces between columns, a rule under the header and above the footer.

    Args:
        headers: the column titles.
        rows: the cells, already formatted as text.
        footer: rows set apart below a rule (totals).
        right_from: columns from this index on are right-aligned (numbers); earlier ones left-aligned.

    Returns:
        The table, one line per row, without a trailing newline.
    """
    widths = [display_width(header) for header in headers]
    for row in [*rows, *footer]:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], display_width(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for index, cell in enumerate(cells):
            pad = " " * (widths[index] - display_width(cell))
            out.append(pad + cell if index >= right_from else cell + pad)
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [line(headers), rule, *(line(row) for row in rows)]
    if footer:
        lines += [rule, *(line(row) for row in footer)]
    return "\n".join(lines)


def percent(numerator: int, denominator: int) -> str:
    """``numerator / denominator`` as a percentage with one decimal, rounded down.

    Rounded down so that a rate just under its target never prints as reaching it (1999/2000 is "99.9%",
    not "100.0%" beside a below-target mark).
    """
    tenths = numerator * 1000 // denominator
    return f"{tenths // 10}.{tenths % 10}%"


def rate_cell(figures: Mapping[str, Any]) -> str:
    """One rate as ``96.0% (24/25)``, marked ``✗`` when below its target, or ``—`` without valid answers.

    A rate that meets its target gets blanks where the mark would be, so the figures of a column line up.
    """
    if not figures["valid"]:
        return NO_DATA
    cell = f"{percent(figures['positive'], figures['valid'])} ({figures['positive']}/{figures['valid']})"
    mark = " " * (1 + display_width(BELOW_TARGET)) if figures["meets_target"] else f" {BELOW_TARGET}"
    return cell + mark


def render_rates_table(report: Mapping[str, Any]) -> str:
    """The ``report rates --format table`` text: a heading, one row per village, the township total, notes.

    Args:
        report: what :func:`reports.rates.village_rates` returns.
    """
    round_ = report["round"]
    labels: Mapping[str, str] = round_["rate_labels"]
    headers = ["村", "抽样", "完成", *labels.values()]

    def row(entry: Mapping[str, Any]) -> list[str]:
        return [
            entry["village"],
            str(entry["sampled"]),
            str(entry["completed"]),
            *(rate_cell(entry["rates"][key]) for key in labels),
        ]

    total_rates = report["total"]["rates"]
    targets = "，".join(f"{labels[key]} {_target_text(total_rates[key]['target'])}" for key in labels)
    unsure = "，".join(
        f"{labels[key]} {total_rates[key]['unsure']}" for key in labels if total_rates[key]["unsure"]
    )
    unsure_rule = "不计入有效样本" if round_["exclude_unsure"] else "计入有效样本，按未达成计"
    status = ROUND_STATUS_NAMES.get(round_["status"], round_["status"])
    lines = [
        f"第 {round_['id']} 轮「{round_['name']}」（{status}）各村三率",
        "",
        text_table(headers, [row(entry) for entry in report["villages"]], [row(report["total"])]),
        "",
        f"目标：{targets}。{BELOW_TARGET} 表示未达标，{NO_DATA} 表示无有效样本。",
        f"说不清{unsure_rule}；全镇说不清人数：{unsure or '无'}。",
    ]
    return "\n".join(lines)


def _target_text(target: float) -> str:
    text = f"{target * 100:.1f}".removesuffix(".0")
    return f"{text}%"
