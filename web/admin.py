"""Admin pages: users (list, add, disable, new password) and the audit log (filters, pagination).

Every change goes through ``campaigns.accounts`` and is audited with the signed-in admin as the actor, in the
same transaction.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from campaigns import accounts, audit
from campaigns.db import session_scope
from campaigns.models import User, UserRole
from web.labels import ACTION_LABELS
from web.layout import nav_entry, paginate
from web.security import audit_request, current_user, roles
from web.security.sessions import sign_in

bp = Blueprint("admin", __name__, url_prefix="/admin")

nav_entry("admin.users", _l("用户"), order=80)
nav_entry("admin.audit_log", _l("审计日志"), order=90)

USER_STATES = ("active", "disabled")


def _runtime():
    return current_app.extensions["sanlv"]


# --- users ------------------------------------------------------------------------------------------------


@bp.get("/users")
@roles("admin")
def users():
    return _users_page()


def _users_page(errors: dict[str, str] | None = None, form: dict[str, str] | None = None, status: int = 200):
    query = request.args.get("q", "").strip()
    role = request.args.get("role", "").strip()
    state = request.args.get("state", "").strip()
    stmt = select(User).order_by(User.username)
    if query:
        stmt = stmt.where(User.username.contains(query.lower(), autoescape=True))
    if role in {r.value for r in UserRole}:
        stmt = stmt.where(User.role == UserRole(role))
    if state in USER_STATES:
        stmt = stmt.where(User.disabled.is_(state == "disabled"))
    with _runtime().sessions() as session:
        page = paginate(session, stmt)
        for user in page.items:
            _ = user.cadre  # loaded while the session is open, for the template
    body = render_template(
        "admin/users.html",
        page=page,
        filters={"q": query, "role": role, "state": state},
        roles=list(UserRole),
        errors=errors or {},
        form=form or {},
    )
    return body, status


@bp.post("/users")
@roles("admin")
def add_user():
    form = {name: request.form.get(name, "").strip() for name in ("username", "role", "cadre_id")}
    password, repeat = request.form.get("password", ""), request.form.get("password2", "")
    errors: dict[str, str] = {}
    cadre_id = None
    if form["cadre_id"]:
        if not form["cadre_id"].isdigit() or len(form["cadre_id"]) > 9:
            errors["cadre_id"] = gettext("干部编号必须是数字。")
        else:
            cadre_id = int(form["cadre_id"])
    if password != repeat:
        errors["password2"] = gettext("两次输入的密码不一致。")
    if not errors:
        try:
            with session_scope(_runtime().sessions) as session:
                user = accounts.create_user(session, form["username"], form["role"], password, cadre_id=cadre_id)
                audit_request(
                    session, audit.USER_ADD, object_type="user", object_id=user.username,
                    detail={"role": user.role.value, "cadre": cadre_id},
                )
        except accounts.AccountError as exc:
            errors[exc.field or "form"] = str(exc)
    if errors:
        return _users_page(errors, form, status=400)
    flash(gettext("用户 %(name)s 已添加。", name=user.username), "success")
    return redirect(url_for("admin.users"))


def _user_or_404(session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        abort(404, description=f"用户 {user_id} 不存在 / user {user_id} does not exist")
    return user


@bp.post("/users/<int:user_id>/disable")
@roles("admin")
def disable_user(user_id: int):
    if user_id == current_user.id:
        flash(gettext("不能停用自己的账号。"), "error")
        return redirect(url_for("admin.users"))
    with session_scope(_runtime().sessions) as session:
        user = _user_or_404(session, user_id)
        accounts.disable_user(session, user)
        audit_request(session, audit.USER_DISABLE, object_type="user", object_id=user.username)
        name = user.username
    flash(gettext("用户 %(name)s 已停用，其会话和 API 令牌已失效。", name=name), "success")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/password")
@roles("admin")
def set_password(user_id: int):
    password, repeat = request.form.get("password", ""), request.form.get("password2", "")
    if password != repeat:
        flash(gettext("两次输入的密码不一致。"), "error")
        return redirect(url_for("admin.users"))
    try:
        with session_scope(_runtime().sessions) as session:
            user = _user_or_404(session, user_id)
            accounts.set_password(session, user, password)
            audit_request(session, audit.USER_PASSWORD, object_type="user", object_id=user.username)
    except accounts.AccountError as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.users"))
    if user.id == current_user.id:
        sign_in(user)  # the admin's other sessions end; this one goes on under the new epoch
    flash(gettext("用户 %(name)s 的密码已更改，其他会话已结束。", name=user.username), "success")
    return redirect(url_for("admin.users"))


# --- the audit log ----------------------------------------------------------------------------------------


@bp.get("/audit")
@roles("admin")
def audit_log():
    tz = _runtime().settings.tz
    errors: dict[str, str] = {}
    filters = {name: request.args.get(name, "").strip() for name in ("user", "action", "since", "until")}
    bounds: dict[str, datetime | None] = {"since": None, "until": None}
    for name in ("since", "until"):
        if filters[name]:
            try:
                day = date.fromisoformat(filters[name])
            except ValueError:
                errors[name] = gettext("日期格式应为 2026-05-01。")
                continue
            # Local days: "until 5月3日" includes all of that day.
            start = datetime.combine(day + timedelta(days=1 if name == "until" else 0), time(), tzinfo=tz)
            bounds[name] = start
    if filters["action"] and filters["action"] not in ACTION_LABELS:
        errors["action"] = gettext("没有这种操作。")
    stmt = audit.query(
        since=bounds["since"],
        until=bounds["until"],
        username=filters["user"] or None,
        action=filters["action"] if "action" not in errors else None,
    )
    with _runtime().sessions() as session:
        page = paginate(session, stmt)
    return render_template(
        "admin/audit.html", page=page, filters=filters, errors=errors, actions=ACTION_LABELS
    ), (400 if errors else 200)
