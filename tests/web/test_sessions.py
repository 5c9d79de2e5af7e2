"""Signing in and out, CSRF, sign-in throttling (real Redis), session timeouts and the session epoch, cookies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import select

from campaigns import accounts
from campaigns.clock import set_clock_file
from campaigns.models import User
from tests.web.conftest import PASSWORD, form_token, page_token, sign_in
from web.security.sessions import SEEN_AT, SIGNED_IN_AT


def signed_out(response) -> bool:
    return response.status_code == 302 and response.headers["Location"].startswith("/login")


# --- the sign-in form -------------------------------------------------------------------------------------


def test_the_login_page_has_the_form_the_contract_names(app) -> None:
    page = app.test_client().get("/login")

    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for field in ('name="username"', 'name="password"', 'type="hidden" name="csrf_token"'):
        assert field in html
    assert "登录" in html


def test_signing_in_redirects_and_signing_out_ends_the_session(app, people) -> None:
    client = app.test_client()

    response = sign_in(client, "Office1")  # names are not case-sensitive

    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout").status_code == 302
    assert signed_out(client.get("/"))
    assert "已退出" in client.get("/login").get_data(as_text=True)


@pytest.mark.parametrize(
    ("username", "password"), [("office1", "wrong password!"), ("nobody", PASSWORD), ("OFFICE1", "")]
)
def test_a_wrong_name_or_password_is_one_message_and_no_session(app, people, username, password) -> None:
    client = app.test_client()

    response = sign_in(client, username, password)

    assert response.status_code in (200, 400)
    html = response.get_data(as_text=True)
    assert "用户名或密码不正确" in html or "请输入用户名和密码" in html
    assert signed_out(client.get("/"))


def test_a_disabled_user_cannot_sign_in(app, people, sessions) -> None:
    with sessions.begin() as session:
        accounts.disable_user(session, session.get(User, people.office.id))

    response = sign_in(app.test_client(), "office1")

    assert response.status_code == 200 and "用户名或密码不正确" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("next_value", "lands"),
    [
        ("/admin/audit?user=lin", "/admin/audit?user=lin"),
        ("//evil.example.com/x", "/"),
        ("https://evil.example.com/", "/"),
        ("/\\evil.example.com", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nLocation: https://evil.example.com", "/"),
        ("", "/"),
    ],
)
def test_next_is_followed_only_within_the_site(app, people, next_value, lands) -> None:
    response = sign_in(app.test_client(), "admin", next=next_value)

    assert response.status_code == 302 and response.headers["Location"] == lands


# --- CSRF ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
def test_a_login_post_without_the_right_token_is_400(app, people, token) -> None:
    client = app.test_client()
    client.get("/login")
    data = {"username": "admin", "password": PASSWORD}
    if token is not None:
        data["csrf_token"] = token

    response = client.post("/login", data=data)

    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert signed_out(client.get("/"))


def test_signed_in_posts_need_the_token_too(app, people, sessions) -> None:
    client = app.test_client()
    assert sign_in(client, "admin").status_code == 302
    del client.environ_base["HTTP_X_CSRFTOKEN"]
    form = {"username": "newbie", "role": "office", "password": PASSWORD, "password2": PASSWORD}

    missing = client.post("/admin/users", data=form)
    wrong = client.post("/admin/users", data={**form, "csrf_token": "forged"})
    api_missing = client.post("/api/followups/1/status", json={"status": "visited"})
    api_wrong = client.post("/api/followups/1/status", json={"status": "visited"}, headers={"X-CSRFToken": "forged"})
    logout = client.post("/logout")

    assert missing.status_code == wrong.status_code == 400
    assert api_missing.status_code == api_wrong.status_code == 400
    assert "CSRF" in api_missing.get_json()["description"]
    assert logout.status_code == 400 and client.get("/").status_code == 200  # still signed in
    with sessions() as session:
        assert session.scalar(select(User).where(User.username == "newbie")) is None
    added = client.post("/admin/users", data={**form, "csrf_token": form_token(client, "/admin/users")})
    assert added.status_code == 302


def test_a_token_from_another_session_is_refused(app, people) -> None:
    mine, theirs = app.test_client(), app.test_client()
    sign_in(mine, "admin")
    sign_in(theirs, "office1")

    response = mine.post("/logout", data={"csrf_token": page_token(theirs)}, headers={"X-CSRFToken": ""})

    assert response.status_code == 400


# --- sign-in throttling -------------------------------------------------------------------------------------


def fail(client, username: str, address: str = "198.51.100.7"):
    return client.post(
        "/login",
        data={"username": username, "password": "not the password", "csrf_token": form_token(client)},
        headers={"X-Forwarded-For": address},  # the test client connects from 127.0.0.1, a trusted proxy
    )


def test_an_account_is_throttled_after_five_failures(app, people, redis_conn) -> None:
    client = app.test_client()
    for _ in range(5):
        assert fail(client, "office1").status_code == 200

    blocked = client.post(
        "/login",
        data={"username": "office1", "password": PASSWORD, "csrf_token": form_token(client)},
        headers={"X-Forwarded-For": "203.0.113.9"},  # even from elsewhere, even with the right password
    )

    assert blocked.status_code == 429
    assert "登录尝试过多，请 15 分钟后再试" in blocked.get_data(as_text=True)
    assert 800 < int(blocked.headers["Retry-After"]) <= 900
    assert signed_out(client.get("/"))
    assert any(key.startswith(b"sanlv-web-test-login") for key in redis_conn.keys("*"))  # counted in Redis
    assert sign_in(app.test_client(), "admin").status_code == 302  # other accounts are not affected


def test_an_address_is_throttled_after_twenty_failures(app, people) -> None:
    client = app.test_client()
    for number in range(20):
        assert fail(client, f"guess{number}").status_code == 200

    same_address = fail(client, "office1")
    elsewhere = client.post(
        "/login",
        data={"username": "office1", "password": PASSWORD, "csrf_token": form_token(client)},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )

    assert same_address.status_code == 429
    assert elsewhere.status_code == 302


def test_the_throttle_is_shared_by_every_app_process(make_app, people) -> None:
    first, second = make_app().test_client(), make_app().test_client()
    for _ in range(3):
        fail(first, "office1")
    for _ in range(2):
        fail(second, "office1")

    assert fail(first, "office1").status_code == 429


def test_a_successful_sign_in_clears_the_account_count(app, people) -> None:
    client = app.test_client()
    for _ in range(4):
        fail(client, "office1")
    assert sign_in(app.test_client(), "office1").status_code == 302

    for _ in range(4):
        assert fail(client, "office1").status_code == 200


def test_without_redis_the_throttle_counts_in_memory(make_app, people, caplog) -> None:
    app = make_app(redis_url="redis://127.0.0.1:1/0")  # nothing listens there
    client = app.test_client()
    for _ in range(5):
        assert fail(client, "office1").status_code == 200

    assert fail(client, "office1").status_code == 429
    assert "event=login_throttle_local" in caplog.text
    assert sign_in(app.test_client(), "admin").status_code == 302


def test_the_throttle_keys_in_redis_expire_by_themselves(redis_conn) -> None:
    # Nothing is left behind in the shared Redis forever: every count has the window as its lifetime.
    from limits import parse

    from campaigns.settings import Settings
    from web.security.throttle import LoginThrottle

    url = redis_conn.connection_pool.connection_kwargs
    throttle = LoginThrottle(Settings(redis_url=f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"))
    throttle.failed("someone", "192.0.2.1")

    keys = redis_conn.keys("sanlv-login*")
    assert keys and all(0 < redis_conn.ttl(key) <= parse("5/15minutes").get_expiry() for key in keys)


# --- timeouts -------------------------------------------------------------------------------------------------


@pytest.fixture
def clock(tmp_path, monkeypatch):
    """Control campaigns.clock for the app: returns a function that sets the time."""
    path = tmp_path / "clock"
    monkeypatch.setenv("SANLV_CLOCK_FILE", str(path))
    start = datetime(2026, 5, 4, 1, 0, tzinfo=UTC)

    def set_to(minutes: float = 0) -> None:
        set_clock_file(path, start + timedelta(minutes=minutes))

    set_to(0)
    return set_to


def test_an_idle_session_ends_after_the_idle_limit(make_app, people, clock) -> None:
    client = make_app(session_idle_minutes=30).test_client()
    sign_in(client, "office1")

    clock(29)
    assert client.get("/").status_code == 200  # active again: the idle time starts over
    clock(58)
    assert client.get("/").status_code == 200
    clock(88.5)
    expired = client.get("/")

    assert signed_out(expired)
    assert "会话已过期" in client.get("/login").get_data(as_text=True)
    assert signed_out(client.get("/"))


def test_a_busy_session_still_ends_at_the_absolute_limit(make_app, people, clock) -> None:
    client = make_app(session_idle_minutes=30, session_max_hours=2).test_client()
    sign_in(client, "office1")

    for minutes in range(20, 120, 20):
        clock(minutes)
        assert client.get("/").status_code == 200, minutes
    clock(121)

    assert signed_out(client.get("/"))


def test_a_session_with_forged_old_timestamps_is_ended(app, people) -> None:
    client = app.test_client()
    sign_in(client, "office1")
    with client.session_transaction() as stored:
        stored[SEEN_AT] = stored[SEEN_AT] - 31 * 60

    assert signed_out(client.get("/"))

    sign_in(client, "office1")
    with client.session_transaction() as stored:
        del stored[SIGNED_IN_AT]

    assert signed_out(client.get("/"))


def test_an_expired_api_session_gets_401(make_app, people, clock) -> None:
    client = make_app(session_idle_minutes=5).test_client()
    sign_in(client, "office1")
    clock(6)

    assert client.get("/api/rounds").status_code == 401


# --- the session epoch: a new password ends the other sessions ---------------------------------------------


def test_a_new_password_from_the_command_line_ends_every_session(app, people, sessions) -> None:
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop, "office1")
    sign_in(phone, "office1")
    with sessions.begin() as session:
        accounts.set_password(session, accounts.get_user(session, "office1"), "a brand new password")

    assert signed_out(laptop.get("/")) and signed_out(phone.get("/"))
    assert sign_in(laptop, "office1").status_code == 200  # the old password no longer works
    assert sign_in(laptop, "office1", "a brand new password").status_code == 302


def test_an_admin_changing_their_own_password_keeps_this_session_only(app, people) -> None:
    here, elsewhere = app.test_client(), app.test_client()
    sign_in(here, "admin")
    sign_in(elsewhere, "admin")

    changed = here.post(
        f"/admin/users/{people.admin.id}/password",
        data={"password": "another long password", "password2": "another long password"},
    )

    assert changed.status_code == 302
    assert here.get("/admin/users").status_code == 200
    assert signed_out(elsewhere.get("/admin/users"))


def test_disabling_a_user_ends_their_sessions(app, people) -> None:
    admin, office = app.test_client(), app.test_client()
    sign_in(admin, "admin")
    sign_in(office, "office1")

    assert admin.post(f"/admin/users/{people.office.id}/disable").status_code == 302

    assert signed_out(office.get("/"))


# --- cookies --------------------------------------------------------------------------------------------------


def session_cookie_header(response) -> str:
    [cookie] = [value for value in response.headers.getlist("Set-Cookie") if value.startswith("sanlv_session=")]
    return cookie


@pytest.mark.parametrize(
    ("public_base_url", "host", "secure"),
    [
        ("http://127.0.0.1:5000", "127.0.0.1", False),
        ("https://survey.example.cn", "127.0.0.1", True),  # behind a proxy that says 127.0.0.1: still Secure
        (None, "localhost", False),
        (None, "survey.example.cn", True),
        (None, "[::1]:8000", False),
    ],
)
def test_session_cookies_are_httponly_lax_and_secure_outside_loopback(
    make_app, people, public_base_url, host, secure
) -> None:
    client = make_app(public_base_url=public_base_url).test_client()
    base = f"http://{host}"

    response = client.post(
        f"{base}/login",
        data={"username": "admin", "password": PASSWORD, "csrf_token": form_token(client, f"{base}/login")},
    )

    assert response.status_code == 302
    cookie = session_cookie_header(response)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert ("Secure" in cookie) is secure


def test_signed_in_responses_are_not_stored_by_caches(app, people) -> None:
    client = app.test_client()
    sign_in(client, "admin")

    for path in ("/", "/admin/users", "/api/rounds"):
        assert client.get(path).headers["Cache-Control"] == "no-store", path
    page = client.get("/")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"


def test_the_throttle_never_needs_redis_at_import(monkeypatch) -> None:
    # Nothing connects at import time or when the app is built: a Redis that is down does not stop the app.
    calls = []
    monkeypatch.setattr(redis.Redis, "execute_command", lambda *a, **k: calls.append(a))
    from campaigns.settings import Settings
    from web.security.throttle import LoginThrottle

    LoginThrottle(Settings())

    assert calls == []
