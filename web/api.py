"""The JSON API for the office dashboard, supervisors and cadres (reports, follow-ups).

Two groups of endpoints, kept apart so that authentication (which comes later) can guard each as a whole:

Office and supervisors, ``/api/...`` (phone numbers masked)::

    GET  /api/rounds                                    rounds, newest first
    GET  /api/rounds/<id>/rates[?min_sample=N&format=json|csv|xlsx|html]
    GET  /api/rounds/<a>/compare/<b>[?min_sample=N&format=json|csv|xlsx]   change from round a to round b
    GET  /api/rounds/<id>/followups[?cadre=ID&status=pending,visited,...|open&overdue=1&format=json|csv|xlsx]
    GET  /api/rounds/<id>/supervision[?min_sample=N&format=json|csv|xlsx]  per cadre: 重视率, follow-ups
    GET  /api/followups/<item>                          one item and its history
    POST /api/followups/<item>/status                   {"status": "visited", "note": "...", "actor": "..."}

A cadre's own list, ``/api/cadres/<cadre>/...`` (full phone numbers; never any cadre_contact figure)::

    GET  /api/cadres/<cadre>/followups[?round=ID&status=...]
    POST /api/cadres/<cadre>/followups/<item>/status    {"status": "resolved", "note": "..."}

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
from reports.rates import RatesReport, ReportError
from reports.render import FORMATS, formats_of, rates_for, render_bytes

bp = Blueprint("api", __name__, url_prefix="/api")
# Office staff and supervisors. (Authentication, when it comes, guards this blueprint as a whole.)
office = Blueprint("office", __name__)
# One cadre's own list. (Authentication will check that the signed-in cadre is <cadre_id>.)
cadre = Blueprint("cadre", __name__, url_prefix="/cadres/<int:cadre_id>")


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
    if not text.isdigit() or int(text) < minimum:
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


def _mark_body() -> tuple[str, str | None, str | None]:
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
    actor = body.get("actor")
    if actor is not None and (not isinstance(actor, str) or len(actor) > 100):
        abort(400, description="actor 必须是不超过 100 字的文字 / actor must be a string of at most 100 characters")
    return status, note, actor


def _report(report: Any, fmt: str, name: str) -> Response:
    """The report as JSON, or rendered as ``fmt`` (a download is saved as ``name`` plus the extension)."""
    if fmt == "json":
        return _json(report.to_json())
    spec = FORMATS[fmt]
    response = current_app.response_class(
        render_bytes(report, fmt, tz=_runtime().settings.tz), mimetype=spec.mimetype
    )
    if spec.download:
        response.headers["Content-Disposition"] = f"attachment; filename={name}.{spec.extension}"
    return response


def _report_error(exc: ReportError):
    abort(404, description=str(exc))


def _followup_error(exc: FollowUpError):
    if exc.not_found:
        abort(404, description=str(exc))
    abort(409, description=str(exc))


# --- office and supervisors -----------------------------------------------------------------------------


@office.get("/rounds")
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
            return _report(report, fmt, f"round-{round_id}-rates")
    except ReportError as exc:
        _report_error(exc)


@office.get("/rounds/<int:round_a>/compare/<int:round_b>")
def round_compare(round_a: int, round_b: int):
    runtime = _runtime()
    fmt = _format_arg(CompareReport)
    min_sample = _int_arg("min_sample") or runtime.settings.report_min_sample
    try:
        with runtime.sessions() as session:
            report = compare_rounds(session, round_a, round_b, min_sample=min_sample)
    except ReportError as exc:
        if round_a == round_b:
            abort(400, description=str(exc))
        _report_error(exc)
    return _report(report, fmt, f"round-{round_a}-to-{round_b}-compare")


@office.get("/rounds/<int:round_id>/followups")
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
            return _report(report, fmt, f"round-{round_id}-followups")
    except ReportError as exc:
        _report_error(exc)


@office.get("/rounds/<int:round_id>/supervision")
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
    except ReportError as exc:
        _report_error(exc)
    return _report(report, fmt, f"round-{round_id}-supervision")


def _item(session, item_id: int, *, reveal_phones: bool = False) -> FollowUpDetail:
    try:
        return followup_detail(
            session, item_id, reveal_phones=reveal_phones, overdue_days=_runtime().settings.followup_overdue_days
        )
    except ReportError as exc:
        _report_error(exc)


@office.get("/followups/<int:item_id>")
def followup_item(item_id: int):
    with _runtime().sessions() as session:
        return _json(_item(session, item_id).to_json())


@office.post("/followups/<int:item_id>/status")
def followup_mark(item_id: int):
    status, note, actor = _mark_body()
    try:
        with session_scope(_runtime().sessions) as session:
            mark_followup(session, item_id, status, note, actor=actor or "office")
            item = _item(session, item_id)
    except FollowUpError as exc:
        _followup_error(exc)
    return _json(item.to_json())


# --- a cadre's own list ---------------------------------------------------------------------------------


@cadre.get("/followups")
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
    except ReportError as exc:
        _report_error(exc)
    return _json(report.to_json())


@cadre.post("/followups/<int:item_id>/status")
def cadre_mark(cadre_id: int, item_id: int):
    status, note, _actor = _mark_body()
    try:
        with session_scope(_runtime().sessions) as session:
            mark_followup(session, item_id, status, note, actor=f"cadre:{cadre_id}", cadre_id=cadre_id)
            item = _item(session, item_id, reveal_phones=True)
    except FollowUpError as exc:
        _followup_error(exc)
    return _json(item.to_json())


bp.register_blueprint(office)
bp.register_blueprint(cadre)
