"""The lift report on a simulated township whose true effect is known.

An SMS notice goes to two villages with a 40% hold-out, through worker processes and the simulated network;
30% of the texts are not delivered. Then a survey round calls everybody. A resident whose text was delivered
answers 知道 with the set probability (SANLV_SIM_NOTICE_AWARENESS); every other resident with their village's
own (``VillageProfile``). So, given who completed the interview, the expected awareness of each group is
known, and so is the true difference the report estimates: its 95% intervals must cover it, for the intention
to treat and for delivered-only, and the two must differ as failed deliveries make them.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict

import pytest
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import (
    Household,
    NoticeChannel,
    NoticeTarget,
    ResponseStatus,
    RoundTarget,
    Village,
)
from campaigns.notices import NoticeOptions, change_notice, create_notice
from reports import lift
from sim.residents import VillageProfile
from tests.factories import make_household, make_village
from tests.sim.test_notices_sim import wait_completed
from tests.support.workers import launch_round, start_workers, stop_workers, wait_for_completion
from workers.messaging import after_notice_change

NOTIFIED_AWARENESS = 0.99
# Villages whose residents know of the work less often than most (about 85%), so the notice has room to lift it.
VILLAGES = ("下湖村", "高溪村")
PER_VILLAGE = 90


@pytest.fixture
def sim_workers(live_server, tmp_path):
    env = {
        **os.environ,
        "SANLV_SIM_SEED": "23",
        "SANLV_SIM_NOTICE_AWARENESS": str(NOTIFIED_AWARENESS),
        "SANLV_SIM_UNDELIVERED": "0.3",
        "SANLV_SIM_TD_RATE": "0",
    }
    procs = start_workers(2, env, tmp_path / "workers.log")
    yield procs
    stop_workers(procs)


def test_the_lift_intervals_cover_the_true_effect(live_server, sim_workers, sessions) -> None:
    rng = random.Random(23)
    with session_scope(sessions) as session:
        for name in VILLAGES:
            village = make_village(session, name=name)
            for _ in range(PER_VILLAGE):
                make_household(session, village, phone=f"+86136{rng.randrange(10**8):08d}")
    with session_scope(sessions) as session:
        notice_id = create_notice(
            session,
            NoticeOptions(name="平安短信", channel=NoticeChannel.SMS, text="平安建设人人参与，遇到纠纷可找村调解委员会。",
                          holdout=0.4, seed=5, windows=[["00:00", "24:00"]], cps=30, max_attempts=1),
        ).id  # fmt: skip
        change_notice(session, notice_id, "launch")
    after_notice_change(live_server, notice_id, "launch")
    wait_completed(sessions, notice_id, sim_workers, timeout=180)

    round_id = launch_round(live_server, sessions, "知晓率调查", cps=30, max_concurrent=30)
    wait_for_completion(sessions, round_id, sim_workers, timeout=400)

    with sessions() as session:
        report = lift.notice_lift(session, round_id, notice_id)
        completed = session.execute(
            select(Village.name, NoticeTarget.held_out, NoticeTarget.delivered)
            .select_from(RoundTarget)
            .join(Household, Household.id == RoundTarget.household_id)
            .join(Village, Village.id == Household.village_id)
            .join(NoticeTarget, NoticeTarget.household_id == Household.id)
            .where(RoundTarget.round_id == round_id, RoundTarget.response_status == ResponseStatus.COMPLETED)
        ).all()
    # What each group of completed interviews is expected to answer, from the simulation's own settings.
    expected: dict[str, list[float]] = defaultdict(list)
    for village, held_out, delivered in completed:
        baseline = VillageProfile.for_village(village).awareness
        if held_out:
            expected["held_out"].append(baseline)
        else:
            expected["notified"].append(NOTIFIED_AWARENESS if delivered else baseline)
            if delivered:
                expected["delivered"].append(NOTIFIED_AWARENESS)
    mean = {group: sum(values) / len(values) for group, values in expected.items()}
    true_itt = mean["notified"] - mean["held_out"]
    true_delivered = mean["delivered"] - mean["held_out"]

    total = report.total
    itt, delivered = total.itt["awareness"], total.delivered["awareness"]
    assert total.households.held_out == round(0.4 * PER_VILLAGE) * len(VILLAGES)  # 40% of each village
    assert 0 < total.households.delivered < total.households.notified  # some texts were not delivered
    assert (itt.notified.valid, itt.held_out.valid) == (len(expected["notified"]), len(expected["held_out"]))
    assert delivered.notified.valid == len(expected["delivered"])
    assert itt.ci_low <= true_itt <= itt.ci_high, (itt, true_itt)
    assert delivered.ci_low <= true_delivered <= delivered.ci_high, (delivered, true_delivered)
    # Failed deliveries dilute the intention to treat: delivered-only is larger, in truth and as measured.
    assert true_delivered > true_itt > 0.05
    assert delivered.difference > itt.difference > 0
    assert delivered.significant
    # The other rates do not depend on the notice: their intervals cover 0.
    for measure in ("security", "satisfaction", "participation", "cadre_contact"):
        assert total.itt[measure].ci_low <= 0 <= total.itt[measure].ci_high, measure
