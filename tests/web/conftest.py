"""The web app through Flask's test client: signed-in clients of each role, users, CSRF tokens.

Passwords are hashed with argon2id as in production, with the cheapest parameters (``cheap_hashing``): the
library and its checks are the same, only the work factor differs, and the suite signs in hundreds of times.
``tests/web/test_accounts.py`` checks the production parameters themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from campaigns import accounts
from campaigns.models import Cadre, User
from campaigns.runtime import Runtime
from campaigns.settings import Settings
from tests.factories import make_cadre
from web.app import create_app

PASSWORD = "correct horse battery"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture
def web_settings(settings: Settings, redis_url: str) -> Settings:
    """The suite's settings on a Redis flushed for this test (the sign-in throttle counts there)."""
    return replace(settings, redis_url=redis_url, namespace="sanlv-web-test")


@pytest.fixture
def make_app(web_settings: Settings) -> Iterator[Callable[..., Flask]]:
    """Build apps on the test database; ``make_app(session_idle_minutes=5)`` overrides settings."""
    runtimes: list[Runtime] = []

    def build(**over) -> Flask:
        runtime = Runtime(replace(web_settings, **over))
        runtimes.append(runtime)
        app = create_app(runtime)
        app.testing = True
        return app

    yield build
    for runtime in runtimes:
        runtime.dispose()  # close the pool: PostgreSQL connections left open are a ResourceWarning


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()


@dataclass
class People:
    """One user of each role; ``lin`` and ``chen`` are roster cadres, ``lin_user`` is lin's cadre account."""

    admin: User
    office: User
    supervisor: User
    lin_user: User
    chen_user: User
    lin: Cadre
    chen: Cadre

    def of_role(self, role: str) -> User:
        return {"admin": self.admin, "office": self.office, "supervisor": self.supervisor, "cadre": self.lin_user}[
            role
        ]


def add_user(session: Session, username: str, role: str, cadre: Cadre | None = None) -> User:
    return accounts.create_user(session, username, role, PASSWORD, cadre_id=cadre.id if cadre else None)


@pytest.fixture
def people(sessions: sessionmaker[Session]) -> People:
    with sessions.begin() as session:
        lin = make_cadre(session, name="林一", phone="+8613900000011")
        chen = make_cadre(session, name="陈二", phone="+8613900000012")
        found = People(
            admin=add_user(session, "admin", "admin"),
            office=add_user(session, "office1", "office"),
            supervisor=add_user(session, "jiwei", "supervisor"),
            lin_user=add_user(session, "lin", "cadre", lin),
            chen_user=add_user(session, "chen", "cadre", chen),
            lin=lin,
            chen=chen,
        )
    return found


def form_token(client: FlaskClient, path: str = "/login") -> str:
    """The CSRF token of the form on ``path`` (the hidden ``csrf_token`` input)."""
    html = client.get(path).get_data(as_text=True)
    match = CSRF_INPUT.search(html)
    assert match, f"no csrf_token input on {path}"
    return match.group(1)


def page_token(client: FlaskClient) -> str:
    """The CSRF token a page's script sends as X-CSRFToken (the layout's ``<meta name="csrf-token">``).

    Read from the not-found page: every role can see it, and it has no side effect (unlike a cadre's home
    page, whose every view is audited).
    """
    html = client.get("/no-such-page").get_data(as_text=True)
    match = CSRF_META.search(html)
    assert match, "no csrf-token meta in the layout"
    return match.group(1)


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD, **extra: str):
    """Sign in through the login form; afterwards the client sends the CSRF header as a page's script does."""
    response = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": form_token(client), **extra}
    )
    if response.status_code == 302:
        client.environ_base["HTTP_X_CSRFTOKEN"] = page_token(client)
    return response


@pytest.fixture
def client_for(app: Flask) -> Callable[[User | None], FlaskClient]:
    """A new test client, signed in as ``user`` (or anonymous for None)."""

    def make(user: User | None) -> FlaskClient:
        client = app.test_client()
        if user is not None:
            response = sign_in(client, user.username)
            assert response.status_code == 302, response.get_data(as_text=True)
        return client

    return make


@dataclass
class Township:
    """tests.reports.scenarios.visits_township with its follow-ups created, and one user of each role.

    ``lin_item`` is on cadre 林建明's list (user ``lin``), ``chen_item`` on 陈志强's (user ``chen``).
    """

    round_id: int
    lin_id: int
    chen_id: int
    lin_item: int
    chen_item: int
    users: dict[str, User]

    def user(self, role: str) -> User:
        return self.users[role]


@pytest.fixture
def township(sessions: sessionmaker[Session]) -> Township:
    from sqlalchemy import select

    from campaigns.followups import sync_followups
    from campaigns.models import FollowUp
    from tests.reports.scenarios import visits_township

    with sessions.begin() as session:
        visits = visits_township(session)
        sync_followups(session, visits.round.id)
        items = dict(session.execute(select(FollowUp.response_id, FollowUp.id)).all())
        lin, chen = visits.cadres["lin"], visits.cadres["chen"]
        users = {
            "admin": add_user(session, "admin", "admin"),
            "office": add_user(session, "office1", "office"),
            "supervisor": add_user(session, "jiwei", "supervisor"),
            "cadre": add_user(session, "lin", "cadre", lin),
            "chen": add_user(session, "chen", "cadre", chen),
        }
        return Township(
            round_id=visits.round.id,
            lin_id=lin.id,
            chen_id=chen.id,
            lin_item=items[visits.people["A"].id],
            chen_item=items[visits.people["E"].id],
            users=users,
        )
