"""A local stand-in of Twilio's REST API (the Calls and Messages resources), served over real HTTP on 127.0.0.1.

The real ``twilio`` client talks to it when ``TWILIO_API_BASE_URL`` (``client.api.base_url``) is its
``base_url``, so tests exercise the library's own request encoding, auth and error parsing. It behaves like
Twilio where the project depends on it: Basic auth (20003), form-encoded creates answered with 201 and a
``queued`` call resource, Twilio-shaped errors, pages the client's ``list()``/``stream()`` can follow, and
cancel only for queued or ringing calls (21220 otherwise). Scripted faults cover what is hard to get from the
real service on demand: a 429, a 5xx after the call was created, a reply slower than the client's timeout.

Usage::

    with TwilioStandIn() as standin:
        settings = Settings(..., twilio_api_base_url=standin.base_url)
        standin.fail_next(status=500, create_anyway=True)   # the next create is ambiguous
        ...
        assert standin.created == 1

Messages (SMS): create (201, ``queued``, ``num_segments``), fetch and list (``To``/``From`` filters, paged);
status callbacks are posted, signed, to each message's ``StatusCallback`` when a test asks
(:meth:`TwilioStandIn.send_message_status`) or, with :attr:`TwilioStandIn.message_callbacks` set, by a background
thread after each create (in any order, duplicated, as a test scripts); :meth:`TwilioStandIn.send_inbound_sms`
posts a resident's reply to our inbound SMS webhook. ``message_rate_limit`` refuses creates beyond that many in
any second with 429 (20429), as an account's messaging limit does.

Pytest: the ``twilio_standin`` fixture at the bottom; import it into a conftest or a test module.
"""

from __future__ import annotations

import math
import os
import queue
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from flask import Flask, Response, jsonify, request
from twilio.request_validator import RequestValidator
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from campaigns.settings import Settings

DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
API_VERSION = "2010-04-01"

CANCELABLE_STATUSES = ("queued", "initiated", "ringing")
STARTED_STATUSES = ("initiated", "ringing", "in-progress")
FINAL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
ALL_STATUSES = ("queued", *STARTED_STATUSES, *FINAL_STATUSES)

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

