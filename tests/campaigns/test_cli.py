"""``sanlv round ...`` and configuration errors through the console script (click's CliRunner, real database)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result
from rq import Queue
from rq.registry import ScheduledJobRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from campaigns.models import InboundMode, Round, RoundStatus, RoundTarget, TargetState
from campaigns.questionnaire import builtin_questionnaire, from_version
from campaigns.runtime import set_runtime
from campaigns.settings import Settings
from tests.factories import (
    make_cadre,
    make_household,
    make_round,
    make_target,
    make_village,
)

STATUS_KEYS = {"id", "name", "status", "targets", "attempts", "live_calls", "dial_rate", "eta_seconds"}


def sanlv(*args: str) -> Result:
    from web.cli import main

    return CliRunner().invoke(main, list(args))


def one_line_error(result: Result) -> str:
    """The reason a failing command printed: exactly one line on stderr, nothing on stdout."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    return lines[0].removeprefix("Error: ")


def seed_roster(sessions: sessionmaker[Session], per_village: tuple[int, ...] = (3, 2)) -> None:
    with sessions() as s:
        for size in per_village:
            village = make_village(s)
            cadre = make_cadre(s)
            for _ in range(size):
                make_household(s, village, cadre)
        s.commit()


def stored_round(sessions: sessionmaker[Session], round_id: int) -> tuple[Round, dict[str, int]]:
    with sessions() as s:
        round_ = s.get(Round, round_id)
        assert round_ is not None
        by_state = (
            select(RoundTarget.state, func.count())
            .where(RoundTarget.round_id == round_id)
            .group_by(RoundTarget.state)
        )
        counts = dict(s.execute(by_state).all())
        return round_, {TargetState(k).value: v for k, v in counts.items()}


def round_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Round)) or 0


def new_round(sessions: sessionmaker[Session], status: RoundStatus, targets: int = 2) -> int:
    with sessions() as s:
        round_ = make_round(s, status=status)
        for _ in range(targets):
            make_target(s, round_)
        s.commit()
        return round_.id


def jobs_waiting(conn: redis.Redis, settings: Settings) -> list[str]:
    """Function names of the dialer queue's jobs, queued or scheduled."""
    queue = Queue(f"{settings.namespace}-dialer", connection=conn)
    ids = list(queue.job_ids) + list(ScheduledJobRegistry(queue=queue).get_job_ids())
    return sorted(job.func_name for job in queue.job_class.fetch_many(ids, connection=conn) if job is not None)


# --- round create ----------------------------------------------------------------------------------------


def test_create_prints_only_the_new_id(env: Settings, sessions: sessionmaker[Session]) -> None:
    seed_roster(sessions)

    result = sanlv("round", "create", "--name", "2026年下半年")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().isdigit()
    assert result.stdout == f"{int(result.stdout)}\n"
    round_, counts = stored_round(sessions, int(result.stdout))
    assert (round_.name, round_.status) == ("2026年下半年", RoundStatus.DRAFT)
    assert counts == {"pending": 5}


