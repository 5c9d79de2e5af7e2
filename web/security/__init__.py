"""The lock: nothing but the webhooks, the sign-in page, health checks and static files without signing in.

For page and API authors, everything needed is here:

- ``@roles("admin", "office")`` on a view: who may reach it. ``@roles(..., "cadre", own_cadre="cadre_id")``:
  a cadre user only for their own cadre's URLs (another cadre's is 404). ``@signed_in``: any role.
  ``@public("why")``: anyone (write down why). **A view with none of these is refused (403) for everyone**,
  and ``tests/web/test_access.py`` fails until the route is in its table of who may reach what.
- ``current_user`` (flask_login): ``.username``, ``.role`` (a :class:`campaigns.models.UserRole`),
  ``.cadre_id``, ``.id``; ``.is_authenticated``.
- ``may_reach(endpoint, view_args)``: whether the current user would be let through (menus, buttons).
- ``audit_request(session, action, ...)``: an audit-log entry for the current user and address.
- ``home_url()``: the current user's home page.
- Forms: every POST from a page carries the ``csrf_token`` (``{{ csrf_field() }}`` in a form, or the
  ``X-CSRFToken`` header from JavaScript, read from ``<meta name="csrf-token">`` in the layout). A missing or
  wrong token is 400. API calls with a Bearer token need none.
- Every response of a non-public view carries ``Cache-Control: no-store``; pages get a strict
  Content-Security-Policy (no inline script or style: put them in ``web/static/``).

The parts: :mod:`web.security.access` (rules and the guard), :mod:`web.security.sessions` (Flask-Login,
cookies, timeouts, API tokens), :mod:`web.security.throttle` (sign-in throttling), :mod:`web.security.views`
(``/login``, ``/logout``), :mod:`web.security.proxy` (trusted forwarded headers).
"""

from __future__ import annotations

from flask import Flask, request
from flask_login import current_user
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import Session

from campaigns import audit
from campaigns.models import AuditEntry
from campaigns.settings import Settings
from web.security import sessions
from web.security.access import (
    declare_public,
    guard,
    is_api_request,
    may_reach,
    public,
    roles,
    rule_for,
    signed_in,
)
from web.security.throttle import LoginThrottle
from web.security.views import bp, home_url

__all__ = [
    "audit_request",
    "csrf",
    "current_user",
    "declare_public",
    "home_url",
    "init_app",
    "is_api_request",
    "may_reach",
    "public",
    "roles",
    "rule_for",
    "signed_in",
]

csrf = CSRFProtect()

# Pages may load only what the app serves itself: no CDN, no inline script (county networks are closed anyway).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def audit_request(session: Session, action: str, **fields) -> AuditEntry:
    """Record ``action`` by the current user, from the request's address (see campaigns.audit.record)."""
    return audit.record(
        session, current_user.username, action, remote_addr=request.remote_addr, user_id=current_user.id, **fields
    )


def init_app(app: Flask, settings: Settings) -> None:
    app.config.update(
        # CSRF is checked by the access guard, after it knows who is asking (token requests are exempt).
        WTF_CSRF_CHECK_DEFAULT=False,
        # A token lives as long as the session (whose own timeouts apply), not one hour: a cadre may keep a
        # page open all afternoon before marking a visit.
        WTF_CSRF_TIME_LIMIT=None,
    )
    csrf.init_app(app)
    sessions.init_app(app, settings)
    app.extensions["sanlv_login_throttle"] = LoginThrottle(settings)

    @app.before_request
    def _timeouts():
        sessions.enforce_timeouts(settings)

    app.before_request(guard(csrf.protect))
    app.register_blueprint(bp)

    @app.after_request
    def _headers(response):
        endpoint = request.endpoint
        rule = rule_for(endpoint) if endpoint else None
        if rule is None or not rule.public:
            response.headers["Cache-Control"] = "no-store"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html" and not is_api_request():
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response
