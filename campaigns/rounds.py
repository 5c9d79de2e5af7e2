"""Survey rounds: creation with sampling, the lifecycle (launch, pause, resume, cancel, complete), status.

Services take a Session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, insert, literal, select, update
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.callerids import CallerIdError, find_caller_id
from campaigns.calls import release_claim
from campaigns.errors import SanlvError
from campaigns.models import (
    FINAL_CALL_STATUSES,
    FINAL_TARGET_STATES,
    CallAttempt,
    CallDirection,
    CallStatus,
    DoNotCall,
    Household,
    InboundMode,
    PhoneStatus,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from campaigns.questionnaire import (
    DELIVERY_STEP,
    QuestionnaireError,
    resolve_in,
    store_version,
    without_steps,
)
from campaigns.runtime import get_runtime
from campaigns.schedule import (
    DEFAULT_RETRY,
    DEFAULT_WINDOWS,
    ScheduleError,
    add_open_time,
    parse_blocked,
    parse_retry,
    parse_windows,
)
from campaigns.settings import Settings

_SAMPLE = re.compile(r"^(all|village:(\d+)|cadre:(\d+))$")
MAX_SAMPLE_PER_GROUP = 1_000_000
MAX_ATTEMPTS = 100  # calls per household in one round
MAX_CONCURRENT = 10_000  # live calls of one round


class RoundError(SanlvError, ValueError):
    """A round request is invalid (unknown round, impossible transition, bad option). The message says why."""


@dataclass(frozen=True)
class RoundOptions:
    name: str
    questionnaire: str = "default"
    sample: str = "all"
    seed: int | None = None
    windows: list[list[str]] = field(default_factory=lambda: [list(w) for w in DEFAULT_WINDOWS])
    blocked_dates: list[str] = field(default_factory=list)
    max_attempts: int = 3
    cps: float = 1.0
    max_concurrent: int = 10
    retry: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_RETRY))
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    exclude_unsure: bool = False
    machine_detection: bool = False
    inbound: InboundMode = InboundMode.CALL_BACK  # what a call from a household of the sample does
    rate_targets: dict[str, float] = field(default_factory=dict)  # per-rate overrides of the questionnaire's
    caller_id: str | None = None  # a number of the caller-ID pool the round's calls show (villages' win)
    accounts: tuple[str, ...] = ()  # the Twilio accounts the round may dial through (empty: all)
    # Ask the questionnaire's delivery check (an optional step after the rates); False leaves it out.
    delivery_check: bool = True

    @classmethod
    def from_cli(cls, settings: Settings, **raw) -> RoundOptions:
        """Parse the ``round create`` options; raises RoundError naming the option."""
        name = (raw.get("name") or "").strip()
        if not name:
            raise RoundError("--name: must not be empty")
        values: dict = {
            "name": name,
            "exclude_unsure": bool(raw.get("exclude_unsure")),
            "machine_detection": bool(raw.get("machine_detection")),
            "rate_targets": parse_rate_targets(raw.get("targets") or ()),
            "delivery_check": not raw.get("no_delivery_check"),
        }
        if raw.get("inbound"):
            values["inbound"] = parse_inbound(raw["inbound"])
        if raw.get("questionnaire_ref"):
            values["questionnaire"] = raw["questionnaire_ref"]
        if raw.get("sample"):
            values["sample"] = raw["sample"].strip()
        if raw.get("seed") is not None:
            values["seed"] = raw["seed"]
        try:
            if raw.get("windows") is not None:  # an empty --window is an error, not the default
                values["windows"] = parse_windows(raw["windows"])
            if raw.get("retry"):
                values["retry"] = parse_retry(raw["retry"])
            if raw.get("blocked"):
                values["blocked_dates"] = parse_blocked(raw["blocked"])
        except ScheduleError as exc:
            raise RoundError(str(exc)) from None
        for option, key, low in (("--max-attempts", "max_attempts", 1), ("--max-concurrent", "max_concurrent", 1)):
            if raw.get(key) is not None:
                if raw[key] < low:
                    raise RoundError(f"{option}: must be at least {low}")
                values[key] = raw[key]
        if raw.get("cps") is not None:
            if not 0 < raw["cps"] <= 100:
                raise RoundError("--cps: must be greater than 0 and at most 100 calls per second")
            values["cps"] = raw["cps"]
        for option, key in (("--starts-at", "starts_at"), ("--ends-at", "ends_at")):
            if raw.get(key):
                values[key] = parse_local_time(raw[key], settings, option)
        if raw.get("caller_id"):
            values["caller_id"] = raw["caller_id"].strip()
        if raw.get("accounts"):
            values["accounts"] = parse_accounts(raw["accounts"], settings)
        options = cls(**values)
        options.validate()
        return options

    def validate(self) -> None:
        if not _SAMPLE.match(self.sample):
            raise RoundError(f"--sample: {self.sample!r} must be all, village:N or cadre:N (N at least 1)")
        match = _SAMPLE.match(self.sample)
        assert match is not None
        if int(match.group(2) or match.group(3) or 1) < 1:  # also "village:00"
            raise RoundError(f"--sample: {self.sample!r}: N must be at least 1")
        if int(match.group(2) or match.group(3) or 1) > MAX_SAMPLE_PER_GROUP:
            raise RoundError(f"--sample: {self.sample!r}: N must be at most {MAX_SAMPLE_PER_GROUP}")
        # Stored in INTEGER columns: a number past their range is a mistake to name, not a database error.
        if self.seed is not None and not -(2**31) <= self.seed < 2**31:
            raise RoundError(f"--seed: {self.seed} must be between {-(2**31)} and {2**31 - 1}")
        for option, value, high in (("--max-attempts", self.max_attempts, MAX_ATTEMPTS),
                                    ("--max-concurrent", self.max_concurrent, MAX_CONCURRENT)):  # fmt: skip
            if value > high:
                raise RoundError(f"{option}: must be at most {high}")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise RoundError("--ends-at: must be after --starts-at")
        try:  # options built in code (the demo, tests) are held to what the command line accepts
            parse_windows(",".join(f"{start}-{end}" for start, end in self.windows))
            parse_blocked(",".join(self.blocked_dates))
        except ScheduleError as exc:
            raise RoundError(str(exc)) from None


def parse_accounts(text: str, settings: Settings) -> tuple[str, ...]:
    """``--accounts a,b``: names of configured Twilio accounts (SANLV_TWILIO_ACCOUNTS), in order, once each."""
    known = [a.name for a in settings.accounts]
    names: list[str] = []
    for name in (part.strip().lower() for part in text.split(",")):
        if not name:
            continue
        if name not in known:
            raise RoundError(
                f"--accounts: {name!r} is not a Twilio account of this deployment ({', '.join(known) or 'none'})"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise RoundError("--accounts: name at least one Twilio account")
    return tuple(names)
def parse_inbound(text: str) -> InboundMode:
    """``--inbound``: ``call-back`` (take no answers on an inbound call; call the number back) or ``answer``."""
    try:
        return InboundMode(text.strip())
    except ValueError:
        choices = " or ".join(mode.value for mode in InboundMode)
        raise RoundError(f"--inbound: {text.strip()!r} must be {choices}") from None


def parse_rate_targets(items: Iterable[str]) -> dict[str, float]:
    """``--target`` values, ``RATE=VALUE`` each (``security=0.9`` or ``security=90%``), as rate -> fraction.

    Which rates exist is the questionnaire's to say; :func:`create_round` checks the keys against it.
    """
    targets: dict[str, float] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise RoundError(f"--target: {item!r} is not rate=value, e.g. security=0.95 or security=95%")
        try:
            value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            raise RoundError(f"--target: {item!r}: {raw!r} is not a number or a percentage") from None
        if not 0 <= value <= 1:
            raise RoundError(f"--target: {item!r}: a target is from 0 to 1 (0% to 100%)")
        if key in targets:
            raise RoundError(f"--target: {key} is given twice")
        targets[key] = round(value, 6)
    return targets


def parse_local_time(text: str, settings: Settings, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RoundError(f"{option}: {text!r} is not an ISO time like 2026-12-01T20:30") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=settings.tz)
    return value


def get_round(session: Session, round_id: int, *, lock: bool = False) -> Round:
    """The round; with ``lock``, its row is locked against other status changes until the transaction ends.

    The lock is PostgreSQL's FOR NO KEY UPDATE, not FOR UPDATE: a dispatch tick that has claimed targets then
    inserts their call attempts, whose foreign key takes a KEY SHARE lock on the round. FOR UPDATE would make
    that insert wait for a cancel that itself waits for the claimed targets: a deadlock, in which PostgreSQL
    aborts one of the two (a cancel failing, or a tick lost).
    """
    stmt = select(Round).where(Round.id == round_id)
    if lock:
        stmt = stmt.with_for_update(key_share=True)
    round_ = session.scalar(stmt)
    if round_ is None:
        raise RoundError(f"round {round_id}: no such round")
    return round_


def create_round(session: Session, options: RoundOptions) -> Round:
    """Create a draft round and sample its targets (one per phone number; do-not-call and invalid excluded)."""
    options.validate()
    try:
        questionnaire = resolve_in(session, options.questionnaire)
    except QuestionnaireError as exc:
        raise RoundError(f"--questionnaire: {exc}") from None
    if not options.delivery_check:
        # The round stores the questionnaire without the step, so its calls never ask it.
        questionnaire = without_steps(questionnaire, [DELIVERY_STEP])
    unknown = sorted(set(options.rate_targets) - set(questionnaire.rates))
    if unknown:
        raise RoundError(
            f"--target: {', '.join(unknown)}: not a rate of questionnaire {questionnaire.key} "
            f"(its rates: {', '.join(questionnaire.rates)})"
        )
    caller_id = None
    if options.caller_id:
        try:
            caller_id = find_caller_id(session, options.caller_id, "--caller-id")
        except CallerIdError as exc:
            raise RoundError(str(exc)) from None
        if caller_id.account and options.accounts and caller_id.account not in options.accounts:
            raise RoundError(
                f"--caller-id: {caller_id.number} belongs to Twilio account {caller_id.account}, "
                f"which --accounts leaves out"
            )
    version = store_version(session, questionnaire)
    round_ = Round(
        name=options.name,
        questionnaire_id=version.id,
        status=RoundStatus.DRAFT,
        sample=options.sample,
        seed=options.seed,
        windows=options.windows,
        blocked_dates=options.blocked_dates,
        max_attempts=options.max_attempts,
        cps=options.cps,
        max_concurrent=options.max_concurrent,
        retry=options.retry,
        starts_at=options.starts_at,
        ends_at=options.ends_at,
        exclude_unsure=options.exclude_unsure,
        machine_detection=options.machine_detection,
        inbound=InboundMode(options.inbound),
        rate_targets=dict(options.rate_targets),
        caller_id_id=caller_id.id if caller_id else None,
        accounts=list(options.accounts),
    )
    session.add(round_)
    session.flush()
    count = sample_targets(session, round_)
    if count == 0:
        raise RoundError("the roster has no callable households (import one with `sanlv roster import`)")
    return round_


def _callable_households():
    """Households that may be called: a valid number, still on the roster, not on the do-not-call list."""
    return and_(
        Household.phone_status == PhoneStatus.OK,
        Household.retired_at.is_(None),
        ~select(DoNotCall.phone).where(DoNotCall.phone == Household.phone).exists(),
    )


def sample_targets(session: Session, round_: Round) -> int:
    """Insert the round's targets; returns how many. ``all`` runs as one INSERT ... SELECT (flat memory)."""
    now = clock.now()
    match = _SAMPLE.match(round_.sample)
    assert match is not None
    if match.group(1) == "all":
        stmt = insert(RoundTarget).from_select(
            ["round_id", "household_id", "village_id", "phone", "state", "attempts", "updated_at"],
            select(
                literal(round_.id, RoundTarget.round_id.type),
                Household.id,
                Household.village_id,
                Household.phone,
                literal(TargetState.PENDING, RoundTarget.state.type),
                literal(0, RoundTarget.attempts.type),
                literal(now, RoundTarget.updated_at.type),
            )
            .where(_callable_households())
            .order_by(Household.id),
        )
        session.execute(stmt)
        # Not the INSERT's rowcount: SQLAlchemy 2.1 with psycopg reports -1 for INSERT ... SELECT.
        counted = select(func.count()).select_from(RoundTarget).where(RoundTarget.round_id == round_.id)
        return session.scalar(counted) or 0
    per = int(match.group(2) or match.group(3))
    group_column = Household.village_id if match.group(2) else Household.cadre_id
    # Streamed group by group (households without a cadre last), each group's members in id order, so memory
    # holds one group at a time however large the roster, and a seed picks the same households every time.
    rows = session.execute(
        select(group_column, Household.id, Household.village_id, Household.phone)
        .where(_callable_households())
        .order_by(group_column.is_(None), group_column, Household.id)
        .execution_options(yield_per=5000)
    )
    rng = random.Random(round_.seed)
    count = 0
    batch: list[dict] = []
    for _group, members in itertools.groupby(rows, key=lambda row: row[0]):
        chosen = [(h, v, p) for _g, h, v, p in members]
        if len(chosen) > per:
            chosen = sorted(rng.sample(chosen, per))
        batch.extend(
            {"round_id": round_.id, "household_id": h, "village_id": v, "phone": p, "state": TargetState.PENDING.value,
             "attempts": 0, "updated_at": now}
            for h, v, p in chosen
        )  # fmt: skip
        if len(batch) >= 1000:
            count += _insert_targets(session, batch)
            batch = []
    count += _insert_targets(session, batch)
    return count


