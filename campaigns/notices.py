"""Notices: SMS and voice broadcasts to the roster, with a random hold-out stratified by village.

A notice is created as a draft: its targets are sampled (``all``, ``village:N``, ``cadre:N``) and the hold-out
is drawn and stored (``notice_targets.held_out``), so the lift report can later compare the households that were
sent the notice with those that were not. Launch, pause, resume and cancel work as for a round; the messaging
worker (``workers.messaging``) claims due targets with a conditional UPDATE and sends each exactly once.

Exactly-once sending follows the dialler's rule: a send is marked "create started" (``create_started_at``) in
its own commit just before the request goes out; whoever finds that mark later looks the message (or call) up
at the provider before doing anything else, and adopts it if it exists.

SMS status callbacks are applied in Twilio's order (queued, sending, sent, then delivered, undelivered or
failed), never backwards. Every SMS ends with the opt-out line (回复TD退订); a reply of TD / 退订 / STOP puts
the number on the SMS do-not-contact list (``sms_opt_outs``), and the number's pending SMS targets are skipped.

Services take a Session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.errors import SanlvError
from campaigns.models import (
    FINAL_MESSAGE_STATUSES,
    FINAL_NOTICE_TARGET_STATES,
    MESSAGE_STATUS_ORDER,
    DoNotCall,
    Household,
    Notice,
    NoticeChannel,
    NoticeStatus,
    NoticeTarget,
    NoticeTargetState,
    PhoneStatus,
    Round,
    RoundTarget,
    SmsOptOut,
)
from campaigns.phones import PhoneNumberError, mask, normalise
from campaigns.recordings import RecordingError, check_audio
from campaigns.schedule import DEFAULT_WINDOWS, ScheduleError, next_open, parse_windows
from campaigns.settings import Settings

OPT_OUT_LINE = "回复TD退订"
OPT_OUT_KEYWORDS = frozenset({"TD", "退订", "STOP", "T", "UNSUBSCRIBE"})
TEXT_MAX_CHARS = 500  # a notice is short; 500 characters is 8 Chinese segments
VOICE_RETRY_SECONDS = 1800  # a voice notice not answered (busy, no-answer) is tried again after this long
_SAMPLE = re.compile(r"^(all|village:(\d+)|cadre:(\d+))$")
RECORDINGS_KEY = "notices"  # notice recordings live in <recordings_dir>/notices/ (served at /ivr/recordings/notices/)
NOTICE_CREATE = "notice.create"  # audit actions
NOTICE_ACTIONS = {c: f"notice.{c}" for c in ("launch", "pause", "resume", "cancel")}


class NoticeError(SanlvError, ValueError):
    """A notice request is invalid (unknown notice, impossible transition, bad option). The message says why."""


# --- the message ----------------------------------------------------------------------------------------

# GSM 03.38 basic set (ASCII part) and the characters that take two septets (escape + char).
_GSM_EXTENDED = frozenset("^{}\\[~]|€")


@dataclass(frozen=True)
class Segments:
    """How an SMS body is split: its encoding, its length in characters (or septets) and its parts."""

    encoding: str  # "GSM-7" (pure ASCII) or "UCS-2" (anything else, e.g. Chinese)
    length: int
    segments: int
    per_segment: int  # characters per part: 160/153 (GSM-7) or 70/67 (UCS-2)

    def describe(self) -> str:
        return f"{self.length} 字 / chars, {self.segments} 条 / segment(s) ({self.encoding}, {self.per_segment} per segment)"


def segment_count(body: str) -> Segments:
    """The segments a body takes: 70 characters in one UCS-2 segment (Chinese), 67 per part when concatenated;
    pure ASCII is GSM-7, 160 in one segment, 153 per part (``^{}\\[~]|€`` count twice)."""
    if all(ord(ch) < 128 for ch in body):
        length = sum(2 if ch in _GSM_EXTENDED else 1 for ch in body)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        # UCS-2 counts UTF-16 code units: a character outside the BMP (an emoji) takes two.
        length = sum(2 if ord(ch) > 0xFFFF else 1 for ch in body)
        single, multi, encoding = 70, 67, "UCS-2"
    if length <= single:
        return Segments(encoding, length, 1 if length else 0, single)
    return Segments(encoding, length, math.ceil(length / multi), multi)


def with_opt_out(text: str) -> str:
    """The text with the opt-out line at its end (added once; a text that already ends with it is kept)."""
    body = text.strip()
    if body.endswith(OPT_OUT_LINE):
        return body
    return f"{body}{OPT_OUT_LINE}"


def is_opt_out_reply(body: str) -> str | None:
    """The opt-out keyword an inbound SMS is (TD, 退订, STOP; any case, surrounding spaces or punctuation),
    or None."""
    word = re.sub(r"[\s\.,!，。！]+", "", body or "").upper()
    return word if word in OPT_OUT_KEYWORDS else None


def save_notice_recording(recordings_dir: Path | str, data: bytes) -> str:
    """Check a notice's recording and store it under its content hash; returns the file name.

    Raises:
        NoticeError: not a WAV or MP3 recording fit to play (too short, too long, silent).
    """
    try:
        info = check_audio(data)
    except RecordingError as exc:
        raise NoticeError(f"--recording: {exc.summary()}") from None
    name = f"notice-{hashlib.sha256(data).hexdigest()[:16]}{info.extension}"
    folder = Path(recordings_dir) / RECORDINGS_KEY
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        temporary = folder / f".{name}.part"
        temporary.write_bytes(data)
        os.replace(temporary, path)
    return name


# --- the hold-out ---------------------------------------------------------------------------------------


def draw_holdout(members: Iterable[tuple[int, int]], fraction: float, seed: int | None) -> set[int]:
    """The households held out: in each village, ``round(fraction * n)`` of its ``n`` households, drawn at
    random.

    Args:
        members: ``(household_id, village_id)`` pairs.
        fraction: the share held out, from 0 to 1.
        seed: the draw's seed. Each village is drawn with its own generator seeded by ``(seed, village)``, so
            the same seed gives the same households, and a change in one village's roster leaves the others'
            draw as it was.

    Returns:
        The held-out household ids.
    """
    by_village: dict[int, list[int]] = defaultdict(list)
    for household_id, village_id in members:
        by_village[village_id].append(household_id)
    held: set[int] = set()
    if fraction <= 0:
        return held
    for village_id in sorted(by_village):
        households = sorted(by_village[village_id])
        count = math.floor(fraction * len(households) + 0.5)
        rng = random.Random(f"{seed}:{village_id}")
        held.update(rng.sample(households, min(count, len(households))))
    return held


# --- creating a notice ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoticeOptions:
    name: str
    channel: NoticeChannel
    text: str | None = None
    recording: str | None = None
    sample: str = "all"
    sample_seed: int | None = None
    holdout: float = 0.0
    seed: int | None = None
    windows: list[list[str]] = field(default_factory=lambda: [list(w) for w in DEFAULT_WINDOWS])
    cps: float = 1.0
    max_attempts: int = 3
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    @classmethod
    def from_cli(cls, settings: Settings, **raw) -> NoticeOptions:
        """Parse the ``notice create`` options; raises NoticeError naming the option."""
        name = (raw.get("name") or "").strip()
        if not name:
            raise NoticeError("--name: must not be empty")
        try:
            channel = NoticeChannel((raw.get("channel") or "").strip().lower())
        except ValueError:
            raise NoticeError(f"--channel: {raw.get('channel')!r} must be sms or voice") from None
        values: dict = {"name": name, "channel": channel}
        for key in ("text", "recording"):
            if raw.get(key) is not None:
                values[key] = raw[key]
        if raw.get("sample"):
            values["sample"] = raw["sample"].strip()
        if raw.get("sample_seed") is not None:
            values["sample_seed"] = raw["sample_seed"]
        if raw.get("holdout") is not None:
            values["holdout"] = raw["holdout"]
        if raw.get("seed") is not None:
            values["seed"] = raw["seed"]
        if raw.get("windows") is not None:
            try:
                values["windows"] = parse_windows(raw["windows"])
            except ScheduleError as exc:
                raise NoticeError(str(exc)) from None
        if raw.get("cps") is not None:
            values["cps"] = raw["cps"]
        if raw.get("max_attempts") is not None:
            values["max_attempts"] = raw["max_attempts"]
        for option, key in (("--starts-at", "starts_at"), ("--ends-at", "ends_at")):
            if raw.get(key):
                values[key] = parse_local_time(raw[key], settings.tz, option)
        options = cls(**values)
        options.validate()
        return options

    def validate(self) -> None:
        text = (self.text or "").strip()
        if self.channel == NoticeChannel.SMS:
            if not text:
                raise NoticeError("--text: an SMS notice needs its text")
            if self.recording:
                raise NoticeError("--recording: an SMS notice has no recording (give --text only)")
        elif not text and not self.recording:
            raise NoticeError("--text or --recording: a voice notice plays a recording or speaks a text")
        if len(text) > TEXT_MAX_CHARS:
            raise NoticeError(f"--text: {len(text)} characters is too long (at most {TEXT_MAX_CHARS})")
        match = _SAMPLE.match(self.sample)
        if not match or int(match.group(2) or match.group(3) or 1) < 1:
            raise NoticeError(f"--sample: {self.sample!r} must be all, village:N or cadre:N (N at least 1)")
        if not 0 <= self.holdout < 1:
            raise NoticeError(f"--holdout: {self.holdout:g} must be at least 0 and below 1 (0.2 holds out 20%)")
        if self.holdout > 0 and self.seed is None:
            raise NoticeError("--seed: a hold-out needs a seed, so who was held out can be drawn again")
        if not 0 < self.cps <= 100:
            raise NoticeError("--cps: must be greater than 0 and at most 100 per second")
        if self.max_attempts < 1:
            raise NoticeError("--max-attempts: must be at least 1")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise NoticeError("--ends-at: must be after --starts-at")
        try:
            parse_windows(",".join(f"{start}-{end}" for start, end in self.windows))
        except ScheduleError as exc:
            raise NoticeError(str(exc)) from None


def parse_local_time(text: str, tz: ZoneInfo, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise NoticeError(f"{option}: {text!r} is not an ISO time like 2026-12-01T20:30") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def _contactable(channel: NoticeChannel):
    """Households a notice may reach on ``channel``: a valid number still on the roster, not on the do-not-call
    list, and for SMS not on the SMS opt-out list either."""
    clauses = [
        Household.phone_status == PhoneStatus.OK,
        Household.retired_at.is_(None),
        ~select(DoNotCall.phone).where(DoNotCall.phone == Household.phone).exists(),
    ]
    if channel == NoticeChannel.SMS:
        clauses.append(~select(SmsOptOut.phone).where(SmsOptOut.phone == Household.phone).exists())
    return and_(*clauses)


def create_notice(session: Session, options: NoticeOptions) -> Notice:
    """Create a draft notice, sample its households and draw (and store) its hold-out."""
    options.validate()
    notice = _new_notice(session, options)
    rows = session.execute(
        select(Household.id, Household.village_id, Household.cadre_id, Household.phone)
        .where(_contactable(options.channel))
        .order_by(Household.id)
    ).all()
    match = _SAMPLE.match(options.sample)
    assert match is not None
    if match.group(1) != "all":
        per = int(match.group(2) or match.group(3))
        rng = random.Random(options.sample_seed)
        groups: dict[object, list] = defaultdict(list)
        for row in rows:
            groups[row.village_id if match.group(2) else row.cadre_id].append(row)
        chosen = []
        for key in sorted(groups, key=lambda k: (k is None, k or 0)):
            members = groups[key]
            chosen.extend(members if len(members) <= per else rng.sample(members, per))
        rows = sorted(chosen, key=lambda r: r.id)
    if not rows:
        raise NoticeError("the roster has no household this notice may reach (import one with `sanlv roster import`)")
    _insert_targets(session, notice, [(r.id, r.village_id, r.phone) for r in rows], None)
    return notice


def _new_notice(session: Session, options: NoticeOptions, round_id: int | None = None) -> Notice:
    text = options.text.strip() if options.text else None
    if text and options.channel == NoticeChannel.SMS:
        text = with_opt_out(text)
    notice = Notice(
        name=options.name,
        channel=options.channel,
        text=text,
        recording=options.recording,
        status=NoticeStatus.DRAFT,
        sample=options.sample,
        sample_seed=options.sample_seed,
        holdout=options.holdout,
        seed=options.seed,
        windows=options.windows,
        blocked_dates=[],
        cps=options.cps,
        max_attempts=options.max_attempts,
        segments=segment_count(text).segments if text and options.channel == NoticeChannel.SMS else 0,
        round_id=round_id,
        starts_at=options.starts_at,
        ends_at=options.ends_at,
    )
    session.add(notice)
    session.flush()
    return notice


def _insert_targets(session: Session, notice: Notice, members: list[tuple[int, int, str]], due: datetime | None) -> int:
    held = draw_holdout(((h, v) for h, v, _p in members), notice.holdout, notice.seed)
    now = clock.now()
    rows = [
        {
            "notice_id": notice.id,
            "household_id": household_id,
            "village_id": village_id,
            "phone": phone,
            "held_out": household_id in held,
            "state": (NoticeTargetState.HELD_OUT if household_id in held else NoticeTargetState.PENDING).value,
            "attempts": 0,
            "ambiguous": False,
            "last_sequence_number": -1,
            "delivered": False,
            "plays": 0,
            "next_attempt_at": None if household_id in held else due,
            "final_at": now if household_id in held else None,
            "updated_at": now,
        }
        for household_id, village_id, phone in members
    ]
    for start in range(0, len(rows), 1000):
        session.execute(insert(NoticeTarget.__table__), rows[start : start + 1000])
    return len(rows)


def presurvey_text(text: str, round_: Round, from_number: str | None, tz: ZoneInfo) -> str:
    """A pre-survey SMS: the office's text, the number we will call from and the dates, and the opt-out line."""
    number = from_number or ""
    if number.startswith("+86"):
        number = number[3:]
        if len(number) < 11 and not number.startswith("0"):
            number = "0" + number  # a fixed line: the trunk prefix residents see on their phone
    if round_.starts_at is not None:
        first = round_.starts_at.astimezone(tz).date()
        last = round_.ends_at.astimezone(tz).date() if round_.ends_at is not None else None
        dates = f"{first.month}月{first.day}日" + (f"至{last.month}月{last.day}日" if last and last != first else "")
    else:
        dates = "近日"
    caller = f"来电号码{number}" if number else "来电"
    return with_opt_out(f"{text.strip()}（{dates}将有{caller}，请放心接听）")


