"""The roster as the office browses it: villages, households and cadres, searched and paged, numbers masked.

A township roster may hold 100,000 households, so the household list is paged by key (``id`` after or before
the page's edge, read along the primary key's index) rather than by an offset that would read and skip every
earlier row, and its count reads the households table alone, with no join. Searches:

- by village or cadre: an indexed equality (``households.village_id``, ``households.cadre_id``);
- by the household's name: a substring;
- by the last digits of the number (what a masked number shows: 138****1234): a suffix of the stored E.164.

Villages and cadres are a few hundred rows: they are paged by offset, with each page's household counts read
for that page's rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from campaigns.models import Cadre, DoNotCall, Household, PhoneStatus, Village
from campaigns.phones import mask
from reports.rows import Row

PER_PAGE = 50


@dataclass(kw_only=True)
class HouseholdRow(Row):
    id: int
    name: str | None
    phone: str  # masked
    village: str
    village_id: int
    cadre: str | None
    cadre_id: int | None
    phone_status: str


@dataclass(kw_only=True)
class HouseholdPage(Row):
    """One page of households, ``id`` ascending; ``after`` / ``before`` are the keys of the next and previous
    pages (None at either end)."""

    items: list[HouseholdRow]
    total: int
    after: int | None
    before: int | None


@dataclass(kw_only=True)
class VillageRow(Row):
    id: int
    name: str
    households: int


@dataclass(kw_only=True)
class CadreRow(Row):
    id: int
    name: str
    phone: str  # masked ("" when the roster gives none)
    households: int


def digits(text: str | None) -> str:
    return "".join(ch for ch in (text or "") if ch.isdigit())


def household_filters(
    *, village_id: int | None = None, cadre_id: int | None = None, name: str | None = None, phone: str | None = None
) -> list[ColumnElement[bool]]:
    """The WHERE conditions of a household search (see the module notes); empty filters are ignored."""
    conditions: list[ColumnElement[bool]] = []
    if village_id is not None:
        conditions.append(Household.village_id == village_id)
    if cadre_id is not None:
        conditions.append(Household.cadre_id == cadre_id)
    if name and name.strip():
        conditions.append(Household.name.contains(name.strip(), autoescape=True))
    suffix = digits(phone)
    if suffix:
        conditions.append(Household.phone.endswith(suffix, autoescape=True))
    return conditions


def household_page(
    session: Session,
    *,
    after: int | None = None,
    before: int | None = None,
    per_page: int = PER_PAGE,
    **filters: Any,
) -> HouseholdPage:
    """The households matching ``filters`` (see :func:`household_filters`) after the key ``after`` (or before
    ``before``), ``per_page`` of them."""
    conditions = household_filters(**filters)
    stmt = (
        select(
            Household.id,
            Household.name,
            Household.phone,
            Village.name,
            Household.village_id,
            Cadre.name,
            Household.cadre_id,
            Household.phone_status,
        )
        .join(Village, Village.id == Household.village_id)
        .outerjoin(Cadre, Cadre.id == Household.cadre_id)
        .where(*conditions)
    )
    if before is not None:
        rows = list(
            session.execute(stmt.where(Household.id < before).order_by(Household.id.desc()).limit(per_page + 1))
        )
        more_before = len(rows) > per_page
        rows = list(reversed(rows[:per_page]))
        more_after = True  # the page ``before`` came from
    else:
        if after is not None:
            stmt = stmt.where(Household.id > after)
        rows = list(session.execute(stmt.order_by(Household.id).limit(per_page + 1)))
        more_after = len(rows) > per_page
        rows = rows[:per_page]
        more_before = after is not None
    total = session.scalar(select(func.count()).select_from(Household).where(*conditions)) or 0
    items = [
        HouseholdRow(
            id=household_id,
            name=name,
            phone=mask(phone),
            village=village,
            village_id=village_id,
            cadre=cadre,
            cadre_id=cadre_id,
            phone_status=PhoneStatus(status).value,
        )
        for household_id, name, phone, village, village_id, cadre, cadre_id, status in rows
    ]
    return HouseholdPage(
        items=items,
        total=total,
        after=items[-1].id if items and more_after else None,
        before=items[0].id if items and more_before else None,
    )


def village_query(name: str | None = None) -> Select[tuple[Village]]:
    """Villages by name, optionally those whose name contains ``name``."""
    stmt = select(Village).order_by(Village.name, Village.id)
    if name and name.strip():
        stmt = stmt.where(Village.name.contains(name.strip(), autoescape=True))
    return stmt


def village_rows(session: Session, villages: list[Village]) -> list[VillageRow]:
    """``villages`` (one page) with their household counts."""
    counts = _counts(session, Household.village_id, [village.id for village in villages])
    return [VillageRow(id=v.id, name=v.name, households=counts.get(v.id, 0)) for v in villages]


def cadre_query(name: str | None = None) -> Select[tuple[Cadre]]:
    """Cadres by name, optionally those whose name contains ``name``."""
    stmt = select(Cadre).order_by(Cadre.name, Cadre.id)
    if name and name.strip():
        stmt = stmt.where(Cadre.name.contains(name.strip(), autoescape=True))
    return stmt


def cadre_rows(session: Session, cadres: list[Cadre]) -> list[CadreRow]:
    """``cadres`` (one page) with their household counts, numbers masked."""
    counts = _counts(session, Household.cadre_id, [cadre.id for cadre in cadres])
    return [
        CadreRow(id=c.id, name=c.name, phone=mask(c.phone) if c.phone else "", households=counts.get(c.id, 0))
        for c in cadres
    ]


def _counts(session: Session, column, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    return dict(session.execute(select(column, func.count()).where(column.in_(ids)).group_by(column)).all())


@dataclass(kw_only=True)
class RosterTotals(Row):
    villages: int
    households: int
    cadres: int
    do_not_call: int


def roster_totals(session: Session) -> RosterTotals:
    def count(model) -> int:
        return session.scalar(select(func.count()).select_from(model)) or 0

    return RosterTotals(
        villages=count(Village), households=count(Household), cadres=count(Cadre), do_not_call=count(DoNotCall)
    )