def _insert_targets(session: Session, rows: list[dict]) -> int:
    if rows:
        session.execute(insert(RoundTarget.__table__), rows)
    return len(rows)


# --- lifecycle ------------------------------------------------------------------------------------------

_TRANSITIONS: dict[str, tuple[frozenset[RoundStatus], RoundStatus]] = {
    "launch": (frozenset({RoundStatus.DRAFT}), RoundStatus.RUNNING),
    "pause": (frozenset({RoundStatus.RUNNING}), RoundStatus.PAUSED),
    "resume": (frozenset({RoundStatus.PAUSED}), RoundStatus.RUNNING),
    "cancel": (frozenset({RoundStatus.DRAFT, RoundStatus.RUNNING, RoundStatus.PAUSED}), RoundStatus.CANCELLED),
}

_REASONS = {
    ("launch", RoundStatus.RUNNING): "it is already running",
    ("launch", RoundStatus.PAUSED): "it is paused (use resume)",
    ("pause", RoundStatus.PAUSED): "it is already paused",
    ("pause", RoundStatus.DRAFT): "it has not been launched",
    ("resume", RoundStatus.RUNNING): "it is already running",
    ("resume", RoundStatus.DRAFT): "it has not been launched (use launch)",
}


RoundListener = Callable[[Settings, int, str], None]
_round_listeners: list[RoundListener] = []


