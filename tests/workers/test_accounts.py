"""Several Twilio accounts and the caller-ID pool, through real parts: two `sanlv worker` processes, real Redis,
the real database, and the real twilio client talking to the Twilio stand-in (which knows three accounts).

- no account ever gets more creates in any second than its CPS, although two rounds share one of them;
- each round's calls go only through the accounts it may use;
- each call shows its village's caller ID, else its round's, else its account's default number; a caller ID
  owned by one account sends the call through that account, and is skipped where the round may not use it.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from sqlalchemy import select

from campaigns.callerids import add_caller_id, assign_caller_id
from campaigns.db import session_scope
from campaigns.models import CallAttempt, RoundTarget, Village
from campaigns.rounds import RoundOptions, change_round, create_round
from campaigns.settings import TwilioAccount
from tests.factories import make_household, make_village
from tests.support.twilio_standin import TwilioStandIn, process_environment, stand_in_settings
from tests.support.workers import start_workers, stop_workers
from workers.lifecycle import after_round_change

SID = {name: "AC" + digit * 32 for name, digit in (("a", "a"), ("b", "b"), ("c", "c"))}
TOKEN = {name: f"token-of-{name}-" + "0" * 20 for name in SID}
CPS = {"a": 4.0, "b": 3.0, "c": 2.0}
DEFAULT_FROM = {"a": "+8659188880001", "b": "+8659188880002", "c": "+8659188880003"}
EAST, WEST, NORTH = "东村", "西村", "北村"
EAST_ID, NORTH_ID, ROUND_ID = "+8659122340001", "+8659122340002", "+8659122340003"
PER_VILLAGE = 8


@pytest.fixture
def standin():
    with TwilioStandIn(SID["a"], TOKEN["a"], more_accounts={SID["b"]: TOKEN["b"], SID["c"]: TOKEN["c"]}) as s:
        yield s


@pytest.fixture
def accounts_settings(settings, standin):
    accounts = tuple(TwilioAccount(n, SID[n], TOKEN[n], CPS[n], DEFAULT_FROM[n]) for n in ("a", "b", "c"))
    return replace(
        stand_in_settings(settings, standin, namespace=f"accounts-{time.monotonic_ns()}"),
        twilio_account_sid=None,
        twilio_auth_token=None,
        twilio_accounts=accounts,
    )


def test_accounts_limits_restrictions_and_caller_ids_across_worker_processes(
    accounts_settings, standin, sessions, tmp_path
):
    settings = accounts_settings
    with session_scope(sessions) as session:
        villages = {name: make_village(session, name=name) for name in (EAST, WEST, NORTH)}
        for v, village in enumerate(villages.values()):
            for i in range(PER_VILLAGE):
                make_household(session, village=village, phone=f"+86138{v:03d}{i:05d}")
        add_caller_id(session, EAST_ID, label="东村村委")  # any account may show it
        add_caller_id(session, NORTH_ID, account="c", settings=settings)  # only account c owns it
        add_caller_id(session, ROUND_ID)
        assign_caller_id(session, EAST_ID, village=EAST)
        assign_caller_id(session, NORTH_ID, village=NORTH)
        common = {"windows": [["00:00", "24:00"]], "cps": 50, "max_concurrent": 1000, "max_attempts": 1}
        # Round 1 may use a and b and shows ROUND_ID; round 2 may use b and c (b is shared) and has no number.
        first = create_round(session, RoundOptions(name="一", accounts=("a", "b"), caller_id=ROUND_ID, **common)).id
        second = create_round(session, RoundOptions(name="二", accounts=("b", "c"), **common)).id

    env = process_environment(settings)
    workers = start_workers(2, env, tmp_path / "workers.log")
    try:
        with session_scope(sessions) as session:
            for round_id in (first, second):
                change_round(session, round_id, "launch")
        for round_id in (first, second):
            after_round_change(settings, round_id, "launch")
        expected = 2 * 3 * PER_VILLAGE
        deadline = time.monotonic() + 120
        while standin.created < expected:
            assert all(w.poll() is None for w in workers), (tmp_path / "workers.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"only {standin.created} of {expected} calls created"
            time.sleep(0.2)
        time.sleep(1.0)  # nothing more may come
    finally:
        stop_workers(workers)

    assert standin.created == expected
    # No account ever saw more creates in any second than its CPS, across both workers and both rounds.
    for name in SID:
        assert standin.create_times_of(SID[name]), f"account {name} was never used"
        assert standin.max_creates_in_window(1.0, SID[name]) <= CPS[name], name

    # Each create went to the account the attempt recorded, with that account's own credentials.
    creates = standin.create_requests
    assert all(r.username == r.path.split("/")[3] for r in creates)
    by_sid = {call["sid"]: call for call in standin.calls}
    with sessions() as session:
        rows = session.execute(
            select(CallAttempt.round_id, CallAttempt.call_sid, CallAttempt.account, CallAttempt.from_number, Village.name)
            .join(RoundTarget, RoundTarget.id == CallAttempt.target_id)
            .join(Village, Village.id == RoundTarget.village_id)
        ).all()
    assert len(rows) == expected
    for round_id, sid, account, shown, village in rows:
        call = by_sid[sid]
        assert call["account_sid"] == SID[account]
        assert call["from"] == shown
        # Each round only through its own accounts.
        assert account in ({"a", "b"} if round_id == first else {"b", "c"})
        # The caller ID: the village's, else the round's, else the account's default.
        if village == EAST:
            assert shown == EAST_ID
        elif village == NORTH and round_id == second:
            assert (shown, account) == (NORTH_ID, "c")  # its owner's account
        elif round_id == first:
            assert shown == ROUND_ID  # 西村, and 北村 whose number round 1's accounts cannot show
        else:
            assert shown == DEFAULT_FROM[account]
    # Both rounds drew on their whole pool, not one account only.
    assert {r[2] for r in rows if r[0] == first} == {"a", "b"}
    assert {r[2] for r in rows if r[0] == second} == {"b", "c"}
