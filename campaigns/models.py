"""The data model: roster, questionnaires, rounds, call attempts, responses and answers.

Status columns are explicit enums with one comment per state; each transition is performed by one function
in the service modules, never by assigning a status ad hoc in a handler.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, object_session, relationship
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from campaigns.db import Base, utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (portable across SQLite and PostgreSQL); always returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column; pass an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as VARCHAR with a CHECK constraint: portable, and adding a state is a small migration.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=20,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class PhoneStatus(enum.StrEnum):
    OK = "ok"  # callable as far as we know
    INVALID = "invalid"  # permanent failure reported by the carrier / Twilio (21211): never dialled again
    BLOCKED = "blocked"  # permanent failure: geo permission or blocked destination (21215/21216)


class RoundStatus(enum.StrEnum):
    DRAFT = "draft"  # created, targets sampled, nothing dialled yet
    RUNNING = "running"  # dialling inside its windows (it also waits, still running, outside them)
    PAUSED = "paused"  # no new calls; live calls finish; scheduled retries wait
    COMPLETED = "completed"  # every target reached a final state
    CANCELLED = "cancelled"  # stopped by the office; remaining targets cancelled


class TargetState(enum.StrEnum):
    PENDING = "pending"  # to be dialled, including a scheduled retry (next_attempt_at)
    DIALING = "dialing"  # claimed by a worker or call placed, not answered yet
    IN_CALL = "in_call"  # the resident answered; the IVR is talking to them
    COMPLETED = "completed"  # final: every rate question answered
    REFUSED = "refused"  # final: declined consent
    INELIGIBLE = "ineligible"  # final: failed screening (not resident / under 18)
    OPTED_OUT = "opted_out"  # final: pressed 9; number is on the do-not-call list
    UNREACHABLE = "unreachable"  # final: attempt budget or deadline used up without an interview
    INVALID = "invalid"  # final: permanent number failure
    CANCELLED = "cancelled"  # final: the round was cancelled before this target finished


FINAL_TARGET_STATES = frozenset(
    {
        TargetState.COMPLETED,
        TargetState.REFUSED,
        TargetState.INELIGIBLE,
        TargetState.OPTED_OUT,
        TargetState.UNREACHABLE,
        TargetState.INVALID,
        TargetState.CANCELLED,
    }
)


class CallStatus(enum.StrEnum):
    """Twilio's call statuses, plus our own states before Twilio has the call."""

    CLAIMED = "claimed"  # our row exists; the create request has not succeeded yet
    QUEUED = "queued"  # Twilio accepted the call and is pacing it
    INITIATED = "initiated"  # Twilio started dialling
    RINGING = "ringing"  # the phone is ringing
    IN_PROGRESS = "in-progress"  # answered
    COMPLETED = "completed"  # final: answered and ended normally
    BUSY = "busy"  # final: temporary failure (will be retried)
    NO_ANSWER = "no-answer"  # final: temporary failure (will be retried)
    FAILED = "failed"  # final: Twilio could not place it (retried unless the error is permanent)
    CANCELED = "canceled"  # final: cancelled while queued or ringing
    NOT_PLACED = "not-placed"  # final: the create request was refused, no call exists


FINAL_CALL_STATUSES = frozenset(
    {
        CallStatus.COMPLETED,
        CallStatus.BUSY,
        CallStatus.NO_ANSWER,
        CallStatus.FAILED,
        CallStatus.CANCELED,
        CallStatus.NOT_PLACED,
    }
)

# Progress order of the non-final statuses: a callback never moves an attempt backwards.
CALL_STATUS_ORDER = {
    CallStatus.CLAIMED: 0,
    CallStatus.QUEUED: 1,
    CallStatus.INITIATED: 2,
    CallStatus.RINGING: 3,
    CallStatus.IN_PROGRESS: 4,
}


class InboundMode(enum.StrEnum):
    """What a round does when a resident of its sample calls our number."""

    CALL_BACK = "call-back"  # take no answers: say the office calls back, hang up, call the number back at once
    ANSWER = "answer"  # interview the caller on the inbound call (caller ID can be spoofed; opted into)


