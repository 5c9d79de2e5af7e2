"""The do-not-call list: numbers never dialled again, in any round.

A number gets on the list when a resident presses 9 during a survey (source ``keypad``), when the office adds
it (``office``: the web page, ``sanlv dnc add``, ``sanlv household forget``) or imports a list (``import``).
The office may take a number off again, giving the reason (the resident asked to take part after all). Every
change is kept in the list's history (``do_not_call_events``: added, removed, forgotten; by whom, why, when).

The list holds from the moment it changes, whichever round a number is in: the dialler's claim excludes numbers
on the list, the placing step checks again just before it dials, an inbound call from a listed number takes no
interview, and a target still waiting in any round is finished as ``opted_out`` here at once
(campaigns.calls).

Numbers are stored in E.164 (:func:`campaigns.phones.normalise`), so ``138 1234 5678``, ``+86 13812345678``
and ``13812345678`` are one entry, and each entry carries the keyed hash of its number (campaigns.hashing).
Services take a Session and never commit; the caller owns the transaction (and records the change in the audit
log in it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns.calls import finish_listed_targets
from campaigns.errors import SanlvError
from campaigns.hashing import phone_hash
from campaigns.models import DncAction, DncSource, DoNotCall, DoNotCallEvent
from campaigns.phones import PhoneNumberError, mask, normalise
from campaigns.roster import RosterError, RosterLimits, RowProblem, _header_key, read_cells

REASON_MAX_LENGTH = 200  # DoNotCall.reason is String(200)
KEYPAD_REASON = "pressed 9 during the survey"

SOURCE_LABELS = {DncSource.KEYPAD: "按键9", DncSource.OFFICE: "办公室", DncSource.IMPORT: "导入"}
ACTION_LABELS = {DncAction.ADDED: "加入", DncAction.REMOVED: "移出", DncAction.FORGOTTEN: "号码已删除"}


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


def check_reason(text: str | None) -> str:
    """``text`` as a reason (whitespace collapsed); DncError (field ``reason``) if it is empty or too long."""
    return _reason(text)


def _entry_of(session: Session, number: str) -> DoNotCall | None:
    """The entry of an E.164 number: by the number, or by its hash when the number was forgotten."""
    return session.scalar(
        select(DoNotCall).where(or_(DoNotCall.phone == number, DoNotCall.phone_hash == phone_hash(session, number)))
    )


def find(session: Session, phone: str) -> DoNotCall | None:
    """The entry of ``phone`` (any written form), or None when the number is not on the list."""
    return _entry_of(session, parse_phone(phone))


def is_listed(session: Session, phone: str) -> bool:
    """Whether an E.164 number is on the list (by number or, once forgotten, by its keyed hash)."""
    return _entry_of(session, phone) is not None


def _event(
    session: Session,
    entry_hash: str,
    number: str | None,
    action: DncAction,
    reason: str,
    *,
    source: DncSource | None,
    actor: str | None,
    round_id: int | None = None,
) -> None:
    session.add(
        DoNotCallEvent(
            phone_hash=entry_hash,
            phone_masked=mask(number) if number else None,
            action=action,
            source=source,
            reason=reason[:REASON_MAX_LENGTH],
            actor=actor,
            round_id=round_id,
        )
    )


def _insert(
    session: Session, number: str, reason: str, source: DncSource, actor: str | None, round_id: int | None
) -> DoNotCall:
    entry = DoNotCall(
        phone=number, phone_hash=phone_hash(session, number), source=source, reason=reason, round_id=round_id,
        actor=actor,
    )  # fmt: skip
    session.add(entry)
    session.flush()
    _event(session, entry.phone_hash, number, DncAction.ADDED, reason, source=source, actor=actor, round_id=round_id)
    finish_listed_targets(session, number)
    return entry


def add(
    session: Session,
    phone: str,
    reason: str,
    *,
    source: DncSource = DncSource.OFFICE,
    actor: str | None = None,
    round_id: int | None = None,
) -> DoNotCall:
    """Put ``phone`` on the list; targets waiting for it in any round end as ``opted_out`` at once.

    Raises:
        DncError: the number is not callable, the reason is empty or too long, or the number is already on the
            list (its entry is left as it was).
    """
    number = parse_phone(phone)
    why = _reason(reason)
    if _entry_of(session, number) is not None:
        raise DncError(
            f"号码 {phone.strip()} 已在免打扰名单上 / {mask(number)} is already on the do-not-call list", "phone"
        )
    return _insert(session, number, why, source, actor, round_id)


def add_from_keypad(session: Session, number: str, round_id: int | None, *, reason: str = KEYPAD_REASON) -> None:
    """The resident pressed 9 (in a survey, or a voice notice): put the (E.164) number on the list unless it is
    there already.

    Safe against a concurrent addition of the same number (the loser changes nothing).
    """
    if _entry_of(session, number) is not None:
        return
    try:
        with session.begin_nested():
            _insert(session, number, reason[:REASON_MAX_LENGTH], DncSource.KEYPAD, None, round_id)
    except IntegrityError:
        pass


def relist(session: Session, number: str) -> bool:
    """A forgotten number (kept as its hash only) came back, e.g. in a roster: store it in clear again, so the
    claim excludes it. Returns True if the number was on the list by its hash."""
    entry = session.scalar(
        select(DoNotCall).where(DoNotCall.phone.is_(None), DoNotCall.phone_hash == phone_hash(session, number))
    )
    if entry is None:
        return False
    entry.phone = number
    session.flush()
    finish_listed_targets(session, number)
    return True


def remove(session: Session, phone: str, reason: str, *, actor: str | None = None) -> DoNotCall:
    """Take ``phone`` off the list; it may be dialled again by rounds sampled from now on.

    ``reason`` is required and kept in the list's history. Returns the removed entry, detached.

    Raises:
        DncError: the number is not on the list, or the reason is empty or too long.
    """
    number = parse_phone(phone)
    why = _reason(reason)  # checked before anything changes
    entry = _entry_of(session, number)
    if entry is None:
        raise DncError(
            f"号码 {phone.strip()} 不在免打扰名单上 / {mask(number)} is not on the do-not-call list", "phone"
        )
    _event(session, entry.phone_hash, number, DncAction.REMOVED, why, source=entry.source, actor=actor)
    session.delete(entry)
    session.flush()
    return entry


def forget(session: Session, number: str, reason: str, *, actor: str | None = None) -> DoNotCall:
    """Keep ``number`` on the list by its keyed hash only (``household forget``); add it first if need be.

    Its history keeps the hash and loses the mask."""
    why = _reason(reason)
    entry = _entry_of(session, number)
    if entry is None:
        entry = _insert(session, number, why, DncSource.OFFICE, actor, None)
    entry.phone = None
    session.execute(
        DoNotCallEvent.__table__.update().where(DoNotCallEvent.phone_hash == entry.phone_hash).values(phone_masked=None)
    )
    _event(session, entry.phone_hash, None, DncAction.FORGOTTEN, why, source=entry.source, actor=actor)
    session.flush()
    return entry


def query(*, suffix: str | None = None, include_forgotten: bool = False) -> Select[tuple[DoNotCall]]:
    """The entries, newest first (a statement: page it, count it, or run it).

    Args:
        suffix: only numbers ending in these digits (what the office reads off a masked number, 1234).
        include_forgotten: also the entries kept by their hash only (their ``phone`` is None).
    """
    stmt = select(DoNotCall).order_by(DoNotCall.created_at.desc(), DoNotCall.id.desc())
    if not include_forgotten:
        stmt = stmt.where(DoNotCall.phone.is_not(None))
    if suffix:
        digits = "".join(ch for ch in suffix if ch.isdigit())
        if digits:
            stmt = stmt.where(DoNotCall.phone.endswith(digits, autoescape=True))
    return stmt


def entries(session: Session, **filters) -> list[DoNotCall]:
    """Every entry matching :func:`query`'s filters, newest first."""
    return list(session.scalars(query(**filters)))


