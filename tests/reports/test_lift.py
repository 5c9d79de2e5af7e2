"""The lift of a notice: rates of the households sent it against those held out, intention to treat with
delivered-only beside it, per village and for the township, in every format."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns import privacy
from campaigns.models import (
    Household,
    Notice,
    NoticeArm,
    NoticeStatus,
    NoticeTarget,
    NoticeTargetState,
    ResponseStatus,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from reports import lift
from reports.cli import report_group
from reports.rates import ReportError
from reports.render import render_bytes
from reports.stats import newcombe_interval, two_proportion_test
from tests.campaigns.test_cli import sanlv
from tests.factories import (
    interview_answers,
    make_household,
    make_interview,
    make_notice,
    make_notice_target,
    make_round,
    make_target,
    make_village,
)


def household_with(session, round_, notice, village, *, arm: str, awareness: str | None, status=None):
    """A household of ``village`` in the notice (``arm``: delivered, undelivered, held_out) and in the round,
    whose interview answered ``awareness`` (None: not reached)."""
    household = make_household(session, village=village)
    if arm == "held_out":
        make_notice_target(session, notice, household, held_out=True)
    else:
        make_notice_target(
            session, notice, household, delivered=arm == "delivered",
            state=NoticeTargetState.SENT if arm == "delivered" else NoticeTargetState.FAILED,
        )  # fmt: skip
    if awareness is None and status is None:
        make_target(session, round_, household, state=TargetState.UNREACHABLE, attempts=3)
        return
    answers = interview_answers(awareness=awareness or "1")
    if status is not None:
        answers = {"consent": "1", "screen": "2"}
    make_interview(session, round_, answers, household=household, status=status or ResponseStatus.COMPLETED)


@pytest.fixture
def trial(session: Session):
    """东村: 20 delivered (18 know), 10 undelivered (6 know), 20 held out (12 know), 4 held out not reached,
    2 held out ineligible. 西村: 10 delivered (10 know), 10 held out (5 know). Plus a household of the notice
    that the round did not sample, and one the round sampled that the notice did not target."""
    round_ = make_round(session, status=RoundStatus.COMPLETED, name="2026年下半年")
    notice = make_notice(session, name="平安短信", holdout=0.4, seed=7)
    east, west = make_village(session, name="东村"), make_village(session, name="西村")
    for arm, knows, count in (("delivered", 18, 20), ("undelivered", 6, 10), ("held_out", 12, 20)):
        for index in range(count):
            household_with(session, round_, notice, east, arm=arm, awareness="1" if index < knows else "2")
    for _ in range(4):
        household_with(session, round_, notice, east, arm="held_out", awareness=None)
    for _ in range(2):
        household_with(session, round_, notice, east, arm="held_out", awareness=None, status=ResponseStatus.INELIGIBLE)
    for arm, knows, count in (("delivered", 10, 10), ("held_out", 5, 10)):
        for index in range(count):
            household_with(session, round_, notice, west, arm=arm, awareness="1" if index < knows else "2")
    make_notice_target(session, notice, make_household(session, village=east), delivered=True)  # not sampled
    make_interview(session, round_, interview_answers(awareness="2"), village=east)  # not in the notice
    session.flush()
    return round_, notice


def test_intention_to_treat_and_delivered_only_per_village(session: Session, trial) -> None:
    round_, notice = trial

    report = lift.notice_lift(session, round_.id, notice.id).to_json()

    assert report["notice"]["id"] == notice.id and report["notice"]["pre_survey"] is False
    assert list(report["measures"]) == ["security", "satisfaction", "awareness", "participation", "cadre_contact",
                                        "response_rate"]  # fmt: skip
    east = next(entry for entry in report["villages"] if entry["village"] == "东村")
    assert east["households"] == {"notified": 30, "delivered": 20, "held_out": 26}
    itt, delivered = east["itt"]["awareness"], east["delivered"]["awareness"]
    assert (itt["notified"]["positive"], itt["notified"]["valid"]) == (24, 30)
    assert (itt["held_out"]["positive"], itt["held_out"]["valid"]) == (12, 20)
    assert itt["difference"] == pytest.approx(0.8 - 0.6)
    assert (itt["ci_low"], itt["ci_high"]) == pytest.approx(newcombe_interval(24, 30, 12, 20))
    assert itt["p_value"] == pytest.approx(two_proportion_test(12, 20, 24, 30).p_value)
    # Delivered only: the 20 the text reached against the same held-out households.
    assert (delivered["notified"]["positive"], delivered["notified"]["valid"]) == (18, 20)
    assert delivered["held_out"] == itt["held_out"]
    assert delivered["difference"] == pytest.approx(0.9 - 0.6)
    assert (delivered["ci_low"], delivered["ci_high"]) == pytest.approx(newcombe_interval(18, 20, 12, 20))
    assert delivered["significant"] and delivered["difference"] > itt["difference"]
    # The response rate: completed over sampled in scope (ineligible left out).
    response = east["itt"]["response_rate"]
    assert (response["notified"]["positive"], response["notified"]["valid"]) == (30, 30)
    assert (response["held_out"]["positive"], response["held_out"]["valid"]) == (20, 24)
    total = report["total"]
    assert total["village"] == "全镇" and total["village_id"] is None
    assert total["households"] == {"notified": 40, "delivered": 30, "held_out": 36}
    assert (total["itt"]["awareness"]["notified"]["positive"], total["itt"]["awareness"]["notified"]["valid"]) == (
        34, 40,
    )  # fmt: skip
    assert (total["itt"]["awareness"]["held_out"]["positive"], total["itt"]["awareness"]["held_out"]["valid"]) == (
        17, 30,
    )  # fmt: skip
    # Everyone else answered positively: no difference, an interval around 0.
    security = total["itt"]["security"]
    assert security["difference"] == 0 and security["ci_low"] < 0 < security["ci_high"] and not security["significant"]


def test_too_few_answers_on_a_side_are_marked(session: Session, trial) -> None:
    round_, notice = trial

    report = lift.notice_lift(session, round_.id, notice.id, min_sample=15).to_json()

    west = next(entry for entry in report["villages"] if entry["village"] == "西村")
    assert west["itt"]["awareness"]["too_few"] is True  # 10 on each side
    assert report["total"]["itt"]["awareness"]["too_few"] is False


def test_unknown_round_notice_or_nothing_in_common(session: Session, trial) -> None:
    round_, notice = trial
    other = make_round(session)

    with pytest.raises(ReportError, match="round 999 does not exist"):
        lift.notice_lift(session, 999, notice.id)
    with pytest.raises(ReportError, match="notice 999 does not exist"):
        lift.notice_lift(session, round_.id, 999)
    with pytest.raises(ReportError, match="no household in common"):
        lift.notice_lift(session, other.id, notice.id)


def test_every_format(session: Session, trial) -> None:
    round_, notice = trial
    report = lift.notice_lift(session, round_.id, notice.id)

    table = render_bytes(report, "table").decode()
    page = render_bytes(report, "html").decode()
    csv = render_bytes(report, "csv").decode("utf-8-sig")
    workbook = load_workbook(io.BytesIO(render_bytes(report, "xlsx")))
    as_json = json.loads(render_bytes(report, "json"))

    assert f"通知 {notice.id}「平安短信」" in table and "按分配" in table and "仅送达" in table
    township = table.split("各村")[0]
    line = next(text for text in township.splitlines() if "平安建设知晓率" in text)
    # 留出组 17/30, 按分配 34/40 and its difference, 仅送达 28/30 and its difference.
    assert "56.6% (17/30)" in line and "85.0% (34/40)" in line and "93.3% (28/30)" in line
    low, high = newcombe_interval(34, 40, 17, 30)
    assert f"+28.3 [{low * 100:+.1f}, {high * 100:+.1f}]↑" in line
    assert "意向处理" in table and "仅供参考" in table
    # The printed page: self-contained, a chart per measure with both comparisons.
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert page.count("<svg") == len(report.measures)
    assert page.count('class="itt"') == page.count('class="delivered"') == len(report.measures) * 3
    header, *rows = csv.splitlines()
    assert '"按分配·差值","按分配·95%下限","按分配·95%上限"' in header and '"仅送达·差值"' in header
    assert len(rows) == 3 * len(report.measures)
    assert workbook.sheetnames == ["通知效果", "各组户数"]
    assert as_json == report.to_json() and "lines" not in as_json


def test_cli_lift(session: Session, trial, env, tmp_path) -> None:
    round_, notice = trial
    round_id, notice_id = round_.id, notice.id
    session.commit()

    table = CliRunner().invoke(report_group, ["lift", str(round_id), "--notice", str(notice_id)])
    missing = CliRunner().invoke(report_group, ["lift", str(round_id), "--notice", "999"])
    xlsx = CliRunner().invoke(report_group, ["lift", str(round_id), "--notice", str(notice_id), "--format", "xlsx"])

    assert table.exit_code == 0, table.output
    assert re.search(r"全镇\s+应答率", table.stdout)
    assert missing.exit_code == 1 and "notice 999 does not exist" in missing.output
    assert xlsx.exit_code == 2 and "--output" in xlsx.output


# --- data retain: the lift of a retained round or notice -----------------------------------------------------


def _finished(session: Session, round_, notice, days_ago: int = 400) -> None:
    ended = datetime.now(UTC) - timedelta(days=days_ago)
    round_.status, round_.finished_at = RoundStatus.COMPLETED, ended
    notice.status, notice.finished_at = NoticeStatus.COMPLETED, ended
    for index, target in enumerate(notice.targets):
        if not target.held_out:
            target.message_sid, target.error_message = f"SM{index:032x}", f"to {target.phone}: failed"
    session.flush()


@pytest.mark.parametrize("order", ["round", "notice", "round then notice", "notice then round", "both at once"])
def test_the_lift_prints_the_same_once_the_round_or_the_notice_is_retained(session: Session, trial, order) -> None:
    round_, notice = trial
    _finished(session, round_, notice)
    before = lift.notice_lift(session, round_.id, notice.id).to_json()
    year = timedelta(days=365)

    for step in order.split(" then "):
        if step in ("round", "both at once"):
            assert [r.id for r in privacy.retain_rounds(session, year)] == [round_.id]
        if step in ("notice", "both at once"):
            assert [n.id for n in privacy.retain_notices(session, year)] == [notice.id]

    assert lift.notice_lift(session, round_.id, notice.id).to_json() == before
    if "notice" in order or order == "both at once":
        rows = session.execute(
            select(NoticeTarget.phone, NoticeTarget.household_id, NoticeTarget.message_sid, NoticeTarget.error_message)
            .where(NoticeTarget.notice_id == notice.id)
        ).all()  # fmt: skip
        assert len(rows) == 77 and set(rows) == {(None, None, None, None)}
        assert session.get(Notice, notice.id).retained_at is not None
        # Its status counts stay: the arm and delivery are kept.
        delivered = select(func.count()).where(NoticeTarget.notice_id == notice.id, NoticeTarget.delivered)
        assert session.scalar(delivered) == 31
    # Each pair is recorded once, whichever side went first.
    assert session.scalar(select(func.count()).select_from(NoticeArm)) == 76


@pytest.mark.parametrize("retained", ["nothing", "notice", "round"])
def test_forgetting_a_household_and_the_lift(session: Session, trial, retained) -> None:
    round_, notice = trial
    _finished(session, round_, notice)
    if retained == "notice":
        privacy.retain_notices(session, timedelta(days=365))
    if retained == "round":
        privacy.retain_rounds(session, timedelta(days=365))
    before = {v.village: v.households for v in lift.notice_lift(session, round_.id, notice.id).villages}
    phone = session.scalar(
        select(RoundTarget.phone).where(RoundTarget.round_id == round_.id, RoundTarget.phone.is_not(None)).limit(1)
    ) if retained != "round" else session.scalar(
        select(Household.phone).join(NoticeTarget, NoticeTarget.household_id == Household.id).limit(1)
    )  # fmt: skip
    village = session.scalar(select(Household).where(Household.phone == phone)).village.name

    privacy.forget_household(session, phone, "居民要求删除")

    after = {v.village: v.households for v in lift.notice_lift(session, round_.id, notice.id).villages}
    if retained == "round":
        # The round's targets are anonymous already: the household's is not found, and stays counted, as in
        # the round's rates.
        assert after == before
    else:
        # Its notice row (or where it stood in the retained notice's draw) goes with it: one household fewer.
        assert sum(after[village].__dict__.values()) < sum(before[village].__dict__.values())
        assert {k: v for k, v in after.items() if k != village} == {k: v for k, v in before.items() if k != village}


def test_data_retain_lists_the_notices_it_pseudonymises(session: Session, trial, env) -> None:
    round_, notice = trial
    _finished(session, round_, notice)
    notice_id = notice.id
    session.commit()

    dry = sanlv("data", "retain", "--older-than", "365", "--dry-run")
    done = sanlv("data", "retain", "--older-than", "365")

    assert dry.exit_code == 0 and f"notice {notice_id} 平安短信" in dry.stdout, dry.output
    assert "would pseudonymise 1 rounds and 1 notices" in dry.stdout
    assert done.exit_code == 0 and "pseudonymised 1 rounds and 1 notices" in done.stdout, done.output
    assert "(已去标识: 1轮, 1条通知)" in done.stdout
