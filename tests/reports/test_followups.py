"""Cadre follow-up lists: items derived from the answers, visit tracking, overdue, masking, the commands."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from campaigns.followups import (
    FollowUpError,
    followup_candidates,
    mark_followup,
    store_followups,
    sync_all_rounds,
    sync_followups,
)
from campaigns.models import (
    Answer,
    FollowUp,
    FollowUpEvent,
    FollowUpStatus,
    RoundStatus,
)
from campaigns.questionnaire import builtin_questionnaire
from reports import followups, rates
from reports.cli import followup_group, report_group
from reports.rates import ReportError
from reports.rows import to_json
from tests.factories import interview_answers, make_interview, make_round, make_village
from tests.reports.scenarios import ASKED, visits_township


def followup_report(session: Session, round_id: int, **options) -> dict:
    """The list as its JSON contract (what ``report followups --format json`` prints)."""
    return followups.followup_report(session, round_id, **options).to_json()


def cadre_list(session: Session, cadre_id: int, **options) -> dict:
    """A cadre's own list as the API sends it."""
    return followups.cadre_list(session, cadre_id, **options).to_json()


def village_rates(session: Session, round_id: int) -> dict:
    return rates.village_rates(session, round_id).to_json()


@pytest.fixture
def township(session: Session):
    """See :func:`tests.reports.scenarios.visits_township`."""
    visits = visits_township(session)
    return visits.round, visits.cadres, visits.people


def items_by_household(report: dict) -> dict[str, dict]:
    return {item["household"]: item for item in report["items"]}


# --- deriving the items ---------------------------------------------------------------------------------


def test_sync_creates_one_item_per_resident_who_asked_for_a_visit(session: Session, township) -> None:
    round_, cadres, people = township

    created = sync_followups(session, round_.id)

    items = session.scalars(select(FollowUp).order_by(FollowUp.response_id)).all()
    assert created == 4
    assert [(i.response_id, i.negatives, i.concern, i.cadre_id) for i in items] == [
        (people["A"].id, ["security"], "2", cadres["lin"].id),
        (people["B"].id, ["satisfaction"], None, cadres["lin"].id),
        (people["E"].id, ["security", "satisfaction"], "4", cadres["chen"].id),
        (people["G"].id, ["security"], "2", cadres["chen"].id),
    ]
    assert all(i.status == FollowUpStatus.PENDING for i in items)
    assert items[0].created_at == ASKED + timedelta(minutes=people["A"].id)
    events = session.scalars(select(FollowUpEvent).order_by(FollowUpEvent.id)).all()
    assert [(e.follow_up_id, e.status, e.actor) for e in events] == [
        (i.id, FollowUpStatus.PENDING, "sanlv") for i in items
    ]


def test_sync_is_idempotent(session: Session, township) -> None:
    round_, _cadres, _people = township

    assert sync_followups(session, round_.id) == 4
    assert sync_followups(session, round_.id) == 0
    session.commit()
    assert sync_followups(session, round_.id) == 0

    assert session.scalar(select(func.count()).select_from(FollowUp)) == 4
    assert session.scalar(select(func.count()).select_from(FollowUpEvent)) == 4


def test_a_concurrent_sync_that_got_there_first_is_skipped(session: Session, township) -> None:
    round_, _cadres, _people = township
    rows = followup_candidates(session, round_.id, builtin_questionnaire())
    # Another sync stores the first item between our query and our insert.
    assert store_followups(session, round_.id, rows[:1]) == 1

    created = store_followups(session, round_.id, rows)

    assert created == len(rows) - 1
    counts = session.execute(select(FollowUp.response_id, func.count()).group_by(FollowUp.response_id)).all()
    assert sorted(counts) == sorted((row[0], 1) for row in rows)


