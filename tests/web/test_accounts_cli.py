"""``sanlv user ...``, ``sanlv audit`` and ``sanlv web``'s SECRET_KEY check through the console script; the
accounts' rules in campaigns.accounts."""

from __future__ import annotations

import json

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner, Result
from sqlalchemy import select

from campaigns import accounts
from campaigns.models import User
from tests.campaigns.test_cli import one_line_error
from tests.factories import make_cadre

PASSWORD = "correct horse battery"


def sanlv(*args: str, input: str | None = None) -> Result:
    from web.cli import main

    return CliRunner().invoke(main, list(args), input=input)


def stored(sessions, username: str) -> User | None:
    with sessions() as session:
        return session.scalar(select(User).where(User.username == username))


@pytest.fixture
def cadre_id(env, sessions) -> int:
    with sessions.begin() as session:
        return make_cadre(session, name="林建明").id


# --- user add ---------------------------------------------------------------------------------------------


def test_the_first_admin_is_made_with_a_hidden_prompt_asked_twice(env, sessions) -> None:
    result = sanlv("user", "add", "Zhang.San", "--role", "admin", input=f"{PASSWORD}\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output  # hidden input is not echoed
    assert "repeat" in result.stderr
    assert "zhang.san" in result.stdout
    user = stored(sessions, "zhang.san")
    assert user.role.value == "admin" and not user.disabled and user.cadre_id is None
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash


def test_two_different_passwords_are_not_accepted(env, sessions) -> None:
    result = sanlv("user", "add", "office1", "--role", "office", input=f"{PASSWORD}\nsomething else!!\n")

    assert result.exit_code != 0
    assert stored(sessions, "office1") is None


def test_a_cadre_user_from_stdin(env, sessions, cadre_id) -> None:
    result = sanlv("user", "add", "lin", "--role", "cadre", "--cadre", str(cadre_id), "--password-stdin",
                   input=f"{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert stored(sessions, "lin").cadre_id == cadre_id
    with sessions() as session:
        assert accounts.authenticate(session, "lin", PASSWORD).username == "lin"


@pytest.mark.parametrize(
    ("args", "password", "reason"),
    [
        (["lin", "--role", "cadre"], PASSWORD, "a cadre user needs a cadre"),
        (["lin", "--role", "cadre", "--cadre", "999"], PASSWORD, "cadre 999 does not exist"),
        (["office2", "--role", "office", "--cadre", "{cadre}"], PASSWORD, "only a cadre user is linked to a cadre"),
        (["a b", "--role", "office"], PASSWORD, "username 'a b' must be 2 to 50"),
        (["x", "--role", "office"], PASSWORD, "must be 2 to 50"),
        (["office2", "--role", "office"], "short", "at least 10 characters"),
        (["office2", "--role", "office"], "office2", "at least 10 characters"),
        (["office2345678", "--role", "office"], "OFFICE2345678", "must not be the username"),
    ],
)
def test_bad_users_are_refused_in_one_line(env, sessions, cadre_id, args, password, reason) -> None:
    args = [a.format(cadre=cadre_id) for a in args]

    result = sanlv("user", "add", *args, "--password-stdin", input=f"{password}\n")

    assert reason in one_line_error(result)
    with sessions() as session:
        assert session.scalar(select(User)) is None


def test_an_unknown_role_is_refused_by_the_command(env) -> None:
    result = sanlv("user", "add", "x1", "--role", "root", "--password-stdin", input=f"{PASSWORD}\n")

    assert result.exit_code == 2 and "root" in result.stderr


def test_a_taken_username_is_refused(env) -> None:
    assert sanlv("user", "add", "office1", "--role", "office", "--password-stdin", input=f"{PASSWORD}\n").exit_code == 0

    result = sanlv("user", "add", "OFFICE1", "--role", "admin", "--password-stdin", input=f"{PASSWORD}\n")

    assert one_line_error(result) == "用户名 office1 已被使用 / username office1 is taken"


# --- list, disable, password, token -----------------------------------------------------------------------


@pytest.fixture
def office1(env):
    assert sanlv("user", "add", "office1", "--role", "office", "--password-stdin", input=f"{PASSWORD}\n").exit_code == 0


def test_list(env, office1, cadre_id) -> None:
    sanlv("user", "add", "lin", "--role", "cadre", "--cadre", str(cadre_id), "--password-stdin", input=f"{PASSWORD}\n")
    sanlv("user", "disable", "office1")

    text = sanlv("user", "list")
    as_json = json.loads(sanlv("user", "list", "--format", "json").stdout)

    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert lines[0].startswith("lin ") and f"cadre={cadre_id} 林建明" in lines[0] and "active" in lines[0]
    assert lines[1].startswith("office1 ") and "disabled" in lines[1]
    assert [(u["username"], u["role"], u["disabled"]) for u in as_json["users"]] == [
        ("lin", "cadre", False),
        ("office1", "office", True),
    ]
    assert as_json["users"][0]["cadre"] == {"id": cadre_id, "name": "林建明"}


def test_disable(env, office1, sessions) -> None:
    result = sanlv("user", "disable", "office1")

    assert result.exit_code == 0
    user = stored(sessions, "office1")
    assert user.disabled and user.session_epoch == 2
    with sessions() as session, pytest.raises(accounts.LoginFailed) as failure:
        accounts.authenticate(session, "office1", PASSWORD)
    assert failure.value.reason == "disabled"


def test_password(env, office1, sessions) -> None:
    result = sanlv("user", "password", "office1", input="a new long password\na new long password\n")

    assert result.exit_code == 0, result.output
    assert stored(sessions, "office1").session_epoch == 2
    with sessions() as session:
        assert accounts.authenticate(session, "office1", "a new long password")
        with pytest.raises(accounts.LoginFailed):
            accounts.authenticate(session, "office1", PASSWORD)
    weak = sanlv("user", "password", "office1", "--password-stdin", input="short\n")
    assert "at least 10 characters" in one_line_error(weak)
    assert stored(sessions, "office1").session_epoch == 2


def test_a_token_is_printed_once_alone_on_stdout(env, office1, sessions) -> None:
    first, second = sanlv("user", "token", "office1"), sanlv("user", "token", "office1")

    assert first.exit_code == 0 and "not shown again" in first.stderr
    token = first.stdout.strip()
    assert token.startswith("sanlv_") and len(token) > 40 and first.stdout == token + "\n"
    assert second.stdout.strip() != token
    with sessions() as session:
        assert accounts.user_for_token(session, token).username == "office1"


@pytest.mark.parametrize("command", ["disable", "password", "token", "revoke-tokens"])
def test_commands_on_an_unknown_user_fail_in_one_line(env, command) -> None:
    result = sanlv("user", command, "ghost", input=f"{PASSWORD}\n{PASSWORD}\n")

    assert one_line_error(result) == "用户 ghost 不存在 / user ghost does not exist"


# --- sanlv audit ------------------------------------------------------------------------------------------


def test_audit_prints_user_changes_and_filters(env, office1, monkeypatch, sessions) -> None:
    monkeypatch.setenv("USER", "operator")
    monkeypatch.setenv("LOGNAME", "operator")
    sanlv("user", "add", "jiwei", "--role", "supervisor", "--password-stdin", input=f"{PASSWORD}\n")
    sanlv("user", "disable", "jiwei")

    everything = sanlv("audit")
    by_operator = json.loads(sanlv("audit", "--user", "cli:operator", "--format", "json").stdout)["entries"]
    disables = json.loads(sanlv("audit", "--action", "user.disable", "--format", "json").stdout)["entries"]
    future = sanlv("audit", "--since", "2999-01-01")
    bad_since = sanlv("audit", "--since", "yesterday")

    assert everything.exit_code == 0
    lines = everything.stdout.splitlines()
    assert len(lines) == 3 and "user.add" in lines[0] and "user:office1" in lines[0]
    assert "cli:operator" in lines[1] and "添加用户" in lines[1] and '"role": "supervisor"' in lines[1]
    assert [(e["username"], e["action"], e["object_id"]) for e in by_operator] == [
        ("cli:operator", "user.add", "jiwei"),
        ("cli:operator", "user.disable", "jiwei"),
    ]
    assert [e["object_id"] for e in disables] == ["jiwei"]
    assert future.exit_code == 0 and future.stdout == ""
    assert "--since" in one_line_error(bad_since)


# --- sanlv web needs a real SECRET_KEY --------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "sanlv-demo-only", "change-me", "too-short-0123456789"])
def test_web_refuses_to_start_without_a_real_secret_key(env, monkeypatch, key) -> None:
    from campaigns.runtime import set_runtime

    if key is None:
        monkeypatch.delenv("SECRET_KEY", raising=False)
    else:
        monkeypatch.setenv("SECRET_KEY", key)
    set_runtime(None)  # read the environment again

    reason = one_line_error(sanlv("web", "--port", "1"))

    assert "SECRET_KEY" in reason and reason.startswith("configuration: ")


def test_create_app_has_no_key_of_its_own(settings) -> None:
    from dataclasses import replace

    from campaigns.runtime import Runtime
    from campaigns.settings import SettingsError
    from web.app import create_app

    with pytest.raises(SettingsError, match="SECRET_KEY"):
        create_app(Runtime(replace(settings, secret_key=None)))


# --- the accounts' own rules ------------------------------------------------------------------------------


def test_passwords_are_hashed_with_argon2id_at_the_librarys_parameters(monkeypatch, sessions) -> None:
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher())  # production's, not the suite's cheap one
    with sessions.begin() as session:
        user = accounts.create_user(session, "office1", "office", PASSWORD)

    assert user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert accounts.verify_password(user.password_hash, PASSWORD)
    assert not accounts.verify_password(user.password_hash, PASSWORD + " ")
    assert not accounts.verify_password("not a hash", PASSWORD)


def test_a_hash_with_old_parameters_is_upgraded_at_sign_in(monkeypatch, sessions) -> None:
    with sessions.begin() as session:
        old_hash = accounts.create_user(session, "office1", "office", PASSWORD).password_hash
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))

    with sessions.begin() as session:
        user = accounts.authenticate(session, "office1", PASSWORD)

    assert user.password_hash != old_hash and ",t=2," in user.password_hash
    assert user.session_epoch == 1  # the same password: no session ends


def test_session_keys_name_the_epoch(sessions) -> None:
    with sessions.begin() as session:
        user = accounts.create_user(session, "office1", "office", PASSWORD)
        key = accounts.session_key(user)
        assert accounts.user_for_session_key(session, key) is user
        accounts.set_password(session, user, "another long password")
        assert accounts.user_for_session_key(session, key) is None
        assert accounts.user_for_session_key(session, accounts.session_key(user)) is user
        for bad in ("", "x:1", f"{user.id}", f"{user.id}:x", "999:1"):
            assert accounts.user_for_session_key(session, bad) is None
