"""Helpers for driving the IVR's webhooks over HTTP as Twilio does: signed form posts, TwiML parsed with lxml."""

from __future__ import annotations

from typing import Any

import requests
from lxml import etree
from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator

from campaigns.calls import claim_due_targets
from campaigns.clock import now
from campaigns.models import CallAttempt, CallStatus, RoundStatus, RoundTarget
from campaigns.runtime import get_runtime
from campaigns.settings import Settings
from tests.factories import make_household, make_round

SID = "CA" + "a" * 32
PHONE = "+8613800000001"


def post(settings: Settings, path: str, params: dict, *, sign: bool = True, token: str | None = None) -> requests.Response:
    url = path if path.startswith("http") else settings.public_base_url + path
    headers = {}
    if sign:
        headers["X-Twilio-Signature"] = RequestValidator(token or get_runtime().webhook_token).compute_signature(url, params)
    return requests.post(url, data=params, headers=headers, timeout=10)


def twiml(response: requests.Response) -> etree._Element:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/xml")
    return etree.fromstring(response.content)


def base_params(**extra: str) -> dict[str, str]:
    return {"CallSid": SID, "AccountSid": "AC" + "0" * 32, "From": "+861000000000", "To": PHONE,
            "CallStatus": "in-progress", "Direction": "outbound-api", **extra}


def gather_url(doc: etree._Element) -> str:
    [url] = doc.xpath("/Response/Gather/@action")
    assert doc.xpath("/Response/Redirect/text()") == [url], "silence must come back to the same question"
    return url


def press(settings: Settings, doc: etree._Element, digits: str | None, **params: str) -> etree._Element:
    form = base_params(**params) if digits is None else base_params(Digits=digits, **params)
    return twiml(post(settings, gather_url(doc), form))


def step_of(doc: etree._Element) -> str:
    return gather_url(doc).split("step=")[1].split("&")[0]


def spoken(doc: etree._Element) -> list[str]:
    """The text of every <Say> in the document, in order."""
    return [el.text for el in doc.xpath("//Say")]


def open_call(sessions: sessionmaker[Session], phone: str = PHONE, sid: str = SID, **round_over: Any) -> int:
    """A running round with one household and one claimed attempt whose call was placed as ``sid``."""
    with sessions.begin() as session:
        household = make_household(session, phone=phone)
        round_ = make_round(session, windows=[["00:00", "24:00"]], **round_over)
        session.add(RoundTarget(round_id=round_.id, household_id=household.id, phone=household.phone))
        round_.status = RoundStatus.RUNNING
        session.flush()
        [claim] = claim_due_targets(session, round_, now(), 1)
        attempt = session.get(CallAttempt, claim.attempt_id)
        attempt.call_sid = sid
        attempt.status = CallStatus.QUEUED
    return claim.attempt_id
