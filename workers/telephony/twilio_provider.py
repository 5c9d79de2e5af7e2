"""The Twilio telephony provider: places, looks up and cancels calls through Twilio's REST API.

Every failure leaves this module as one of the TelephonyError subclasses in ``workers.telephony.base``, chained
to the original exception, so the dialer decides what to do from the class alone:

- ``PermanentNumberError``: the number can never be called; the target is ``invalid``.
- ``RateLimitedError``: Twilio refused the request for load and created nothing; retry with backoff.
- ``AmbiguousCreateError``: a create got a 5xx or no answer at all; the call may exist. Look it up with
  ``find_calls`` before retrying, or a resident may be rung twice.
- ``ConfigurationError``: credentials, caller ID or account settings are wrong; no retry will help.
- ``TelephonyError``: anything else (a bad request, a transport error while reading).

The provider owns an HTTP connection pool: create one per process (after any fork, never before it: a pool
must not be shared across processes) and ``close()`` it when done.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from types import TracebackType
from typing import Any

import requests
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from campaigns.phones import mask
from campaigns.settings import Settings
from workers.metrics import TWILIO_ERRORS, count
from workers.telephony.base import (
    STATUS_EVENTS,
    AmbiguousCreateError,
    CallInfo,
    CallRequest,
    ConfigurationError,
    MessageInfo,
    MessageRequest,
    PermanentNumberError,
    RateLimitedError,
    TelephonyError,
)

log = logging.getLogger("sanlv.twilio")

# Twilio error codes that mean "this number can never be called".
PERMANENT_NUMBER_CODES = frozenset(
    {
        21211,  # invalid 'To' phone number
        21214,  # 'To' phone number cannot be reached
        21215,  # geo permissions do not allow calling this number
        21216,  # number is on Twilio's block list
        21217,  # phone number does not appear to be valid
        21401,  # invalid phone number
        21610,  # the recipient has unsubscribed (replied STOP)
        13224,  # invalid phone number (Dial)
        13225,  # forbidden phone number (Dial)
        13227,  # geo permissions (Dial)
    }
)

# Twilio error codes that mean our deployment is wrong, whatever number we call.
CONFIGURATION_CODES = frozenset(
    {
        20003,  # authentication failed
        20005,  # account not active
        21205,  # 'Url' is not a valid URL: PUBLIC_BASE_URL is wrong
        21210,  # 'From' number is not verified for this account
        21212,  # invalid 'From' number
        21213,  # 'From' number is required
        21219,  # trial account: 'To' number not verified
    }
)

RATE_LIMITED_CODE = 20429
CALL_NOT_CANCELABLE_CODE = 21220  # the call is already in progress or over
FIND_PAGE_SIZE = 50


class TwilioProvider:
    """The ``TelephonyProvider`` backed by the real ``twilio.rest.Client``.

    Args:
        settings: needs ``twilio_account_sid``, ``twilio_auth_token`` and ``twilio_http_timeout``;
            ``twilio_from_number`` is the caller ID when a request names none, and ``twilio_api_base_url``
            (a test double) replaces ``https://api.twilio.com``.

    Raises:
        ConfigurationError: the account SID or auth token is missing.
    """

    name = "twilio"

    def __init__(self, settings: Settings):
        if not settings.twilio_account_sid or not settings.twilio_auth_token:
            raise ConfigurationError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are required for the Twilio provider")
        self._settings = settings
        self._from_number = settings.twilio_from_number or ""
        # The library waits forever by default; a stuck request would hang a worker with a claimed call.
        http_client = TwilioHttpClient(timeout=settings.twilio_http_timeout)
        self._client = Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=http_client)
        if settings.twilio_api_base_url:
            # The Api domain serves /2010-04-01. Region and edge (read from TWILIO_REGION / TWILIO_EDGE by
            # the client) would rewrite this host into something like 127.0.0.1.sydney.au1.twilio.com.
            self._client.api.base_url = settings.twilio_api_base_url.rstrip("/")
            self._client.region = None
            self._client.edge = None

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        session = getattr(self._client.http_client, "session", None)
        if session is not None:
            session.close()

    def __enter__(self) -> TwilioProvider:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def place_call(self, request: CallRequest) -> CallInfo:
        """Create the call at Twilio.

        Args:
            request: the call to place; its URLs must be absolute and reachable by Twilio.

        Returns:
            The new call, normally ``queued``.

        Raises:
            PermanentNumberError: the number can never be called.
            RateLimitedError: Twilio refused the request for load; nothing was created.
            AmbiguousCreateError: a 5xx, a timeout or a broken connection; the call may exist.
            ConfigurationError: credentials, caller ID or webhook URL are wrong.
            TelephonyError: any other refusal.
        """
        params: dict[str, Any] = {
            "to": request.to,
            "from_": request.from_ or self._from_number,
            "url": request.url,
            "method": "POST",
            "status_callback": request.status_callback,
            "status_callback_method": "POST",
            # One StatusCallbackEvent per event, as Twilio documents; without them it sends only `completed`.
            "status_callback_event": list(STATUS_EVENTS),
            "timeout": request.timeout,
        }
        if request.machine_detection:
            params["machine_detection"] = "Enable"
        try:
            call = self._client.calls.create(**params)
        except (TwilioException, requests.RequestException, json.JSONDecodeError) as exc:
            error = self._error(exc, "create call", creating=True)
            log.warning(
                "event=call_create_failed attempt=%s to=%s error=%s status=%s code=%s",
                request.attempt_id,
                _masked(request.to),
                type(error).__name__,
                error.status,
                error.code,
            )
            raise error from exc
        info = _call_info(call)
        log.info(
            "event=call_created attempt=%s sid=%s status=%s to=%s",
            request.attempt_id,
            info.sid,
            info.status,
            _masked(request.to),
        )
        return info

    def fetch_call(self, sid: str) -> CallInfo:
        """The call's current state at Twilio.

        Raises:
            TelephonyError: the call is unknown (``status`` 404) or Twilio could not be asked; the subclasses
                as in ``place_call`` where they apply.
        """
        try:
            call = self._client.calls(sid).fetch()
        except (TwilioException, requests.RequestException, json.JSONDecodeError) as exc:
            raise self._error(exc, f"fetch call {sid}", creating=False) from exc
        return _call_info(call)

    def find_calls(self, to: str, since: datetime) -> list[CallInfo]:
        """Calls to ``to`` created at or after ``since``, to adopt a call after an ambiguous create.

        Only ``To`` is filtered by Twilio. Its ``StartTime`` filters compare whole UTC dates and skip calls
        that have not started yet, which are exactly the queued calls an ambiguous create leaves behind; so
        the creation time is compared here. Twilio stamps ``date_created`` to the second, so ``since`` counts
        from the start of its second. ``since`` is compared with Twilio's clock: allow for skew if it matters.

        Args:
            to: the E.164 number called.
            since: an aware datetime, typically just before the create request was sent.

        Returns:
            The calls, most recent first.

        Raises:
            ValueError: ``since`` is naive.
            TelephonyError: Twilio could not be asked (subclasses as in ``place_call`` where they apply).
        """
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError("find_calls needs an aware datetime for since")
        since = since.replace(microsecond=0)
        found: list[CallInfo] = []
        try:
            for call in self._client.calls.stream(to=to, page_size=FIND_PAGE_SIZE):
                if call.date_created is not None and call.date_created >= since:
                    found.append(_call_info(call))
        except (TwilioException, requests.RequestException, json.JSONDecodeError) as exc:
            raise self._error(exc, "list calls", creating=False) from exc
        # Most recent first, as Twilio lists them; the sort is stable, so same-second calls keep its order.
        found.sort(key=lambda info: info.date_created or since, reverse=True)
        log.info("event=calls_found to=%s since=%s count=%d", _masked(to), since.isoformat(), len(found))
        return found

    def _error(self, exc: BaseException, action: str, *, creating: bool) -> TelephonyError:
        """The TelephonyError for a failed request, counted for Prometheus by Twilio's error code (``none``
        when the request got no usable answer, else the HTTP status when Twilio gave no code)."""
        error = _map_error(exc, action, creating=creating)
        code = error.code if error.code is not None else (error.status if error.status is not None else "none")
        count(self._settings, TWILIO_ERRORS, code)
        return error

    def cancel_call(self, sid: str) -> None:
        """Cancel a call that is queued or ringing; a call in progress or over is left alone.

        Raises:
            TelephonyError: Twilio could not be asked, or refused for another reason than the call's state.
        """
        try:
            call = self._client.calls(sid).update(status="canceled")
        except TwilioRestException as exc:
            if exc.code == CALL_NOT_CANCELABLE_CODE:
                # Twilio only cancels queued or ringing calls; one that was answered must be served to the end.
                log.info("event=cancel_skipped sid=%s code=%s reason=call_not_queued_or_ringing", sid, exc.code)
                return
            raise self._error(exc, f"cancel call {sid}", creating=False) from exc
        except (TwilioException, requests.RequestException, json.JSONDecodeError) as exc:
            raise self._error(exc, f"cancel call {sid}", creating=False) from exc
        if call.status == "canceled":
            log.info("event=call_canceled sid=%s", sid)
        else:
            # Twilio answers 200 and leaves an answered call alone.
            log.info("event=cancel_skipped sid=%s status=%s reason=call_not_queued_or_ringing", sid, call.status)

    # -- messages (SMS notices) ------------------------------------------------------------------------------

    def send_message(self, request: MessageRequest) -> MessageInfo:
        """Create the SMS at Twilio, with its status callback.

        Raises:
            PermanentNumberError: the number can never be texted (21211, 21610 unsubscribed, ...).
            RateLimitedError: Twilio refused the request for load; nothing was created.
            AmbiguousCreateError: a 5xx, a timeout or a broken connection; the message may exist.
            ConfigurationError: credentials or sender are wrong.
            TelephonyError: any other refusal.
        """
        try:
            message = self._client.messages.create(
                to=request.to,
                from_=request.from_ or self._from_number,
                body=request.body,
                status_callback=request.status_callback,
            )
        except (TwilioException, requests.RequestException, json.JSONDecodeError) as exc:
            error = _map_error(exc, "create message", creating=True)
            log.warning(
                "event=message_create_failed target=%s to=%s error=%s status=%s code=%s",
                request.target_id,
                _masked(request.to),
                type(error).__name__,
                error.status,
                error.code,
            )
            raise error from exc
        info = _message_info(message)
        log.info("event=message_created target=%s sid=%s status=%s to=%s", request.target_id, info.sid, info.status,
                 _masked(request.to))
        return info

    def fetch_message(self, sid: str) -> MessageInfo:
        """The message's current state at Twilio (TelephonyError with ``status`` 404 if unknown)."""
        try:
            message = self._client.messages(sid).fetch()
        except (TwilioException, requests.RequestException, json.JSONDecodeError) as exc:
            raise _map_error(exc, f"fetch message {sid}", creating=False) from exc
        return _message_info(message)

    def find_messages(self, to: str, from_: str, since: datetime) -> list[MessageInfo]:
        """Messages from ``from_`` to ``to`` created at or after ``since``, most recent first.

        Twilio filters by ``To``, ``From`` and the whole UTC date sent (``DateSent>=``); a message still queued
        has no date sent yet, so only To and From are passed and the creation time is compared here.
        """
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError("find_messages needs an aware datetime for since")
        since = since.replace(microsecond=0)
        found: list[MessageInfo] = []
        try:
            for message in self._client.messages.stream(to=to, from_=from_ or self._from_number,
                                                        page_size=FIND_PAGE_SIZE):
                if message.date_created is not None and message.date_created >= since:
                    found.append(_message_info(message))
        except (TwilioException, requests.RequestException, json.JSONDecodeError) as exc:
            raise _map_error(exc, "list messages", creating=False) from exc
        found.sort(key=lambda info: info.date_created or since, reverse=True)
        log.info("event=messages_found to=%s count=%d", _masked(to), len(found))
        return found


