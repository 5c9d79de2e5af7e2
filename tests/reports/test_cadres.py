"""The supervisors' view per cadre: households, reached, contact rate (重视率), follow-ups."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from campaigns.followups import mark_followup, sync_followups
from campaigns.models import Answer, Cadre, FollowUp, ResponseStatus, Round, RoundStatus
from campaigns.questionnaire import builtin_questionnaire, store_version, without_steps
from reports import cadres as cadres_report
from reports.cli import report_group
from reports.followups import cadre_list
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


# --- the delivery check (资料送达确认) ----------------------------------------------------------------------


def delivery_round(session: Session, *, exclude_unsure: bool = False):
    """Four cadres' households answer the delivery check (1 有, 2 没有, 0 记不清):

    王芳 3 of 12 confirm (8 no, 1 记不清), well below the township; 李强 11 of 12; 赵敏 10 of 12; 孙丽 0 of 3,
    too few to judge. One more of 王芳's households hung up before the delivery check (no answer).
    """
    round_ = make_round(session, status=RoundStatus.RUNNING, exclude_unsure=exclude_unsure)
    village = make_village(session, name="南村")
    cadres = {name: make_cadre(session, name=name) for name in ("王芳", "李强", "赵敏", "孙丽")}
    for name, keys in (
        ("王芳", "1" * 3 + "2" * 8 + "0"),
        ("李强", "1" * 11 + "2"),
        ("赵敏", "1" * 10 + "22"),
        ("孙丽", "222"),
    ):
        for key in keys:
            make_interview(session, round_, {**interview_answers(), "delivery": key}, village=village,
                           cadre=cadres[name])  # fmt: skip
    make_interview(session, round_, interview_answers(), village=village, cadre=cadres["王芳"])
    session.flush()
    return round_


def test_the_share_of_households_that_confirm_a_delivery_per_cadre(session: Session) -> None:
    round_ = delivery_round(session)

    report = cadre_overview(session, round_.id, now=NOW)

    assert report["round"]["delivery_check"] is True
    delivery = {entry["cadre"]: entry["delivery"] for entry in report["cadres"]}
    total = report["total"]["delivery"]
    assert (total["positive"], total["valid"], total["unsure"]) == (24, 39, 1)
    assert total["rate"] == pytest.approx(24 / 39) and total["check"] is False
    wang = delivery["王芳"]
    assert (wang["positive"], wang["valid"], wang["unsure"], wang["too_few"]) == (3, 12, 1, False)
    # The Wilson 95% interval of 3/12 is 0.0889 to 0.5323: even its top is below the township's 61.5%.
    assert wang["ci_low"] == pytest.approx(0.0889, abs=1e-4) and wang["ci_high"] == pytest.approx(0.5323, abs=1e-4)
    assert wang["check"] is True
    assert [name for name, figures in delivery.items() if figures["check"]] == ["王芳"]
    assert (delivery["李强"]["positive"], delivery["李强"]["valid"]) == (11, 12)
    # 0 of 3 is far below, but three answers are too few to judge: no flag.
    assert (delivery["孙丽"]["valid"], delivery["孙丽"]["too_few"], delivery["孙丽"]["check"]) == (3, True, False)
    # With a smaller minimum sample the same three answers are judged, and flagged.
    judged = cadre_overview(session, round_.id, now=NOW, min_sample=3)
    assert {entry["cadre"] for entry in judged["cadres"] if entry["delivery"]["check"]} == {"王芳", "孙丽"}


def test_the_delivery_check_follows_the_rounds_unsure_rule(session: Session) -> None:
    round_ = delivery_round(session, exclude_unsure=True)

    report = cadre_overview(session, round_.id, now=NOW)

    wang = next(entry["delivery"] for entry in report["cadres"] if entry["cadre"] == "王芳")
    assert (wang["positive"], wang["valid"], wang["unsure"]) == (3, 11, 1)
    assert report["total"]["delivery"]["valid"] == 38


def test_the_check_is_in_every_format_for_supervisors(session: Session, env) -> None:
    round_id = delivery_round(session).id
    session.commit()

    table = CliRunner().invoke(report_group, ["cadres", str(round_id)])
    csv = CliRunner().invoke(report_group, ["cadres", str(round_id), "--format", "csv"])

    assert table.exit_code == 0, table.output
    wang = next(line for line in table.stdout.splitlines() if line.startswith("王芳"))
    assert "25.0% (3/12) [8.8%–53.2%]" in wang and wang.rstrip().endswith("需核查回执") is False
    assert "需核查回执" in wang
    li = next(line for line in table.stdout.splitlines() if line.startswith("李强"))
    assert "91.6% (11/12)" in li and "需核查回执" not in li
    assert "孙丽" in table.stdout and "0.0% (0/3) [0.0%–56.1%]*" in table.stdout
    assert "资料送达确认率 = " in table.stdout and "全镇 61.5%" in table.stdout
    header, *lines = csv.stdout.lstrip("\ufeff").splitlines()
    assert '"确认送达","送达有效回答","送达确认率","送达95%下限","送达95%上限","送达样本不足","需核查回执"' in header
    wang_row = next(line for line in lines if line.startswith('"王芳"'))
    assert '"3","12","25.0%","8.8%","53.2%","否","是"' in wang_row


def test_a_round_without_the_delivery_check_shows_nothing_of_it(session: Session, township, env) -> None:
    round_, _lin, _chen = township
    with_check = cadre_overview(session, round_.id, now=NOW)
    without = without_steps(builtin_questionnaire(), ["delivery"])
    session.execute(
        update(Round).where(Round.id == round_.id).values(questionnaire_id=store_version(session, without).id)
    )
    session.commit()
    session.expire_all()

    report = cadre_overview(session, round_.id, now=NOW)
    table = CliRunner().invoke(report_group, ["cadres", str(round_.id)])

    assert report["round"]["delivery_check"] is False
    assert {entry["delivery"] for entry in [*report["cadres"], report["total"]]} == {None}
    # Everything else is as it was.
    def strip(r: dict) -> dict:
        return {
            **r,
            "round": {**r["round"], "delivery_check": None, "questionnaire_version": None},
            "cadres": [{**e, "delivery": None} for e in r["cadres"]],
            "total": {**r["total"], "delivery": None},
        }

    assert strip(report) == strip(with_check)
    assert "资料送达" not in table.stdout and "需核查回执" not in table.stdout


def test_a_cadre_never_sees_the_delivery_check(session: Session) -> None:
    round_ = delivery_round(session)
    wang = session.scalar(select(Cadre).where(Cadre.name == "王芳"))
    make_interview(session, round_, {**interview_answers(security="4", visit="1"), "delivery": "2"}, cadre=wang)
    sync_followups(session, round_.id)

    own = json.dumps(cadre_list(session, wang.id).to_json(), ensure_ascii=False)

    assert "delivery" not in own and "送达" not in own
    assert json.loads(own)["items"]  # the list itself is there
