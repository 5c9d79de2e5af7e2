"""API tokens: made with ``sanlv user token``, sent as ``Authorization: Bearer``, stored only as a hash."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, text

from campaigns.models import ApiToken
from tests.web.conftest import sign_in


def sanlv(*args: str, input: str | None = None) -> Result:
    from web.cli import main

    return CliRunner().invoke(main, list(args), input=input)


@pytest.fixture
def token_of(env, township):
    """Issue a token for a user through the CLI, as an operator would."""

    def issue(username: str) -> str:
        result = sanlv("user", "token", username)
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    return issue


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_valid_token_reads_and_writes_without_a_cookie_or_csrf(app, township, token_of, sessions) -> None:
    token = token_of("office1")
    client = app.test_client()

    rounds = client.get("/api/rounds", headers=bearer(token))
    marked = client.post(
        f"/api/followups/{township.lin_item}/status", json={"status": "visited"}, headers=bearer(token)
    )

    assert rounds.status_code == 200 and rounds.get_json()["rounds"][0]["id"] == township.round_id
    assert "Set-Cookie" not in rounds.headers and "Set-Cookie" not in marked.headers
    assert marked.status_code == 200 and marked.get_json()["history"][-1]["actor"] == "office1"
    assert client.get("/api/rounds").status_code == 401  # the token was not turned into a session
    with sessions() as session:
        assert session.scalar(select(ApiToken.last_used_at)) is not None


def test_only_the_hash_of_a_token_is_stored(township, token_of, engine) -> None:
    token = token_of("office1")

    with engine.connect() as conn:
        rows = [tuple(map(str, row)) for row in conn.execute(text("SELECT * FROM api_tokens"))]
    assert rows and rows[0][2] == hashlib.sha256(token.encode()).hexdigest()
    assert not any(token in value for row in rows for value in row)


@pytest.mark.parametrize("header", ["Bearer sanlv_wrong", "Bearer ", "Basic b2ZmaWNlMTpwdw==", "Bearer " + "x" * 500])
def test_a_wrong_token_is_401(app, township, token_of, header) -> None:
    token_of("office1")

    response = app.test_client().get("/api/rounds", headers={"Authorization": header})

    assert response.status_code == 401


def test_a_revoked_token_is_401(app, township, token_of) -> None:
    token = token_of("office1")
    client = app.test_client()
    assert client.get("/api/rounds", headers=bearer(token)).status_code == 200

    revoked = sanlv("user", "revoke-tokens", "office1")

    assert revoked.exit_code == 0 and "1" in revoked.stdout
    assert client.get("/api/rounds", headers=bearer(token)).status_code == 401
    assert client.get("/api/rounds", headers=bearer(token_of("office1"))).status_code == 200  # a new one works


def test_the_token_of_a_disabled_user_is_401(app, township, token_of) -> None:
    token = token_of("office1")

    assert sanlv("user", "disable", "office1").exit_code == 0

    assert app.test_client().get("/api/rounds", headers=bearer(token)).status_code == 401


def test_a_token_has_its_users_role(app, township, token_of) -> None:
    client = app.test_client()
    cadre = bearer(token_of("lin"))
    supervisor = bearer(token_of("jiwei"))

    assert client.get(f"/api/cadres/{township.lin_id}/followups", headers=cadre).status_code == 200
    assert client.get(f"/api/cadres/{township.chen_id}/followups", headers=cadre).status_code == 404
    assert client.get("/api/rounds", headers=cadre).status_code == 403
    assert client.get("/api/rounds", headers=supervisor).status_code == 200
    assert client.post(
        f"/api/followups/{township.lin_item}/status", json={"status": "visited"}, headers=supervisor
    ).status_code == 403


def test_a_token_opens_the_api_only_not_the_pages(app, township, token_of) -> None:
    response = app.test_client().get("/admin/users", headers=bearer(token_of("admin")))

    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_a_request_with_a_bad_token_is_not_rescued_by_a_session_cookie(app, township) -> None:
    client = app.test_client()
    sign_in(client, "office1")
    assert client.get("/api/rounds").status_code == 200

    assert client.get("/api/rounds", headers=bearer("sanlv_wrong")).status_code == 401


def test_a_token_for_an_unknown_user_is_refused_in_one_line(env) -> None:
    result = sanlv("user", "token", "ghost")

    assert result.exit_code == 1 and result.stderr.strip() == "Error: 用户 ghost 不存在 / user ghost does not exist"


def test_a_proxys_basic_authorization_does_not_hide_the_session_from_the_pages(app, township) -> None:
    client = app.test_client()
    sign_in(client, "admin")
    proxy_login = {"Authorization": "Basic b2ZmaWNlOnB3"}  # what a proxy's own password prompt adds

    assert client.get("/admin/users", headers=proxy_login).status_code == 200
    assert client.get("/api/rounds", headers=proxy_login).status_code == 200
