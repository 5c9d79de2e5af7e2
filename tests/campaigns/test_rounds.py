"""Rounds: sampling, the lifecycle (launch, pause, resume, cancel, complete) and the status report."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.calls import (
    apply_call_status,
    begin_create,
    claim_due_targets,
    create_not_sent,
    open_claims,
    release_claim,
)
from campaigns.clock import set_clock_file
from campaigns.models import (
    CallAttempt,
    CallStatus,
    DoNotCall,
    Household,
    PhoneStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from campaigns.questionnaire import builtin_questionnaire
from campaigns.rounds import (
    RoundError,
    RoundOptions,
    change_round,
    complete_if_done,
    create_round,
    get_round,
    release_unplaced_claims,
    round_status_report,
)
from campaigns.schedule import DEFAULT_RETRY
from campaigns.settings import Settings
from tests.factories import (
    make_cadre,
    make_household,
    make_round,
    make_target,
    make_village,
)

STATUS_KEYS = {"id", "name", "status", "targets", "attempts", "live_calls", "dial_rate", "eta_seconds"}
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai

_attempt_numbers = itertools.count(1)


@pytest.fixture
def clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Time stands still at NOW (campaigns.clock reads SANLV_CLOCK_FILE)."""
    path = tmp_path / "clock"
    set_clock_file(path, NOW)
    monkeypatch.setenv("SANLV_CLOCK_FILE", str(path))
    return path


def make_attempt(session: Session, target: RoundTarget, status: CallStatus, **over: Any) -> CallAttempt:
    fields: dict[str, Any] = {
        "round_id": target.round_id,
        "target_id": target.id,
        "number": next(_attempt_numbers),
        "status": status,
    }
    fields.update(over)
    attempt = CallAttempt(**fields)
    session.add(attempt)
    session.flush()
    return attempt


def targets_of(session: Session, round_id: int) -> dict[int, RoundTarget]:
    """household id -> target."""
    session.expire_all()
    rows = session.scalars(select(RoundTarget).where(RoundTarget.round_id == round_id)).all()
    return {t.household_id: t for t in rows}


def roster(session: Session, sizes: dict[str, int]) -> dict[str, list[Household]]:
    """Villages named by ``sizes`` with that many households each, one cadre per village."""
    out: dict[str, list[Household]] = {}
    for name, size in sizes.items():
        village = make_village(session, name=name)
        cadre = make_cadre(session)
        out[name] = [make_household(session, village, cadre) for _ in range(size)]
    return out


# --- sampling --------------------------------------------------------------------------------------------


def test_sample_all_takes_every_callable_household(session: Session, clock: Path) -> None:
    village = make_village(session)
    cadre = make_cadre(session)
    callable_ = [make_household(session, village, cadre) for _ in range(4)]
    opted_out = make_household(session, village, cadre)
    session.add(DoNotCall(phone=opted_out.phone, reason="pressed 9"))
    invalid = make_household(session, village, cadre, phone_status=PhoneStatus.INVALID)
    blocked = make_household(session, village, cadre, phone_status=PhoneStatus.BLOCKED)
    session.flush()

    round_ = create_round(session, RoundOptions(name="2026年下半年"))

    targets = targets_of(session, round_.id)
    assert set(targets) == {h.id for h in callable_}
    assert not {opted_out.id, invalid.id, blocked.id} & set(targets)
    for household in callable_:
        target = targets[household.id]
        assert target.phone == household.phone
        assert target.state == TargetState.PENDING
        assert target.attempts == 0
        assert target.next_attempt_at is None
        assert target.updated_at == NOW
    assert round_.status == RoundStatus.DRAFT


def test_create_round_records_its_options_and_questionnaire_version(session: Session) -> None:
    make_household(session)
    options = RoundOptions(
        name="试点",
        sample="all",
        seed=7,
        windows=[["08:00", "12:00"]],
        blocked_dates=["2026-12-05"],
        max_attempts=4,
        cps=2.5,
        max_concurrent=3,
        retry={**DEFAULT_RETRY, "busy": 600},
        starts_at=NOW,
        ends_at=NOW + timedelta(days=7),
        exclude_unsure=True,
    )

    round_id = create_round(session, options).id
    session.commit()
    session.expire_all()
    stored = get_round(session, round_id)

    assert (stored.name, stored.sample, stored.seed) == ("试点", "all", 7)
    assert stored.windows == [["08:00", "12:00"]]
    assert stored.blocked_dates == ["2026-12-05"]
    assert (stored.max_attempts, stored.cps, stored.max_concurrent) == (4, 2.5, 3)
    assert stored.retry["busy"] == 600
    assert (stored.starts_at, stored.ends_at) == (NOW, NOW + timedelta(days=7))
    assert stored.exclude_unsure is True
    assert stored.questionnaire.key == "default"
    assert stored.questionnaire.checksum == builtin_questionnaire().checksum


