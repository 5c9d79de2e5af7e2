"""Calling windows, blocked dates and retry timing: pure functions of their inputs (no clock, no database).

Windows are local times in SANLV_TIMEZONE; a window's end is exclusive, ``24:00`` is allowed, and a window
never wraps midnight (write two). Blocked dates (holidays) are local dates on which nobody is called.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from campaigns.errors import SanlvError

DEFAULT_WINDOWS: tuple[tuple[str, str], ...] = (("09:00", "11:30"), ("14:30", "20:30"))
DEFAULT_RETRY: dict[str, int] = {
    "busy": 30 * 60,
    "no-answer": 2 * 3600,
    "failed": 4 * 3600,
    "machine": 2 * 3600,
    "dropped": 3600,
}
RETRY_OUTCOMES = tuple(DEFAULT_RETRY)
# A call we cancelled while it was still queued at the provider (its window closed): it never rang, so it is
# tried again as soon as a window opens.
NOT_DIALLED = "not-dialled"
MAX_BLOCKED_DAYS = 366

_HHMM = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 60}


class ScheduleError(SanlvError, ValueError):
    """A window, date or duration is malformed; the message names the value."""


def _minutes(value: str, where: str) -> int:
    match = _HHMM.match(value.strip())
    if not match:
        raise ScheduleError(f"{where}: {value!r} is not a time like 09:00")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours == 24 and minutes:
        raise ScheduleError(f"{where}: {value!r} is after 24:00")
    return hours * 60 + minutes


def parse_windows(text: str) -> list[list[str]]:
    """``"09:00-11:30,14:30-20:30"`` -> ``[["09:00", "11:30"], ["14:30", "20:30"]]`` (validated, sorted).

    Raises:
        ScheduleError: a malformed, empty, wrapping or overlapping window.
    """
    windows: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.count("-") != 1:
            raise ScheduleError(f"--window: {part!r} is not a range like 09:00-11:30")
        start_s, end_s = part.split("-")
        start, end = _minutes(start_s, f"--window {part}"), _minutes(end_s, f"--window {part}")
        if end <= start:
            raise ScheduleError(f"--window: {part!r} ends before it starts (a window cannot wrap midnight; write two)")
        windows.append((start, end))
    if not windows:
        raise ScheduleError("--window: no window given")
    windows.sort()
    for (_s1, e1), (s2, _e2) in itertools.pairwise(windows):
        if s2 < e1:
            raise ScheduleError(f"--window: windows overlap at {_fmt(s2)}")
    return [[_fmt(s), _fmt(e)] for s, e in windows]


def _fmt(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_duration(text: str, where: str) -> int:
    """``30m`` / ``2h`` / ``90s`` / ``1d`` (a bare number is minutes) -> seconds."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ScheduleError(f"{where}: {text!r} is not a duration like 30m or 2h")
    return int(float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_retry(text: str) -> dict[str, int]:
    """``busy=30m,no-answer=2h`` -> the default schedule with those outcomes replaced (seconds)."""
    schedule = dict(DEFAULT_RETRY)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" not in part:
            raise ScheduleError(f"--retry: {part!r} is not outcome=duration")
        outcome, duration = (x.strip() for x in part.split("=", 1))
        if outcome not in schedule:
            raise ScheduleError(f"--retry: unknown outcome {outcome!r} (known: {', '.join(RETRY_OUTCOMES)})")
        schedule[outcome] = parse_duration(duration, f"--retry {outcome}")
    return schedule


def parse_blocked(text: str) -> list[str]:
    """``"2026-10-01..2026-10-07,2027-01-01"`` -> the ISO dates, sorted, without duplicates.

    Raises:
        ScheduleError: a malformed date, a range that ends before it starts, or one longer than a year.
    """
    days: set[date] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first_s, _sep, last_s = part.partition("..")
        first = _date(first_s, part)
        last = _date(last_s, part) if _sep else first
        if last < first:
            raise ScheduleError(f"--blocked: {part!r} ends before it starts")
        if (last - first).days >= MAX_BLOCKED_DAYS:
            raise ScheduleError(f"--blocked: {part!r} is longer than a year")
        days.update(first + timedelta(days=n) for n in range((last - first).days + 1))
    return [d.isoformat() for d in sorted(days)]


def _date(text: str, part: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError(f"--blocked: {part!r}: {text.strip()!r} is not a date like 2026-10-01") from None


def _spans(windows: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    return [(_minutes(s, "window"), _minutes(e, "window")) for s, e in windows]


def is_open(windows: Sequence[Sequence[str]], blocked: Iterable[str], when: datetime, tz: ZoneInfo) -> bool:
    """Whether a call may start at ``when`` (aware)."""
    local = when.astimezone(tz)
    if local.date().isoformat() in set(blocked):
        return False
    minute = local.hour * 60 + local.minute
    return any(start <= minute < end for start, end in _spans(windows))


def next_open(
    windows: Sequence[Sequence[str]], blocked: Iterable[str], when: datetime, tz: ZoneInfo, horizon_days: int = 400
) -> datetime | None:
    """The first instant at or after ``when`` at which a call may start; None if none within the horizon.

    Compared as instants, not wall-clock times: where the zone repeats or skips an hour (daylight saving),
    a window's start may occur twice or not at all, and the day's first open instant is where a skipped
    hour ends.
    """
    blocked_set = set(blocked)
    starts = sorted({start for start, _end in _spans(windows)})
    when = when.astimezone(UTC)
    first_day = when.astimezone(tz).date()
    for offset in range(horizon_days):
        day = first_day + timedelta(days=offset)
        if day.isoformat() in blocked_set:
            continue
        midnight = datetime.combine(day, time(0), tz)
        # An open stretch begins at a window's start (either occurrence of a repeated hour), where a
        # skipped hour ends, or, on the first day, now.
        candidates = {when} if offset == 0 else set()
        for start in starts:
            wall = midnight + timedelta(minutes=start)
            candidates.update(wall.replace(fold=fold).astimezone(UTC) for fold in (0, 1))
        candidates.update(_offset_changes(day, tz))
        opened = [c for c in candidates if c >= when and is_open(windows, blocked_set, c, tz)]
        if opened:
            return min(opened).astimezone(tz)
    return None


def _offset_changes(day: date, tz: ZoneInfo) -> list[datetime]:
    """The instant (UTC, to the minute) during local ``day`` at which the zone's UTC offset changes, if any."""
    low = datetime.combine(day, time(0), tz).astimezone(UTC)
    high = datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(UTC)
    offset = low.astimezone(tz).utcoffset()
    if high.astimezone(tz).utcoffset() == offset:
        return []
    # The offset at ``low`` is the old one and at ``high`` the new one: bisect to the minute it changes.
    while high - low > timedelta(minutes=1):
        middle = low + (high - low) // 2
        middle = middle.replace(second=0, microsecond=0)
        if middle <= low:
            middle = low + timedelta(minutes=1)
        if middle.astimezone(tz).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return [high]


def open_span_end(windows: Sequence[Sequence[str]], blocked: Iterable[str], when: datetime, tz: ZoneInfo) -> datetime:
    """The instant the window open at ``when`` closes (``when`` itself if none is open), at most a day later.

    Touching windows (``09:00-10:00,10:00-11:00``, or ``22:00-24:00`` and ``00:00-06:00``) close at the end of
    the last one.
    """
    blocked_set = set(blocked)
    spans = sorted(_spans(windows))
    end = when.astimezone(UTC)
    limit = end + timedelta(days=1)
    while end < limit and is_open(windows, blocked_set, end, tz):
        local = end.astimezone(tz)
        minute = local.hour * 60 + local.minute
        close = next(e for s, e in spans if s <= minute < e)
        closes_at = (datetime.combine(local.date(), time(0), tz) + timedelta(minutes=close)).astimezone(UTC)
        if closes_at <= end:  # a repeated hour (daylight saving): step past it rather than loop
            closes_at = end + timedelta(minutes=1)
        end = closes_at
    return min(end, limit).astimezone(tz)


def add_open_time(
    windows: Sequence[Sequence[str]],
    blocked: Iterable[str],
    start: datetime,
    seconds: float,
    tz: ZoneInfo,
    horizon_days: int = 400,
) -> datetime | None:
    """The instant at which ``seconds`` of calling time (time inside the windows) have passed since ``start``.

    None if the windows do not offer that much time within ``horizon_days``.
    """
    blocked_set = set(blocked)
    remaining = max(0.0, seconds)
    limit = start.astimezone(UTC) + timedelta(days=horizon_days)
    moment = next_open(windows, blocked_set, start, tz, horizon_days)
    while moment is not None and moment.astimezone(UTC) <= limit:
        closes = open_span_end(windows, blocked_set, moment, tz)
        span = (closes - moment).total_seconds()
        if span >= remaining:
            return (moment + timedelta(seconds=remaining)).astimezone(tz)
        remaining -= span
        moment = next_open(windows, blocked_set, closes, tz, horizon_days)
    return None


@dataclass(frozen=True)
class RetryPlan:
    """What happens after a call that did not finish the interview."""

    at: datetime | None  # when to dial again (always inside a window, in UTC); None: no further attempt
    reason: str  # "scheduled", or why there is no further attempt: "budget", "deadline", "no window"


def plan_retry(
    now: datetime,
    outcome: str,
    attempts: int,
    *,
    max_attempts: int,
    retry: dict[str, int],
    windows: Sequence[Sequence[str]],
    blocked: Iterable[str],
    tz: ZoneInfo,
    ends_at: datetime | None = None,
) -> RetryPlan:
    """When to call a household again after ``outcome`` (busy, no-answer, failed, machine, dropped, not-dialled).

    The retry is due the outcome's delay after ``now``; if that instant is outside the windows (the lunch rest,
    the night, a blocked date) it moves to the next instant a window opens. There is none when the household
    has had ``max_attempts`` calls, or when no window opens before the round's deadline ``ends_at``.

    Args:
        now: when the call ended (aware).
        outcome: the call's outcome; an outcome without a delay of its own waits as long as ``no-answer``.
        attempts: calls placed to this household so far, including the one that just ended.
        retry: outcome -> seconds (the round's schedule).
    """
    if attempts >= max_attempts:
        return RetryPlan(None, "budget")
    if outcome == NOT_DIALLED:
        delay = 0
    else:
        delay = int(retry.get(outcome, retry.get("no-answer", DEFAULT_RETRY["no-answer"])))
    opens = next_open(windows, blocked, now + timedelta(seconds=max(0, delay)), tz)
    if opens is None:
        return RetryPlan(None, "no window")
    if ends_at is not None and opens >= ends_at:
        return RetryPlan(None, "deadline")
    return RetryPlan(opens.astimezone(UTC), "scheduled")
