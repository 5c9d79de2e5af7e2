"""A round through the real pipeline (RQ worker processes, the Flask app over HTTP, the simulated phone network
with scripted residents) and its reports: every figure equals what the residents were scripted to do."""

from __future__ import annotations

import os

import pytest

from campaigns.db import session_scope
from reports.followups import followup_report
from reports.rates import village_rates
from sim.residents import set_script
from tests.factories import make_cadre, make_household, make_village
from tests.support.workers import (
    launch_round,
    start_workers,
    stop_workers,
    wait_for_completion,
)

# phone -> (village, script). Steps a script leaves out are answered positively, and "visit" with 2 (no).
RESIDENTS = {
    "+8613855550001": ("东村", {"answers": {"security": "4", "concern": "2", "visit": "1"}}),
    "+8613855550002": ("东村", {"answers": {"satisfaction": "3", "visit": "2"}}),
    "+8613855550003": ("东村", {"answers": {"cadre_contact": "2"}}),
    "+8613855550004": ("东村", {"answers": {"consent": "2"}}),
    "+8613855550005": ("西村", {"answers": {"security": "0", "satisfaction": "4", "visit": "1"}}),
    "+8613855550006": ("西村", {"outcome": "busy"}),
    "+8613855550007": ("西村", {"answers": {"screen": "2"}}),
    "+8613855550008": ("西村", {}),
}


@pytest.fixture
def worker_processes(live_server, tmp_path):
    procs = start_workers(2, dict(os.environ), tmp_path / "workers.log")
    yield procs
    stop_workers(procs)


def test_reports_of_a_round_run_through_the_simulator(live_server, worker_processes, sessions) -> None:
    settings = live_server
    with session_scope(sessions) as session:
        villages = {name: make_village(session, name=name) for name in ("东村", "西村")}
        cadres = {name: make_cadre(session, name=f"{name}干部") for name in villages}
        for phone, (village, script) in RESIDENTS.items():
            make_household(
                session, village=villages[village], cadre=cadres[village], phone=phone, name=f"户{phone[-1]}"
            )
            set_script(settings, phone, script)
    round_id = launch_round(settings, sessions, "流水线", max_concurrent=10, max_attempts=2)
    wait_for_completion(sessions, round_id, worker_processes, timeout=90)

    with session_scope(sessions) as session:
        report = village_rates(session, round_id).to_json()
        followups = followup_report(session, round_id).to_json()
    east, west = (next(v for v in report["villages"] if v["village"] == name) for name in ("东村", "西村"))

    progress = ("sampled", "dialled", "reached", "completed", "refused", "ineligible", "not_reached", "partial")
    assert [east[key] for key in progress] == [4, 4, 4, 3, 1, 0, 0, 0]
    assert [west[key] for key in progress] == [4, 4, 3, 2, 0, 1, 1, 0]
    assert (east["response_rate"], west["response_rate"]) == (0.75, 2 / 3)

    def rate(entry, key):
        figures = entry["rates"][key]
        return figures["positive"], figures["valid"]

    assert [rate(east, key) for key in ("security", "satisfaction", "awareness", "cadre_contact")] == [
        (2, 3),
        (2, 3),
        (3, 3),
        (2, 3),
    ]
    assert [rate(west, key) for key in ("security", "satisfaction", "participation")] == [(1, 2), (1, 2), (2, 2)]
    assert west["rates"]["security"]["unsure"] == 1
    assert (east["dissatisfied"], west["dissatisfied"]) == (2, 1)
    assert (east["visit_requested"], east["visit_declined"], west["visit_requested"]) == (1, 1, 1)

    items = sorted((i["phone"], i["village"], i["negatives"], i["concern"], i["status"]) for i in followups["items"])
    assert items == [
        ("138****0001", "东村", ["security"], "电信诈骗", "pending"),
        ("138****0005", "西村", ["satisfaction"], None, "pending"),
    ]
