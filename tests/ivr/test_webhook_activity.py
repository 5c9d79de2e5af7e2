"""Every webhook about a call marks it as heard of (``CallAttempt.last_heard_at``, at most every
``HEARD_EVERY``): the sweeper asks the provider only about calls quiet for longer than their questionnaire
allows (workers.sweeper)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from campaigns.calls import HEARD_EVERY
from campaigns.clock import set_clock_file
from campaigns.models import CallAttempt
from tests.ivr.support import base_params, gather_url, open_call, post, twiml

T0 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def clock(live_server, tmp_path, monkeypatch):
    path = tmp_path / "clock"
    set_clock_file(path, T0)
    monkeypatch.setenv("SANLV_CLOCK_FILE", str(path))
    return lambda when: set_clock_file(path, when)


def heard(sessions, attempt_id: int) -> datetime | None:
    with sessions() as session:
        return session.get(CallAttempt, attempt_id).last_heard_at  # type: ignore[union-attr]


def test_voice_gather_and_status_webhooks_mark_the_call_as_heard_of(live_server, sessions, clock):
    attempt_id = open_call(sessions)
    assert heard(sessions, attempt_id) is None

    post(live_server, f"/ivr/status?attempt={attempt_id}", base_params(CallStatus="ringing", SequenceNumber="0"))
    assert heard(sessions, attempt_id) == T0

    clock(T0 + timedelta(seconds=20))
    doc = twiml(post(live_server, f"/ivr/voice?attempt={attempt_id}", base_params()))
    assert heard(sessions, attempt_id) == T0 + timedelta(seconds=20)

    clock(T0 + timedelta(seconds=45))
    doc = twiml(post(live_server, gather_url(doc), base_params(Digits="1")))
    assert heard(sessions, attempt_id) == T0 + timedelta(seconds=45)

    clock(T0 + timedelta(seconds=70))
    twiml(post(live_server, gather_url(doc), base_params()))  # silence: the Gather's Redirect
    assert heard(sessions, attempt_id) == T0 + timedelta(seconds=70)


def test_a_refused_webhook_marks_nothing(live_server, sessions, clock):
    attempt_id = open_call(sessions)
    response = post(live_server, f"/ivr/status?attempt={attempt_id}", base_params(CallStatus="ringing"), sign=False)
    assert response.status_code == 403
    response = post(live_server, f"/ivr/status?attempt={attempt_id}", base_params(CallStatus="no-such-status"))
    assert response.status_code == 400
    assert heard(sessions, attempt_id) is None


def test_webhooks_close_together_write_the_mark_once(live_server, sessions, clock):
    # A call's dozen webhooks come seconds apart: the mark is written at most every HEARD_EVERY, far inside
    # the sweeper's quiet limit (a minute or more), so most webhooks save an UPDATE.
    attempt_id = open_call(sessions)
    doc = twiml(post(live_server, f"/ivr/voice?attempt={attempt_id}", base_params()))
    assert heard(sessions, attempt_id) == T0

    clock(T0 + HEARD_EVERY - timedelta(seconds=1))
    doc = twiml(post(live_server, gather_url(doc), base_params(Digits="1")))
    assert heard(sessions, attempt_id) == T0

    clock(T0 + HEARD_EVERY)
    twiml(post(live_server, gather_url(doc), base_params(Digits="1")))
    assert heard(sessions, attempt_id) == T0 + HEARD_EVERY