def test_an_item_is_withdrawn_if_the_resident_changed_their_mind_before_anyone_acted(
    session: Session, township
) -> None:
    round_, _cadres, people = township
    sync_followups(session, round_.id)
    acted = session.scalar(select(FollowUp).where(FollowUp.response_id == people["A"].id))
    mark_followup(session, acted.id, "visited", "已上门")
    for key in ("A", "B"):  # both re-chose "visit: no" (a read-back, or a resumed call)
        session.execute(
            update(Answer).where(Answer.response_id == people[key].id, Answer.question == "visit").values(digit="2")
        )

    sync_followups(session, round_.id)

    remaining = session.scalars(select(FollowUp.response_id)).all()
    assert people["B"].id not in remaining  # nobody had acted: withdrawn, with its history
    assert people["A"].id in remaining  # the cadre already went: the record stays
    # A: created and visited; E and G: created. B's creation event went with it.
    assert session.scalar(select(func.count()).select_from(FollowUpEvent)) == 4


def test_sync_unknown_round(session: Session) -> None:
    with pytest.raises(FollowUpError, match="round 404 does not exist"):
        sync_followups(session, 404)


# --- visits ---------------------------------------------------------------------------------------------


def _item(session: Session, response_id: int) -> FollowUp:
    return session.scalar(select(FollowUp).where(FollowUp.response_id == response_id))


def test_status_moves_pending_visited_resolved_with_notes_and_times(session: Session, township) -> None:
    round_, _cadres, people = township
    sync_followups(session, round_.id)
    item = _item(session, people["A"].id)
    visited_at, resolved_at = ASKED + timedelta(days=1), ASKED + timedelta(days=3)

    mark_followup(session, item.id, "visited", "已上门，反映电信诈骗", actor="林建明", now=visited_at)
    mark_followup(session, item.id, "已解决", "  派出所已联系  ", actor="林建明", now=resolved_at)

    assert (item.status, item.note, item.updated_at) == (FollowUpStatus.RESOLVED, "派出所已联系", resolved_at)
    history = to_json(followups.followup_history(session, item.id))
    assert [(e["status"], e["note"], e["actor"], e["at"]) for e in history] == [
        ("pending", None, "sanlv", item.created_at.isoformat()),
        ("visited", "已上门，反映电信诈骗", "林建明", visited_at.isoformat()),
        ("resolved", "派出所已联系", "林建明", resolved_at.isoformat()),
    ]


@pytest.mark.parametrize(
    ("path", "refused", "message"),
    [
        ([], "resolved", "不能从“待走访”改为“已解决”（只能改为：已走访、无法联系）"),
        ([], "pending", "不能从“待走访”改为“待走访”"),
        (["visited"], "visited", "不能从“已走访”改为“已走访”（只能改为：已解决、无法联系）"),
        (["unreachable"], "visited", "（该事项已结束）"),
        (["visited", "resolved"], "unreachable", "不能从“已解决”改为“无法联系”（该事项已结束）"),
    ],
)
def test_impossible_status_changes_are_refused(session: Session, township, path, refused, message) -> None:
    round_, _cadres, people = township
    sync_followups(session, round_.id)
    item = _item(session, people["A"].id)
    for status in path:
        mark_followup(session, item.id, status)
    events_before = session.scalar(select(func.count()).select_from(FollowUpEvent))

    with pytest.raises(FollowUpError, match=message) as caught:
        mark_followup(session, item.id, refused, "note")

    assert not caught.value.not_found
    assert f"follow-up {item.id} cannot go from" in str(caught.value)
    assert session.scalar(select(func.count()).select_from(FollowUpEvent)) == events_before


def test_marking_errors(session: Session, township) -> None:
    round_, cadres, people = township
    sync_followups(session, round_.id)
    item = _item(session, people["A"].id)

    with pytest.raises(FollowUpError, match="状态“done”无效") as unknown:
        mark_followup(session, item.id, "done")
    with pytest.raises(FollowUpError, match="回访事项 9999 不存在") as missing:
        mark_followup(session, 9999, "visited")
    with pytest.raises(FollowUpError, match="不存在") as not_theirs:
        mark_followup(session, item.id, "visited", cadre_id=cadres["chen"].id)
    with pytest.raises(FollowUpError, match="备注不能超过"):
        mark_followup(session, item.id, "visited", "长" * 2001)

    assert not unknown.value.not_found and missing.value.not_found and not_theirs.value.not_found
    assert mark_followup(session, item.id, "visited", cadre_id=cadres["lin"].id).status == FollowUpStatus.VISITED