def on_round_change(listener: RoundListener) -> None:
    """Register ``listener(settings, round_id, command)``, called by :func:`round_changed` (idempotent).

    The dialler registers itself here (``web.wiring``): campaigns imports no other project package.
    """
    if listener not in _round_listeners:
        _round_listeners.append(listener)


def round_changed(settings: Settings, round_id: int, command: str) -> None:
    """Tell the listeners that ``command`` (launch, pause, resume, cancel) was committed for the round.

    Call it after the commit: work follows the transaction that justifies it.
    """
    for listener in _round_listeners:
        listener(settings, round_id, command)


def change_round(session: Session, round_id: int, command: str) -> Round:
    """Perform a lifecycle command. Raises RoundError for an impossible transition."""
    if command not in _TRANSITIONS:
        raise RoundError(f"unknown command {command!r}")
    allowed, new_status = _TRANSITIONS[command]
    round_ = get_round(session, round_id, lock=True)
    if round_.status not in allowed:
        reason = _REASONS.get((command, round_.status), f"it is {round_.status.value}")
        raise RoundError(f"round {round_id}: cannot {command}: {reason}")
    now = clock.now()
    round_.status = new_status
    if command == "launch":
        round_.launched_at = now
    elif command == "pause":
        release_unplaced_claims(session, round_id)
    elif command == "cancel":
        cancel_remaining(session, round_)
        round_.finished_at = now
    session.flush()
    return round_


