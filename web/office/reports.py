"""A round's report pages, for the office and supervisors: the rates, the comparison with another round, the
follow-up list, the lift of a notice (households sent it against those held out).

The tables are the report's own column specification (``reports.rates.tables``, ``reports.compare.tables``,
``reports.followups.tables``) drawn by the printable report's renderer (``reports.html.html_table``), and the
charts are its charts (``reports.html.rate_chart``): a column added to a report appears here too. Downloads are
the JSON API's (``/api/rounds/<id>/rates?format=xlsx`` ...), which audits each one.
"""

from __future__ import annotations

from dataclasses import replace

from flask import abort, redirect, render_template, request, url_for
from flask_babel import gettext
from markupsafe import Markup
from sqlalchemy import select, union

from campaigns.db import session_scope
from campaigns.followups import OPEN_STATUSES
from campaigns.models import FollowUpStatus, Notice, NoticeArm, NoticeTarget, Round, RoundStatus, RoundTarget
from reports import compare, followups, lift, rates
from reports.format import lift_heading, lift_notes
from reports.html import html_table, lift_chart, rate_chart
from reports.rates import ReportError
from web.office import READERS, bp
from web.office.common import int_arg, runtime, settings
from web.security import roles


def _other_rounds(session, round_id: int) -> list[Round]:
    """Rounds to compare with: every other round that has been launched, newest first."""
    return list(
        session.scalars(
            select(Round)
            .where(Round.id != round_id, Round.status != RoundStatus.DRAFT)
            .order_by(Round.created_at.desc(), Round.id.desc())
        )
    )


@bp.get("/rounds/<int:round_id>/report")
@roles(*READERS)
def round_report(round_id: int):
    tz = settings().tz
    min_sample = int_arg("min_sample") or settings().report_min_sample
    with runtime().sessions() as session:
        try:
            report = rates.village_rates(session, round_id, min_sample=min_sample)
        except ReportError:
            abort(404, description=gettext("调查 %(id)d 不存在。", id=round_id))
        tables = rates.tables(report)
        others = [{"id": r.id, "name": r.name, "status": r.status} for r in _other_rounds(session, round_id)]
    labels = report.round.rate_labels
    flagged = [
        {"village": entry.village, "flags": rates.flags_text(entry.flags, labels)}
        for entry in report.villages
        if rates.flags_text(entry.flags, labels)
    ]
    return render_template(
        "office/report.html",
        report=report,
        summary=Markup(html_table(tables.summary, tz)),
        progress_table=Markup(html_table(tables.progress, tz)),
        ranking=Markup(html_table(tables.ranking, tz)),
        charts=[(key, label, Markup(rate_chart(report, key))) for key, label in labels.items()],
        flagged=flagged,
        others=others,
        min_sample=min_sample,
    )


@bp.get("/rounds/<int:round_id>/compare")
@roles(*READERS)
def compare_choose(round_id: int):
    """The comparison chooser's answer: this round against the one picked (``?with=N``), earlier one first."""
    other = int_arg("with")
    if other is None or other == round_id:
        abort(400, description=gettext("请选择另一轮调查进行对比。"))
    with runtime().sessions() as session:
        found = {r.id: r for r in session.scalars(select(Round).where(Round.id.in_((round_id, other))))}
    if other not in found or round_id not in found:
        abort(404, description=gettext("调查 %(id)d 不存在。", id=other))
    first, second = sorted((found[round_id], found[other]), key=lambda r: (r.created_at, r.id))
    return redirect(url_for("office.compare_page", round_a=first.id, round_b=second.id))


@bp.get("/rounds/<int:round_a>/compare/<int:round_b>")
@roles(*READERS)
def compare_page(round_a: int, round_b: int):
    if round_a == round_b:
        abort(400, description=gettext("请选择另一轮调查进行对比。"))
    min_sample = int_arg("min_sample") or settings().report_min_sample
    with runtime().sessions() as session:
        try:
            report = compare.compare_rounds(session, round_a, round_b, min_sample=min_sample)
        except ReportError as exc:
            abort(404, description=str(exc))
    table = compare.tables(report)[0]
    return render_template(
        "office/compare.html", report=report, table=Markup(html_table(table, settings().tz)), a=round_a, b=round_b
    )


