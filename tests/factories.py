"""Plain factory functions for tests: ``make_x(session, **over)`` adds a row, flushes, and returns it.

Each fills the columns a test does not care about with valid, unique values; keyword arguments override
them. Nothing commits: the test owns the transaction (commit before a CLI command or another session reads).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from campaigns.models import (
    Answer,
    Cadre,
    Household,
    Notice,
    NoticeChannel,
    NoticeStatus,
    NoticeTarget,
    NoticeTargetState,
    Response,
    ResponseStatus,
    Round,
    RoundTarget,
    TargetState,
    Village,
)
from campaigns.questionnaire import builtin_questionnaire, store_version

_serial = itertools.count(1)

DEFAULT_WINDOWS = [["09:00", "11:30"], ["14:30", "20:30"]]
DEFAULT_RETRY = {"busy": 1800, "no-answer": 7200, "failed": 14400, "machine": 7200, "dropped": 3600}

# A completed interview of the default questionnaire, positive on every rate.
POSITIVE_ANSWERS = {
    "consent": "1",
    "screen": "1",
    "security": "1",
    "awareness": "1",
    "participation": "1",
    "satisfaction": "1",
    "cadre_contact": "1",
}


def _add(session: Session, row: Any) -> Any:
    session.add(row)
    session.flush()
    return row


def make_village(session: Session, **over: Any) -> Village:
    fields: dict[str, Any] = {"name": f"测试村{next(_serial)}"}
    fields.update(over)
    return _add(session, Village(**fields))


def make_cadre(session: Session, **over: Any) -> Cadre:
    number = next(_serial)
    fields: dict[str, Any] = {"name": f"干部{number}", "phone": f"+86139{number:08d}"}
    fields.update(over)
    return _add(session, Cadre(**fields))


def make_household(
    session: Session, village: Village | None = None, cadre: Cadre | None = None, **over: Any
) -> Household:
    """A household in ``village`` (a new one if not given), assigned to ``cadre`` (a new one if not given)."""
    village = village or make_village(session)
    cadre = cadre or make_cadre(session)
    fields: dict[str, Any] = {
        "phone": f"+86138{next(_serial):08d}",
        "village_id": village.id,
        "cadre_id": cadre.id,
    }
    fields.update(over)
    return _add(session, Household(**fields))


def make_round(session: Session, questionnaire: str = "default", **over: Any) -> Round:
    """A draft round on the stored version of built-in questionnaire ``questionnaire``."""
    version = store_version(session, builtin_questionnaire(questionnaire))
    fields: dict[str, Any] = {
        "name": f"测试轮次{next(_serial)}",
        "questionnaire_id": version.id,
        "windows": DEFAULT_WINDOWS,
        "retry": dict(DEFAULT_RETRY),
    }
    fields.update(over)
    return _add(session, Round(**fields))


def make_target(
    session: Session, round_: Round, household: Household | None = None, **over: Any
) -> RoundTarget:
    """``household`` (a new one if not given) as a target of ``round_``."""
    household = household or make_household(session)
    fields: dict[str, Any] = {
        "round_id": round_.id,
        "household_id": household.id,
        "phone": household.phone,
        "state": TargetState.PENDING,
    }
    fields.update(over)
    return _add(session, RoundTarget(**fields))


def make_response(
    session: Session,
    target: RoundTarget,
    status: ResponseStatus | str = ResponseStatus.COMPLETED,
    answers: Mapping[str, str] | None = None,
    **over: Any,
) -> Response:
    """The response of ``target`` with one Answer per ``answers`` item (question -> key pressed).

    ``answers`` defaults to :data:`POSITIVE_ANSWERS`. The target's state is left as it is.
    """
    fields: dict[str, Any] = {
        "round_id": target.round_id,
        "target_id": target.id,
        "status": ResponseStatus(status),
    }
    fields.update(over)
    response = _add(session, Response(**fields))
    for question, digit in (POSITIVE_ANSWERS if answers is None else answers).items():
        session.add(Answer(response_id=response.id, round_id=target.round_id, question=question, digit=digit))
    session.flush()
    return response


def interview_answers(
    security: str = "1",
    awareness: str = "1",
    participation: str = "1",
    satisfaction: str = "1",
    cadre_contact: str = "1",
    *,
    concern: str | None = None,
    visit: str | None = None,
) -> dict[str, str]:
    """The answers of a completed interview of the default questionnaire, in asking order.

    ``concern`` is asked only when security is 3 or 4 (defaults to "2" then); ``visit`` only when security
    or satisfaction is 3 or 4 (left unanswered unless given).
    """
    out = {"consent": "1", "screen": "1", "security": security}
    if security in ("3", "4"):
        out["concern"] = concern or "2"
    out.update(awareness=awareness, participation=participation, satisfaction=satisfaction, cadre_contact=cadre_contact)
    if visit is not None:
        out["visit"] = visit
    return out


_TARGET_STATE_OF = {
    ResponseStatus.COMPLETED: TargetState.COMPLETED,
    ResponseStatus.REFUSED: TargetState.REFUSED,
    ResponseStatus.INELIGIBLE: TargetState.INELIGIBLE,
    ResponseStatus.OPTED_OUT: TargetState.OPTED_OUT,
    ResponseStatus.IN_PROGRESS: TargetState.PENDING,
}


def make_interview(
    session: Session,
    round_: Round,
    answers: Mapping[str, str] | None = None,
    *,
    village: Village | None = None,
    cadre: Cadre | None = None,
    status: ResponseStatus | str = ResponseStatus.COMPLETED,
    household: Household | None = None,
    **target_over: Any,
) -> Response:
    """A household of ``village``/``cadre`` sampled in ``round_`` whose interview ended with ``status``.

    The target's state follows the response (completed, refused, ...; pending for an unfinished interview)
    and it was dialled once, unless ``target_over`` says otherwise.
    """
    status = ResponseStatus(status)
    household = household or make_household(session, village=village, cadre=cadre)
    fields: dict[str, Any] = {"state": _TARGET_STATE_OF[status], "attempts": 1}
    fields.update(target_over)
    target = make_target(session, round_, household, **fields)
    return make_response(session, target, status, interview_answers() if answers is None else answers)


def make_notice(session: Session, **over: Any) -> Notice:
    """A draft SMS notice (no targets; add them with :func:`make_notice_target`)."""
    fields: dict[str, Any] = {
        "name": f"测试通知{next(_serial)}",
        "channel": NoticeChannel.SMS,
        "text": "平安建设宣传：请提高防范意识。回复TD退订",
        "status": NoticeStatus.DRAFT,
        "windows": DEFAULT_WINDOWS,
        "cps": 1.0,
    }
    fields.update(over)
    return _add(session, Notice(**fields))


def make_notice_target(
    session: Session, notice: Notice, household: Household | None = None, **over: Any
) -> NoticeTarget:
    """``household`` (a new one if not given) as a target of ``notice``; ``held_out=True`` makes it held out."""
    household = household or make_household(session)
    held_out = bool(over.pop("held_out", False))
    fields: dict[str, Any] = {
        "notice_id": notice.id,
        "household_id": household.id,
        "village_id": household.village_id,
        "phone": household.phone,
        "held_out": held_out,
        "state": NoticeTargetState.HELD_OUT if held_out else NoticeTargetState.PENDING,
    }
    fields.update(over)
    return _add(session, NoticeTarget(**fields))
