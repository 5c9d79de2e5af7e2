"""The notices page of the office dashboard: the list, the create form (with the SMS segment count shown
before launch), launch/pause/resume/cancel, and each notice's status.

The form goes through the same parser (``NoticeOptions.from_cli``) and service (``create_notice``) as
``sanlv notice create``; a :class:`NoticeError` names the option at fault, which puts the message beside that
field. A lifecycle change is committed with its audit entry, and only then announced to the messaging worker
(``notice_changed``), as the command line does.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import Notice, NoticeStatus
from campaigns.notices import (
    NOTICE_ACTIONS,
    NOTICE_CREATE,
    NoticeError,
    NoticeOptions,
    change_notice,
    create_notice,
    notice_changed,
    notice_status_report,
    segment_count,
    with_opt_out,
)
from web.layout import nav_entry, paginate
from web.office.common import runtime, settings
from web.security import audit_request, roles

bp = Blueprint("notices", __name__)

WRITERS = ("admin", "office")
COMMANDS = ("launch", "pause", "resume", "cancel")
BUTTONS = {
    NoticeStatus.DRAFT: ("launch", "cancel"),
    NoticeStatus.RUNNING: ("pause", "cancel"),
    NoticeStatus.PAUSED: ("resume", "cancel"),
    NoticeStatus.COMPLETED: (),
    NoticeStatus.CANCELLED: (),
}
COMMAND_LABELS = {"launch": _l("发送"), "pause": _l("暂停"), "resume": _l("恢复"), "cancel": _l("取消通知")}
STATUS_LABELS = {
    "draft": _l("草稿"),
    "running": _l("发送中"),
    "paused": _l("已暂停"),
    "completed": _l("已完成"),
    "cancelled": _l("已取消"),
}
OPTION_FIELDS = {
    "--name": "name",
    "--channel": "channel",
    "--text": "text",
    "--sample": "sample",
    "--holdout": "holdout",
    "--seed": "seed",
    "--window": "windows",
    "--cps": "cps",
    "--ends-at": "ends_at",
}

nav_entry("notices.notices", _l("通知"), order=35)


def _field_of(message: str) -> str:
    for option, field in OPTION_FIELDS.items():
        if message.startswith(option):
            return field
    return "form"


@bp.get("/notices")
@roles(*WRITERS)
def notices():
    stmt = select(Notice).order_by(Notice.created_at.desc(), Notice.id.desc())
    with runtime().sessions() as session:
        page = paginate(session, stmt)
    return render_template("notices/list.html", page=page, status_labels=STATUS_LABELS)


def _default_form() -> dict[str, Any]:
    return {"name": "", "channel": "sms", "text": "", "sample": "all", "holdout": "0.2", "seed": "1",
            "windows": "09:00-11:30,14:30-20:30", "cps": "1", "ends_at": ""}  # fmt: skip


def _form_page(form: dict[str, Any], errors: dict[str, str], status: int = 200):
    preview = segment_count(with_opt_out(form["text"])) if form.get("text", "").strip() else None
    return render_template("notices/new.html", form=form, errors=errors, preview=preview), status


@bp.get("/notices/new")
@roles(*WRITERS)
def notice_new():
    return _form_page(_default_form(), {})


@bp.post("/notices")
@roles(*WRITERS)
def notice_create():
    form = {key: request.form.get(key, default).strip() for key, default in _default_form().items()}
    errors: dict[str, str] = {}
    raw: dict[str, Any] = {
        "name": form["name"], "channel": form["channel"], "text": form["text"] or None,
        "sample": form["sample"] or "all", "windows": form["windows"] or None, "ends_at": form["ends_at"] or None,
    }  # fmt: skip
    for key, kind in (("holdout", float), ("seed", int), ("cps", float)):
        if form[key]:
            try:
                raw[key] = kind(form[key])
            except ValueError:
                errors[key] = gettext("请填写数字。")
    options = None
    if not errors:
        try:
            options = NoticeOptions.from_cli(settings(), **raw)
        except NoticeError as exc:
            errors[_field_of(str(exc))] = str(exc)
    if options is None:
        return _form_page(form, errors, 400)
    try:
        with session_scope(runtime().sessions) as session:
            notice = create_notice(session, options)
            audit_request(
                session,
                NOTICE_CREATE,
                object_type="notice",
                object_id=notice.id,
                detail={"name": notice.name, "channel": notice.channel.value, "holdout": notice.holdout},
            )
            notice_id = notice.id
    except NoticeError as exc:
        return _form_page(form, {"form": str(exc)}, 400)
    flash(
        gettext("通知“%(name)s”已创建（编号 %(id)d），核对条数后即可发送。", name=options.name, id=notice_id), "success"
    )
    return redirect(url_for("notices.notice_page", notice_id=notice_id))


@bp.get("/notices/<int:notice_id>")
@roles(*WRITERS)
def notice_page(notice_id: int):
    with runtime().sessions() as session:
        try:
            report = notice_status_report(session, notice_id)
        except NoticeError as exc:
            abort(404, description=str(exc))
        notice = session.get(Notice, notice_id)
        text = notice.text if notice else ""
    return render_template(
        "notices/notice.html",
        report=report,
        text=text,
        buttons=BUTTONS[NoticeStatus(report["status"])],
        command_labels=COMMAND_LABELS,
        status_labels=STATUS_LABELS,
    )


@roles(*WRITERS)
def notice_command(notice_id: int, command: str):
    try:
        with session_scope(runtime().sessions) as session:
            change_notice(session, notice_id, command)
            audit_request(session, NOTICE_ACTIONS[command], object_type="notice", object_id=notice_id)
    except NoticeError as exc:
        if "no such notice" in str(exc):
            abort(404, description=str(exc))
        flash(gettext("无法%(command)s：%(reason)s", command=COMMAND_LABELS[command], reason=str(exc)), "error")
        return redirect(url_for("notices.notice_page", notice_id=notice_id))
    notice_changed(settings(), notice_id, command)
    flash(gettext("已%(command)s。", command=COMMAND_LABELS[command]), "success")
    return redirect(url_for("notices.notice_page", notice_id=notice_id))


for _command in COMMANDS:
    bp.add_url_rule(
        f"/notices/<int:notice_id>/{_command}",
        endpoint=f"notice_{_command}",
        view_func=notice_command,
        methods=["POST"],
        defaults={"command": _command},
    )
