"""Plain-text rendering of reports for a terminal: aligned tables that hold Chinese text."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

BELOW_TARGET = "✗"
TOO_FEW = "*"
NO_DATA = "—"
# How each target of a round ended up, in the order of the survey (reports.rates.Progress).
PROGRESS_LABELS = {
    "sampled": "抽样",
    "dialled": "已拨打",
    "reached": "接通",
    "completed": "完成",
    "refused": "拒访",
    "ineligible": "不符合条件",
    "opted_out": "中途退出",
    "partial": "未答完",
    "not_reached": "未接通",
    "waiting": "待拨打",
    "response_rate": "应答率",
}
FLAG_LABELS = {
    "most_dissatisfied_twice": "连续两轮不满意答复最多",
    "below_target_twice": "连续两轮未达标",
}
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


def floor_percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal, rounded down like :func:`percent` ("" for None)."""
    if value is None:
        return ""
    tenths = math.floor(round(value * 1000, 6))  # round first: 0.57 * 1000 is 569.999... in floats
    return f"{tenths // 10}.{tenths % 10}%"


def target_text(target: float) -> str:
    """A target as the plan writes it: 95%, 100%, 92.5%."""
    text = f"{target * 100:.1f}".removesuffix(".0")
    return f"{text}%"


def local_time(iso: str | None, tz: ZoneInfo | None = None) -> str:
    """An ISO timestamp as local time to the minute (``2026-03-02 09:30``); "" for None."""
    if not iso:
        return ""
    value = datetime.fromisoformat(iso)
    if tz is not None:
        value = value.astimezone(tz)
    return value.strftime("%Y-%m-%d %H:%M")


def round_title(round_: Mapping[str, Any]) -> str:
    status = ROUND_STATUS_NAMES.get(round_["status"], round_["status"])
    return f"第 {round_['id']} 轮「{round_['name']}」（{status}）"