def create_presurvey_notice(
    session: Session,
    round_: Round,
    text: str,
    *,
    holdout: float = 0.0,
    seed: int | None = None,
    from_number: str | None = None,
    tz: ZoneInfo,
    cps: float = 1.0,
) -> Notice:
    """A draft SMS notice to the round's sampled households, sent the day before its first call.

    The notice is launched with its round (:func:`after_round_change`). With ``round_.starts_at`` its messages
    are due, in the notice's windows, on the local day before that; without, they go when the round is
    launched. Its hold-out is drawn from the round's targets and stored like any notice's.
    """
    if not (text or "").strip():
        raise NoticeError("--notify: the pre-survey message must not be empty")
    options = NoticeOptions(
        name=f"{round_.name} 调查前短信",
        channel=NoticeChannel.SMS,
        text=presurvey_text(text, round_, from_number, tz),
        holdout=holdout,
        seed=seed,
        cps=cps,
        windows=[list(w) for w in round_.windows],
    )
    try:
        options.validate()
    except NoticeError as exc:
        raise NoticeError(str(exc).replace("--text", "--notify").replace("--holdout", "--notify-holdout")) from None
    notice = _new_notice(session, options, round_id=round_.id)
    due = None
    if round_.starts_at is not None:
        day_before = (round_.starts_at.astimezone(tz) - timedelta(days=1)).replace(hour=0, minute=0, second=0)
        due = next_open(notice.windows, [], day_before, tz)
    members = session.execute(
        select(RoundTarget.household_id, RoundTarget.village_id, RoundTarget.phone)
        .join(Household, Household.id == RoundTarget.household_id)
        .where(RoundTarget.round_id == round_.id, _contactable(NoticeChannel.SMS))
        .order_by(RoundTarget.household_id)
    ).all()
    _insert_targets(session, notice, [tuple(m) for m in members], due)
    return notice


