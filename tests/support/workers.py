"""Real ``sanlv worker`` processes and whole rounds run by them, for the end-to-end tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from campaigns.db import session_scope
from campaigns.rounds import (
    RoundOptions,
    change_round,
    create_round,
    round_status_report,
)
from campaigns.schedule import parse_retry
from campaigns.settings import Settings
from workers.lifecycle import after_round_change

ROOT = Path(__file__).resolve().parent.parent.parent
# Retries after a second: a round of busy and unanswered numbers finishes within a test.
RETRY_FAST = parse_retry("busy=1s,no-answer=1s,failed=1s,machine=1s,dropped=1s")


def start_workers(count: int, env: dict[str, str], log: Path) -> list[subprocess.Popen]:
    """``count`` real ``sanlv worker`` processes (each in its own session, so they can be stopped together)."""
    with log.open("ab") as handle:  # each child keeps its own copy of the descriptor
        return [
            subprocess.Popen(
                [sys.executable, "-m", "web", "worker"],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
            for _ in range(count)
        ]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, whatever its process group (a worker's scheduler, anything a job started)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children[parent].append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a worker process and everything it started (its scheduler process): a crash, all at once."""
    family = descendants(proc.pid)
    for pid in [proc.pid, *family]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """SIGTERM (a warm shutdown: the job in hand finishes), then :func:`kill_tree` for any still running after
    30 s."""
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in workers:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_tree(proc)


def launch_round(settings: Settings, sessions: sessionmaker[Session], name: str, **options) -> int:
    """Create a round of every household, calling all day at 20 calls/s with fast retries, and launch it."""
    defaults = {"windows": [["00:00", "24:00"]], "cps": 20, "retry": RETRY_FAST}
    with session_scope(sessions) as session:
        round_id = create_round(session, RoundOptions(name=name, **(defaults | options))).id
        change_round(session, round_id, "launch")
    after_round_change(settings, round_id, "launch")
    return round_id


def wait_for_completion(
    sessions: sessionmaker[Session], round_id: int, workers: list[subprocess.Popen], timeout: float = 120
) -> dict:
    """The round's status report once it is completed; fails the test if a worker dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            report = round_status_report(session, round_id)
        if report["status"] == "completed":
            return report
        assert all(proc.poll() is None for proc in workers), "a worker process died"
        if time.monotonic() >= deadline:
            pytest.fail(f"round {round_id} did not complete in {timeout:.0f} s: {report}")
        time.sleep(0.5)
