"""Cadre follow-up lists (整改回访) and the tracking of each visit.

A follow-up is one resident who gave a dissatisfied answer (security or satisfaction: a key that is neither
positive nor "说不清", i.e. 3/4 in the default questionnaire) **and** pressed "visit: yes". It goes on the list
of the cadre responsible for the household. Residents who declined a visit are counted per village, never
listed.

This module only reads. The items are created from the answers, and visits recorded, by the follow-up
workflow in ``campaigns.followups``. A list is a :class:`FollowUpReport` (typed rows whose ``to_json()`` is the
``report followups --format json`` contract); :func:`tables` is its column specification.

An item's ``created_at`` is the time the resident asked for the visit (their "visit: yes" answer), so that
"overdue" counts from the request, not from whenever somebody first opened a list. An item is **overdue**
when it is still ``pending`` more than ``overdue_days`` (``SANLV_FOLLOWUP_OVERDUE_DAYS``) after that.

Status changes, each recorded as a :class:`FollowUpEvent` with its note, actor and time::

    pending -> visited | unreachable
    visited -> resolved | unreachable
    resolved, unreachable: final
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.followups import (
    CONCERN_STEP,
    OPEN_STATUSES,
    STATUS_LABELS,
    VISIT_NO,
    VISIT_STEP,
    VISIT_YES,
)
from campaigns.models import (
    Answer,
    Cadre,
    FollowUp,
    FollowUpEvent,
    FollowUpStatus,
    Household,
    Response,
    Round,
    RoundTarget,
    Village,
)
from campaigns.phones import mask, national
from campaigns.questionnaire import Questionnaire, from_version
from campaigns.settings import Settings
from reports.columns import FILES, Column, Kind, Table, only
from reports.rates import (
    VILLAGE,
    Ref,
    ReportError,
    RoundInfo,
    effective_targets,
    natural_key,
    round_info,
    target_overrides,
)
from reports.rows import INLINE, OMIT_NONE, LazyRows, Row, to_json

log = logging.getLogger("sanlv.reports")

DEFAULT_OVERDUE_DAYS: int = Settings.followup_overdue_days


# --- the rows -------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class FollowUpItem(Row):
    """One resident to visit. ``phone`` is masked unless the list is one cadre's own."""

    id: int
    round_id: int
    cadre: str | None
    cadre_id: int | None
    village: str
    village_id: int
    household: str | None
    household_id: int | None  # None once the round was retained (campaigns.privacy)
    phone: str
    negatives: list[str]  # the rate keys answered negatively
    concern: str | None  # the concern's meaning in the round's questionnaire
    concern_key: str | None
    status: str
    status_label: str
    note: str | None
    created_at: datetime  # when the resident asked for the visit
    updated_at: datetime
    overdue: bool


@dataclass(kw_only=True)
class HistoryEntry(Row):
    """One status change of an item."""

    status: str
    status_label: str
    note: str | None
    actor: str | None
    at: datetime


@dataclass(kw_only=True)
class FollowUpDetail(Row):
    """One item and every change of its status, oldest first."""

    item: FollowUpItem = field(metadata=INLINE)
    history: list[HistoryEntry]


@dataclass(kw_only=True)
class CadreItem(Row):
    """An item of a cadre's own list, which spans rounds: it names its round."""

    item: FollowUpItem = field(metadata=INLINE)
    round: str | None


@dataclass(kw_only=True)
class FollowUpCounts(Row):
    """Items by status (the fields between ``total`` and ``open`` are FollowUpStatus values)."""

    total: int = 0
    pending: int = 0
    visited: int = 0
    resolved: int = 0
    unreachable: int = 0
    open: int = 0  # pending or visited
    overdue: int = 0


@dataclass(kw_only=True)
class VillageFollowUps(Row):
    """One village's residents who asked for a visit or declined one, and its items by status."""

    village: str
    village_id: int
    requested: int = 0
    declined: int = 0  # counted, never listed
    pending: int = 0
    visited: int = 0
    resolved: int = 0
    unreachable: int = 0
    open: int = 0
    overdue: int = 0