def test_one_target_per_household(session: Session) -> None:
    households = roster(session, {"东山村": 3, "西山村": 2})

    round_ = create_round(session, RoundOptions(name="r"))

    rows = session.execute(
        select(RoundTarget.household_id, func.count()).where(RoundTarget.round_id == round_.id).group_by(
            RoundTarget.household_id
        )
    ).all()
    assert len(rows) == 5
    assert all(count == 1 for _h, count in rows)
    assert {h for h, _c in rows} == {h.id for hs in households.values() for h in hs}


def test_each_round_samples_its_own_targets(session: Session) -> None:
    roster(session, {"东山村": 3})

    first = create_round(session, RoundOptions(name="上半年"))
    second = create_round(session, RoundOptions(name="下半年"))

    assert set(targets_of(session, first.id)) == set(targets_of(session, second.id))
    assert len(targets_of(session, second.id)) == 3


@pytest.mark.parametrize("sample", ["all", "village:2", "cadre:2"])
def test_an_empty_roster_is_an_error(session: Session, sample: str) -> None:
    with pytest.raises(RoundError, match="no callable households.*sanlv roster import"):
        create_round(session, RoundOptions(name="r", sample=sample))


def test_a_roster_with_nobody_callable_is_an_error(session: Session) -> None:
    opted_out = make_household(session)
    session.add(DoNotCall(phone=opted_out.phone, reason="office"))
    make_household(session, phone_status=PhoneStatus.INVALID)
    session.flush()

    with pytest.raises(RoundError, match="no callable households"):
        create_round(session, RoundOptions(name="r"))


def _sampled(session: Session, sample: str, seed: int | None) -> frozenset[int]:
    return frozenset(targets_of(session, create_round(session, RoundOptions(name="r", sample=sample, seed=seed)).id))


def test_village_sample_picks_n_per_village_never_more_than_it_has(session: Session) -> None:
    households = roster(session, {"东山村": 6, "西山村": 2, "南岭村": 4})

    picked = _sampled(session, "village:3", seed=1)

    per_village = {name: len(picked & {h.id for h in hs}) for name, hs in households.items()}
    assert per_village == {"东山村": 3, "西山村": 2, "南岭村": 3}


def test_cadre_sample_picks_n_per_cadre(session: Session) -> None:
    village = make_village(session)
    cadres = [make_cadre(session) for _ in range(3)]
    by_cadre = {c.id: [make_household(session, village, c) for _ in range(n)] for c, n in zip(cadres, (5, 1, 3))}
    # Households with no cadre are one group of their own.
    unassigned = [make_household(session, village, cadre_id=None) for _ in range(3)]

    picked = _sampled(session, "cadre:2", seed=3)

    assert [len(picked & {h.id for h in by_cadre[c.id]}) for c in cadres] == [2, 1, 2]
    assert len(picked & {h.id for h in unassigned}) == 2
    assert len(picked) == 7


def test_group_samples_leave_out_households_that_cannot_be_called(session: Session) -> None:
    village = make_village(session)
    cadre = make_cadre(session)
    good = [make_household(session, village, cadre) for _ in range(2)]
    bad = [
        make_household(session, village, cadre, phone_status=PhoneStatus.INVALID),
        make_household(session, village, cadre, phone_status=PhoneStatus.BLOCKED),
        make_household(session, village, cadre),
    ]
    session.add(DoNotCall(phone=bad[2].phone, reason="pressed 9"))
    session.flush()

    for sample in ("village:5", "cadre:5"):
        assert _sampled(session, sample, seed=1) == {h.id for h in good}


@pytest.mark.parametrize("sample", ["village:3", "cadre:3"])
def test_the_same_seed_picks_the_same_targets(session: Session, sample: str) -> None:
    roster(session, {"东山村": 10, "西山村": 8, "南岭村": 3})

    first = _sampled(session, sample, seed=20261201)
    again = _sampled(session, sample, seed=20261201)

    assert first == again
    assert len(first) == 3 + 3 + 3


@pytest.mark.parametrize("sample", ["village:3", "cadre:3"])
def test_different_seeds_usually_pick_different_targets(session: Session, sample: str) -> None:
    roster(session, {"东山村": 10, "西山村": 8})

    picks = {_sampled(session, sample, seed=seed) for seed in range(8)}

    # C(10,3) * C(8,3) = 6720 possible picks: eight seeds landing on one pick would mean the seed is ignored.
    assert len(picks) > 1
    assert all(len(p) == 6 for p in picks)


# --- lifecycle -------------------------------------------------------------------------------------------

ALLOWED = {
    ("launch", RoundStatus.DRAFT): RoundStatus.RUNNING,
    ("pause", RoundStatus.RUNNING): RoundStatus.PAUSED,
    ("resume", RoundStatus.PAUSED): RoundStatus.RUNNING,
    ("cancel", RoundStatus.DRAFT): RoundStatus.CANCELLED,
    ("cancel", RoundStatus.RUNNING): RoundStatus.CANCELLED,
    ("cancel", RoundStatus.PAUSED): RoundStatus.CANCELLED,
}
COMMANDS = ("launch", "pause", "resume", "cancel")
IMPOSSIBLE = [
    (command, status) for command in COMMANDS for status in RoundStatus if (command, status) not in ALLOWED
]
REASONS = {
    ("launch", RoundStatus.RUNNING): "it is already running",
    ("launch", RoundStatus.PAUSED): "it is paused (use resume)",
    ("pause", RoundStatus.PAUSED): "it is already paused",
    ("pause", RoundStatus.DRAFT): "it has not been launched",
    ("resume", RoundStatus.RUNNING): "it is already running",
    ("resume", RoundStatus.DRAFT): "it has not been launched (use launch)",
}


