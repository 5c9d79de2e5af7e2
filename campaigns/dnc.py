"""The do-not-call list: numbers never dialled again, in any round.

A resident gets on the list by pressing 9 during a survey (``campaigns.interview``), or the office adds a number
(a resident asked by other means). The office may take a number off again, giving the reason (the resident
asked to take part after all). The claim that places a call checks the list itself, so a number added here is
not dialled from that moment on, whichever round it is in.

Numbers are stored in E.164 (:func:`campaigns.phones.normalise`), so ``138 1234 5678``, ``+86 13812345678``
and ``13812345678`` are one entry. Services take a Session and never commit; the caller owns the transaction
(and records the change in the audit log in it).
"""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from campaigns.errors import SanlvError
from campaigns.models import DoNotCall
from campaigns.phones import PhoneNumberError, normalise

REASON_MAX_LENGTH = 200  # DoNotCall.reason is String(200)


class DncError(SanlvError, ValueError):
    """A do-not-call change cannot be made. ``field`` names the input at fault (``phone`` or ``reason``)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def parse_phone(raw: str) -> str:
    """``raw`` as E.164; DncError (field ``phone``) naming why it is not a number that can be called."""
    try:
        return normalise(raw)
    except PhoneNumberError as exc:
        raise DncError(f"号码 {exc.raw!r}：{exc.reason_zh} / number {exc.raw!r}: {exc.reason_en}", "phone") from None


def _reason(text: str | None) -> str:
    reason = " ".join((text or "").split())
    if not reason:
        raise DncError("请填写原因 / a reason is required", "reason")
    if len(reason) > REASON_MAX_LENGTH:
        raise DncError(
            f"原因不能超过 {REASON_MAX_LENGTH} 字 / the reason is longer than {REASON_MAX_LENGTH} characters", "reason"
        )
    return reason


def find(session: Session, phone: str) -> DoNotCall | None:
    """The entry of ``phone`` (any written form), or None when the number is not on the list."""
    return session.get(DoNotCall, parse_phone(phone))


def add(session: Session, phone: str, reason: str, *, round_id: int | None = None) -> DoNotCall:
    """Put ``phone`` on the list.

    Raises:
        DncError: the number is not callable, the reason is empty or too long, or the number is already on the
            list (its entry is left as it was).
    """
    number = parse_phone(phone)
    why = _reason(reason)
    if session.get(DoNotCall, number) is not None:
        raise DncError(f"号码 {phone.strip()} 已在免打扰名单上 / {number} is already on the do-not-call list", "phone")
    entry = DoNotCall(phone=number, reason=why, round_id=round_id)
    session.add(entry)
    session.flush()
    return entry


def remove(session: Session, phone: str, reason: str) -> DoNotCall:
    """Take ``phone`` off the list; it may be dialled again by rounds sampled from now on.

    ``reason`` is required (the caller records it with the change, e.g. in the audit log). Returns the removed
    entry, detached.

    Raises:
        DncError: the number is not on the list, or the reason is empty or too long.
    """
    number = parse_phone(phone)
    _reason(reason)  # checked before anything changes; the caller records it with the change
    entry = session.get(DoNotCall, number)
    if entry is None:
        raise DncError(f"号码 {phone.strip()} 不在免打扰名单上 / {number} is not on the do-not-call list", "phone")
    session.delete(entry)
    session.flush()
    return entry


def query(*, suffix: str | None = None) -> Select[tuple[DoNotCall]]:
    """The entries, newest first (a statement: page it, count it, or run it).

    Args:
        suffix: only numbers ending in these digits (what the office reads off a masked number, 1234).
    """
    stmt = select(DoNotCall).order_by(DoNotCall.created_at.desc(), DoNotCall.phone)
    if suffix:
        digits = "".join(ch for ch in suffix if ch.isdigit())
        if digits:
            stmt = stmt.where(DoNotCall.phone.endswith(digits, autoescape=True))
    return stmt


def entries(session: Session, **filters) -> list[DoNotCall]:
    """Every entry matching :func:`query`'s filters, newest first."""
    return list(session.scalars(query(**filters)))
