"""Whole calls: the real dialler job places them through the simulated phone network, whose scripted
residents talk to the real Flask app over HTTP (signed webhooks), and the stored interview must be exactly
what each resident meant.

The network's calls run in this process on an RQ InProcessWorker (burst), so every call, call-back and status
callback has finished when ``Network.run()`` returns.
"""

from __future__ import annotations

import copy
import csv
import io
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
    InboundMode,
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
from reports.rates import village_rates
from reports.render import render_bytes
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
                      "participation": "1", "cadre_contact": "1", "visit": "2", "delivery": "1"}
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


def call_back_said() -> list[str]:
    return [Q.messages["call_back"]]


def test_by_default_a_caller_is_not_interviewed_but_called_back_and_the_interview_resumes(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    first = {"hangup_at_step": "participation", "call_back": True, "answers": {"security": "3", "concern": "4"}}
    second = {"answers": {"participation": "2", "satisfaction": "3", "visit": "1"}}
    set_script(network.settings, PHONE, [first, second])

    network.dial(round_id)

    outbound, inbound = network.transcripts()
    assert steps_asked(outbound) == ["consent", "screen", "security", "concern", "awareness", "participation"]
    # The call the resident made: the same greeting as anyone's, no question asked, hung up.
    assert said(inbound) == call_back_said() and not any("step" in entry for entry in inbound)
    assert {"hangup": "twiml"} in inbound
    target = network.target_row(target_id)
    assert target.state is TargetState.PENDING and target.call_backs == 1
    assert target.call_back_requested_at is not None
    assert abs((target.next_attempt_at - now()).total_seconds()) < 60  # the window is open: at once
    with network.sessions() as session:
        assert session.scalars(select(CallAttempt.direction)).all() == [CallDirection.OUTBOUND]

    network.dial(round_id)  # our call-back: the interview resumes where it stopped

    _outbound, _inbound, call_back = network.transcripts()
    assert steps_asked(call_back) == ["participation", "satisfaction", "cadre_contact", "visit", "delivery"]
    assert said(call_back)[0].startswith("欢迎回来")
    assert network.stored() == network.meant()
    response = network.response(target_id)
    assert response.status is ResponseStatus.COMPLETED and response.inbound is False
    target = network.target_row(target_id)
    assert target.state is TargetState.COMPLETED and target.call_back_requested_at is None


def test_a_call_back_is_claimed_before_targets_that_waited_longer(network: Network) -> None:
    round_id = network.round()
    waiting = [network.target(round_id, f"+86138000000{n:02d}") for n in range(10, 13)]
    target_id = network.target(round_id)
    with network.sessions.begin() as session:
        for n, other in enumerate(waiting):
            session.get(RoundTarget, other).next_attempt_at = now() - timedelta(days=1, minutes=n)

    network.call_in()

    with network.sessions.begin() as session:
        [first] = claim_due_targets(session, session.get(Round, round_id), now(), 1)
        [second] = claim_due_targets(session, session.get(Round, round_id), now(), 1)
    assert first.target_id == target_id
    assert second.target_id == waiting[-1]


def test_a_call_back_goes_beyond_the_attempt_budget_once_per_call_and_at_most_twice(network: Network) -> None:
    round_id = network.round(max_attempts=1)
    target_id = network.target(round_id)
    set_script(network.settings, PHONE, [{"outcome": "no-answer"}, {"outcome": "no-answer"}, {"outcome": "no-answer"}])
    network.dial(round_id)
    assert network.target_row(target_id).state is TargetState.UNREACHABLE  # the budget is used up

    for expected in (1, 2):
        sid = network.call_in()
        assert said(read_transcript(network.settings, sid)) == call_back_said()
        target = network.target_row(target_id)
        assert (target.state, target.call_backs, target.final_at) == (TargetState.PENDING, expected, None)
        assert network.dial(round_id) != []  # one dial beyond the budget
        assert network.target_row(target_id).state is TargetState.UNREACHABLE

    sid = network.call_in()  # the household's call-backs are used up: the greeting, and nothing is dialled
    assert said(read_transcript(network.settings, sid)) == call_back_said()
    assert network.target_row(target_id).state is TargetState.UNREACHABLE
    assert network.dial(round_id) == []
    with network.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallAttempt)) == 3