# Twilio's usual codes for bare HTTP statuses, used when a scripted fault names no code.
_DEFAULT_CODES = {429: 20429, 500: 20500, 503: 20503}
_DEFAULT_MESSAGES = {
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service unavailable",
    21211: "Invalid 'To' Phone Number",
    21214: "'To' phone number cannot be reached",
    21215: "Account not authorized to call this number. Perhaps you need to enable some international permissions",
    21216: "Call blocked by Twilio blocklist",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the stand-in received it (repeated keys keep every value, in order)."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    username: str | None  # the Basic auth user, which Twilio expects to be the account SID
    at: float  # time.monotonic() on arrival

    def value(self, key: str) -> str | None:
        """The first value of ``key`` in the form, else in the query string."""
        values = self.values(key)
        return values[0] if values else None

    def values(self, key: str) -> list[str]:
        """Every value of ``key`` in the form, else in the query string."""
        return list(self.form.get(key) or self.query.get(key) or [])


@dataclass(frozen=True)
class _Fault:
    """A scripted answer to one create request."""

    status: int | None  # None: answer 201 as usual (after ``delay``)
    code: int | None
    message: str
    delay: float
    create_anyway: bool


@dataclass
class _Call:
    sid: str
    account_sid: str
    to: str
    from_: str
    status: str
    date_created: datetime
    date_updated: datetime
    seq: int  # creation order, to sort calls created in the same second
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    answered_by: str | None = None
    form: dict[str, list[str]] = field(default_factory=dict)

    def resource(self) -> dict[str, Any]:
        """The call as Twilio's JSON represents it."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json"
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": self.answered_by,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": _rfc2822(self.date_created),
            "date_updated": _rfc2822(self.date_updated),
            "direction": "outbound-api",
            "duration": None if self.duration is None else str(self.duration),
            "end_time": _rfc2822(self.end_time),
            "forwarded_from": None,
            "from": self.from_,
            "from_formatted": self.from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": "PN" + "0" * 32,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": self.sid,
            "start_time": _rfc2822(self.start_time),
            "status": self.status,
            "subresource_uris": {
                "events": uri.replace(".json", "/Events.json"),
                "notifications": uri.replace(".json", "/Notifications.json"),
                "recordings": uri.replace(".json", "/Recordings.json"),
            },
            "to": self.to,
            "to_formatted": self.to,
            "trunk_sid": None,
            "uri": uri,
        }


MESSAGE_STATUSES = ("accepted", "queued", "sending", "sent", "delivered", "undelivered", "failed", "canceled")


@dataclass
class _Message:
    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    status: str
    date_created: datetime
    date_updated: datetime
    seq: int
    status_callback: str | None
    error_code: int | None = None
    date_sent: datetime | None = None

    def resource(self) -> dict[str, Any]:
        """The message as Twilio's JSON represents it."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        ucs2 = any(ord(ch) > 127 for ch in self.body)
        single, multi = (70, 67) if ucs2 else (160, 153)
        segments = 1 if len(self.body) <= single else math.ceil(len(self.body) / multi)
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": _rfc2822(self.date_created),
            "date_sent": _rfc2822(self.date_sent),
            "date_updated": _rfc2822(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(segments),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": self.to,
            "uri": uri,
        }


ARRIVED = "sanlv.standin.arrived"  # WSGI environ key: time.monotonic() as the request line was read


class _QuietRequestHandler(WSGIRequestHandler):
    """No access log line per request (benchmarks send thousands), and each request's arrival time taken as
    its first line is read off the socket, before its headers and body are parsed (on a busy machine, parsing
    in a thread that shares the GIL can add tens of milliseconds that are not the caller's doing)."""

    arrived: float | None = None

    def parse_request(self) -> bool:
        self.arrived = time.monotonic()  # called right after the request line was read
        return super().parse_request()

    def make_environ(self):
        environ = super().make_environ()
        environ[ARRIVED] = self.arrived if self.arrived is not None else time.monotonic()
        return environ

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class TwilioStandIn:
    """Twilio's Calls API on an ephemeral 127.0.0.1 port, in a background thread. Thread-safe.

    Args:
        account_sid: the account the credentials belong to (also the Basic auth user).
        auth_token: the Basic auth password.
        more_accounts: further accounts, SID -> auth token (a deployment with several Twilio accounts). Each
            account sees only its own calls, as at Twilio.
    """

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        more_accounts: dict[str, str] | None = None,
    ):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.tokens = {account_sid: auth_token, **(more_accounts or {})}
        self._create_accounts: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # releases replies held by delay_next when the stand-in stops
        self._calls: dict[str, _Call] = {}
        self._faults: deque[_Fault] = deque()
        self._recorded: list[RecordedRequest] = []
        self._create_times: list[float] = []
        self.fetch_delay = 0.0  # seconds each look-up of one call takes to answer (a slow Twilio)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._messages: dict[str, _Message] = {}
        self._message_faults: deque[_Fault] = deque()
        self._message_create_times: list[float] = []
        self._refused_for_rate = 0
        # Scripted status callbacks: ``message_callbacks(message resource)`` -> the MessageStatus values to post,
        # in that order, after each create (None: no callbacks unless a test sends them).
        self.message_callbacks: Any = None
        self.callback_delay = 0.01  # seconds between two scripted callbacks of one message
        self.message_rate_limit: float | None = None  # creates per second beyond which the answer is 429
        self.callback_results: list[tuple[str, str, int]] = []  # (sid, status, HTTP status of our webhook)
        self._callback_queue: queue.Queue[tuple[str, list[str]] | None] = queue.Queue()
        self._callback_thread: threading.Thread | None = None
        self._app = self._make_app()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> TwilioStandIn:
        """Listen on an ephemeral port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the Twilio stand-in is already running")
        self._stopping.clear()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietRequestHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="twilio-standin", daemon=True
        )
        self._thread.start()
        self._callback_thread = threading.Thread(target=self._post_callbacks, name="twilio-standin-callbacks",
                                                 daemon=True)
        self._callback_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket. Held replies are released at once."""
        if self._server is None:
            return
        self._stopping.set()
        self._callback_queue.put(None)
        if self._callback_thread is not None:
            self._callback_thread.join(timeout=5)
            self._callback_thread = None
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> TwilioStandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the value for TWILIO_API_BASE_URL."""
        if self._server is None:
            raise RuntimeError("the Twilio stand-in is not running")
        return f"http://127.0.0.1:{self._server.server_port}"

    # -- scripting -------------------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        code: int | None = None,
        message: str | None = None,
        *,
        create_anyway: bool = False,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` create requests with a Twilio error.

        Args:
            status: the HTTP status, e.g. 429 or 500.
            code: Twilio's error code (default: 20429 for 429, 20500 for 500, 20503 for 503, else none).
            message: the error message (default: Twilio's wording where known).
            create_anyway: create the call before answering with the error (an ambiguous create).
            delay: seconds to hold the reply, e.g. longer than the client's timeout.
            times: how many create requests get this answer.
        """
        code = code if code is not None else _DEFAULT_CODES.get(status)
        text = message or _DEFAULT_MESSAGES.get(code or 0, f"Scripted error (HTTP {status})")
        with self._lock:
            for _ in range(times):
                self._faults.append(_Fault(status, code, text, delay, create_anyway))

    def delay_next(self, seconds: float, *, times: int = 1) -> None:
        """Create the next ``times`` calls at once but hold each 201 reply ``seconds`` (a slow Twilio)."""
        with self._lock:
            for _ in range(times):
                self._faults.append(_Fault(None, None, "", seconds, True))

    def set_call_status(
        self, sid: str, status: str, *, answered_by: str | None = None, duration: int | None = None
    ) -> None:
        """Move a call to ``status`` as Twilio would, with its start and end times.

        Args:
            sid: the call.
            status: one of Twilio's call statuses.
            answered_by: what machine detection found (``human``, ``machine_start``, ...).
            duration: seconds, for a ``completed`` call (default: since it started).

        Raises:
            KeyError: no such call.
            ValueError: not a Twilio call status.
        """
        if status not in ALL_STATUSES:
            raise ValueError(f"{status!r} is not a Twilio call status")
        now = _now()
        with self._lock:
            call = self._calls[sid]
            call.status = status
            call.date_updated = now
            if answered_by is not None:
                call.answered_by = answered_by
            if status in STARTED_STATUSES and call.start_time is None:
                call.start_time = now
            if status in FINAL_STATUSES:
                if call.start_time is None and status != "canceled":
                    call.start_time = now  # busy, no-answer and failed calls were dialled
                call.end_time = now
                if duration is not None:
                    call.duration = duration
                elif status == "completed" and call.start_time is not None:
                    call.duration = int((now - call.start_time).total_seconds())
                else:
                    call.duration = 0

    def add_call(
        self,
        to: str,
        *,
        status: str = "completed",
        from_: str = "+861012345678",
        date_created: datetime | None = None,
    ) -> str:
        """Put a call in the account's history without a create request (not counted in ``created``).

        Returns:
            The call's SID.
        """
        if status not in ALL_STATUSES:
            raise ValueError(f"{status!r} is not a Twilio call status")
        created = (date_created or _now()).astimezone(UTC).replace(microsecond=0)
        with self._lock:
            call = self._new_call(to, from_, created, {})
            call.status = status
            if status in STARTED_STATUSES or (status in FINAL_STATUSES and status != "canceled"):
                call.start_time = created
            if status in FINAL_STATUSES:
                call.end_time = created
                call.duration = 0
        return call.sid

    # -- observations ----------------------------------------------------------------------------------------

    def call(self, sid: str) -> dict[str, Any]:
        """The call's resource as Twilio would return it. Raises KeyError for an unknown SID."""
        with self._lock:
            return self._calls[sid].resource()

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every call's resource, in creation order."""
        with self._lock:
            return [call.resource() for call in sorted(self._calls.values(), key=lambda c: c.seq)]

    @property
    def created(self) -> int:
        """Calls created by create requests (including ambiguous ones)."""
        with self._lock:
            return len(self._create_times)

    @property
    def requests(self) -> int:
        """HTTP requests received, whatever their outcome."""
        with self._lock:
            return len(self._recorded)

    @property
    def recorded(self) -> list[RecordedRequest]:
        """Every request received, in arrival order."""
        with self._lock:
            return list(self._recorded)

    @property
    def create_requests(self) -> list[RecordedRequest]:
        """Every ``POST .../Calls.json`` received, whether it created a call or not."""
        return [r for r in self.recorded if r.method == "POST" and r.path.endswith("/Calls.json")]

    @property
    def create_times(self) -> list[float]:
        """``time.monotonic()`` at which each call was created, in order."""
        with self._lock:
            return list(self._create_times)

    def create_times_of(self, account_sid: str) -> list[float]:
        """``time.monotonic()`` at which each create request for one account *arrived* (before it was parsed or
        answered: the closest this stand-in gets to the wire), in order."""
        return [r.at for r in self.create_requests if r.username == account_sid and r.path.split("/")[3] == account_sid]

    def max_creates_in_window(self, seconds: float = 1.0, account_sid: str | None = None) -> int:
        """The most calls created within any ``seconds``-long window (the peak dial rate), of every account
        or of one."""
        times = self.create_times if account_sid is None else self.create_times_of(account_sid)
        peak = 0
        first = 0
        for last, at in enumerate(times):
            while at - times[first] >= seconds:
                first += 1
            peak = max(peak, last - first + 1)
        return peak

    # -- the HTTP API ----------------------------------------------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask("twilio_standin")
        prefix = f"/{API_VERSION}/Accounts/<account_sid>"

        @app.before_request
        def record_and_authenticate() -> tuple[Response, int] | None:
            arrived = request.environ.get(ARRIVED) or time.monotonic()
            auth = request.authorization
            username = auth.username if auth is not None else None
            with self._lock:
                self._recorded.append(
                    RecordedRequest(
                        method=request.method,
                        path=request.path,
                        query=request.args.to_dict(flat=False),
                        form=request.form.to_dict(flat=False),
                        username=username,
                        at=arrived,
                    )
                )
            if auth is None or auth.username not in self.tokens or auth.password != self.tokens[auth.username]:
                response, status = _error(401, 20003, "Authenticate")
                response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
                return response, status
            account = (request.view_args or {}).get("account_sid")
            if account is not None and account != auth.username:
                return _error(404, 20404, f"The requested resource {request.path} was not found")
            return None

        @app.errorhandler(HTTPException)
        def http_error(exc: HTTPException) -> tuple[Response, int]:
            status = exc.code or 500
            return _error(status, 20404 if status == 404 else None, exc.description or exc.name)

        @app.post(f"{prefix}/Calls.json")
        def create_call(account_sid: str) -> tuple[Response, int]:
            return self._create_call(request.form.to_dict(flat=False), account_sid)

        @app.get(f"{prefix}/Calls.json")
        def list_calls(account_sid: str) -> tuple[Response, int]:
            return self._list_calls(account_sid)

        @app.get(f"{prefix}/Calls/<sid>.json")
        def fetch_call(account_sid: str, sid: str) -> tuple[Response, int]:
            if self.fetch_delay:
                self._stopping.wait(self.fetch_delay)
            with self._lock:
                call = self._calls.get(sid)
                if call is None or call.account_sid != account_sid:
                    return _error(404, 20404, f"The requested resource {request.path} was not found")
                return jsonify(call.resource()), 200

        @app.post(f"{prefix}/Calls/<sid>.json")
        def update_call(account_sid: str, sid: str) -> tuple[Response, int]:
            with self._lock:
                call = self._calls.get(sid)
                if call is None or call.account_sid != account_sid:
                    return _error(404, 20404, f"The requested resource {request.path} was not found")
            return self._update_call(sid, request.form.get("Status"))

        @app.post(f"{prefix}/Messages.json")
        def create_message(account_sid: str) -> tuple[Response, int]:
            return self._create_message(request.form.to_dict(flat=False))

        @app.get(f"{prefix}/Messages.json")
        def list_messages(account_sid: str) -> tuple[Response, int]:
            return self._list_messages()

        @app.get(f"{prefix}/Messages/<sid>.json")
        def fetch_message(account_sid: str, sid: str) -> tuple[Response, int]:
            with self._lock:
                message = self._messages.get(sid)
                if message is None:
                    return _error(404, 20404, f"The requested resource {request.path} was not found")
                return jsonify(message.resource()), 200

        return app

    def _create_call(self, form: dict[str, list[str]], account_sid: str | None = None) -> tuple[Response, int]:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        call: _Call | None = None
        if fault is None or fault.status is None or fault.create_anyway:
            error = _validate_create(form)
            if error is not None:
                return error
            with self._lock:
                call = self._new_call(form["To"][0], form["From"][0], _now(), form, account_sid)
                self._create_times.append(time.monotonic())
                self._create_accounts.append(call.account_sid)
        if fault is not None:
            if fault.delay:
                self._stopping.wait(fault.delay)
            if fault.status is not None:
                return _error(fault.status, fault.code, fault.message)
        assert call is not None
        with self._lock:
            return jsonify(call.resource()), 201

    def _new_call(
        self, to: str, from_: str, created: datetime, form: dict[str, list[str]], account_sid: str | None = None
    ) -> _Call:
        """Store a new queued call. The caller holds the lock."""
        call = _Call(
            sid="CA" + uuid.uuid4().hex,
            account_sid=account_sid or self.account_sid,
            to=to,
            from_=from_,
            status="queued",
            date_created=created,
            date_updated=created,
            seq=len(self._calls),
            form=form,
        )
        self._calls[call.sid] = call
        return call

    def _list_calls(self, account_sid: str | None = None) -> tuple[Response, int]:
        args = request.args
        try:
            page_size = min(max(int(args.get("PageSize", 50)), 1), 1000)
            page = max(int(args.get("Page", 0)), 0)
            on = _date_filter(args.get("StartTime"))
            on_or_after = _date_filter(args.get("StartTime>"))
            on_or_before = _date_filter(args.get("StartTime<"))
        except ValueError as exc:
            return _error(400, 20001, f"Invalid paging or StartTime parameter: {exc}")

        def matches(call: _Call) -> bool:
            if account_sid is not None and call.account_sid != account_sid:
                return False
            if "To" in args and call.to != args["To"]:
                return False
            if "From" in args and call.from_ != args["From"]:
                return False
            if "Status" in args and call.status != args["Status"]:
                return False
            if on or on_or_after or on_or_before:
                # Twilio compares whole UTC dates, and a call that has not started has no start time.
                if call.start_time is None:
                    return False
                started = call.start_time.date()
                if (on and started != on) or (on_or_after and started < on_or_after):
                    return False
                if on_or_before and started > on_or_before:
                    return False
            return True

        with self._lock:
            matching = sorted(
                (call for call in self._calls.values() if matches(call)),
                key=lambda call: (call.date_created, call.seq),
                reverse=True,  # Twilio lists the most recent calls first
            )
            start = page * page_size
            chunk = [call.resource() for call in matching[start : start + page_size]]
        filters = {key: value for key, value in args.items() if key not in ("Page", "PageSize", "PageToken")}

        def page_uri(number: int, token: str | None = None) -> str:
            query = {**filters, "PageSize": page_size, "Page": number}
            if token:
                query["PageToken"] = token
            return f"{request.path}?{urlencode(query)}"

        has_next = start + page_size < len(matching)
        return (
            jsonify(
                {
                    "calls": chunk,
                    "end": start + len(chunk) - 1 if chunk else start,
                    "first_page_uri": page_uri(0),
                    "next_page_uri": page_uri(page + 1, "PA" + chunk[-1]["sid"]) if has_next else None,
                    "page": page,
                    "page_size": page_size,
                    "previous_page_uri": page_uri(page - 1) if page > 0 else None,
                    "start": start,
                    "uri": page_uri(page),
                }
            ),
            200,
        )

    def _update_call(self, sid: str, status: str | None) -> tuple[Response, int]:
        with self._lock:
            call = self._calls.get(sid)
            if call is None:
                return _error(404, 20404, f"The requested resource {request.path} was not found")
            current = call.status
        if status == "canceled":
            if current not in CANCELABLE_STATUSES:
                return _error(400, 21220, f"Call is {current}: only queued or ringing calls can be canceled")
            self.set_call_status(sid, "canceled")
        elif status == "completed":
            if current in FINAL_STATUSES:
                return _error(400, 21220, f"Call is {current}: it is already over")
            self.set_call_status(sid, "completed" if current == "in-progress" else "canceled")
        elif status is not None:
            return _error(400, 20001, f"Invalid Status {status!r}: use canceled or completed")
        return jsonify(self.call(sid)), 200

    # -- messages --------------------------------------------------------------------------------------------

    def fail_next_message(
        self,
        status: int,
        code: int | None = None,
        message: str | None = None,
        *,
        create_anyway: bool = False,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` message creates with a Twilio error (as :meth:`fail_next` for calls)."""
        code = code if code is not None else _DEFAULT_CODES.get(status)
        text = message or _DEFAULT_MESSAGES.get(code or 0, f"Scripted error (HTTP {status})")
        with self._lock:
            for _ in range(times):
                self._message_faults.append(_Fault(status, code, text, delay, create_anyway))

    def message(self, sid: str) -> dict[str, Any]:
        """The message's resource. Raises KeyError for an unknown SID."""
        with self._lock:
            return self._messages[sid].resource()

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message's resource, in creation order."""
        with self._lock:
            return [m.resource() for m in sorted(self._messages.values(), key=lambda m: m.seq)]

    @property
    def messages_created(self) -> int:
        """Messages created by create requests (including ambiguous ones)."""
        with self._lock:
            return len(self._message_create_times)

    @property
    def message_create_times(self) -> list[float]:
        with self._lock:
            return list(self._message_create_times)

    @property
    def refused_for_rate(self) -> int:
        """Message creates refused with 429 by ``message_rate_limit``."""
        with self._lock:
            return self._refused_for_rate

    def max_messages_in_window(self, seconds: float = 1.0) -> int:
        """The most messages created within any ``seconds``-long window (the peak send rate)."""
        times = self.message_create_times
        peak = first = 0
        for last, at in enumerate(times):
            while at - times[first] >= seconds:
                first += 1
            peak = max(peak, last - first + 1)
        return peak

    def set_message_status(self, sid: str, status: str, *, error_code: int | None = None) -> None:
        """Move a message to ``status`` (no callback; see :meth:`send_message_status`)."""
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"{status!r} is not a Twilio message status")
        with self._lock:
            message = self._messages[sid]
            message.status = status
            message.date_updated = _now()
            if status in ("sent", "delivered") and message.date_sent is None:
                message.date_sent = message.date_updated
            if error_code is not None:
                message.error_code = error_code

    def send_message_status(self, sid: str, status: str, *, error_code: int | None = None) -> int:
        """Set the message's status and post its status callback, signed, as Twilio does; returns the HTTP
        status our webhook answered. A status older than the message's current one is posted without changing
        it (a late, reordered callback)."""
        with self._lock:
            message = self._messages[sid]
            current = message.status
            url = message.status_callback
        order = {s: i for i, s in enumerate(MESSAGE_STATUSES)}
        if order[status] > order.get(current, -1):
            self.set_message_status(sid, status, error_code=error_code)
        if not url:
            return 0
        with self._lock:
            message = self._messages[sid]
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": API_VERSION,
                "From": message.from_,
                "To": message.to,
                "MessageSid": sid,
                "SmsSid": sid,
                "MessageStatus": status,
                "SmsStatus": status,
            }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        answered = self._post_signed(url, params)
        with self._lock:
            self.callback_results.append((sid, status, answered))
        return answered

    def send_inbound_sms(self, url: str, from_: str, body: str, to: str = "+861012345678") -> int:
        """A resident texts our number: Twilio posts the message to the number's SMS URL (``url``), signed."""
        sid = "SM" + uuid.uuid4().hex
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "From": from_,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
        }
        return self._post_signed(url, params)

    def _post_signed(self, url: str, params: dict[str, str]) -> int:
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        try:
            reply = requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=15)
        except requests.RequestException:
            return 0
        return reply.status_code

    def _post_callbacks(self) -> None:
        """The background thread that posts scripted status callbacks, in the order each script gives."""
        while True:
            item = self._callback_queue.get()
            if item is None:
                return
            sid, statuses = item
            for status in statuses:
                if self._stopping.wait(self.callback_delay):
                    return
                self.send_message_status(sid, status)

    def _create_message(self, form: dict[str, list[str]]) -> tuple[Response, int]:
        def first(key: str) -> str:
            return (form.get(key) or [""])[0]

        with self._lock:
            fault = self._message_faults.popleft() if self._message_faults else None
            if fault is None and self.message_rate_limit is not None:
                now = time.monotonic()
                recent = sum(1 for at in reversed(self._message_create_times[-200:]) if now - at < 1.0)
                if recent >= self.message_rate_limit:
                    self._refused_for_rate += 1
                    return _error(429, 20429, "Too Many Requests")
        message: _Message | None = None
        if fault is None or fault.status is None or fault.create_anyway:
            if not first("To"):
                return _error(400, 21604, "A 'To' phone number is required")
            if not first("From") and not first("MessagingServiceSid"):
                return _error(400, 21603, "A 'From' phone number is required")
            if not first("Body") and not first("MediaUrl"):
                return _error(400, 21602, "Message body is required")
            if not _E164.match(first("To")):
                return _error(400, 21211, f"Invalid 'To' Phone Number: {first('To')}")
            with self._lock:
                created = _now()
                message = _Message(
                    sid="SM" + uuid.uuid4().hex,
                    account_sid=self.account_sid,
                    to=first("To"),
                    from_=first("From"),
                    body=first("Body"),
                    status="queued",
                    date_created=created,
                    date_updated=created,
                    seq=len(self._messages),
                    status_callback=first("StatusCallback") or None,
                )
                self._messages[message.sid] = message
                self._message_create_times.append(time.monotonic())
                resource = message.resource()
            if self.message_callbacks is not None:
                self._callback_queue.put((message.sid, list(self.message_callbacks(resource))))
        if fault is not None:
            if fault.delay:
                self._stopping.wait(fault.delay)
            if fault.status is not None:
                return _error(fault.status, fault.code, fault.message)
        assert message is not None
        with self._lock:
            return jsonify(message.resource()), 201

    def _list_messages(self) -> tuple[Response, int]:
        args = request.args
        try:
            page_size = min(max(int(args.get("PageSize", 50)), 1), 1000)
            page = max(int(args.get("Page", 0)), 0)
        except ValueError as exc:
            return _error(400, 20001, f"Invalid paging parameter: {exc}")

        def matches(message: _Message) -> bool:
            if "To" in args and message.to != args["To"]:
                return False
            return not ("From" in args and message.from_ != args["From"])

        with self._lock:
            matching = sorted(
                (m for m in self._messages.values() if matches(m)),
                key=lambda m: (m.date_created, m.seq),
                reverse=True,
            )
            start = page * page_size
            chunk = [m.resource() for m in matching[start : start + page_size]]
        filters = {key: value for key, value in args.items() if key not in ("Page", "PageSize", "PageToken")}

        def page_uri(number: int, token: str | None = None) -> str:
            query = {**filters, "PageSize": page_size, "Page": number}
            if token:
                query["PageToken"] = token
            return f"{request.path}?{urlencode(query)}"

        has_next = start + page_size < len(matching)
        return (
            jsonify(
                {
                    "messages": chunk,
                    "end": start + len(chunk) - 1 if chunk else start,
                    "first_page_uri": page_uri(0),
                    "next_page_uri": page_uri(page + 1, "PA" + chunk[-1]["sid"]) if has_next else None,
                    "page": page,
                    "page_size": page_size,
                    "previous_page_uri": page_uri(page - 1) if page > 0 else None,
                    "start": start,
                    "uri": page_uri(page),
                }
            ),
            200,
        )


FROM_NUMBER = "+861012345678"


def stand_in_settings(base: Settings, standin: TwilioStandIn, **over: Any) -> Settings:
    """``base`` with the Twilio provider pointed at ``standin`` (and ``over`` on top)."""
    values: dict[str, Any] = {
        "telephony": "twilio",
        "twilio_account_sid": standin.account_sid,
        "twilio_auth_token": standin.auth_token,
        "twilio_from_number": FROM_NUMBER,
        "twilio_api_base_url": standin.base_url,
        "public_base_url": "https://survey.example.cn",
        "twilio_http_timeout": 2.0,
    }
    return replace(base, **(values | over))


def process_environment(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process (``sanlv worker``) load ``settings``' database, Redis,
    provider and namespace: this process's environment without any SANLV_/TWILIO_ variables of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANLV_", "TWILIO_"))}
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SANLV_TELEPHONY=settings.telephony,
        TWILIO_ACCOUNT_SID=settings.twilio_account_sid or "",
        TWILIO_AUTH_TOKEN=settings.twilio_auth_token or "",
        TWILIO_FROM_NUMBER=settings.twilio_from_number or "",
        TWILIO_API_BASE_URL=settings.twilio_api_base_url or "",
        PUBLIC_BASE_URL=settings.public_base_url or "",
        SANLV_NAMESPACE=settings.namespace,
        SANLV_TWILIO_HTTP_TIMEOUT=f"{settings.twilio_http_timeout:g}",
    )
    if settings.secret_key:
        env["SECRET_KEY"] = settings.secret_key
    if settings.twilio_accounts:
        env["SANLV_TWILIO_ACCOUNTS"] = ",".join(account.name for account in settings.twilio_accounts)
        for account in settings.twilio_accounts:
            suffix = account.name.upper()
            env[f"TWILIO_ACCOUNT_SID_{suffix}"] = account.sid
            env[f"TWILIO_AUTH_TOKEN_{suffix}"] = account.auth_token
            if account.cps is not None:
                env[f"TWILIO_CPS_{suffix}"] = f"{account.cps:g}"
            if account.from_number:
                env[f"TWILIO_FROM_NUMBER_{suffix}"] = account.from_number
    if settings.twilio_cps is not None:
        env["TWILIO_CPS"] = f"{settings.twilio_cps:g}"
    return env


def _validate_create(form: dict[str, list[str]]) -> tuple[Response, int] | None:
    """Twilio's checks of a create request, or None if it passes."""

    def first(key: str) -> str:
        return (form.get(key) or [""])[0]

    if not first("To"):
        return _error(400, 21201, "No 'To' number is specified")
    if not first("From"):
        return _error(400, 21213, "No 'From' number is specified")
    if not (first("Url") or first("Twiml") or first("ApplicationSid")):
        return _error(400, 21200, "Required parameter 'Url' (or 'Twiml', 'ApplicationSid') is missing")
    if not _E164.match(first("To")):
        return _error(400, 21211, f"Invalid 'To' Phone Number: {first('To')}")
    if not _E164.match(first("From")):
        return _error(400, 21212, f"Invalid 'From' Phone Number: {first('From')}")
    return None


def _error(status: int, code: int | None, message: str) -> tuple[Response, int]:
    """A Twilio-style JSON error. Without a code, the client falls back to the HTTP status."""
    body: dict[str, Any] = {"message": message, "status": status}
    if code is not None:
        body["code"] = code
        body["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
    return jsonify(body), status


def _date_filter(value: str | None) -> date | None:
    """The UTC date of a StartTime filter (the client sends ``YYYY-MM-DDTHH:MM:SSZ`` or ``YYYY-MM-DD``)."""
    return date.fromisoformat(value[:10]) if value else None


def _rfc2822(moment: datetime | None) -> str | None:
    """Twilio's timestamp format: ``Tue, 31 Aug 2010 20:36:28 +0000``."""
    return format_datetime(moment) if moment is not None else None


def _now() -> datetime:
    """Now in UTC to the second, as Twilio stamps its resources."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def twilio_standin() -> Iterator[TwilioStandIn]:
    """A running stand-in, stopped after the test."""
    with TwilioStandIn() as standin:
        yield standin
