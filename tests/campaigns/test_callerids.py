"""``sanlv callerid add|list|assign`` and ``round create --caller-id --accounts`` through the console script,
on the real database; and the choice of a call's caller ID."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from campaigns.callerids import choose_caller_id
from campaigns.models import CallerId, Round, Village
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import load_settings
from tests.campaigns.test_cli import one_line_error, sanlv
from tests.factories import make_household, make_village

SID_A, SID_B = "AC" + "a" * 32, "AC" + "b" * 32


@pytest.fixture
def accounts_env(env, monkeypatch):
    """Two named Twilio accounts in the environment (the CLI reads its settings from there)."""
    for name, value in {
        "SANLV_TELEPHONY": "twilio",
        "SANLV_TWILIO_ACCOUNTS": "east,west",
        "TWILIO_ACCOUNT_SID_EAST": SID_A,
        "TWILIO_AUTH_TOKEN_EAST": "token-east",
        "TWILIO_CPS_EAST": "10",
        "TWILIO_ACCOUNT_SID_WEST": SID_B,
        "TWILIO_AUTH_TOKEN_WEST": "token-west",
        "TWILIO_FROM_NUMBER": "+8659122340009",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(dotenv=None)
    set_runtime(Runtime(settings))
    return settings


def test_add_list_and_assign_caller_ids(accounts_env, sessions):
    with sessions.begin() as session:
        make_household(session, village=make_village(session, name="东村"))

    assert sanlv("callerid", "add", "0591-22340001", "--label", "东村村委").output.strip() == "+8659122340001"
    assert sanlv("callerid", "add", "059122340002", "--account", "west").exit_code == 0
    assert sanlv("callerid", "add", "0591-22340001", "--label", "东村村委").exit_code == 0  # again: no change
    assert sanlv("callerid", "assign", "+8659122340001", "--village", "东村").exit_code == 0
    created = sanlv("round", "create", "--name", "一", "--caller-id", "059122340002", "--accounts", "west")
    assert created.exit_code == 0, created.output
    round_id = int(created.output)

    listed = json.loads(sanlv("callerid", "list", "--format", "json").output)
    assert listed == [
        {"number": "+8659122340001", "account": None, "label": "东村村委", "villages": ["东村"], "rounds": []},
        {"number": "+8659122340002", "account": "west", "label": None, "villages": [], "rounds": [round_id]},
    ]
    with sessions() as session:
        assert session.scalar(select(Round.accounts).where(Round.id == round_id)) == ["west"]

    assert sanlv("callerid", "assign", "none", "--village", "东村").exit_code == 0
    with sessions() as session:
        assert session.scalar(select(Village.caller_id_id).where(Village.name == "东村")) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["callerid", "add", "12345"], "NUMBER: '12345' is not a caller ID"),
        (["callerid", "add", "059122340003", "--account", "north"], "--account: 'north' is not a Twilio account"),
        (["callerid", "assign", "059122340001", "--village", "西村"], "--village: '西村' is not a village"),
        (["callerid", "assign", "059122340099", "--village", "东村"], "+8659122340099 is not in the caller-ID pool"),
        (["callerid", "assign", "059122340001"], "name exactly one of --village or --round"),
        (["round", "create", "--name", "x", "--accounts", "north"], "--accounts: 'north' is not a Twilio account"),
        (["round", "create", "--name", "x", "--caller-id", "059122340099"], "--caller-id: +8659122340099 is not in"),
        (
            ["round", "create", "--name", "x", "--caller-id", "059122340002", "--accounts", "east"],
            "--caller-id: +8659122340002 belongs to Twilio account west, which --accounts leaves out",
        ),
    ],
)
def test_bad_caller_id_requests_are_one_line_errors_and_change_nothing(accounts_env, sessions, args, message):
    with sessions.begin() as session:
        make_household(session, village=make_village(session, name="东村"))
    assert sanlv("callerid", "add", "059122340001").exit_code == 0
    assert sanlv("callerid", "add", "059122340002", "--account", "west").exit_code == 0

    assert message in one_line_error(sanlv(*args))
    with sessions() as session:
        assert session.scalar(select(Round.id)) is None
        assert len(session.scalars(select(CallerId)).all()) == 2


def test_the_village_caller_id_wins_unless_its_account_is_not_allowed():
    village, round_ = ("+8659122340001", "east"), ("+8659122340002", None)

    assert choose_caller_id([village, round_], ["east", "west"]) == village
    assert choose_caller_id([village, round_], ["west"]) == round_
    assert choose_caller_id([(None, None), round_], ["west"]) == round_
    assert choose_caller_id([(None, None), (None, None)], ["west"]) == (None, None)