def test_outside_the_calling_window_the_call_back_waits_for_its_opening(network: Network) -> None:
    tz = network.settings.tz
    local = now().astimezone(tz)
    opens = (local + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    closes = opens + timedelta(hours=1)
    if closes.date() != opens.date() or opens.date() != local.date():
        opens, closes = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1), None
    window = [opens.strftime("%H:%M"), closes.strftime("%H:%M") if closes else "01:00"]
    round_id = network.round(windows=[window])
    target_id = network.target(round_id)

    network.call_in()

    target = network.target_row(target_id)
    assert target.call_backs == 1
    assert target.next_attempt_at == opens.astimezone(UTC)


def test_every_caller_hears_the_same_greeting_on_the_roster_or_not(network: Network) -> None:
    round_id = network.round()
    done_id = network.target(round_id, "+8613800000002")
    dialling_id = network.target(round_id, "+8613800000003")
    pending_id = network.target(round_id)
    with network.sessions.begin() as session:
        session.get(RoundTarget, done_id).state = TargetState.COMPLETED
        session.get(RoundTarget, pending_id).next_attempt_at = now() + timedelta(hours=1)  # a retry, later
        [claim] = claim_due_targets(session, session.get(Round, round_id), now(), 1)
    assert claim.target_id == dialling_id

    heard = {
        phone: said(read_transcript(network.settings, network.call_in(phone)))
        for phone in (PHONE, "+8613800000002", "+8613800000003", "+8613999999999")
    }

    assert all(words == call_back_said() for words in heard.values()), heard
    assert network.target_row(pending_id).call_backs == 1  # only the household that can be called back is
    with network.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Response)) == 0
        assert session.scalar(select(func.count()).select_from(KeyPress)) == 0
        assert session.scalars(select(CallAttempt.direction)).all() == [CallDirection.OUTBOUND]  # only the claim


