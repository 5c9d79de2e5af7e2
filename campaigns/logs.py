"""Logging for every sanlv process: one line per event on stderr, phone numbers masked.

Each line carries the time (ISO 8601 with its UTC offset, in ``SANLV_TIMEZONE``), the level, the process role
(``web``, ``worker``, ``cli``, ``demo``), the logger, the message, and the round, attempt and call sid where
they apply. The log calls themselves stay key=value strings (``event=call_placed attempt=12 sid=CA...``);
what they do not say is taken from :func:`log_context`, a ``contextvars`` context that a webhook or a job
opens once for the round, attempt and call it works on.

Two formats, chosen by ``SANLV_LOG_FORMAT``:

- ``text`` (default): ``2026-03-02T10:00:00.123+08:00 INFO role=worker logger=sanlv.jobs event=call_placed
  attempt=12 sid=CA... round=3``. Newlines inside a message or a traceback are written as ``\\n``, so one
  event is always one line and a message can never forge another line.
- ``json``: one JSON object per line with the same fields (``time``, ``level``, ``role``, ``logger``,
  ``message``, and ``event``, ``round``, ``attempt``, ``sid``, ``exception`` when they apply).

Phone numbers are masked in every line written (:func:`mask_phones`): residents' numbers must never reach a
log file whatever a message or a library's traceback contains. It is the last line of defence; code should
still log masked numbers or ids.

gunicorn's own loggers go through the same handler when the web server passes :func:`gunicorn_logconfig` as
``logconfig_dict``; :data:`ACCESS_LOG_FORMAT` writes the request path without its query string (webhook
query strings name attempts, form posts and API filters may carry personal data).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from campaigns.phones import mask
from campaigns.settings import Settings

ROLES = ("web", "worker", "cli", "demo")
LOG_FORMATS = ("text", "json")
CONTEXT_FIELDS = ("round", "attempt", "sid")
# gunicorn's access log: %(U)s is the path without the query string.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)s'
# Libraries whose INFO lines would drown sanlv's own (the Twilio client logs every request it sends).
QUIET_LOGGERS = {"twilio.http_client": logging.WARNING}

_context: ContextVar[Mapping[str, Any]] = ContextVar("sanlv_log_context", default={})


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``round``, ``attempt`` and/or ``sid`` to every line logged inside the block (this thread or task).

    A field given as None is left as it was. Nested blocks add to the outer one.

    Raises:
        TypeError: a field other than round, attempt or sid.
    """
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"log_context takes only {', '.join(CONTEXT_FIELDS)}, not {', '.join(sorted(unknown))}")
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    """The fields :func:`log_context` has set here."""
    return dict(_context.get())


# A number as it appears in text: E.164 (also URL-encoded, %2B), a mobile with or without a bare 86 prefix
# (grouped 3-4-4 with spaces or dashes or not), a landline with its area code. Never inside a longer run of
# letters and digits (ids, CallSids, hex tokens) or after a decimal point.
_PHONE = re.compile(
    r"""
    (?<![0-9A-Za-z])(?<!\d\.)
    (?:
        (?:\+|%2[Bb])\ ?86[\ -]?(?:1[3-9]\d(?:[\ -]?\d{4}){2}|[2-9]\d{1,2}[\ -]?\d{7,8})
      | (?:\+|%2[Bb])[1-9]\d{7,14}
      | 86[\ -]?1[3-9]\d(?:[\ -]?\d{4}){2}
      | 1[3-9]\d(?:[\ -]?\d{4}){2}
      | \(0\d{2,3}\)\ ?\d{7,8}
      | 0\d{2,3}-?\d{7,8}
    )
    (?![0-9A-Za-z])
    """,
    re.VERBOSE,
)


def _masked(match: re.Match[str]) -> str:
    text = match.group(0)
    plus = text.startswith("+") or text[:3].upper() == "%2B"
    digits = re.sub(r"\D", "", text[3:] if text[:3].upper() == "%2B" else text)
    if plus or (digits.startswith("86") and len(digits) == 13):
        e164 = "+" + digits
    elif digits.startswith("0"):
        e164 = "+86" + digits[1:]  # a landline's national prefix
    else:
        e164 = "+86" + digits
    try:
        return mask(e164)
    except Exception:  # noqa: BLE001 - logging must never fail on what it hides
        return "*" * len(digits)


def mask_phones(text: str) -> str:
    """``text`` with every phone number in it masked as :func:`campaigns.phones.mask` shows it (138****1234)."""
    return _PHONE.sub(_masked, text)


_FIELD = re.compile(r"(?:^|\s)(event|round|attempt|sid)=([^\s,;]+)")


