"""What every page shares: the menu, pagination, links that keep the current filters.

For page authors:

- ``nav_entry("pages.home", lazy_gettext("首页"), order=10)`` adds a menu entry. The layout shows an entry
  only to users whose role the endpoint's access rule allows (one rule: the view's own ``@roles``).
- Templates extend ``base.html`` and fill ``{% block title %}`` and ``{% block content %}`` (optionally
  ``{% block head %}`` for a page's own stylesheet, ``{% block scripts %}`` for its own script file, both under
  ``web/static/``). ``macros.html`` has ``csrf_field()``, ``pagination(page)`` and ``field_error(errors, name)``.
  Forms that need a confirmation get ``data-confirm="..."`` (handled by ``static/sanlv.js``, no inline script).
- ``paginate(session, stmt)`` pages a SELECT by ``?page=N`` (400 on a bad number) and gives a :class:`Page`;
  ``url_with(page=3)`` is the current URL with some query parameters changed (filters are kept).
- Template globals: ``nav_items()``, ``may_reach(endpoint, view_args)``, ``home_url()``, ``url_with(...)``,
  ``label(kind, value)`` (kind: role, action, followup, round, target, call), ``language``; filters ``localtime`` and
  ``localdate`` (web.i18n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import Flask, abort, request, url_for
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from web.labels import label
from web.security import home_url, may_reach

PER_PAGE = 50


@dataclass(frozen=True)
class NavEntry:
    endpoint: str
    label: Any  # a lazy_gettext string
    order: int


_NAV: dict[str, NavEntry] = {}


def nav_entry(endpoint: str, label: Any, *, order: int = 100) -> None:
    """Put ``endpoint`` in the menu (shown only to the roles that may reach it)."""
    _NAV[endpoint] = NavEntry(endpoint, label, order)


def nav_items() -> list[dict[str, Any]]:
    active = request.endpoint
    return [
        {"url": url_for(entry.endpoint), "label": str(entry.label), "active": entry.endpoint == active}
        for entry in sorted(_NAV.values(), key=lambda e: (e.order, e.endpoint))
        if may_reach(entry.endpoint)
    ]


def url_with(**changes: Any) -> str:
    """The current page's URL with some query parameters changed (None removes one); the rest are kept."""
    args = request.args.to_dict(flat=False)
    for name, value in changes.items():
        if value is None:
            args.pop(name, None)
        else:
            args[name] = [str(value)]
    if request.endpoint is None:  # an error page for a URL that matches no route
        query = urlencode([(name, value) for name, values in args.items() for value in values])
        return request.path + (f"?{query}" if query else "")
    return url_for(request.endpoint, **(request.view_args or {}), **args)


@dataclass
class Page:
    """One page of a longer list."""

    items: list[Any]
    number: int
    per_page: int
    total: int
    pages: int = field(init=False)

    def __post_init__(self) -> None:
        self.pages = max(1, math.ceil(self.total / self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def page_number() -> int:
    raw = request.args.get("page", "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1 or len(raw) > 9:
        abort(400, description=f"参数 page 必须是正整数 / page must be a whole number >= 1: {raw!r}")
    return int(raw)


def paginate(session: Session, stmt: Select, *, per_page: int = PER_PAGE, scalars: bool = True) -> Page:
    """Run one page of ``stmt`` (already ordered) chosen by ``?page=N``, and count the whole."""
    number = page_number()
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    paged = stmt.limit(per_page).offset((number - 1) * per_page)
    items = list(session.scalars(paged)) if scalars else list(session.execute(paged))
    return Page(items, number, per_page, total)


def init_app(app: Flask) -> None:
    app.add_template_global(nav_items, "nav_items")
    app.add_template_global(may_reach, "may_reach")
    app.add_template_global(home_url, "home_url")
    app.add_template_global(url_with, "url_with")
    app.add_template_global(label, "label")
