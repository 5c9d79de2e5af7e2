"""The supervisors' view (纪委/抽查组): per cadre, the households assigned, how many were reached, the contact
rate (重视率) measured in the round, and their follow-ups (open, overdue).

The contact rate is what the residents of a cadre's households answered to the ``cadre_contact`` question,
over completed interviews, with its Wilson interval and the "too few to judge" mark. It is for supervisors
only: no cadre-facing report or endpoint includes it.

The view is a :class:`CadresReport` (typed rows, ``to_json()`` its JSON); :func:`tables` is its column
specification.

Households are assigned by the roster as it is now. ``households`` counts every household of the cadre in
the roster; ``sampled`` those that are targets of the round. Households without a cadre are grouped under
``cadre_id: null`` ("未分配").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.followups import OPEN_STATUSES
from campaigns.models import (
    Answer,
    Cadre,
    FollowUp,
    FollowUpStatus,
    Household,
    Response,
    ResponseStatus,
    Round,
    RoundTarget,
    Village,
)
from campaigns.phones import mask
from campaigns.questionnaire import from_version
from reports.columns import FILES, Column, Kind, Table, only
from reports.followups import DEFAULT_OVERDUE_DAYS, FollowUpCounts
from reports.rates import (
    DEFAULT_MIN_SAMPLE,
    RateFigures,
    ReportError,
    RoundInfo,
    effective_targets,
    natural_key,
    rate_figures,
    rate_steps,
    round_info,
    target_overrides,
)
from reports.rows import Row

CONTACT_RATE = "cadre_contact"
UNASSIGNED = "未分配"


@dataclass(kw_only=True)
class CadreRow(Row):
    """One cadre (or the households without one: ``cadre_id`` None, "未分配")."""

    cadre_id: int | None
    cadre: str
    phone: str | None  # masked
    villages: list[str]
    households: int  # in the roster now
    sampled: int  # targets of the round
    reached: int
    completed: int
    contact: RateFigures | None  # None when the questionnaire has no contact question
    followups: FollowUpCounts


@dataclass(kw_only=True)
class CadreTotal(Row):
    """Every cadre together."""

    cadre: str = "合计"
    households: int
    sampled: int
    reached: int
    completed: int
    contact: RateFigures | None
    followups: FollowUpCounts
    # Not in the JSON: the total names no cadre, phone or village.
    cadre_id: ClassVar[None] = None
    phone: ClassVar[None] = None
    villages: ClassVar[tuple[str, ...]] = ()


@dataclass(kw_only=True)
class CadresRound(RoundInfo):
    min_sample: int
    overdue_days: int


@dataclass(kw_only=True)
class CadresReport(Row):
    """``{"round": {...}, "cadres": [...], "total": {...}}``."""

    round: CadresRound
    cadres: list[CadreRow]
    total: CadreTotal


def cadre_overview(
    session: Session,
    round_id: int,
    *,
    now: datetime | None = None,
    overdue_days: int = DEFAULT_OVERDUE_DAYS,
    min_sample: int = DEFAULT_MIN_SAMPLE,
) -> CadresReport:
    """One entry per cadre with a target in the round, and the total.

    Raises:
        ReportError: no round has this id.
    """
    now = now or clock.now()
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise ReportError(f"round {round_id} does not exist")
    questionnaire = from_version(round_.questionnaire)
    targets = effective_targets(questionnaire, target_overrides(round_))
    contact_step = rate_steps(questionnaire).get(CONTACT_RATE)

    # A target made anonymous (campaigns.privacy) has no household; it keeps the cadre its household had.
    cadre_of = func.coalesce(Household.cadre_id, RoundTarget.cadre_id)
    sample = {
        cadre_id: {"sampled": sampled, "reached": reached, "completed": int(completed or 0)}
        for cadre_id, sampled, reached, completed in session.execute(
            select(
                cadre_of,
                func.count(RoundTarget.id),
                func.count(Response.id),
                func.sum(case((Response.status == ResponseStatus.COMPLETED, 1), else_=0)),
            )
            .select_from(RoundTarget)
            .outerjoin(Household, Household.id == RoundTarget.household_id)
            .outerjoin(Response, Response.target_id == RoundTarget.id)
            .where(RoundTarget.round_id == round_id)
            .group_by(cadre_of)
        )
    }
    roster = dict(
        session.execute(
            select(Household.cadre_id, func.count())
            .where(Household.cadre_id.in_([c for c in sample if c is not None]))
            .group_by(Household.cadre_id)
        ).all()
    )
    if None in sample:
        roster[None] = session.scalar(select(func.count()).select_from(Household).where(Household.cadre_id.is_(None)))
    villages: dict[int | None, set[str]] = {}
    for cadre_id, name in session.execute(
        select(cadre_of, Village.name)
        .select_from(RoundTarget)
        .outerjoin(Household, Household.id == RoundTarget.household_id)
        .join(Village, Village.id == RoundTarget.village_id)
        .where(RoundTarget.round_id == round_id)
        .distinct()
    ):
        villages.setdefault(cadre_id, set()).add(name)

    contact: dict[int | None, Counter[str]] = {}
    if contact_step is not None:
        for cadre_id, digit, count in session.execute(
            select(cadre_of, Answer.digit, func.count())
            .select_from(Answer)
            .join(Response, Response.id == Answer.response_id)
            .join(RoundTarget, RoundTarget.id == Response.target_id)
            .outerjoin(Household, Household.id == RoundTarget.household_id)
            .where(
                Answer.round_id == round_id,
                Answer.question == contact_step.key,
                Response.status == ResponseStatus.COMPLETED,
            )
            .group_by(cadre_of, Answer.digit)
        ):
            contact.setdefault(cadre_id, Counter())[digit] += count

    overdue = case(
        (
            and_(FollowUp.status == FollowUpStatus.PENDING, FollowUp.created_at < now - timedelta(days=overdue_days)),
            1,
        ),
        else_=0,
    )
    followups: dict[int | None, Counter[str]] = {}
    for cadre_id, status, count, late in session.execute(
        select(FollowUp.cadre_id, FollowUp.status, func.count(), func.sum(overdue))
        .where(FollowUp.round_id == round_id)
        .group_by(FollowUp.cadre_id, FollowUp.status)
    ):
        entry = followups.setdefault(cadre_id, Counter())
        entry[FollowUpStatus(status).value] += count
        entry["total"] += count
        if FollowUpStatus(status) in OPEN_STATUSES:
            entry["open"] += count
        entry["overdue"] += int(late or 0)

    ids = set(sample) | set(followups)
    cadres = {
        cadre.id: cadre
        for cadre in session.scalars(select(Cadre).where(Cadre.id.in_([i for i in ids if i is not None])))
    }

    def figures(digits: Counter[str]) -> RateFigures | None:
        if contact_step is None:
            return None
        return rate_figures(contact_step, targets[CONTACT_RATE], digits, round_.exclude_unsure, min_sample)

    entries = []
    for cadre_id in ids:
        cadre = cadres.get(cadre_id) if cadre_id is not None else None
        counts = sample.get(cadre_id, {"sampled": 0, "reached": 0, "completed": 0})
        entries.append(
            CadreRow(
                cadre_id=cadre_id,
                cadre=cadre.name if cadre else UNASSIGNED,
                phone=mask(cadre.phone) if cadre and cadre.phone else None,
                villages=sorted(villages.get(cadre_id, ()), key=natural_key),
                households=roster.get(cadre_id, 0),
                **counts,
                contact=figures(contact.get(cadre_id, Counter())),
                followups=FollowUpCounts(**followups.get(cadre_id, {})),
            )
        )
    entries.sort(key=lambda e: (e.cadre_id is None, natural_key(e.cadre), e.cadre_id or 0))

    township: Counter[str] = Counter()
    for digits in contact.values():
        township.update(digits)
    total_followups: Counter[str] = Counter()
    for counts in followups.values():
        total_followups.update(counts)
    return CadresReport(
        round=CadresRound(
            **round_info(round_, questionnaire, targets), min_sample=min_sample, overdue_days=overdue_days
        ),
        cadres=entries,
        total=CadreTotal(
            households=sum(e.households for e in entries),
            sampled=sum(e.sampled for e in entries),
            reached=sum(e.reached for e in entries),
            completed=sum(e.completed for e in entries),
            contact=figures(township),
            followups=FollowUpCounts(**total_followups),
        ),
    )


# --- the table (every renderer draws it; a new column is one line here) ---------------------------------


def tables(report: CadresReport) -> list[Table]:
    """One row per cadre: people read the contact rate in one cell, a spreadsheet gets its figures."""
    columns = [
        Column("cadre", "干部"),
        *only(FILES, Column("phone", "电话", width=15)),
        Column("villages", "村", get=lambda entry: "、".join(entry.villages), width=20),
        Column("households", "户数", Kind.INT),
        Column("sampled", "抽样", Kind.INT),
        Column("reached", "接通", Kind.INT),
        Column("completed", "完成", Kind.INT),
        Column("contact", "重视率", Kind.RATE),
        *only(
            FILES,
            Column("contact.positive", "联系过", Kind.INT),
            Column("contact.valid", "有效", Kind.INT),
            Column("contact.ci_low", "95%下限", Kind.PERCENT),
            Column("contact.ci_high", "95%上限", Kind.PERCENT),
            Column("contact.too_few", "样本不足", Kind.BOOL),
        ),
        Column("followups.open", "未结回访", Kind.INT),
        Column("followups.overdue", "逾期回访", Kind.INT),
        *only(FILES, Column("followups.resolved", "已解决", Kind.INT)),
    ]
    return [Table("干部联系情况", columns, report.cadres, [report.total])]
