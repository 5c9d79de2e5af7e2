"""Settings: read once from the environment (and an optional ``.env``), validated at start-up.

Every problem names the variable that caused it, so an operator can fix the deployment without reading code.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from campaigns.errors import SanlvError

TELEPHONY_PROVIDERS = ("twilio", "simulator")
# The shortest SECRET_KEY the web app accepts, and keys that are examples, not secrets.
SECRET_KEY_MIN_LENGTH = 32
PLACEHOLDER_SECRET_KEYS = frozenset({"sanlv-demo-only", "change-me", "changeme", "secret", "...", "test-secret"})


class SettingsError(SanlvError, ValueError):
    """A configuration variable is missing or malformed. The message names the variable."""

    def summary(self) -> str:
        return f"configuration: {self}"


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///sanlv.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    telephony: str = "simulator"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from_number: str | None = None
    twilio_api_base_url: str | None = None
    public_base_url: str | None = None
    timezone: str = "Asia/Shanghai"
    secret_key: str | None = None
    # Seconds the Twilio REST client waits for an answer; the library has no default timeout.
    twilio_http_timeout: float = 10.0
    # Seconds a resident's phone rings before the call counts as not answered.
    ring_timeout: int = 30
    # Voice for <Say>: Mandarin TTS, configurable.
    tts_language: str = "cmn-CN"
    tts_voice: str = "Polly.Zhiyu"
    # Prefix of queue names and Redis keys, so two deployments (or the demo) can share one Redis.
    namespace: str = "sanlv"
    # Reports: a rate with fewer valid answers than this is marked "too few answers to judge" (样本不足).
    report_min_sample: int = 10
    # Days after a resident asked for a visit before a follow-up still pending counts as overdue.
    followup_overdue_days: int = 7
    # Recorded prompts: <recordings_dir>/<questionnaire key>/<prompt>.wav|.mp3 (see `sanlv questionnaire prompts`).
    recordings_dir: str = "recordings"
    # Web sessions end after this many minutes without a request, and this many hours after signing in.
    session_idle_minutes: int = 30
    session_max_hours: float = 12.0
    # Addresses (or networks) of the reverse proxies whose X-Forwarded-* headers are believed.
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    # The largest request body the web app reads (roster and recording uploads), in megabytes.
    max_upload_mb: int = 20
    # Roster files (campaigns.roster.RosterLimits): the file, its data rows, an XLSX file's unpacked parts.
    roster_max_mb: int = 20
    roster_max_rows: int = 200_000
    roster_max_xlsx_mb: int = 200

    @property
    def max_content_length(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    def require_secret_key(self) -> str:
        """The SECRET_KEY the web app signs sessions with; SettingsError unless it is a real secret."""
        key = self.secret_key
        if not key:
            raise SettingsError("SECRET_KEY is required to serve the web app (a random string of 32+ characters)")
        if key in PLACEHOLDER_SECRET_KEYS:
            raise SettingsError(f"SECRET_KEY={key!r} is an example value, not a secret; set a random one")
        if len(key) < SECRET_KEY_MIN_LENGTH:
            raise SettingsError(
                f"SECRET_KEY is {len(key)} characters long; it must have at least {SECRET_KEY_MIN_LENGTH}"
                " (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return key

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def require_twilio(self) -> None:
        """Raise SettingsError unless everything the Twilio provider needs is set."""
        for name, value in (
            ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
            ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
            ("TWILIO_FROM_NUMBER", self.twilio_from_number),
            ("PUBLIC_BASE_URL", self.public_base_url),
        ):
            if not value:
                raise SettingsError(f"{name} is required when SANLV_TELEPHONY=twilio")


def _url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    # A unix-socket URL (redis-py's unix:///run/redis.sock) names a path, not a host.
    where = parts.path if parts.scheme == "unix" else parts.netloc
    if parts.scheme not in schemes or not where:
        raise SettingsError(f"{name}={value!r} is not a URL with scheme {'/'.join(schemes)}")
    return value.rstrip("/")


def _loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): a URL that never leaves this machine."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive_number(name: str, value: str, kind: type) -> float | int:
    try:
        number = kind(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise SettingsError(f"{name}={value!r} must be greater than zero")
    return number


def _addresses(name: str, value: str) -> tuple[str, ...]:
    """A comma-separated list of IP addresses or networks (CIDR)."""
    networks = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            # Normalised (10.1.2.3/8 -> 10.0.0.0/8): gunicorn parses these strictly.
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise SettingsError(f"{name}: {item!r} is not an IP address or network such as 10.0.0.0/8") from None
    return tuple(networks)


def load_settings(environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")) -> Settings:
    """Build Settings from ``environ`` (default: ``os.environ`` plus ``.env`` if present).

    Variables already in the environment win over the ``.env`` file.

    Raises:
        SettingsError: naming the first variable that is malformed.
    """
    env: dict[str, str] = {}
    if environ is None:
        if dotenv is not None and dotenv.is_file():
            from dotenv import dotenv_values

            env.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
        env.update(os.environ)
    else:
        env.update(environ)

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else None

    values: dict[str, object] = {}
    if db := get("DATABASE_URL"):
        try:
            make_url(db)
        except ArgumentError:
            raise SettingsError(f"DATABASE_URL={db!r} is not a SQLAlchemy database URL") from None
        values["database_url"] = db
    if redis_url := get("REDIS_URL"):
        values["redis_url"] = _url("REDIS_URL", redis_url, ("redis", "rediss", "unix"))
    for name, field in (
        ("TWILIO_ACCOUNT_SID", "twilio_account_sid"),
        ("TWILIO_AUTH_TOKEN", "twilio_auth_token"),
        ("TWILIO_FROM_NUMBER", "twilio_from_number"),
        ("SECRET_KEY", "secret_key"),
        ("SANLV_TTS_LANGUAGE", "tts_language"),
        ("SANLV_TTS_VOICE", "tts_voice"),
        ("SANLV_NAMESPACE", "namespace"),
    ):
        if value := get(name):
            values[field] = value
    if base := get("TWILIO_API_BASE_URL"):
        values["twilio_api_base_url"] = _url("TWILIO_API_BASE_URL", base, ("http", "https"))
    if public := get("PUBLIC_BASE_URL"):
        values["public_base_url"] = _url("PUBLIC_BASE_URL", public, ("http", "https"))
        if "_" in (urlsplit(public).hostname or ""):
            # Not a valid host name (RFC 1123); Twilio refuses to call such webhook URLs.
            raise SettingsError(f"PUBLIC_BASE_URL={public!r}: the host name must not contain '_'")
        if urlsplit(public).scheme != "https" and not _loopback(urlsplit(public).hostname or ""):
            # Residents' answers and signed callbacks travel to this URL: in clear text anyone on the way reads them.
            raise SettingsError(
                f"PUBLIC_BASE_URL={public!r} must start with https:// (plain http only for a loopback host such as"
                " 127.0.0.1 or localhost)"
            )
    if tz := get("SANLV_TIMEZONE"):
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as "Asia"
            raise SettingsError(f"SANLV_TIMEZONE={tz!r} is not an IANA time zone such as Asia/Shanghai") from None
        values["timezone"] = tz
    if timeout := get("SANLV_TWILIO_HTTP_TIMEOUT"):
        values["twilio_http_timeout"] = _positive_number("SANLV_TWILIO_HTTP_TIMEOUT", timeout, float)
    if ring := get("SANLV_RING_TIMEOUT"):
        values["ring_timeout"] = _positive_number("SANLV_RING_TIMEOUT", ring, int)
    if min_sample := get("SANLV_REPORT_MIN_SAMPLE"):
        values["report_min_sample"] = _positive_number("SANLV_REPORT_MIN_SAMPLE", min_sample, int)
    if overdue := get("SANLV_FOLLOWUP_OVERDUE_DAYS"):
        values["followup_overdue_days"] = _positive_number("SANLV_FOLLOWUP_OVERDUE_DAYS", overdue, int)
    if recordings := get("SANLV_RECORDINGS_DIR"):
        if not Path(recordings).is_dir():
            raise SettingsError(f"SANLV_RECORDINGS_DIR={recordings!r} is not a folder")
        values["recordings_dir"] = recordings

    if idle := get("SANLV_SESSION_IDLE_MINUTES"):
        values["session_idle_minutes"] = _positive_number("SANLV_SESSION_IDLE_MINUTES", idle, int)
    if max_hours := get("SANLV_SESSION_MAX_HOURS"):
        values["session_max_hours"] = _positive_number("SANLV_SESSION_MAX_HOURS", max_hours, float)
    if proxies := get("SANLV_TRUSTED_PROXIES"):
        values["trusted_proxies"] = _addresses("SANLV_TRUSTED_PROXIES", proxies)
    if upload := get("SANLV_MAX_UPLOAD_MB"):
        values["max_upload_mb"] = _positive_number("SANLV_MAX_UPLOAD_MB", upload, int)
    for name, field in (
        ("SANLV_ROSTER_MAX_MB", "roster_max_mb"),
        ("SANLV_ROSTER_MAX_ROWS", "roster_max_rows"),
        ("SANLV_ROSTER_MAX_XLSX_MB", "roster_max_xlsx_mb"),
    ):
        if limit := get(name):
            values[field] = _positive_number(name, limit, int)

    telephony = get("SANLV_TELEPHONY")
    if telephony is None:
        telephony = "twilio" if values.get("twilio_account_sid") and values.get("twilio_auth_token") else "simulator"
    if telephony not in TELEPHONY_PROVIDERS:
        raise SettingsError(f"SANLV_TELEPHONY={telephony!r} must be one of: {', '.join(TELEPHONY_PROVIDERS)}")
    values["telephony"] = telephony

    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.telephony == "twilio":
        settings.require_twilio()
    return settings
