"""The printable report for the township meeting: one self-contained HTML page (inline CSS and SVG charts, no
external assets, nothing fetched from the internet) that prints well on A4.

It holds the township figures, the rates of every village against the targets (below-target cells marked),
one bar chart per rate with its target line and 95% intervals, how the sample went, the rankings and the
accountability flags, and — when given — the follow-up summary with the list of residents who asked for a
visit, phone numbers masked. It never includes a cadre's contact rate (that is for supervisors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from campaigns import clock
from reports import lift, rates
from reports.columns import Column, Kind, Table
from reports.followups import tables as followup_tables
from reports.format import (
    BELOW_TARGET,
    NO_DATA,
    ROUND_STATUS_NAMES,
    TOO_FEW,
    difference_cell,
    floor_percent,
    lift_heading,
    lift_notes,
    local_time,
    percent,
    reading_text,
    target_text,
    targets_text,
)

if TYPE_CHECKING:
    from reports.followups import FollowUpReport
    from reports.lift import LiftReport
    from reports.rates import RateFigures, RatesReport

PASS_COLOUR = "#2e7d32"
FAIL_COLOUR = "#c62828"
TARGET_COLOUR = "#1565c0"
ITT_COLOUR = "#1565c0"
DELIVERED_COLOUR = "#ef6c00"

CSS = """
@page { size: A4 landscape; margin: 12mm; }
* { box-sizing: border-box; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", "SimSun", sans-serif;
       font-size: 12px; color: #222; margin: 0 auto; max-width: 1100px; padding: 16px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 15px; border-bottom: 2px solid #1565c0; padding-bottom: 2px; margin: 22px 0 8px; }
h3 { font-size: 13px; margin: 12px 0 4px; }
p.meta { color: #555; margin: 2px 0; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { border: 1px solid #bbb; padding: 3px 5px; text-align: right; white-space: nowrap; }
th { background: #ddebf7; text-align: center; }
td.text, th.text { text-align: left; white-space: normal; }
td.below { background: #ffc7ce; color: #9c0006; }
td.overdue { background: #ffc7ce; color: #9c0006; }
tr.total td { font-weight: bold; background: #f3f3f3; }
thead { display: table-header-group; }
tr { page-break-inside: avoid; }
.chart { page-break-inside: avoid; margin: 6px 0 14px; }
.notes { color: #444; }
.notes li { margin: 2px 0; }
.flag { color: #9c0006; font-weight: bold; }
@media print { body { padding: 0; max-width: none; } h2 { page-break-after: avoid; } section.page { page-break-before: always; } }
"""


def render_rates_html(
    report: RatesReport,
    *,
    followups: FollowUpReport | None = None,
    tz: ZoneInfo | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The whole page for :func:`reports.rates.village_rates`'s report (and, optionally, the office's
    follow-up list from :func:`reports.followups.followup_report`, whose phones are masked)."""
    round_ = report.round
    labels = round_.rate_labels
    tables = rates.tables(report)
    status = ROUND_STATUS_NAMES.get(round_.status, round_.status)
    title = f"第 {round_.id} 轮「{round_.name}」平安建设三率调查报告"
    generated = local_time(generated_at or clock.now(), tz)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">轮次状态：{escape(status)}；报告生成：{escape(generated)}'
        + (f"；调查时间：{escape(local_time(round_.launched_at, tz))} 起" if round_.launched_at else "")
        + "</p>",
        f'<p class="meta">目标：{escape(targets_text(report))}</p>',
        "<h2>一、全镇概况</h2>",
        _overview(report),
        "<h2>二、各村三率</h2>",
        html_table(tables.summary, tz),
        f'<p class="notes">{BELOW_TARGET} 及红色底纹：未达目标；{TOO_FEW}：有效样本少于 {round_.min_sample} 个，'
        f"不足以判断；{NO_DATA}：无有效样本。圆括号内为肯定数/有效数，方括号内为 95% 置信区间（Wilson）。</p>",
        '<section class="page"><h2>三、各村三率与目标（图）</h2>',
        *(rate_chart(report, key) for key in labels),
        "</section>",
        "<h2>四、调查完成情况</h2>",
        html_table(tables.progress, tz),
        "<h2>五、排名与问责提示</h2>",
        html_table(tables.ranking, tz),
        _flag_summary(report),
    ]
    if followups is not None:
        parts += ["<h2>六、整改回访</h2>", _followups(followups, tz)]
    parts += [
        "<h2>说明</h2>",
        '<ul class="notes">',
        "<li>比率 = 肯定回答 / 有效回答，只统计完成的访问（所有三率问题均已回答）。</li>",
        "<li>“说不清”" + ("不计入有效回答。" if round_.exclude_unsure else "计入有效回答，按未达成计。") + "</li>",
        "<li>应答率 = 完成 / (抽样 − 不符合条件)。接通：有人接听并开始访问。</li>",
        "<li>不满意答复：安全感答“不太安全/不安全”、执法满意度答“不太满意/不满意”的人次。</li>",
        "<li>问责提示按上一轮已结束的调查比较：连续两轮不满意答复最多，或同一指标连续两轮未达标。</li>",
        "<li>电话号码已隐去中间四位。</li>",
        "</ul>",
        "</body></html>",
    ]
    return "\n".join(parts)


def html_table(table: Table, tz: ZoneInfo | None = None) -> str:
    """``table`` as the printed page shows it: text left, numbers right, totals in bold."""
    columns = table.shown_in("html")
    head = "".join(
        f"<th>{escape(column.title)}</th>" if column.numeric else f'<th class="text">{escape(column.title)}</th>'
        for column in columns
    )
    body = "".join(_row(columns, row, tz) for row in table.rows)
    body += "".join(_row(columns, row, tz, "total") for row in table.total)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _row(columns: Sequence[Column], row: Any, tz: ZoneInfo | None, cls: str = "") -> str:
    cells = "".join(_td(column, row, tz) for column in columns)
    return f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>"


def _td(column: Column, row: Any, tz: ZoneInfo | None) -> str:
    value = column.value(row)
    classes = ([] if column.numeric else ["text"]) + ([column.alert_class] if column.is_alert(row) else [])
    if column.kind is not Kind.RATE:
        return _cell(reading_text(column, value, tz), cls=" ".join(classes))
    if value is not None and value.valid and value.meets_target:
        classes.append("meets")  # for pages that colour every rate against its target; print marks the misses
    return _cell_html(_rate_html(value), cls=" ".join(classes))


def _cell(text: str, *, cls: str = "") -> str:
    return _cell_html(escape(text), cls=cls)


def _cell_html(html: str, *, cls: str = "") -> str:
    return f'<td class="{cls}">{html}</td>' if cls else f"<td>{html}</td>"


def _rate_html(figures: RateFigures | None) -> str:
    """A rate's cell: ``96.0% (24/25) [80.4%–99.2%] ✗*``, the interval in its own element (a page may put it on
    a line of its own)."""
    if figures is None or not figures.valid:
        return escape(NO_DATA)
    text = escape(f"{percent(figures.positive, figures.valid)} ({figures.positive}/{figures.valid})")
    text += f' <span class="ci">[{escape(floor_percent(figures.ci_low))}–{escape(floor_percent(figures.ci_high))}]</span>'
    if not figures.meets_target:
        text += f" {escape(BELOW_TARGET)}"
    if figures.too_few:
        text += escape(TOO_FEW)
    return text


def _overview(report: RatesReport) -> str:
    total = report.total
    labels = report.round.rate_labels
    rate = Column("rate", "全镇", Kind.RATE, get=lambda key: total.rates[key])
    rows = [
        f"<tr>{_cell(labels[k], cls='text')}{_cell(target_text(total.rates[k].target))}{_td(rate, k, None)}</tr>"
        for k in labels
    ]
    response_rate = floor_percent(total.progress.response_rate) or NO_DATA
    head = '<thead><tr><th class="text">指标</th><th>目标</th><th>全镇</th></tr></thead>'
    return (
        f"<p>抽样 {total.progress.sampled} 户，接通 {total.progress.reached} 户，完成访问 {total.progress.completed} 户，"
        f"应答率 {escape(response_rate)}。</p>"
        f"<table>{head}<tbody>{''.join(rows)}</tbody></table>"
    )


def _flag_summary(report: RatesReport) -> str:
    previous = report.round.previous_round
    if not previous:
        return '<p class="notes">没有更早结束的轮次，本轮不作连续两轮的问责提示。</p>'
    labels = report.round.rate_labels
    flagged = [
        f"{e.village}（{rates.flags_text(e.flags, labels)}）"
        for e in report.villages
        if rates.flags_text(e.flags, labels)
    ]
    lead = f"对比上一轮：第 {previous.id} 轮「{previous.name}」。"
    return (
        f'<p class="notes">{escape(lead)}'
        + (f'<span class="flag">需关注：{escape("；".join(flagged))}。</span>' if flagged else "无村触发问责提示。")
        + "</p>"
    )


def rate_chart(report: RatesReport, key: str) -> str:
    """A horizontal bar chart of one rate by village (and the township), with the target line and intervals.

    The axis always runs from 0% to 100%, so bar lengths compare honestly.
    """
    label = report.round.rate_labels[key]
    entries = [*report.villages, report.total]
    target = report.total.rates[key].target
    left, plot, right, row_height, top = 120, 520, 110, 18, 30
    width = left + plot + right
    height = top + row_height * len(entries) + 12

    def x(value: float) -> float:
        return left + plot * value

    out = [
        f'<div class="chart"><h3>{escape(label)}（目标 {escape(target_text(target))}）</h3>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}：各村比率与目标" font-size="11">',
        f"<title>{escape(label)}：各村比率与目标</title>",
    ]
    for tick in range(0, 101, 20):
        tx = x(tick / 100)
        out.append(f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{height - 8}" stroke="#ddd"/>')
        out.append(f'<text x="{tx:.1f}" y="{top - 10}" text-anchor="middle" fill="#666">{tick}%</text>')
    for index, entry in enumerate(entries):
        figures = entry.rates[key]
        y = top + index * row_height
        is_total = entry is report.total
        weight = ' font-weight="bold"' if is_total else ""
        out.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end"{weight}>{escape(entry.village)}</text>')
        if not figures.valid:
            out.append(f'<text x="{left + 4}" y="{y + 12}" fill="#999">无有效样本</text>')
            continue
        colour = PASS_COLOUR if figures.meets_target else FAIL_COLOUR
        opacity = "0.45" if figures.too_few else "0.9"
        bar = max(plot * figures.rate, 0.5)
        out.append(
            f'<rect class="{"pass" if figures.meets_target else "fail"}" x="{left}" y="{y + 3}" width="{bar:.1f}" '
            f'height="{row_height - 6}" fill="{colour}" fill-opacity="{opacity}"/>'
        )
        if figures.ci_low is not None:
            cy = y + row_height / 2
            out.append(
                f'<line x1="{x(figures.ci_low):.1f}" y1="{cy:.1f}" x2="{x(figures.ci_high):.1f}" y2="{cy:.1f}" '
                f'stroke="#333" stroke-width="1"/>'
            )
        mark = ("" if figures.meets_target else f" {BELOW_TARGET}") + (TOO_FEW if figures.too_few else "")
        out.append(
            f'<text x="{left + plot + 6}" y="{y + 12}"{weight}>'
            f"{escape(percent(figures.positive, figures.valid) + mark)}</text>"
        )
    tx = x(target)
    out.append(
        f'<line class="target" x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height - 8}" stroke="{TARGET_COLOUR}" '
        f'stroke-width="1.5" stroke-dasharray="4 3"/>'
    )
    out.append(
        f'<text x="{min(tx, left + plot) - 2:.1f}" y="{height - 1}" text-anchor="end" fill="{TARGET_COLOUR}">'
        f"目标 {escape(target_text(target))}</text>"
    )
    out.append("</svg></div>")
    return "\n".join(out)


def _followups(report: FollowUpReport, tz: ZoneInfo | None) -> str:
    summary = report.summary
    parts = [
        f"<p>要求上门回访 {summary.total} 户：待走访 {summary.pending}，已走访 {summary.visited}，"
        f"已解决 {summary.resolved}，无法联系 {summary.unreachable}；逾期（超过 "
        f"{report.round.overdue_days} 天未走访）{summary.overdue} 户。不需回访的居民只计人数，不列名单。</p>"
    ]
    items, *counts = followup_tables(report)
    if counts and report.villages:
        parts.append(html_table(counts[0], tz))
    if summary.total:
        parts.append(f"<h3>回访名单</h3>{html_table(items, tz)}")
    return "\n".join(parts)


# --- the lift of a notice -------------------------------------------------------------------------------


def render_lift_html(report: LiftReport, *, tz: ZoneInfo | None = None, generated_at: datetime | None = None) -> str:
    """The printable lift report: the heading, one chart per measure, the tables and how to read them."""
    comparison, households = lift.tables(report)
    title = lift_heading(report)
    generated = local_time(generated_at or clock.now(), tz)
    township = [line for line in comparison.rows if line.village == report.total.village]
    villages = [line for line in comparison.rows if line.village != report.total.village]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">报告生成：{escape(generated)}</p>',
        "<h2>一、全镇</h2>",
        html_table(Table(comparison.title, comparison.columns, township), tz),
        "<h2>二、各指标差值（图）</h2>",
        *(lift_chart(report, key) for key in report.measures),
        "<h2>三、各村</h2>",
        html_table(Table(comparison.title, comparison.columns, villages), tz),
        "<h2>四、各组户数</h2>",
        html_table(households, tz),
        "<h2>说明</h2>",
        '<ul class="notes">',
        *(f"<li>{escape(note)}</li>" for note in lift_notes(report)),
        "</ul>",
        "</body></html>",
    ]
    return "\n".join(parts)


def lift_chart(report: LiftReport, measure: str) -> str:
    """The difference of one measure (notified − held out) for the township and each village: a point and
    its 95% interval for the intention to treat, and below it the delivered-only comparison, around a zero
    line. The axis is symmetric and holds every interval, so a village's whisker never runs off the chart."""
    label = report.measures[measure]
    entries = [report.total, *report.villages]
    bounds = [
        abs(value)
        for entry in entries
        for found in (entry.itt[measure], entry.delivered[measure])
        for value in (found.ci_low, found.ci_high)
        if value is not None
    ]
    reach = max(0.2, min(1.0, math.ceil(max(bounds, default=0.2) * 10) / 10))
    left, plot, right, row_height, top = 120, 440, 230, 26, 44
    width = left + plot + right
    height = top + row_height * len(entries) + 14

    def x(value: float) -> float:
        return left + plot * (value + reach) / (2 * reach)

    out = [
        f'<div class="chart"><h3>{escape(label)}：通知组 − 留出组（百分点）</h3>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}：通知效果" font-size="11">',
        f"<title>{escape(label)}：通知组与留出组之差及 95% 置信区间</title>",
        f'<circle cx="{left + 6}" cy="10" r="4" fill="{ITT_COLOUR}"/>'
        f'<text x="{left + 14}" y="14">按分配（意向处理）</text>'
        f'<rect x="{left + 150}" y="6" width="8" height="8" fill="none" stroke="{DELIVERED_COLOUR}" stroke-width="1.5"/>'
        f'<text x="{left + 164}" y="14">仅送达（仅供参考）</text>',
    ]
    steps = 4
    for index in range(-steps, steps + 1):
        value = reach * index / steps
        tx = x(value)
        colour = "#888" if index == 0 else "#ddd"
        out.append(f'<line x1="{tx:.1f}" y1="{top - 8}" x2="{tx:.1f}" y2="{height - 10}" stroke="{colour}"/>')
        out.append(f'<text x="{tx:.1f}" y="{top - 12}" text-anchor="middle" fill="#666">{value * 100:+.0f}</text>')
    for index, entry in enumerate(entries):
        y = top + index * row_height
        weight = ' font-weight="bold"' if entry is report.total else ""
        out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end"{weight}>{escape(entry.village)}</text>')
        for offset, comparison, colour, shape in (
            (8, entry.itt[measure], ITT_COLOUR, "circle"),
            (18, entry.delivered[measure], DELIVERED_COLOUR, "square"),
        ):
            cy = y + offset
            if comparison.difference is None:
                continue
            opacity = "0.45" if comparison.too_few else "1"
            out.append(
                f'<line class="ci" x1="{x(comparison.ci_low):.1f}" y1="{cy}" x2="{x(comparison.ci_high):.1f}" '
                f'y2="{cy}" stroke="{colour}" stroke-width="1.5" stroke-opacity="{opacity}"/>'
            )
            cx = x(comparison.difference)
            if shape == "circle":
                out.append(f'<circle class="itt" cx="{cx:.1f}" cy="{cy}" r="4" fill="{colour}" fill-opacity="{opacity}"/>')
            else:
                out.append(
                    f'<rect class="delivered" x="{cx - 4:.1f}" y="{cy - 4}" width="8" height="8" fill="#fff" '
                    f'stroke="{colour}" stroke-width="1.5" stroke-opacity="{opacity}"/>'
                )
        out.append(
            f'<text x="{left + plot + 8}" y="{y + 12}"{weight}>{escape(difference_cell(entry.itt[measure]))}</text>'
        )
        out.append(
            f'<text x="{left + plot + 8}" y="{y + 22}" fill="{DELIVERED_COLOUR}">'
            f"{escape(difference_cell(entry.delivered[measure]))}</text>"
        )
    out.append("</svg></div>")
    return "\n".join(out)
