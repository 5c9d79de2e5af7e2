"""The simulated network's residents: scripts stored in Redis (in the namespace) and the village population."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import redis
import requests

from campaigns.settings import Settings
from sim.call import SimulatedCall
from sim.residents import (
    PopulationResident,
    ScriptedResident,
    VillageProfile,
    resident_for_call,
    script_key,
    set_script,
    take_script,
)
from sim.store import answers_from_transcript
from tests.factories import make_household, make_village
from tests.sim.fake_ivr import FAKE_TOKEN, PHONE, FakeIvr, make_call, sim_settings


def test_a_script_list_is_consumed_one_per_call_and_the_last_repeats(settings: Settings, redis_conn: redis.Redis) -> None:
    set_script(settings, PHONE, [{"outcome": "busy"}, {"outcome": "no-answer"}, {"answers": {"q1": "3"}}])

    outcomes = [take_script(settings, PHONE) for _ in range(5)]

    assert [o.get("outcome", "answer") for o in outcomes] == ["busy", "no-answer", "answer", "answer", "answer"]
    assert take_script(settings, "+8613999999999") is None


def test_a_single_script_object_applies_to_every_call(settings: Settings, redis_conn: redis.Redis) -> None:
    redis_conn.set(script_key(settings, PHONE), '{"outcome": "busy"}')  # written by hand, as a test may

    assert [take_script(settings, PHONE) for _ in range(3)] == [{"outcome": "busy"}] * 3


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"answers": ["1"]}, "answers"),
        ({"presses": "12"}, "presses"),
        ({"hangup_after_presses": -1}, "hangup_after_presses"),
        ({"whatever": 1}, "whatever"),
        ({"call_back": "soon"}, "call_back"),
        ({"call_back": -1}, "call_back"),
        ([], "empty"),
    ],
)
def test_set_script_rejects_a_malformed_script(settings: Settings, redis_conn: redis.Redis, script: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        set_script(settings, PHONE, script)
    assert redis_conn.get(script_key(settings, PHONE)) is None


def test_read_back_confirmations_are_confirmed_unless_scripted_and_are_not_answers() -> None:
    resident = ScriptedResident({"answers": {"security": ["3", "1"], "security.confirm": ["2", "1"]}})

    assert resident.respond("security", 1).keys == "3"
    assert resident.respond("security.confirm", 1).keys == "2"
    assert resident.respond("security", 1).keys == "1"
    assert resident.respond("security.confirm", 1).keys == "1"
    assert resident.respond("awareness.confirm", 1).keys == "1"
    assert resident.meant("security.confirm") is None and resident.meant("security") == "1"
    habits = {"silence": 0, "repeat": 0, "wrong_key": 0, "drop": 0, "opt_out": 0}
    population = PopulationResident(VillageProfile(name=None, **habits), PHONE, 1)
    assert population.respond("awareness.confirm", 1).keys == "1" and population.meant("awareness.confirm") is None
    transcript = [
        {"step": "security", "digits": "3"},
        {"step": "security.confirm", "digits": "2"},
        {"step": "security", "digits": "1"},
        {"step": "security.confirm", "digits": "1"},
    ]
    assert answers_from_transcript(transcript) == {"security": "1"}


def test_scripted_resident_defaults_and_unknown_steps() -> None:
    resident = ScriptedResident({"answers": {"security": "3"}})

    assert resident.respond("consent", 1).keys == "1"
    assert resident.respond("security", 1).keys == "3"
    assert resident.respond("visit", 1).keys == "2"
    assert resident.respond("no-such-step", 1).keys == "1"
    assert resident.meant("security") == "3"


# ------------------------------------------------------------------------------------------- population


def _rates(village: str, count: int = 300, seed: str = "0") -> dict[str, float]:
    profile = VillageProfile.for_village(village)
    positive: Counter[str] = Counter()
    for n in range(count):
        resident = PopulationResident(profile, f"+86138{n:08d}", attempt=1, seed=seed)
        positive["security"] += resident.meant("security") in ("1", "2")
        positive["participation"] += resident.meant("participation") == "1"
        positive["cadre_contact"] += resident.meant("cadre_contact") == "1"
    return {key: value / count for key, value in positive.items()}


def test_villages_differ_and_each_follows_its_profile() -> None:
    east, west = VillageProfile.for_village("东山村"), VillageProfile.for_village("西河村")
    assert east == VillageProfile.for_village("东山村")  # derived from the name, nothing else
    # The precondition that makes the comparison meaningful: the two profiles are far apart.
    assert abs(east.participation - west.participation) > 0.15

    east_rates, west_rates = _rates("东山村"), _rates("西河村")

    for profile, rates in ((east, east_rates), (west, west_rates)):
        # 300 draws: a binomial standard error is at most 0.029; 0.09 is three of them.
        assert abs(rates["participation"] - profile.participation) < 0.09
        assert abs(rates["security"] - profile.security_positive) < 0.09
    assert abs(east_rates["participation"] - west_rates["participation"]) > 0.1
    assert (east_rates["participation"] > west_rates["participation"]) == (east.participation > west.participation)


def test_profiles_stay_in_their_ranges() -> None:
    for name in ("东山村", "西河村", "南岭村", "北坡村", "Village 7"):
        profile = VillageProfile.for_village(name)
        assert 0.85 <= profile.security_positive <= 0.995
        assert 0.80 <= profile.satisfaction_positive <= 0.99
        assert 0.85 <= profile.awareness <= 0.99
        assert 0.40 <= profile.participation <= 0.80
        assert 0.60 <= profile.cadre_contact <= 0.95
        assert 0.06 <= profile.busy <= 0.10
    assert VillageProfile.for_village(None).name is None


def test_population_is_reproducible_and_opinions_survive_a_new_attempt() -> None:
    profile = VillageProfile.for_village("东山村")
    steps = ("consent", "security", "awareness", "satisfaction", "visit", "unknown")

    def interview(attempt: int, seed: str) -> list[str]:
        resident = PopulationResident(profile, PHONE, attempt, seed)
        return [resident.meant(step) or "" for step in steps]

    assert interview(1, "0") == interview(1, "0") == interview(2, "0")
    assert interview(1, "0")[-1] == "1"  # unknown steps get "1"
    seeds = {tuple(_rates("东山村", 100, seed).values()) for seed in ("0", "1")}
    assert len(seeds) == 2


def test_population_call_outcomes_follow_the_profile() -> None:
    profile = VillageProfile.for_village("南岭村")
    outcomes = Counter(PopulationResident(profile, f"+86138{n:08d}", 1).outcome for n in range(2000))

    assert abs(outcomes["busy"] / 2000 - profile.busy) < 0.025
    assert abs(outcomes["no-answer"] / 2000 - profile.no_answer) < 0.025
    assert outcomes["answer"] / 2000 > 0.7


def test_population_resident_talks_to_the_ivr(ivr: FakeIvr, http: requests.Session) -> None:
    answered = 0
    for n in range(20):
        phone = f"+86138{n:08d}"
        resident = PopulationResident(VillageProfile.for_village("东山村"), phone, 1)
        result = SimulatedCall(sim_settings(), make_call(ivr, to=phone), resident, http, token=FAKE_TOKEN).run()
        if resident.outcome != "answer":
            continue
        answered += 1
        pressed = [e for e in result.transcript if "digits" in e]
        assert all(e["meant"] == "1" for e in pressed)  # q1..q3 are unknown steps: a resident means "1"
        assert {e["digits"] for e in pressed} <= {"1", "*", "7", "9"}  # the answer, repeat, a slip, or stop
    assert answered >= 10


def test_resident_for_call_uses_the_households_village(
    settings: Settings, redis_conn: redis.Redis, session: Any, sessions: Any
) -> None:
    village = make_village(session, name="东山村")
    household = make_household(session, village=village)
    session.commit()

    known = resident_for_call(settings, household.phone, 1, sessions=sessions)
    unknown = resident_for_call(settings, "+8613999999999", 1, sessions=sessions)
    set_script(settings, household.phone, {"outcome": "busy"})
    scripted = resident_for_call(settings, household.phone, 2, sessions=sessions)

    assert isinstance(known, PopulationResident) and known.profile.name == "东山村"
    assert isinstance(unknown, PopulationResident) and unknown.profile.name is None
    assert isinstance(scripted, ScriptedResident) and scripted.outcome == "busy"