class CallDirection(enum.StrEnum):
    OUTBOUND = "outbound"  # we called the resident
    INBOUND = "inbound"  # the resident called our number back


class ResponseStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"  # answering now, or dropped mid-survey (resumable)
    COMPLETED = "completed"  # every rate question answered
    REFUSED = "refused"  # consent: no
    INELIGIBLE = "ineligible"  # screening: no
    OPTED_OUT = "opted_out"  # pressed 9 before completing


FINAL_RESPONSE_STATUSES = frozenset(
    {ResponseStatus.COMPLETED, ResponseStatus.REFUSED, ResponseStatus.INELIGIBLE, ResponseStatus.OPTED_OUT}
)


class CallerId(Base):
    """A number calls may show (a local caller ID: residents answer local numbers more often).

    Given to a village or a round (``sanlv callerid assign``); a call shows its village's, else its round's,
    else its Twilio account's default number. ``account`` names the Twilio account that owns the number
    (None: any account may show it, e.g. the deployment has one); a call showing it goes through that account.
    """

    __tablename__ = "caller_ids"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)  # E.164
    account: Mapped[str | None] = mapped_column(String(30))
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Village(Base):
    __tablename__ = "villages"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The local number this village's residents see (None: the round's, else the account's default).
    caller_id_id: Mapped[int | None] = mapped_column(ForeignKey("caller_ids.id"))

    households: Mapped[list[Household]] = relationship(back_populates="village")


class Cadre(Base):
    """A 包户干部: identified by name and phone (phone may be empty when the roster does not give one)."""

    __tablename__ = "cadres"
    __table_args__ = (UniqueConstraint("name", "phone"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # E.164, or "" when unknown (not NULL, so the unique constraint holds on both databases).
    phone: Mapped[str] = mapped_column(String(20), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    households: Mapped[list[Household]] = relationship(back_populates="cadre")


class Household(Base):
    """One phone number to call. The roster's unit: one row, one number, one village, one cadre."""

    __tablename__ = "households"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)  # E.164
    name: Mapped[str | None] = mapped_column(String(100))  # 户主, optional
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"), index=True)
    cadre_id: Mapped[int | None] = mapped_column(ForeignKey("cadres.id"), index=True)
    phone_status: Mapped[PhoneStatus] = mapped_column(_enum(PhoneStatus, "phone_status"), default=PhoneStatus.OK)
    phone_status_reason: Mapped[str | None] = mapped_column(String(200))
    # Set when a full roster (``roster import --replace``) no longer lists the number: never sampled again,
    # its history kept. A later roster that lists it again clears it.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    village: Mapped[Village] = relationship(back_populates="households")
    cadre: Mapped[Cadre | None] = relationship(back_populates="households")


class DncSource(enum.StrEnum):
    """How a number came onto the do-not-call list."""

    KEYPAD = "keypad"  # the resident pressed 9 during a survey
    OFFICE = "office"  # the office added it (web page or ``sanlv dnc add``; also ``sanlv household forget``)
    IMPORT = "import"  # a list imported with ``sanlv dnc import``


class DncAction(enum.StrEnum):
    """What happened to a number on the do-not-call list (its history)."""

    ADDED = "added"  # put on the list
    REMOVED = "removed"  # taken off: the resident asked to take part after all
    FORGOTTEN = "forgotten"  # the number itself was erased (``household forget``); only its keyed hash is kept


class DoNotCall(Base):
    """Numbers never to dial again, in any round (campaigns.dnc).

    ``phone_hash`` is a keyed hash (HMAC-SHA256, campaigns.hashing) of the E.164 number. A number whose
    household was forgotten keeps only the hash (``phone`` is NULL): a roster that brings it back is matched
    by the hash, and the number goes back on the list in clear so the claim can exclude it.
    """

    __tablename__ = "do_not_call"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)  # E.164; NULL once forgotten
    phone_hash: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[DncSource] = mapped_column(_enum(DncSource, "dnc_source"), default=DncSource.OFFICE)
    reason: Mapped[str] = mapped_column(String(200))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    actor: Mapped[str | None] = mapped_column(String(100))  # who added it ("cli:alice", a username); None: keypad
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DoNotCallEvent(Base):
    """The history of the do-not-call list: every addition, removal and erasure, by whom, why and when.

    Rows name the number by its keyed hash, and by its mask (first 3 and last 4 digits) until it is forgotten.
    """

    __tablename__ = "do_not_call_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_hash: Mapped[str] = mapped_column(String(64), index=True)
    phone_masked: Mapped[str | None] = mapped_column(String(20))
    action: Mapped[DncAction] = mapped_column(_enum(DncAction, "dnc_action"))
    source: Mapped[DncSource | None] = mapped_column(_enum(DncSource, "dnc_event_source"))
    reason: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str | None] = mapped_column(String(100))
    round_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: history outlives nothing it names
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HashKey(Base):
    """A generated secret for keyed hashes (campaigns.hashing), made once per database and never shown."""

    __tablename__ = "hash_keys"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    key: Mapped[str] = mapped_column(String(128))  # hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


