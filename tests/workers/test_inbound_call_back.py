"""An inbound call through real parts: Twilio's signed webhook over HTTP to the real app (the real twilio
request validator), real ``sanlv worker`` processes that place the call-back through the real twilio client
and the Twilio stand-in, and the carrier thread that plays the phone network.

By default nobody answers on a call they made to us (caller ID can be spoofed): the caller hears the same
greeting as anyone, and the dialler calls the number back at once, before anything else it has to dial.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from lxml import etree
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from campaigns.models import CallAttempt, CallDirection, RoundTarget, TargetState
from campaigns.questionnaire import builtin_questionnaire
from campaigns.schedule import parse_retry
from tests.workers.test_campaign_rounds import ANSWERED, NO_ANSWER, Campaign, _deployment, phones

INBOUND_SID = "CA" + "b" * 32


@pytest.fixture
def campaign(database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Campaign]:
    from werkzeug.serving import make_server

    from web.app import create_app

    yield from _deployment(database_url, redis_url, tmp_path, monkeypatch, make_server, create_app, clock=False)


def call_in(c: Campaign, caller: str, sid: str = INBOUND_SID, *, token: str | None = None) -> requests.Response:
    """Twilio's request for the voice URL of our number when ``caller`` dials it."""
    url = f"{c.settings.public_base_url}/ivr/inbound"
    params = {"CallSid": sid, "AccountSid": c.standin.account_sid, "From": caller, "To": "+861012345678",
              "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}  # fmt: skip
    signature = RequestValidator(token or c.standin.auth_token).compute_signature(url, params)
    return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=15)


def creates_to(c: Campaign, phone: str) -> list:
    return [r for r in c.standin.create_requests if r.value("To") == phone]


def test_an_inbound_caller_is_called_back_at_once_by_the_workers_and_nobody_else_is(campaign: Campaign):
    c = campaign
    numbers = phones(4)
    caller = numbers[2]
    # First calls go unanswered; the next ones would wait two hours. The call-back is answered.
    c.start_carrier(lambda phone, n: ANSWERED if (phone == caller and n == 2) else NO_ANSWER, ring=0.3)
    round_id = c.create_round(numbers, max_attempts=2, retry=parse_retry("no-answer=2h"), cps=5.0)
    c.start_workers(2)
    c.wait_for_workers(2)
    c.launch(round_id)
    c.wait_for("every first call to end unanswered", lambda: sum(
        1 for t in targets(c, round_id) if t.state is TargetState.PENDING and t.attempts == 1) == len(numbers), 60)
    assert len(c.standin.create_requests) == len(numbers)

    called_in = time.monotonic()
    reply = call_in(c, "+86 " + caller[3:])  # as a carrier may format the caller's number
    assert reply.status_code == 200, reply.text
    doc = etree.fromstring(reply.content)
    assert doc.xpath("//Say/text()") == [builtin_questionnaire().messages["call_back"]]
    assert doc.xpath("/Response/Gather") == [] and doc.xpath("/Response/*")[-1].tag == "Hangup"

    c.wait_for("the call-back", lambda: len(creates_to(c, caller)) == 2, 30)
    waited = c.standin.create_requests[-1].at - called_in
    assert waited < 15, f"the call-back was placed {waited:.1f} s after the call"  # the dispatcher was woken
    c.wait_for("the call-back to end", lambda: c.carrier.lives[creates_to_sid(c, caller)].ended is not None, 30)
    time.sleep(1.0)

    # Nobody else was dialled: their retries are two hours away.
    assert [len(creates_to(c, phone)) for phone in numbers] == [1, 1, 2, 1]
    with c.sessions() as session:
        target = session.scalar(select(RoundTarget).where(RoundTarget.round_id == round_id, RoundTarget.phone == caller))
        attempts = session.scalars(select(CallAttempt).where(CallAttempt.target_id == target.id)
                                   .order_by(CallAttempt.id)).all()  # fmt: skip
    # Both calls were ours (nothing was asked on the inbound call); the call-back was a dial beyond the budget.
    assert [(a.direction, a.number) for a in attempts] == [(CallDirection.OUTBOUND, 1), (CallDirection.OUTBOUND, 2)]
    assert attempts[1].call_sid == creates_to_sid(c, caller)
    assert (target.attempts, target.call_backs, target.call_back_requested_at) == (2, 1, None)
    assert c.carrier.errors == []


def targets(c: Campaign, round_id: int) -> list[RoundTarget]:
    with c.sessions() as session:
        return list(session.scalars(select(RoundTarget).where(RoundTarget.round_id == round_id)))


def creates_to_sid(c: Campaign, phone: str) -> str:
    return [call["sid"] for call in c.standin.calls if call["to"] == phone][-1]
