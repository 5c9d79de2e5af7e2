"""The follow-up workflow (整改回访): creating each cadre's items from the answers, and recording visits.

A follow-up is one resident who gave a dissatisfied answer (security or satisfaction: a key that is neither
positive nor "说不清", i.e. 3/4 in the default questionnaire) **and** pressed "visit: yes". It goes on the list
of the cadre responsible for the household. Residents who declined a visit are counted per village, never
listed (the follow-up policy in docs/architecture.md).

Items are derived from the stored answers, on the write side only: the interview keeps each response's item
current as it stores the answers that decide it (:func:`sync_response`, called by campaigns.interview when
:func:`decides_followup` says so). The readers (reports.*) only read. :func:`sync_followups` (one round) and
:func:`sync_all_rounds` apply the same rules to every stored answer: the repair tools, and what ``sanlv db
upgrade`` runs for answers stored before the interview kept the items. Both are idempotent (one item per
response; the unique ``response_id`` settles a race between two syncs) and withdraw an item that nobody has
acted on yet if the resident's "visit: yes" was since replaced by another key.

An item's ``created_at`` is the time the resident asked for the visit (their "visit: yes" answer), so that
"overdue" counts from the request, not from whenever somebody first opened a list.

Status changes, each recorded as a :class:`FollowUpEvent` with its note, actor and time::

    pending -> visited | unreachable
    visited -> resolved | unreachable
    resolved, unreachable: final

The reading half (lists, history, overdue) is ``reports.followups``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache

from sqlalchemy import and_, bindparam, delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from campaigns import clock
from campaigns.errors import SanlvError
from campaigns.models import (
    Answer,
    FollowUp,
    FollowUpEvent,
    FollowUpStatus,
    Household,
    Response,
    Round,
    RoundStatus,
    RoundTarget,
)
from campaigns.questionnaire import Questionnaire, from_version, rate_steps

log = logging.getLogger("sanlv.followups")

# The questionnaire steps and keys the workflow reads (fixed keys of the default questionnaire).
DISSATISFACTION_RATES = ("security", "satisfaction")
VISIT_STEP = "visit"
VISIT_YES = "1"
VISIT_NO = "2"
CONCERN_STEP = "concern"
SYSTEM_ACTOR = "sanlv"
NOTE_MAX_LENGTH = 2000

STATUS_LABELS = {
    FollowUpStatus.PENDING: "待走访",
    FollowUpStatus.VISITED: "已走访",
    FollowUpStatus.RESOLVED: "已解决",
    FollowUpStatus.UNREACHABLE: "无法联系",
}
TRANSITIONS: Mapping[FollowUpStatus, frozenset[FollowUpStatus]] = {
    FollowUpStatus.PENDING: frozenset({FollowUpStatus.VISITED, FollowUpStatus.UNREACHABLE}),
    FollowUpStatus.VISITED: frozenset({FollowUpStatus.RESOLVED, FollowUpStatus.UNREACHABLE}),
    FollowUpStatus.RESOLVED: frozenset(),
    FollowUpStatus.UNREACHABLE: frozenset(),
}
OPEN_STATUSES = (FollowUpStatus.PENDING, FollowUpStatus.VISITED)
# Rounds whose answers may hold follow-ups (a draft has none).
SYNCED_ROUND_STATUSES = (RoundStatus.RUNNING, RoundStatus.PAUSED, RoundStatus.COMPLETED, RoundStatus.CANCELLED)


class FollowUpError(SanlvError, ValueError):
    """A follow-up request cannot be done; the message says why, in Chinese then English.

    ``not_found`` is set when the item does not exist (or is not on the cadre's own list).
    """

    def __init__(self, message: str, *, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


# --- creating the items from the answers ----------------------------------------------------------------


def sync_followups(session: Session, round_id: int) -> int:
    """Create the follow-ups of ``round_id`` that its answers call for; withdraw the ones no longer asked for.

    Safe to run any number of times and concurrently. The caller commits.

    Returns:
        How many items were created.

    Raises:
        FollowUpError: no round has this id (``not_found``).
    """
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise FollowUpError(f"round {round_id} does not exist", not_found=True)
    questionnaire = from_version(round_.questionnaire)
    if not questionnaire.has_step(VISIT_STEP):
        return 0
    _withdraw(session, round_id)
    created = store_followups(session, round_id, followup_candidates(session, round_id, questionnaire))
    if created:
        log.info("event=followups_synced round=%s created=%s", round_id, created)
    return created


def sync_response(session: Session, round_id: int, response_id: int, questionnaire: Questionnaire) -> int:
    """:func:`sync_followups` for one response of ``round_id``, asked with ``questionnaire``: its item is
    created if its answers call for one, withdrawn if no longer asked for (and nobody acted on it).

    Two indexed reads when nothing changes. The caller commits. Returns how many items were created (0 or 1).

    No savepoint: if another sync inserted the item meanwhile, the unique ``response_id`` fails the caller's
    transaction, and the interview's webhook runs again (ivr.views.in_transaction), finding the item.
    """
    if not questionnaire.has_step(VISIT_STEP):
        return 0
    _withdraw(session, round_id, response_id)
    rows = followup_candidates(session, round_id, questionnaire, response_id)
    created = _insert(session, round_id, rows) if rows else 0
    if created:
        log.info("event=followup_created round=%s response=%s", round_id, response_id)
    return created


def decides_followup(questionnaire: Questionnaire, question: str, answers: Mapping[str, str]) -> bool:
    """Whether storing an answer to ``question`` (``answers``: the response's answers, this one included) may
    create or withdraw the response's item under the rules above: a ``visit`` answer may; a dissatisfaction
    answer may once the resident has said "visit: yes" (a questionnaire may ask visit first). Nothing else
    does: the rules do not depend on the response's status."""
    if question == VISIT_STEP:
        return True
    dissatisfaction = any(step.key == question for step in _dissatisfaction_steps(questionnaire))
    return dissatisfaction and answers.get(VISIT_STEP) == VISIT_YES


def _dissatisfaction_steps(questionnaire: Questionnaire) -> list:
    return [step for key, step in rate_steps(questionnaire).items() if key in DISSATISFACTION_RATES]


def followup_candidates(
    session: Session, round_id: int, questionnaire: Questionnaire, response_id: int | None = None
) -> list[tuple]:
    """Responses of the round (or only ``response_id``) with "visit: yes" and a dissatisfied answer that
    have no item yet.

    Returns:
        ``(response_id, household_id, cadre_id, asked_at, concern_key, negatives)`` tuples.
    """
    steps = _dissatisfaction_steps(questionnaire)
    stmt = _candidates_statement(tuple((step.key, step.rate) for step in steps), one_response=response_id is not None)
    params = {"round_id": round_id} if response_id is None else {"round_id": round_id, "response_id": response_id}
    rows = []
    for response_id, household_id, cadre_id, asked_at, concern_digit, *digits in session.execute(stmt, params):
        negatives = [
            step.rate
            for step, digit in zip(steps, digits, strict=True)
            if digit is not None and digit not in step.positive and digit not in step.unsure
        ]
        if negatives:
            rows.append((response_id, household_id, cadre_id, asked_at, concern_digit, negatives))
    return rows


@lru_cache(maxsize=32)
def _candidates_statement(steps: tuple[tuple[str, str], ...], *, one_response: bool):
    """The query of :func:`followup_candidates` for the dissatisfaction questions ``steps`` ((key, rate)
    pairs), built once: the interview runs it inside its write transaction. Parameters: ``round_id``, and
    ``response_id`` with ``one_response``."""
    visit = aliased(Answer, name="visit")
    concern = aliased(Answer, name="concern")
    rated = [aliased(Answer, name=f"rated_{rate}") for _key, rate in steps]
    stmt = (
        select(
            Response.id,
            RoundTarget.household_id,
            Household.cadre_id,
            visit.updated_at,
            concern.digit,
            *(alias.digit for alias in rated),
        )
        .select_from(visit)
        .join(Response, Response.id == visit.response_id)
        .join(RoundTarget, RoundTarget.id == Response.target_id)
        .join(Household, Household.id == RoundTarget.household_id)
        .outerjoin(concern, and_(concern.response_id == Response.id, concern.question == CONCERN_STEP))
        .where(
            visit.round_id == bindparam("round_id"),
            visit.question == VISIT_STEP,
            visit.digit == VISIT_YES,
            ~exists().where(FollowUp.response_id == Response.id),
        )
        .order_by(Response.id)
    )
    if one_response:
        stmt = stmt.where(visit.response_id == bindparam("response_id"))
    for (key, _rate), alias in zip(steps, rated, strict=True):
        stmt = stmt.outerjoin(alias, and_(alias.response_id == Response.id, alias.question == key))
    return stmt


def store_followups(session: Session, round_id: int, rows: list[tuple]) -> int:
    """Insert the items for ``rows`` (from :func:`followup_candidates`); returns how many were new.

    All at once in a savepoint; if another sync inserted some of them in the meantime (the unique
    ``response_id`` refuses the batch), one by one, skipping the ones that exist.
    """
    if not rows:
        return 0
    try:
        with session.begin_nested():
            return _insert(session, round_id, rows)
    except IntegrityError:
        created = 0
        for row in rows:
            try:
                with session.begin_nested():
                    created += _insert(session, round_id, [row])
            except IntegrityError:
                continue
        return created


def _insert(session: Session, round_id: int, rows: list[tuple]) -> int:
    items = [
        FollowUp(
            round_id=round_id,
            response_id=response_id,
            household_id=household_id,
            cadre_id=cadre_id,
            negatives=negatives,
            concern=concern_digit,
            status=FollowUpStatus.PENDING,
            created_at=asked_at,
            updated_at=asked_at,
        )
        for response_id, household_id, cadre_id, asked_at, concern_digit, negatives in rows
    ]
    session.add_all(items)
    session.flush()
    session.add_all(
        FollowUpEvent(
            follow_up_id=item.id, status=FollowUpStatus.PENDING, actor=SYSTEM_ACTOR, created_at=item.created_at
        )
        for item in items
    )
    session.flush()
    return len(items)


def _withdraw(session: Session, round_id: int, response_id: int | None = None) -> None:
    """Remove pending items (of the round, or only ``response_id``'s), never acted on, whose resident no
    longer says "visit: yes"."""
    if response_id is None:
        ids = session.scalars(_WITHDRAWN, {"round_id": round_id}).all()
    else:
        ids = session.scalars(_WITHDRAWN_ONE, {"round_id": round_id, "response_id": response_id}).all()
    if ids:
        session.execute(delete(FollowUpEvent).where(FollowUpEvent.follow_up_id.in_(ids)))
        session.execute(delete(FollowUp).where(FollowUp.id.in_(ids)))
        log.info("event=followups_withdrawn round=%s items=%s", round_id, ",".join(map(str, ids)))


_still_yes = (
    select(Answer.id)
    .where(Answer.response_id == FollowUp.response_id, Answer.question == VISIT_STEP, Answer.digit == VISIT_YES)
    .exists()
)
_acted_on = (
    select(FollowUpEvent.id)
    .where(FollowUpEvent.follow_up_id == FollowUp.id, FollowUpEvent.status != FollowUpStatus.PENDING)
    .exists()
)
_WITHDRAWN = select(FollowUp.id).where(
    FollowUp.round_id == bindparam("round_id"), FollowUp.status == FollowUpStatus.PENDING, ~_still_yes, ~_acted_on
)
_WITHDRAWN_ONE = _WITHDRAWN.where(FollowUp.response_id == bindparam("response_id"))


def sync_all_rounds(session: Session) -> int:
    """:func:`sync_followups` for every round that has been launched. Returns the items created."""
    ids = session.scalars(select(Round.id).where(Round.status.in_(SYNCED_ROUND_STATUSES)).order_by(Round.id)).all()
    return sum(sync_followups(session, round_id) for round_id in ids)


# --- recording visits -----------------------------------------------------------------------------------


def parse_status(value: str) -> FollowUpStatus:
    """A status given by a user: its English value (``visited``) or its Chinese label (``已走访``)."""
    text = (value or "").strip()
    for status, label in STATUS_LABELS.items():
        if text in (status.value, label):
            return status
    choices = "、".join(f"{status.value}（{label}）" for status, label in STATUS_LABELS.items())
    raise FollowUpError(f"状态“{text}”无效，可选：{choices} / unknown status {text!r}")


def mark_followup(
    session: Session,
    item_id: int,
    status: str | FollowUpStatus,
    note: str | None = None,
    *,
    actor: str | None = None,
    cadre_id: int | None = None,
    now: datetime | None = None,
) -> FollowUp:
    """Move follow-up ``item_id`` to ``status``, recording the change with its note, actor and time.

    Args:
        cadre_id: when given, the item must be on this cadre's own list (a cadre marks only their own).
        note: replaces the item's note when given (an empty note is ignored).

    Raises:
        FollowUpError: no such item (or not the cadre's), an unknown status, a note that is too long, or a
        change the status machine does not allow.
    """
    new = status if isinstance(status, FollowUpStatus) else parse_status(status)
    note = (note or "").strip() or None
    if note is not None and len(note) > NOTE_MAX_LENGTH:
        raise FollowUpError(f"备注不能超过 {NOTE_MAX_LENGTH} 字 / the note is longer than {NOTE_MAX_LENGTH} characters")
    item = session.get(FollowUp, item_id, with_for_update=True)
    if item is None or (cadre_id is not None and item.cadre_id != cadre_id):
        raise FollowUpError(f"回访事项 {item_id} 不存在 / follow-up {item_id} does not exist", not_found=True)
    old = FollowUpStatus(item.status)
    if new not in TRANSITIONS[old]:
        allowed = "、".join(STATUS_LABELS[s] for s in sorted(TRANSITIONS[old], key=list(STATUS_LABELS).index))
        hint = f"只能改为：{allowed}" if allowed else "该事项已结束"
        raise FollowUpError(
            f"回访事项 {item_id} 不能从“{STATUS_LABELS[old]}”改为“{STATUS_LABELS[new]}”（{hint}）"
            f" / follow-up {item_id} cannot go from {old.value} to {new.value}"
        )
    when = now or clock.now()
    item.status = new
    if note is not None:
        item.note = note
    item.updated_at = when
    session.add(FollowUpEvent(follow_up_id=item.id, status=new, note=note, actor=actor, created_at=when))
    session.flush()
    log.info("event=followup_marked item=%s from=%s to=%s actor=%s", item.id, old.value, new.value, actor or "-")
    return item