@pytest.mark.parametrize(("command", "status"), list(ALLOWED), ids=[f"{c}-{s.value}" for c, s in ALLOWED])
def test_allowed_transitions(session: Session, clock: Path, command: str, status: RoundStatus) -> None:
    round_ = make_round(session, status=status)
    make_target(session, round_)

    changed = change_round(session, round_.id, command)

    assert changed.status == ALLOWED[(command, status)]
    session.commit()
    session.expire_all()
    assert get_round(session, round_.id).status == ALLOWED[(command, status)]


@pytest.mark.parametrize(("command", "status"), IMPOSSIBLE, ids=[f"{c}-{s.value}" for c, s in IMPOSSIBLE])
def test_impossible_transitions_raise_with_a_reason(session: Session, command: str, status: RoundStatus) -> None:
    round_ = make_round(session, status=status)
    target = make_target(session, round_)

    with pytest.raises(RoundError) as caught:
        change_round(session, round_.id, command)

    reason = REASONS.get((command, status), f"it is {status.value}")
    assert str(caught.value) == f"round {round_.id}: cannot {command}: {reason}"
    session.expire_all()
    assert get_round(session, round_.id).status == status
    assert session.get(RoundTarget, target.id).state == TargetState.PENDING  # type: ignore[union-attr]


def test_launching_twice_fails_the_second_time(session: Session, clock: Path) -> None:
    round_ = make_round(session)

    change_round(session, round_.id, "launch")
    with pytest.raises(RoundError, match="cannot launch: it is already running"):
        change_round(session, round_.id, "launch")


def test_an_unknown_round_or_command(session: Session) -> None:
    with pytest.raises(RoundError, match="^round 999: no such round$"):
        change_round(session, 999, "launch")
    round_ = make_round(session)
    with pytest.raises(RoundError, match="unknown command 'restart'"):
        change_round(session, round_.id, "restart")


def test_launch_records_when(session: Session, clock: Path) -> None:
    round_ = make_round(session)

    change_round(session, round_.id, "launch")

    assert round_.launched_at == NOW
    assert round_.finished_at is None


def test_pause_releases_claimed_work_and_leaves_placed_calls(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING)
    claimed = make_target(session, round_, state=TargetState.DIALING, attempts=2, claimed_at=NOW)
    claim = make_attempt(session, claimed, CallStatus.CLAIMED)
    ringing = make_target(session, round_, state=TargetState.DIALING, attempts=1, claimed_at=NOW)
    ringing_call = make_attempt(session, ringing, CallStatus.RINGING, call_sid="CA" + "1" * 32, placed_at=NOW)
    talking = make_target(session, round_, state=TargetState.IN_CALL, attempts=1)
    make_attempt(session, talking, CallStatus.IN_PROGRESS, call_sid="CA" + "2" * 32, placed_at=NOW)
    # A create request on its way when the pause came: placed before the pause; the call is left to happen.
    sending = make_target(session, round_, state=TargetState.DIALING, attempts=1, claimed_at=NOW)
    sending_claim = make_attempt(session, sending, CallStatus.CLAIMED, error_code="creating", placed_at=NOW)
    claim_id = claim.id

    change_round(session, round_.id, "pause")
    session.commit()
    session.expire_all()

    assert session.get(CallAttempt, claim_id) is None
    back = session.get(RoundTarget, claimed.id)
    assert back is not None
    assert (back.state, back.attempts, back.claimed_at, back.last_outcome) == (
        TargetState.PENDING,
        1,
        None,
        "released",
    )
    assert session.get(RoundTarget, ringing.id).state == TargetState.DIALING  # type: ignore[union-attr]
    assert session.get(CallAttempt, ringing_call.id).status == CallStatus.RINGING  # type: ignore[union-attr]
    assert session.get(RoundTarget, talking.id).state == TargetState.IN_CALL  # type: ignore[union-attr]
    assert session.get(CallAttempt, sending_claim.id) is not None
    assert session.get(RoundTarget, sending.id).state == TargetState.DIALING  # type: ignore[union-attr]
    assert get_round(session, round_.id).status == RoundStatus.PAUSED


