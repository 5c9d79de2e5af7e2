"""A whole round on the simulated phone network with real RQ worker processes, the real Flask app over HTTP,
real Redis and the real database: the report must equal what the virtual residents answered."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import Answer, Household, Response, RoundTarget, Village
from campaigns.questionnaire import builtin_questionnaire
from campaigns.roster import import_roster
from reports.rates import village_rates
from sim.network import SimulatorProvider
from sim.store import answers_from_transcript, read_transcript
from tests.support.workers import (
    launch_round,
    start_workers,
    stop_workers,
    wait_for_completion,
)

Q = builtin_questionnaire()
VILLAGES = ["东山村", "西溪村", "南坪村"]


def write_roster(path, per_village: int) -> None:
    with path.open("w", encoding="gbk", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["村", "户主", "电话", "包户干部"])
        for v, village in enumerate(VILLAGES):
            for i in range(per_village):
                writer.writerow([village, f"户主{v}{i}", f"138{v:02d}{i:06d}", f"干部{v}"])


@pytest.fixture
def workers(live_server, tmp_path):
    """Two real `sanlv worker` processes (RQ workers with the scheduler, as in production)."""
    procs = start_workers(2, {**os.environ, "SANLV_SIM_SEED": "7"}, tmp_path / "workers.log")
    yield procs
    stop_workers(procs)


def test_round_report_equals_what_residents_answered(live_server, workers, sessions, tmp_path):
    settings = live_server
    roster = tmp_path / "roster.csv"
    write_roster(roster, per_village=12)
    started = datetime.now(UTC)
    with session_scope(sessions) as session:
        import_roster(session, roster)
    round_id = launch_round(settings, sessions, "e2e", max_concurrent=20, max_attempts=4)

    status = wait_for_completion(sessions, round_id, workers)
    assert sum(status["targets"].values()) == 36
    assert status["targets"]["pending"] == status["targets"]["dialing"] == status["targets"]["in_call"] == 0

    # What the residents meant, from the simulated network's transcripts (merged across calls: resume).
    provider = SimulatorProvider(settings)
    options = {step.key: set(step.options) for step in Q.steps}
    meant: dict[str, dict[str, str]] = {}
    with sessions() as session:
        phones = dict(session.execute(select(Household.phone, Village.name).join(Village)).all())
    for phone in phones:
        merged: dict[str, str] = {}
        for call in provider.find_calls(phone, started):
            merged.update(answers_from_transcript(read_transcript(settings, call.sid), options))
        meant[phone] = merged

    # Every stored answer is exactly what the resident pressed.
    with sessions() as session:
        stored: dict[str, dict[str, str]] = defaultdict(dict)
        for phone, question, digit in session.execute(
            select(RoundTarget.phone, Answer.question, Answer.digit)
            .join(Response, Response.id == Answer.response_id)
            .join(RoundTarget, RoundTarget.id == Response.target_id)
        ):
            stored[phone][question] = digit
    for phone in phones:
        assert stored.get(phone, {}) == meant[phone], phone

    # The report's figures equal a hand count over the residents' answers.
    completed = {p: a for p, a in meant.items() if all(s.key in a for s in Q.rate_steps)}
    assert completed, "the simulated population must complete some interviews"
    with sessions() as session:
        report = village_rates(session, round_id).to_json()
    by_village = {entry["village"]: entry for entry in report["villages"]}
    for village in VILLAGES:
        entry = by_village[village]
        people = [a for p, a in completed.items() if phones[p] == village]
        assert entry["sampled"] == 12
        assert entry["completed"] == len(people)
        for step in Q.rate_steps:
            figures = entry["rates"][step.rate]
            assert figures["valid"] == len(people)
            assert figures["positive"] == sum(a[step.key] in step.positive for a in people)
    assert report["total"]["completed"] == len(completed)