def release_unplaced_claims(session: Session, round_id: int) -> int:
    """Claimed work whose create request has not started goes back to ``pending`` (pause, cancel).

    An attempt whose create request is already on its way is left to finish: it was placed before the pause.
    """
    claimed = session.scalars(
        select(CallAttempt.id).where(
            CallAttempt.round_id == round_id,
            CallAttempt.status == CallStatus.CLAIMED,
            CallAttempt.call_sid.is_(None),
            CallAttempt.placed_at.is_(None),
        )
    ).all()
    return sum(release_claim(session, attempt_id, reason="released") for attempt_id in claimed)


def cancel_remaining(session: Session, round_: Round) -> int:
    """Targets not yet final and not in a live call become ``cancelled``."""
    now = clock.now()
    release_unplaced_claims(session, round_.id)
    result = session.execute(
        update(RoundTarget)
        .where(RoundTarget.round_id == round_.id, RoundTarget.state == TargetState.PENDING)
        .values(state=TargetState.CANCELLED, final_at=now, last_outcome="cancelled")
    )
    return result.rowcount or 0


def complete_if_done(session: Session, round_id: int) -> bool:
    """Mark a running round completed when every target is final. Returns True if it is (now) completed."""
    round_ = get_round(session, round_id)
    if round_.status == RoundStatus.COMPLETED:
        return True
    if round_.status != RoundStatus.RUNNING:
        return False
    open_targets = session.scalar(
        select(func.count())
        .select_from(RoundTarget)
        .where(RoundTarget.round_id == round_id, RoundTarget.state.not_in(FINAL_TARGET_STATES))
    )
    if open_targets:
        return False
    round_.status = RoundStatus.COMPLETED
    round_.finished_at = clock.now()
    session.flush()
    return True


