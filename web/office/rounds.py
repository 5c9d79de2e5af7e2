"""Rounds: the list, the create form, launch/pause/resume/cancel, the live progress page and its JSON.

The create form offers every option of ``sanlv round create`` and goes through the same parser
(``RoundOptions.from_cli``) and service (``create_round``); a :class:`RoundError` names the option at fault
(``--window: ...``), which puts the message beside that field. A lifecycle change is committed with its audit
entry, and only then announced to the dialler (``round_changed``), as the command line does.

The progress page polls ``/api/rounds/<id>/progress`` (``reports.dashboard.round_progress``) every few seconds
(``static/office.js``); without JavaScript it refreshes itself while the round is in progress, and has a
refresh link.
"""

from __future__ import annotations

import re
from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from campaigns import audit
from campaigns.db import session_scope
from campaigns.models import Cadre, InboundMode, Round, RoundStatus, Village
from campaigns.notices import (
    NOTICE_CREATE,
    NoticeError,
    create_presurvey_notice,
    follow_round,
    notice_changed,
    segment_count,
)
from campaigns.questionnaire import (
    DELIVERY_STEP,
    RATE_KEYS,
    builtin_keys,
    builtin_questionnaire,
    from_version,
    latest_versions,
)
from campaigns.rounds import RoundError, RoundOptions, change_round, create_round, round_changed
from campaigns.schedule import RETRY_OUTCOMES
from reports.dashboard import round_progress
from reports.rates import ReportError
from web.i18n import localtime
from web.labels import label
from web.layout import paginate
from web.office import WRITERS, bp
from web.office.common import duration_text, runtime, settings
from web.security import audit_request, roles

COMMANDS = ("launch", "pause", "resume", "cancel")
# Which commands each status allows (the domain refuses the rest with a reason; this only picks the buttons).
BUTTONS = {
    RoundStatus.DRAFT: ("launch", "cancel"),
    RoundStatus.RUNNING: ("pause", "cancel"),
    RoundStatus.PAUSED: ("resume", "cancel"),
    RoundStatus.COMPLETED: (),
    RoundStatus.CANCELLED: (),
}
COMMAND_LABELS = {"launch": _l("启动"), "pause": _l("暂停"), "resume": _l("恢复"), "cancel": _l("取消调查")}
COMMAND_DONE = {
    "launch": _l("调查已启动，开始拨号。"),
    "pause": _l("调查已暂停：不再拨出新电话，正在进行的通话会正常结束。"),
    "resume": _l("调查已恢复。"),
    "cancel": _l("调查已取消：尚未拨打的号码不再拨打。"),
}

# The command line's option (as a RoundError names it) -> the form field it belongs beside.
OPTION_FIELDS = {
    "--name": "name",
    "--questionnaire": "questionnaire",
    "--sample": "sample",
    "--seed": "seed",
    "--window": "windows",
    "--blocked": "blocked",
    "--max-attempts": "max_attempts",
    "--retry": "retry",
    "--cps": "cps",
    "--max-concurrent": "max_concurrent",
    "--starts-at": "starts_at",
    "--ends-at": "ends_at",
    "--target": "targets",
}
FIELD_HINTS = {
    "name": _l("请填写调查名称。"),
    "questionnaire": _l("请选择问卷。"),
    "sample": _l("抽样方式：全部，或每村 / 每名干部抽 N 户（N 至少为 1）。"),
    "seed": _l("随机种子应为整数。"),
    "windows": _l("拨号时段格式如 09:00-11:30,14:30-20:30：不能跨过午夜，也不能重叠。"),
    "blocked": _l("不拨号的日期格式如 2026-10-01..2026-10-07,2027-01-01。"),
    "max_attempts": _l("每户最多拨打次数应为不小于 1 的整数。"),
    "retry": _l("重拨间隔格式如 30m、2h（分钟 m，小时 h）。"),
    "cps": _l("每秒拨号数应大于 0、不超过 100。"),
    "max_concurrent": _l("同时通话数应为不小于 1 的整数。"),
    "starts_at": _l("开始时间格式如 2026-05-01T09:00。"),
    "ends_at": _l("截止时间格式如 2026-05-31T20:30，且应晚于开始时间。"),
    "targets": _l("目标为 0 到 100 之间的百分数。"),
    "notify": _l("调查前短信：内容不能为空，不超过限定字数；留出比例在 0 到 1 之间（0.2 即 20%），留出时须填随机种子。"),
    "form": _l("无法创建调查。"),
}
RETRY_LABELS = {
    "busy": _l("忙线"),
    "no-answer": _l("无人接听"),
    "failed": _l("拨打失败"),
    "machine": _l("答录机"),
    "dropped": _l("通话中断"),
}


# --- list -------------------------------------------------------------------------------------------------


