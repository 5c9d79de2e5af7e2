"""The supervisors' pages (纪委 / 抽查组; admins too): per-cadre figures, every follow-up read-only, spot-checks.

- ``/supervisor[?round=N]``: one round's figures per cadre (``reports.cadres.cadre_overview``): households,
  sample, reached, completed, the contact rate (重视率) with its interval and the too-few-to-judge mark, open
  and overdue follow-ups. The table is the report's own column specification drawn by the printable report's
  renderer, as the office report pages do. The round defaults to the newest one that has been launched.
- ``/supervisor/rounds/<id>/followups[?cadre=&status=&overdue=1]`` and ``/supervisor/followups/<item>``: every
  follow-up and its history, read-only, phone numbers masked (nothing here changes an item: the forms that do
  are the cadre's own and the office's API).
- ``/supervisor/spot-checks/new`` and ``POST /supervisor/spot-checks``: a spot-check round, ``cadre:N`` (N
  households drawn per cadre), through the office create form's own logic
  (:func:`web.office.rounds.create_from_form`: the command line's parser and service, audited); ``POST
  /supervisor/spot-checks/<id>/launch`` launches such a draft (a round of another sample is not theirs to
  launch: 404).

What supervisors never see: a raw answer. The contact rate is an aggregate over a cadre's households; no page
here names which household answered what about its cadre, and phone numbers are masked throughout.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from sqlalchemy import select

from campaigns import audit
from campaigns.db import session_scope
from campaigns.followups import OPEN_STATUSES
from campaigns.models import FollowUpStatus, Round, RoundStatus
from campaigns.rounds import RoundError, change_round, round_changed
from reports import cadres
from reports.followups import followup_detail, followup_report
from reports.format import TOO_FEW
from reports.html import html_table
from reports.rates import ReportError
from web.layout import nav_entry
from web.office.common import int_arg, runtime, settings
from web.office.rounds import create_from_form, default_form, form_page
from web.security import audit_request, roles

bp = Blueprint("supervisor", __name__, url_prefix="/supervisor")

SUPERVISORS = ("admin", "supervisor")
SPOT_CHECK_PREFIX = "cadre:"
FOLLOWUP_FILTERS = ("open", "pending", "visited", "resolved", "unreachable")

nav_entry("supervisor.home", _l("督查"), order=20)


def _rounds(session) -> list[Round]:
    return list(session.scalars(select(Round).order_by(Round.created_at.desc(), Round.id.desc()).limit(50)))


def _chosen_round(rounds: list[Round]) -> Round | None:
    wanted = int_arg("round")
    if wanted is not None:
        for round_ in rounds:
            if round_.id == wanted:
                return round_
        abort(404, description=gettext("调查 %(id)d 不存在。", id=wanted))
    launched = [r for r in rounds if r.status is not RoundStatus.DRAFT]
    return launched[0] if launched else None


@bp.get("")
@roles(*SUPERVISORS)
def home():
    with runtime().sessions() as session:
        rounds = _rounds(session)
        chosen = _chosen_round(rounds)
        report = table = None
        if chosen is not None:
            report = cadres.cadre_overview(
                session, chosen.id, overdue_days=settings().followup_overdue_days,
                min_sample=settings().report_min_sample,
            )  # fmt: skip
            table = Markup(html_table(cadres.tables(report)[0], settings().tz))
        drafts = [r for r in rounds if r.status is RoundStatus.DRAFT and r.sample.startswith(SPOT_CHECK_PREFIX)]
        rounds_view = [{"id": r.id, "name": r.name, "status": r.status, "sample": r.sample} for r in rounds]
        drafts_view = [{"id": r.id, "name": r.name, "sample": r.sample} for r in drafts]
    return render_template(
        "supervisor/home.html",
        rounds=rounds_view,
        chosen=chosen.id if chosen else None,
        report=report,
        table=table,
        drafts=drafts_view,
        too_few=TOO_FEW,
    )


def _statuses() -> tuple[str, tuple[FollowUpStatus, ...] | None]:
    status = request.args.get("status", "").strip()
    if status and status not in FOLLOWUP_FILTERS:
        abort(400, description=f"参数 status 只能是 {'、'.join(FOLLOWUP_FILTERS)} / status must be one of those")
    if status == "open":
        return status, tuple(sorted(OPEN_STATUSES))
    return status, (FollowUpStatus(status),) if status else None


@bp.get("/rounds/<int:round_id>/followups")
@roles(*SUPERVISORS)
def followups(round_id: int):
    status, wanted = _statuses()
    cadre_id = int_arg("cadre")
    overdue = request.args.get("overdue", "") == "1"
    with runtime().sessions() as session:
        try:
            report = followup_report(
                session, round_id, cadre_id=cadre_id, statuses=wanted, overdue_only=overdue,
                overdue_days=settings().followup_overdue_days,
            )  # fmt: skip
            overview = cadres.cadre_overview(session, round_id, overdue_days=settings().followup_overdue_days)
        except ReportError:
            abort(404, description=gettext("调查 %(id)d 不存在。", id=round_id))
        items = list(report.items)
    choices = [{"id": c.cadre_id, "name": c.cadre} for c in overview.cadres if c.cadre_id is not None]
    return render_template(
        "supervisor/followups.html",
        report=report,
        items=items,
        cadres=choices,
        filters={"status": status, "cadre": cadre_id, "overdue": overdue},
        statuses=FOLLOWUP_FILTERS,
    )


@bp.get("/followups/<int:item_id>")
@roles(*SUPERVISORS)
def followup(item_id: int):
    with runtime().sessions() as session:
        try:
            detail = followup_detail(session, item_id, overdue_days=settings().followup_overdue_days)
        except ReportError:
            abort(404, description=gettext("回访事项 %(id)d 不存在。", id=item_id))
        round_name = session.scalar(select(Round.name).where(Round.id == detail.item.round_id))
    return render_template("supervisor/followup.html", item=detail.item, history=detail.history, round_name=round_name)


# --- spot-checks ------------------------------------------------------------------------------------------


@bp.get("/spot-checks/new")
@roles(*SUPERVISORS)
def spot_check_new():
    form = default_form()
    form.update(sample_kind="cadre", sample_n="2", name=gettext("干部联系情况抽查"))
    return form_page(form, {}, spot_check=True)


@bp.post("/spot-checks")
@roles(*SUPERVISORS)
def spot_check_create():
    form, round_id, errors = create_from_form(sample_kind="cadre")
    if round_id is None:
        return form_page(form, errors, 400, spot_check=True)
    flash(gettext("抽查“%(name)s”已创建（编号 %(id)d），启动后开始拨号。", name=form["name"], id=round_id), "success")
    return redirect(url_for("supervisor.home", round=round_id))


@bp.post("/spot-checks/<int:round_id>/launch")
@roles(*SUPERVISORS)
def spot_check_launch(round_id: int):
    try:
        with session_scope(runtime().sessions) as session:
            round_ = session.get(Round, round_id)
            if round_ is None or not round_.sample.startswith(SPOT_CHECK_PREFIX):
                abort(404, description=gettext("抽查 %(id)d 不存在。", id=round_id))
            change_round(session, round_id, "launch")
            audit_request(session, audit.ROUND_LAUNCH, object_type="round", object_id=round_id)
    except RoundError as exc:
        flash(gettext("无法启动：%(reason)s", reason=str(exc)), "error")
        return redirect(url_for("supervisor.home", round=round_id))
    round_changed(settings(), round_id, "launch")  # after the commit, as the office pages do
    flash(gettext("抽查已启动，开始拨号。"), "success")
    return redirect(url_for("supervisor.home", round=round_id))