def test_a_number_on_the_do_not_call_list_is_not_called_back(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    with network.sessions.begin() as session:
        session.add(DoNotCall(phone=PHONE, reason="test"))

    sid = network.call_in()

    assert said(read_transcript(network.settings, sid)) == call_back_said()
    assert network.target_row(target_id).call_backs == 0


# ------------------------------------------------------------------------------- answering on inbound calls


def test_a_round_that_answers_on_inbound_calls_resumes_the_caller_and_marks_the_response(network: Network) -> None:
    round_id = network.round(inbound=InboundMode.ANSWER)
    target_id = network.target(round_id)
    first = {"hangup_at_step": "participation", "call_back": True, "answers": {"security": "3", "concern": "4"}}
    second = {"answers": {"participation": "2", "satisfaction": "3", "visit": "1"}}
    set_script(network.settings, PHONE, [first, second])

    network.dial(round_id)

    outbound, inbound = network.transcripts()
    assert steps_asked(outbound) == ["consent", "screen", "security", "concern", "awareness", "participation"]
    assert {"hangup": "resident", "step": "participation", "try": None, "n": 6} in outbound
    assert {"call_back": network.provider.find_calls_from(PHONE, network.started)[0].sid} in outbound
    # The inbound call never asks again what was answered, and greets with 欢迎回来.
    assert steps_asked(inbound) == ["participation", "satisfaction", "cadre_contact", "visit", "delivery"]
    assert said(inbound)[0].startswith("欢迎回来")
    assert network.stored() == network.meant() == {
        "consent": "1", "screen": "1", "security": "3", "concern": "4", "awareness": "1",
        "participation": "2", "satisfaction": "3", "cadre_contact": "1", "visit": "1", "delivery": "1",
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
    response = network.response(target_id)
    assert response.status is ResponseStatus.COMPLETED and response.inbound is True
    target = network.target_row(target_id)
    assert target.state is TargetState.COMPLETED and target.attempts == 1  # an inbound call uses no dialling budget
    assert target.call_backs == 0
    # The reports count such responses per village (one column, every renderer).
    other_id = network.target(round_id, "+8613800000002")
    set_script(network.settings, "+8613800000002", {})
    network.dial(round_id)
    assert network.response(other_id).inbound is False
    with network.sessions() as session:
        report = village_rates(session, round_id, flags=False)
    by_village = {v.village_id: (v.progress.completed, v.progress.completed_inbound) for v in report.villages}
    assert by_village == {network.target_row(target_id).village_id: (1, 1), network.target_row(other_id).village_id: (1, 0)}
    assert (report.total.progress.completed, report.total.progress.completed_inbound) == (2, 1)
    csv_text = render_bytes(report, "csv").decode("utf-8-sig")
    header, *rows = csv.reader(io.StringIO(csv_text))
    column = header.index("其中呼入完成")
    assert sorted(row[column] for row in rows) == ["0", "1", "1"]  # two villages and the township


def test_an_inbound_interview_that_drops_again_leaves_the_target_to_be_retried(network: Network) -> None:
    round_id = network.round(inbound=InboundMode.ANSWER)
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
    assert steps_asked(outbound2) == ["satisfaction", "cadre_contact", "delivery"]
    assert network.stored() == network.meant()
    assert network.target_row(target_id).state is TargetState.COMPLETED
    assert network.response(target_id).inbound is True


def test_answering_rounds_greet_unknown_finished_and_live_callers_as_everyone_else(network: Network) -> None:
    round_id = network.round(inbound=InboundMode.ANSWER)
    target_id = network.target(round_id)
    set_script(network.settings, PHONE, {})
    network.dial(round_id)
    assert network.target_row(target_id).state is TargetState.COMPLETED
    live_id = network.target(round_id, "+8613800000002")
    with network.sessions.begin() as session:
        [claim] = claim_due_targets(session, session.get(Round, round_id), now(), 1)
    assert claim.target_id == live_id

    for phone in ("+8613999999999", PHONE, "+8613800000002"):
        assert said(read_transcript(network.settings, network.call_in(phone))) == call_back_said()

    with network.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallAttempt)) == 2
        assert session.scalar(select(func.count()).select_from(KeyPress)) == 8  # 7 questions and the delivery check
    assert network.target_row(live_id).state is TargetState.DIALING


def test_a_caller_of_a_finished_round_is_greeted_and_not_called_back(network: Network) -> None:
    round_id = network.round()
    target_id = network.target(round_id)
    with network.sessions.begin() as session:
        session.get(Round, round_id).status = RoundStatus.COMPLETED

    sid = network.call_in()

    assert said(read_transcript(network.settings, sid)) == call_back_said()
    assert network.target_row(target_id).call_backs == 0


def test_a_caller_in_a_paused_answering_round_resumes_and_the_latest_round_wins(network: Network) -> None:
    old_round = network.round(status=RoundStatus.PAUSED, inbound=InboundMode.ANSWER)
    with network.sessions.begin() as session:
        household = make_household(session, phone=PHONE)
        old = RoundTarget(round_id=old_round, household_id=household.id, phone=PHONE)
        new_round = make_round(session, windows=[["00:00", "24:00"]], status=RoundStatus.PAUSED,
                               inbound=InboundMode.ANSWER)
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
        "cadre_contact", "cadre_contact.confirm", "delivery",
    ]
    texts = said(transcript)
    assert "您选择的是不太安全,确认请按1,重新选择请按2。" in texts
    assert "您选择的是安全,确认请按1,重新选择请按2。" in texts
    # Security re-chosen as 1: concern (asked only after 3 or 4) and visit are not asked. The delivery check
    # feeds no rate: it is not read back.
    assert network.stored() == network.meant() == {
        "consent": "1", "screen": "1", "security": "1", "awareness": "1", "participation": "1",
        "satisfaction": "1", "cadre_contact": "1", "delivery": "1",
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
