"""Rounds with known answers shared by the report, export and API tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from campaigns.models import Answer, Cadre, Response, ResponseStatus, Round, RoundStatus
from tests.factories import (
    interview_answers,
    make_cadre,
    make_household,
    make_interview,
    make_round,
    make_village,
)

ASKED = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


@dataclass
class Visits:
    round: Round
    cadres: dict[str, Cadre]
    people: dict[str, Response]


def set_asked_at(session: Session, response_id: int, when: datetime) -> None:
    """Pretend the resident pressed "visit" at ``when``."""
    session.execute(
        update(Answer).where(Answer.response_id == response_id, Answer.question == "visit").values(updated_at=when)
    )


def visits_township(session: Session) -> Visits:
    """Two villages, two cadres, one running round; the expected items are spelled out in the tests.

    东村 (cadre 林建明, 13900000001): A 张三 13811110001 unsafe (4) + concern 电信诈骗, visit yes; B 李四
    13811110002 dissatisfied (3) with the law enforcement, security 说不清, visit yes; C 王五 unsafe (3), visit
    no; D 赵六 content.
    西村 (cadre 陈志强, 13900000002): E (no 户主 name) 13811110005 unsafe and dissatisfied, concern 矛盾纠纷,
    visit yes; F 周八 dissatisfied, visit no; G 吴九 13811110007 asked for a visit in an interview that is not
    completed (a questionnaire may ask visit before its last rate question): G is listed all the same, and
    counted among requests, but not in the completed-only rates.

    Each resident asked at ``ASKED`` plus their response id in minutes.
    """
    round_ = make_round(session, name="2026年上半年", status=RoundStatus.RUNNING)
    east, west = make_village(session, name="东村"), make_village(session, name="西村")
    lin = make_cadre(session, name="林建明", phone="+8613900000001")
    chen = make_cadre(session, name="陈志强", phone="+8613900000002")

    def person(village, cadre, phone, name, given, status=ResponseStatus.COMPLETED) -> Response:
        household = make_household(session, village=village, cadre=cadre, phone=phone, name=name)
        response = make_interview(session, round_, given, household=household, status=status)
        if "visit" in given:
            set_asked_at(session, response.id, ASKED + timedelta(minutes=response.id))
        return response

    people = {
        "A": person(east, lin, "+8613811110001", "张三", interview_answers("4", concern="2", visit="1")),
        "B": person(east, lin, "+8613811110002", "李四", interview_answers("0", satisfaction="3", visit="1")),
        "C": person(east, lin, "+8613811110003", "王五", interview_answers("3", visit="2")),
        "D": person(east, lin, "+8613811110004", "赵六", interview_answers()),
        "E": person(
            west, chen, "+8613811110005", None, interview_answers("3", satisfaction="4", concern="4", visit="1")
        ),
        "F": person(west, chen, "+8613811110006", "周八", interview_answers(satisfaction="4", visit="2")),
        "G": person(
            west, chen, "+8613811110007", "吴九", interview_answers("4", visit="1"), ResponseStatus.IN_PROGRESS
        ),
    }
    session.flush()
    return Visits(round_, {"lin": lin, "chen": chen}, people)
