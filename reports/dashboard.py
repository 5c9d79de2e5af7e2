"""What the office watches: a round's live progress, and the home page's summary of every round.

:func:`round_progress` is the ``round status --format json`` contract (``campaigns.rounds.round_status_report``)
with what a person watching the round also wants: how far it is (final targets of all), its calling settings,
and the latest calls with masked numbers. The progress page draws it and polls it as JSON.

:func:`office_home` gathers the home page: the rounds in progress, the township rates of the latest round that
ended against their targets, and the open and overdue follow-ups of each round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.followups import OPEN_STATUSES
from campaigns.models import FINAL_TARGET_STATES, CallAttempt, FollowUp, Round, RoundStatus, RoundTarget
from campaigns.phones import mask
from campaigns.rounds import RoundError, round_status_report
from reports.followups import DEFAULT_OVERDUE_DAYS, overdue_condition
from reports.rates import DEFAULT_MIN_SAMPLE, RatesReport, Ref, ReportError, village_rates
from reports.rows import INLINE, Row

RECENT_CALLS = 15
IN_PROGRESS = (RoundStatus.RUNNING, RoundStatus.PAUSED)
ENDED = (RoundStatus.COMPLETED, RoundStatus.CANCELLED)


@dataclass(kw_only=True)
class RecentCall(Row):
    """One call of the round, newest first; the number masked (138****1234)."""

    id: int
    phone: str
    direction: str
    number: int  # the target's 1st, 2nd, ... call
    status: str
    answered_by: str | None
    created_at: datetime
    placed_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    duration_seconds: int | None


@dataclass(kw_only=True)
class RoundProgress(Row):
    """The round status contract (``id``, ``name``, ``status``, ``targets``, ``attempts``, ``live_calls``,
    ``dial_rate``, ``eta_seconds``) and, beside it, how far the round is and its latest calls."""

    contract: dict[str, Any] = field(metadata=INLINE)
    total: int  # the round's targets
    final: int  # targets in a final state
    done_share: float | None  # final / total
    sample: str
    windows: list[list[str]]
    cps: float
    max_concurrent: int
    max_attempts: int
    created_at: datetime
    launched_at: datetime | None
    finished_at: datetime | None
    ends_at: datetime | None
    recent_calls: list[RecentCall]


def round_progress(
    session: Session, round_id: int, *, recent: int = RECENT_CALLS, tz: ZoneInfo | None = None
) -> RoundProgress:
    """A round's progress and its ``recent`` latest calls.

    Raises:
        ReportError: no round has this id.
    """
    try:
        contract = round_status_report(session, round_id, tz)
    except RoundError as exc:
        raise ReportError(str(exc)) from None
    round_ = session.get(Round, round_id)
    assert round_ is not None
    total = sum(contract["targets"].values())
    final = sum(contract["targets"][state.value] for state in FINAL_TARGET_STATES)
    return RoundProgress(
        contract=contract,
        total=total,
        final=final,
        done_share=final / total if total else None,
        sample=round_.sample,
        windows=[list(window) for window in round_.windows],
        cps=round_.cps,
        max_concurrent=round_.max_concurrent,
        max_attempts=round_.max_attempts,
        created_at=round_.created_at,
        launched_at=round_.launched_at,
        finished_at=round_.finished_at,
        ends_at=round_.ends_at,
        recent_calls=recent_calls(session, round_id, recent) if recent else [],
    )


def recent_calls(session: Session, round_id: int, limit: int = RECENT_CALLS) -> list[RecentCall]:
    """The round's ``limit`` latest calls, newest first, numbers masked."""
    rows = session.execute(
        select(
            CallAttempt.id,
            RoundTarget.phone,
            CallAttempt.direction,
            CallAttempt.number,
            CallAttempt.status,
            CallAttempt.answered_by,
            CallAttempt.created_at,
            CallAttempt.placed_at,
            CallAttempt.answered_at,
            CallAttempt.ended_at,
            CallAttempt.duration_seconds,
        )
        .join(RoundTarget, RoundTarget.id == CallAttempt.target_id)
        .where(CallAttempt.round_id == round_id)
        .order_by(CallAttempt.id.desc())
        .limit(limit)
    )
    return [
        RecentCall(
            id=attempt_id,
            phone=mask(phone),
            direction=direction.value,
            number=number,
            status=status.value,
            answered_by=answered_by,
            created_at=created_at,
            placed_at=placed_at,
            answered_at=answered_at,
            ended_at=ended_at,
            duration_seconds=duration,
        )
        for attempt_id, phone, direction, number, status, answered_by, created_at, placed_at, answered_at, ended_at,
        duration in rows
    ]  # fmt: skip


@dataclass(kw_only=True)
class OpenFollowUps(Row):
    """A round's follow-ups still to finish: ``open`` (pending or visited), of which ``overdue``."""

    round: Ref
    open: int
    overdue: int


@dataclass(kw_only=True)
class OfficeHome(Row):
    in_progress: list[RoundProgress]  # running and paused rounds, newest first
    latest: RatesReport | None  # the latest round that ended (completed or cancelled): its rates
    followups: list[OpenFollowUps]  # rounds with open follow-ups, newest first
    open: int
    overdue: int


def office_home(
    session: Session,
    *,
    tz: ZoneInfo | None = None,
    min_sample: int = DEFAULT_MIN_SAMPLE,
    overdue_days: int = DEFAULT_OVERDUE_DAYS,
    now: datetime | None = None,
) -> OfficeHome:
    """The home page's summary (read only: the interview keeps the follow-up items current)."""
    now = now or clock.now()
    running = session.scalars(
        select(Round.id).where(Round.status.in_(IN_PROGRESS)).order_by(Round.created_at.desc(), Round.id.desc())
    ).all()
    latest_id = session.scalar(
        select(Round.id)
        .where(Round.status.in_(ENDED))
        .order_by(Round.finished_at.desc().nulls_last(), Round.id.desc())
        .limit(1)
    )
    overdue = case((overdue_condition(now, overdue_days), 1), else_=0)
    counts = session.execute(
        select(Round.id, Round.name, func.count(FollowUp.id), func.sum(overdue))
        .join(FollowUp, FollowUp.round_id == Round.id)
        .where(FollowUp.status.in_(OPEN_STATUSES))
        .group_by(Round.id, Round.name)
        .order_by(Round.id.desc())
    ).all()
    followups = [
        OpenFollowUps(round=Ref(id=round_id, name=name), open=open_, overdue=int(late or 0))
        for round_id, name, open_, late in counts
    ]
    return OfficeHome(
        in_progress=[round_progress(session, round_id, recent=0, tz=tz) for round_id in running],
        latest=village_rates(session, latest_id, min_sample=min_sample, flags=False) if latest_id else None,
        followups=followups,
        open=sum(item.open for item in followups),
        overdue=sum(item.overdue for item in followups),
    )
