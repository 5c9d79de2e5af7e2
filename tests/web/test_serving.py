"""Serving settings: timeouts and limits from the environment, trusted proxies, the upload limit."""

from __future__ import annotations

import pytest
from gunicorn.config import Config

from campaigns.settings import Settings, SettingsError, load_settings
from tests.web.conftest import sign_in
from web.server import gunicorn_options


def test_defaults() -> None:
    settings = load_settings({})

    assert (settings.session_idle_minutes, settings.session_max_hours) == (30, 12.0)
    assert settings.trusted_proxies == ("127.0.0.1", "::1")
    assert settings.max_content_length == 20 * 1024 * 1024


def test_values_from_the_environment() -> None:
    settings = load_settings(
        {
            "SANLV_SESSION_IDLE_MINUTES": "15",
            "SANLV_SESSION_MAX_HOURS": "8.5",
            "SANLV_TRUSTED_PROXIES": " 10.1.2.3/8 , 192.0.2.10,::1 ",
            "SANLV_MAX_UPLOAD_MB": "5",
        }
    )

    assert (settings.session_idle_minutes, settings.session_max_hours) == (15, 8.5)
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.10/32", "::1/128")
    assert settings.max_content_length == 5 * 1024 * 1024


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("SANLV_SESSION_IDLE_MINUTES", "0", "must be greater than zero"),
        ("SANLV_SESSION_IDLE_MINUTES", "half an hour", "is not a number"),
        ("SANLV_SESSION_MAX_HOURS", "-1", "must be greater than zero"),
        ("SANLV_TRUSTED_PROXIES", "10.0.0.1,proxy.local", "'proxy.local' is not an IP address or network"),
        ("SANLV_MAX_UPLOAD_MB", "2.5", "is not a number"),
    ],
)
def test_bad_values_name_the_variable(name, value, reason) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({name: value})

    assert str(error.value).startswith(name) and reason in str(error.value)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (None, "SECRET_KEY is required"),
        ("sanlv-demo-only", "is an example value"),
        ("test-secret", "is an example value"),
        ("x" * 31, "SECRET_KEY is 31 characters long; it must have at least 32"),
    ],
)
def test_a_weak_secret_key_is_refused(key, reason) -> None:
    with pytest.raises(SettingsError, match=reason):
        Settings(secret_key=key).require_secret_key()


def test_a_real_secret_key_is_accepted() -> None:
    key = "k" * 32
    assert Settings(secret_key=key).require_secret_key() == key


def test_gunicorn_believes_forwarded_headers_only_from_the_trusted_proxies() -> None:
    options = gunicorn_options("0.0.0.0", 8000, 2, ("10.0.0.0/8", "::1"))
    config = Config()
    for key, value in options.items():
        config.set(key, value)

    assert options["forwarded_allow_ips"] == "10.0.0.0/8,::1"
    assert config.forwarded_allow_ips == ["10.0.0.0/8", "::1"]  # gunicorn parses what we give it


@pytest.mark.parametrize(
    ("peer", "believed"), [("127.0.0.1", True), ("10.9.8.7", True), ("203.0.113.5", False), ("::1", False)]
)
def test_the_app_believes_x_forwarded_for_only_from_trusted_proxies(make_app, people, sessions, peer, believed) -> None:
    from campaigns.models import AuditEntry

    client = make_app(trusted_proxies=("127.0.0.1", "10.0.0.0/8")).test_client()
    client.environ_base["REMOTE_ADDR"] = peer

    sign_in(client, "admin")  # the form's own request comes from the same peer
    client.post("/logout", headers={"X-Forwarded-For": "198.51.100.99"})

    with sessions() as session:
        logout = session.query(AuditEntry).filter_by(action="logout").one()
    assert logout.remote_addr == ("198.51.100.99" if believed else peer)


def test_a_request_larger_than_the_upload_limit_is_refused(make_app, people) -> None:
    client = make_app(max_upload_mb=1).test_client()
    sign_in(client, "admin")

    response = client.post(
        "/admin/users", data={"username": "x" * (1024 * 1024 + 10), "role": "office"}
    )

    assert response.status_code == 413