def test_cancel_cancels_pending_work_and_keeps_final_targets(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING)
    pending = make_target(session, round_)
    retry = make_target(session, round_, attempts=1, next_attempt_at=NOW + timedelta(hours=2))
    claimed = make_target(session, round_, state=TargetState.DIALING, attempts=1, claimed_at=NOW)
    make_attempt(session, claimed, CallStatus.CLAIMED)
    talking = make_target(session, round_, state=TargetState.IN_CALL, attempts=1)
    make_attempt(session, talking, CallStatus.IN_PROGRESS, placed_at=NOW)
    earlier = NOW - timedelta(days=1)
    finals = {
        state: make_target(session, round_, state=state, final_at=earlier)
        for state in (
            TargetState.COMPLETED,
            TargetState.REFUSED,
            TargetState.INELIGIBLE,
            TargetState.OPTED_OUT,
            TargetState.UNREACHABLE,
            TargetState.INVALID,
        )
    }

    change_round(session, round_.id, "cancel")
    session.commit()
    session.expire_all()

    for target in (pending, retry, claimed):
        reloaded = session.get(RoundTarget, target.id)
        assert reloaded is not None
        assert (reloaded.state, reloaded.final_at, reloaded.last_outcome) == (TargetState.CANCELLED, NOW, "cancelled")
    assert session.get(RoundTarget, talking.id).state == TargetState.IN_CALL  # type: ignore[union-attr]
    for state, target in finals.items():
        reloaded = session.get(RoundTarget, target.id)
        assert reloaded is not None
        assert (reloaded.state, reloaded.final_at) == (state, earlier)
    stored = get_round(session, round_.id)
    assert (stored.status, stored.finished_at) == (RoundStatus.CANCELLED, NOW)


def test_cancelling_a_draft_cancels_every_target(session: Session, clock: Path) -> None:
    make_household(session)
    make_household(session)
    round_ = create_round(session, RoundOptions(name="r"))

    change_round(session, round_.id, "cancel")

    assert {t.state for t in targets_of(session, round_.id).values()} == {TargetState.CANCELLED}


# --- complete_if_done ------------------------------------------------------------------------------------


def test_a_running_round_completes_when_every_target_is_final(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING)
    make_target(session, round_, state=TargetState.COMPLETED)
    last = make_target(session, round_, state=TargetState.IN_CALL)

    assert complete_if_done(session, round_.id) is False
    assert round_.status == RoundStatus.RUNNING

    last.state = TargetState.UNREACHABLE
    session.flush()

    assert complete_if_done(session, round_.id) is True
    assert (round_.status, round_.finished_at) == (RoundStatus.COMPLETED, NOW)
    assert complete_if_done(session, round_.id) is True  # asking again changes nothing


@pytest.mark.parametrize("status", [RoundStatus.DRAFT, RoundStatus.PAUSED, RoundStatus.CANCELLED])
def test_only_a_running_round_completes(session: Session, status: RoundStatus) -> None:
    round_ = make_round(session, status=status)
    make_target(session, round_, state=TargetState.COMPLETED)

    assert complete_if_done(session, round_.id) is False
    assert round_.status == status


# --- status report ---------------------------------------------------------------------------------------


def test_status_report_has_exactly_the_contract_keys(session: Session, clock: Path) -> None:
    round_ = make_round(session, name="2026年下半年")
    make_target(session, round_)

    report = round_status_report(session, round_.id)

    assert set(report) == STATUS_KEYS
    assert set(report["targets"]) == {state.value for state in TargetState}
    assert report["targets"]["pending"] == 1
    assert sum(report["targets"].values()) == 1
    assert (report["id"], report["name"], report["status"]) == (round_.id, "2026年下半年", "draft")
    assert (report["attempts"], report["live_calls"], report["dial_rate"]) == (0, 0, 0.0)
    assert report["eta_seconds"] is None  # a draft is not dialling


def sid(n: int) -> str:
    return f"CA{n:032x}"


def test_status_report_counts_targets_attempts_and_live_calls(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING, cps=1.0, launched_at=NOW - timedelta(hours=1))
    for _ in range(3):
        make_target(session, round_)
    dialing = make_target(session, round_, state=TargetState.DIALING, attempts=1)
    make_attempt(session, dialing, CallStatus.RINGING, call_sid=sid(1), placed_at=NOW - timedelta(seconds=10))
    talking = make_target(session, round_, state=TargetState.IN_CALL, attempts=2)
    make_attempt(session, talking, CallStatus.BUSY, call_sid=sid(2), placed_at=NOW - timedelta(hours=2))
    make_attempt(session, talking, CallStatus.IN_PROGRESS, call_sid=sid(3), placed_at=NOW - timedelta(seconds=50))
    done = make_target(session, round_, state=TargetState.COMPLETED, attempts=1)
    make_attempt(session, done, CallStatus.COMPLETED, call_sid=sid(4), placed_at=NOW - timedelta(seconds=59))
    make_target(session, round_, state=TargetState.OPTED_OUT)
    # A claim whose create request has started is not a call placed yet.
    claimed = make_target(session, round_, state=TargetState.DIALING, attempts=1)
    make_attempt(session, claimed, CallStatus.CLAIMED, error_code="creating", placed_at=NOW)
    # Another round's calls are not this round's.
    other = make_round(session, status=RoundStatus.RUNNING)
    make_attempt(
        session, make_target(session, other, state=TargetState.DIALING), CallStatus.QUEUED, call_sid=sid(5), placed_at=NOW
    )

    report = round_status_report(session, round_.id)

    assert report["targets"] == {
        "pending": 3,
        "dialing": 2,
        "in_call": 1,
        "completed": 1,
        "refused": 0,
        "ineligible": 0,
        "opted_out": 1,
        "unreachable": 0,
        "invalid": 0,
        "cancelled": 0,
    }
    assert report["attempts"] == 5
    assert report["live_calls"] == 3  # claimed + ringing + in progress
    assert report["dial_rate"] == round(3 / 60, 3)  # three calls placed in the last minute
    # Three pending targets at that rate, all inside today's 09:00-11:30 window (it is 10:00).
    assert report["eta_seconds"] == 60


