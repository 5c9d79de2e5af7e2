"""Settings: read once from the environment (and an optional ``.env``), validated at start-up.

Every problem names the variable that caused it, so an operator can fix the deployment without reading code.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from campaigns.errors import SanlvError

TELEPHONY_PROVIDERS = ("twilio", "simulator")
LOG_FORMATS = ("text", "json")
# The shortest SECRET_KEY the web app accepts, and keys that are examples, not secrets.
SECRET_KEY_MIN_LENGTH = 32
PLACEHOLDER_SECRET_KEYS = frozenset({"sanlv-demo-only", "change-me", "changeme", "secret", "...", "test-secret"})


# Names of Twilio accounts in SANLV_TWILIO_ACCOUNTS (they also name the accounts' variables, upper-cased).
ACCOUNT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
DEFAULT_ACCOUNT = "default"  # the one account of TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN
TWILIO_DEFAULT_CPS = 1.0  # what Twilio allows an account unless it was raised


@dataclass(frozen=True)
class TwilioAccount:
    """One Twilio account the deployment dials through. Its secrets come from the environment only.

    ``cps`` is the account's calls-per-second limit, held across every worker and round (None: only the
    rounds' own limits apply, the single-account deployment as before).
    """

    name: str
    sid: str
    auth_token: str = dataclass_field(repr=False)
    cps: float | None = None
    from_number: str | None = None


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
    # Days after a round finished before ``sanlv data retain`` pseudonymises its phone-level data (None: the
    # command needs --older-than).
    retention_days: int | None = None
    # Log lines: "text" (key=value) or "json" (one object per line); see campaigns.logs.
    log_format: str = "text"
    # host:port of the web server's second listener, which serves /metrics (and nothing else); None: no metrics.
    metrics_bind: str | None = None
    # Several Twilio accounts (SANLV_TWILIO_ACCOUNTS), each with its own CPS; empty: the one account above.
    twilio_accounts: tuple[TwilioAccount, ...] = ()
    # The calls-per-second limit of the one account above (TWILIO_CPS); None: rounds' own limits only.
    twilio_cps: float | None = None

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

    def webhook_token_for(self, account_sid: str | None) -> str | None:
        """The auth token that signed a webhook naming ``account_sid`` (its ``AccountSid`` parameter) when it is
        one of our accounts; None otherwise (the deployment's webhook key applies: campaigns.secrets)."""
        if account_sid:
            for account in self.accounts:
                if account.sid == account_sid:
                    return account.auth_token
        return None

    @property
    def accounts(self) -> tuple[TwilioAccount, ...]:
        """The Twilio accounts calls may be placed through: the named ones, else the one of TWILIO_ACCOUNT_SID
        (named ``default``), else none (the simulated network)."""
        if self.twilio_accounts:
            return self.twilio_accounts
        if self.twilio_account_sid and self.twilio_auth_token:
            return (
                TwilioAccount(
                    DEFAULT_ACCOUNT,
                    self.twilio_account_sid,
                    self.twilio_auth_token,
                    self.twilio_cps,
                    self.twilio_from_number,
                ),
            )
        return ()

    def account(self, name: str) -> TwilioAccount:
        """The account called ``name``. Raises SettingsError naming the accounts there are."""
        for account in self.accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in self.accounts) or "none"
        raise SettingsError(f"Twilio account {name!r} is not configured (SANLV_TWILIO_ACCOUNTS: {known})")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def require_twilio(self) -> None:
        """Raise SettingsError unless everything the Twilio provider needs is set."""
        if self.twilio_accounts:
            if not self.public_base_url:
                raise SettingsError("PUBLIC_BASE_URL is required when SANLV_TELEPHONY=twilio")
            for account in self.twilio_accounts:
                if not (account.from_number or self.twilio_from_number):
                    raise SettingsError(
                        f"{account_variable('TWILIO_FROM_NUMBER', account.name)} (or TWILIO_FROM_NUMBER) is required"
                        f" for Twilio account {account.name!r}"
                    )
            return
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


