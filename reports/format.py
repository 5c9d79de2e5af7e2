"""Plain-text rendering of reports for a terminal: aligned tables that hold Chinese text.

The tables come from each report's column specification (``tables`` in its module); this module knows how
each kind of cell reads (:func:`reading_text`) and lays out the prose around the tables.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from reports import cadres, compare, followups, lift, rates
from reports.columns import Column, Kind, Table

if TYPE_CHECKING:
    from reports.cadres import CadresReport
    from reports.compare import CompareReport, RateChange
    from reports.followups import FollowUpReport
    from reports.lift import LiftReport
    from reports.rates import RateFigures, RatesReport, RoundInfo

BELOW_TARGET = "✗"
TOO_FEW = "*"
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
    right: Sequence[bool] | None = None,
) -> str:
    """An aligned table, two spaces between columns, a rule under the header and above the footer.

    Args:
        headers: the column titles.
        rows: the cells, already formatted as text.
        footer: rows set apart below a rule (totals).
        right_from: columns from this index on are right-aligned (numbers); earlier ones left-aligned.
        right: which columns are right-aligned, one flag per column (instead of ``right_from``).

    Returns:
        The table, one line per row, without a trailing newline.
    """
    aligned = list(right) if right is not None else [index >= right_from for index in range(len(headers))]
    widths = [display_width(header) for header in headers]
    for row in [*rows, *footer]:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], display_width(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for index, cell in enumerate(cells):
            pad = " " * (widths[index] - display_width(cell))
            out.append(pad + cell if aligned[index] else cell + pad)
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [line(headers), rule, *(line(row) for row in rows)]
    if footer:
        lines += [rule, *(line(row) for row in footer)]
    return "\n".join(lines)


def render_table(table: Table, tz: ZoneInfo | None = None) -> str:
    """``table`` as the terminal shows it: numbers right-aligned, totals below a rule."""
    columns = table.shown_in("table")

    def cells(row: Any) -> list[str]:
        return [reading_text(column, column.value(row), tz) for column in columns]

    return text_table(
        [column.title for column in columns],
        [cells(row) for row in table.rows],
        [cells(row) for row in table.total],
        right=[column.numeric for column in columns],
    )


def reading_text(column: Column, value: Any, tz: ZoneInfo | None = None) -> str:
    """A cell as people read it, in the terminal and on the printed page."""
    kind = column.kind
    if kind is Kind.RATE:
        return rate_cell(value) if value is not None else NO_DATA
    if kind is Kind.CHANGE:
        return change_cell(value)
    if kind is Kind.SHARE:
        return share_cell(value)
    if kind is Kind.DIFFERENCE:
        return difference_cell(value)
    if kind is Kind.BOOL:
        return column.title if value else ""
    if kind is Kind.TEXT:
        return "" if value is None else str(value)
    if kind is Kind.DATETIME:
        return local_time(value, tz)
    if value is None:
        return NO_DATA
    if kind is Kind.PERCENT:
        return floor_percent(value)
    if kind is Kind.FLOAT:
        return f"{value:.4f}"
    return str(value)


def percent(numerator: int, denominator: int) -> str:
    """``numerator / denominator`` as a percentage with one decimal, rounded down.

    Rounded down so that a rate just under its target never prints as reaching it (1999/2000 is "99.9%",
    not "100.0%" beside a below-target mark).
    """
    tenths = numerator * 1000 // denominator
    return f"{tenths // 10}.{tenths % 10}%"


def floor_percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal, rounded down like :func:`percent` ("" for None).

    Down is towards minus infinity: a fall of 43.08 points reads "-43.1%".
    """
    if value is None:
        return ""
    tenths = math.floor(round(value * 1000, 6))  # round first: 0.57 * 1000 is 569.999... in floats
    sign, tenths = ("-", -tenths) if tenths < 0 else ("", tenths)
    return f"{sign}{tenths // 10}.{tenths % 10}%"


def target_text(target: float) -> str:
    """A target as the plan writes it: 95%, 100%, 92.5%."""
    text = f"{target * 100:.1f}".removesuffix(".0")
    return f"{text}%"


