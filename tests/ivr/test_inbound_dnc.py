"""An inbound call from a number on the do-not-call list takes no interview (simulated network, real HTTP)."""

from __future__ import annotations

from sqlalchemy import func, select

from campaigns import dnc
from campaigns.models import CallAttempt, DoNotCall, TargetState
from sim.store import read_transcript
from tests.ivr import test_calls
from tests.ivr.test_calls import PHONE, Network, Q, said

network = test_calls.network  # the simulated network and the live server, as test_calls uses them


def test_a_listed_caller_with_an_open_interview_hears_what_an_unknown_caller_hears(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    with network.sessions.begin() as session:
        # Listed by another process a moment ago: the target is still open (the dialler has not ended it).
        session.add(DoNotCall(phone=PHONE, reason="居民来电要求"))

    sid = network.call_in()

    assert said(read_transcript(network.settings, sid)) == [Q.messages["unknown_caller"]]
    with network.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallAttempt)) == 0
    assert network.target_row(target_id).state is TargetState.PENDING
    with network.sessions.begin() as session:
        assert dnc.is_listed(session, PHONE)
