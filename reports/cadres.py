"""The supervisors' view (纪委/抽查组): per cadre, the households assigned, how many were reached, the contact
rate (重视率) measured in the round, the share of households that confirm a delivery of publicity material,
and their follow-ups (open, overdue).

The contact rate is what the residents of a cadre's households answered to the ``cadre_contact`` question,
over completed interviews, with its Wilson interval and the "too few to judge" mark. It is for supervisors
only: no cadre-facing report or endpoint includes it.

The delivery check (``delivery``: "今年有没有人上门给您送过平安宣传资料?") tests the cadre's claim to have
delivered material door to door (回执单). Per cadre (see :class:`DeliveryFigures`): ``confirmed`` households
answered 1 (有), ``valid`` is every answer from a completed interview except that 记不清 (0) is left out when
the round excludes 说不清 from its rates (by default it counts as not confirmed, as in the rates), with its
Wilson interval and the too-few mark. A cadre is flagged ``check`` (需核查回执) when the answers are enough to
judge (not too few) and the upper end of the cadre's 95% interval is below the township's share: even the
most favourable reading of the cadre's households is below what the township's residents say. The township
share includes the cadre's own households, which only makes a flag harder to earn. The figures are ``null``
for a round whose questionnaire does not ask the delivery check (``round create --no-delivery-check``). Like
the contact rate, they are for supervisors only.

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
from campaigns.questionnaire import DELIVERY_STEP, DELIVERY_UNSURE, DELIVERY_YES, from_version
from reports.columns import FILES, READING, Column, Kind, Table, only
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
from reports.stats import wilson_interval

CONTACT_RATE = "cadre_contact"
UNASSIGNED = "未分配"


@dataclass(kw_only=True)
class DeliveryFigures(Row):
    """How many of a cadre's households confirm a delivery of publicity material (see the module notes)."""

    positive: int  # confirmed: answered 1 (有)
    valid: int
    rate: float | None  # positive / valid: the share that confirm
    ci_low: float | None
    ci_high: float | None
    too_few: bool  # valid below the minimum sample: too few to judge
    unsure: int  # answered 0 (记不清), counted in valid unless the round excludes 说不清
    check: bool = False  # well below the township: ci_high below the township's share (never when too few)


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
    delivery: DeliveryFigures | None  # None when the round does not ask the delivery check
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
    delivery: DeliveryFigures | None
    followups: FollowUpCounts
    # Not in the JSON: the total names no cadre, phone or village.
    cadre_id: ClassVar[None] = None
    phone: ClassVar[None] = None
    villages: ClassVar[tuple[str, ...]] = ()


@dataclass(kw_only=True)
class CadresRound(RoundInfo):
    min_sample: int
    overdue_days: int
    delivery_check: bool  # the round asks whether publicity material was delivered


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
    delivery_check = questionnaire.has_step(DELIVERY_STEP)

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

    questions = ([contact_step.key] if contact_step is not None else []) + ([DELIVERY_STEP] if delivery_check else [])
    answered: dict[str, dict[int | None, Counter[str]]] = {question: {} for question in questions}
    if questions:
        for cadre_id, question, digit, count in session.execute(
            select(cadre_of, Answer.question, Answer.digit, func.count())
            .select_from(Answer)
            .join(Response, Response.id == Answer.response_id)
            .join(RoundTarget, RoundTarget.id == Response.target_id)
            .outerjoin(Household, Household.id == RoundTarget.household_id)
            .where(
                Answer.round_id == round_id,
                Answer.question.in_(questions),
                Response.status == ResponseStatus.COMPLETED,
            )
            .group_by(cadre_of, Answer.question, Answer.digit)
        ):
            answered[question].setdefault(cadre_id, Counter())[digit] += count
    contact = answered.get(contact_step.key, {}) if contact_step is not None else {}
    delivered = answered.get(DELIVERY_STEP, {})

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

    township_delivery: Counter[str] = Counter()
    for digits in delivered.values():
        township_delivery.update(digits)
    delivery_total = (
        delivery_figures(township_delivery, round_.exclude_unsure, min_sample) if delivery_check else None
    )

    def delivery(digits: Counter[str]) -> DeliveryFigures | None:
        if delivery_total is None:
            return None
        return delivery_figures(digits, round_.exclude_unsure, min_sample, township=delivery_total.rate)

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
                delivery=delivery(delivered.get(cadre_id, Counter())),
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
            **round_info(round_, questionnaire, targets),
            min_sample=min_sample,
            overdue_days=overdue_days,
            delivery_check=delivery_check,
        ),
        cadres=entries,
        total=CadreTotal(
            households=sum(e.households for e in entries),
            sampled=sum(e.sampled for e in entries),
            reached=sum(e.reached for e in entries),
            completed=sum(e.completed for e in entries),
            contact=figures(township),
            delivery=delivery_total,
            followups=FollowUpCounts(**total_followups),
        ),
    )


def delivery_figures(
    digits: Counter[str], exclude_unsure: bool, min_sample: int, *, township: float | None = None
) -> DeliveryFigures:
    """The delivery check's figures from the answers (counted by key pressed) of one cadre's households, or of
    the township; ``township`` (the township's share) sets ``check`` (see the module notes)."""
    answered = sum(digits.values())
    unsure = digits.get(DELIVERY_UNSURE, 0)
    positive = digits.get(DELIVERY_YES, 0)
    valid = answered - unsure if exclude_unsure else answered
    interval = wilson_interval(positive, valid)
    too_few = valid < min_sample
    return DeliveryFigures(
        positive=positive,
        valid=valid,
        rate=positive / valid if valid else None,
        ci_low=interval[0] if interval else None,
        ci_high=interval[1] if interval else None,
        too_few=too_few,
        unsure=unsure,
        check=bool(interval and township is not None and not too_few and interval[1] < township),
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
        *(delivery_columns() if report.round.delivery_check else []),
        Column("followups.open", "未结回访", Kind.INT),
        Column("followups.overdue", "逾期回访", Kind.INT),
        *only(FILES, Column("followups.resolved", "已解决", Kind.INT)),
    ]
    return [Table("干部联系情况", columns, report.cadres, [report.total])]


def delivery_columns() -> list[Column]:
    """The delivery check's columns: the share with its interval in one cell for people, its figures one per
    column in a spreadsheet, and the flag everywhere."""
    return [
        *only(READING, Column("delivery", "资料送达确认率", Kind.SHARE)),
        *only(
            FILES,
            Column("delivery.positive", "确认送达", Kind.INT),
            Column("delivery.valid", "送达有效回答", Kind.INT),
            Column("delivery.rate", "送达确认率", Kind.PERCENT),
            Column("delivery.ci_low", "送达95%下限", Kind.PERCENT),
            Column("delivery.ci_high", "送达95%上限", Kind.PERCENT),
            Column("delivery.too_few", "送达样本不足", Kind.BOOL),
        ),
        Column(
            "delivery.check",
            "需核查回执",
            Kind.BOOL,
            alert=lambda entry: bool(entry.delivery and entry.delivery.check),
            alert_class="flag",
        ),
    ]