@dataclass(kw_only=True)
class FollowUpRound(RoundInfo):
    overdue_days: int
    concern_labels: dict[str, str]
    status_labels: dict[str, str]


@dataclass(kw_only=True)
class FollowUpReport(Row):
    """The ``report followups --format json`` contract: ``{"round": {...}, "items": [...], ...}``.

    ``items`` is a list, or rows read from the database each time they are iterated (``stream=True``);
    ``villages`` is None on a cadre's own list.
    """

    round: FollowUpRound
    cadre: Ref | None
    phones_masked: bool
    items: list[FollowUpItem] | LazyRows[FollowUpItem]
    villages: list[VillageFollowUps] | None = field(default=None, metadata=OMIT_NONE)

    @cached_property
    def summary(self) -> FollowUpCounts:
        return summarise(self.items)

    def to_json(self) -> dict[str, Any]:
        out = {
            "round": self.round.to_json(),
            "cadre": to_json(self.cadre),
            "phones_masked": self.phones_masked,
            "items": to_json(self.items),
            "summary": self.summary.to_json(),
        }
        if self.villages is not None:
            out["villages"] = to_json(self.villages)
        return out


@dataclass(kw_only=True)
class CadreListReport(Row):
    """A cadre's own list (full phone numbers), across rounds unless ``round_id`` is given."""

    cadre: Ref
    round_id: int | None
    overdue_days: int
    status_labels: dict[str, str]
    phones_masked: bool
    items: list[CadreItem]
    summary: FollowUpCounts


def followup_history(session: Session, item_id: int) -> list[HistoryEntry]:
    """Every status change of an item, oldest first."""
    events = session.scalars(
        select(FollowUpEvent).where(FollowUpEvent.follow_up_id == item_id).order_by(FollowUpEvent.id)
    ).all()
    return [
        HistoryEntry(
            status=event.status.value,
            status_label=STATUS_LABELS[event.status],
            note=event.note,
            actor=event.actor,
            at=event.created_at,
        )
        for event in events
    ]


def followup_detail(
    session: Session, item_id: int, *, reveal_phones: bool = False, overdue_days: int = DEFAULT_OVERDUE_DAYS
) -> FollowUpDetail:
    """One item (phone masked unless ``reveal_phones``) and its history.

    Raises:
        ReportError: no item has this id.
    """
    items = list(iter_followup_items(session, item_id=item_id, reveal_phones=reveal_phones, overdue_days=overdue_days))
    if not items:
        raise ReportError(f"回访事项 {item_id} 不存在 / follow-up {item_id} does not exist")
    return FollowUpDetail(item=items[0], history=followup_history(session, item_id))


# --- lists ----------------------------------------------------------------------------------------------


def is_overdue(status: FollowUpStatus | str, created_at: datetime, now: datetime, overdue_days: int) -> bool:
    """Still pending more than ``overdue_days`` after the resident asked for the visit."""
    return FollowUpStatus(status) == FollowUpStatus.PENDING and now - created_at > timedelta(days=overdue_days)


def overdue_condition(now: datetime, overdue_days: int) -> ColumnElement[bool]:
    """:func:`is_overdue` as a SQL condition on ``FollowUp``."""
    return and_(FollowUp.status == FollowUpStatus.PENDING, FollowUp.created_at < now - timedelta(days=overdue_days))