# --- lifecycle ------------------------------------------------------------------------------------------

_TRANSITIONS: dict[str, tuple[frozenset[NoticeStatus], NoticeStatus]] = {
    "launch": (frozenset({NoticeStatus.DRAFT}), NoticeStatus.RUNNING),
    "pause": (frozenset({NoticeStatus.RUNNING}), NoticeStatus.PAUSED),
    "resume": (frozenset({NoticeStatus.PAUSED}), NoticeStatus.RUNNING),
    "cancel": (frozenset({NoticeStatus.DRAFT, NoticeStatus.RUNNING, NoticeStatus.PAUSED}), NoticeStatus.CANCELLED),
}
_REASONS = {
    ("launch", NoticeStatus.RUNNING): "it is already running",
    ("launch", NoticeStatus.PAUSED): "it is paused (use resume)",
    ("pause", NoticeStatus.PAUSED): "it is already paused",
    ("pause", NoticeStatus.DRAFT): "it has not been launched",
    ("resume", NoticeStatus.RUNNING): "it is already running",
    ("resume", NoticeStatus.DRAFT): "it has not been launched (use launch)",
}

NoticeListener = Callable[[Settings, int, str], None]
_listeners: list[NoticeListener] = []


def on_notice_change(listener: NoticeListener) -> None:
    """Register ``listener(settings, notice_id, command)``, called by :func:`notice_changed` (idempotent)."""
    if listener not in _listeners:
        _listeners.append(listener)