@bp.get("/rounds")
@roles(*WRITERS)
def rounds():
    status = request.args.get("status", "").strip()
    stmt = select(Round).order_by(Round.created_at.desc(), Round.id.desc())
    if status in {s.value for s in RoundStatus}:
        stmt = stmt.where(Round.status == RoundStatus(status))
    with runtime().sessions() as session:
        page = paginate(session, stmt)
    return render_template("office/rounds.html", page=page, filters={"status": status}, statuses=list(RoundStatus))


# --- create -----------------------------------------------------------------------------------------------


def _questionnaire_choices() -> list[dict[str, Any]]:
    choices = [{"ref": key, "label": f"{key} · {builtin_questionnaire(key).title}"} for key in builtin_keys()]
    with runtime().sessions() as session:
        for version in latest_versions(session):
            title = version.content.get("title") or version.key
            choices.append({"ref": f"version:{version.id}", "label": f"{version.key} · {title}"})
    return choices


def _rate_labels() -> dict[str, str]:
    rates = builtin_questionnaire().rates
    return {key: rates[key].label if key in rates else key for key in RATE_KEYS}


def default_form() -> dict[str, Any]:
    defaults = builtin_questionnaire().rates
    options = RoundOptions(name="")  # the command line's defaults
    return {
        "name": "",
        "questionnaire": "default",
        "sample_kind": "all",
        "sample_n": "",
        "seed": "",
        "windows": ",".join(f"{start}-{end}" for start, end in options.windows),
        "blocked": "",
        "max_attempts": str(options.max_attempts),
        "cps": f"{options.cps:g}",
        "max_concurrent": str(options.max_concurrent),
        "starts_at": "",
        "ends_at": "",
        **{f"retry_{outcome}": _duration_field(options.retry[outcome]) for outcome in RETRY_OUTCOMES},
        **{f"target_{key}": "" for key in RATE_KEYS},
        "target_defaults": {key: f"{defaults[key].target * 100:g}" for key in RATE_KEYS if key in defaults},
        "exclude_unsure": False,
        "machine_detection": False,
        "no_delivery_check": False,
        "inbound_answer": options.inbound == InboundMode.ANSWER,
        # round create --notify: the pre-survey SMS (optional), its hold-out share and the draw's seed
        "notify": "",
        "notify_holdout": "0",
        "notify_seed": "",
    }