def iter_followup_items(
    session: Session,
    *,
    round_id: int | None = None,
    cadre_id: int | None = None,
    item_id: int | None = None,
    reveal_phones: bool = False,
    statuses: tuple[FollowUpStatus, ...] | None = None,
    overdue_only: bool = False,
    now: datetime | None = None,
    overdue_days: int = DEFAULT_OVERDUE_DAYS,
    questionnaire: Questionnaire | None = None,
) -> Iterator[FollowUpItem]:
    """The items, oldest request first, streamed from the database (flat memory for any list size).

    Args:
        round_id, cadre_id, item_id: filters (all optional).
        reveal_phones: full numbers (a cadre's own list); otherwise masked, 138****1234.
        statuses: only items in these statuses.
        overdue_only: only overdue items.
        questionnaire: labels the concern key; the round's questionnaire when not given.
    """
    now = now or clock.now()
    stmt = (
        select(
            FollowUp.id,
            FollowUp.round_id,
            FollowUp.cadre_id,
            Cadre.name,
            Village.id,
            Village.name,
            FollowUp.household_id,
            Household.name,
            Household.phone,
            FollowUp.negatives,
            FollowUp.concern,
            FollowUp.status,
            FollowUp.note,
            FollowUp.created_at,
            FollowUp.updated_at,
        )
        .select_from(FollowUp)
        # The village through the item's target (equal to its household's): a retained item has no household.
        .join(Response, Response.id == FollowUp.response_id)
        .join(RoundTarget, RoundTarget.id == Response.target_id)
        .join(Village, Village.id == RoundTarget.village_id)
        .outerjoin(Household, Household.id == FollowUp.household_id)
        .outerjoin(Cadre, Cadre.id == FollowUp.cadre_id)
        .order_by(FollowUp.created_at, FollowUp.id)
    )
    if round_id is not None:
        stmt = stmt.where(FollowUp.round_id == round_id)
    if cadre_id is not None:
        stmt = stmt.where(FollowUp.cadre_id == cadre_id)
    if item_id is not None:
        stmt = stmt.where(FollowUp.id == item_id)
    if statuses:
        stmt = stmt.where(FollowUp.status.in_(statuses))
    if overdue_only:
        stmt = stmt.where(overdue_condition(now, overdue_days))
    concerns = _ConcernLabels(session, questionnaire)
    for row in session.execute(stmt.execution_options(yield_per=1000)):
        (
            item,
            round_of,
            cadre,
            cadre_name,
            village_id,
            village,
            household_id,
            household,
            phone,
            negatives,
            concern,
            status,
            note,
            created_at,
            updated_at,
        ) = row
        yield FollowUpItem(
            id=item,
            round_id=round_of,
            cadre=cadre_name,
            cadre_id=cadre,
            village=village,
            village_id=village_id,
            household=household,
            household_id=household_id,
            phone="" if phone is None else national(phone) if reveal_phones else mask(phone),
            negatives=list(negatives),
            concern=concerns.label(round_of, concern),
            concern_key=concern,
            status=FollowUpStatus(status).value,
            status_label=STATUS_LABELS[FollowUpStatus(status)],
            note=note,
            created_at=created_at,
            updated_at=updated_at,
            overdue=is_overdue(status, created_at, now, overdue_days),
        )


class _ConcernLabels:
    """The meaning of a concern key in each round's questionnaire (looked up once per round)."""

    def __init__(self, session: Session, questionnaire: Questionnaire | None):
        self._session = session
        self._fixed = questionnaire
        self._by_round: dict[int, Mapping[str, str]] = {}

    def label(self, round_id: int, key: str | None) -> str | None:
        if key is None:
            return None
        if round_id not in self._by_round:
            questionnaire = self._fixed
            if questionnaire is None:
                round_ = self._session.get(Round, round_id)
                questionnaire = from_version(round_.questionnaire) if round_ is not None else None
            options = (
                questionnaire.step(CONCERN_STEP).options
                if questionnaire and questionnaire.has_step(CONCERN_STEP)
                else {}
            )
            self._by_round[round_id] = options
        return self._by_round[round_id].get(key, key)


def followup_report(
    session: Session,
    round_id: int,
    *,
    cadre_id: int | None = None,
    own: bool = False,
    statuses: tuple[FollowUpStatus, ...] | None = None,
    overdue_only: bool = False,
    now: datetime | None = None,
    overdue_days: int = DEFAULT_OVERDUE_DAYS,
    stream: bool = False,
) -> FollowUpReport:
    """The follow-up list of a round.

    Args:
        cadre_id: only this cadre's items.
        own: the list is the cadre's own (phones in full, and no per-village counts of other residents);
            only meaningful with ``cadre_id``.
        stream: leave the items in the database, read as they are rendered (flat memory for a file of any
            length; the session must stay open until then).

    Returns:
        ``round`` (with the labels a reader needs), ``cadre`` (or None), ``phones_masked``, ``items``,
        ``summary`` (counts by status, open and overdue), and — on office lists — ``villages``: per village
        the residents who asked for a visit, who declined one (counted, never listed), and the items by state.

    Raises:
        ReportError: unknown round or cadre.
    """
    now = now or clock.now()
    header = followup_header(session, round_id, cadre_id=cadre_id, overdue_days=overdue_days)
    reveal = own and cadre_id is not None
    questionnaire = from_version(session.get(Round, round_id).questionnaire)

    def items() -> Iterator[FollowUpItem]:
        return iter_followup_items(
            session,
            round_id=round_id,
            cadre_id=cadre_id,
            reveal_phones=reveal,
            statuses=statuses,
            overdue_only=overdue_only,
            now=now,
            overdue_days=overdue_days,
            questionnaire=questionnaire,
        )

    return FollowUpReport(
        **header,
        phones_masked=not reveal,
        items=LazyRows(items) if stream else list(items()),
        villages=None
        if reveal
        else village_followups(session, round_id, cadre_id=cadre_id, now=now, overdue_days=overdue_days),
    )