PHONE_HASH_KEY = "phone"  # the HashKey that hashes phone numbers


def keyed_phone_hash(key: bytes, e164: str) -> str:
    """HMAC-SHA256 (hex) of an E.164 number: the one definition of ``do_not_call.phone_hash``."""
    return hmac.new(key, e164.encode(), hashlib.sha256).hexdigest()


@event.listens_for(DoNotCall, "before_insert")
def _dnc_phone_hash(_mapper, connection, entry: DoNotCall) -> None:
    # An entry added without its hash (campaigns.dnc always gives one) gets it here, so none is ever without.
    if entry.phone_hash is None and entry.phone:
        keys = HashKey.__table__
        key = connection.scalar(select(keys.c.key).where(keys.c.name == PHONE_HASH_KEY))
        if key is None:
            key = secrets.token_hex(32)
            connection.execute(keys.insert().values(name=PHONE_HASH_KEY, key=key, created_at=utcnow()))
        entry.phone_hash = keyed_phone_hash(bytes.fromhex(key), entry.phone)


class QuestionnaireVersion(Base):
    """An immutable snapshot of a questionnaire file; a round points at the version it launched with."""

    __tablename__ = "questionnaire_versions"
    __table_args__ = (UniqueConstraint("key", "checksum"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(50))
    checksum: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical JSON content
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Round(Base):
    __tablename__ = "rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    questionnaire_id: Mapped[int] = mapped_column(ForeignKey("questionnaire_versions.id"))
    status: Mapped[RoundStatus] = mapped_column(_enum(RoundStatus, "round_status"), default=RoundStatus.DRAFT)
    sample: Mapped[str] = mapped_column(String(50), default="all")  # all | village:N | cadre:N
    seed: Mapped[int | None] = mapped_column(Integer)
    # [["09:00", "11:30"], ["14:30", "20:30"]] in SANLV_TIMEZONE; end exclusive.
    windows: Mapped[list[list[str]]] = mapped_column(JSON)
    blocked_dates: Mapped[list[str]] = mapped_column(JSON, default=list)  # ISO dates, local
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cps: Mapped[float] = mapped_column(Float, default=1.0)  # calls per second
    max_concurrent: Mapped[int] = mapped_column(Integer, default=10)  # simultaneous live calls
    retry: Mapped[dict[str, int]] = mapped_column(JSON)  # outcome -> seconds until the retry
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exclude_unsure: Mapped[bool] = mapped_column(Boolean, default=False)  # drop "说不清" from `valid`
    # Per-round overrides of the questionnaire's rate targets, e.g. {"participation": 0.8}.
    rate_targets: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # Ask Twilio to detect answering machines; a machine answer hangs up and counts as not reached.
    machine_detection: Mapped[bool] = mapped_column(Boolean, default=False)
    # The number the round's calls show where their village has none (None: the account's default).
    caller_id_id: Mapped[int | None] = mapped_column(ForeignKey("caller_ids.id"))
    # Names of the Twilio accounts the round may dial through (empty or None: every configured account).
    accounts: Mapped[list[str] | None] = mapped_column(JSON, default=list)
    # What an inbound call from a household of the sample does (see InboundMode).
    inbound: Mapped[InboundMode] = mapped_column(_enum(InboundMode, "inbound_mode"), default=InboundMode.CALL_BACK)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When ``data retain`` pseudonymised the round's phone-level data (campaigns.privacy); None: not yet.
    retained_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    questionnaire: Mapped[QuestionnaireVersion] = relationship()
    targets: Mapped[list[RoundTarget]] = relationship(back_populates="round")


class RoundTarget(Base):
    """One household in one round."""

    __tablename__ = "round_targets"
    __table_args__ = (
        UniqueConstraint("round_id", "household_id"),
        # The dispatcher's hot query: pending targets of a round that are due.
        Index(
            "ix_round_targets_due",
            "round_id",
            "next_attempt_at",
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    # None once the target is anonymous (campaigns.privacy: the household was forgotten, or the round's
    # phone-level data was retained); ``cadre_id`` then keeps the cadre the household had, for the reports.
    household_id: Mapped[int | None] = mapped_column(ForeignKey("households.id"), index=True)
    # Denormalised for the reports (see "Report figures" below): the household's village, kept equal to it.
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"))
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164 at sampling time; None once anonymous
    cadre_id: Mapped[int | None] = mapped_column(ForeignKey("cadres.id"))  # set only when anonymised
    state: Mapped[TargetState] = mapped_column(_enum(TargetState, "target_state"), default=TargetState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # outbound calls placed or being placed
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: due now
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_outcome: Mapped[str | None] = mapped_column(String(30))
    final_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Denormalised for the reports: the status of the target's response, None while it has none.
    response_status: Mapped[ResponseStatus | None] = mapped_column(_enum(ResponseStatus, "target_response_status"))
    # Call-backs the household asked for by calling our number (campaigns.calls.request_call_back): each
    # one is a dial beyond the round's attempt budget; the one pending is claimed before anything else.
    call_backs: Mapped[int] = mapped_column(Integer, default=0)
    call_back_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: none pending
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    round: Mapped[Round] = relationship(back_populates="targets")
    household: Mapped[Household | None] = relationship()
    call_attempts: Mapped[list[CallAttempt]] = relationship(back_populates="target", order_by="CallAttempt.id")
    response: Mapped[Response | None] = relationship(back_populates="target", uselist=False)


class CallAttempt(Base):
    """One phone call, outbound or inbound, for one target."""

    __tablename__ = "call_attempts"
    __table_args__ = (UniqueConstraint("target_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("round_targets.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per target; makes a duplicate claim impossible
    direction: Mapped[CallDirection] = mapped_column(
        _enum(CallDirection, "call_direction"), default=CallDirection.OUTBOUND
    )
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The Twilio account the call was placed through and the caller ID it showed (None: not placed, or placed
    # before accounts were recorded; then every account is asked about it).
    account: Mapped[str | None] = mapped_column(String(30))
    from_number: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[CallStatus] = mapped_column(_enum(CallStatus, "call_status"), default=CallStatus.CLAIMED)
    last_sequence_number: Mapped[int] = mapped_column(Integer, default=-1)
    answered_by: Mapped[str | None] = mapped_column(String(30))
    error_code: Mapped[str | None] = mapped_column(String(20))
    error_message: Mapped[str | None] = mapped_column(Text)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    placed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When sanlv last heard of the call: a webhook about it, or the provider saying it is still live. The
    # sweeper asks the provider about a call quiet for longer than its questionnaire allows.
    last_heard_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    target: Mapped[RoundTarget] = relationship(back_populates="call_attempts")


class Response(Base):
    """One interview per household per round, possibly spread over several calls (resume)."""

    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("round_targets.id"), unique=True)
    status: Mapped[ResponseStatus] = mapped_column(
        _enum(ResponseStatus, "response_status"), default=ResponseStatus.IN_PROGRESS
    )
    # Where the interview stands: the step being asked and its try (1-based). None before the first question.
    current_step: Mapped[str | None] = mapped_column(String(50))
    current_try: Mapped[int] = mapped_column(Integer, default=0)
    # Sequence number of the prompt last played (see KeyPress); each Gather carries it.
    prompt_seq: Mapped[int] = mapped_column(Integer, default=0)
    prompted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Answered (at least in part) on a call the resident made to us, in a round that opted into it: the
    # caller's number was not proven, so reports count these apart.
    inbound: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    target: Mapped[RoundTarget] = relationship(back_populates="response")
    answers: Mapped[list[Answer]] = relationship(back_populates="response", order_by="Answer.id")


class Answer(Base):
    """The current answer to one question of one response (at most one per question)."""

    __tablename__ = "answers"
    __table_args__ = (UniqueConstraint("response_id", "question"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)  # denormalised for roll-ups
    # Denormalised for the reports: the village of the response's target, and whether the response is completed.
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"))
    counted: Mapped[bool] = mapped_column(Boolean, default=False)
    question: Mapped[str] = mapped_column(String(50))
    digit: Mapped[str] = mapped_column(String(5))  # the key pressed, e.g. "1", "0"
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("call_attempts.id"))
    # Paradata: how the resident got there.
    tries: Mapped[int] = mapped_column(Integer, default=1)
    invalid_keys: Mapped[int] = mapped_column(Integer, default=0)
    silences: Mapped[int] = mapped_column(Integer, default=0)
    seconds_to_answer: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    response: Mapped[Response] = relationship(back_populates="answers")


class AnswerChange(Base):
    """History of an answer replaced by a later, different key press (read-back "re-choose", or a resumed call)."""

    __tablename__ = "answer_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    answer_id: Mapped[int] = mapped_column(ForeignKey("answers.id"), index=True)
    old_digit: Mapped[str] = mapped_column(String(5))
    new_digit: Mapped[str] = mapped_column(String(5))
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("call_attempts.id"))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FollowUpStatus(enum.StrEnum):
    PENDING = "pending"  # the resident asked for a visit; nobody has gone yet
    VISITED = "visited"  # the cadre visited; the matter may still be open
    RESOLVED = "resolved"  # final: the resident's concern was dealt with
    UNREACHABLE = "unreachable"  # final: the cadre could not reach the resident


class FollowUp(Base):
    """A dissatisfied resident who pressed "visit: yes": one item on the responsible cadre's list."""

    __tablename__ = "follow_ups"

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"), unique=True)
    household_id: Mapped[int | None] = mapped_column(ForeignKey("households.id"), index=True)  # None: retained
    cadre_id: Mapped[int | None] = mapped_column(ForeignKey("cadres.id"), index=True)
    negatives: Mapped[list[str]] = mapped_column(JSON)  # rate keys answered negatively
    concern: Mapped[str | None] = mapped_column(String(5))  # the `concern` key pressed, if asked
    status: Mapped[FollowUpStatus] = mapped_column(
        _enum(FollowUpStatus, "follow_up_status"), default=FollowUpStatus.PENDING
    )
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class FollowUpEvent(Base):
    """Each status change of a follow-up, with its note and time (who recorded it, where known)."""

    __tablename__ = "follow_up_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    follow_up_id: Mapped[int] = mapped_column(ForeignKey("follow_ups.id"), index=True)
    status: Mapped[FollowUpStatus] = mapped_column(_enum(FollowUpStatus, "follow_up_status"))
    note: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeyPress(Base):
    """Every key press that reached the server, exactly once.

    Every prompt a response plays gets the next sequence number, carried in the Gather action URL, so a
    replayed or retried webhook hits the unique constraint and stores nothing new.
    """

    __tablename__ = "key_presses"
    __table_args__ = (UniqueConstraint("response_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    attempt_id: Mapped[int] = mapped_column(ForeignKey("call_attempts.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(50))
    try_number: Mapped[int] = mapped_column(Integer)
    digits: Mapped[str] = mapped_column(String(20))  # "" for silence
    outcome: Mapped[str] = mapped_column(String(20))  # answer | invalid | silence | repeat | stop | confirm
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeploymentSecret(Base):
    """A secret this deployment generated for itself and keeps (campaigns.secrets), e.g. the key the simulated
    phone network signs its webhooks with when there is no Twilio auth token."""

    __tablename__ = "deployment_secrets"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UserRole(enum.StrEnum):
    """Who may do what in the web application (web.security decides per view)."""

    ADMIN = "admin"  # the office (综治办) lead: everything, plus users and the audit log
    OFFICE = "office"  # office staff: roster, rounds, reports, follow-ups
    SUPERVISOR = "supervisor"  # 纪委 / 抽查组: reports, per-cadre supervision, every follow-up read-only
    CADRE = "cadre"  # linked to one roster cadre: their own follow-ups, nothing else


class User(Base):
    """A person who signs in to the web application (or calls the API with a token of theirs)."""

    __tablename__ = "users"
    __table_args__ = (
        # A cadre user is linked to exactly one roster cadre; nobody else is linked to any.
        CheckConstraint(
            "(role = 'cadre' AND cadre_id IS NOT NULL) OR (role <> 'cadre' AND cadre_id IS NULL)",
            name="cadre_link",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    role: Mapped[UserRole] = mapped_column(_enum(UserRole, "user_role"))
    cadre_id: Mapped[int | None] = mapped_column(ForeignKey("cadres.id"), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, in the PHC string format
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Part of every session's identity: bumped when the password changes (or the user is disabled), so every
    # session signed in before that stops being accepted.
    session_epoch: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    cadre: Mapped[Cadre | None] = relationship()


class ApiToken(Base):
    """A per-user API token (``Authorization: Bearer``). Only its SHA-256 is kept; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256 of the token
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: still valid

    user: Mapped[User] = relationship()


class AuditEntry(Base):
    """One audited action (campaigns.audit). Append-only: the application never updates or deletes a row."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # The signed-in user, when there is one (None for the command line and failed sign-ins of unknown names).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Who acted, as shown: a username, "cli:<os user>", or the name a failed sign-in tried.
    username: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(50))
    object_type: Mapped[str | None] = mapped_column(String(50))
    object_id: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    remote_addr: Mapped[str | None] = mapped_column(String(64))


@event.listens_for(AuditEntry, "before_update")
@event.listens_for(AuditEntry, "before_delete")
def _audit_is_append_only(_mapper, _connection, entry: AuditEntry) -> None:
    raise RuntimeError(f"the audit log is append-only: entry {entry.id} cannot be changed or deleted")


# --- Report figures: denormalised columns and how they are kept -----------------------------------------
#
# The village rates fold a round's answers per village and question (reports.rates). Joining every answer to
# its response, target and household to learn its village and whether it counts costs about three times the
# bare scan of the answers on PostgreSQL (bench/rates.py), so four columns carry those facts instead:
#
# - ``round_targets.village_id`` = the household's village (set when the round is sampled);
# - ``round_targets.response_status`` = the status of the target's response (None without one);
# - ``answers.village_id`` = the village of the answer's target;
# - ``answers.counted`` = the answer's response is completed (rates count completed responses only).
#
# Who keeps them equal to what they copy: a household that moves village moves its targets and answers with
# it (campaigns.roster); the key-press hot path, which writes answers with Core statements, passes both answer
# columns itself (campaigns.interview); everything written through the ORM is kept by the listeners below, so a
# response's status is mirrored wherever it changes, and an answer or target added without the copies gets
# them from its parents.


def _household_village(connection, household_id: int) -> int | None:
    households = Household.__table__
    return connection.scalar(select(households.c.village_id).where(households.c.id == household_id))


@event.listens_for(RoundTarget, "before_insert")
def _target_village(_mapper, connection, target: RoundTarget) -> None:
    if target.village_id is None:
        target.village_id = _household_village(connection, target.household_id)


@event.listens_for(Answer, "before_insert")
def _answer_copies(_mapper, connection, answer: Answer) -> None:
    if answer.village_id is None or answer.counted is None:
        targets, responses = RoundTarget.__table__, Response.__table__
        village_id, status = connection.execute(
            select(targets.c.village_id, responses.c.status)
            .join(targets, targets.c.id == responses.c.target_id)
            .where(responses.c.id == answer.response_id)
        ).one()
        if answer.village_id is None:
            answer.village_id = village_id
        if answer.counted is None:
            answer.counted = status == ResponseStatus.COMPLETED


@event.listens_for(Response, "after_insert")
def _mirror_new_response(_mapper, connection, response: Response) -> None:
    _mirror(connection, response)


@event.listens_for(Response, "after_update")
def _mirror_changed_response(_mapper, connection, response: Response) -> None:
    if inspect(response).attrs.status.history.has_changes():
        _mirror(connection, response)


def _mirror(connection, response: Response) -> None:
    session = object_session(response)
    mirror_response_status(connection, response.id, response.target_id, response.status, session)


def mirror_response_status(
    connection,
    response_id: int,
    target_id: int,
    status: ResponseStatus,
    session: Session | None = None,
) -> None:
    """Copy a response's status to its target, and count its answers once it is completed."""
    targets, answers = RoundTarget.__table__, Answer.__table__
    connection.execute(update(targets).where(targets.c.id == target_id).values(response_status=status))
    if session is not None:  # a target loaded in the session shows the new value without a reload
        loaded = session.identity_map.get(identity_key(RoundTarget, target_id))
        if loaded is not None:
            set_committed_value(loaded, "response_status", status)
    if status == ResponseStatus.COMPLETED:
        connection.execute(
            update(answers).where(answers.c.response_id == response_id, ~answers.c.counted).values(counted=True)
        )


# --- Notices: SMS and voice broadcasts to the roster (campaigns.notices) --------------------------------


class NoticeChannel(enum.StrEnum):
    SMS = "sms"  # a text message through the Messages API
    VOICE = "voice"  # a phone call that plays the recording (or the text spoken by TTS)


class NoticeStatus(enum.StrEnum):
    """A notice's lifecycle; the same states and commands as a round's (RoundStatus)."""

    DRAFT = "draft"  # created, targets sampled and the hold-out drawn, nothing sent yet
    RUNNING = "running"  # sending inside its windows (it also waits, still running, outside them)
    PAUSED = "paused"  # nothing new is sent; messages already at the provider go on
    COMPLETED = "completed"  # every target reached a final state
    CANCELLED = "cancelled"  # stopped by the office; targets not yet sent are cancelled


class NoticeTargetState(enum.StrEnum):
    PENDING = "pending"  # to be sent, including a scheduled retry (next_attempt_at) or a later send_after
    SENDING = "sending"  # claimed by a worker, or sent to the provider and not final yet
    SENT = "sent"  # final: the provider accepted it (SMS: delivery is tracked in ``message_status``)
    HEARD = "heard"  # final (voice): the resident answered and the notice was played
    FAILED = "failed"  # final: the provider could not deliver it, or the attempts/deadline ran out
    INVALID = "invalid"  # final: permanent number failure
    OPTED_OUT = "opted_out"  # final: the number is on the do-not-contact list for this channel
    HELD_OUT = "held_out"  # final: drawn into the hold-out; never sent (the comparison group of the lift)
    CANCELLED = "cancelled"  # final: the notice was cancelled before this target was sent


FINAL_NOTICE_TARGET_STATES = frozenset(
    {
        NoticeTargetState.SENT,
        NoticeTargetState.HEARD,
        NoticeTargetState.FAILED,
        NoticeTargetState.INVALID,
        NoticeTargetState.OPTED_OUT,
        NoticeTargetState.HELD_OUT,
        NoticeTargetState.CANCELLED,
    }
)

# Twilio's message statuses in progress order: a status callback never moves a message backwards, and the
# final ones (delivered, undelivered, failed) are never replaced. "receiving/received" concern inbound only.
MESSAGE_STATUS_ORDER = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
}
FINAL_MESSAGE_STATUSES = frozenset({"delivered", "undelivered", "failed", "canceled"})


class Notice(Base):
    """A publicity notice sent to a sample of the roster, with a random hold-out (stratified by village).

    A pre-survey notice (``round_id`` set) goes to the round's sampled households the day before its first
    call; its hold-out is drawn from the round's targets.
    """

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[NoticeChannel] = mapped_column(_enum(NoticeChannel, "notice_channel"))
    text: Mapped[str | None] = mapped_column(Text)  # SMS body (opt-out line included) or TTS text
    recording: Mapped[str | None] = mapped_column(String(255))  # voice: file name in the recordings dir
    status: Mapped[NoticeStatus] = mapped_column(_enum(NoticeStatus, "notice_status"), default=NoticeStatus.DRAFT)
    sample: Mapped[str] = mapped_column(String(50), default="all")  # all | village:N | cadre:N
    sample_seed: Mapped[int | None] = mapped_column(Integer)
    holdout: Mapped[float] = mapped_column(Float, default=0.0)  # share of each village's targets held out
    seed: Mapped[int | None] = mapped_column(Integer)  # the hold-out draw's seed (reproducible)
    windows: Mapped[list[list[str]]] = mapped_column(JSON)  # as Round.windows
    blocked_dates: Mapped[list[str]] = mapped_column(JSON, default=list)
    cps: Mapped[float] = mapped_column(Float, default=1.0)  # messages (or calls) per second
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)  # sends per target (429s are not counted)
    segments: Mapped[int] = mapped_column(Integer, default=1)  # SMS segments per message (shown before launch)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), index=True)  # pre-survey notice
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retained_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # ``data retain`` removed its numbers

    targets: Mapped[list[NoticeTarget]] = relationship(back_populates="notice")


class NoticeTarget(Base):
    """One household of a notice: sent to, or held out (``held_out``; stored so the lift can compare)."""

    __tablename__ = "notice_targets"
    __table_args__ = (
        UniqueConstraint("notice_id", "household_id"),
        # The dispatcher's hot query: a notice's pending targets in id order (the due filter is applied on the way).
        Index(
            "ix_notice_targets_due",
            "notice_id",
            "id",
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
        # Counting a notice's targets by state (claims waiting, live calls, "any left?") without scanning them all.
        Index("ix_notice_targets_state", "notice_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id"), index=True)
    # Both None once ``data retain`` has pseudonymised the notice (its lift is kept in NoticeArm).
    household_id: Mapped[int | None] = mapped_column(ForeignKey("households.id"), index=True)
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"))
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164 at sampling time
    held_out: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[NoticeTargetState] = mapped_column(
        _enum(NoticeTargetState, "notice_target_state"), default=NoticeTargetState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # sends placed or being placed
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: due now (a retry, or send_after)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The exactly-once mark: set just before a create request; whoever finds it set looks the message or call
    # up at the provider before anything else. ``ambiguous``: the request got a timeout or a 5xx.
    create_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ambiguous: Mapped[bool] = mapped_column(Boolean, default=False)
    message_sid: Mapped[str | None] = mapped_column(String(64), unique=True)  # SM... (SMS)
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)  # CA... (voice)
    provider_status: Mapped[str | None] = mapped_column(String(20))  # the provider's last status, never backwards
    last_sequence_number: Mapped[int] = mapped_column(Integer, default=-1)  # voice callbacks
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)  # SMS delivered / voice answered by a person
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heard_to_end: Mapped[bool | None] = mapped_column(Boolean)  # voice: the notice played to its end
    plays: Mapped[int] = mapped_column(Integer, default=0)  # voice: times played (``*`` hears it again)
    error_code: Mapped[str | None] = mapped_column(String(20))
    error_message: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    final_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    notice: Mapped[Notice] = relationship(back_populates="targets")


class NoticeArm(Base):
    """Where a survey target stood in a notice's draw (village of the draw, held out, delivered), kept for
    the lift once the two can no longer be matched by household: ``data retain`` took the household away from
    the round's targets or from the notice's. Neither row leads back to a number."""

    __tablename__ = "notice_arms"

    round_target_id: Mapped[int] = mapped_column(ForeignKey("round_targets.id"), primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id"), primary_key=True, index=True)
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"))
    held_out: Mapped[bool] = mapped_column(Boolean)
    delivered: Mapped[bool] = mapped_column(Boolean)


class SmsOptOut(Base):
    """Numbers that replied TD / 退订 / STOP: never sent an SMS notice again (the do-not-contact list for SMS)."""

    __tablename__ = "sms_opt_outs"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)  # E.164
    keyword: Mapped[str] = mapped_column(String(20))  # what they replied (TD, 退订, STOP)
    message_sid: Mapped[str | None] = mapped_column(String(64))  # the inbound message
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