def test_create_with_every_option(env: Settings, sessions: sessionmaker[Session]) -> None:
    seed_roster(sessions, (4, 4, 1))

    result = sanlv(
        "round", "create", "--name", "抽样", "--questionnaire", "default", "--sample", "village:2", "--seed", "9",
        "--window", "08:30-12:00,14:00-21:00", "--max-attempts", "4", "--cps", "2", "--max-concurrent", "6",
        "--retry", "busy=15m,no-answer=1h", "--starts-at", "2026-12-01T08:00", "--ends-at", "2026-12-15T21:00",
        "--exclude-unsure", "--target", "security=0.9", "--target", "satisfaction=92.5%", "--machine-detection",
        "--inbound", "answer",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    round_, counts = stored_round(sessions, int(result.stdout))
    assert counts == {"pending": 2 + 2 + 1}
    assert (round_.sample, round_.seed) == ("village:2", 9)
    assert round_.windows == [["08:30", "12:00"], ["14:00", "21:00"]]
    assert (round_.max_attempts, round_.cps, round_.max_concurrent) == (4, 2.0, 6)
    assert (round_.retry["busy"], round_.retry["no-answer"], round_.retry["failed"]) == (900, 3600, 14400)
    assert round_.starts_at is not None and round_.starts_at.isoformat() == "2026-12-01T00:00:00+00:00"
    assert round_.exclude_unsure is True
    assert round_.rate_targets == {"security": 0.9, "satisfaction": 0.925}
    assert round_.machine_detection is True
    assert round_.inbound is InboundMode.ANSWER


def test_create_defaults_to_no_machine_detection_and_the_questionnaires_targets(
    env: Settings, sessions: sessionmaker[Session]
) -> None:
    seed_roster(sessions)

    result = sanlv("round", "create", "--name", "r")

    round_, _counts = stored_round(sessions, int(result.stdout))
    assert (round_.machine_detection, round_.rate_targets, round_.inbound) == (False, {}, InboundMode.CALL_BACK)


def test_create_asks_the_delivery_check_unless_left_out(env: Settings, sessions: sessionmaker[Session]) -> None:
    seed_roster(sessions)

    asked = sanlv("round", "create", "--name", "with")
    left_out = sanlv("round", "create", "--name", "without", "--no-delivery-check")

    assert asked.exit_code == 0 and left_out.exit_code == 0, (asked.output, left_out.output)
    with sessions() as s:
        versions = {
            name: from_version(s.get(Round, int(result.stdout)).questionnaire)
            for name, result in (("with", asked), ("without", left_out))
        }
    assert versions["with"].has_step("delivery") and versions["with"].checksum == builtin_questionnaire().checksum
    # The round's stored questionnaire is the default without the step: its calls never ask it.
    assert not versions["without"].has_step("delivery")
    assert [step.key for step in versions["without"].steps] == [
        step.key for step in builtin_questionnaire().steps if step.key != "delivery"
    ]


def test_create_the_same_seed_twice_samples_the_same_households(
    env: Settings, sessions: sessionmaker[Session]
) -> None:
    seed_roster(sessions, (6, 6))

    ids = [int(sanlv("round", "create", "--name", "r", "--sample", "cadre:2", "--seed", "5").stdout) for _ in "ab"]

    with sessions() as s:
        picked = [
            set(s.scalars(select(RoundTarget.household_id).where(RoundTarget.round_id == round_id)))
            for round_id in ids
        ]
    assert picked[0] == picked[1]
    assert len(picked[0]) == 4


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--window", "garbage"], "--window: 'garbage' is not a range like 09:00-11:30"),
        (["--window", "20:00-02:00"], "--window: '20:00-02:00' ends before it starts"),
        (["--cps", "0"], "--cps: must be greater than 0 and at most 100 calls per second"),
        (["--max-attempts", "0"], "--max-attempts: must be at least 1"),
        (["--max-concurrent", "0"], "--max-concurrent: must be at least 1"),
        (["--sample", "village:0"], "--sample: 'village:0': N must be at least 1"),
        (["--sample", "everyone"], "--sample: 'everyone' must be all, village:N or cadre:N"),
        (["--retry", "busy"], "--retry: 'busy' is not outcome=duration"),
        (
            ["--starts-at", "2026-12-10T09:00", "--ends-at", "2026-12-01T09:00"],
            "--ends-at: must be after --starts-at",
        ),
        (["--ends-at", "next week"], "--ends-at: 'next week' is not an ISO time like 2026-12-01T20:30"),
        (["--questionnaire", "nosuch"], "--questionnaire: nosuch: no built-in questionnaire named 'nosuch'"),
        (["--name", " "], "--name: must not be empty"),
        (["--target", "security"], "--target: 'security' is not rate=value"),
        (["--target", "security=high"], "--target: 'security=high': 'high' is not a number or a percentage"),
        (["--target", "security=120%"], "--target: 'security=120%': a target is from 0 to 1"),
        (["--target", "security=0.9", "--target", "security=0.8"], "--target: security is given twice"),
        (["--target", "happiness=0.9"], "--target: happiness: not a rate of questionnaire default"),
        (["--inbound", "always"], "--inbound: 'always' must be call-back or answer"),
    ],
)
def test_create_refuses_bad_options_with_one_line_naming_the_option(
    env: Settings, sessions: sessionmaker[Session], args: list[str], reason: str
) -> None:
    seed_roster(sessions)
    if "--name" not in args:
        args = ["--name", "r", *args]

    result = sanlv("round", "create", *args)

    assert one_line_error(result).startswith(reason)
    assert round_count(sessions) == 0