FOLLOWUP_FILTERS = ("open", "pending", "visited", "resolved", "unreachable")


@bp.get("/rounds/<int:round_id>/followups")
@roles(*READERS)
def round_followups(round_id: int):
    status = request.args.get("status", "").strip()
    overdue = request.args.get("overdue", "") == "1"
    if status and status not in FOLLOWUP_FILTERS:
        abort(400, description=f"参数 status 只能是 {'、'.join(FOLLOWUP_FILTERS)} / status must be one of those")
    wanted = None
    if status == "open":
        wanted = tuple(sorted(OPEN_STATUSES))
    elif status:
        wanted = (FollowUpStatus(status),)
    runtime_ = runtime()
    tz = settings().tz
    # The list creates the items its answers call for first (as every follow-up list does): a write.
    with session_scope(runtime_.sessions) as session:
        try:
            report = followups.followup_report(
                session, round_id, statuses=wanted, overdue_only=overdue,
                overdue_days=settings().followup_overdue_days,
            )  # fmt: skip
        except ReportError:
            abort(404, description=gettext("调查 %(id)d 不存在。", id=round_id))
        items, *rest = followups.tables(report)
        items_html = Markup(html_table(items, tz)) if report.items else None
        villages_html = Markup(html_table(rest[0], tz)) if rest and report.villages else None
    return render_template(
        "office/followups.html",
        report=report,
        items=items_html,
        villages=villages_html,
        filters={"status": status, "overdue": overdue},
        statuses=FOLLOWUP_FILTERS,
    )


def _notices_of(session, round_id: int) -> list[Notice]:
    """Notices that share households with the round (a lift can compare them), newest first."""
    shared = union(
        select(NoticeTarget.notice_id)
        .join(RoundTarget, RoundTarget.household_id == NoticeTarget.household_id)
        .where(RoundTarget.round_id == round_id),
        # and where a retained round or notice keeps the match (data retain)
        select(NoticeArm.notice_id)
        .join(RoundTarget, RoundTarget.id == NoticeArm.round_target_id)
        .where(RoundTarget.round_id == round_id),
    )
    return list(session.scalars(select(Notice).where(Notice.id.in_(shared)).order_by(Notice.id.desc())))


@bp.get("/rounds/<int:round_id>/lift")
@roles(*READERS)
def lift_page(round_id: int):
    """The lift of a notice on this round (``?notice=N``), or the notices to choose from."""
    tz = settings().tz
    notice_id = int_arg("notice")
    min_sample = int_arg("min_sample") or settings().report_min_sample
    with runtime().sessions() as session:
        round_ = session.get(Round, round_id)
        if round_ is None:
            abort(404, description=gettext("调查 %(id)d 不存在。", id=round_id))
        notices = [{"id": n.id, "name": n.name, "holdout": n.holdout} for n in _notices_of(session, round_id)]
        if notice_id is None and notices:
            notice_id = notices[0]["id"]
        report = None
        if notice_id is not None:
            try:
                report = lift.notice_lift(session, round_id, notice_id, min_sample=min_sample)
            except ReportError as exc:
                abort(404, description=str(exc))
        name = round_.name
    context: dict = {"round_id": round_id, "round_name": name, "notices": notices, "notice_id": notice_id}
    if report is not None:
        comparison, households = lift.tables(report)
        township = [line for line in comparison.rows if line.village == report.total.village]
        villages = [line for line in comparison.rows if line.village != report.total.village]
        context.update(
            report=report,
            heading=lift_heading(report),
            township=Markup(html_table(replace(comparison, rows=township), tz)),
            villages=Markup(html_table(replace(comparison, rows=villages), tz)),
            households=Markup(html_table(households, tz)),
            charts=[(key, label, Markup(lift_chart(report, key))) for key, label in report.measures.items()],
            notes=lift_notes(report),
        )
    return render_template("office/lift.html", **context)
