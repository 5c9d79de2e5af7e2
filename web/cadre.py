"""A cadre's pages, phone-first (360 px wide, 44 px touch targets): their own follow-ups and nothing else.

- ``/my``: every item of the cadre's own list, across rounds: what needs doing first (pending, the overdue
  ones on top), then visited, then the finished ones; each with a tap-to-call link (``tel:``, the full number:
  it is their own list).
- ``/my/<item>``: one item, the buttons its status allows (visited / resolved / unreachable) with a note, and
  its history. Another cadre's item, or one that does not exist, is 404 (it does not exist for them).
- ``POST /my/<item>/status``: the change, recorded as done by the signed-in user (CSRF-checked as every form).

Every view of these pages (full phone numbers) and every change is in the audit log. A cadre never sees a
contact-rate (重视率) figure: it is about them, and it is for supervisors only.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l

from campaigns import audit
from campaigns.db import session_scope
from campaigns.followups import NOTE_MAX_LENGTH, TRANSITIONS, FollowUpError, mark_followup
from campaigns.models import FollowUp, FollowUpStatus
from reports.followups import cadre_list, followup_detail
from reports.rates import ReportError
from web.labels import label
from web.layout import nav_entry
from web.office.common import runtime, settings
from web.security import audit_request, current_user, roles

bp = Blueprint("cadre", __name__, url_prefix="/my")

nav_entry("cadre.home", _l("我的回访"), order=10)

# A cadre's list: what needs doing first, then what is done.
STATUS_ORDER = {
    FollowUpStatus.PENDING: 0,
    FollowUpStatus.VISITED: 1,
    FollowUpStatus.UNREACHABLE: 2,
    FollowUpStatus.RESOLVED: 3,
}
ACTIONS = (FollowUpStatus.VISITED, FollowUpStatus.RESOLVED, FollowUpStatus.UNREACHABLE)


@bp.get("")
@roles("cadre")
def home():
    with session_scope(runtime().sessions) as session:
        report = cadre_list(session, current_user.cadre_id, overdue_days=settings().followup_overdue_days)
        audit_request(
            session, audit.PHONES_VIEW, object_type="cadre", object_id=current_user.cadre_id,
            detail={"page": "my", "items": len(report.items)},
        )  # fmt: skip
    entries = sorted(
        report.items,
        key=lambda entry: (STATUS_ORDER[FollowUpStatus(entry.item.status)], not entry.item.overdue,
                           entry.item.created_at, entry.item.id),
    )  # fmt: skip
    return render_template("cadre/home.html", summary=report.summary, entries=entries)


def _own_item(session, item_id: int):
    """The item when it is on the signed-in cadre's own list; 404 otherwise (another cadre's does not exist)."""
    found = session.get(FollowUp, item_id)
    if found is None or found.cadre_id != current_user.cadre_id:
        abort(404, description=gettext("回访事项 %(id)d 不存在。", id=item_id))
    try:
        return followup_detail(session, item_id, reveal_phones=True, overdue_days=settings().followup_overdue_days)
    except ReportError:
        abort(404, description=gettext("回访事项 %(id)d 不存在。", id=item_id))


def _item_page(item_id: int, *, errors: dict[str, str] | None = None, note: str = "", status: int = 200):
    with session_scope(runtime().sessions) as session:
        detail = _own_item(session, item_id)
        audit_request(session, audit.PHONES_VIEW, object_type="followup", object_id=item_id, detail={"page": "my-item"})
    allowed = [s for s in ACTIONS if s in TRANSITIONS[FollowUpStatus(detail.item.status)]]
    body = render_template(
        "cadre/item.html",
        item=detail.item,
        history=detail.history,
        actions=allowed,
        errors=errors or {},
        note=note,
        note_max=NOTE_MAX_LENGTH,
    )
    return body, status


@bp.get("/<int:item_id>")
@roles("cadre")
def item(item_id: int):
    return _item_page(item_id)


@bp.post("/<int:item_id>/status")
@roles("cadre")
def mark(item_id: int):
    status = request.form.get("status", "").strip()
    note = request.form.get("note", "")
    if status not in {s.value for s in ACTIONS}:
        return _item_page(item_id, errors={"status": gettext("请选择走访结果。")}, note=note, status=400)
    try:
        with session_scope(runtime().sessions) as session:
            mark_followup(session, item_id, status, note, actor=current_user.username, cadre_id=current_user.cadre_id)
            audit_request(
                session, audit.FOLLOWUP_MARK, object_type="followup", object_id=item_id,
                detail={"status": status, "note": note.strip() or None, "cadre": current_user.cadre_id},
            )  # fmt: skip
    except FollowUpError as exc:
        if exc.not_found:
            abort(404, description=gettext("回访事项 %(id)d 不存在。", id=item_id))
        return _item_page(item_id, errors={"status": str(exc)}, note=note, status=409)
    flash(gettext("已记录：%(status)s。", status=label("followup", status)), "success")
    return redirect(url_for("cadre.home"))
