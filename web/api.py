"""The JSON API for the office dashboard, supervisors and cadres (reports, follow-ups).

Every endpoint needs the signed-in session (with the CSRF token in ``X-CSRFToken`` on a POST) or a user's API
token (``Authorization: Bearer``, from ``sanlv user token``); anonymous requests get 401, a role the endpoint
does not allow 403 (see web.security). Responses carry ``Cache-Control: no-store``.

Office and supervisors, ``/api/...`` (phone numbers masked; admin, office, supervisor read; admin, office write)::

    GET  /api/rounds                                    rounds, newest first
    GET  /api/rounds/<id>/rates[?min_sample=N&format=json|csv|xlsx|html]
    GET  /api/rounds/<a>/compare/<b>[?min_sample=N&format=json|csv|xlsx]   change from round a to round b
    GET  /api/rounds/<id>/followups[?cadre=ID&status=pending,visited,...|open&overdue=1&format=json|csv|xlsx]
    GET  /api/rounds/<id>/supervision[?min_sample=N&format=json|csv|xlsx]  per cadre: 重视率, follow-ups
    GET  /api/rounds/<id>/lift?notice=N[&min_sample=N&format=json|csv|xlsx|html]  notified vs held out
    GET  /api/followups/<item>                          one item and its history
    GET  /api/roster/households[?village=ID&cadre=ID&q=NAME&phone=DIGITS&after=ID|before=ID]
                                                        one page of the roster's households (admin, office)
    POST /api/followups/<item>/status                   {"status": "visited", "note": "..."}

A cadre's own list, ``/api/cadres/<cadre>/...`` (full phone numbers; never any cadre_contact figure; the cadre
user linked to ``<cadre>``, or admin and office; another cadre's list or item is 404 to a cadre)::

    GET  /api/cadres/<cadre>/followups[?round=ID&status=...]
    POST /api/cadres/<cadre>/followups/<item>/status    {"status": "resolved", "note": "..."}

A follow-up change is recorded as done by the signed-in user; a body naming an ``actor`` is refused (400).
Audited: every download (csv, xlsx, html), every view of a cadre's own list, every follow-up change.

Bad input gets a 4xx with ``{"error": ..., "description": ...}`` naming the parameter (Chinese, then English):
400 for a malformed parameter or body, 404 for an unknown round, cadre or item (or an item on another cadre's
list), 409 for a status change the follow-up's state does not allow. ``format`` other than json gives the
report as :func:`reports.render.render` writes it: a CSV or XLSX download, or the printable HTML page.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, abort, current_app, request
from sqlalchemy import select

from campaigns import audit
from campaigns.db import session_scope
from campaigns.followups import (
    NOTE_MAX_LENGTH,
    OPEN_STATUSES,
    FollowUpError,
    mark_followup,
    parse_status,
)
from campaigns.models import FollowUpStatus, Round
from campaigns.runtime import Runtime
from reports.cadres import CadresReport, cadre_overview
from reports.compare import CompareReport, compare_rounds
from reports.followups import FollowUpDetail, FollowUpReport, cadre_list, followup_detail, followup_report
from reports.lift import LiftReport, notice_lift
from reports.rates import RatesReport, ReportError
from reports.render import FORMATS, formats_of, rates_for, render_bytes
from reports.roster import digits, household_page
from web.security import audit_request, current_user, roles

bp = Blueprint("api", __name__, url_prefix="/api")
# Office staff and supervisors.
office = Blueprint("office", __name__)
# One cadre's own list.
cadre = Blueprint("cadre", __name__, url_prefix="/cadres/<int:cadre_id>")

# Who may use each group (the access rule of each view, see web.security).
READERS = ("admin", "office", "supervisor")
WRITERS = ("admin", "office")
CADRE_LIST = ("admin", "office", "cadre")


def _runtime() -> Runtime:
    return current_app.extensions["sanlv"]


def _json(data: Any, status: int = 200) -> Response:
    # UTF-8 as written (Chinese readable in any tool), not escaped.
    return current_app.response_class(json.dumps(data, ensure_ascii=False), status=status, mimetype="application/json")


def _int_arg(name: str, *, minimum: int = 1) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 9 or int(text) < minimum:  # 9 digits: within the INTEGER ids
        abort(
            400,
            description=f"参数 {name} 必须是不小于 {minimum} 的整数 / {name} must be a whole number >= {minimum}: {raw!r}",
        )
    return int(text)


def _flag_arg(name: str) -> bool:
    raw = request.args.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    abort(400, description=f"参数 {name} 只能是 1 或 0 / {name} must be 1 or 0: {raw!r}")


def _statuses_arg() -> tuple[FollowUpStatus, ...] | None:
    raw = request.args.get("status", "").strip()
    if not raw:
        return None
    wanted: set[FollowUpStatus] = set()
    for part in raw.split(","):
        if part.strip() == "open":
            wanted.update(OPEN_STATUSES)
            continue
        try:
            wanted.add(parse_status(part))
        except FollowUpError as exc:
            abort(400, description=f"参数 status：{exc}")
    return tuple(sorted(wanted))


def _format_arg(report_type: type) -> str:
    """``format``: json (the default), or another format of the report that is not for a terminal."""
    allowed = tuple(fmt for fmt in formats_of(report_type) if fmt != "table")
    fmt = request.args.get("format", "json").strip().lower()
    if fmt not in allowed:
        abort(
            400,
            description=f"参数 format 只能是 {'、'.join(allowed)} / format must be one of {', '.join(allowed)}: {fmt!r}",
        )
    return fmt


def _mark_body() -> tuple[str, str | None]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description='请求体必须是 JSON 对象 / the body must be a JSON object such as {"status": "visited"}')
    status = body.get("status")
    if not isinstance(status, str) or not status.strip():
        abort(400, description="缺少 status / status is missing (visited, resolved or unreachable)")
    try:
        parse_status(status)
    except FollowUpError as exc:
        abort(400, description=f"status：{exc}")
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        abort(400, description="note 必须是文字 / note must be a string")
    if note is not None and len(note.strip()) > NOTE_MAX_LENGTH:
        abort(400, description=f"备注不能超过 {NOTE_MAX_LENGTH} 字 / note is longer than {NOTE_MAX_LENGTH} characters")
    if "actor" in body:
        abort(
            400,
            description="不接受 actor：记录人就是登录的用户 / actor is not accepted: the signed-in user is the actor",
        )
    return status, note


def _report(report: Any, fmt: str, name: str) -> Response:
    """The report as JSON, or rendered as ``fmt`` (a download is saved as ``name`` plus the extension)."""
    if fmt == "json":
        return _json(report.to_json())
    spec = FORMATS[fmt]
    response = current_app.response_class(render_bytes(report, fmt, tz=_runtime().settings.tz), mimetype=spec.mimetype)
    if spec.download:
        response.headers["Content-Disposition"] = f"attachment; filename={name}.{spec.extension}"
    return response


def _report_error(exc: ReportError):
    abort(404, description=str(exc))


def _audit_export(session, round_id: int, report: str, fmt: str, **detail: Any) -> None:
    audit_request(
        session,
        audit.EXPORT,
        object_type="round",
        object_id=round_id,
        detail={"report": report, "format": fmt, **{k: v for k, v in detail.items() if v is not None}},
    )


def _audit_mark(session, item_id: int, status: str, note: str | None, **detail: Any) -> None:
    audit_request(
        session,
        audit.FOLLOWUP_MARK,
        object_type="followup",
        object_id=item_id,
        detail={"status": status, "note": note, **detail},
    )


def _followup_error(exc: FollowUpError):
    if exc.not_found:
        abort(404, description=str(exc))
    abort(409, description=str(exc))


# --- office and supervisors -----------------------------------------------------------------------------


@office.get("/rounds")
@roles(*READERS)
def rounds():
    with _runtime().sessions() as session:
        rows = session.scalars(select(Round).order_by(Round.created_at.desc(), Round.id.desc())).all()
        return _json(
            {
                "rounds": [
                    {
                        "id": r.id,
                        "name": r.name,
                        "status": r.status.value,
                        "created_at": r.created_at.isoformat(),
                        "launched_at": r.launched_at.isoformat() if r.launched_at else None,
                        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                    }
                    for r in rows
                ]
            }
        )


@office.get("/rounds/<int:round_id>/rates")
@roles(*READERS)
def round_rates(round_id: int):
    runtime = _runtime()
    settings = runtime.settings
    fmt = _format_arg(RatesReport)
    min_sample = _int_arg("min_sample") or settings.report_min_sample
    try:
        with session_scope(runtime.sessions) as session:
            report = rates_for(
                session, round_id, fmt, min_sample=min_sample, overdue_days=settings.followup_overdue_days
            )
            if fmt != "json":
                _audit_export(session, round_id, "rates", fmt)
            return _report(report, fmt, f"round-{round_id}-rates")
    except ReportError as exc:
        _report_error(exc)


@office.get("/rounds/<int:round_a>/compare/<int:round_b>")
@roles(*READERS)
def round_compare(round_a: int, round_b: int):
    runtime = _runtime()
    fmt = _format_arg(CompareReport)
    min_sample = _int_arg("min_sample") or runtime.settings.report_min_sample
    try:
        with session_scope(runtime.sessions) as session:
            report = compare_rounds(session, round_a, round_b, min_sample=min_sample)
            if fmt != "json":
                _audit_export(session, round_b, "compare", fmt, previous=round_a)
    except ReportError as exc:
        if round_a == round_b:
            abort(400, description=str(exc))
        _report_error(exc)
    return _report(report, fmt, f"round-{round_a}-to-{round_b}-compare")


@office.get("/rounds/<int:round_id>/followups")
@roles(*READERS)
def round_followups(round_id: int):
    runtime = _runtime()
    settings = runtime.settings
    fmt = _format_arg(FollowUpReport)
    cadre_id = _int_arg("cadre")
    statuses = _statuses_arg()
    overdue_only = _flag_arg("overdue")
    try:
        with session_scope(runtime.sessions) as session:
            # The office's view: masked phones even when filtered to one cadre.
            report = followup_report(
                session,
                round_id,
                cadre_id=cadre_id,
                statuses=statuses,
                overdue_only=overdue_only,
                overdue_days=settings.followup_overdue_days,
                stream=FORMATS[fmt].streams,
            )
            if fmt != "json":
                _audit_export(session, round_id, "followups", fmt, cadre=cadre_id)
            return _report(report, fmt, f"round-{round_id}-followups")
    except ReportError as exc:
        _report_error(exc)


@office.get("/rounds/<int:round_id>/supervision")
@roles(*READERS)
def round_supervision(round_id: int):
    runtime = _runtime()
    settings = runtime.settings
    fmt = _format_arg(CadresReport)
    min_sample = _int_arg("min_sample") or settings.report_min_sample
    try:
        with session_scope(runtime.sessions) as session:
            report = cadre_overview(
                session, round_id, overdue_days=settings.followup_overdue_days, min_sample=min_sample
            )
            if fmt != "json":
                _audit_export(session, round_id, "supervision", fmt)
    except ReportError as exc:
        _report_error(exc)
    return _report(report, fmt, f"round-{round_id}-supervision")


@office.get("/rounds/<int:round_id>/lift")
@roles(*READERS)
def round_lift(round_id: int):
    runtime = _runtime()
    fmt = _format_arg(LiftReport)
    notice_id = _int_arg("notice")
    if notice_id is None:
        abort(400, description="缺少参数 notice（通知编号） / notice (the notice's id) is required")
    min_sample = _int_arg("min_sample") or runtime.settings.report_min_sample
    try:
        with session_scope(runtime.sessions) as session:
            report = notice_lift(session, round_id, notice_id, min_sample=min_sample)
            if fmt != "json":
                _audit_export(session, round_id, "lift", fmt, notice=notice_id)
    except ReportError as exc:
        _report_error(exc)
    return _report(report, fmt, f"round-{round_id}-notice-{notice_id}-lift")


def _item(session, item_id: int, *, reveal_phones: bool = False) -> FollowUpDetail:
    try:
        return followup_detail(
            session, item_id, reveal_phones=reveal_phones, overdue_days=_runtime().settings.followup_overdue_days
        )
    except ReportError as exc:
        _report_error(exc)


@office.get("/followups/<int:item_id>")
@roles(*READERS)
def followup_item(item_id: int):
    with _runtime().sessions() as session:
        return _json(_item(session, item_id).to_json())


@office.post("/followups/<int:item_id>/status")
@roles(*WRITERS)
def followup_mark(item_id: int):
    status, note = _mark_body()
    try:
        with session_scope(_runtime().sessions) as session:
            mark_followup(session, item_id, status, note, actor=current_user.username)
            _audit_mark(session, item_id, status, note)
            item = _item(session, item_id)
    except FollowUpError as exc:
        _followup_error(exc)
    return _json(item.to_json())


@office.get("/roster/households")
@roles(*WRITERS)
def roster_households():
    """The data of the roster's household page (``/roster/households``): the same page, as JSON."""
    filters = {
        "village_id": _int_arg("village"),
        "cadre_id": _int_arg("cadre"),
        "name": request.args.get("q", "").strip() or None,
        "phone": digits(request.args.get("phone")) or None,
    }
    after, before = _int_arg("after"), _int_arg("before")
    with _runtime().sessions() as session:
        page = household_page(session, after=after, before=None if after is not None else before, **filters)
    return _json(page.to_json())


