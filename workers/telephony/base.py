"""The telephony provider interface (calls and text messages). Two providers implement it: Twilio and the
simulated phone network."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# Status-callback events we ask for: every step, so a call's state is always known.
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")


@dataclass(frozen=True)
class CallRequest:
    """Everything needed to place one outbound call."""

    attempt_id: int
    to: str  # E.164
    from_: str  # E.164 caller ID
    url: str  # voice webhook (absolute, carries the attempt id)
    status_callback: str  # status webhook (absolute, carries the attempt id)
    timeout: int = 30  # ring seconds
    machine_detection: bool = False


@dataclass(frozen=True)
class CallInfo:
    """What the provider knows about a call."""

    sid: str
    status: str  # one of Twilio's statuses: queued, initiated, ringing, in-progress, completed, busy, ...
    to: str = ""
    duration: int | None = None
    start_time: datetime | None = None
    date_created: datetime | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MessageRequest:
    """Everything needed to send one SMS (Twilio's Messages API)."""

    target_id: int  # the notice target it is for (logs only; the provider knows nothing of notices)
    to: str  # E.164
    from_: str  # E.164 sender
    body: str
    status_callback: str  # status webhook (absolute, carries the target id)


@dataclass(frozen=True)
class MessageInfo:
    """What the provider knows about a message."""

    sid: str
    status: str  # Twilio's: accepted, queued, sending, sent, delivered, undelivered, failed, ...
    to: str = ""
    from_: str = ""
    body: str = ""
    num_segments: int | None = None
    error_code: int | None = None
    date_created: datetime | None = None


class TelephonyError(Exception):
    """A provider call failed. ``code`` is Twilio's error code where there is one."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class PermanentNumberError(TelephonyError):
    """The number can never be called (Twilio 21211 invalid, 21215/21216 not permitted / blocked)."""


class RateLimitedError(TelephonyError):
    """The provider refused the request for load (HTTP 429 / 20429); nothing was created. Retry later."""


class AmbiguousCreateError(TelephonyError):
    """A create request timed out or got a 5xx: the call may or may not exist. Look it up before retrying."""


class ConfigurationError(TelephonyError):
    """Credentials or account settings are wrong (e.g. 20003): no retry will help."""


class TelephonyProvider(Protocol):
    name: str

    def place_call(self, request: CallRequest) -> CallInfo:
        """Create the call. Raises one of the TelephonyError subclasses above."""

    def fetch_call(self, sid: str) -> CallInfo:
        """The call's current state."""

    def find_calls(self, to: str, since: datetime) -> list[CallInfo]:
        """Calls to ``to`` created at or after ``since`` (used to adopt a call after an ambiguous create)."""

    def cancel_call(self, sid: str) -> None:
        """Cancel a call that is queued or ringing; calls in progress are left to finish."""

    def forget_number(self, phone: str, sids: list[str]) -> int:
        """Erase what the provider keeps here about ``phone`` and its calls ``sids`` (``household forget``);
        returns how many records went. Optional: workers.privacy treats a provider without it as keeping
        nothing here (Twilio keeps its call logs in its own console)."""
    def send_message(self, request: MessageRequest) -> MessageInfo:
        """Create the message. Raises one of the TelephonyError subclasses above (ambiguous on a 5xx/timeout)."""

    def fetch_message(self, sid: str) -> MessageInfo:
        """The message's current state."""

    def find_messages(self, to: str, from_: str, since: datetime) -> list[MessageInfo]:
        """Messages from ``from_`` to ``to`` created at or after ``since`` (to adopt one after an ambiguous
        create: the body tells whose it is)."""