def _message_info(message: Any) -> MessageInfo:
    """A ``MessageInfo`` from the client's ``MessageInstance``."""
    segments = message.num_segments
    return MessageInfo(
        sid=message.sid,
        status=message.status,
        to=message.to or "",
        from_=message.from_ or "",
        body=message.body or "",
        num_segments=int(segments) if segments not in (None, "") else None,
        error_code=message.error_code,
        date_created=message.date_created,
    )


def _call_info(call: Any) -> CallInfo:
    """A ``CallInfo`` from the client's ``CallInstance``."""
    extra = {
        "from": call._from,  # the client names the attribute ``_from`` because ``from`` is a keyword
        "direction": call.direction,
        "answered_by": call.answered_by,
        "end_time": call.end_time,
        "queue_time": call.queue_time,
        "parent_call_sid": call.parent_call_sid,
    }
    return CallInfo(
        sid=call.sid,
        status=call.status,
        to=call.to or "",
        duration=int(call.duration) if call.duration not in (None, "") else None,
        start_time=call.start_time,
        date_created=call.date_created,
        extra={key: value for key, value in extra.items() if value is not None},
    )


def _status_and_code(exc: BaseException) -> tuple[int | None, int | None, str]:
    """HTTP status, Twilio error code and message of a failed request."""
    if isinstance(exc, TwilioRestException):
        return exc.status, exc.code, exc.msg
    if isinstance(exc, TwilioServiceException):
        return exc.status, exc.code, exc.detail or exc.title
    if isinstance(exc, TwilioException) and len(exc.args) >= 2 and hasattr(exc.args[1], "status_code"):
        # A list request that failed raises a bare TwilioException("Unable to fetch page", response).
        response = exc.args[1]
        code = None
        message = str(exc.args[0])
        try:
            body = json.loads(response.text)
            code = body.get("code")
            message = f"{message}: {body.get('message', '')}"
        except (ValueError, AttributeError):
            pass
        return response.status_code, code, message
    return None, None, str(exc) or type(exc).__name__


