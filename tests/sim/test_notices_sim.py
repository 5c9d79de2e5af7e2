"""Notices on the simulated phone network: texts delivered (or not) and reported, TD replies, voice notices
listened to; and residents who got a notice answering 知道 with the settable probability."""

from __future__ import annotations

import os
import random
import time

import pytest
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import NoticeChannel, NoticeTarget, NoticeTargetState, SmsOptOut
from campaigns.notices import NoticeOptions, change_notice, create_notice, notice_status_report
from sim.messages import MessageOptions
from sim.residents import PopulationResident, VillageProfile, resident_for_call
from tests.factories import make_household, make_notice, make_notice_target, make_village
from tests.support.workers import start_workers, stop_workers
from workers.messaging import after_notice_change


def test_a_resident_who_got_a_notice_knows_with_the_set_probability(env, sessions, monkeypatch) -> None:
    with session_scope(sessions) as session:
        village = make_village(session, name="东山村")
        notice = make_notice(session)
        told = make_household(session, village)
        untold = make_household(session, village)
        held = make_household(session, village)
        make_notice_target(session, notice, told, delivered=True, state=NoticeTargetState.SENT)
        make_notice_target(session, notice, held, held_out=True)
        phones = told.phone, untold.phone, held.phone
    village_awareness = VillageProfile.for_village("东山村").awareness
    monkeypatch.setenv("SANLV_SIM_NOTICE_AWARENESS", "0.5")

    residents = [resident_for_call(env, phone, 1, sessions=sessions) for phone in phones]

    assert [r.profile.awareness for r in residents] == [0.5, village_awareness, village_awareness]
    monkeypatch.delenv("SANLV_SIM_NOTICE_AWARENESS")
    assert resident_for_call(env, phones[0], 1, sessions=sessions).profile.awareness == village_awareness


def test_the_awareness_drawn_follows_the_set_probability() -> None:
    profile = VillageProfile.for_village("西溪村")
    knows = sum(
        PopulationResident(profile, f"+8613800{i:06d}", 1, seed=3, notified_awareness=0.7).meant("awareness") == "1"
        for i in range(4000)
    )
    assert abs(knows / 4000 - 0.7) < 0.03


def test_message_options_are_checked() -> None:
    assert MessageOptions.from_environ({"SANLV_SIM_TD_RATE": "0.2"}).td_rate == 0.2
    with pytest.raises(ValueError, match="SANLV_SIM_UNDELIVERED"):
        MessageOptions.from_environ({"SANLV_SIM_UNDELIVERED": "2"})


@pytest.fixture
def sim_workers(live_server, tmp_path):
    env = {**os.environ, "SANLV_SIM_SEED": "11", "SANLV_SIM_TD_RATE": "0.3", "SANLV_SIM_UNDELIVERED": "0.2"}
    procs = start_workers(2, env, tmp_path / "workers.log")
    yield procs
    stop_workers(procs)


def wait_completed(sessions, notice_id: int, procs, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            report = notice_status_report(session, notice_id)
        finals = sum(report["provider_statuses"].get(s, 0) for s in ("delivered", "undelivered"))
        if report["status"] == "completed" and (report["channel"] == "voice" or finals == report["targets"]["sent"]):
            return report
        assert all(p.poll() is None for p in procs), "a worker died"
        if time.monotonic() > deadline:
            pytest.fail(f"notice {notice_id} did not finish: {report}")
        time.sleep(0.5)


def test_sms_and_voice_notices_on_the_simulated_network(live_server, sim_workers, sessions) -> None:
    rng = random.Random(5)
    with session_scope(sessions) as session:
        for v in range(2):
            village = make_village(session, name=f"模拟村{v}")
            for _ in range(15):
                make_household(session, village, phone=f"+86137{rng.randrange(10**8):08d}")
    ids = {}
    for channel, text in ((NoticeChannel.SMS, "请防范电信诈骗。"), (NoticeChannel.VOICE, "今晚有大风，请关好门窗。")):
        with session_scope(sessions) as session:
            notice_id = create_notice(
                session,
                NoticeOptions(name=channel.value, channel=channel, text=text, holdout=0.2, seed=1,
                              windows=[["00:00", "24:00"]], cps=20, max_attempts=1),
            ).id  # fmt: skip
            change_notice(session, notice_id, "launch")
        after_notice_change(live_server, notice_id, "launch")
        ids[channel] = notice_id

    sms = wait_completed(sessions, ids[NoticeChannel.SMS], sim_workers)
    assert sms["targets"]["sent"] == 24 and sms["held_out"] == 6
    assert sms["provider_statuses"].get("undelivered", 0) > 0 and sms["delivered"] > 0
    with sessions() as session:
        opted = set(session.scalars(select(SmsOptOut.phone)))
        delivered = set(
            session.scalars(
                select(NoticeTarget.phone).where(
                    NoticeTarget.notice_id == ids[NoticeChannel.SMS], NoticeTarget.delivered
                )
            )
        )
    assert opted and opted <= delivered  # only residents who got the text reply TD

    voice = wait_completed(sessions, ids[NoticeChannel.VOICE], sim_workers)
    assert sum(voice["targets"][s] for s in ("heard", "failed")) == 24
    assert voice["heard_to_end"] > 0 and voice["delivered"] == voice["targets"]["heard"]
