"""The signed-in home page of each role. The office, supervisor and cadre pages grow from here.

- ``/``: the office home (admin, office; ``web.office.home``); any other role is sent to its own home.
- ``/supervisor``: the supervisors' home (admin, supervisor).
- ``/my``: a cadre's own follow-ups, full phone numbers (cadre only; every view is audited).
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from campaigns import audit
from campaigns.db import session_scope
from campaigns.models import FollowUpStatus, Round, UserRole
from reports.followups import cadre_list
from web.layout import nav_entry
from web.office.home import render_home
from web.security import audit_request, current_user, home_url, roles, signed_in

bp = Blueprint("pages", __name__)

nav_entry("pages.supervisor", _l("督查"), order=20)
nav_entry("pages.my_followups", _l("我的回访"), order=10)

OFFICE_ROLES = (UserRole.ADMIN, UserRole.OFFICE)
# A cadre's list: what needs doing first, then what is done.
STATUS_ORDER = {FollowUpStatus.PENDING: 0, FollowUpStatus.VISITED: 1, FollowUpStatus.UNREACHABLE: 2,
                FollowUpStatus.RESOLVED: 3}


def _runtime():
    return current_app.extensions["sanlv"]


@bp.get("/")
@signed_in
def home():
    if current_user.role not in OFFICE_ROLES:
        return redirect(home_url())
    return render_home()


@bp.get("/supervisor")
@roles("admin", "supervisor")
def supervisor():
    with _runtime().sessions() as session:
        rounds = session.scalars(select(Round).order_by(Round.created_at.desc(), Round.id.desc()).limit(10)).all()
    return render_template("supervisor.html", rounds=rounds)


@bp.get("/my")
@roles("cadre")
def my_followups():
    runtime = _runtime()
    with session_scope(runtime.sessions) as session:
        report = cadre_list(
            session, current_user.cadre_id, overdue_days=runtime.settings.followup_overdue_days
        ).to_json()
        audit_request(
            session, audit.PHONES_VIEW, object_type="cadre", object_id=current_user.cadre_id,
            detail={"page": "my", "items": len(report["items"])},
        )
    items = sorted(
        report["items"], key=lambda item: (STATUS_ORDER[FollowUpStatus(item["status"])], not item["overdue"])
    )
    return render_template("my_followups.html", report=report, items=items)