# --- lists ----------------------------------------------------------------------------------------------


def test_office_list_masks_phones_and_counts_declined_per_village(session: Session, township) -> None:
    round_, _cadres, people = township
    sync_followups(session, round_.id)  # the answers were stored by the factories, not by the interview

    report = followup_report(session, round_.id, now=ASKED + timedelta(days=1))

    assert report["round"]["id"] == round_.id and report["round"]["overdue_days"] == 7
    assert report["phones_masked"] is True and report["cadre"] is None
    items = items_by_household(report)
    assert set(items) == {"张三", "李四", None, "吴九"}
    a = items["张三"]
    assert {
        key: a[key]
        for key in ("cadre", "village", "household", "phone", "negatives", "concern", "status", "note", "overdue")
    } == {
        "cadre": "林建明",
        "village": "东村",
        "household": "张三",
        "phone": "138****0001",
        "negatives": ["security"],
        "concern": "电信诈骗",
        "status": "pending",
        "note": None,
        "overdue": False,
    }
    assert a["created_at"] == (ASKED + timedelta(minutes=people["A"].id)).isoformat()
    assert {
        "id",
        "cadre",
        "village",
        "household",
        "phone",
        "negatives",
        "concern",
        "status",
        "note",
        "created_at",
        "updated_at",
        "overdue",
    } <= set(a)
    assert all("****" in item["phone"] for item in report["items"])
    # 王五 and 周八 declined a visit: counted, never listed.
    assert "王五" not in json.dumps(report, ensure_ascii=False) and "周八" not in json.dumps(report, ensure_ascii=False)
    assert [(v["village"], v["requested"], v["declined"], v["pending"]) for v in report["villages"]] == [
        ("东村", 2, 1, 2),
        ("西村", 2, 1, 2),
    ]
    assert report["summary"] == {
        "total": 4,
        "pending": 4,
        "visited": 0,
        "resolved": 0,
        "unreachable": 0,
        "open": 4,
        "overdue": 0,
    }


def test_a_cadres_own_list_has_full_numbers_and_only_their_residents(session: Session, township) -> None:
    round_, cadres, _people = township
    sync_followups(session, round_.id)

    report = followup_report(session, round_.id, cadre_id=cadres["lin"].id, own=True)
    office = followup_report(session, round_.id, cadre_id=cadres["lin"].id)

    assert report["cadre"] == {"id": cadres["lin"].id, "name": "林建明"}
    assert report["phones_masked"] is False
    assert sorted((i["household"], i["phone"]) for i in report["items"]) == [
        ("张三", "13811110001"),
        ("李四", "13811110002"),
    ]
    assert "villages" not in report  # no counts about other residents on a cadre's own list
    assert sorted(i["phone"] for i in office["items"]) == ["138****0001", "138****0002"]
    assert "cadre_contact" not in json.dumps(report["items"])


def test_overdue_after_the_configured_days_while_still_pending(session: Session, township) -> None:
    round_, _cadres, people = township
    sync_followups(session, round_.id)
    mark_followup(session, _item(session, people["B"].id).id, "visited", now=ASKED + timedelta(days=2))
    eight_days = ASKED + timedelta(days=8)

    report = followup_report(session, round_.id, now=eight_days)
    items = items_by_household(report)

    assert (items["张三"]["overdue"], items["李四"]["overdue"], items[None]["overdue"]) == (True, False, True)
    assert report["summary"]["overdue"] == 3
    assert followup_report(session, round_.id, now=eight_days, overdue_days=10)["summary"]["overdue"] == 0
    # Exactly 7 days after the request is not yet "more than 7 days".
    exactly = ASKED + timedelta(minutes=people["A"].id, days=7)
    assert not items_by_household(followup_report(session, round_.id, now=exactly))["张三"]["overdue"]
    overdue_only = followup_report(session, round_.id, now=eight_days, overdue_only=True)
    assert sorted(i["id"] for i in overdue_only["items"]) == sorted(i["id"] for i in report["items"] if i["overdue"])
    assert [(v["village"], v["overdue"]) for v in report["villages"]] == [("东村", 1), ("西村", 2)]