def test_create_refuses_a_value_click_cannot_parse(env: Settings, sessions: sessionmaker[Session]) -> None:
    result = sanlv("round", "create", "--name", "r", "--cps", "fast")

    assert result.exit_code == 2
    assert "'--cps'" in result.stderr and "'fast'" in result.stderr
    assert round_count(sessions) == 0


def test_create_without_a_roster_fails_and_leaves_nothing(env: Settings, sessions: sessionmaker[Session]) -> None:
    result = sanlv("round", "create", "--name", "r")

    assert "no callable households" in one_line_error(result)
    assert round_count(sessions) == 0


# --- launch / pause / resume / cancel --------------------------------------------------------------------


def test_the_lifecycle_through_the_cli(
    env: Settings, sessions: sessionmaker[Session], redis_conn: redis.Redis
) -> None:
    seed_roster(sessions)
    round_id = sanlv("round", "create", "--name", "r").stdout.strip()

    launched = sanlv("round", "launch", round_id)

    assert launched.exit_code == 0, launched.output
    assert launched.stdout == f"round {round_id}: running\n"
    assert stored_round(sessions, int(round_id))[0].status == RoundStatus.RUNNING
    # Work follows the commit: the dispatcher's first tick is waiting in Redis.
    assert jobs_waiting(redis_conn, env) == ["workers.dispatch.dispatch_round"]

    redis_conn.flushdb()
    paused = sanlv("round", "pause", round_id)

    assert paused.stdout == f"round {round_id}: paused\n"
    assert stored_round(sessions, int(round_id))[0].status == RoundStatus.PAUSED
    assert jobs_waiting(redis_conn, env) == []

    resumed = sanlv("round", "resume", round_id)

    assert resumed.stdout == f"round {round_id}: running\n"
    assert jobs_waiting(redis_conn, env) == ["workers.dispatch.dispatch_round"]

    redis_conn.flushdb()
    cancelled = sanlv("round", "cancel", round_id)

    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout == f"round {round_id}: cancelled\n"
    round_, counts = stored_round(sessions, int(round_id))
    assert round_.status == RoundStatus.CANCELLED
    assert counts == {"cancelled": 5}
    assert jobs_waiting(redis_conn, env) == ["workers.placing.cancel_round_calls"]


@pytest.mark.parametrize(
    ("status", "command", "reason"),
    [
        (RoundStatus.COMPLETED, "pause", "cannot pause: it is completed"),
        (RoundStatus.RUNNING, "resume", "cannot resume: it is already running"),
        (RoundStatus.RUNNING, "launch", "cannot launch: it is already running"),
        (RoundStatus.CANCELLED, "cancel", "cannot cancel: it is cancelled"),
        (RoundStatus.COMPLETED, "cancel", "cannot cancel: it is completed"),
        (RoundStatus.DRAFT, "pause", "cannot pause: it has not been launched"),
        (RoundStatus.DRAFT, "resume", "cannot resume: it has not been launched (use launch)"),
        (RoundStatus.PAUSED, "launch", "cannot launch: it is paused (use resume)"),
        (RoundStatus.CANCELLED, "resume", "cannot resume: it is cancelled"),
    ],
)
def test_an_impossible_transition_exits_non_zero_with_the_reason(
    env: Settings,
    sessions: sessionmaker[Session],
    redis_conn: redis.Redis,
    status: RoundStatus,
    command: str,
    reason: str,
) -> None:
    round_id = new_round(sessions, status)

    result = sanlv("round", command, str(round_id))

    assert one_line_error(result) == f"round {round_id}: {reason}"
    assert stored_round(sessions, round_id)[0].status == status
    assert jobs_waiting(redis_conn, env) == []