def local_time(value: datetime | str | None, tz: ZoneInfo | None = None) -> str:
    """A moment (or its ISO text) as local time to the minute (``2026-03-02 09:30``); "" for None."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if tz is not None:
        moment = moment.astimezone(tz)
    return moment.strftime("%Y-%m-%d %H:%M")


def round_title(round_: RoundInfo) -> str:
    status = ROUND_STATUS_NAMES.get(round_.status, round_.status)
    return f"第 {round_.id} 轮「{round_.name}」（{status}）"


def rate_cell(figures: RateFigures) -> str:
    """One rate as ``96.0% (24/25)``, marked ``✗`` when below its target and ``*`` when too few to judge;
    ``—`` without valid answers.

    A rate without a mark gets blanks where the mark would be, so the figures of a column line up.
    """
    if not figures.valid:
        return NO_DATA
    cell = f"{percent(figures.positive, figures.valid)} ({figures.positive}/{figures.valid})"
    mark = " " * (1 + display_width(BELOW_TARGET)) if figures.meets_target else f" {BELOW_TARGET}"
    few = TOO_FEW if figures.too_few else " " * display_width(TOO_FEW)
    return cell + mark + few


def share_cell(figures: Any) -> str:
    """A share without a target (see ``Kind.SHARE``): ``62.5% (5/8) [30.5%–86.3%]``, ``*`` when too few to judge;
    ``—`` without valid answers."""
    if figures is None or not figures.valid:
        return NO_DATA
    cell = f"{percent(figures.positive, figures.valid)} ({figures.positive}/{figures.valid})"
    if getattr(figures, "ci_low", None) is not None:
        cell += f" [{floor_percent(figures.ci_low)}–{floor_percent(figures.ci_high)}]"
    return cell + (TOO_FEW if getattr(figures, "too_few", False) else " " * display_width(TOO_FEW))


def points(value: float) -> str:
    """A difference of two shares in percentage points with a sign and one decimal (``+6.0``, ``-12.5``)."""
    return f"{value * 100:+.1f}"


def difference_cell(lift: Any) -> str:
    """A difference with its 95% interval, in points: ``+6.0 [-5.1, +17.3]``, ``↑``/``↓`` when significant,
    ``*`` when a side has too few answers to judge; ``—`` when a side has no valid answers."""
    if lift is None or lift.difference is None:
        return NO_DATA
    cell = f"{points(lift.difference)} [{points(lift.ci_low)}, {points(lift.ci_high)}]"
    cell += {"up": "↑", "down": "↓"}.get(lift.direction or "", " ")
    return cell + (TOO_FEW if lift.too_few else " " * display_width(TOO_FEW))


def change_cell(figures: RateChange) -> str:
    """One compared rate: ``80.0%→95.0% +15.0↑`` (an arrow only when the change exceeds the noise)."""

    def side(x: Any) -> str:
        return percent(x.positive, x.valid) if x and x.valid else NO_DATA

    cell = f"{side(figures.a)}→{side(figures.b)}"
    if figures.change is not None:
        points = figures.change * 100
        cell += f" {points:+.1f}"
        cell += {"up": "↑", "down": "↓"}.get(figures.direction or "", " ")
    return cell


def unsure_rule(exclude_unsure: bool) -> str:
    return "不计入有效样本" if exclude_unsure else "计入有效样本，按未达成计"


def targets_text(report: RatesReport) -> str:
    """Each rate's target, as the plan writes them."""
    labels = report.round.rate_labels
    return "，".join(f"{labels[key]} {target_text(report.total.rates[key].target)}" for key in labels)


def render_rates_table(report: RatesReport, tz: ZoneInfo | None = None) -> str:
    """The ``report rates --format table`` text: the rates of each village and the township, how the sample
    went, the dissatisfied answers with their ranking and the accountability flags, and notes."""
    round_ = report.round
    labels: Mapping[str, str] = round_.rate_labels
    tables = rates.tables(report)
    total_rates = report.total.rates
    unsure = "，".join(f"{labels[key]} {total_rates[key].unsure}" for key in labels if total_rates[key].unsure)
    previous = round_.previous_round
    flagged = [entry.village for entry in report.villages if rates.flags_text(entry.flags, labels)]
    lines = [
        f"{round_title(round_)}各村三率",
        "",
        render_table(tables.summary, tz),
        "",
        f"目标：{targets_text(report)}。{BELOW_TARGET} 表示未达标，{TOO_FEW} 表示有效样本少于 {round_.min_sample} 个、"
        f"不足以判断，{NO_DATA} 表示无有效样本。",
        f"说不清{unsure_rule(round_.exclude_unsure)}；全镇说不清人数：{unsure or '无'}。",
        "",
        "调查完成情况（应答率 = 完成 / (抽样 − 不符合条件)）",
        "",
        render_table(tables.progress, tz),
        "",
        "排名与问责提示（排名：比率从高到低；不满意答复：安全感、执法满意度答“不太/不”的人次，从多到少）",
        "",
        render_table(tables.ranking, tz),
        "",
        (
            f"对比上一轮：第 {previous.id} 轮「{previous.name}」。"
            + (f"需关注：{'、'.join(flagged)}。" if flagged else "无村触发问责提示。")
        )
        if previous
        else "没有更早结束的轮次，不作连续两轮的问责提示。",
    ]
    return "\n".join(lines)