def test_status_filter(session: Session, township) -> None:
    round_, _cadres, people = township
    sync_followups(session, round_.id)
    mark_followup(session, _item(session, people["A"].id).id, "visited")
    mark_followup(session, _item(session, people["A"].id).id, "resolved")
    mark_followup(session, _item(session, people["B"].id).id, "visited")

    resolved = followup_report(session, round_.id, statuses=(FollowUpStatus.RESOLVED,))
    open_items = followup_report(session, round_.id, statuses=(FollowUpStatus.PENDING, FollowUpStatus.VISITED))

    assert [i["household"] for i in resolved["items"]] == ["张三"]
    assert sorted(i["household"] or "" for i in open_items["items"]) == ["", "吴九", "李四"]


def test_cadre_list_across_rounds(session: Session, township) -> None:
    round_, cadres, _people = township
    later = make_round(session, name="2026年下半年", status=RoundStatus.COMPLETED)
    make_interview(
        session,
        later,
        interview_answers("4", visit="1"),
        village=make_village(session, name="南村"),
        cadre=cadres["lin"],
    )
    assert sync_all_rounds(session) == 5

    mine = cadre_list(session, cadres["lin"].id)
    only_first = cadre_list(session, cadres["lin"].id, round_id=round_.id)

    assert sorted((i["round"], i["village"]) for i in mine["items"]) == [
        ("2026年上半年", "东村"),
        ("2026年上半年", "东村"),
        ("2026年下半年", "南村"),
    ]
    assert all("****" not in item["phone"] for item in mine["items"])
    assert len(only_first["items"]) == 2
    with pytest.raises(ReportError, match="cadre 777 does not exist"):
        cadre_list(session, 777)


def test_village_rates_count_visits_requested_and_declined(session: Session, township) -> None:
    round_, _cadres, _people = township

    villages = {v["village"]: v for v in village_rates(session, round_.id)["villages"]}

    assert (villages["东村"]["visit_requested"], villages["东村"]["visit_declined"]) == (2, 1)
    assert (villages["西村"]["visit_requested"], villages["西村"]["visit_declined"]) == (1, 1)


# --- the commands ---------------------------------------------------------------------------------------


def test_cli_followups_json_and_cadre_list(session: Session, township, env) -> None:
    round_, cadres, _people = township
    round_id, lin = round_.id, cadres["lin"].id
    sync_followups(session, round_id)
    session.commit()

    office = CliRunner().invoke(report_group, ["followups", str(round_id), "--format", "json"])
    own = CliRunner().invoke(report_group, ["followups", str(round_id), "--cadre", str(lin), "--format", "json"])
    table = CliRunner().invoke(report_group, ["followups", str(round_id), "--cadre", str(lin)])

    assert office.exit_code == 0, office.output
    data = json.loads(office.stdout)
    assert set(data) >= {"round", "items"} and len(data["items"]) == 4
    assert {item["phone"] for item in data["items"]} == {"138****0001", "138****0002", "138****0005", "138****0007"}
    assert own.exit_code == 0, own.output
    assert {item["phone"] for item in json.loads(own.stdout)["items"]} == {"13811110001", "13811110002"}
    assert table.exit_code == 0, table.output
    assert "整改回访清单（包户干部：林建明）" in table.stdout
    assert "13811110001" in table.stdout and "电信诈骗" in table.stdout and "王五" not in table.stdout