def _bind(name: str, value: str) -> str:
    """``host:port`` (an IPv6 host in brackets), the port from 1 to 65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SettingsError(f"{name}={value!r} is not host:port, such as 0.0.0.0:9100")
    return value


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
    if retention := get("SANLV_RETENTION_DAYS"):
        values["retention_days"] = _positive_number("SANLV_RETENTION_DAYS", retention, int)

    if log_format := get("SANLV_LOG_FORMAT"):
        if log_format not in LOG_FORMATS:
            raise SettingsError(f"SANLV_LOG_FORMAT={log_format!r} must be one of: {', '.join(LOG_FORMATS)}")
        values["log_format"] = log_format
    if metrics_bind := get("SANLV_METRICS_BIND"):
        values["metrics_bind"] = _bind("SANLV_METRICS_BIND", metrics_bind)

    if cps := get("TWILIO_CPS"):
        values["twilio_cps"] = _positive_number("TWILIO_CPS", cps, float)
    if names := get("SANLV_TWILIO_ACCOUNTS"):
        values["twilio_accounts"] = _twilio_accounts(names, get)

    telephony = get("SANLV_TELEPHONY")
    if telephony is None:
        single = values.get("twilio_account_sid") and values.get("twilio_auth_token")
        telephony = "twilio" if single or values.get("twilio_accounts") else "simulator"
    if telephony not in TELEPHONY_PROVIDERS:
        raise SettingsError(f"SANLV_TELEPHONY={telephony!r} must be one of: {', '.join(TELEPHONY_PROVIDERS)}")
    values["telephony"] = telephony

    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.telephony == "twilio":
        settings.require_twilio()
    return settings


def account_variable(variable: str, account: str) -> str:
    """The variable of one named account: ``TWILIO_CPS`` of ``east`` is ``TWILIO_CPS_EAST``."""
    return f"{variable}_{account.upper()}"


def _twilio_accounts(names: str, get) -> tuple[TwilioAccount, ...]:
    """The accounts SANLV_TWILIO_ACCOUNTS names (``a,b``): each from TWILIO_ACCOUNT_SID_A, TWILIO_AUTH_TOKEN_A,
    TWILIO_CPS_A (default 1, Twilio's default) and TWILIO_FROM_NUMBER_A (default TWILIO_FROM_NUMBER)."""
    accounts: list[TwilioAccount] = []
    for name in (part.strip().lower() for part in names.split(",")):
        if not name:
            continue
        if not ACCOUNT_NAME.match(name):
            raise SettingsError(
                f"SANLV_TWILIO_ACCOUNTS: {name!r} is not an account name (a letter, then letters, digits or _)"
            )
        if any(a.name == name for a in accounts):
            raise SettingsError(f"SANLV_TWILIO_ACCOUNTS: {name!r} is named twice")
        sid_name, token_name = account_variable("TWILIO_ACCOUNT_SID", name), account_variable("TWILIO_AUTH_TOKEN", name)
        sid, token = get(sid_name), get(token_name)
        if not sid:
            raise SettingsError(f"{sid_name} is required for Twilio account {name!r}")
        if not token:
            raise SettingsError(f"{token_name} is required for Twilio account {name!r}")
        if any(a.sid == sid for a in accounts):
            raise SettingsError(f"{sid_name}: the same account SID is named twice")
        cps_name = account_variable("TWILIO_CPS", name)
        raw_cps = get(cps_name)
        cps = _positive_number(cps_name, raw_cps, float) if raw_cps else TWILIO_DEFAULT_CPS
        from_number = get(account_variable("TWILIO_FROM_NUMBER", name))
        accounts.append(TwilioAccount(name, sid, token, float(cps), from_number))
    if not accounts:
        raise SettingsError("SANLV_TWILIO_ACCOUNTS names no account")
    return tuple(accounts)
