"""Forgetting a number and pseudonymising old rounds: the services behind ``sanlv household forget`` (PIPL
art. 47) and ``sanlv data retain``. (Retiring households a full roster no longer lists is campaigns.roster's.)

What the database keeps, for how long, and what each command removes: docs/privacy.md.

Services take a Session and never commit; the caller owns the transaction and records the audit entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, false, func, insert, or_, select, update
from sqlalchemy.orm import Session

from campaigns import clock, dnc
from campaigns.calls import DNC_OUTCOME
from campaigns.errors import SanlvError
from campaigns.models import (
    FINAL_CALL_STATUSES,
    FINAL_TARGET_STATES,
    Answer,
    AnswerChange,
    CallAttempt,
    FollowUp,
    FollowUpEvent,
    Household,
    KeyPress,
    Notice,
    NoticeArm,
    NoticeStatus,
    NoticeTarget,
    Response,
    Round,
    RoundStatus,
    RoundTarget,
    SmsOptOut,
    TargetState,
)
from campaigns.phones import mask
from campaigns.settings import Settings

# --- forgetting one number (PIPL art. 47) ----------------------------------------------------------------


class PrivacyError(SanlvError, ValueError):
    """A retire, forget or retain request cannot be carried out; the message says why."""


ForgetListener = Callable[[Settings, str, list[str]], None]
_forget_listeners: list[ForgetListener] = []


def on_forget(listener: ForgetListener) -> None:
    """Register ``listener(settings, phone, call_sids)``, called by :func:`forgotten` after the commit.

    The dialler registers itself here (``web.wiring``) to erase what Redis holds about the number (the
    telephony provider's traces): campaigns imports no other project package.
    """
    if listener not in _forget_listeners:
        _forget_listeners.append(listener)


def forgotten(settings: Settings, phone: str, call_sids: list[str]) -> None:
    """Tell the listeners that ``phone``'s data was erased from the database (call after the commit)."""
    for listener in _forget_listeners:
        listener(settings, phone, call_sids)


@dataclass
class Forgotten:
    """What :func:`forget_household` erased."""

    phone: str  # E.164: for the listeners only; never print or log it
    households: int = 0
    targets: int = 0  # made anonymous (village, cadre and response kept)
    attempts: int = 0
    key_presses: int = 0
    follow_ups: int = 0
    notices: int = 0  # notice targets deleted, and its places in retained notices' draws (the lift counts one fewer)
    call_sids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{mask(self.phone)}: {self.households} household, {self.attempts} calls, {self.key_presses} key presses, "
            f"{self.follow_ups} follow-ups and {self.notices} notices deleted; {self.targets} survey targets kept "
            f"anonymous; the number stays on the do-not-call list as a keyed hash "
            f"(已删除该号码的个人数据; 号码以密钥散列保留在免打扰名单)"
        )


def _anonymise_targets(session: Session, target_ids: list[int]) -> None:
    """Targets lose their number and household, keeping the household's cadre (and their village)."""
    cadre = select(Household.cadre_id).where(Household.id == RoundTarget.household_id).scalar_subquery()
    for chunk in _chunks(target_ids):
        session.execute(
            update(RoundTarget)
            .where(RoundTarget.id.in_(chunk), RoundTarget.household_id.is_not(None))
            .values(cadre_id=cadre)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(RoundTarget)
            .where(RoundTarget.id.in_(chunk))
            .values(household_id=None, phone=None)
            .execution_options(synchronize_session=False)
        )


def _keep_notice_arms(session: Session, which: ColumnElement[bool]) -> int:
    """Record in ``notice_arms`` where each survey target stood in each notice's draw, for the pairs of a
    survey target and a notice target of the same household that ``which`` selects; call it just before
    either side loses its household, so that a lift report prints the same figures afterwards.

    A pair whose survey target or notice target already has no household was recorded when it lost it.
    """
    pairs = (
        select(
            RoundTarget.id, NoticeTarget.notice_id, NoticeTarget.village_id, NoticeTarget.held_out,
            NoticeTarget.delivered,
        )  # fmt: skip
        .join(NoticeTarget, NoticeTarget.household_id == RoundTarget.household_id)
        .where(which)
    )
    columns = ["round_target_id", "notice_id", "village_id", "held_out", "delivered"]
    return session.execute(insert(NoticeArm).from_select(columns, pairs)).rowcount or 0


