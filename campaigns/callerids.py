"""The pool of caller IDs: numbers calls may show, given to a village or a round.

Residents answer a local number far more often than an unknown one, so a township with a number per village
(or per round) shows it. A call shows its village's caller ID, else its round's, else its Twilio account's
default number (TWILIO_FROM_NUMBER, or TWILIO_FROM_NUMBER_<NAME> of the account). A caller ID that belongs to
one Twilio account (``account``) is only shown on calls placed through that account (see
:func:`choose_caller_id`).

Services take a Session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.errors import SanlvError
from campaigns.models import CallerId, Round, Village
from campaigns.phones import PhoneNumberError, normalise
from campaigns.settings import Settings


class CallerIdError(SanlvError, ValueError):
    """A caller-ID request is invalid (bad number, unknown village, round or account). The message says why."""


@dataclass(frozen=True)
class CallerIdRow:
    number: str
    account: str | None
    label: str | None
    villages: list[str]
    rounds: list[int]


def _number(raw: str, option: str = "NUMBER") -> str:
    try:
        return normalise(raw)
    except PhoneNumberError as exc:
        raise CallerIdError(f"{option}: {exc.raw!r} is not a caller ID: {exc.reason_en}") from None


def check_account(settings: Settings | None, name: str | None, option: str = "--account") -> None:
    """Raise CallerIdError unless ``name`` is a configured Twilio account (or no account is configured yet
    and ``settings`` is None)."""
    if name is None or settings is None:
        return
    if name not in {a.name for a in settings.accounts}:
        known = ", ".join(a.name for a in settings.accounts) or "none configured"
        raise CallerIdError(f"{option}: {name!r} is not a Twilio account of this deployment ({known})")


def add_caller_id(
    session: Session, raw_number: str, *, account: str | None = None, label: str | None = None,
    settings: Settings | None = None,
) -> CallerId:
    """Add a number to the pool (idempotent for the same number, account and label)."""
    number = _number(raw_number)
    check_account(settings, account)
    existing = session.scalar(select(CallerId).where(CallerId.number == number))
    if existing is not None:
        if (existing.account, existing.label) != (account, label or existing.label):
            raise CallerIdError(f"NUMBER: {number} is already in the pool (account {existing.account or '-'})")
        return existing
    caller_id = CallerId(number=number, account=account, label=label)
    session.add(caller_id)
    session.flush()
    return caller_id


def find_caller_id(session: Session, raw_number: str, option: str = "NUMBER") -> CallerId:
    number = _number(raw_number, option)
    caller_id = session.scalar(select(CallerId).where(CallerId.number == number))
    if caller_id is None:
        raise CallerIdError(f"{option}: {number} is not in the caller-ID pool (add it with `sanlv callerid add`)")
    return caller_id


def assign_caller_id(
    session: Session, raw_number: str | None, *, village: str | None = None, round_id: int | None = None
) -> str:
    """Give a village (by name) or a round (by id) a caller ID from the pool; ``raw_number`` None takes it away.

    Returns:
        What was changed, e.g. ``village 东村``.
    """
    if (village is None) == (round_id is None):
        raise CallerIdError("name exactly one of --village or --round")
    caller_id = find_caller_id(session, raw_number) if raw_number is not None else None
    if village is not None:
        row = session.scalar(select(Village).where(Village.name == village.strip()))
        if row is None:
            raise CallerIdError(f"--village: {village!r} is not a village of the roster")
        row.caller_id_id = caller_id.id if caller_id else None
        return f"village {row.name}"
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise CallerIdError(f"--round: round {round_id}: no such round")
    if caller_id is not None and caller_id.account and round_.accounts and caller_id.account not in round_.accounts:
        raise CallerIdError(
            f"--round: round {round_id} dials through {', '.join(round_.accounts)}, "
            f"but {caller_id.number} belongs to account {caller_id.account}"
        )
    round_.caller_id_id = caller_id.id if caller_id else None
    return f"round {round_id}"


def list_caller_ids(session: Session) -> list[CallerIdRow]:
    """The pool, with the villages and rounds each number is given to."""
    rows = []
    villages: dict[int, list[str]] = {}
    for caller_id_id, name in session.execute(
        select(Village.caller_id_id, Village.name).where(Village.caller_id_id.is_not(None)).order_by(Village.name)
    ):
        villages.setdefault(caller_id_id, []).append(name)
    rounds: dict[int, list[int]] = {}
    for caller_id_id, round_id in session.execute(
        select(Round.caller_id_id, Round.id).where(Round.caller_id_id.is_not(None)).order_by(Round.id)
    ):
        rounds.setdefault(caller_id_id, []).append(round_id)
    for caller_id in session.scalars(select(CallerId).order_by(CallerId.number)):
        rows.append(
            CallerIdRow(
                caller_id.number, caller_id.account, caller_id.label,
                villages.get(caller_id.id, []), rounds.get(caller_id.id, []),
            )
        )
    return rows


def pool_size(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(CallerId)) or 0


def choose_caller_id(
    candidates: Sequence[tuple[str | None, str | None]], allowed_accounts: Sequence[str]
) -> tuple[str | None, str | None]:
    """The caller ID a call shows, and the account it must then go through.

    Args:
        candidates: ``(number, account)`` of the village's caller ID, then the round's (None where unset).
        allowed_accounts: the accounts the call may use.

    Returns:
        ``(number, account)`` of the first candidate the call may show (its account among the allowed ones,
        or it has none), else ``(None, None)``: the account's default number, any allowed account.
    """
    for number, account in candidates:
        if number is None:
            continue
        if account is None or account in allowed_accounts:
            return number, account
    return None, None