def forgotten_count(session: Session) -> int:
    """Entries kept by their keyed hash only."""
    return session.scalar(select(func.count()).select_from(DoNotCall).where(DoNotCall.phone.is_(None))) or 0


def history(session: Session, phone: str | None = None) -> list[DoNotCallEvent]:
    """The list's history, oldest first; only one number's (any written form) when ``phone`` is given."""
    stmt = select(DoNotCallEvent).order_by(DoNotCallEvent.at, DoNotCallEvent.id)
    if phone is not None:
        stmt = stmt.where(DoNotCallEvent.phone_hash == phone_hash(session, parse_phone(phone)))
    return list(session.scalars(stmt))


# --- import ---------------------------------------------------------------------------------------------

_PHONE_HEADERS = {
    _header_key(name) for name in ("电话", "号码", "手机", "手机号", "电话号码", "phone", "number", "mobile")
}
_REASON_HEADERS = {_header_key(name) for name in ("原因", "备注", "reason", "note")}


@dataclass
class DncImport:
    """What ``dnc import`` did: numbers added, numbers already on the list (left as they were)."""

    source: str
    added: int = 0
    already: int = 0
    duplicates: int = 0  # rows repeating a number an earlier row gave
    numbers: list[str] = field(default_factory=list)  # the added numbers, E.164

    def summary(self) -> str:
        return (
            f"{self.source}: {self.added} added to the do-not-call list, {self.already} already on it, "
            f"{self.duplicates} repeated (导入免打扰名单: 新增{self.added}个, 已在名单{self.already}个, 重复{self.duplicates}行)"
        )