def notice_changed(settings: Settings, notice_id: int, command: str) -> None:
    """Tell the listeners that ``command`` was committed for the notice (call it after the commit)."""
    for listener in _listeners:
        listener(settings, notice_id, command)


def get_notice(session: Session, notice_id: int, *, lock: bool = False) -> Notice:
    """The notice; with ``lock``, locked against other status changes (FOR NO KEY UPDATE, as a round's: see
    campaigns.rounds.get_round)."""
    stmt = select(Notice).where(Notice.id == notice_id)
    if lock:
        stmt = stmt.with_for_update(key_share=True)
    notice = session.scalar(stmt)
    if notice is None:
        raise NoticeError(f"notice {notice_id}: no such notice")
    return notice


def change_notice(session: Session, notice_id: int, command: str) -> Notice:
    """Perform a lifecycle command. Raises NoticeError for an impossible transition."""
    if command not in _TRANSITIONS:
        raise NoticeError(f"unknown command {command!r}")
    allowed, new_status = _TRANSITIONS[command]
    notice = get_notice(session, notice_id, lock=True)
    if notice.status not in allowed:
        reason = _REASONS.get((command, notice.status), f"it is {notice.status.value}")
        raise NoticeError(f"notice {notice_id}: cannot {command}: {reason}")
    now = clock.now()
    notice.status = new_status
    if command == "launch":
        notice.launched_at = now
    elif command in ("pause", "cancel"):
        release_unsent_claims(session, notice_id)
    if command == "cancel":
        session.execute(
            update(NoticeTarget)
            .where(NoticeTarget.notice_id == notice_id, NoticeTarget.state == NoticeTargetState.PENDING)
            .values(state=NoticeTargetState.CANCELLED, final_at=now, updated_at=now)
        )
        notice.finished_at = now
    session.flush()
    return notice