def test_dial_rate_just_after_launch_is_over_the_time_since_launch(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING, cps=2.0, launched_at=NOW - timedelta(seconds=20))
    for n in range(30):
        target = make_target(session, round_, state=TargetState.DIALING, attempts=1)
        make_attempt(session, target, CallStatus.QUEUED, call_sid=sid(100 + n), placed_at=NOW - timedelta(seconds=n / 2))

    report = round_status_report(session, round_.id)

    assert report["dial_rate"] == 1.5  # 30 calls in the 20 s since launch, not 30 in a minute


def test_eta_of_a_running_round_without_recent_calls_uses_its_cps(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING, cps=2.0)
    for _ in range(10):
        make_target(session, round_)

    report = round_status_report(session, round_.id)

    assert (report["dial_rate"], report["eta_seconds"]) == (0.0, 5)


def test_eta_counts_calling_time_only(session: Session, clock: Path) -> None:
    # 10:00: 90 minutes of window this morning, then the lunch rest until 14:30.
    round_ = make_round(session, status=RoundStatus.RUNNING, cps=0.01)
    for _ in range(72):  # two hours of dialling at one call every 100 s
        make_target(session, round_)

    report = round_status_report(session, round_.id)

    # 90 minutes this morning, the remaining 30 after 14:30: done at 15:00, five hours from now.
    assert report["eta_seconds"] == 5 * 3600


def test_eta_waits_for_the_last_scheduled_retry(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING, cps=1.0)
    make_target(session, round_, attempts=1, next_attempt_at=NOW + timedelta(minutes=30))

    report = round_status_report(session, round_.id)

    assert report["eta_seconds"] == 30 * 60 + 1


def test_eta_of_a_round_outside_its_windows_counts_from_the_next_window(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING, cps=1.0, windows=[["14:30", "20:30"]])
    for _ in range(60):
        make_target(session, round_)

    report = round_status_report(session, round_.id)

    assert report["eta_seconds"] == int(4.5 * 3600) + 60


def test_eta_never_passes_the_deadline(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING, cps=0.01, ends_at=NOW + timedelta(minutes=10))
    for _ in range(100):
        make_target(session, round_)

    assert round_status_report(session, round_.id)["eta_seconds"] == 600


def test_eta_while_only_live_calls_remain(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING, cps=1.0)
    talking = make_target(session, round_, state=TargetState.IN_CALL, attempts=1)
    make_attempt(session, talking, CallStatus.IN_PROGRESS, call_sid=sid(9), placed_at=NOW - timedelta(minutes=5))

    assert round_status_report(session, round_.id)["eta_seconds"] == 1  # not over yet, but nearly


def test_eta_of_paused_and_finished_rounds(session: Session, clock: Path) -> None:
    paused = make_round(session, status=RoundStatus.PAUSED)
    make_target(session, paused)
    completed = make_round(session, status=RoundStatus.COMPLETED)
    make_target(session, completed, state=TargetState.COMPLETED)
    cancelled = make_round(session, status=RoundStatus.CANCELLED)
    make_target(session, cancelled, state=TargetState.IN_CALL)

    assert round_status_report(session, paused.id)["eta_seconds"] is None
    assert round_status_report(session, completed.id)["eta_seconds"] == 0
    assert round_status_report(session, cancelled.id)["eta_seconds"] == 0


def test_status_report_of_an_unknown_round(session: Session) -> None:
    with pytest.raises(RoundError, match="^round 42: no such round$"):
        round_status_report(session, 42)


# --- options ---------------------------------------------------------------------------------------------


def from_cli(settings: Settings | None = None, **raw: Any) -> RoundOptions:
    return RoundOptions.from_cli(settings or Settings(), **{"name": "r", **raw})


def test_options_from_cli_parse_every_option() -> None:
    options = from_cli(
        name=" 下半年 ",
        questionnaire_ref="default",
        sample="village:5",
        seed=42,
        windows="14:30-20:30,09:00-11:30",
        max_attempts=5,
        cps=0.5,
        max_concurrent=4,
        retry="busy=10m",
        blocked="2026-12-05..2026-12-06,2026-12-01",
        starts_at="2026-12-01T08:00",
        ends_at="2026-12-10T20:30:00+08:00",
        exclude_unsure=True,
    )

    assert options.name == "下半年"
    assert (options.sample, options.seed) == ("village:5", 42)
    assert options.windows == [["09:00", "11:30"], ["14:30", "20:30"]]
    assert (options.max_attempts, options.cps, options.max_concurrent) == (5, 0.5, 4)
    assert options.retry == {**DEFAULT_RETRY, "busy": 600}
    assert options.blocked_dates == ["2026-12-01", "2026-12-05", "2026-12-06"]
    # No offset: local time in SANLV_TIMEZONE (Asia/Shanghai, UTC+8).
    assert options.starts_at == datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    assert options.ends_at == datetime(2026, 12, 10, 12, 30, tzinfo=UTC)
    assert options.exclude_unsure is True


