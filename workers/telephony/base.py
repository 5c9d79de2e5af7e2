"""The telephony provider interface. Two providers implement it: Twilio and the simulated phone network."""

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
