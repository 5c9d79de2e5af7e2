"""Retiring, forgetting and retaining residents' data, through the ``sanlv`` commands on the real database and
Redis: reports of the rounds concerned print the same figures before and after."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import String, Text, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from campaigns.db import Base
from campaigns.followups import sync_all_rounds
from campaigns.models import (
    AuditEntry,
    CallAttempt,
    CallStatus,
    DoNotCall,
    FollowUp,
    FollowUpEvent,
    Household,
    KeyPress,
    NoticeTarget,
    Response,
    Round,
    RoundStatus,
    RoundTarget,
    SmsOptOut,
    TargetState,
)
from campaigns.rounds import RoundOptions, create_round
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings, load_settings
from sim.residents import script_key, set_script
from sim.store import CallStore, SimCall, transcript_key
from tests.campaigns.test_cli import one_line_error, sanlv
from tests.factories import make_notice, make_notice_target
from tests.reports.scenarios import visits_township
from workers.queues import redis_connection

PHONE_A = "+8613811110001"  # 张三, 东村, asked for a visit
DIGITS_A = "13811110001"


def finished_township(sessions: sessionmaker[Session], days_ago: int = 400) -> int:
    """The reports' township round, finished ``days_ago`` days ago, with follow-up notes, a call and its keys."""
    with sessions() as session:
        visits = visits_township(session)
        round_ = visits.round
        for person in visits.people.values():
            target = session.get(RoundTarget, person.target_id)
            if target.state not in (TargetState.COMPLETED,):
                target.state = TargetState.UNREACHABLE
        sync_all_rounds(session)
        for item in session.scalars(select(FollowUp)):
            item.note = "邻居说他常年在外" + (", 电话 13811110001" if item.response_id == visits.people["A"].id else "")
            session.add(FollowUpEvent(follow_up_id=item.id, status=item.status, note="已联系", actor="林建明"))
        response_a = visits.people["A"]
        attempt = CallAttempt(
            round_id=round_.id, target_id=response_a.target_id, number=1, call_sid="CA" + "a" * 32,
            status=CallStatus.COMPLETED, error_message="call to +8613811110001 ended",
        )  # fmt: skip
        session.add(attempt)
        session.flush()
        session.add(KeyPress(response_id=response_a.id, attempt_id=attempt.id, seq=1, step="consent", try_number=1,
                             digits="1", outcome="answer"))  # fmt: skip
        round_.status = RoundStatus.COMPLETED
        round_.finished_at = datetime.now(UTC) - timedelta(days=days_ago)
        session.commit()
        return round_.id


def reports(round_id: int, *, followups: bool = True) -> dict[str, str]:
    out = {}
    for name in ("rates", "cadres"):
        for fmt in ("json", "csv"):
            result = sanlv("report", name, str(round_id), "--format", fmt)
            assert result.exit_code == 0, result.output
            out[f"{name}.{fmt}"] = result.stdout
    if followups:
        result = sanlv("report", "followups", str(round_id), "--format", "json")
        assert result.exit_code == 0, result.output
        out["followups.json"] = result.stdout
    return out


def text_cells(session: Session) -> list[tuple[str, str, str]]:
    """Every text cell of every table (table, column, value): where a number could hide."""
    found = []
    for table in Base.metadata.sorted_tables:
        columns = [c for c in table.columns if isinstance(c.type, String | Text) or c.type.__class__.__name__ == "JSON"]
        for column in columns:
            for (value,) in session.execute(select(column).where(column.is_not(None))):
                found.append(
                    (
                        table.name,
                        column.name,
                        json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value,
                    )
                )
    return found


# --- data retain --------------------------------------------------------------------------------------------


def test_retain_pseudonymises_old_rounds_and_every_report_prints_the_same(env: Settings, sessions) -> None:
    old = finished_township(sessions, days_ago=400)
    before = reports(old)

    dry = sanlv("data", "retain", "--older-than", "365", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"round {old} 2026年上半年" in dry.stdout and "would pseudonymise 1 rounds" in dry.stdout
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(RoundTarget).where(RoundTarget.phone.is_(None))) == 0

    assert sanlv("data", "retain", "--older-than", "500").stdout.startswith("pseudonymised 0 rounds")
    done = sanlv("data", "retain", "--older-than", "365")
    assert done.exit_code == 0, done.output
    assert "pseudonymised 1 rounds" in done.stdout

    after = reports(old)
    for name in ("rates.json", "rates.csv", "cadres.json", "cadres.csv"):
        assert after[name] == before[name], name
    # The follow-up list keeps its figures and villages; names, numbers and notes are gone.
    items_before = json.loads(before["followups.json"])["items"]
    items_after = json.loads(after["followups.json"])["items"]
    keep = ("id", "village", "cadre", "negatives", "concern", "status", "created_at", "overdue")
    assert [{k: i[k] for k in keep} for i in items_after] == [{k: i[k] for k in keep} for i in items_before]
    assert all(i["household"] is None and i["phone"] == "" and i["note"] is None for i in items_after)
    assert any(i["household"] == "张三" for i in items_before)

    with sessions() as session:
        assert session.scalar(select(Round.retained_at).where(Round.id == old)) is not None
        targets = session.execute(select(RoundTarget.phone, RoundTarget.household_id, RoundTarget.cadre_id)).all()
        assert all(phone is None and household is None and cadre is not None for phone, household, cadre in targets)
        assert session.scalar(select(func.count()).select_from(Household)) == 7  # the roster is not touched
        assert session.scalars(select(CallAttempt.call_sid)).all() == [None]
        assert session.scalar(select(func.count()).select_from(KeyPress)) == 1  # paradata kept
        assert {e.note for e in session.scalars(select(FollowUpEvent))} == {None}
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "data.retain"))
        assert entry is not None and entry.detail["rounds"] == [old]
    again = sanlv("data", "retain", "--older-than", "365")
    assert "pseudonymised 0 rounds" in again.stdout


