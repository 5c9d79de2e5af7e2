"""The simulated network as a telephony provider and its RQ job: calls stored in Redis and run by a worker,
calls residents make to our number, cancelling, a half-finished call, and the namespace that keeps two
deployments on one Redis apart."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import redis
from rq.job import Job

from campaigns.settings import Settings
from sim.network import SimulationOptions, SimulatorProvider, run_call
from sim.residents import set_script, take_script
from sim.store import answers_from_transcript, call_key, read_transcript
from tests.sim.fake_ivr import CALLER_ID, PHONE, FakeIvr, call_request, gathered
from workers.queues import SIMULATOR_QUEUE, clear_namespace, namespaced_job_id, queue
from workers.runner import InProcessWorker
from workers.telephony.base import PermanentNumberError, RateLimitedError, TelephonyError

# ---------------------------------------------------------------------------------------------- inbound


def test_a_resident_calls_our_number(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(env)
    set_script(env, PHONE, {"answers": {"q1": "2", "q2": "3", "q3": "4"}})
    before = datetime.now(UTC) - timedelta(seconds=1)

    info = provider.call_in(PHONE, f"{ivr.base}/ivr/inbound", to=CALLER_ID)
    worker = InProcessWorker([queue(env, SIMULATOR_QUEUE)], connection=redis_conn)
    assert worker.work(burst=True)

    first = ivr.of("/ivr/inbound")[0]
    assert first.signed and first.form["CallSid"] == info.sid
    assert (first.form["Direction"], first.form["From"], first.form["To"]) == ("inbound", PHONE, CALLER_ID)
    assert first.form["CallStatus"] == "ringing"  # Twilio fetches the number's voice URL while it rings
    assert gathered(ivr) == [("q1", "1", "2"), ("q2", "1", "3"), ("q3", "1", "4")]
    assert all(r.form["Direction"] == "inbound" for r in ivr.received)
    # The number's status callback: only "completed", and no call-progress sequence numbers.
    assert [c["CallStatus"] for c in ivr.callbacks] == ["completed"]
    assert "SequenceNumber" not in ivr.callbacks[0] and int(ivr.callbacks[0]["CallDuration"]) > 0
    assert all(r.signed for r in ivr.of("/ivr/status"))
    done = provider.fetch_call(info.sid)
    assert (done.status, done.to, done.extra["from"], done.extra["direction"]) == ("completed", CALLER_ID, PHONE, "inbound")
    assert [c.sid for c in provider.find_calls_from(PHONE, before)] == [info.sid]
    assert provider.find_calls(PHONE, before) == []  # not a call *to* the resident: never adopted as ours
    assert [c.sid for c in provider.household_calls(PHONE, before)] == [info.sid]


def test_call_in_refuses_a_caller_that_is_not_e164(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    with pytest.raises(ValueError, match="E.164"):
        SimulatorProvider(env).call_in("13800000001", f"{ivr.base}/ivr/inbound")


def test_a_resident_who_hangs_up_calls_back_when_the_script_says_so(
    env: Settings, redis_conn: redis.Redis, ivr: FakeIvr
) -> None:
    provider = SimulatorProvider(env)
    set_script(env, PHONE, [{"hangup_at_step": "q2", "call_back": True}, {"answers": {"q1": "5"}}])
    before = datetime.now(UTC) - timedelta(seconds=1)

    outbound = provider.place_call(call_request(ivr))
    worker = InProcessWorker([queue(env, SIMULATOR_QUEUE)], connection=redis_conn)
    assert worker.work(burst=True)

    calls = provider.household_calls(PHONE, before)
    assert calls[0].sid == outbound.sid and len(calls) == 2
    back = calls[1]
    assert provider.fetch_call(outbound.sid).extra["call_back_sid"] == back.sid
    assert read_transcript(env, outbound.sid)[-1] == {"call_back": back.sid}
    assert back.extra["direction"] == "inbound" and back.extra["from"] == PHONE
    assert [r.form["CallSid"] for r in ivr.of("/ivr/inbound")] == [back.sid]
    # The call-back follows the next script: it answers q1 with 5.
    assert answers_from_transcript(read_transcript(env, back.sid)) == {"q1": "5", "q2": "1", "q3": "1"}


def test_no_call_back_without_the_script_field_or_after_a_full_interview(
    env: Settings, redis_conn: redis.Redis, ivr: FakeIvr
) -> None:
    provider = SimulatorProvider(env)
    set_script(env, PHONE, [{"hangup_at_step": "q2"}, {"call_back": True}])
    before = datetime.now(UTC) - timedelta(seconds=1)

    provider.place_call(call_request(ivr))  # hangs up, no call_back
    provider.place_call(call_request(ivr, attempt=2))  # call_back, but never hangs up mid-survey
    worker = InProcessWorker([queue(env, SIMULATOR_QUEUE)], connection=redis_conn)
    assert worker.work(burst=True)

    assert provider.find_calls_from(PHONE, before) == []
    assert ivr.of("/ivr/inbound") == []


# ---------------------------------------------------------------------------------- provider and RQ job


def test_place_call_stores_the_call_and_enqueues_the_job(
    settings: Settings, redis_conn: redis.Redis, ivr: FakeIvr
) -> None:
    provider = SimulatorProvider(settings)

    info = provider.place_call(call_request(ivr, attempt=12))

    assert info.sid.startswith("CA") and len(info.sid) == 34 and int(info.sid[2:], 16) >= 0
    assert (info.status, info.to) == ("queued", PHONE)
    stored = redis_conn.hgetall(call_key(settings, info.sid))
    assert stored[b"status"] == b"queued"
    assert stored[b"attempt_id"] == b"12"
    assert stored[b"url"].decode() == f"{ivr.base}/ivr/voice?attempt=12"
    job = Job.fetch(namespaced_job_id(settings, f"sim-{info.sid}"), connection=redis_conn)
    assert job.func_name == "sim.network.run_call"
    assert job.args == (info.sid,)
    assert job.origin == queue(settings, SIMULATOR_QUEUE).name
    fetched = provider.fetch_call(info.sid)
    assert (fetched.status, fetched.extra["attempt_id"]) == ("queued", "12")


def test_place_call_refuses_what_twilio_refuses(settings: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(settings)
    with pytest.raises(PermanentNumberError) as invalid:
        provider.place_call(call_request(ivr, to="13800000001"))
    assert invalid.value.code == 21211

    set_script(settings, PHONE, [{"outcome": "rate-limited"}, {"outcome": "blocked"}, {"outcome": "busy"}])
    with pytest.raises(RateLimitedError):
        provider.place_call(call_request(ivr))
    with pytest.raises(PermanentNumberError) as blocked:
        provider.place_call(call_request(ivr))
    assert blocked.value.code == 21216
    assert provider.find_calls(PHONE, datetime.now(UTC) - timedelta(minutes=1)) == []
    provider.place_call(call_request(ivr))  # the busy script is left for the call itself
    assert take_script(settings, PHONE) == {"outcome": "busy"}


def test_fetch_and_cancel_an_unknown_call(settings: Settings, redis_conn: redis.Redis) -> None:
    provider = SimulatorProvider(settings)
    with pytest.raises(TelephonyError) as missing:
        provider.fetch_call("CA" + "f" * 32)
    assert missing.value.code == 20404
    with pytest.raises(TelephonyError):
        provider.cancel_call("CA" + "f" * 32)


def test_cancel_before_the_call_runs(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(env)
    info = provider.place_call(call_request(ivr))

    provider.cancel_call(info.sid)
    assert provider.fetch_call(info.sid).status == "canceled"
    assert run_call(info.sid) == "canceled"
    assert run_call(info.sid) == "canceled"  # a second run sends nothing more

    assert ivr.voice == []
    callbacks = [(c["CallStatus"], c["SequenceNumber"], c["CallDuration"]) for c in ivr.callbacks]
    assert callbacks == [("canceled", "0", "0")]
    assert provider.fetch_call(info.sid).status == "canceled"


def test_cancel_leaves_a_finished_call_alone(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(env)
    set_script(env, PHONE, {"answers": {"q1": "2"}})
    info = provider.place_call(call_request(ivr))
    assert run_call(info.sid) == "completed"

    provider.cancel_call(info.sid)

    assert provider.fetch_call(info.sid).status == "completed"
    assert run_call(info.sid) == "completed"
    assert len(ivr.callbacks) == 4  # the second run did not call again


def test_rq_worker_runs_calls_end_to_end(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(env)
    other = "+8613800000002"
    set_script(env, PHONE, [{"outcome": "busy"}, {"answers": {"q1": "4", "q2": "2", "q3": "0"}}])
    set_script(env, other, {"outcome": "no-answer"})
    before = datetime.now(UTC) - timedelta(seconds=1)
    busy = provider.place_call(call_request(ivr, attempt=1))
    answered = provider.place_call(call_request(ivr, attempt=2))
    unanswered = provider.place_call(call_request(ivr, attempt=3, to=other))

    worker = InProcessWorker([queue(env, SIMULATOR_QUEUE)], connection=redis_conn)
    assert worker.work(burst=True)

    assert provider.fetch_call(busy.sid).status == "busy"
    assert provider.fetch_call(unanswered.sid).status == "no-answer"
    done = provider.fetch_call(answered.sid)
    assert done.status == "completed"
    assert done.duration is not None and done.duration > 0
    assert done.start_time is not None and done.date_created is not None
    assert done.extra["outcome"] == "answer"
    assert [c.sid for c in provider.find_calls(PHONE, before)] == [busy.sid, answered.sid]
    assert provider.find_calls(PHONE, datetime.now(UTC) + timedelta(seconds=1)) == []

    transcript = read_transcript(env, answered.sid)
    assert answers_from_transcript(transcript) == {"q1": "4", "q2": "2", "q3": "0"}
    assert [r.query["attempt"] for r in ivr.of("/ivr/voice")] == ["2"]
    assert [(r.form["CallSid"], r.form["Digits"]) for r in ivr.of("/ivr/gather")] == [
        (answered.sid, "4"),
        (answered.sid, "2"),
        (answered.sid, "0"),
    ]
    by_call = Counter(c["CallSid"] for c in ivr.callbacks)
    assert by_call == {busy.sid: 3, answered.sid: 4, unanswered.sid: 3}
    assert all(r.signed for r in ivr.received)


def test_a_call_left_half_way_by_a_dead_worker_is_ended(env: Settings, redis_conn: redis.Redis, ivr: FakeIvr) -> None:
    provider = SimulatorProvider(env)
    info = provider.place_call(call_request(ivr))
    redis_conn.hset(call_key(env, info.sid), mapping={"status": "in-progress", "callbacks": "3"})

    assert run_call(info.sid) == "completed"

    assert [(c["CallStatus"], c["SequenceNumber"]) for c in ivr.callbacks] == [("completed", "3")]
    assert provider.fetch_call(info.sid).extra["end_reason"] == "abandoned"


def test_simulation_options_from_the_environment() -> None:
    assert SimulationOptions.from_environ({}) == SimulationOptions(seed="0", speed=0.0)
    assert SimulationOptions.from_environ({"SANLV_SIM_SEED": "42", "SANLV_SIM_SPEED": "20"}) == SimulationOptions(
        seed="42", speed=20.0
    )
    for bad in ("fast", "-1", "inf"):
        with pytest.raises(ValueError, match="SANLV_SIM_SPEED"):
            SimulationOptions.from_environ({"SANLV_SIM_SPEED": bad})


# -------------------------------------------------------------------------------------------- namespaces


def test_two_namespaces_on_one_redis_never_see_each_others_calls_or_scripts(
    env: Settings, redis_conn: redis.Redis, ivr: FakeIvr
) -> None:
    ours, theirs = env, replace(env, namespace="sanlv-elsewhere")
    set_script(ours, PHONE, {"outcome": "busy"})
    set_script(theirs, PHONE, {"outcome": "no-answer"})
    before = datetime.now(UTC) - timedelta(seconds=1)

    info = SimulatorProvider(ours).place_call(call_request(ivr))
    worker = InProcessWorker([queue(ours, SIMULATOR_QUEUE)], connection=redis_conn)
    assert worker.work(burst=True)

    # Our call followed our script, and left theirs for their calls.
    assert SimulatorProvider(ours).fetch_call(info.sid).status == "busy"
    assert take_script(theirs, PHONE) == {"outcome": "no-answer"}
    assert read_transcript(ours, info.sid) != []
    # Their deployment knows nothing of our call: no call, no transcript, nothing in its queue.
    other = SimulatorProvider(theirs)
    with pytest.raises(TelephonyError) as missing:
        other.fetch_call(info.sid)
    assert missing.value.code == 20404
    assert other.find_calls(PHONE, before) == [] and other.household_calls(PHONE, before) == []
    assert read_transcript(theirs, info.sid) == []
    assert queue(theirs, SIMULATOR_QUEUE).count == 0
    # Every key the network wrote is in one of the two namespaces.
    written = {key.decode() for key in redis_conn.scan_iter(match="*:sim:*")}
    assert written and all(key.startswith((f"{ours.namespace}:sim:", f"{theirs.namespace}:sim:")) for key in written)

    # Clearing their namespace (as the demo does when it ends) leaves our calls alone; clearing ours removes them.
    clear_namespace(theirs)
    assert SimulatorProvider(ours).fetch_call(info.sid).status == "busy"
    assert take_script(theirs, PHONE) is None
    clear_namespace(ours)
    with pytest.raises(TelephonyError):
        SimulatorProvider(ours).fetch_call(info.sid)
    assert read_transcript(ours, info.sid) == []