def test_local_times_follow_the_configured_timezone() -> None:
    options = from_cli(Settings(timezone="UTC"), starts_at="2026-12-01T08:00")

    assert options.starts_at == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_options_defaults() -> None:
    options = from_cli()

    assert options == RoundOptions(name="r")
    assert options.windows == [["09:00", "11:30"], ["14:30", "20:30"]]
    assert options.retry == DEFAULT_RETRY


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "  "}, "--name: must not be empty"),
        ({"windows": "garbage"}, "--window: 'garbage' is not a range like 09:00-11:30"),
        ({"windows": ""}, "--window: no window given"),
        ({"windows": "20:00-08:00"}, "--window: '20:00-08:00' ends before it starts"),
        ({"retry": "busy=later"}, "--retry busy: 'later' is not a duration like 30m or 2h"),
        ({"blocked": "国庆"}, "--blocked: '国庆': '国庆' is not a date like 2026-10-01"),
        ({"blocked": "2026-10-07..2026-10-01"}, "--blocked: '2026-10-07..2026-10-01' ends before it starts"),
        ({"max_attempts": 0}, "--max-attempts: must be at least 1"),
        ({"max_concurrent": 0}, "--max-concurrent: must be at least 1"),
        ({"cps": 0.0}, "--cps: must be greater than 0 and at most 100 calls per second"),
        ({"cps": -1.0}, "--cps: must be greater than 0"),
        ({"cps": 101.0}, "--cps: must be greater than 0 and at most 100"),
        ({"cps": float("nan")}, "--cps: must be greater than 0"),
        ({"sample": "village:0"}, "--sample: 'village:0': N must be at least 1"),
        ({"sample": "cadre:0"}, "--sample: 'cadre:0': N must be at least 1"),
        ({"sample": "village:00"}, "--sample: 'village:00': N must be at least 1"),
        ({"sample": "village"}, "--sample: 'village' must be all, village:N or cadre:N"),
        ({"sample": "village:-2"}, "--sample: 'village:-2' must be all, village:N or cadre:N"),
        ({"sample": "half"}, "--sample: 'half' must be all, village:N or cadre:N"),
        ({"starts_at": "tomorrow"}, "--starts-at: 'tomorrow' is not an ISO time like 2026-12-01T20:30"),
        ({"ends_at": "2026-13-01"}, "--ends-at: '2026-13-01' is not an ISO time"),
        (
            {"starts_at": "2026-12-10T09:00", "ends_at": "2026-12-01T09:00"},
            "--ends-at: must be after --starts-at",
        ),
        ({"starts_at": "2026-12-01T09:00", "ends_at": "2026-12-01T09:00"}, "--ends-at: must be after --starts-at"),
    ],
)
def test_bad_options_name_the_option(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(RoundError) as caught:
        from_cli(**raw)

    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_an_unknown_questionnaire_is_refused_at_create(session: Session) -> None:
    make_household(session)

    with pytest.raises(RoundError, match="^--questionnaire: nosuch: no built-in questionnaire named 'nosuch'$"):
        create_round(session, RoundOptions(name="r", questionnaire="nosuch"))

    assert session.scalar(select(func.count()).select_from(Round)) == 0


def test_options_built_in_code_are_held_to_the_command_line_rules() -> None:
    with pytest.raises(RoundError, match="^--window: '22:00-02:00' ends before it starts"):
        RoundOptions(name="r", windows=[["22:00", "02:00"]]).validate()
    with pytest.raises(RoundError, match="^--blocked: '2026-02-30'"):
        RoundOptions(name="r", blocked_dates=["2026-02-30"]).validate()


def test_create_round_stores_the_blocked_dates(session: Session) -> None:
    make_household(session)

    round_ = create_round(session, RoundOptions(name="r", blocked_dates=["2026-10-01", "2026-10-02"]))

    assert round_.blocked_dates == ["2026-10-01", "2026-10-02"]


# --- call transitions (campaigns.calls) ------------------------------------------------------------------


def running_round_with_claim(session: Session, **round_over: Any) -> tuple[Round, RoundTarget, int]:
    round_ = make_round(session, **{"status": RoundStatus.RUNNING, "windows": [["00:00", "24:00"]], **round_over})
    target = make_target(session, round_)
    [claim] = claim_due_targets(session, round_, NOW, 1)
    session.refresh(target)
    return round_, target, claim.attempt_id


def test_begin_create_marks_the_attempt_once(session: Session, clock: Path) -> None:
    _round, _target, attempt_id = running_round_with_claim(session)

    assert begin_create(session, attempt_id, None, NOW) is True
    # A second run that saw no mark may not send: the first one's request may be on its way.
    assert begin_create(session, attempt_id, None, NOW) is False
    session.expire_all()
    attempt = session.get(CallAttempt, attempt_id)
    assert attempt is not None
    assert (attempt.status, attempt.error_code, attempt.placed_at) == (CallStatus.CLAIMED, "creating", NOW)
    # A run that saw this mark (and looked the call up) may take over.
    later = NOW + timedelta(minutes=1)
    assert begin_create(session, attempt_id, NOW, later) is True
    assert begin_create(session, attempt_id, NOW, later) is False


def test_begin_create_refuses_when_the_round_stopped(session: Session, clock: Path) -> None:
    round_, _target, attempt_id = running_round_with_claim(session)
    round_.status = RoundStatus.PAUSED
    session.flush()

    assert begin_create(session, attempt_id, None, NOW) is False


def test_a_claim_is_released_only_while_no_create_started(session: Session, clock: Path) -> None:
    _round, target, attempt_id = running_round_with_claim(session)
    assert begin_create(session, attempt_id, None, NOW)

    assert release_claim(session, attempt_id, "released") is False  # a request may be on its way
    assert release_claim(session, attempt_id, "released", started=NOW - timedelta(seconds=1)) is False
    assert session.get(CallAttempt, attempt_id) is not None

    assert release_claim(session, attempt_id, "released", started=NOW) is True  # we know no call was made
    session.expire_all()
    assert session.get(CallAttempt, attempt_id) is None
    back = session.get(RoundTarget, target.id)
    assert back is not None
    assert (back.state, back.attempts, back.last_outcome) == (TargetState.PENDING, 0, "released")
    assert release_claim(session, attempt_id, "released") is False  # gone already


def test_a_refused_create_takes_its_mark_back(session: Session, clock: Path) -> None:
    _round, _target, attempt_id = running_round_with_claim(session)
    begin_create(session, attempt_id, None, NOW)

    assert create_not_sent(session, attempt_id, NOW) is True
    session.expire_all()
    attempt = session.get(CallAttempt, attempt_id)
    assert attempt is not None and (attempt.error_code, attempt.placed_at) == (None, None)
    assert release_claim(session, attempt_id, "released") is True


def test_a_claim_released_in_a_cancelled_round_ends_cancelled(session: Session, clock: Path) -> None:
    round_, target, attempt_id = running_round_with_claim(session)
    begin_create(session, attempt_id, None, NOW)
    change_round(session, round_.id, "cancel")  # the claim with a request on its way stays

    assert release_claim(session, attempt_id, "released", started=NOW) is True
    session.expire_all()
    assert session.get(RoundTarget, target.id).state == TargetState.CANCELLED  # type: ignore[union-attr]


def test_release_unplaced_claims_leaves_creates_on_their_way(session: Session, clock: Path) -> None:
    round_ = make_round(session, status=RoundStatus.RUNNING, windows=[["00:00", "24:00"]])
    for _ in range(3):
        make_target(session, round_)
    claims = claim_due_targets(session, round_, NOW, 3)
    begin_create(session, claims[0].attempt_id, None, NOW)

    assert release_unplaced_claims(session, round_.id) == 2
    assert [c.attempt_id for c in open_claims(session, NOW + timedelta(seconds=1))] == [claims[0].attempt_id]


def test_open_claims_report_their_create_mark(session: Session, clock: Path) -> None:
    _round, _target, attempt_id = running_round_with_claim(session)

    [fresh] = open_claims(session, NOW + timedelta(seconds=1))
    assert (fresh.attempt_id, fresh.create_started, fresh.mark) == (attempt_id, None, None)
    assert open_claims(session, NOW) == []  # claimed at NOW: not before it

    begin_create(session, attempt_id, None, NOW)
    [marked] = open_claims(session, NOW + timedelta(seconds=1))
    assert (marked.create_started, marked.mark) == (NOW, "creating")


def placed_attempt(session: Session, **round_over: Any) -> tuple[Round, RoundTarget, CallAttempt]:
    round_, target, attempt_id = running_round_with_claim(session, **round_over)
    attempt = session.get(CallAttempt, attempt_id)
    assert attempt is not None
    attempt.call_sid = sid(attempt_id)
    attempt.status = CallStatus.QUEUED
    session.flush()
    return round_, target, attempt


def test_a_busy_call_is_retried_after_the_busy_delay(session: Session, clock: Path) -> None:
    _round, target, attempt = placed_attempt(session, windows=[["09:00", "11:30"], ["14:30", "20:30"]])

    apply_call_status(session, attempt, "busy", 2)

    assert (target.state, target.last_outcome) == (TargetState.PENDING, "busy")
    assert target.next_attempt_at == NOW + timedelta(minutes=30)


def test_a_retry_in_the_lunch_rest_moves_to_the_afternoon_window(session: Session, clock: Path) -> None:
    # 10:00 + 2 h (no answer) = 12:00, the lunch rest: the retry is at 14:30 (06:30 UTC).
    _round, target, attempt = placed_attempt(session, windows=[["09:00", "11:30"], ["14:30", "20:30"]])

    apply_call_status(session, attempt, "no-answer", 2)

    assert target.next_attempt_at == datetime(2026, 12, 1, 6, 30, tzinfo=UTC)


def test_a_retry_skips_blocked_dates(session: Session, clock: Path) -> None:
    _round, target, attempt = placed_attempt(
        session, windows=[["09:00", "10:30"]], blocked_dates=["2026-12-02"]
    )

    apply_call_status(session, attempt, "no-answer", 2)  # 12:00 today is closed; tomorrow is a holiday

    assert target.next_attempt_at == datetime(2026, 12, 3, 1, 0, tzinfo=UTC)  # 12-03 09:00 Shanghai


def test_the_last_attempt_ends_the_target_unreachable(session: Session, clock: Path) -> None:
    _round, target, attempt = placed_attempt(session, max_attempts=1)

    apply_call_status(session, attempt, "no-answer", 2)

    assert (target.state, target.last_outcome, target.final_at) == (TargetState.UNREACHABLE, "no-answer", NOW)


def test_a_retry_past_the_deadline_ends_the_target_unreachable(session: Session, clock: Path) -> None:
    _round, target, attempt = placed_attempt(session, ends_at=NOW + timedelta(hours=1))

    apply_call_status(session, attempt, "no-answer", 2)  # due in 2 h: after the deadline

    assert target.state == TargetState.UNREACHABLE


def test_a_call_cancelled_while_queued_is_retried_at_once(session: Session, clock: Path) -> None:
    _round, target, attempt = placed_attempt(session)

    apply_call_status(session, attempt, "canceled", 1)

    assert (target.state, target.last_outcome, target.next_attempt_at) == (TargetState.PENDING, "not-dialled", NOW)


def test_duplicated_and_reordered_callbacks_change_nothing(session: Session, clock: Path) -> None:
    _round, target, attempt = placed_attempt(session)

    assert apply_call_status(session, attempt, "busy", 3) is True
    first = (attempt.status, target.state, target.next_attempt_at, target.attempts)
    for status, seq in (("ringing", 1), ("busy", 3), ("initiated", 0), ("completed", 2), ("no-answer", 3)):
        apply_call_status(session, attempt, status, seq)

    assert (attempt.status, target.state, target.next_attempt_at, target.attempts) == first
    assert first == (CallStatus.BUSY, TargetState.PENDING, NOW + timedelta(minutes=30), 1)


def test_a_status_never_moves_backwards(session: Session, clock: Path) -> None:
    _round, _target, attempt = placed_attempt(session)

    apply_call_status(session, attempt, "in-progress", 2)
    apply_call_status(session, attempt, "ringing", None)  # the sweeper's view, older than what we know

    assert attempt.status == CallStatus.IN_PROGRESS


def test_a_callback_for_a_call_still_marked_as_being_created_clears_the_mark(session: Session, clock: Path) -> None:
    _round, _target, attempt_id = running_round_with_claim(session)
    begin_create(session, attempt_id, None, NOW)
    session.expire_all()
    attempt = session.get(CallAttempt, attempt_id)
    assert attempt is not None
    attempt.call_sid = sid(77)  # adopted by the webhook: the worker died before saving the sid

    apply_call_status(session, attempt, "ringing", 1)

    assert (attempt.status, attempt.error_code) == (CallStatus.RINGING, None)


# --- the round commands ----------------------------------------------------------------------------------


def sanlv(*args: str):
    from click.testing import CliRunner

    from web.cli import main

    return CliRunner().invoke(main, list(args))


def test_round_create_with_blocked_dates(env: Settings, sessions) -> None:
    with sessions.begin() as session:
        make_household(session)

    result = sanlv("round", "create", "--name", "国庆后", "--blocked", "2026-10-01..2026-10-03,2026-10-08")

    assert result.exit_code == 0, result.output
    with sessions() as session:
        round_ = session.get(Round, int(result.stdout))
        assert round_ is not None
        assert round_.blocked_dates == ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-08"]


def test_round_create_refuses_a_bad_blocked_date_in_one_line(env: Settings, sessions) -> None:
    with sessions.begin() as session:
        make_household(session)

    result = sanlv("round", "create", "--name", "r", "--blocked", "2026-10-32")

    assert result.exit_code == 1
    assert result.stderr == "Error: --blocked: '2026-10-32': '2026-10-32' is not a date like 2026-10-01\n"


def test_round_status_text_gives_the_eta_in_hours_and_minutes(env: Settings, sessions, clock: Path) -> None:
    with sessions.begin() as session:
        round_ = make_round(session, status=RoundStatus.RUNNING, cps=0.01, windows=[["00:00", "24:00"]])
        for _ in range(55):  # 5500 s at one call every 100 s
            make_target(session, round_)
        round_id = round_.id

    result = sanlv("round", "status", str(round_id))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "  attempts 0, live calls 0, dial rate 0.00/s, eta 1h 31m"
