"""The dialler's jobs through real parts: the real database, real Redis, and the real twilio client talking to
a local stand-in of Twilio's REST API. Jobs are called directly (they are plain functions taking ids)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from campaigns.calls import claim_due_targets
from campaigns.clock import now
from campaigns.models import (
    CallAttempt,
    CallStatus,
    Household,
    PhoneStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from campaigns.rounds import change_round
from campaigns.runtime import Runtime, set_runtime
from tests.factories import make_household, make_round
from tests.support.twilio_standin import (  # noqa: F401
    TwilioStandIn,
    stand_in_settings,
    twilio_standin,
)
from workers import dispatch, placing
from workers.queues import redis_connection


@pytest.fixture
def twilio_env(env, redis_url, twilio_standin, monkeypatch):  # noqa: F811 - the fixture above
    """The runtime with the Twilio provider pointed at the stand-in."""
    settings = stand_in_settings(env, twilio_standin, namespace="jobs-test")
    set_runtime(Runtime(settings))
    yield settings, twilio_standin
    set_runtime(None)


def claimed_attempt(sessions, *, windows=(("00:00", "24:00"),), phone="+8613800000001") -> int:
    with sessions.begin() as session:
        household = make_household(session, phone=phone)
        round_ = make_round(session, windows=[list(w) for w in windows], cps=50)
        session.add(RoundTarget(round_id=round_.id, household_id=household.id, phone=household.phone))
        round_.status = RoundStatus.RUNNING
        session.flush()
        [claim] = claim_due_targets(session, round_, now(), 1)
    return claim.attempt_id


def test_place_call_sends_the_right_request_to_twilio(twilio_env, sessions):
    settings, standin = twilio_env
    attempt_id = claimed_attempt(sessions)
    sid = placing.place_call(attempt_id)
    [request] = standin.create_requests
    assert request.value("To") == "+8613800000001"
    assert request.value("From") == "+861012345678"
    assert request.value("Url") == f"https://survey.example.cn/ivr/voice?attempt={attempt_id}"
    assert request.value("StatusCallback") == f"https://survey.example.cn/ivr/status?attempt={attempt_id}"
    assert request.values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert request.value("Timeout") == str(settings.ring_timeout)
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        assert attempt.call_sid == sid and attempt.status is CallStatus.QUEUED


def test_a_duplicated_job_places_one_call(twilio_env, sessions):
    _settings, standin = twilio_env
    attempt_id = claimed_attempt(sessions)
    placing.place_call(attempt_id)
    assert placing.place_call(attempt_id) == "already handled"
    assert standin.created == 1


def test_invalid_number_is_final_and_marked_on_the_household(twilio_env, sessions):
    _settings, standin = twilio_env
    attempt_id = claimed_attempt(sessions)
    standin.fail_next(status=400, code=21211)
    assert placing.place_call(attempt_id) == "invalid number"
    with sessions() as session:
        target = session.scalar(select(RoundTarget))
        household = session.get(Household, target.household_id)
        assert target.state is TargetState.INVALID
        assert household.phone_status is PhoneStatus.INVALID
        assert session.get(CallAttempt, attempt_id).status is CallStatus.NOT_PLACED


def test_ambiguous_5xx_is_looked_up_and_adopted_not_retried(twilio_env, sessions):
    _settings, standin = twilio_env
    attempt_id = claimed_attempt(sessions)
    standin.fail_next(status=500, create_anyway=True)
    assert placing.place_call(attempt_id) == "adopted"
    assert standin.created == 1
    with sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        assert attempt.call_sid == standin.calls[0]["sid"]
    # A re-run of the job (RQ retry) changes nothing and calls nobody.
    assert placing.place_call(attempt_id) == "already handled"
    assert standin.created == 1


def test_ambiguous_5xx_without_a_call_is_raised_for_retry_then_placed_once(twilio_env, sessions):
    _settings, standin = twilio_env
    attempt_id = claimed_attempt(sessions)
    standin.fail_next(status=503, create_anyway=False)
    with pytest.raises(Exception, match="503|ambiguous|Service"):
        placing.place_call(attempt_id)
    assert standin.created == 0
    placing.place_call(attempt_id)  # the RQ retry: looks up first, finds nothing, places the call
    assert standin.created == 1


def test_rate_limited_create_is_raised_for_rq_retry_and_places_nothing(twilio_env, sessions):
    _settings, standin = twilio_env
    attempt_id = claimed_attempt(sessions)
    standin.fail_next(status=429)
    with pytest.raises(Exception, match="429|Too Many"):
        placing.place_call(attempt_id)
    assert standin.created == 0
    with sessions() as session:
        assert session.get(CallAttempt, attempt_id).status is CallStatus.CLAIMED
    placing.place_call(attempt_id)
    assert standin.created == 1


def test_paused_round_releases_the_claim_instead_of_dialling(twilio_env, sessions):
    _settings, standin = twilio_env
    attempt_id = claimed_attempt(sessions)
    with sessions.begin() as session:
        round_id = session.get(CallAttempt, attempt_id).round_id
        change_round(session, round_id, "pause")
    assert placing.place_call(attempt_id) == "already handled"  # pause released it already
    assert standin.created == 0
    with sessions() as session:
        target = session.scalar(select(RoundTarget))
        assert target.state is TargetState.PENDING and target.attempts == 0
        assert session.scalar(select(func.count()).select_from(CallAttempt)) == 0


def test_no_call_outside_the_window(twilio_env, sessions):
    settings, standin = twilio_env
    today = now().astimezone(settings.tz).date().isoformat()
    attempt_id = claimed_attempt(sessions)
    with sessions.begin() as session:
        round_id = session.get(CallAttempt, attempt_id).round_id
        session.get(Round, round_id).blocked_dates = [today]  # a holiday: no window is open today
    assert placing.place_call(attempt_id) == "released"
    assert standin.created == 0


def test_dispatch_claims_within_concurrency_and_enqueues_place_calls(twilio_env, sessions):
    settings, _standin = twilio_env
    with sessions.begin() as session:
        round_ = make_round(session, windows=[["00:00", "24:00"]], cps=50, max_concurrent=3)
        for i in range(5):
            household = make_household(session, phone=f"+86138000000{i:02d}")
            session.add(RoundTarget(round_id=round_.id, household_id=household.id, phone=household.phone))
        round_.status = RoundStatus.RUNNING
        round_id = round_.id
    assert dispatch.dispatch_round(round_id).startswith("claimed=3")
    with sessions() as session:
        states = session.scalars(select(RoundTarget.state)).all()
    assert states.count(TargetState.DIALING) == 3
    assert states.count(TargetState.PENDING) == 2
    queued = redis_connection(settings).lrange(f"rq:queue:{settings.namespace}-dialer", 0, -1)
    assert sum(b"place-call" in job for job in queued) == 3
    # The next tick finds no capacity: nothing more is claimed while three calls are live.
    assert dispatch.dispatch_round(round_id).startswith("claimed=0")


def test_stale_dispatch_chain_stops(twilio_env, sessions, redis_conn):
    settings, _standin = twilio_env
    with sessions.begin() as session:
        round_ = make_round(session, windows=[["00:00", "24:00"]])
        round_.status = RoundStatus.RUNNING
        round_id = round_.id
    first = dispatch.kick_dispatch(settings, round_id)
    second = dispatch.kick_dispatch(settings, round_id)
    assert first != second
    assert redis_connection(settings).get(dispatch.chain_key(settings, round_id)).decode() == second