def render_followups_table(report: FollowUpReport, tz: ZoneInfo | None = None) -> str:
    """The ``report followups --format table`` text: the items, then counts (by village on office lists)."""
    round_ = report.round
    cadre = report.cadre
    heading = f"{round_title(round_)}整改回访清单" + (f"（包户干部：{cadre.name}）" if cadre else "")
    items, *counts = followups.tables(report)
    rows = list(items.rows)
    summary = report.summary
    lines = [heading, ""]
    lines.append(render_table(replace(items, rows=rows), tz) if rows else "（没有需要回访的居民）")
    lines += [
        "",
        f"共 {summary.total} 户：待走访 {summary.pending}，已走访 {summary.visited}，已解决 "
        f"{summary.resolved}，无法联系 {summary.unreachable}；逾期（超过 {round_.overdue_days} 天未走访）"
        f"{summary.overdue}。",
    ]
    if counts and report.villages:
        lines += ["", "各村回访情况（不需回访的居民只计人数，不列名单）", "", render_table(counts[0], tz)]
    return "\n".join(lines)


def render_compare_table(report: CompareReport, tz: ZoneInfo | None = None) -> str:
    """The ``report compare --format table`` text."""
    a, b = report.round_a, report.round_b
    return "\n".join(
        [
            f"两轮对比：第 {a.id} 轮「{a.name}」→ 第 {b.id} 轮「{b.name}」",
            "",
            render_table(compare.tables(report)[0], tz),
            "",
            f"变化为百分点。↑/↓ 表示变化大于抽样误差（双比例 z 检验，p < {report.alpha:g}）；"
            f"没有箭头的变化可能只是抽样波动。{NO_DATA} 表示该轮无有效样本。",
        ]
    )


def render_cadres_table(report: CadresReport, tz: ZoneInfo | None = None) -> str:
    """The ``report cadres --format table`` text (for supervisors: includes each cadre's contact rate)."""
    round_ = report.round
    return "\n".join(
        [
            f"{round_title(round_)}包户干部联系情况（供督查使用，勿发给干部本人）",
            "",
            render_table(cadres.tables(report)[0], tz),
            "",
            f"重视率 = 答“联系过”的人数 / 有效回答；{BELOW_TARGET} 未达标，{TOO_FEW} 样本不足 {round_.min_sample} 个。"
            f"逾期回访：超过 {round_.overdue_days} 天仍未走访。",
            *([delivery_note(report)] if round_.delivery_check else []),
        ]
    )


def delivery_note(report: CadresReport) -> str:
    """How to read the delivery check of the supervisors' view."""
    township = report.total.delivery
    share = percent(township.positive, township.valid) if township and township.valid else NO_DATA
    return (
        f"资料送达确认率 = 答“有人上门送过宣传资料”的户数 / 有效回答（方括号内为 95% 置信区间）；全镇 {share}。"
        f"需核查回执：该干部的 95% 区间上限仍低于全镇确认率（样本不足的不作判断）。"
    )


CHANNEL_NAMES = {"sms": "短信", "voice": "语音"}


def lift_heading(report: LiftReport) -> str:
    """What is compared with what: the round and the notice."""
    notice = report.notice
    kind = "本轮的调查前短信" if notice.pre_survey else CHANNEL_NAMES.get(notice.channel, notice.channel)
    return (
        f"{round_title(report.round)}通知效果：通知 {notice.id}「{notice.name}」（{kind}，"
        f"随机留出 {notice.holdout * 100:g}%）"
    )


def lift_notes(report: LiftReport) -> list[str]:
    """How to read the lift report (the terminal and the printed page say the same)."""
    return [
        "差值 = 通知组 − 留出组，单位为百分点；方括号内为 95% 置信区间（Newcombe 混合得分法）。"
        f"↑/↓ 表示差值大于抽样误差（双比例 z 检验，p < {report.round.alpha:g}）；"
        f"{TOO_FEW} 表示一方有效样本少于 {report.round.min_sample} 个，不足以判断；{NO_DATA} 表示一方无有效样本。",
        "按分配（意向处理）：所有被分配发送通知的户（不论是否送达）与留出户比较，这是随机分组保证的比较，以此为准。",
        "仅送达：只计通知已送达的户，与同一批留出户比较；能否送达并非随机决定，仅供参考，不能代替按分配的结果。",
        "三率只计完成的访问；应答率 = 完成 / (抽样 − 不符合条件)，回答“调查前短信是否提高了应答率”。",
    ]


def render_lift_table(report: LiftReport, tz: ZoneInfo | None = None) -> str:
    """The ``report lift --format table`` text: the township, then each village, the households, the notes."""
    comparison, households = lift.tables(report)
    township = [line for line in comparison.rows if line.village == report.total.village]
    villages = [line for line in comparison.rows if line.village != report.total.village]
    return "\n".join(
        [
            lift_heading(report),
            "",
            "全镇",
            render_table(replace(comparison, rows=township), tz),
            "",
            "各村",
            render_table(replace(comparison, rows=villages), tz),
            "",
            "各组户数（同时在通知名单和本轮抽样中的户）",
            render_table(households, tz),
            "",
            *lift_notes(report),
        ]
    )
