"""Notices in the domain core: the message (opt-out line, segments), the hold-out draw, creating a notice and a
pre-survey notice through ``sanlv``, the lifecycle, SMS status callbacks in order, and TD opt-outs."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from campaigns import notices
from campaigns.models import (
    DoNotCall,
    Notice,
    NoticeChannel,
    NoticeStatus,
    NoticeTarget,
    NoticeTargetState,
    SmsOptOut,
)
from campaigns.notices import (
    NoticeError,
    NoticeOptions,
    apply_message_status,
    change_notice,
    claim_due,
    create_notice,
    draw_holdout,
    is_opt_out_reply,
    record_inbound_sms,
    record_sms_sent,
    segment_count,
    with_opt_out,
)
from tests.campaigns.test_cli import one_line_error, sanlv
from tests.factories import make_cadre, make_household, make_notice, make_notice_target, make_village


def seed(sessions: sessionmaker[Session], sizes: tuple[int, ...]) -> list[int]:
    """Villages of these sizes; returns the village ids."""
    ids = []
    with sessions() as s:
        for size in sizes:
            village = make_village(s)
            cadre = make_cadre(s)
            for _ in range(size):
                make_household(s, village, cadre)
            ids.append(village.id)
        s.commit()
    return ids


# --- the message ------------------------------------------------------------------------------------------


def test_every_message_ends_with_the_opt_out_line_once() -> None:
    assert with_opt_out("请注意防范电信诈骗。") == "请注意防范电信诈骗。回复TD退订"
    assert with_opt_out("请注意防范电信诈骗。回复TD退订") == "请注意防范电信诈骗。回复TD退订"


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [
        ("平" * 70, "UCS-2", 1),
        ("平" * 71, "UCS-2", 2),  # concatenated: 67 a part
        ("平" * 134, "UCS-2", 2),
        ("平" * 135, "UCS-2", 3),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),  # 153 a part
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("{" * 80, "GSM-7", 1),  # extension characters take two septets
        ("{" * 81, "GSM-7", 2),
        ("Hi 平安", "UCS-2", 1),  # one Chinese character makes the whole message UCS-2
    ],
)
def test_segments_are_counted_as_the_network_splits_them(body: str, encoding: str, segments: int) -> None:
    counted = segment_count(body)
    assert (counted.encoding, counted.segments) == (encoding, segments)


@pytest.mark.parametrize("body", ["TD", "td", " 退订 ", "STOP", "Stop!", "退订。"])
def test_opt_out_replies_are_recognised(body: str) -> None:
    assert is_opt_out_reply(body) is not None


@pytest.mark.parametrize("body", ["好的", "TD 谢谢", "", "收到"])
def test_other_replies_are_not_opt_outs(body: str) -> None:
    assert is_opt_out_reply(body) is None


# --- the hold-out -----------------------------------------------------------------------------------------


def test_holdout_is_reproducible_by_seed_and_balanced_by_village() -> None:
    sizes = {1: 50, 2: 31, 3: 7, 4: 120, 5: 1}
    members = [(v * 1000 + i, v) for v, n in sizes.items() for i in range(n)]

    first = draw_holdout(members, 0.2, seed=7)
    again = draw_holdout(list(reversed(members)), 0.2, seed=7)
    other = draw_holdout(members, 0.2, seed=8)

    assert first == again  # the same seed draws the same households, whatever the order given
    assert first != other
    per_village = Counter(h // 1000 for h in first)
    for village, n in sizes.items():
        assert abs(per_village[village] - 0.2 * n) <= 0.5, (village, per_village[village], n)
    assert draw_holdout(members, 0.0, seed=7) == set()


def test_holdout_is_random_within_a_village() -> None:
    # Over many seeds every household of a village is held out about as often as any other.
    members = [(i, 1) for i in range(10)]
    counts = Counter(h for seed in range(2000) for h in draw_holdout(members, 0.3, seed))
    assert set(counts) == set(range(10))
    assert max(counts.values()) - min(counts.values()) < 200  # each about 600 of 2000


def test_a_changed_village_leaves_the_others_draw_alone() -> None:
    members = [(i, 1) for i in range(40)] + [(100 + i, 2) for i in range(40)]
    grown = members + [(200, 2)]
    before = {h for h in draw_holdout(members, 0.25, 3) if h < 100}
    after = {h for h in draw_holdout(grown, 0.25, 3) if h < 100}
    assert before == after


def test_created_notice_stores_who_was_held_out(sessions: sessionmaker[Session], env) -> None:
    villages = seed(sessions, (40, 25, 10))
    options = NoticeOptions(name="防诈", channel=NoticeChannel.SMS, text="请防范电信诈骗", holdout=0.2, seed=7)
    with sessions() as s:
        notice_id = create_notice(s, options).id
        s.commit()
    with sessions() as s:
        rows = s.execute(
            select(NoticeTarget.household_id, NoticeTarget.village_id, NoticeTarget.held_out, NoticeTarget.state).where(
                NoticeTarget.notice_id == notice_id
            )
        ).all()
        text = s.get(Notice, notice_id).text
    assert len(rows) == 75
    held = {r.household_id for r in rows if r.held_out}
    assert all(r.state == NoticeTargetState.HELD_OUT for r in rows if r.held_out)
    assert all(r.state == NoticeTargetState.PENDING for r in rows if not r.held_out)
    assert Counter(r.village_id for r in rows if r.held_out) == {villages[0]: 8, villages[1]: 5, villages[2]: 2}
    assert held == draw_holdout([(r.household_id, r.village_id) for r in rows], 0.2, 7)
    assert text.endswith("回复TD退订")


# --- the command line -------------------------------------------------------------------------------------


def test_notice_create_shows_segments_and_launches(sessions: sessionmaker[Session], env) -> None:
    seed(sessions, (10, 10))
    text = "平安建设宣传：" + "请大家提高防范意识，" * 8
    created = sanlv(
        "notice",
        "create",
        "--name",
        "宣传",
        "--channel",
        "sms",
        "--text",
        text,
        "--holdout",
        "0.2",
        "--seed",
        "7",
        "--window",
        "00:00-24:00",
        "--cps",
        "5",
    )
    assert created.exit_code == 0, created.output
    notice_id = int(created.stdout.strip())
    expected = segment_count(with_opt_out(text))
    assert expected.segments == 2
    assert f"{expected.segments} 条 / segment(s)" in created.stderr
    assert "16 households to send, 4 held out, 32 segments in all" in created.stderr

    status = json.loads(sanlv("notice", "status", str(notice_id), "--format", "json").stdout)
    assert status["status"] == "draft"
    assert status["segments"] == 2 and status["held_out"] == 4 and status["targets"]["pending"] == 16

    assert sanlv("notice", "launch", str(notice_id)).stdout.strip() == f"notice {notice_id}: running"
    assert sanlv("notice", "pause", str(notice_id)).stdout.strip() == f"notice {notice_id}: paused"
    assert one_line_error(sanlv("notice", "pause", str(notice_id))) == (
        f"notice {notice_id}: cannot pause: it is already paused"
    )
    assert sanlv("notice", "cancel", str(notice_id)).exit_code == 0
    status = json.loads(sanlv("notice", "status", str(notice_id), "--format", "json").stdout)
    assert status["status"] == "cancelled"
    assert status["targets"]["cancelled"] == 16 and status["targets"]["held_out"] == 4


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--channel", "sms"], "--text: an SMS notice needs its text"),
        (["--channel", "sms", "--text", "x", "--holdout", "0.2"], "--seed: a hold-out needs a seed"),
        (["--channel", "sms", "--text", "x", "--holdout", "1.5", "--seed", "1"], "--holdout: 1.5 must be"),
        (["--channel", "voice"], "--text or --recording: a voice notice"),
        (["--channel", "sms", "--text", "x", "--sample", "street:2"], "--sample: 'street:2'"),
        (["--channel", "sms", "--text", "x", "--cps", "0"], "--cps: must be greater than 0"),
        (["--channel", "sms", "--text", "x", "--window", "25:00-26:00"], "--window"),
    ],
)
def test_bad_notice_options_are_one_line_errors(sessions, env, args: list[str], reason: str) -> None:
    seed(sessions, (3,))
    error = one_line_error(sanlv("notice", "create", "--name", "n", *args))
    assert reason in error
    with sessions() as s:
        assert s.scalar(select(Notice.id)) is None  # nothing half-written


def test_round_create_notify_makes_a_presurvey_notice_launched_with_the_round(sessions, env) -> None:
    seed(sessions, (20, 10))
    starts = (
        (datetime.now(UTC) + timedelta(days=3)).astimezone(env.tz).replace(hour=9, minute=0, second=0, microsecond=0)
    )
    created = sanlv(
        "round",
        "create",
        "--name",
        "秋季",
        "--starts-at",
        starts.isoformat(timespec="minutes"),
        "--notify",
        "县综治办将开展平安建设电话调查",
        "--notify-holdout",
        "0.5",
        "--notify-seed",
        "3",
    )
    assert created.exit_code == 0, created.output
    round_id = int(created.stdout.strip())
    with sessions() as s:
        notice = s.scalar(select(Notice).where(Notice.round_id == round_id))
        assert notice is not None and notice.status == NoticeStatus.DRAFT
        assert f"{starts.month}月{starts.day}日" in notice.text and notice.text.endswith("回复TD退订")
        targets = s.scalars(select(NoticeTarget).where(NoticeTarget.notice_id == notice.id)).all()
        assert sum(t.held_out for t in targets) == 15
        due = {t.next_attempt_at for t in targets if not t.held_out}
        assert len(due) == 1
        (when,) = due
        assert when.astimezone(env.tz).date() == starts.date() - timedelta(days=1)
        notice_id = notice.id
    assert sanlv("round", "launch", str(round_id)).exit_code == 0
    with sessions() as s:
        assert s.get(Notice, notice_id).status == NoticeStatus.RUNNING
    assert sanlv("round", "cancel", str(round_id)).exit_code == 0
    with sessions() as s:
        assert s.get(Notice, notice_id).status == NoticeStatus.CANCELLED


# --- sending, callbacks and opt-outs ----------------------------------------------------------------------


def test_status_callbacks_apply_in_order_and_never_backwards(session: Session) -> None:
    notice = make_notice(session, status=NoticeStatus.RUNNING)
    target = make_notice_target(session, notice)
    (claim,) = claim_due(session, notice, datetime.now(UTC), 10)
    assert record_sms_sent(session, claim.target_id, "SM" + "1" * 32, "queued", datetime.now(UTC))
    assert not record_sms_sent(session, claim.target_id, "SM" + "2" * 32, "queued", datetime.now(UTC))

    sid = "SM" + "1" * 32
    assert apply_message_status(session, sid, "sent", None) == "applied"
    assert apply_message_status(session, sid, "queued", None) == "stale"  # late, older
    assert apply_message_status(session, sid, "sent", None) == "stale"  # duplicated
    assert apply_message_status(session, sid, "delivered", None) == "applied"
    assert apply_message_status(session, sid, "undelivered", "30003") == "stale"  # a final is never replaced
    assert apply_message_status(session, "SM" + "9" * 32, "sent", None) == "unknown-message"
    assert apply_message_status(session, sid, "bogus", None) == "unknown-status"
    session.refresh(target)
    assert (target.state, target.provider_status, target.delivered) == (NoticeTargetState.SENT, "delivered", True)


def test_a_td_reply_opts_the_number_out_of_sms_only(session: Session) -> None:
    notice = make_notice(session, status=NoticeStatus.RUNNING)
    voice = make_notice(session, status=NoticeStatus.RUNNING, channel=NoticeChannel.VOICE, text="请注意安全")
    household = make_household(session)
    sms_target = make_notice_target(session, notice, household)
    voice_target = make_notice_target(session, voice, household)

    assert record_inbound_sms(session, household.phone, "退订", "SM" + "3" * 32) == "退订"
    assert record_inbound_sms(session, household.phone, "TD", "SM" + "4" * 32) == "TD"  # once on the list
    assert record_inbound_sms(session, household.phone, "谢谢", "SM" + "5" * 32) is None

    session.refresh(sms_target)
    session.refresh(voice_target)
    assert sms_target.state == NoticeTargetState.OPTED_OUT
    assert voice_target.state == NoticeTargetState.PENDING
    assert session.scalars(select(SmsOptOut.phone)).all() == [household.phone]
    assert session.scalar(select(DoNotCall).filter_by(phone=household.phone)) is None
    # A later SMS notice leaves the number out.
    with pytest.raises(NoticeError, match="no household"):
        create_notice(session, NoticeOptions(name="再次", channel=NoticeChannel.SMS, text="x"))


def test_claims_are_made_once_and_skip_numbers_opted_out_since(session: Session) -> None:
    notice = make_notice(session, status=NoticeStatus.RUNNING)
    targets = [make_notice_target(session, notice) for _ in range(3)]
    make_notice_target(session, notice, held_out=True)
    session.add(SmsOptOut(phone=targets[0].phone, keyword="TD"))
    session.flush()
    now = datetime.now(UTC)
    claims = claim_due(session, notice, now, 10)
    assert [c.target_id for c in claims] == [targets[1].id, targets[2].id]
    assert claim_due(session, notice, now, 10) == []
    session.refresh(targets[0])
    assert targets[0].state == NoticeTargetState.OPTED_OUT
    change_notice(session, notice.id, "pause")  # unsent claims go back
    session.expire_all()
    assert {
        t.state
        for t in session.scalars(select(NoticeTarget).where(NoticeTarget.id.in_([targets[1].id, targets[2].id])))
    } == {NoticeTargetState.PENDING}
    assert notices.complete_if_done(session, notice.id) is False
