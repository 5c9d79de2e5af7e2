"""Whole calls: the real dialler job places them through the simulated phone network, whose scripted
residents talk to the real Flask app over HTTP (signed webhooks), and the stored interview must be exactly
what each resident meant.

The network's calls run in this process on an RQ InProcessWorker (burst), so every call, call-back and status
callback has finished when ``Network.run()`` returns.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from campaigns.calls import claim_due_targets
from campaigns.clock import now
from campaigns.models import (
    Answer,
    AnswerChange,
    CallAttempt,
    CallDirection,
    CallStatus,
    DoNotCall,
    KeyPress,
    Response,
    ResponseStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from campaigns.questionnaire import (
    builtin_questionnaire,
    parse_questionnaire,
    store_version,
)
from campaigns.settings import Settings
from sim.network import SimulatorProvider
from sim.residents import set_script
from sim.store import answers_from_transcript, read_transcript
from tests.factories import make_household, make_round
from workers.placing import place_call
from workers.queues import SIMULATOR_QUEUE, queue
from workers.runner import InProcessWorker

Q = builtin_questionnaire()
OPTIONS = {step.key: set(step.options) for step in Q.steps}
PHONE = "+8613800000001"


@dataclass
class Network:
    settings: Settings
    sessions: Any
    conn: redis.Redis
    started: datetime

    @property
    def provider(self) -> SimulatorProvider:
        return SimulatorProvider(self.settings)

    def round(self, **over: Any) -> int:
        """A running round, open all day, dialling fast."""
        with self.sessions.begin() as session:
            fields = {"windows": [["00:00", "24:00"]], "cps": 100.0, "max_attempts": 3, "status": RoundStatus.RUNNING}
            fields.update(over)
            return make_round(session, **fields).id

    def target(self, round_id: int, phone: str = PHONE) -> int:
        with self.sessions.begin() as session:
            household = make_household(session, phone=phone)
            target = RoundTarget(round_id=round_id, household_id=household.id, phone=phone)
            session.add(target)
            session.flush()
            return target.id

    def dial(self, round_id: int) -> list[int]:
        """Claim every due target and place its call with the real ``place_call`` job; then run the network."""
        with self.sessions.begin() as session:
            round_ = session.get(Round, round_id)
            session.execute(
                RoundTarget.__table__.update()
                .where(RoundTarget.round_id == round_id, RoundTarget.state == TargetState.PENDING)
                .values(next_attempt_at=None)
            )
            claims = claim_due_targets(session, round_, now(), 100)
        for claim in claims:
            place_call(claim.attempt_id)
        self.run()
        return [claim.attempt_id for claim in claims]

    def call_in(self, phone: str = PHONE) -> str:
        info = self.provider.call_in(phone, f"{self.settings.public_base_url}/ivr/inbound")
        self.run()
        return info.sid

    def run(self) -> None:
        worker = InProcessWorker([queue(self.settings, SIMULATOR_QUEUE)], connection=self.conn)
        worker.work(burst=True)

    def transcripts(self, phone: str = PHONE) -> list[list[dict[str, Any]]]:
        """Every call's transcript between us and ``phone``, oldest call first."""
        return [read_transcript(self.settings, c.sid) for c in self.provider.household_calls(phone, self.started)]

    def meant(self, phone: str = PHONE) -> dict[str, str]:
        """What the resident answered over all calls: the last valid key pressed at each question."""
        merged: dict[str, str] = {}
        for transcript in self.transcripts(phone):
            merged.update(answers_from_transcript(transcript, OPTIONS))
        return merged

    def stored(self, phone: str = PHONE) -> dict[str, str]:
        with self.sessions() as session:
            return dict(
                session.execute(
                    select(Answer.question, Answer.digit)
                    .join(Response, Response.id == Answer.response_id)
                    .join(RoundTarget, RoundTarget.id == Response.target_id)
                    .where(RoundTarget.phone == phone)
                ).all()
            )

    def target_row(self, target_id: int) -> RoundTarget:
        with self.sessions() as session:
            return session.get(RoundTarget, target_id)

    def response(self, target_id: int) -> Response | None:
        with self.sessions() as session:
            return session.scalar(select(Response).where(Response.target_id == target_id))


@pytest.fixture
def network(live_server, sessions, redis_conn) -> Network:
    return Network(live_server, sessions, redis_conn, datetime.now(UTC) - timedelta(seconds=1))


def steps_asked(transcript: list[dict[str, Any]]) -> list[str]:
    """The positions the IVR asked in one call, in order, without repeats of the same ask."""
    asked: list[str] = []
    for entry in transcript:
        if "step" in entry and (not asked or asked[-1] != entry["step"]):
            asked.append(entry["step"])
    return asked


