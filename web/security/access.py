"""Access rules: every view declares who may reach it; one guard enforces the declarations.

A rule lives on the view function (``@roles(...)`` or ``@public(...)``), or, for views this package does not
own (the static files, the Twilio webhooks), is declared by endpoint name with :func:`declare_public`. The
guard (:func:`guard`, an ``app.before_request``) finds the rule of the endpoint a request is for and:

- public: lets it through (checking CSRF on a form post unless the rule says otherwise);
- no user signed in: a page is redirected to ``/login?next=...``; ``/api/...`` gets 401 JSON;
- **no rule at all: 403 for everyone**, so a route somebody forgot to declare is closed, not open;
- a role the rule does not name: 403;
- ``own_cadre``: a cadre user reaches only the URLs whose cadre parameter is their own cadre; any other
  cadre's URL is 404 (it does not exist for them);
- then CSRF on unsafe methods, except for requests authenticated by an API token (no cookie involved).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, abort, current_app, g, jsonify, redirect, request, url_for
from flask_login import current_user

from campaigns.models import UserRole

log = logging.getLogger("sanlv.web")

F = TypeVar("F", bound=Callable[..., Any])

RULE_ATTRIBUTE = "_sanlv_access"
EXTENSION = "sanlv_access"  # app.extensions[...]: rules declared by endpoint name
ALL_ROLES = frozenset(UserRole)


@dataclass(frozen=True)
class Rule:
    """Who may reach a view.

    Attributes:
        roles: the roles allowed (empty for a public view).
        public: anyone, signed in or not.
        reason: why a public view is public (required, so the decision is written down).
        csrf: check the CSRF token on unsafe methods (False only for callers that prove themselves otherwise,
            such as Twilio's signed webhooks).
        own_cadre: the URL parameter naming a cadre; a cadre user passes only when it is their own cadre.
    """

    roles: frozenset[UserRole] = frozenset()
    public: bool = False
    reason: str = ""
    csrf: bool = True
    own_cadre: str | None = None

    def allows(self, user: Any, view_args: dict[str, Any] | None = None) -> bool:
        """May ``user`` (the signed-in user or the anonymous one) reach a view with this rule?"""
        if self.public:
            return True
        if not getattr(user, "is_authenticated", False) or user.role not in self.roles:
            return False
        if self.own_cadre and user.role is UserRole.CADRE and view_args is not None:
            return view_args.get(self.own_cadre) == user.cadre_id
        return True


def roles(*names: str | UserRole, own_cadre: str | None = None) -> Callable[[F], F]:
    """Declare the roles that may reach a view: ``@roles("admin", "office")``.

    Args:
        names: role names (``admin``, ``office``, ``supervisor``, ``cadre``).
        own_cadre: the URL parameter holding a cadre id; a cadre user may reach only their own (else 404).
    """
    allowed = frozenset(UserRole(name) for name in names)
    if not allowed:
        raise ValueError("roles() needs at least one role; use @public(reason) for a view anyone may reach")
    if own_cadre and UserRole.CADRE not in allowed:
        raise ValueError("own_cadre only makes sense when the cadre role is allowed")
    return _declare(Rule(roles=allowed, own_cadre=own_cadre))


def signed_in(view: F) -> F:
    """Any signed-in user, whatever the role (sign-out, the home page that sends each role to its own)."""
    return _declare(Rule(roles=ALL_ROLES))(view)


def public(reason: str, *, csrf: bool = True) -> Callable[[F], F]:
    """Declare a view anyone may reach, saying why: ``@public("the sign-in form")``."""
    if not reason.strip():
        raise ValueError("public() needs the reason the view is open")
    return _declare(Rule(public=True, reason=reason, csrf=csrf))


def _declare(rule: Rule) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        setattr(view, RULE_ATTRIBUTE, rule)
        return view

    return decorate


def declare_public(app: Flask, endpoints: Iterable[str], reason: str, *, csrf: bool = True) -> None:
    """Declare views this package does not own public, by endpoint name (``static``, ``ivr.voice``)."""
    rules = app.extensions.setdefault(EXTENSION, {})
    for endpoint in endpoints:
        if endpoint not in app.view_functions:
            raise ValueError(f"declare_public: no endpoint {endpoint!r} (was it renamed?)")
        rules[endpoint] = Rule(public=True, reason=reason, csrf=csrf)


def rule_for(endpoint: str, app: Flask | None = None) -> Rule | None:
    """The rule of ``endpoint``, or None when nobody declared one (the guard then refuses it)."""
    app = app or current_app
    declared = app.extensions.get(EXTENSION, {}).get(endpoint)
    if declared is not None:
        return declared
    view = app.view_functions.get(endpoint)
    return getattr(view, RULE_ATTRIBUTE, None)


def may_reach(endpoint: str, view_args: dict[str, Any] | None = None, user: Any = None) -> bool:
    """Would the guard let ``user`` (default: the current user) through to ``endpoint``? For menus and links."""
    rule = rule_for(endpoint)
    return rule is not None and rule.allows(current_user if user is None else user, view_args)


def is_api_request() -> bool:
    """JSON answers (errors included) for the API and the webhooks; HTML pages for everything else."""
    return request.path.startswith(("/api/", "/ivr/"))


def unauthenticated():
    """A page asks the browser to sign in; the API answers 401."""
    if request.path.startswith("/api/"):
        response = jsonify(
            error="Unauthorized",
            description="请先登录，或使用 Authorization: Bearer 令牌 / sign in, or send an Authorization: Bearer token",
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="sanlv"'
        return response
    next_path = request.full_path.rstrip("?") if request.method in ("GET", "HEAD") else None
    return redirect(url_for("auth.login", next=next_path))


def guard(protect_csrf: Callable[[], None]) -> Callable[[], Any]:
    """The ``before_request`` that enforces every view's rule (see the module docstring)."""

    def check():
        endpoint = request.endpoint
        if endpoint is None:
            return None  # no such route: the 404 or 405 follows
        rule = rule_for(endpoint)
        if rule is not None and rule.public:
            if rule.csrf:
                protect_csrf()
            return None
        if not current_user.is_authenticated:
            return unauthenticated()
        if rule is None:
            log.error("event=undeclared_route endpoint=%s path=%s", endpoint, request.path)
            abort(403, description="此页面尚未设置访问权限 / this route declares no access rule")
        if current_user.role not in rule.roles:
            abort(403, description="您的角色无权访问此页面 / your role may not use this page")
        if not rule.allows(current_user, request.view_args):
            abort(404, description="不存在 / not found")
        if not g.get("sanlv_token_auth"):
            protect_csrf()
        return None

    return check
