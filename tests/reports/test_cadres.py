"""The supervisors' view per cadre: households, reached, contact rate (重视率), follow-ups."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from campaigns.followups import mark_followup, sync_followups
from campaigns.models import Answer, FollowUp, ResponseStatus, RoundStatus
from reports import cadres as cadres_report
from reports.cli import report_group
from reports.rates import ReportError
from tests.factories import (
    interview_answers,
    make_cadre,
    make_household,
    make_interview,
    make_round,
    make_target,
    make_village,
)

NOW = datetime(2026, 3, 20, 2, 0, tzinfo=UTC)


@pytest.fixture
def township(session: Session):
    """林建明: 东村 x3 and 西村 x1 sampled (plus one household not sampled). Contact answers: 联系过, 没有, 记不清
    among the completed; one refusal. Two follow-ups: one asked 10 days ago (overdue), one visited.
    陈志强: 西村 x2, both contacted, one not reached. One 西村 household has no cadre.
    """
    round_ = make_round(session, name="2026年上半年", status=RoundStatus.RUNNING)
    east, west = make_village(session, name="东村"), make_village(session, name="西村")
    lin = make_cadre(session, name="林建明", phone="+8613900000001")
    chen = make_cadre(session, name="陈志强", phone="+8613900000002")

    asked = make_interview(
        session, round_, interview_answers("4", cadre_contact="1", visit="1"), village=east, cadre=lin
    )
    visited = make_interview(
        session, round_, interview_answers(satisfaction="3", cadre_contact="2", visit="1"), village=east, cadre=lin
    )
    make_interview(session, round_, interview_answers(cadre_contact="0"), village=west, cadre=lin)
    make_interview(session, round_, {"consent": "2"}, village=east, cadre=lin, status=ResponseStatus.REFUSED)
    make_household(session, village=east, cadre=lin)  # in the roster, not sampled this round
    for _ in range(2):
        make_interview(session, round_, interview_answers(cadre_contact="1"), village=west, cadre=chen)
    make_target(session, round_, make_household(session, village=west, cadre=chen), attempts=3)
    make_interview(
        session,
        round_,
        interview_answers(cadre_contact="2"),
        village=west,
        household=make_household(session, village=west, cadre_id=None),
    )
    for response, days in ((asked, 10), (visited, 3)):
        session.execute(
            update(Answer)
            .where(Answer.response_id == response.id, Answer.question == "visit")
            .values(updated_at=NOW - timedelta(days=days))
        )
    sync_followups(session, round_.id)
    item = session.scalar(select(FollowUp).where(FollowUp.response_id == visited.id))
    mark_followup(session, item.id, "visited", now=NOW - timedelta(days=1))
    session.flush()
    return round_, lin, chen


def cadre_overview(session: Session, round_id: int, **options) -> dict:
    """The supervisors' view as its JSON contract."""
    return cadres_report.cadre_overview(session, round_id, **options).to_json()


def test_per_cadre_figures(session: Session, township) -> None:
    round_, lin, chen = township

    report = cadre_overview(session, round_.id, now=NOW)
    cadres = {entry["cadre"]: entry for entry in report["cadres"]}

    assert list(cadres) == ["林建明", "陈志强", "未分配"]
    first = cadres["林建明"]
    assert (first["cadre_id"], first["phone"], first["villages"]) == (lin.id, "139****0001", ["东村", "西村"])
    assert (first["households"], first["sampled"], first["reached"], first["completed"]) == (5, 4, 4, 3)
    contact = first["contact"]
    assert (contact["positive"], contact["valid"], contact["meets_target"], contact["too_few"]) == (1, 3, False, True)
    assert contact["rate"] == pytest.approx(1 / 3)
    assert contact["ci_low"] == pytest.approx(0.0615, abs=1e-4) and contact["ci_high"] == pytest.approx(
        0.7923, abs=1e-4
    )
    assert first["followups"] == {
        "total": 2,
        "pending": 1,
        "visited": 1,
        "resolved": 0,
        "unreachable": 0,
        "open": 2,
        "overdue": 1,
    }
    second = cadres["陈志强"]
    assert (second["cadre_id"], second["households"], second["sampled"], second["reached"], second["completed"]) == (
        chen.id,
        3,
        3,
        2,
        2,
    )
    assert (second["contact"]["positive"], second["contact"]["valid"]) == (2, 2)
    assert second["followups"]["total"] == 0
    nobody = cadres["未分配"]
    assert (nobody["cadre_id"], nobody["phone"], nobody["sampled"], nobody["contact"]["valid"]) == (None, None, 1, 1)
    total = report["total"]
    assert (total["sampled"], total["reached"], total["completed"]) == (8, 7, 6)
    assert (total["contact"]["positive"], total["contact"]["valid"]) == (3, 6)
    assert total["followups"]["overdue"] == 1


def test_overdue_days_and_min_sample_are_options(session: Session, township) -> None:
    round_, _lin, _chen = township

    report = cadre_overview(session, round_.id, now=NOW, overdue_days=14, min_sample=3)

    first = report["cadres"][0]
    assert first["followups"]["overdue"] == 0
    assert first["contact"]["too_few"] is False
    assert (report["round"]["overdue_days"], report["round"]["min_sample"]) == (14, 3)


def test_unknown_round(session: Session) -> None:
    with pytest.raises(ReportError, match="round 5 does not exist"):
        cadre_overview(session, 5)


def test_cli_cadres(session: Session, township, env) -> None:
    round_, _lin, _chen = township
    round_id = round_.id
    session.commit()

    table = CliRunner().invoke(report_group, ["cadres", str(round_id)])
    as_json = CliRunner().invoke(report_group, ["cadres", str(round_id), "--format", "json"])

    assert table.exit_code == 0, table.output
    line = next(line for line in table.stdout.splitlines() if line.startswith("林建明"))
    assert "33.3% (1/3) ✗*" in line
    assert "勿发给干部本人" in table.stdout
    assert as_json.exit_code == 0, as_json.output
    assert [c["cadre"] for c in json.loads(as_json.stdout)["cadres"]] == ["林建明", "陈志强", "未分配"]