def followup_header(
    session: Session, round_id: int, *, cadre_id: int | None = None, overdue_days: int = DEFAULT_OVERDUE_DAYS
) -> dict[str, Any]:
    """The ``round`` and ``cadre`` of a follow-up list. Raises ReportError for an unknown round or cadre."""
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise ReportError(f"round {round_id} does not exist")
    cadre = None
    if cadre_id is not None:
        found = session.get(Cadre, cadre_id)
        if found is None:
            raise ReportError(f"cadre {cadre_id} does not exist")
        cadre = Ref(id=found.id, name=found.name)
    questionnaire = from_version(round_.questionnaire)
    concern = questionnaire.step(CONCERN_STEP).options if questionnaire.has_step(CONCERN_STEP) else {}
    section = FollowUpRound(
        **round_info(round_, questionnaire, effective_targets(questionnaire, target_overrides(round_))),
        overdue_days=overdue_days,
        concern_labels=dict(concern),
        status_labels=status_labels(),
    )
    return {"round": section, "cadre": cadre}


def status_labels() -> dict[str, str]:
    return {status.value: label for status, label in STATUS_LABELS.items()}


def summarise(items: Iterable[FollowUpItem]) -> FollowUpCounts:
    """Counts of items by status, plus ``total``, ``open`` (pending or visited) and ``overdue``."""
    counts: Counter[str] = Counter()
    overdue = 0
    for item in items:
        counts[item.status] += 1
        overdue += item.overdue
    return FollowUpCounts(
        total=sum(counts.values()),
        **{status.value: counts[status.value] for status in FollowUpStatus},
        open=sum(counts[status.value] for status in OPEN_STATUSES),
        overdue=overdue,
    )


def village_followups(
    session: Session,
    round_id: int,
    *,
    cadre_id: int | None = None,
    now: datetime | None = None,
    overdue_days: int = DEFAULT_OVERDUE_DAYS,
) -> list[VillageFollowUps]:
    """Per village: residents who asked for a visit or declined one (their answers, whether or not the interview
    was completed, as for the items), and the items by state.

    Only villages with at least one visit answer or item are listed, by name.
    """
    now = now or clock.now()
    visits = (
        select(RoundTarget.village_id, Answer.digit, func.count())
        .select_from(Answer)
        .join(Response, Response.id == Answer.response_id)
        .join(RoundTarget, RoundTarget.id == Response.target_id)
        .outerjoin(Household, Household.id == RoundTarget.household_id)
        .where(Answer.round_id == round_id, Answer.question == VISIT_STEP, Answer.digit.in_((VISIT_YES, VISIT_NO)))
        .group_by(RoundTarget.village_id, Answer.digit)
    )
    overdue = case((overdue_condition(now, overdue_days), 1), else_=0)
    items = (
        select(RoundTarget.village_id, FollowUp.status, func.count(), func.sum(overdue))
        .select_from(FollowUp)
        .join(Response, Response.id == FollowUp.response_id)
        .join(RoundTarget, RoundTarget.id == Response.target_id)
        .where(FollowUp.round_id == round_id)
        .group_by(RoundTarget.village_id, FollowUp.status)
    )
    if cadre_id is not None:
        visits = visits.where(func.coalesce(Household.cadre_id, RoundTarget.cadre_id) == cadre_id)
        items = items.where(FollowUp.cadre_id == cadre_id)
    rows: dict[int, Counter[str]] = {}
    for village_id, digit, count in session.execute(visits):
        rows.setdefault(village_id, Counter())["requested" if digit == VISIT_YES else "declined"] += count
    for village_id, status, count, late in session.execute(items):
        entry = rows.setdefault(village_id, Counter())
        entry[FollowUpStatus(status).value] += count
        if FollowUpStatus(status) in OPEN_STATUSES:
            entry["open"] += count
        entry["overdue"] += int(late or 0)
    if not rows:
        return []
    names = dict(session.execute(select(Village.id, Village.name).where(Village.id.in_(rows))).all())
    out = [
        VillageFollowUps(village=names[village_id], village_id=village_id, **counts)
        for village_id, counts in rows.items()
    ]
    return sorted(out, key=lambda entry: (natural_key(entry.village), entry.village_id))