def test_cli_followup_mark_and_show(session: Session, township, env) -> None:
    round_, _cadres, people = township
    sync_followups(session, round_.id)
    item_id = _item(session, people["A"].id).id
    session.commit()

    ok = CliRunner().invoke(followup_group, ["mark", str(item_id), "--status", "visited", "--note", "已上门"])
    again = CliRunner().invoke(followup_group, ["mark", str(item_id), "--status", "visited"])
    missing = CliRunner().invoke(followup_group, ["mark", "9999", "--status", "visited"])
    bad = CliRunner().invoke(followup_group, ["mark", str(item_id), "--status", "pending"])
    shown = CliRunner().invoke(followup_group, ["show", str(item_id), "--format", "json"])

    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip() == f"回访事项 {item_id}：已走访 / follow-up {item_id}: visited"
    assert again.exit_code == 1 and "不能从“已走访”改为“已走访”" in again.stderr
    assert missing.exit_code == 1 and "回访事项 9999 不存在" in missing.stderr
    assert bad.exit_code == 2  # not a choice
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.stdout)
    assert detail["phone"] == "138****0001"
    assert [(e["status"], e["note"], e["actor"]) for e in detail["history"]] == [
        ("pending", None, "sanlv"),
        ("visited", "已上门", "office"),
    ]


def test_cli_followups_unknown_round_and_cadre(env) -> None:
    unknown_round = CliRunner().invoke(report_group, ["followups", "404"])
    assert unknown_round.exit_code == 1 and unknown_round.stderr.strip() == "Error: round 404 does not exist"


def test_cli_status_and_overdue_filters_in_every_format(session: Session, township, env, tmp_path, monkeypatch) -> None:
    import csv
    import io

    from campaigns.clock import set_clock_file

    round_, _cadres, people = township
    sync_followups(session, round_.id)
    mark_followup(session, _item(session, people["A"].id).id, "visited", now=ASKED + timedelta(days=1))
    round_id = round_.id
    session.commit()
    clock = tmp_path / "clock"
    set_clock_file(clock, ASKED + timedelta(days=7, minutes=4))  # requests of the first 4 minutes are overdue
    monkeypatch.setenv("SANLV_CLOCK_FILE", str(clock))

    def households(*args: str) -> list[str]:
        result = CliRunner().invoke(report_group, ["followups", str(round_id), *args])
        assert result.exit_code == 0, result.output
        if "csv" in args:
            return sorted(row["户主"] for row in csv.DictReader(io.StringIO(result.stdout.removeprefix("\ufeff"))))
        return sorted(item["household"] or "" for item in json.loads(result.stdout)["items"])

    assert households("--status", "visited", "--format", "json") == ["张三"]
    assert households("--status", "visited", "--format", "csv") == ["张三"]
    assert households("--status", "open", "--format", "csv") == ["", "吴九", "张三", "李四"]
    # Overdue: still pending more than 7 days after the request; 张三 was visited, so only 李四 (minute 2).
    expected = sorted(name for key, name in (("B", "李四"), ("E", ""), ("G", "吴九")) if people[key].id < 4)
    assert households("--overdue", "--format", "json") == expected
    assert households("--overdue", "--format", "csv") == expected


# --- the readers only read ------------------------------------------------------------------------------


def test_the_report_readers_write_nothing(session: Session, township, tmp_path) -> None:
    """Items are kept by the interview (and the repair sync); a list or report read never creates one, even
    for answers that call for an item they do not have yet."""
    from reports.cadres import cadre_overview
    from reports.render import render

    round_, cadres, _people = township
    session.commit()
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        office = followup_report(session, round_.id)
        own = cadre_list(session, cadres["lin"].id)
        one_round = cadre_list(session, cadres["lin"].id, round_id=round_.id)
        supervision = cadre_overview(session, round_.id)
        rates = village_rates(session, round_.id)
        for fmt in ("csv", "xlsx"):
            with open(tmp_path / f"followups.{fmt}", "wb") as handle:
                render(followups.followup_report(session, round_.id, stream=True), fmt, handle)
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    assert statements, "the listener saw the readers' statements"
    assert [s for s in statements if s.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE", "REPLACE")] == []
    assert office["items"] == own["items"] == one_round["items"] == []  # nothing was synced: nothing listed
    assert supervision.cadres and rates["villages"]
    assert session.scalar(select(func.count()).select_from(FollowUp)) == 0
