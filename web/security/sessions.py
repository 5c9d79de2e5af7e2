"""Who is asking: the signed-in session (Flask-Login) or an API token, and when a session ends.

- The session cookie is signed (SECRET_KEY), ``HttpOnly``, ``SameSite=Lax``, and ``Secure`` unless the app is
  reached on loopback (decided from PUBLIC_BASE_URL when it is set, else from the request's host).
- A session names its user by :func:`campaigns.accounts.session_key` (id and session epoch): a new password or
  a disabled account ends every session signed in before it.
- A session ends after SANLV_SESSION_IDLE_MINUTES without a request and SANLV_SESSION_MAX_HOURS after signing
  in, whatever happens in between. Both are checked on every request against ``campaigns.clock``.
- ``Authorization: Bearer <token>`` on an ``/api/...`` request authenticates that request alone (no cookie is
  read or set); a request that carries the header is judged by the token only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, flash, g, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_login import AnonymousUserMixin, LoginManager, login_user, logout_user

from campaigns import accounts, clock
from campaigns.db import session_scope
from campaigns.models import User, UserRole
from campaigns.settings import Settings

SIGNED_IN_AT = "sanlv_auth_at"  # session keys: when the user signed in, when they were last seen (epoch seconds)
SEEN_AT = "sanlv_seen_at"
# The last-seen time is rewritten at most this often (seconds), not on every request.
SEEN_RESOLUTION = 60

login_manager = LoginManager()
login_manager.session_protection = "basic"  # "strong" would sign cadres out whenever their phone changes network


@dataclass(frozen=True)
class SignedIn:
    """The user of this request, as Flask-Login and the templates see them (a plain copy of the row)."""

    id: int
    username: str
    role: UserRole
    cadre_id: int | None
    key: str  # accounts.session_key: what the session cookie stores
    via_token: bool = False

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return self.key

    @classmethod
    def of(cls, user: User, *, via_token: bool = False) -> SignedIn:
        return cls(user.id, user.username, user.role, user.cadre_id, accounts.session_key(user), via_token)


class Anonymous(AnonymousUserMixin):
    id = None
    username = None
    role = None
    cadre_id = None
    via_token = False


def _sessions():
    return current_app.extensions["sanlv"].sessions


def bearer_token() -> str | None:
    """The API token of an ``/api/...`` request (``Authorization: Bearer ...``), else None.

    Only the API takes tokens, and only the Bearer scheme: a proxy's own ``Authorization: Basic`` in front of
    the pages leaves the session cookie in charge.
    """
    if not request.path.startswith("/api/"):
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


@login_manager.user_loader
def _load_from_session(key: str) -> SignedIn | None:
    if bearer_token() is not None:
        return None  # a request with a token of its own is judged by it alone, never rescued by a cookie
    with _sessions()() as db:
        user = accounts.user_for_session_key(db, key)
        return SignedIn.of(user) if user is not None else None


@login_manager.request_loader
def _load_from_token(_request) -> SignedIn | None:
    token = bearer_token()
    if token is None:
        return None
    with session_scope(_sessions()) as db:
        user = accounts.user_for_token(db, token)
        if user is None:
            return None
        g.sanlv_token_auth = True
        return SignedIn.of(user, via_token=True)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _SessionCookies(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions; ``Secure`` decided per request, and never set for API-token requests."""

    def __init__(self, settings: Settings):
        self.public_host = urlsplit(settings.public_base_url).hostname if settings.public_base_url else None

    def get_cookie_secure(self, app: Flask) -> bool:
        if request.is_secure:
            return True
        return not is_loopback(self.public_host or request.host.rsplit(":", 1)[0])

    def should_set_cookie(self, app: Flask, session_: Any) -> bool:
        if g.get("sanlv_token_auth"):
            return False
        return super().should_set_cookie(app, session_)


def sign_in(user: User) -> None:
    """Start a fresh session for ``user`` (anything the browser carried before is dropped)."""
    session.clear()
    login_user(SignedIn.of(user))
    now = clock.now().timestamp()
    session[SIGNED_IN_AT] = now
    session[SEEN_AT] = now


def sign_out() -> None:
    logout_user()
    session.clear()


def enforce_timeouts(settings: Settings) -> None:
    """End the session if it has been idle too long or is older than the absolute limit; else note the visit."""
    if "_user_id" not in session or bearer_token() is not None:
        return
    now = clock.now().timestamp()
    signed_in_at, seen_at = session.get(SIGNED_IN_AT), session.get(SEEN_AT)
    if (
        not isinstance(signed_in_at, int | float)
        or not isinstance(seen_at, int | float)
        or now - signed_in_at > settings.session_max_hours * 3600
        or now - seen_at > settings.session_idle_minutes * 60
    ):
        sign_out()
        flash_expired()
        return
    if now - seen_at >= SEEN_RESOLUTION:
        session[SEEN_AT] = now


def flash_expired() -> None:
    from flask_babel import gettext

    flash(gettext("会话已过期，请重新登录。"), "info")


def init_app(app: Flask, settings: Settings) -> None:
    app.config.update(
        SESSION_COOKIE_NAME="sanlv_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.session_interface = _SessionCookies(settings)
    login_manager.anonymous_user = Anonymous
    login_manager.init_app(app)