def cadre_list(
    session: Session,
    cadre_id: int,
    *,
    round_id: int | None = None,
    statuses: tuple[FollowUpStatus, ...] | None = None,
    now: datetime | None = None,
    overdue_days: int = DEFAULT_OVERDUE_DAYS,
) -> CadreListReport:
    """A cadre's own list, across rounds unless ``round_id`` is given: full phone numbers, nothing else.

    Raises:
        ReportError: unknown cadre or round.
    """
    now = now or clock.now()
    cadre = session.get(Cadre, cadre_id)
    if cadre is None:
        raise ReportError(f"cadre {cadre_id} does not exist")
    if round_id is not None and session.get(Round, round_id) is None:
        raise ReportError(f"round {round_id} does not exist")
    items = list(
        iter_followup_items(
            session,
            round_id=round_id,
            cadre_id=cadre_id,
            reveal_phones=True,
            statuses=statuses,
            now=now,
            overdue_days=overdue_days,
        )
    )
    rounds = dict(session.execute(select(Round.id, Round.name).where(Round.id.in_({i.round_id for i in items}))).all())
    return CadreListReport(
        cadre=Ref(id=cadre.id, name=cadre.name),
        round_id=round_id,
        overdue_days=overdue_days,
        status_labels=status_labels(),
        phones_masked=False,
        items=[CadreItem(item=item, round=rounds.get(item.round_id)) for item in items],
        summary=summarise(items),
    )


# --- the tables (every renderer draws these; a new column is one line here) --------------------------

# Per village, as (field, title).
VILLAGE_COUNTS = (
    ("requested", "要求回访"),
    ("declined", "不需回访"),
    ("pending", "待走访"),
    ("visited", "已走访"),
    ("resolved", "已解决"),
    ("unreachable", "无法联系"),
    ("overdue", "逾期"),
)


def tables(report: FollowUpReport) -> list[Table]:
    """The items, and on office lists the counts per village."""
    labels = report.round.rate_labels
    items = Table(
        "整改回访",
        [
            Column("id", "编号", Kind.INT, width=8),
            VILLAGE,
            Column("household", "户主", width=10),
            Column("phone", "电话", width=15),
            Column("cadre", "包户干部", width=10),
            Column("negatives", "不满意", get=lambda item: "、".join(labels.get(k, k) for k in item.negatives), width=18),
            Column("concern", "担心的问题", width=12),
            Column("status_label", "状态", width=10),
            Column("created_at", "提出时间", Kind.DATETIME),
            *only(FILES, Column("updated_at", "更新时间", Kind.DATETIME)),
            Column("overdue", "逾期", Kind.BOOL, width=6, alert=lambda item: item.overdue, alert_class="overdue"),
            # The printed page goes round a meeting: the cadres' visit notes stay off it.
            *only(frozenset({"table", "csv", "xlsx"}), Column("note", "备注", width=40)),
        ],
        report.items,
        freeze="A2",
    )
    if report.villages is None:
        return [items]
    counts = Table(
        "各村回访", [VILLAGE, *(Column(key, title, Kind.INT) for key, title in VILLAGE_COUNTS)], report.villages
    )
    return [items, counts]
