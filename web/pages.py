"""The signed-in home page: ``/`` is the office home (admin, office; ``web.office.home``); any other role is
sent to its own home (supervisors: ``web.supervisor``; cadres: ``web.cadre``).
"""

from __future__ import annotations

from flask import Blueprint, redirect

from campaigns.models import UserRole
from web.office.home import render_home
from web.security import current_user, home_url, signed_in

bp = Blueprint("pages", __name__)

OFFICE_ROLES = (UserRole.ADMIN, UserRole.OFFICE)


@bp.get("/")
@signed_in
def home():
    if current_user.role not in OFFICE_ROLES:
        return redirect(home_url())
    return render_home()