# --- status ---------------------------------------------------------------------------------------------


RATE_WINDOW = timedelta(seconds=60)  # the dial rate is measured over the last minute (less just after launch)


def round_status_report(session: Session, round_id: int, tz=None) -> dict:
    """The ``round status --format json`` contract.

    ``dial_rate`` is the calls placed per second over the last minute (or since launch, if later).
    ``eta_seconds`` estimates when the last remaining target will have been dialled: the pending targets at
    the current dial rate (the round's CPS while it waits), counted in calling time only (windows and blocked
    dates), and no earlier than the last scheduled retry; never past the deadline. None while the round is
    a draft or paused; 0 once it is over.
    """
    round_ = get_round(session, round_id)
    counts = {state.value: 0 for state in TargetState}
    for state, count in session.execute(
        select(RoundTarget.state, func.count()).where(RoundTarget.round_id == round_id).group_by(RoundTarget.state)
    ):
        counts[TargetState(state).value] = count
    attempts = session.scalar(select(func.count()).select_from(CallAttempt).where(CallAttempt.round_id == round_id))
    live = session.scalar(
        select(func.count())
        .select_from(CallAttempt)
        .where(CallAttempt.round_id == round_id, CallAttempt.status.not_in(FINAL_CALL_STATUSES))
    )
    now = clock.now()
    window = RATE_WINDOW
    if round_.launched_at is not None:
        window = max(timedelta(seconds=10), min(window, now - round_.launched_at))
    recent = session.scalar(
        select(func.count())
        .select_from(CallAttempt)
        .where(
            CallAttempt.round_id == round_id,
            CallAttempt.direction == CallDirection.OUTBOUND,
            CallAttempt.call_sid.is_not(None),
            CallAttempt.placed_at >= now - window,
            CallAttempt.placed_at <= now,
        )
    )
    dial_rate = (recent or 0) / window.total_seconds()
    remaining = counts["pending"] + counts["dialing"] + counts["in_call"]
    eta: int | None
    if round_.status in (RoundStatus.COMPLETED, RoundStatus.CANCELLED) or remaining == 0:
        eta = 0
    elif round_.status != RoundStatus.RUNNING:
        eta = None
    else:
        eta = _eta_seconds(session, round_, counts["pending"], dial_rate, now, tz)
    return {
        "id": round_.id,
        "name": round_.name,
        "status": round_.status.value,
        "targets": counts,
        "attempts": attempts or 0,
        "live_calls": live or 0,
        "dial_rate": round(dial_rate, 3),
        "eta_seconds": eta,
    }


def _eta_seconds(session: Session, round_: Round, pending: int, dial_rate: float, now: datetime, tz) -> int | None:
    if tz is None:
        tz = get_runtime().settings.tz
    rate = dial_rate if dial_rate > 0 else round_.cps
    start = max(now, round_.starts_at) if round_.starts_at else now
    blocked = round_.blocked_dates or []
    finish = add_open_time(round_.windows, blocked, start, pending / rate, tz)
    last_retry = session.scalar(
        select(func.max(RoundTarget.next_attempt_at)).where(
            RoundTarget.round_id == round_.id, RoundTarget.state == TargetState.PENDING
        )
    )
    if last_retry is not None and last_retry > now:
        # A retry waits for its time; then it still has to be dialled.
        retried = add_open_time(round_.windows, blocked, last_retry, 1 / rate, tz)
        if retried is not None and (finish is None or retried > finish):
            finish = retried
    if round_.ends_at is not None and (finish is None or finish > round_.ends_at):
        finish = max(now, round_.ends_at)
    if finish is None:
        return None  # no window opens again: the round waits for an operator
    # Calls still ringing or talking: the round is not over yet, however soon.
    return max(1, int((finish - now).total_seconds() + 0.5))
