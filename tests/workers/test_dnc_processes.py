"""Do-not-call holds in every round from the moment a number is listed: real ``sanlv worker`` processes, the
real Flask app over HTTP, real Redis, the simulated phone network, and ``sanlv dnc add`` run as its own process
while round 2 is dialling the number."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import CallAttempt, DncSource, DoNotCall, RoundTarget, TargetState
from campaigns.rounds import RoundOptions, change_round, create_round
from sim.network import SimulatorProvider
from sim.residents import set_script
from tests.factories import make_cadre, make_household, make_village
from tests.support.workers import RETRY_FAST, ROOT, start_workers, stop_workers, wait_for_completion
from workers.lifecycle import after_round_change

VICTIM = "+8613900001111"


@pytest.fixture
def workers(live_server, tmp_path):
    procs = start_workers(2, {**os.environ, "SANLV_SIM_SEED": "11"}, tmp_path / "workers.log")
    yield procs
    stop_workers(procs)


def _round(sessions, name: str) -> int:
    options = RoundOptions(
        name=name, windows=[["00:00", "24:00"]], cps=20, max_attempts=30, retry=RETRY_FAST, max_concurrent=10
    )
    with session_scope(sessions) as session:
        return create_round(session, options).id


def _launch(settings, sessions, round_id: int) -> None:
    with session_scope(sessions) as session:
        change_round(session, round_id, "launch")
    after_round_change(settings, round_id, "launch")


def _victim_attempts(sessions, round_id: int) -> list[tuple[int, datetime]]:
    with sessions() as session:
        return session.execute(
            select(CallAttempt.id, CallAttempt.created_at)
            .join(RoundTarget, RoundTarget.id == CallAttempt.target_id)
            .where(RoundTarget.round_id == round_id, RoundTarget.phone == VICTIM)
        ).all()


def test_a_number_listed_while_round_2_dials_it_is_never_dialled_again(live_server, workers, sessions, tmp_path):
    settings = live_server
    with session_scope(sessions) as session:
        village, cadre = make_village(session, name="东山村"), make_cadre(session)
        make_household(session, village, cadre, phone=VICTIM)
        for i in range(8):
            make_household(session, village, cadre, phone=f"+86139000020{i:02d}")
    # The victim's line is always busy: round 2 retries it every second, so it is being dialled when listed.
    set_script(settings, VICTIM, {"outcome": "busy"})
    round_1 = _round(sessions, "第一轮")
    round_2 = _round(sessions, "第二轮")
    _launch(settings, sessions, round_2)

    deadline = time.monotonic() + 60
    while len(_victim_attempts(sessions, round_2)) < 2:
        assert time.monotonic() < deadline, "round 2 never dialled the number twice"
        time.sleep(0.2)

    listed = subprocess.run(
        [sys.executable, "-m", "web", "dnc", "add", "139 0000 1111", "--reason", "居民来电要求不再调查"],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "139****1111" in listed.stdout and VICTIM not in listed.stdout
    listed_at = datetime.now(UTC)
    before = {attempt_id for attempt_id, _ in _victim_attempts(sessions, round_2)}

    # Round 1 was created before the number was listed; it is launched only now.
    _launch(settings, sessions, round_1)
    wait_for_completion(sessions, round_2, workers, timeout=120)
    wait_for_completion(sessions, round_1, workers, timeout=120)

    # No claim was made for the number after it was listed, in either round ...
    after = {attempt_id for attempt_id, _ in _victim_attempts(sessions, round_2)} - before
    assert after == set()
    assert _victim_attempts(sessions, round_1) == []
    # ... and the phone network saw no call to it created after the listing, but for at most one whose
    # create request had already left (the placing step's last check happens before the request).
    provider = SimulatorProvider(settings)
    with sessions() as session:
        known = {sid for (sid,) in session.execute(select(CallAttempt.call_sid).where(CallAttempt.id.in_(before)))}
    late = [call for call in provider.find_calls(VICTIM, listed_at) if call.sid not in known]
    assert late == []
    with sessions() as session:
        states = session.execute(
            select(RoundTarget.round_id, RoundTarget.state, RoundTarget.last_outcome).where(RoundTarget.phone == VICTIM)
        ).all()
        entry = session.scalar(select(DoNotCall).where(DoNotCall.phone == VICTIM))
        others = session.scalars(
            select(RoundTarget.state).where(RoundTarget.round_id == round_1, RoundTarget.phone != VICTIM)
        ).all()
    assert sorted(states) == [
        (round_1, TargetState.OPTED_OUT, "do-not-call"),
        (round_2, TargetState.OPTED_OUT, "do-not-call"),
    ]
    assert entry is not None and entry.source == DncSource.OFFICE and entry.actor.startswith("cli:")
    # The other households of round 1 were dialled as usual.
    assert len(others) == 8 and TargetState.PENDING not in others