def presurvey_notices(session: Session, round_id: int) -> list[int]:
    """The ids of the round's pre-survey notices."""
    return list(session.scalars(select(Notice.id).where(Notice.round_id == round_id).order_by(Notice.id)))


def follow_round(session: Session, round_id: int, command: str) -> list[tuple[int, str]]:
    """Apply a round's launch or cancel to its pre-survey notices. Returns the (notice, command) pairs done."""
    done = []
    for notice_id in presurvey_notices(session, round_id):
        notice = get_notice(session, notice_id)
        if command == "launch" and notice.status == NoticeStatus.DRAFT:
            change_notice(session, notice_id, "launch")
            done.append((notice_id, "launch"))
        elif command == "cancel" and notice.status in (NoticeStatus.DRAFT, NoticeStatus.PAUSED, NoticeStatus.RUNNING):
            change_notice(session, notice_id, "cancel")
            done.append((notice_id, "cancel"))
    return done


def release_unsent_claims(session: Session, notice_id: int) -> int:
    """Claimed targets whose send has not started go back to ``pending`` (pause, cancel)."""
    result = session.execute(
        update(NoticeTarget)
        .where(
            NoticeTarget.notice_id == notice_id,
            NoticeTarget.state == NoticeTargetState.SENDING,
            NoticeTarget.create_started_at.is_(None),
            NoticeTarget.message_sid.is_(None),
            NoticeTarget.call_sid.is_(None),
        )
        .values(state=NoticeTargetState.PENDING, attempts=NoticeTarget.attempts - 1, claimed_at=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def complete_if_done(session: Session, notice_id: int) -> bool:
    """Mark a running notice completed when every target is final. Returns True if it is (now) completed."""
    notice = get_notice(session, notice_id)
    if notice.status == NoticeStatus.COMPLETED:
        return True
    if notice.status != NoticeStatus.RUNNING:
        return False
    open_states = [s for s in NoticeTargetState if s not in FINAL_NOTICE_TARGET_STATES]
    any_open = session.scalar(
        select(NoticeTarget.id).where(NoticeTarget.notice_id == notice_id, NoticeTarget.state.in_(open_states)).limit(1)
    )
    if any_open is not None:
        return False
    notice.status = NoticeStatus.COMPLETED
    notice.finished_at = clock.now()
    session.flush()
    return True


def expire_deadline(session: Session, notice: Notice, now: datetime) -> int:
    """At the notice's deadline, targets still pending fail (``deadline``)."""
    result = session.execute(
        update(NoticeTarget)
        .where(NoticeTarget.notice_id == notice.id, NoticeTarget.state == NoticeTargetState.PENDING)
        .values(state=NoticeTargetState.FAILED, error_message="deadline", final_at=now, updated_at=now)
    )
    return result.rowcount or 0


# --- sending: claim, mark, record -----------------------------------------------------------------------


@dataclass(frozen=True)
class SendClaim:
    target_id: int
    phone: str


def claim_due(session: Session, notice: Notice, now: datetime, limit: int) -> list[SendClaim]:
    """Claim up to ``limit`` due pending targets with one conditional UPDATE (pending -> sending).

    A target another dispatcher claimed meanwhile no longer matches, so a re-run never claims it twice. A
    number put on the do-not-contact list since the notice was created is skipped (``opted_out``) as it comes
    up: the lists are checked for the candidates only, so a tick costs the same on a notice of any size.
    """
    if limit <= 0:
        return []
    due = or_(NoticeTarget.next_attempt_at.is_(None), NoticeTarget.next_attempt_at <= now)
    # In id order along the partial index ix_notice_targets_due (notice_id, id) WHERE state = 'pending'.
    candidates = session.execute(
        select(NoticeTarget.id, NoticeTarget.phone)
        .where(
            NoticeTarget.notice_id == notice.id,
            NoticeTarget.state == NoticeTargetState.PENDING,
            due,
            NoticeTarget.attempts < notice.max_attempts,
        )
        .order_by(NoticeTarget.id)
        .limit(limit)
    ).all()
    if not candidates:
        return []
    phones = {phone for _id, phone in candidates}
    blocked = set(session.scalars(select(DoNotCall.phone).where(DoNotCall.phone.in_(phones))))
    if notice.channel == NoticeChannel.SMS:
        blocked |= set(session.scalars(select(SmsOptOut.phone).where(SmsOptOut.phone.in_(phones))))
    if blocked:
        session.execute(
            update(NoticeTarget)
            .where(
                NoticeTarget.id.in_([i for i, phone in candidates if phone in blocked]),
                NoticeTarget.state == NoticeTargetState.PENDING,
            )
            .values(state=NoticeTargetState.OPTED_OUT, final_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    ids = [i for i, phone in candidates if phone not in blocked]
    if not ids:
        return []
    claimed = session.execute(
        update(NoticeTarget)
        .where(
            NoticeTarget.id.in_(ids),
            NoticeTarget.state == NoticeTargetState.PENDING,
            due,
        )
        .values(
            state=NoticeTargetState.SENDING,
            attempts=NoticeTarget.attempts + 1,
            claimed_at=now,
            create_started_at=None,
            ambiguous=False,
            updated_at=now,
        )
        .returning(NoticeTarget.id, NoticeTarget.phone)
        .execution_options(synchronize_session=False)
    ).all()
    return [SendClaim(target_id, phone) for target_id, phone in sorted(claimed)]


def _started_is(started: datetime | None):
    return NoticeTarget.create_started_at.is_(None) if started is None else NoticeTarget.create_started_at == started


def _no_sid():
    return and_(NoticeTarget.message_sid.is_(None), NoticeTarget.call_sid.is_(None))


def begin_send(session: Session, target_id: int, started: datetime | None, now: datetime) -> bool:
    """Mark "create started" on a claimed target of a running notice, just before the create request.

    Returns:
        True if this caller may send now; False if the target was released or sent, the mark changed, or the
        notice is no longer running (then nothing may be sent).
    """
    running = (
        select(Notice.id).where(Notice.id == NoticeTarget.notice_id, Notice.status == NoticeStatus.RUNNING).exists()
    )
    result = session.execute(
        update(NoticeTarget)
        .where(
            NoticeTarget.id == target_id,
            NoticeTarget.state == NoticeTargetState.SENDING,
            _no_sid(),
            _started_is(started),
            running,
        )
        .values(create_started_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def send_not_made(session: Session, target_id: int, started: datetime) -> bool:
    """Take back the "create started" mark: the request was never sent, or refused unprocessed (429, 4xx)."""
    result = session.execute(
        update(NoticeTarget)
        .where(
            NoticeTarget.id == target_id,
            NoticeTarget.state == NoticeTargetState.SENDING,
            _no_sid(),
            _started_is(started),
        )
        .values(create_started_at=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_ambiguous(session: Session, target_id: int, started: datetime, message: str) -> None:
    """The create request got a timeout or a 5xx: the message may exist (the provider's list will say)."""
    session.execute(
        update(NoticeTarget)
        .where(NoticeTarget.id == target_id, NoticeTarget.state == NoticeTargetState.SENDING, _started_is(started))
        .values(ambiguous=True, error_message=message[:500])
        .execution_options(synchronize_session=False)
    )


def release_send(session: Session, target_id: int, reason: str, started: datetime | None = None) -> bool:
    """A claim that was never sent goes back to ``pending`` (its attempt is not counted)."""
    result = session.execute(
        update(NoticeTarget)
        .where(
            NoticeTarget.id == target_id,
            NoticeTarget.state == NoticeTargetState.SENDING,
            _no_sid(),
            _started_is(started),
        )
        .values(
            state=NoticeTargetState.PENDING,
            attempts=NoticeTarget.attempts - 1,
            claimed_at=None,
            create_started_at=None,
            ambiguous=False,
            error_message=reason[:500],
            updated_at=clock.now(),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_invalid(session: Session, target_id: int, code: int | None, message: str) -> None:
    """The provider refused the number for good (21211, 21610 ...): the target is ``invalid``."""
    now = clock.now()
    session.execute(
        update(NoticeTarget)
        .where(NoticeTarget.id == target_id, NoticeTarget.state == NoticeTargetState.SENDING, _no_sid())
        .values(
            state=NoticeTargetState.INVALID,
            error_code=None if code is None else str(code),
            error_message=message[:500],
            final_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def record_sms_sent(session: Session, target_id: int, sid: str, status: str, now: datetime) -> bool:
    """The provider accepted the message (or it was adopted after an ambiguous create, or named by a callback
    whose create reply was lost): the target is ``sent``, with the provider's status as it stood.

    One UPDATE (the send path's hot write). Returns False if the target already has a message (a second
    record is ignored).
    """
    status = (status or "").strip().lower()
    known = status if status in MESSAGE_STATUS_ORDER else None
    values: dict = {
        "state": NoticeTargetState.SENT,
        "message_sid": sid,
        "provider_status": known,
        "sent_at": now,
        "final_at": now,
        "updated_at": now,
        "error_message": None,
    }
    if known == "delivered":
        values.update(delivered=True, delivered_at=now)
    result = session.execute(
        update(NoticeTarget)
        .where(NoticeTarget.id == target_id, NoticeTarget.state == NoticeTargetState.SENDING, _no_sid())
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def record_call_placed(session: Session, target_id: int, sid: str, now: datetime) -> bool:
    """A voice notice's call exists at the provider: the target stays ``sending`` until the call ends."""
    result = session.execute(
        update(NoticeTarget)
        .where(NoticeTarget.id == target_id, NoticeTarget.state == NoticeTargetState.SENDING, _no_sid())
        .values(call_sid=sid, provider_status="queued", sent_at=now, updated_at=now, error_message=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def apply_message_status(session: Session, sid: str, status: str, error_code: str | None) -> str:
    """Apply an SMS status callback (or a fetched status) in order: never backwards, finals never replaced.

    Returns:
        ``applied``, ``stale`` (not after the stored status), ``unknown-status`` or ``unknown-message``.
    """
    status = (status or "").strip().lower()
    rank = MESSAGE_STATUS_ORDER.get(status)
    if rank is None:
        return "unknown-status"
    target = session.scalar(select(NoticeTarget).where(NoticeTarget.message_sid == sid).with_for_update())
    if target is None:
        return "unknown-message"
    current = target.provider_status
    if current is not None and (current in FINAL_MESSAGE_STATUSES or MESSAGE_STATUS_ORDER.get(current, -1) >= rank):
        return "stale"
    now = clock.now()
    target.provider_status = status
    if status == "delivered":
        target.delivered = True
        target.delivered_at = now
    if status in ("undelivered", "failed") and error_code:
        target.error_code = str(error_code)[:20]
    session.flush()
    return "applied"


# --- voice notices: the call and what the resident did --------------------------------------------------

_CALL_ORDER = {"queued": 1, "initiated": 2, "ringing": 3, "in-progress": 4}
_CALL_FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


def notice_target(session: Session, target_id: int, *, lock: bool = False) -> NoticeTarget:
    stmt = select(NoticeTarget).where(NoticeTarget.id == target_id)
    if lock:
        stmt = stmt.with_for_update()
    target = session.scalar(stmt)
    if target is None:
        raise NoticeError(f"notice target {target_id}: no such target")
    return target


def adopt_call_sid(session: Session, target: NoticeTarget, call_sid: str) -> None:
    """A webhook names the call of a target whose create reply was lost: the call is this target's."""
    if target.call_sid is None and target.state == NoticeTargetState.SENDING:
        target.call_sid = call_sid
        target.sent_at = target.sent_at or clock.now()
        session.flush()


def mark_played(session: Session, target: NoticeTarget) -> None:
    """The notice is being played to a person (the call was answered, or ``*`` asked for it again)."""
    now = clock.now()
    target.plays += 1
    if not target.delivered:
        target.delivered = True
        target.delivered_at = now
    if target.heard_to_end is None:
        target.heard_to_end = False
    session.flush()


def mark_heard_to_end(session: Session, target: NoticeTarget) -> None:
    target.heard_to_end = True
    session.flush()


def apply_notice_call_status(
    session: Session, target: NoticeTarget, status: str, sequence: int | None, settings_tz: ZoneInfo | None = None
) -> str:
    """A voice notice's call status callback, in ``SequenceNumber`` order; final states settle the target.

    Answered calls (``completed`` after the notice was played) are ``heard``; busy, unanswered and failed calls
    are tried again after :data:`VOICE_RETRY_SECONDS` while attempts remain, else ``failed``.
    """
    status = (status or "").strip().lower()
    if status not in _CALL_ORDER and status not in _CALL_FINAL:
        return "unknown-status"
    if sequence is not None:
        if sequence <= target.last_sequence_number:
            return "stale"
        target.last_sequence_number = sequence
    current = target.provider_status
    if current in _CALL_FINAL:
        return "stale"
    if status in _CALL_ORDER and _CALL_ORDER.get(current or "", 0) >= _CALL_ORDER[status]:
        return "stale"
    target.provider_status = status
    now = clock.now()
    if status in _CALL_FINAL and target.state == NoticeTargetState.SENDING:
        if status == "completed" and target.delivered:
            target.state = NoticeTargetState.HEARD
            target.final_at = now
        else:
            notice = session.get(Notice, target.notice_id)
            assert notice is not None
            if target.attempts >= notice.max_attempts or status == "canceled" and notice.status != NoticeStatus.RUNNING:
                target.state = NoticeTargetState.FAILED
                target.final_at = now
            else:
                # Another call later: a new call, so the call's bookkeeping starts again.
                target.state = NoticeTargetState.PENDING
                target.next_attempt_at = now + timedelta(seconds=VOICE_RETRY_SECONDS)
                target.call_sid = None
                target.provider_status = None
                target.last_sequence_number = -1
                target.create_started_at = None
                target.claimed_at = None
        target.error_message = status if status != "completed" else None
    target.updated_at = now
    session.flush()
    return "applied"


# --- opt-outs -------------------------------------------------------------------------------------------


def record_inbound_sms(session: Session, sender: str, body: str, message_sid: str | None) -> str | None:
    """An SMS a resident sent us. A reply of TD / 退订 / STOP puts the number on the SMS opt-out list (once) and
    skips its pending SMS targets. Returns the keyword, or None when the message is not an opt-out."""
    keyword = is_opt_out_reply(body)
    if keyword is None:
        return None
    try:
        phone = normalise(sender)
    except PhoneNumberError:
        return None
    if session.get(SmsOptOut, phone) is None:
        session.add(SmsOptOut(phone=phone, keyword=keyword[:20], message_sid=message_sid))
        session.flush()
    now = clock.now()
    sms_notices = select(Notice.id).where(Notice.channel == NoticeChannel.SMS)
    session.execute(
        update(NoticeTarget)
        .where(
            NoticeTarget.phone == phone,
            NoticeTarget.state == NoticeTargetState.PENDING,
            NoticeTarget.notice_id.in_(sms_notices),
        )
        .values(state=NoticeTargetState.OPTED_OUT, final_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return keyword


# --- status ---------------------------------------------------------------------------------------------


def notice_status_report(session: Session, notice_id: int) -> dict:
    """``notice status --format json``: the notice, its target states, message statuses and the hold-out."""
    notice = get_notice(session, notice_id)
    states = {state.value: 0 for state in NoticeTargetState}
    for state, count in session.execute(
        select(NoticeTarget.state, func.count()).where(NoticeTarget.notice_id == notice_id).group_by(NoticeTarget.state)
    ):
        states[NoticeTargetState(state).value] = count
    provider: dict[str, int] = {}
    for status, count in session.execute(
        select(NoticeTarget.provider_status, func.count())
        .where(NoticeTarget.notice_id == notice_id, NoticeTarget.provider_status.is_not(None))
        .group_by(NoticeTarget.provider_status)
    ):
        provider[status] = count
    totals = session.execute(
        select(
            func.count(),
            func.count().filter(NoticeTarget.held_out),
            func.count().filter(NoticeTarget.delivered),
            func.count().filter(NoticeTarget.heard_to_end.is_(True)),
        ).where(NoticeTarget.notice_id == notice_id)
    ).one()
    report = {
        "id": notice.id,
        "name": notice.name,
        "channel": notice.channel.value,
        "status": notice.status.value,
        "round_id": notice.round_id,
        "holdout": notice.holdout,
        "seed": notice.seed,
        "cps": notice.cps,
        "targets": states,
        "households": totals[0],
        "held_out": totals[1],
        "delivered": totals[2],
        "provider_statuses": provider,
    }
    if notice.channel == NoticeChannel.SMS:
        seg = segment_count(notice.text or "")
        report["segments"] = seg.segments
        report["characters"] = seg.length
        report["encoding"] = seg.encoding
        report["messages_to_send"] = (totals[0] - totals[1]) * seg.segments
    else:
        report["heard_to_end"] = totals[3]
    return report


def masked_phone(phone: str) -> str:
    try:
        return mask(phone)
    except Exception:  # noqa: BLE001 - never let a malformed stored number break a status page
        return "*" * len(phone)