@pytest.mark.parametrize("command", ["launch", "pause", "resume", "cancel", "status"])
def test_an_unknown_round_exits_non_zero(env: Settings, redis_url: str, command: str) -> None:
    assert one_line_error(sanlv("round", command, "4242")) == "round 4242: no such round"


def test_a_round_id_must_be_a_number(env: Settings) -> None:
    result = sanlv("round", "launch", "first")

    assert result.exit_code == 2
    assert "'first' is not a valid integer" in result.stderr


# --- status ----------------------------------------------------------------------------------------------


def test_status_json_is_the_contract(env: Settings, sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        # Open all day, so the ETA is the dialling time alone (no wait for the next window).
        round_ = make_round(s, name="2026年下半年", status=RoundStatus.RUNNING, cps=1.0, windows=[["00:00", "24:00"]])
        for state in (TargetState.PENDING, TargetState.PENDING, TargetState.COMPLETED, TargetState.REFUSED):
            make_target(s, round_, state=state)
        s.commit()
        round_id = round_.id

    result = sanlv("round", "status", str(round_id), "--format", "json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == STATUS_KEYS
    assert (report["id"], report["name"], report["status"]) == (round_id, "2026年下半年", "running")
    assert report["targets"] == {
        "pending": 2,
        "dialing": 0,
        "in_call": 0,
        "completed": 1,
        "refused": 1,
        "ineligible": 0,
        "opted_out": 0,
        "unreachable": 0,
        "invalid": 0,
        "cancelled": 0,
    }
    assert (report["attempts"], report["live_calls"], report["dial_rate"]) == (0, 0, 0.0)
    assert report["eta_seconds"] == 2
    assert "2026年下半年" in result.stdout  # Chinese as text, not \u escapes


def test_status_text(env: Settings, sessions: sessionmaker[Session]) -> None:
    round_id = new_round(sessions, RoundStatus.PAUSED, targets=3)

    result = sanlv("round", "status", str(round_id))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"round {round_id} ") and lines[0].endswith(": paused")
    assert "  pending      3" in lines
    assert "  cancelled    0" in lines


# --- configuration ---------------------------------------------------------------------------------------


@pytest.fixture
def fresh_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No runtime installed: the next command reads the environment (run from an empty folder: no .env)."""
    monkeypatch.chdir(tmp_path)
    for name in ("SANLV_TELEPHONY", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    set_runtime(None)
    yield monkeypatch
    set_runtime(None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "not a url"),
        ("SANLV_TIMEZONE", "Mars/Olympus_Mons"),
        ("SANLV_TELEPHONY", "carrier-pigeon"),
        ("REDIS_URL", "localhost"),
    ],
)
def test_bad_configuration_stops_a_command_with_one_line_naming_the_variable(
    fresh_runtime: pytest.MonkeyPatch, name: str, value: str
) -> None:
    fresh_runtime.setenv("DATABASE_URL", "sqlite:///never-created.db")
    fresh_runtime.setenv(name, value)

    for args in (["round", "status", "1"], ["db", "current"], ["round", "create", "--name", "r"]):
        assert one_line_error(sanlv(*args)).startswith(f"configuration: {name}=")
    assert not Path("never-created.db").exists()


def test_twilio_without_a_public_url_stops_a_command(fresh_runtime: pytest.MonkeyPatch) -> None:
    fresh_runtime.setenv("TWILIO_ACCOUNT_SID", "AC123")
    fresh_runtime.setenv("TWILIO_AUTH_TOKEN", "token")
    fresh_runtime.setenv("TWILIO_FROM_NUMBER", "+8659312345678")

    reason = one_line_error(sanlv("round", "status", "1"))

    assert reason == "configuration: PUBLIC_BASE_URL is required when SANLV_TELEPHONY=twilio"