def said(transcript: list[dict[str, Any]]) -> list[str]:
    return [entry["say"] for entry in transcript if "say" in entry]


# ------------------------------------------------------------------------------------------- keypad habits


def test_invalid_keys_silence_and_star_store_what_the_resident_meant(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    set_script(
        network.settings,
        PHONE,
        {"answers": {"security": ["7", "3"], "concern": ["*", "2"], "awareness": ["", "1"], "satisfaction": ["#", "", "4"]}},
    )

    network.dial(round_id)

    [transcript] = network.transcripts()
    stored = network.stored()
    assert stored == network.meant()
    # satisfaction: an invalid key then silence used both tries; the question is left unanswered.
    assert stored == {"consent": "1", "screen": "1", "security": "3", "concern": "2", "awareness": "1",
                      "participation": "1", "cadre_contact": "1", "visit": "2"}
    assert "输入有误。" in said(transcript) and "没有听到您的按键。" in said(transcript)
    response = network.response(target_id)
    assert response.status is ResponseStatus.IN_PROGRESS  # a rate question is unanswered
    assert network.target_row(target_id).state is TargetState.PENDING  # incomplete: retried
    with network.sessions() as session:
        paradata = {
            a.question: (a.tries, a.invalid_keys, a.silences)
            for a in session.scalars(select(Answer).where(Answer.response_id == response.id))
        }
        outcomes = session.scalars(
            select(KeyPress.outcome).where(KeyPress.step == "satisfaction").order_by(KeyPress.seq)
        ).all()
    assert paradata["security"] == (2, 1, 0)
    assert paradata["concern"] == (1, 0, 0)  # * is the resident asking, not a try
    assert paradata["awareness"] == (2, 0, 1)
    assert paradata["consent"] == (1, 0, 0)
    assert outcomes == ["invalid", "silence"]


def test_the_unanswered_question_is_asked_on_the_next_call_and_the_interview_completes(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    set_script(network.settings, PHONE, [{"answers": {"awareness": ["", ""]}}, {"answers": {"awareness": "2"}}])

    network.dial(round_id)
    assert "awareness" not in network.stored()
    network.dial(round_id)

    _first, second = network.transcripts()
    assert steps_asked(second) == ["awareness"]
    assert said(second)[0].startswith("欢迎回来")
    assert network.stored() == network.meant()
    assert network.stored()["awareness"] == "2"
    with network.sessions() as session:
        answer = session.scalar(select(Answer).where(Answer.question == "awareness"))
    assert (answer.tries, answer.silences) == (3, 2)  # paradata spans both calls
    assert network.response(target_id).status is ResponseStatus.COMPLETED
    assert network.target_row(target_id).state is TargetState.COMPLETED


# ----------------------------------------------------------------------------------------- ways to end


@pytest.mark.parametrize(
    ("script", "status", "state", "answers"),
    [
        ({"answers": {"consent": "2"}}, ResponseStatus.REFUSED, TargetState.REFUSED, {"consent": "2"}),
        ({"answers": {"screen": "2"}}, ResponseStatus.INELIGIBLE, TargetState.INELIGIBLE, {"consent": "1", "screen": "2"}),
        (
            {"answers": {"awareness": "9"}},
            ResponseStatus.OPTED_OUT,
            TargetState.OPTED_OUT,
            {"consent": "1", "screen": "1", "security": "1"},
        ),
    ],
    ids=["consent-no", "screen-no", "nine"],
)
def test_refusal_ineligibility_and_nine(network: Network, script, status, state, answers) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    set_script(network.settings, PHONE, script)

    network.dial(round_id)

    assert network.stored() == network.meant() == answers
    assert network.response(target_id).status is status
    assert network.target_row(target_id).state is state
    with network.sessions() as session:
        on_list = session.scalar(select(DoNotCall).filter_by(phone=PHONE)) is not None
    assert on_list is (status is ResponseStatus.OPTED_OUT)
    [transcript] = network.transcripts()
    assert transcript[-2] == {"hangup": "twiml"}


def test_nine_after_the_rates_still_completes(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    set_script(network.settings, PHONE, {"answers": {"security": "4", "concern": "1", "visit": "9"}})

    network.dial(round_id)

    assert "visit" not in network.stored()
    assert network.response(target_id).status is ResponseStatus.COMPLETED  # 9 at the visit question comes after completion
    assert network.target_row(target_id).state is TargetState.COMPLETED
    with network.sessions() as session:
        assert session.scalar(select(DoNotCall).filter_by(phone=PHONE)) is not None


# ---------------------------------------------------------------------------------------- resume, call-back


def test_a_resident_who_hangs_up_and_calls_back_resumes_where_they_left(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    first = {"hangup_at_step": "participation", "call_back": True, "answers": {"security": "3", "concern": "4"}}
    second = {"answers": {"participation": "2", "satisfaction": "3", "visit": "1"}}
    set_script(network.settings, PHONE, [first, second])

    network.dial(round_id)

    outbound, inbound = network.transcripts()
    assert steps_asked(outbound) == ["consent", "screen", "security", "concern", "awareness", "participation"]
    assert {"hangup": "resident", "step": "participation", "try": None, "n": 6} in outbound
    assert {"call_back": network.provider.find_calls_from(PHONE, network.started)[0].sid} in outbound
    # The call-back never asks again what was answered, and greets with 欢迎回来.
    assert steps_asked(inbound) == ["participation", "satisfaction", "cadre_contact", "visit"]
    assert said(inbound)[0].startswith("欢迎回来")
    assert network.stored() == network.meant() == {
        "consent": "1", "screen": "1", "security": "3", "concern": "4", "awareness": "1",
        "participation": "2", "satisfaction": "3", "cadre_contact": "1", "visit": "1",
    }
    with network.sessions() as session:
        attempts = session.scalars(select(CallAttempt).where(CallAttempt.target_id == target_id).order_by(CallAttempt.id)).all()
        responses = session.scalar(select(func.count()).select_from(Response))
    assert [(a.direction, a.number, a.status) for a in attempts] == [
        (CallDirection.OUTBOUND, 1, CallStatus.COMPLETED),
        (CallDirection.INBOUND, -1, CallStatus.COMPLETED),
    ]
    assert attempts[1].call_sid == network.provider.find_calls_from(PHONE, network.started)[0].sid
    assert responses == 1
    assert network.response(target_id).status is ResponseStatus.COMPLETED
    target = network.target_row(target_id)
    assert target.state is TargetState.COMPLETED and target.attempts == 1  # a call-back uses no dialling budget


def test_a_call_back_that_drops_again_leaves_the_target_to_be_retried(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    set_script(network.settings, PHONE, [{"hangup_at_step": "awareness", "call_back": True},
                                     {"hangup_at_step": "satisfaction"}, {}])

    network.dial(round_id)
    target = network.target_row(target_id)
    assert target.state is TargetState.PENDING and target.last_outcome == "dropped"
    assert set(network.stored()) == {"consent", "screen", "security", "awareness", "participation"}

    network.dial(round_id)  # the next outbound attempt finishes it

    _outbound1, inbound, outbound2 = network.transcripts()
    assert steps_asked(inbound) == ["awareness", "participation", "satisfaction"]
    assert steps_asked(outbound2) == ["satisfaction", "cadre_contact"]
    assert network.stored() == network.meant()
    assert network.target_row(target_id).state is TargetState.COMPLETED


def test_an_unknown_caller_hears_a_polite_message(network: Network) -> None:
    network.round()
    sid = network.call_in("+8613999999999")

    transcript = read_transcript(network.settings, sid)
    assert said(transcript) == [Q.messages["unknown_caller"]]
    assert {"hangup": "twiml"} in transcript
    with network.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallAttempt)) == 0


def test_a_caller_whose_interview_is_over_hears_a_polite_message(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    set_script(network.settings, PHONE, {})
    network.dial(round_id)
    assert network.target_row(target_id).state is TargetState.COMPLETED

    sid = network.call_in()

    assert said(read_transcript(network.settings, sid)) == [Q.messages["already_done"]]
    with network.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallAttempt)) == 1
        assert session.scalar(select(func.count()).select_from(KeyPress)) == 7


def test_a_caller_of_a_finished_round_is_unknown(network: Network) -> None:
    round_id = network.round()
    network.target(round_id)
    with network.sessions.begin() as session:
        session.get(Round, round_id).status = RoundStatus.COMPLETED

    sid = network.call_in()

    assert said(read_transcript(network.settings, sid)) == [Q.messages["unknown_caller"]]


def test_a_caller_we_are_dialling_right_now_is_asked_to_wait(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    with network.sessions.begin() as session:
        [claim] = claim_due_targets(session, session.get(Round, round_id), now(), 1)

    sid = network.call_in()

    assert said(read_transcript(network.settings, sid)) == [Q.messages["call_later"]]
    with network.sessions() as session:
        assert session.scalars(select(CallAttempt.id)).all() == [claim.attempt_id]
    assert network.target_row(target_id).state is TargetState.DIALING


def test_a_caller_in_a_paused_round_resumes_and_the_latest_round_wins(network: Network) -> None:
    old_round = network.round(status=RoundStatus.PAUSED)
    with network.sessions.begin() as session:
        household = make_household(session, phone=PHONE)
        old = RoundTarget(round_id=old_round, household_id=household.id, phone=PHONE)
        new_round = make_round(session, windows=[["00:00", "24:00"]], status=RoundStatus.PAUSED)
        new = RoundTarget(round_id=new_round.id, household_id=household.id, phone=PHONE)
        session.add_all([old, new])
    set_script(network.settings, PHONE, {})

    network.call_in()

    assert network.response(new.id).status is ResponseStatus.COMPLETED
    assert network.response(old.id) is None
    assert network.target_row(new.id).state is TargetState.COMPLETED


# -------------------------------------------------------------------------------------- answering machines


@pytest.mark.parametrize("outcome", ["machine", "fax"])
def test_an_answering_machine_is_hung_up_on_and_retried_later(network: Network, outcome: str) -> None:
    round_id = network.round(machine_detection=True)
    target_id = network.target(round_id)
    set_script(network.settings, PHONE, [{"outcome": outcome}, {}])

    [attempt_id] = network.dial(round_id)

    [transcript] = network.transcripts()
    assert not any("step" in entry for entry in transcript)  # hung up before any question
    assert {"hangup": "twiml"} in transcript
    with network.sessions() as session:
        attempt = session.get(CallAttempt, attempt_id)
        round_ = session.get(Round, round_id)
        assert session.scalar(select(func.count()).select_from(Response)) == 0
    target = network.target_row(target_id)
    assert attempt.answered_by == {"machine": "machine_start", "fax": "fax"}[outcome]
    assert target.state is TargetState.PENDING and target.last_outcome == "machine"
    delay = (target.next_attempt_at - attempt.ended_at).total_seconds()
    assert abs(delay - round_.retry["machine"]) < 5

    network.dial(round_id)  # a person answers the retry
    assert network.target_row(target_id).state is TargetState.COMPLETED


def test_without_detection_a_person_is_interviewed_and_no_answered_by_is_sent(network: Network) -> None:
    round_id = network.round(machine_detection=True)
    network.target(round_id)
    other_round = network.round()
    network.target(other_round, "+8613800000002")
    set_script(network.settings, PHONE, {})
    set_script(network.settings, "+8613800000002", {})

    [with_amd] = network.dial(round_id)
    [without] = network.dial(other_round)

    with network.sessions() as session:
        assert session.get(CallAttempt, with_amd).answered_by == "human"
        assert session.get(CallAttempt, without).answered_by is None
    assert network.stored() == network.meant()


# ------------------------------------------------------------------------------------------------- read-back


def readback_round(network: Network) -> int:
    content = copy.deepcopy(dict(Q.content))
    content["key"] = "readback"
    content["readback"] = True
    with network.sessions.begin() as session:
        version = store_version(session, parse_questionnaire(content))
        return make_round(
            session, questionnaire_id=version.id, windows=[["00:00", "24:00"]], cps=100.0, status=RoundStatus.RUNNING
        ).id


def test_read_back_confirms_and_re_choosing_replaces_the_answer_with_history(network: Network) -> None:
    round_id = readback_round(network)
    target_id = network.target(round_id)
    set_script(
        network.settings,
        PHONE,
        {"answers": {"security": ["3", "1"], "security.confirm": ["2", "1"], "awareness.confirm": ["7", "1"]}},
    )

    network.dial(round_id)

    [transcript] = network.transcripts()
    assert steps_asked(transcript) == [
        "consent", "screen",
        "security", "security.confirm", "security", "security.confirm",
        "awareness", "awareness.confirm",
        "participation", "participation.confirm", "satisfaction", "satisfaction.confirm",
        "cadre_contact", "cadre_contact.confirm",
    ]
    texts = said(transcript)
    assert "您选择的是不太安全,确认请按1,重新选择请按2。" in texts
    assert "您选择的是安全,确认请按1,重新选择请按2。" in texts
    # Security re-chosen as 1: concern (asked only after 3 or 4) and visit are not asked.
    assert network.stored() == network.meant() == {
        "consent": "1", "screen": "1", "security": "1", "awareness": "1", "participation": "1",
        "satisfaction": "1", "cadre_contact": "1",
    }
    with network.sessions() as session:
        changes = session.execute(select(AnswerChange.old_digit, AnswerChange.new_digit)).all()
        security = session.scalar(select(Answer).where(Answer.question == "security"))
        confirm_presses = session.scalars(
            select(KeyPress.outcome).where(KeyPress.step == "awareness.confirm").order_by(KeyPress.seq)
        ).all()
    assert changes == [("3", "1")]
    assert security.tries == 2
    assert confirm_presses == ["invalid", "confirm"]
    assert network.response(target_id).status is ResponseStatus.COMPLETED