def import_file(
    session: Session,
    path: str | Path,
    *,
    actor: str | None = None,
    reason: str | None = None,
    limits: RosterLimits | None = None,
) -> DncImport:
    """Put every number of a CSV or XLSX file on the list, all or nothing.

    The file has a phone column (电话/号码/phone ...) and may have a reason column (原因/备注/reason); a file
    without a header is one number per row. Rows without a reason take ``reason`` (default: imported from the
    file's name).

    Raises:
        RosterError: the file cannot be read, or any row's number is not callable (each bad row named by
            line); nothing is added.
    """
    path = Path(path)
    source = path.name
    rows = read_cells(path, limits)
    if not rows:
        raise RosterError(
            source, [RowProblem(0, "", source, "文件中没有号码", "the file holds no number")], kind="file"
        )
    _header_line, header = rows[0]
    keys = [_header_key(cell) for cell in header]
    phone_col = next((i for i, key in enumerate(keys) if key in _PHONE_HEADERS), None)
    reason_col = next((i for i, key in enumerate(keys) if key in _REASON_HEADERS), None)
    column_name = header[phone_col] if phone_col is not None else ""
    if phone_col is None:
        phone_col, data = 0, rows  # no header: the first column holds the numbers
    else:
        data = rows[1:]
    default_reason = _reason(reason or f"imported from {source}")
    problems: list[RowProblem] = []
    wanted: dict[str, tuple[int, str]] = {}
    duplicates = 0
    for line, cells in data:
        raw = cells[phone_col] if phone_col < len(cells) else ""
        try:
            number = normalise(raw)
        except PhoneNumberError as exc:
            problems.append(RowProblem(line, column_name, raw, exc.reason_zh, exc.reason_en))
            continue
        why = cells[reason_col] if reason_col is not None and reason_col < len(cells) and cells[reason_col] else ""
        why = " ".join(why.split())[:REASON_MAX_LENGTH] or default_reason
        if number in wanted:
            duplicates += 1
            continue
        wanted[number] = (line, why)
    if problems:
        raise RosterError(source, problems, kind="rows")
    result = DncImport(source=source, duplicates=duplicates)
    for number, (_line, why) in wanted.items():
        if _entry_of(session, number) is not None:
            result.already += 1
            continue
        _insert(session, number, why, DncSource.IMPORT, actor, None)
        result.added += 1
        result.numbers.append(number)
    return result


def masked_numbers(numbers: Sequence[str]) -> list[str]:
    return [mask(n) for n in numbers]