def _duration_field(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def form_page(form: dict[str, Any], errors: dict[str, str], status: int = 200, *, spot_check: bool = False):
    """The create form (``spot_check``: the supervisors' spot-check form, a ``cadre:N`` sample only)."""
    with runtime().sessions() as session:
        villages = session.scalar(select(Village.id).limit(1)) is not None
        cadres = session.scalar(select(Cadre.id).limit(1)) is not None
    body = render_template(
        "office/round_new.html",
        form=form,
        errors=errors,
        questionnaires=_questionnaire_choices(),
        rate_labels=_rate_labels(),
        retry_outcomes=RETRY_OUTCOMES,
        retry_labels=RETRY_LABELS,
        has_roster=villages and cadres,
        spot_check=spot_check,
    )
    return body, status


@bp.get("/rounds/new")
@roles(*WRITERS)
def round_new():
    form = default_form()
    sample = request.args.get("sample", "").strip()  # a link may preset it (a spot-check: cadre:N)
    kind, _, number = sample.partition(":")
    if kind in ("village", "cadre") and number.isdigit():
        form.update(sample_kind=kind, sample_n=number)
    return form_page(form, {})


def _read_form(sample_kind: str | None = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The form as entered, the ``round create`` options it means, and the errors of fields that are not
    even the right kind of value (a word where a number goes)."""
    form = default_form()
    for name in form:
        if name in ("exclude_unsure", "machine_detection", "no_delivery_check", "inbound_answer", "target_defaults"):
            continue
        form[name] = request.form.get(name, "").strip()
    form["exclude_unsure"] = request.form.get("exclude_unsure") == "1"
    form["machine_detection"] = request.form.get("machine_detection") == "1"
    form["no_delivery_check"] = request.form.get("no_delivery_check") == "1"
    form["inbound_answer"] = request.form.get("inbound_answer") == "1"
    if sample_kind is not None:
        form["sample_kind"] = sample_kind
    errors: dict[str, str] = {}

    def whole(name: str) -> int | None:
        text = form[name]
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            errors[name] = gettext("请填写整数。")
            return None

    options: dict[str, Any] = {
        "name": form["name"],
        "questionnaire_ref": form["questionnaire"] or "default",
        "seed": whole("seed"),
        "windows": form["windows"],
        "blocked": form["blocked"] or None,
        "max_attempts": whole("max_attempts"),
        "max_concurrent": whole("max_concurrent"),
        "starts_at": form["starts_at"] or None,
        "ends_at": form["ends_at"] or None,
        "exclude_unsure": form["exclude_unsure"],
        "machine_detection": form["machine_detection"],
        "no_delivery_check": form["no_delivery_check"],
        "inbound": (InboundMode.ANSWER if form["inbound_answer"] else InboundMode.CALL_BACK).value,
    }
    if form["cps"]:
        try:
            options["cps"] = float(form["cps"])
        except ValueError:
            errors["cps"] = gettext("请填写数字，例如 1 或 0.5。")
    kind = form["sample_kind"] or "all"
    if kind == "all":
        options["sample"] = "all"
    elif kind in ("village", "cadre"):
        count = whole("sample_n")
        if count is None and "sample_n" not in errors:
            errors["sample"] = gettext("请填写每村或每名干部抽取的户数。")
        options["sample"] = f"{kind}:{count}"
    else:
        errors["sample"] = str(FIELD_HINTS["sample"])
    if "sample_n" in errors:
        errors["sample"] = errors.pop("sample_n")
    options["retry"] = (
        ",".join(f"{outcome}={form[f'retry_{outcome}']}" for outcome in RETRY_OUTCOMES if form[f"retry_{outcome}"])
        or None
    )
    # Targets are entered as percentages; the command line takes 95% or 0.95.
    options["targets"] = [
        f"{key}={value if value.endswith('%') else value + '%'}"
        for key in RATE_KEYS
        if (value := form[f"target_{key}"])
    ]
    return form, options, errors


def _field_of(message: str) -> str:
    """The field of the option a RoundError names first (``--window 09:00-25:00: ...`` -> ``windows``)."""
    match = re.match(r"(--[a-z-]+)", message.strip())
    return OPTION_FIELDS.get(match.group(1), "form") if match else "form"


def create_from_form(*, sample_kind: str | None = None) -> tuple[dict[str, Any], int | None, dict[str, str]]:
    """The create form's logic, for every page that offers it: the form as entered, the new round's id (None
    when there are errors), and the errors by field. Parsed by the command line's parser, created by its
    service, audited in the same transaction.

    Args:
        sample_kind: forces the sample's kind (the supervisors' spot-check form: ``cadre``).
    """
    form, raw, errors = _read_form(sample_kind)
    try:
        # Also when a field could not be read (it is left out): the options' first problem shows beside it too.
        options = RoundOptions.from_cli(settings(), **raw)
    except RoundError as exc:
        field = _field_of(str(exc))
        errors.setdefault(field, f"{FIELD_HINTS[field]} （{exc}）")
    notify = _read_notify(form, errors) if sample_kind is None else None
    if errors:
        return form, None, errors
    try:
        with session_scope(runtime().sessions) as session:
            round_ = create_round(session, options)
            audit_request(
                session, audit.ROUND_CREATE, object_type="round", object_id=round_.id,
                detail={"name": options.name, "sample": options.sample, "questionnaire": options.questionnaire},
            )  # fmt: skip
            round_id = round_.id
            if notify is not None:
                text, holdout, seed = notify
                notice = create_presurvey_notice(
                    session, round_, text, holdout=holdout, seed=seed,
                    from_number=settings().twilio_from_number, tz=settings().tz,
                )  # fmt: skip
                audit_request(
                    session, NOTICE_CREATE, object_type="notice", object_id=notice.id,
                    detail={"round": round_id, "holdout": holdout},
                )  # fmt: skip
                form["notice_id"] = notice.id
                form["notice_segments"] = segment_count(notice.text or "").segments
    except RoundError as exc:
        field = _field_of(str(exc))
        return form, None, {field: f"{FIELD_HINTS[field]} （{exc}）"}
    except NoticeError as exc:  # nothing was created: the round goes with its notice
        return form, None, {"notify": f"{FIELD_HINTS['notify']} （{exc}）"}
    return form, round_id, {}


def _read_notify(form: dict[str, Any], errors: dict[str, str]) -> tuple[str, float, int | None] | None:
    """The pre-survey SMS the form asks for (``round create --notify``): (text, hold-out share, seed), or None."""
    text = form["notify"]
    if not text:
        return None
    try:
        holdout = float(form["notify_holdout"] or 0)
        seed = int(form["notify_seed"]) if form["notify_seed"] else None
    except ValueError:
        errors["notify"] = str(FIELD_HINTS["notify"])
        return None
    return text, holdout, seed


@bp.post("/rounds")
@roles(*WRITERS)
def round_create():
    form, round_id, errors = create_from_form()
    if round_id is None:
        return form_page(form, errors, 400)
    flash(
        gettext("调查“%(name)s”已创建（编号 %(id)d），检查无误后即可启动。", name=form["name"], id=round_id), "success"
    )
    if form.get("notice_id"):
        flash(
            gettext(
                "调查前短信已创建（通知编号 %(id)d，每户 %(segments)d 条短信），随调查一起启动。",
                id=form["notice_id"], segments=form["notice_segments"],
            ),
            "success",
        )  # fmt: skip
    return redirect(url_for("office.round_page", round_id=round_id))


# --- lifecycle --------------------------------------------------------------------------------------------


@roles(*WRITERS)
def round_command(round_id: int, command: str):
    if command == "cancel" and request.form.get("confirmed") != "yes":
        # Without JavaScript the button's own question was not asked: ask on a page.
        with runtime().sessions() as session:
            round_ = _round_or_404(session, round_id)
            name, status = round_.name, round_.status
        return render_template("office/round_cancel.html", round_id=round_id, name=name, status=status)
    try:
        with session_scope(runtime().sessions) as session:
            change_round(session, round_id, command)
            audit_request(session, audit.ROUND_ACTIONS[command], object_type="round", object_id=round_id)
            # A launch or cancel carries the round's pre-survey notices with it (as ``round launch`` does).
            followed = follow_round(session, round_id, command) if command in ("launch", "cancel") else []
    except RoundError as exc:
        if "no such round" in str(exc):
            abort(404, description=str(exc))
        flash(gettext("无法%(command)s：%(reason)s", command=COMMAND_LABELS[command], reason=str(exc)), "error")
        return redirect(url_for("office.round_page", round_id=round_id))
    # Work follows the commit: the dialler picks up a launched or resumed round, stops a paused one.
    round_changed(settings(), round_id, command)
    for notice_id, notice_command in followed:
        notice_changed(settings(), notice_id, notice_command)
    flash(str(COMMAND_DONE[command]), "success")
    return redirect(url_for("office.round_page", round_id=round_id))


for _command in COMMANDS:  # one endpoint per command (office.round_launch, ...): plain URLs, one rule each
    bp.add_url_rule(
        f"/rounds/<int:round_id>/{_command}",
        endpoint=f"round_{_command}",
        view_func=round_command,
        methods=["POST"],
        defaults={"command": _command},
    )


def _round_or_404(session, round_id: int) -> Round:
    round_ = session.get(Round, round_id)
    if round_ is None:
        abort(404, description=gettext("调查 %(id)d 不存在。", id=round_id))
    return round_


# --- progress ---------------------------------------------------------------------------------------------


def progress_display(progress: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a progress report, as text in the page's language (the poller fills it in)."""
    return {
        "status": label("round", progress["status"]),
        "eta": duration_text(progress["eta_seconds"]),
        "dial_rate": f"{progress['dial_rate']:.2f}",
        "done": f"{(progress['done_share'] or 0) * 100:.0f}%",
        "targets": {state: f"{count}" for state, count in progress["targets"].items()},
        "recent_calls": [
            {
                "phone": call["phone"],
                "status": label("call", call["status"]),
                "status_value": call["status"],
                "number": call["number"],
                "direction": gettext("呼入") if call["direction"] == "inbound" else gettext("呼出"),
                "time": localtime(call["placed_at"] or call["created_at"]),
                "duration": duration_text(call["duration_seconds"]) if call["duration_seconds"] is not None else "",
            }
            for call in progress["recent_calls"]
        ],
    }


def _progress(session, round_id: int) -> dict[str, Any]:
    try:
        return round_progress(session, round_id, tz=settings().tz).to_json()
    except ReportError:
        abort(404, description=gettext("调查 %(id)d 不存在。", id=round_id))


@bp.get("/rounds/<int:round_id>")
@roles(*WRITERS)
def round_page(round_id: int):
    with runtime().sessions() as session:
        progress = _progress(session, round_id)
        round_ = session.get(Round, round_id)
        questionnaire = round_.questionnaire.key
        details = {
            "retry": round_.retry,
            "blocked": round_.blocked_dates,
            "exclude_unsure": round_.exclude_unsure,
            "machine_detection": round_.machine_detection,
            "delivery_check": from_version(round_.questionnaire).has_step(DELIVERY_STEP),
            "inbound_answer": round_.inbound == InboundMode.ANSWER,
            "rate_targets": round_.rate_targets,
            "starts_at": round_.starts_at,
            "seed": round_.seed,
        }
    status = RoundStatus(progress["status"])
    return render_template(
        "office/round.html",
        progress=progress,
        display=progress_display(progress),
        questionnaire=questionnaire,
        details=details,
        buttons=BUTTONS[status],
        command_labels=COMMAND_LABELS,
        live=status in (RoundStatus.RUNNING, RoundStatus.PAUSED),
    )


@bp.get("/api/rounds/<int:round_id>/progress")
@roles(*WRITERS)
def round_progress_json(round_id: int):
    """The progress page's data: the round status contract, progress, recent calls, and the page's texts."""
    with runtime().sessions() as session:
        progress = _progress(session, round_id)
    return jsonify({**progress, "display": progress_display(progress)})