def _value(name: str, value: Any) -> Any:
    if name in ("round", "attempt") and isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def event_fields(record: logging.LogRecord, message: str) -> dict[str, Any]:
    """``event``, ``round``, ``attempt``, ``sid`` of a record: said in its message, else from its context."""
    fields: dict[str, Any] = {}
    for name, value in _FIELD.findall(message):
        fields.setdefault(name, _value(name, value))
    for name, value in getattr(record, "sanlv_context", {}).items():
        fields.setdefault(name, _value(name, value))
    return fields


class ContextFilter(logging.Filter):
    """Stamps each record with the process role and the :func:`log_context` in force where it was logged."""

    def __init__(self, role: str):
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"log role {role!r} must be one of: {', '.join(ROLES)}")
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        if not hasattr(record, "sanlv_context"):
            record.sanlv_context = dict(_context.get())
        return True


class SanlvFormatter(logging.Formatter):
    """One line per record, ``text`` or ``json``, phone numbers masked.

    Args:
        fmt: ``text`` or ``json``.
        tz: the IANA time zone the times are written in (with their UTC offset).
    """

    def __init__(self, fmt: str = "text", tz: str = "UTC"):
        super().__init__()
        if fmt not in LOG_FORMATS:
            raise ValueError(f"SANLV_LOG_FORMAT={fmt!r} must be one of: {', '.join(LOG_FORMATS)}")
        self.kind = fmt
        self.zone = ZoneInfo(tz)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        when = datetime.fromtimestamp(record.created, self.zone).isoformat(timespec="milliseconds")
        role = getattr(record, "role", "-")
        fields = event_fields(record, message)
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        if record.stack_info:
            exception = "\n".join(filter(None, [exception, self.formatStack(record.stack_info)]))
        if self.kind == "json":
            line: dict[str, Any] = {
                "time": when,
                "level": record.levelname,
                "role": role,
                "logger": record.name,
                "message": mask_phones(message),
            }
            for name in ("event", *CONTEXT_FIELDS):
                if name in fields:
                    value = fields[name]
                    line[name] = mask_phones(value) if isinstance(value, str) else value
            if exception:
                line["exception"] = mask_phones(exception)
            return json.dumps(line, ensure_ascii=False, default=str)
        said = {name for name, _ in _FIELD.findall(message)}
        extra = "".join(f" {name}={fields[name]}" for name in CONTEXT_FIELDS if name in fields and name not in said)
        text = f"{when} {record.levelname} role={role} logger={record.name} {message}{extra}"
        if exception:
            text += f" exception={exception}"
        return mask_phones(text.replace("\r", "\\r").replace("\n", "\\n"))


def _log_format(settings: Settings) -> str:
    # SANLV_LOG_FORMAT (text|json), parsed and checked with the other settings.
    return getattr(settings, "log_format", None) or "text"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when the handler was made: a command
    run inside another program (a test's CliRunner) must not leave the root logger writing to a stream that
    program has since closed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def make_handler(role: str, settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """The stderr handler every sanlv process logs through (``stream`` replaces stderr, for tests)."""
    handler = logging.StreamHandler(stream) if stream is not None else StderrHandler()
    handler.addFilter(ContextFilter(role))
    handler.setFormatter(SanlvFormatter(_log_format(settings), settings.timezone))
    handler.sanlv = True  # type: ignore[attr-defined]
    return handler


def configure_logging(
    role: str, settings: Settings, *, stream: TextIO | None = None, level: int = logging.INFO
) -> logging.Handler:
    """Send every log record of this process to stderr, one line per event, as ``settings`` says.

    Call once at process start (the ``sanlv`` command does, per role). Calling again replaces the handler
    installed before; handlers others installed on the root logger are left alone. ``level`` is the handler's:
    the root logger is opened down to it, never closed further (another handler may want more).

    Raises:
        ValueError: an unknown role or log format.
    """
    handler = make_handler(role, settings, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "sanlv", False):
            root.removeHandler(old)
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, level))
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet)
    return handler


def gunicorn_logconfig(settings: Settings) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its error and access logs, and the app's, through the web handler."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"sanlv": {"()": ContextFilter, "role": "web"}},
        "formatters": {"sanlv": {"()": SanlvFormatter, "fmt": _log_format(settings), "tz": settings.timezone}},
        "handlers": {
            "sanlv": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "sanlv",
                "filters": ["sanlv"],
            }
        },
        "root": {"level": "INFO", "handlers": ["sanlv"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["sanlv"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["sanlv"], "propagate": False},
            **{name: {"level": logging.getLevelName(quiet)} for name, quiet in QUIET_LOGGERS.items()},
        },
    }
