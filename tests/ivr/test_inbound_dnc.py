"""An inbound call from a number on the do-not-call list takes no interview and gets no call-back (simulated
network, real HTTP)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from campaigns import dnc
from campaigns.models import CallAttempt, DoNotCall, InboundMode, TargetState
from sim.store import read_transcript
from tests.ivr import test_calls
from tests.ivr.test_calls import PHONE, Network, Q, said

network = test_calls.network  # the simulated network and the live server, as test_calls uses them


@pytest.mark.parametrize("mode", [InboundMode.CALL_BACK, InboundMode.ANSWER])
def test_a_listed_caller_with_an_open_interview_hears_the_common_greeting_only(network: Network, mode) -> None:
    round_id = network.round(inbound=mode)
    target_id = network.target(round_id)
    with network.sessions.begin() as session:
        # Listed by another process a moment ago: the target is still open (the dialler has not ended it).
        session.add(DoNotCall(phone=PHONE, reason="居民来电要求"))

    sid = network.call_in()

    greeting = Q.messages.get("call_back") or Q.messages["unknown_caller"]
    assert said(read_transcript(network.settings, sid)) == [greeting]  # what every caller hears
    with network.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallAttempt)) == 0  # no interview
    target = network.target_row(target_id)
    assert target.state is TargetState.PENDING and target.call_back_requested_at is None  # no call-back
    with network.sessions.begin() as session:
        assert dnc.is_listed(session, PHONE)