def flags_text(flags: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """The accountability flags of a village in words ("" when none)."""
    parts = []
    if flags.get("most_dissatisfied_twice"):
        parts.append(FLAG_LABELS["most_dissatisfied_twice"])
    if flags.get("below_target_twice"):
        parts.append(
            FLAG_LABELS["below_target_twice"] + "：" + "、".join(labels.get(k, k) for k in flags["below_target_twice"])
        )
    return "；".join(parts)


def rate_cell(figures: Mapping[str, Any]) -> str:
    """One rate as ``96.0% (24/25)``, marked ``✗`` when below its target and ``*`` when too few to judge;
    ``—`` without valid answers.

    A rate without a mark gets blanks where the mark would be, so the figures of a column line up.
    """
    if not figures["valid"]:
        return NO_DATA
    cell = f"{percent(figures['positive'], figures['valid'])} ({figures['positive']}/{figures['valid']})"
    mark = " " * (1 + display_width(BELOW_TARGET)) if figures["meets_target"] else f" {BELOW_TARGET}"
    few = TOO_FEW if figures.get("too_few") else " " * display_width(TOO_FEW)
    return cell + mark + few


def render_rates_table(report: Mapping[str, Any]) -> str:
    """The ``report rates --format table`` text: the rates of each village and the township, how the sample
    went, the dissatisfied answers with their ranking and the accountability flags, and notes.

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

    def progress_row(entry: Mapping[str, Any]) -> list[str]:
        cells = [entry["village"]]
        for key in PROGRESS_LABELS:
            cells.append(floor_percent(entry[key]) or NO_DATA if key == "response_rate" else str(entry[key]))
        return cells

    def ranking_row(entry: Mapping[str, Any]) -> list[str]:
        return [
            entry["village"],
            *(_rank_text(entry["rates"][key]["rank"]) for key in labels),
            str(entry["dissatisfied"]),
            _rank_text(entry["dissatisfied_rank"]),
            str(entry["visit_requested"]),
            str(entry["visit_declined"]),
            flags_text(entry["flags"], labels),
        ]

    total_rates = report["total"]["rates"]
    targets = "，".join(f"{labels[key]} {target_text(total_rates[key]['target'])}" for key in labels)
    unsure = "，".join(f"{labels[key]} {total_rates[key]['unsure']}" for key in labels if total_rates[key]["unsure"])
    unsure_rule = "不计入有效样本" if round_["exclude_unsure"] else "计入有效样本，按未达成计"
    previous = round_.get("previous_round")
    flagged = [entry for entry in report["villages"] if flags_text(entry["flags"], labels)]
    lines = [
        f"{round_title(round_)}各村三率",
        "",
        text_table(headers, [row(entry) for entry in report["villages"]], [row(report["total"])]),
        "",
        f"目标：{targets}。{BELOW_TARGET} 表示未达标，{TOO_FEW} 表示有效样本少于 {round_.get('min_sample', 1)} 个、"
        f"不足以判断，{NO_DATA} 表示无有效样本。",
        f"说不清{unsure_rule}；全镇说不清人数：{unsure or '无'}。",
        "",
        "调查完成情况（应答率 = 完成 / (抽样 − 不符合条件)）",
        "",
        text_table(
            ["村", *PROGRESS_LABELS.values()],
            [progress_row(entry) for entry in report["villages"]],
            [progress_row(report["total"])],
        ),
        "",
        "排名与问责提示（排名：比率从高到低；不满意答复：安全感、执法满意度答“不太/不”的人次，从多到少）",
        "",
        text_table(
            [
                "村",
                *(f"{label}排名" for label in labels.values()),
                "不满意答复",
                "排名",
                "要求回访",
                "不需回访",
                "提示",
            ],
            [ranking_row(entry) for entry in report["villages"]],
        ),
        "",
        (
            f"对比上一轮：第 {previous['id']} 轮「{previous['name']}」。"
            + (f"需关注：{'、'.join(entry['village'] for entry in flagged)}。" if flagged else "无村触发问责提示。")
        )
        if previous
        else "没有更早结束的轮次，不作连续两轮的问责提示。",
    ]
    return "\n".join(lines)


def _rank_text(rank: int | None) -> str:
    return NO_DATA if rank is None else str(rank)


def render_followups_table(report: Mapping[str, Any], tz: ZoneInfo | None = None) -> str:
    """The ``report followups --format table`` text: the items, then counts (by village on office lists)."""
    round_ = report["round"]
    labels: Mapping[str, str] = round_["rate_labels"]
    cadre = report.get("cadre")
    heading = f"{round_title(round_)}整改回访清单" + (f"（包户干部：{cadre['name']}）" if cadre else "")
    rows = [
        [
            str(item["id"]),
            item["village"],
            item["household"] or "",
            item["phone"],
            "、".join(labels.get(key, key) for key in item["negatives"]),
            item["concern"] or "",
            item["status_label"],
            local_time(item["created_at"], tz),
            "逾期" if item["overdue"] else "",
            item["note"] or "",
        ]
        for item in report["items"]
    ]
    summary = report["summary"]
    lines = [heading, ""]
    if rows:
        lines.append(
            text_table(
                ["编号", "村", "户主", "电话", "不满意", "担心的问题", "状态", "提出时间", "逾期", "备注"],
                rows,
                right_from=99,
            )
        )
    else:
        lines.append("（没有需要回访的居民）")
    lines += [
        "",
        f"共 {summary['total']} 户：待走访 {summary['pending']}，已走访 {summary['visited']}，已解决 "
        f"{summary['resolved']}，无法联系 {summary['unreachable']}；逾期（超过 {round_['overdue_days']} 天未走访）"
        f"{summary['overdue']}。",
    ]
    if report.get("villages"):
        lines += [
            "",
            "各村回访情况（不需回访的居民只计人数，不列名单）",
            "",
            text_table(
                ["村", "要求回访", "不需回访", "待走访", "已走访", "已解决", "无法联系", "逾期"],
                [
                    [
                        v["village"],
                        *(
                            str(v[k])
                            for k in (
                                "requested",
                                "declined",
                                "pending",
                                "visited",
                                "resolved",
                                "unreachable",
                                "overdue",
                            )
                        ),
                    ]
                    for v in report["villages"]
                ],
            ),
        ]
    return "\n".join(lines)


def change_cell(figures: Mapping[str, Any]) -> str:
    """One compared rate: ``80.0%→95.0% +15.0↑`` (an arrow only when the change exceeds the noise)."""
    a, b = figures["a"], figures["b"]

    def side(x: Mapping[str, Any] | None) -> str:
        return percent(x["positive"], x["valid"]) if x and x["valid"] else NO_DATA

    cell = f"{side(a)}→{side(b)}"
    if figures["change"] is not None:
        points = figures["change"] * 100
        cell += f" {points:+.1f}"
        cell += {"up": "↑", "down": "↓"}.get(figures["direction"] or "", " ")
    return cell


def render_compare_table(report: Mapping[str, Any]) -> str:
    """The ``report compare --format table`` text."""
    labels: Mapping[str, str] = report["rate_labels"]
    a, b = report["round_a"], report["round_b"]

    def row(entry: Mapping[str, Any]) -> list[str]:
        return [entry["village"], *(change_cell(entry["rates"][key]) for key in labels)]

    return "\n".join(
        [
            f"两轮对比：第 {a['id']} 轮「{a['name']}」→ 第 {b['id']} 轮「{b['name']}」",
            "",
            text_table(["村", *labels.values()], [row(e) for e in report["villages"]], [row(report["total"])]),
            "",
            f"变化为百分点。↑/↓ 表示变化大于抽样误差（双比例 z 检验，p < {report['alpha']:g}）；"
            f"没有箭头的变化可能只是抽样波动。{NO_DATA} 表示该轮无有效样本。",
        ]
    )


def render_cadres_table(report: Mapping[str, Any]) -> str:
    """The ``report cadres --format table`` text (for supervisors: includes each cadre's contact rate)."""
    round_ = report["round"]

    def row(entry: Mapping[str, Any]) -> list[str]:
        contact = entry["contact"]
        return [
            entry["cadre"],
            "、".join(entry.get("villages", ())),
            str(entry["households"]),
            str(entry["sampled"]),
            str(entry["reached"]),
            str(entry["completed"]),
            rate_cell(contact) if contact else NO_DATA,
            str(entry["followups"]["open"]),
            str(entry["followups"]["overdue"]),
        ]

    return "\n".join(
        [
            f"{round_title(round_)}包户干部联系情况（供督查使用，勿发给干部本人）",
            "",
            text_table(
                ["干部", "村", "户数", "抽样", "接通", "完成", "重视率", "未结回访", "逾期"],
                [row(e) for e in report["cadres"]],
                [row({**report["total"], "villages": ()})],
                right_from=2,
            ),
            "",
            f"重视率 = 答“联系过”的人数 / 有效回答；{BELOW_TARGET} 未达标，{TOO_FEW} 样本不足 {round_['min_sample']} 个。"
            f"逾期：超过 {round_['overdue_days']} 天仍未走访。",
        ]
    )
