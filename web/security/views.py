"""Signing in and out: ``GET/POST /login``, ``POST /logout``."""

from __future__ import annotations

import logging
import math
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext
from flask_login import current_user

from campaigns import accounts, audit
from campaigns.db import session_scope
from web.security.access import public, signed_in
from web.security.sessions import sign_in, sign_out

log = logging.getLogger("sanlv.web")

bp = Blueprint("auth", __name__)

# The home page of each role: where a sign-in lands when there is no ``next``.
HOME_ENDPOINTS = {
    accounts.UserRole.ADMIN: "pages.home",
    accounts.UserRole.OFFICE: "pages.home",
    accounts.UserRole.SUPERVISOR: "supervisor.home",
    accounts.UserRole.CADRE: "cadre.home",
}


def home_url(user=None) -> str:
    """The home page of ``user``'s role (default: the current user; the sign-in page when nobody is)."""
    if user is None:
        if not current_user.is_authenticated:
            return url_for("auth.login")
        user = current_user
    return url_for(HOME_ENDPOINTS[user.role])


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site (never another host: no open redirect), else None."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(char) < 32 or ord(char) == 127 for char in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
@public("the sign-in form")
def login():
    next_path = safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(next_path or home_url())
        return render_template("login.html", next=next_path)

    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    address = request.remote_addr
    throttle = current_app.extensions["sanlv_login_throttle"]
    if not username or not password:
        return _form_error(gettext("请输入用户名和密码。"), username, next_path, 400)
    wait = throttle.wait_seconds(username, address)
    if wait:
        minutes = max(1, math.ceil(wait / 60))
        log.warning("event=login_throttled username=%s remote=%s wait=%s", username, address, wait)
        message = gettext("登录尝试过多，请 %(minutes)d 分钟后再试。", minutes=minutes)
        response = _form_error(message, username, next_path, 429)
        response.headers["Retry-After"] = str(wait)
        return response

    runtime = current_app.extensions["sanlv"]
    with session_scope(runtime.sessions) as db:
        try:
            user = accounts.authenticate(db, username, password)
        except accounts.LoginFailed as failure:
            audit.record(
                db,
                username[:100],
                audit.LOGIN_FAILED,
                object_type="user",
                object_id=username[:100],
                detail={"reason": failure.reason},
                remote_addr=address,
                user_id=failure.user.id if failure.user else None,
            )
            user = None
        else:
            audit.record(db, user, audit.LOGIN, object_type="user", object_id=user.username, remote_addr=address)
    if user is None:
        throttle.failed(username, address)
        return _form_error(gettext("用户名或密码不正确。"), username, next_path, 200)
    sign_in(user)  # only once the sign-in and its audit entry are committed
    throttle.succeeded(username)
    return redirect(next_path or home_url(user))


def _form_error(message: str, username: str, next_path: str | None, status: int):
    response = current_app.make_response(
        render_template("login.html", error=message, username=username, next=next_path)
    )
    response.status_code = status
    return response


@bp.post("/logout")
@signed_in
def logout():
    runtime = current_app.extensions["sanlv"]
    with session_scope(runtime.sessions) as db:
        audit.record(
            db, current_user.username, audit.LOGOUT, remote_addr=request.remote_addr, user_id=current_user.id
        )
    sign_out()
    flash(gettext("您已退出登录。"), "info")
    return redirect(url_for("auth.login"))