# --- a cadre's own list ---------------------------------------------------------------------------------


@cadre.get("/followups")
@roles(*CADRE_LIST, own_cadre="cadre_id")
def cadre_followups(cadre_id: int):
    runtime = _runtime()
    round_id = _int_arg("round")
    statuses = _statuses_arg()
    try:
        with session_scope(runtime.sessions) as session:
            report = cadre_list(
                session,
                cadre_id,
                round_id=round_id,
                statuses=statuses,
                overdue_days=runtime.settings.followup_overdue_days,
            )
            audit_request(
                session,
                audit.PHONES_VIEW,
                object_type="cadre",
                object_id=cadre_id,
                detail={"round": round_id, "items": len(report.items)},
            )
    except ReportError as exc:
        _report_error(exc)
    return _json(report.to_json())


@cadre.post("/followups/<int:item_id>/status")
@roles(*CADRE_LIST, own_cadre="cadre_id")
def cadre_mark(cadre_id: int, item_id: int):
    status, note = _mark_body()
    try:
        with session_scope(_runtime().sessions) as session:
            mark_followup(session, item_id, status, note, actor=current_user.username, cadre_id=cadre_id)
            _audit_mark(session, item_id, status, note, cadre=cadre_id)
            item = _item(session, item_id, reveal_phones=True)
    except FollowUpError as exc:
        _followup_error(exc)
    return _json(item.to_json())


bp.register_blueprint(office)
bp.register_blueprint(cadre)
