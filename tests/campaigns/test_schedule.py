"""Calling windows and retry delays: pure functions, tested with fixed instants and a hypothesis property."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.schedule import (
    DEFAULT_RETRY,
    DEFAULT_WINDOWS,
    NOT_DIALLED,
    RetryPlan,
    ScheduleError,
    add_open_time,
    is_open,
    next_open,
    open_span_end,
    parse_blocked,
    parse_duration,
    parse_retry,
    parse_windows,
    plan_retry,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
WINDOWS = [["09:00", "11:30"], ["14:30", "20:30"]]


def local(day: int, hh: int, mm: int, ss: int = 0, tz: ZoneInfo = SHANGHAI) -> datetime:
    """An aware instant on 2026-12-<day> local time."""
    return datetime(2026, 12, day, hh, mm, ss, tzinfo=tz)


# --- parse_windows ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("09:00-11:30,14:30-20:30", [["09:00", "11:30"], ["14:30", "20:30"]]),
        ("14:30-20:30, 09:00-11:30", [["09:00", "11:30"], ["14:30", "20:30"]]),  # sorted
        ("9:00-11:30", [["09:00", "11:30"]]),
        (" 08:00 - 12:00 ", [["08:00", "12:00"]]),
        ("18:00-24:00", [["18:00", "24:00"]]),
        ("00:00-24:00", [["00:00", "24:00"]]),
        ("22:00-24:00,00:00-01:00", [["00:00", "01:00"], ["22:00", "24:00"]]),  # midnight written as two
        ("09:00-10:00,10:00-11:00", [["09:00", "10:00"], ["10:00", "11:00"]]),  # touching is not overlapping
        ("09:00-11:30,", [["09:00", "11:30"]]),
    ],
)
def test_parse_windows_accepts_and_sorts(text: str, expected: list[list[str]]) -> None:
    assert parse_windows(text) == expected


def test_the_default_windows_parse_to_themselves() -> None:
    text = ",".join(f"{s}-{e}" for s, e in DEFAULT_WINDOWS)

    assert parse_windows(text) == [list(w) for w in DEFAULT_WINDOWS]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("22:00-02:00", "ends before it starts (a window cannot wrap midnight; write two)"),
        ("10:00-10:00", "ends before it starts"),
        ("09:00-12:00,11:00-13:00", "windows overlap at 11:00"),
        ("14:00-15:00,09:00-20:00", "windows overlap at 14:00"),  # overlap found whatever the written order
        ("09:00-12:00,09:00-12:00", "windows overlap at 09:00"),
        ("garbage", "'garbage' is not a range like 09:00-11:30"),
        ("09:00", "'09:00' is not a range like 09:00-11:30"),
        ("09:00-10:00-11:00", "is not a range like 09:00-11:30"),
        ("9am-5pm", "'9am' is not a time like 09:00"),
        ("09:60-10:00", "'09:60' is not a time like 09:00"),
        ("25:00-26:00", "'25:00' is not a time like 09:00"),
        ("23:00-24:30", "'24:30' is after 24:00"),
        ("0900-1130", "'0900' is not a time like 09:00"),
        ("", "no window given"),
        (" , ", "no window given"),
    ],
)
def test_parse_windows_rejects_with_a_reason_naming_the_option(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_windows(text)

    assert str(caught.value).startswith("--window")
    assert message in str(caught.value)


# --- durations and retry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("2h", 7200), ("90s", 90), ("1d", 86400), ("45", 2700), ("1.5h", 5400), (" 2H ", 7200)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text, "--retry busy") == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "2 hours", "m", "1w", "1h30m"])
def test_parse_duration_rejects_with_the_place(text: str) -> None:
    with pytest.raises(ScheduleError, match=r"^--retry busy: .* is not a duration like 30m or 2h$"):
        parse_duration(text, "--retry busy")


def test_parse_retry_replaces_only_the_outcomes_given() -> None:
    schedule = parse_retry("busy=10m, no-answer=3h")

    assert schedule == {**DEFAULT_RETRY, "busy": 600, "no-answer": 10800}
    assert DEFAULT_RETRY["busy"] == 1800  # the default itself is untouched


def test_parse_retry_of_every_outcome() -> None:
    assert parse_retry("busy=30m,no-answer=2h,failed=4h,machine=2h,dropped=1h") == {
        "busy": 1800,
        "no-answer": 7200,
        "failed": 14400,
        "machine": 7200,
        "dropped": 3600,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("busy", "--retry: 'busy' is not outcome=duration"),
        ("ringing=5m", "--retry: unknown outcome 'ringing' (known: busy, no-answer, failed, machine, dropped)"),
        ("busy=soon", "--retry busy: 'soon' is not a duration like 30m or 2h"),
    ],
)
def test_parse_retry_rejects_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_retry(text)

    assert str(caught.value) == message


# --- is_open ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hh", "mm", "ss", "expected"),
    [
        (8, 59, 59, False),
        (9, 0, 0, True),
        (11, 29, 59, True),
        (11, 30, 0, False),  # the end is exclusive
        (12, 0, 0, False),
        (14, 30, 0, True),
        (20, 29, 0, True),
        (20, 30, 0, False),
        (23, 59, 59, False),
        (0, 0, 0, False),
    ],
)
def test_is_open_start_inclusive_end_exclusive(hh: int, mm: int, ss: int, expected: bool) -> None:
    assert is_open(WINDOWS, [], local(1, hh, mm, ss), SHANGHAI) is expected


def test_a_window_to_24_00_is_open_until_midnight() -> None:
    windows = [["22:00", "24:00"]]

    assert is_open(windows, [], local(1, 23, 59, 59), SHANGHAI)
    assert not is_open(windows, [], local(2, 0, 0), SHANGHAI)
    assert not is_open(windows, [], local(1, 21, 59), SHANGHAI)


def test_is_open_converts_from_utc_to_local_time() -> None:
    # 01:00 UTC is 09:00 in Shanghai (UTC+8): open there, closed in UTC.
    when = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)

    assert is_open(WINDOWS, [], when, SHANGHAI)
    assert not is_open(WINDOWS, [], when, ZoneInfo("UTC"))
    # 13:00 UTC is 21:00 in Shanghai, after the last window.
    assert not is_open(WINDOWS, [], datetime(2026, 12, 1, 13, 0, tzinfo=UTC), SHANGHAI)


def test_is_open_uses_the_local_date_for_blocked_dates() -> None:
    # 2026-11-30 17:00 UTC is 2026-12-01 01:00 in Shanghai: the local date is the blocked one.
    windows = [["00:00", "24:00"]]
    when = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)

    assert not is_open(windows, ["2026-12-01"], when, SHANGHAI)
    assert is_open(windows, ["2026-11-30"], when, SHANGHAI)


def test_a_blocked_date_is_closed_all_day() -> None:
    assert not is_open(WINDOWS, ["2026-12-01"], local(1, 10, 0), SHANGHAI)
    assert is_open(WINDOWS, ["2026-12-01"], local(2, 10, 0), SHANGHAI)


# --- next_open -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (local(1, 10, 15, 30), local(1, 10, 15, 30)),  # open now: now
        (local(1, 9, 0), local(1, 9, 0)),  # exactly at the opening
        (local(1, 6, 0), local(1, 9, 0)),  # before the first window: later today
        (local(1, 11, 30), local(1, 14, 30)),  # exactly at a close: the next window
        (local(1, 12, 0), local(1, 14, 30)),  # between windows
        (local(1, 20, 29, 59), local(1, 20, 29, 59)),  # the last second of the day's window
        (local(1, 20, 30), local(2, 9, 0)),  # exactly at the last close: tomorrow
        (local(1, 23, 0), local(2, 9, 0)),
    ],
)
def test_next_open(when: datetime, expected: datetime) -> None:
    found = next_open(WINDOWS, [], when, SHANGHAI)

    assert found == expected
    assert found is not None and is_open(WINDOWS, [], found, SHANGHAI)


def test_next_open_skips_blocked_dates() -> None:
    blocked = ["2026-12-02", "2026-12-03"]

    assert next_open(WINDOWS, blocked, local(1, 21, 0), SHANGHAI) == local(4, 9, 0)
    assert next_open(WINDOWS, blocked, local(2, 10, 0), SHANGHAI) == local(4, 9, 0)
    assert next_open(WINDOWS, ["2026-12-01"], local(1, 10, 0), SHANGHAI) == local(2, 9, 0)


def test_next_open_from_utc() -> None:
    # 2026-12-01 13:00 UTC = 21:00 Shanghai, after the last window: tomorrow 09:00 Shanghai = 01:00 UTC.
    found = next_open(WINDOWS, [], datetime(2026, 12, 1, 13, 0, tzinfo=UTC), SHANGHAI)

    assert found is not None
    assert found.astimezone(UTC) == datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def test_next_open_with_windows_not_in_time_order() -> None:
    # Windows stored by hand (or by an older version) need not be sorted; the earliest still wins.
    unsorted = [["14:30", "20:30"], ["09:00", "11:30"]]

    assert next_open(unsorted, [], local(1, 8, 0), SHANGHAI) == local(1, 9, 0)


NEW_YORK = ZoneInfo("America/New_York")  # SANLV_TIMEZONE takes any IANA zone, daylight saving included


def test_next_open_in_a_repeated_hour_is_never_in_the_past() -> None:
    # 2026-11-01 01:00-02:00 happens twice in New York (EDT, then EST). At 01:10 EST (06:10 UTC) the
    # 01:20-01:40 window's first occurrence (05:20 UTC) is over; the next start is 01:20 EST (06:20 UTC).
    when = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)

    found = next_open([["01:20", "01:40"]], [], when, NEW_YORK)

    assert found is not None
    assert found.astimezone(UTC) == datetime(2026, 11, 1, 6, 20, tzinfo=UTC)


def test_next_open_finds_the_second_occurrence_of_a_repeated_window() -> None:
    # At 01:45 EDT (05:45 UTC) the 01:30-01:40 window has closed once, and opens again at 01:30 EST.
    found = next_open([["01:30", "01:40"]], [], datetime(2026, 11, 1, 5, 45, tzinfo=UTC), NEW_YORK)

    assert found is not None
    assert found.astimezone(UTC) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)


def test_next_open_across_a_skipped_hour() -> None:
    # 2026-03-08 02:00-03:00 does not exist in New York: a 02:00-03:30 window opens when clocks reach 03:00
    # EDT (07:00 UTC); a 02:00-02:30 window does not open that day at all.
    when = datetime(2026, 3, 8, 6, 50, tzinfo=UTC)  # 01:50 EST

    assert next_open([["02:00", "03:30"]], [], when, NEW_YORK) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert next_open([["02:00", "02:30"]], [], when, NEW_YORK) == datetime(2026, 3, 9, 6, 0, tzinfo=UTC)


def test_next_open_is_none_when_every_day_is_blocked() -> None:
    start = date(2026, 12, 1)
    blocked = [(start + timedelta(days=n)).isoformat() for n in range(10)]

    assert next_open(WINDOWS, blocked, local(1, 8, 0), SHANGHAI, horizon_days=10) is None
    assert next_open(WINDOWS, blocked, local(1, 8, 0), SHANGHAI, horizon_days=11) == local(11, 9, 0)


# --- the property ----------------------------------------------------------------------------------------


@st.composite
def window_sets(draw: st.DrawFn, last: int = 144) -> list[list[str]]:
    """1-3 disjoint windows on 10-minute boundaries up to ``last`` (144 = 24:00, allowed as an end)."""
    edges = sorted(draw(st.sets(st.integers(0, last), min_size=2, max_size=6)))
    if len(edges) % 2:
        edges = edges[:-1]
    text = ",".join(
        f"{a * 10 // 60:02d}:{a * 10 % 60:02d}-{b * 10 // 60:02d}:{b * 10 % 60:02d}"
        for a, b in zip(edges[::2], edges[1::2], strict=True)
    )
    return parse_windows(text)


ZONES = st.sampled_from([SHANGHAI, ZoneInfo("UTC"), ZoneInfo("Asia/Kolkata"), ZoneInfo("America/New_York")])


@settings(max_examples=150, deadline=None)
@given(
    windows=window_sets(),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),
    blocked_offsets=st.sets(st.integers(0, 3), max_size=3),
    tz=ZONES,
)
def test_next_open_is_open_and_nothing_earlier_is(
    windows: list[list[str]], start: datetime, blocked_offsets: set[int], tz: ZoneInfo
) -> None:
    first_day = start.astimezone(tz).date()
    blocked = [(first_day + timedelta(days=n)).isoformat() for n in blocked_offsets]

    assert_next_open_is_the_first_open_instant(windows, blocked, start, tz)


def assert_next_open_is_the_first_open_instant(
    windows: list[list[str]], blocked: list[str], start: datetime, tz: ZoneInfo
) -> None:
    found = next_open(windows, blocked, start, tz)

    assert found is not None
    assert found >= start
    assert is_open(windows, blocked, found, tz)
    # No open instant between start and found, minute by minute (bounded: at most 6 days apart here).
    assert found - start <= timedelta(days=6)
    probe = start
    while probe < found:
        assert not is_open(windows, blocked, probe, tz), (probe, found)
        probe = (probe + timedelta(minutes=1)).replace(second=0, microsecond=0)


# Daylight-saving changes (UTC instants): at 02:00 or 03:00 local an hour repeats or vanishes.
DST_CHANGES = [
    (NEW_YORK, datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),
    (ZoneInfo("Australia/Sydney"), datetime(2026, 4, 4, 16, 0, tzinfo=UTC)),
    (ZoneInfo("Australia/Sydney"), datetime(2026, 10, 3, 16, 0, tzinfo=UTC)),
]


@settings(max_examples=300, deadline=None)
@given(
    windows=st.one_of(window_sets(last=30), window_sets()),  # mostly windows in the small hours
    change=st.sampled_from(DST_CHANGES),
    minutes=st.integers(-240, 240),
)
def test_next_open_property_around_daylight_saving_changes(
    windows: list[list[str]], change: tuple[ZoneInfo, datetime], minutes: int
) -> None:
    tz, moment = change
    assert moment.astimezone(tz).utcoffset() != (moment - timedelta(minutes=1)).astimezone(tz).utcoffset()

    assert_next_open_is_the_first_open_instant(windows, [], moment + timedelta(minutes=minutes), tz)


# --- blocked dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-10-01", ["2026-10-01"]),
        ("2027-01-01, 2026-10-01", ["2026-10-01", "2027-01-01"]),  # sorted
        ("2026-10-01..2026-10-03", ["2026-10-01", "2026-10-02", "2026-10-03"]),  # 国庆: a range
        ("2026-10-02..2026-10-03,2026-10-01..2026-10-02", ["2026-10-01", "2026-10-02", "2026-10-03"]),
        ("2026-02-28..2026-03-01", ["2026-02-28", "2026-03-01"]),
        ("2026-10-01,", ["2026-10-01"]),
        ("", []),
        (" , ", []),
    ],
)
def test_parse_blocked(text: str, expected: list[str]) -> None:
    assert parse_blocked(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-13-01", "--blocked: '2026-13-01': '2026-13-01' is not a date like 2026-10-01"),
        ("10/01", "--blocked: '10/01': '10/01' is not a date like 2026-10-01"),
        ("2026-10-07..2026-10-01", "--blocked: '2026-10-07..2026-10-01' ends before it starts"),
        ("2026-10-01..", "--blocked: '2026-10-01..': '' is not a date like 2026-10-01"),
        ("2026-01-01..2027-06-01", "--blocked: '2026-01-01..2027-06-01' is longer than a year"),
    ],
)
def test_parse_blocked_rejects_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_blocked(text)

    assert str(caught.value) == message


# --- open time -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "closes"),
    [
        (local(1, 10, 0), local(1, 11, 30)),
        (local(1, 9, 0), local(1, 11, 30)),
        (local(1, 20, 29, 59), local(1, 20, 30)),
        (local(1, 12, 0), local(1, 12, 0)),  # closed: now
    ],
)
def test_open_span_end(when: datetime, closes: datetime) -> None:
    assert open_span_end(WINDOWS, [], when, SHANGHAI) == closes


def test_open_span_end_runs_through_touching_windows_and_midnight() -> None:
    touching = [["09:00", "10:00"], ["10:00", "11:00"]]
    overnight = [["00:00", "06:00"], ["22:00", "24:00"]]

    assert open_span_end(touching, [], local(1, 9, 30), SHANGHAI) == local(1, 11, 0)
    assert open_span_end(overnight, [], local(1, 23, 0), SHANGHAI) == local(2, 6, 0)
    assert open_span_end(overnight, ["2026-12-02"], local(1, 23, 0), SHANGHAI) == local(2, 0, 0)
    # Always open: at most a day at a time.
    assert open_span_end([["00:00", "24:00"]], [], local(1, 10, 0), SHANGHAI) == local(2, 10, 0)


@pytest.mark.parametrize(
    ("start", "seconds", "expected"),
    [
        (local(1, 10, 0), 0, local(1, 10, 0)),
        (local(1, 10, 0), 3600, local(1, 11, 0)),
        (local(1, 10, 0), 5400, local(1, 11, 30)),  # exactly the rest of the morning
        (local(1, 10, 0), 5401, local(1, 14, 30, 1)),  # one second over: after lunch
        (local(1, 12, 0), 60, local(1, 14, 31)),  # starts closed: counts from the next window
        (local(1, 20, 0), 3600, local(2, 9, 30)),  # half an hour tonight, half tomorrow morning
        (local(1, 9, 0), 2.5 * 3600 + 6 * 3600, local(1, 20, 30)),  # a whole day's calling time
        (local(1, 9, 0), 2.5 * 3600 + 6 * 3600 + 1, local(2, 9, 0, 1)),
    ],
)
def test_add_open_time(start: datetime, seconds: float, expected: datetime) -> None:
    assert add_open_time(WINDOWS, [], start, seconds, SHANGHAI) == expected


def test_add_open_time_skips_blocked_dates_and_gives_up_past_the_horizon() -> None:
    assert add_open_time(WINDOWS, ["2026-12-02"], local(1, 20, 0), 3600, SHANGHAI) == local(3, 9, 30)
    assert add_open_time(WINDOWS, [], local(1, 9, 0), 10 * 8.5 * 3600, SHANGHAI, horizon_days=5) is None


# --- retry planning --------------------------------------------------------------------------------------


def plan(now: datetime, outcome: str = "busy", attempts: int = 1, **over) -> RetryPlan:
    options = {
        "max_attempts": 3,
        "retry": dict(DEFAULT_RETRY),
        "windows": WINDOWS,
        "blocked": [],
        "tz": SHANGHAI,
    }
    options.update(over)
    return plan_retry(now, outcome, attempts, **options)


@pytest.mark.parametrize(
    ("outcome", "delay"),
    [("busy", 30 * 60), ("no-answer", 2 * 3600), ("failed", 4 * 3600), ("machine", 2 * 3600), ("dropped", 3600)],
)
def test_a_retry_waits_the_outcomes_delay(outcome: str, delay: int) -> None:
    # 2026-12-01 is a Tuesday; 14:30 leaves six hours of window.
    now = local(1, 14, 30)

    assert plan(now, outcome) == RetryPlan((now + timedelta(seconds=delay)).astimezone(UTC), "scheduled")


def test_a_retry_that_falls_outside_the_windows_moves_to_the_next_window() -> None:
    # Busy at 11:10: 11:40 is in the lunch rest; the retry is at 14:30.
    assert plan(local(1, 11, 10)).at == local(1, 14, 30)
    # No answer at 19:00: 21:00 is night; tomorrow 09:00.
    assert plan(local(1, 19, 0), "no-answer").at == local(2, 9, 0)
    # ...unless tomorrow is a holiday.
    assert plan(local(1, 19, 0), "no-answer", blocked=["2026-12-02"]).at == local(3, 9, 0)


def test_a_retry_at_the_very_end_of_a_window_is_the_next_window() -> None:
    retry = {**DEFAULT_RETRY, "busy": 20 * 60}

    assert plan(local(1, 11, 10), retry=retry).at == local(1, 14, 30)  # 11:30 is closed (end exclusive)
    assert plan(local(1, 11, 9, 59), retry=retry).at == local(1, 11, 29, 59)


def test_the_attempt_budget_ends_the_retries() -> None:
    assert plan(local(1, 14, 30), attempts=2, max_attempts=3).reason == "scheduled"
    assert plan(local(1, 14, 30), attempts=3, max_attempts=3) == RetryPlan(None, "budget")
    assert plan(local(1, 14, 30), attempts=1, max_attempts=1) == RetryPlan(None, "budget")


def test_no_retry_after_the_deadline() -> None:
    ends_at = local(1, 20, 0)

    assert plan(local(1, 19, 0), "busy", ends_at=ends_at).at == local(1, 19, 30)
    assert plan(local(1, 19, 0), "no-answer", ends_at=ends_at) == RetryPlan(None, "deadline")
    # Moved to tomorrow's window, which is past the deadline.
    assert plan(local(1, 20, 10), "busy", ends_at=local(2, 8, 0)) == RetryPlan(None, "deadline")


def test_no_retry_when_no_window_opens_again() -> None:
    blocked = [(date(2026, 12, 1) + timedelta(days=n)).isoformat() for n in range(500)]

    assert plan(local(1, 10, 0), blocked=blocked) == RetryPlan(None, "no window")


def test_an_outcome_without_a_delay_of_its_own_waits_like_no_answer() -> None:
    assert plan(local(1, 14, 30), "something-new").at == local(1, 16, 30)


def test_a_call_cancelled_before_it_rang_is_tried_again_at_the_next_window() -> None:
    assert plan(local(1, 11, 30), NOT_DIALLED).at == local(1, 14, 30)
    assert plan(local(1, 10, 0), NOT_DIALLED).at == local(1, 10, 0)


@settings(max_examples=200, deadline=None)
@given(
    windows=window_sets(),
    now=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),
    outcome=st.sampled_from(list(DEFAULT_RETRY)),
    delays=st.lists(st.integers(0, 3 * 86400), min_size=5, max_size=5),
    blocked_offsets=st.sets(st.integers(0, 3), max_size=3),
    tz=ZONES,
)
def test_a_planned_retry_is_the_first_open_instant_after_the_delay(
    windows: list[list[str]],
    now: datetime,
    outcome: str,
    delays: list[int],
    blocked_offsets: set[int],
    tz: ZoneInfo,
) -> None:
    retry = dict(zip(DEFAULT_RETRY, delays, strict=True))
    due = now + timedelta(seconds=retry[outcome])
    blocked = [(due.astimezone(tz).date() + timedelta(days=n)).isoformat() for n in blocked_offsets]

    result = plan_retry(
        now, outcome, 1, max_attempts=2, retry=retry, windows=windows, blocked=blocked, tz=tz
    )

    assert result.reason == "scheduled" and result.at is not None
    assert result.at.tzinfo is UTC
    assert result.at >= due
    assert is_open(windows, blocked, result.at, tz)
    assert_next_open_is_the_first_open_instant(windows, blocked, due, tz)
    assert result.at == next_open(windows, blocked, due, tz)