def test_retain_takes_its_default_from_the_environment(env: Settings, sessions, monkeypatch) -> None:
    finished_township(sessions, days_ago=40)
    assert one_line_error(sanlv("data", "retain", "--older-than")) == (
        "--older-than: give DAYS, or set SANLV_RETENTION_DAYS"
    )
    assert "not a whole number" in one_line_error(sanlv("data", "retain", "--older-than", "1y"))
    monkeypatch.setenv("SANLV_RETENTION_DAYS", "30")
    set_runtime(Runtime(load_settings(dotenv=None)))
    result = sanlv("data", "retain", "--older-than", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would pseudonymise 1 rounds and 0 notices finished more than 30 days ago" in result.stdout


# --- household forget ---------------------------------------------------------------------------------------


def test_forget_erases_the_number_everywhere_and_keeps_the_rates(env: Settings, sessions, tmp_path) -> None:
    old = finished_township(sessions)
    with sessions() as session:
        household_a = session.scalar(select(Household).where(Household.phone == PHONE_A))
        make_notice_target(session, make_notice(session), household_a, message_sid="SM" + "b" * 32)
        session.add(SmsOptOut(phone=PHONE_A, keyword="TD"))
        session.commit()
    before = reports(old, followups=False)
    store = CallStore(env)
    store.create(SimCall(sid="CA" + "a" * 32, to=PHONE_A, from_="+8610000000", url="", status_callback=""))
    store.append("CA" + "a" * 32, {"step": "consent", "digits": "1"})
    set_script(env, PHONE_A, {"outcome": "answer"})
    conn = redis_connection(env)
    assert conn.exists(script_key(env, PHONE_A), transcript_key(env, "CA" + "a" * 32)) == 2

    assert "a reason is required" in one_line_error(sanlv("household", "forget", DIGITS_A, "--reason", " "))
    result = sanlv("household", "forget", DIGITS_A, "--reason", "居民书面申请删除 (个人信息保护法第47条)")
    assert result.exit_code == 0, result.output
    assert "138****0001" in result.stdout and DIGITS_A not in result.stdout

    after = reports(old, followups=False)
    assert after["rates.json"] == before["rates.json"]
    assert after["rates.csv"] == before["rates.csv"]
    # Per cadre, the survey figures are the same; the roster count and the follow-up items (deleted with the
    # number) of the forgotten household's cadre drop.
    cadres_before, cadres_after = json.loads(before["cadres.json"]), json.loads(after["cadres.json"])
    for old_entry, new_entry in zip(
        [*cadres_before["cadres"], cadres_before["total"]],
        [*cadres_after["cadres"], cadres_after["total"]],
        strict=True,
    ):
        changed = {key for key in old_entry if old_entry[key] != new_entry[key]}
        if old_entry["cadre"] == "陈志强":
            assert changed == set()
        else:
            assert old_entry["households"] - new_entry["households"] == 1
            assert changed <= {"households", "followups", "open_followups", "overdue_followups"}, changed
            assert {"sampled", "reached", "contact"} & set(old_entry) and not {"sampled", "reached"} & changed

    with sessions() as session:
        hits = [cell for cell in text_cells(session) if DIGITS_A in cell[2] or "张三" in cell[2]]
        assert hits == []
        entry = session.scalar(select(DoNotCall))
        assert entry.phone is None and len(entry.phone_hash) == 64
        assert session.scalar(select(func.count()).select_from(KeyPress)) == 0
        assert session.scalar(select(func.count()).select_from(CallAttempt)) == 0
        assert session.scalar(select(func.count()).select_from(Response)) == 7  # anonymous, still counted
        assert session.scalar(select(func.count()).select_from(NoticeTarget)) == 0
        audit_entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "household.forget"))
        assert audit_entry is not None and audit_entry.object_id is None
    assert conn.exists(script_key(env, PHONE_A), transcript_key(env, "CA" + "a" * 32)) == 0
    assert conn.zcard(f"{env.namespace}:sim:calls:{PHONE_A}") == 0

    # The number is still never called: a roster that brings it back puts it on the list in clear again.
    assert one_line_error(sanlv("household", "forget", "13899990000", "--reason", "x")).startswith("138****0000")
    with sessions() as session:
        session.execute(update(Round).values(status=RoundStatus.COMPLETED))
        session.commit()
    roster = tmp_path / "roster.csv"
    with roster.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["村", "户主", "电话", "包户干部"], ["东村", "张三", DIGITS_A, "林建明"]])
    imported = sanlv("roster", "import", str(roster))
    assert imported.exit_code == 0, imported.output
    assert "1 on the do-not-call list (erased on request) stay on it" in imported.stdout
    with sessions() as session:
        assert session.scalar(select(DoNotCall.phone)) == PHONE_A
        round_ = create_round(session, RoundOptions(name="下一轮"))
        sampled = session.scalars(select(RoundTarget.phone).where(RoundTarget.round_id == round_.id)).all()
        assert PHONE_A not in sampled and len(sampled) == 6


def test_forget_refuses_a_number_in_a_call_and_an_unknown_one(env: Settings, sessions) -> None:
    finished_township(sessions)
    with sessions() as session:
        session.execute(update(CallAttempt).values(status=CallStatus.IN_PROGRESS))
        session.commit()
    assert "in a call" in one_line_error(sanlv("household", "forget", DIGITS_A, "--reason", "申请"))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Household).where(Household.phone == PHONE_A)) == 1
    assert "no household" in one_line_error(sanlv("household", "forget", "13700000000", "--reason", "申请"))