def _map_error(exc: BaseException, action: str, *, creating: bool) -> TelephonyError:
    """The TelephonyError subclass for a failed request (see the module docstring)."""
    if isinstance(exc, (requests.RequestException, json.JSONDecodeError)):
        # No usable answer: on a create the request may have reached Twilio and the call may exist.
        message = f"Twilio {action}: no usable answer ({type(exc).__name__}: {exc})"
        return AmbiguousCreateError(message) if creating else TelephonyError(message)
    status, code, detail = _status_and_code(exc)
    message = f"Twilio {action} failed: HTTP {status} code {code}: {detail}"
    if code in PERMANENT_NUMBER_CODES:
        return PermanentNumberError(message, code=code, status=status)
    if status == 429 or code == RATE_LIMITED_CODE:
        return RateLimitedError(message, code=code, status=status)
    if status in (401, 403) or code in CONFIGURATION_CODES:
        return ConfigurationError(message, code=code, status=status)
    if creating and status == 404:
        # The Calls collection lives under the account: a 404 on create means the account SID is wrong.
        return ConfigurationError(message, code=code, status=status)
    if status is not None and status >= 500:
        return (
            AmbiguousCreateError(message, code=code, status=status)
            if creating
            else TelephonyError(message, code=code, status=status)
        )
    return TelephonyError(message, code=code, status=status)


def _masked(number: str) -> str:
    """The number as logs may show it (residents' numbers are masked everywhere)."""
    try:
        return mask(number)
    except Exception:  # an unparsable number (Twilio is about to reject it) must not break logging
        return "*" * len(number)