def _chunks(ids: list[int], size: int = 500):
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def forget_household(session: Session, phone: str, reason: str, *, actor: str | None = None) -> Forgotten:
    """Erase ``phone``'s phone-level data everywhere; keep the rates of every round reproducible.

    Deleted: the household, the number's call attempts and their key presses, its follow-up items and their
    history, the notices sent to it (or held out from it) and its SMS opt-out. Kept, anonymous: its survey targets (village and cadre, no number, no household) with their
    responses and answers, so every round's rates are what they were. The number stays on the do-not-call list
    as its keyed hash only, so it is never called again; a roster that brings it back puts it on the list in
    clear again.

    Raises:
        PrivacyError: the number is in a call now (try again once it has ended), or nothing is known of it.
        DncError: ``phone`` is not a number, or the reason is missing.
    """
    number = dnc.parse_phone(phone)
    dnc.check_reason(reason)
    result = Forgotten(phone=number)
    households = list(session.scalars(select(Household.id).where(Household.phone == number)))
    target_ids = list(
        session.scalars(
            select(RoundTarget.id).where(
                or_(RoundTarget.phone == number, RoundTarget.household_id.in_(households) if households else false())
            )
        )
    )
    if not households and not target_ids and dnc.find(session, number) is None:
        raise PrivacyError(f"{mask(number)}: no household, survey or do-not-call entry has this number")
    live = session.scalar(
        select(func.count())
        .select_from(CallAttempt)
        .where(CallAttempt.target_id.in_(target_ids), CallAttempt.status.not_in(FINAL_CALL_STATUSES))
    ) if target_ids else 0  # fmt: skip
    if live:
        raise PrivacyError(f"{mask(number)} is in a call (or one is being placed) now; try again once it has ended")
    # The number goes on the list (in clear for now) first, so no round can claim it while this runs.
    if dnc.find(session, number) is None:
        dnc.add(session, number, reason, actor=actor)
    now = clock.now()
    session.execute(
        update(RoundTarget)
        .where(RoundTarget.id.in_(target_ids), RoundTarget.state.not_in(FINAL_TARGET_STATES))
        .values(state=TargetState.OPTED_OUT, last_outcome=DNC_OUTCOME, final_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    ) if target_ids else None  # fmt: skip
    responses = (
        list(session.scalars(select(Response.id).where(Response.target_id.in_(target_ids)))) if target_ids else []
    )
    attempts = session.execute(
        select(CallAttempt.id, CallAttempt.call_sid).where(CallAttempt.target_id.in_(target_ids))
    ).all() if target_ids else []  # fmt: skip
    attempt_ids = [a for a, _sid in attempts]
    result.call_sids = [sid for _a, sid in attempts if sid]
    followups = list(
        session.scalars(
            select(FollowUp.id).where(
                or_(
                    FollowUp.response_id.in_(responses) if responses else false(),
                    FollowUp.household_id.in_(households) if households else false(),
                )
            )
        )
    )
    for chunk in _chunks(responses):
        result.key_presses += session.execute(delete(KeyPress).where(KeyPress.response_id.in_(chunk))).rowcount or 0
    for chunk in _chunks(attempt_ids):
        result.key_presses += session.execute(delete(KeyPress).where(KeyPress.attempt_id.in_(chunk))).rowcount or 0
        session.execute(update(Answer).where(Answer.attempt_id.in_(chunk)).values(attempt_id=None))
        session.execute(update(AnswerChange).where(AnswerChange.attempt_id.in_(chunk)).values(attempt_id=None))
        result.attempts += session.execute(delete(CallAttempt).where(CallAttempt.id.in_(chunk))).rowcount or 0
    for chunk in _chunks(followups):
        session.execute(delete(FollowUpEvent).where(FollowUpEvent.follow_up_id.in_(chunk)))
        result.follow_ups += session.execute(delete(FollowUp).where(FollowUp.id.in_(chunk))).rowcount or 0
    # Notices sent to (or held out from) the number go too: their rows name the household and the number.
    sent = or_(NoticeTarget.phone == number, NoticeTarget.household_id.in_(households) if households else false())
    for message_sid, call_sid in session.execute(select(NoticeTarget.message_sid, NoticeTarget.call_sid).where(sent)):
        result.call_sids += [sid for sid in (message_sid, call_sid) if sid]
    result.notices = session.execute(delete(NoticeTarget).where(sent)).rowcount or 0
    for chunk in _chunks(target_ids):  # and where its survey targets stood in retained notices' draws
        arms = delete(NoticeArm).where(NoticeArm.round_target_id.in_(chunk))
        result.notices += session.execute(arms).rowcount or 0
    # The SMS opt-out is no longer needed: the do-not-call list (by hash) covers every channel.
    session.execute(delete(SmsOptOut).where(SmsOptOut.phone == number))
    _anonymise_targets(session, target_ids)
    result.targets = len(target_ids)
    for chunk in _chunks(households):
        result.households += session.execute(delete(Household).where(Household.id.in_(chunk))).rowcount or 0
    dnc.forget(session, number, reason, actor=actor)
    session.expire_all()
    return result


# --- retention: pseudonymising old rounds and notices ----------------------------------------------------------------


@dataclass
class RetainedRound:
    id: int
    name: str
    finished_at: datetime
    targets: int
    follow_ups: int


def rounds_to_retain(session: Session, older_than: timedelta, now: datetime) -> list[Round]:
    """Finished (completed or cancelled) rounds not retained yet whose end is older than ``older_than``."""
    return list(
        session.scalars(
            select(Round)
            .where(
                Round.status.in_((RoundStatus.COMPLETED, RoundStatus.CANCELLED)),
                Round.finished_at.is_not(None),
                Round.finished_at < now - older_than,
                Round.retained_at.is_(None),
            )
            .order_by(Round.id)
        )
    )


def retain_rounds(session: Session, older_than: timedelta, *, dry_run: bool = False) -> list[RetainedRound]:
    """Pseudonymise the phone-level data of rounds that finished more than ``older_than`` ago.

    Removed: the targets' numbers and their link to the household (the cadre is kept), the calls' CallSids
    (Twilio's record of the call names the number) and error texts, follow-up notes and who wrote them. Kept:
    village, cadre, responses, answers, key presses and times (the paradata), so every report of the round
    prints the same figures. The roster itself is not touched: a household still on it stays.
    """
    if older_than.total_seconds() < 0:
        raise PrivacyError("--older-than: must be 0 days or more")
    now = clock.now()
    done = []
    for round_ in rounds_to_retain(session, older_than, now):
        target_ids = list(session.scalars(select(RoundTarget.id).where(RoundTarget.round_id == round_.id)))
        followups = list(session.scalars(select(FollowUp.id).where(FollowUp.round_id == round_.id)))
        assert round_.finished_at is not None
        done.append(RetainedRound(round_.id, round_.name, round_.finished_at, len(target_ids), len(followups)))
        if dry_run:
            continue
        _keep_notice_arms(session, RoundTarget.round_id == round_.id)
        _anonymise_targets(session, target_ids)
        session.execute(
            update(CallAttempt)
            .where(CallAttempt.round_id == round_.id)
            .values(call_sid=None, error_message=None)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(FollowUp)
            .where(FollowUp.round_id == round_.id)
            .values(note=None, household_id=None)
            .execution_options(synchronize_session=False)
        )
        for chunk in _chunks(followups):
            session.execute(
                update(FollowUpEvent)
                .where(FollowUpEvent.follow_up_id.in_(chunk))
                .values(note=None, actor=None)
                .execution_options(synchronize_session=False)
            )
        session.execute(update(Round).where(Round.id == round_.id).values(retained_at=now))
    session.expire_all()
    return done


@dataclass
class RetainedNotice:
    id: int
    name: str
    finished_at: datetime
    targets: int


def notices_to_retain(session: Session, older_than: timedelta, now: datetime) -> list[Notice]:
    """Finished (completed or cancelled) notices not retained yet whose end is older than ``older_than``."""
    return list(
        session.scalars(
            select(Notice)
            .where(
                Notice.status.in_((NoticeStatus.COMPLETED, NoticeStatus.CANCELLED)),
                Notice.finished_at.is_not(None),
                Notice.finished_at < now - older_than,
                Notice.retained_at.is_(None),
            )
            .order_by(Notice.id)
        )
    )


def retain_notices(session: Session, older_than: timedelta, *, dry_run: bool = False) -> list[RetainedNotice]:
    """Pseudonymise the phone-level data of notices that finished more than ``older_than`` ago.

    Removed: each target's number and household, its message or call SID (Twilio's record names the number)
    and error text. Kept: village, hold-out, state, delivery and times, so the notice's status counts stay, and
    where each survey target stood in the draw (``notice_arms``), so its lift on any round stays what it was.
    """
    if older_than.total_seconds() < 0:
        raise PrivacyError("--older-than: must be 0 days or more")
    now = clock.now()
    done = []
    for notice in notices_to_retain(session, older_than, now):
        targets = session.scalar(
            select(func.count()).select_from(NoticeTarget).where(NoticeTarget.notice_id == notice.id)
        )
        assert notice.finished_at is not None
        done.append(RetainedNotice(notice.id, notice.name, notice.finished_at, targets or 0))
        if dry_run:
            continue
        _keep_notice_arms(session, NoticeTarget.notice_id == notice.id)
        session.execute(
            update(NoticeTarget)
            .where(NoticeTarget.notice_id == notice.id)
            .values(household_id=None, phone=None, message_sid=None, call_sid=None, error_message=None)
            .execution_options(synchronize_session=False)
        )
        session.execute(update(Notice).where(Notice.id == notice.id).values(retained_at=now))
    session.expire_all()
    return done
