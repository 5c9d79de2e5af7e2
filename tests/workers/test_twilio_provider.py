"""The Twilio provider, through the real ``twilio`` client, against the local stand-in of Twilio's REST API."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from campaigns.settings import Settings
from tests.support.twilio_standin import TwilioStandIn, twilio_standin  # noqa: F401 (a fixture)
from workers.telephony.base import (
    STATUS_EVENTS,
    AmbiguousCreateError,
    CallRequest,
    ConfigurationError,
    PermanentNumberError,
    RateLimitedError,
    TelephonyError,
)
from workers.telephony.twilio_provider import TwilioProvider

CALLER_ID = "+861012345678"
RESIDENT = "+8613812341234"
NEIGHBOUR = "+8613912345678"
WEBHOOK_BASE = "http://127.0.0.1:5000"
CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")


@pytest.fixture(autouse=True)
def _no_region_or_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    # The twilio client builds its host from them (api.{edge}.{region}.twilio.com); one test sets them on purpose.
    monkeypatch.delenv("TWILIO_REGION", raising=False)
    monkeypatch.delenv("TWILIO_EDGE", raising=False)


def twilio_settings(standin: TwilioStandIn, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "telephony": "twilio",
        "twilio_account_sid": standin.account_sid,
        "twilio_auth_token": standin.auth_token,
        "twilio_from_number": CALLER_ID,
        "twilio_api_base_url": standin.base_url,
        "public_base_url": WEBHOOK_BASE,
        "twilio_http_timeout": 5.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def call_request(to: str = RESIDENT, **overrides: object) -> CallRequest:
    values: dict[str, object] = {
        "attempt_id": 7,
        "to": to,
        "from_": CALLER_ID,
        "url": f"{WEBHOOK_BASE}/ivr/voice?attempt=7",
        "status_callback": f"{WEBHOOK_BASE}/ivr/status?attempt=7",
        "timeout": 25,
    }
    values.update(overrides)
    return CallRequest(**values)  # type: ignore[arg-type]


@pytest.fixture
def provider(twilio_standin: TwilioStandIn) -> Iterator[TwilioProvider]:  # noqa: F811
    with TwilioProvider(twilio_settings(twilio_standin)) as provider:
        yield provider


@pytest.fixture
def raw_client(twilio_standin: TwilioStandIn) -> Iterator[Client]:  # noqa: F811
    """The plain twilio client on the stand-in, for what the provider deliberately does not do."""
    http_client = TwilioHttpClient(timeout=5)
    client = Client(twilio_standin.account_sid, twilio_standin.auth_token, http_client=http_client)
    client.api.base_url = twilio_standin.base_url
    yield client
    http_client.session.close()


def free_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- placing a call ---------------------------------------------------------------------------------------------


def test_place_call_sends_what_twilio_needs(provider: TwilioProvider, twilio_standin: TwilioStandIn) -> None:
    info = provider.place_call(call_request())

    assert CALL_SID.match(info.sid)
    assert info.status == "queued"
    assert info.to == RESIDENT
    assert info.date_created is not None and info.date_created.tzinfo is not None
    [create] = twilio_standin.create_requests
    assert create.path == f"/2010-04-01/Accounts/{twilio_standin.account_sid}/Calls.json"
    assert create.username == twilio_standin.account_sid  # Basic auth; the stand-in checked the token
    assert create.value("To") == RESIDENT
    assert create.value("From") == CALLER_ID
    assert create.value("Url") == f"{WEBHOOK_BASE}/ivr/voice?attempt=7"
    assert create.value("Method") == "POST"
    assert create.value("StatusCallback") == f"{WEBHOOK_BASE}/ivr/status?attempt=7"
    assert create.value("StatusCallbackMethod") == "POST"
    # One repeated key per event, as Twilio documents (not one space-joined value).
    assert create.values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert create.values("StatusCallbackEvent") == list(STATUS_EVENTS)
    assert create.value("Timeout") == "25"
    assert "MachineDetection" not in create.form
    assert twilio_standin.call(info.sid)["status"] == "queued"


def test_machine_detection_is_asked_for_only_when_wanted(
    provider: TwilioProvider, twilio_standin: TwilioStandIn
) -> None:
    provider.place_call(call_request(machine_detection=True))
    provider.place_call(call_request(machine_detection=False))

    first, second = twilio_standin.create_requests
    assert first.values("MachineDetection") == ["Enable"]
    assert "MachineDetection" not in second.form


def test_caller_id_defaults_to_the_configured_number(provider: TwilioProvider, twilio_standin: TwilioStandIn) -> None:
    provider.place_call(call_request(from_=""))

    assert twilio_standin.create_requests[0].value("From") == CALLER_ID


def test_region_and_edge_in_the_environment_do_not_redirect_requests(
    twilio_standin: TwilioStandIn,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_EDGE", "sydney")

    with TwilioProvider(twilio_settings(twilio_standin)) as provider:
        provider.place_call(call_request())

    assert twilio_standin.created == 1


def test_missing_credentials_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="TWILIO_ACCOUNT_SID"):
        TwilioProvider(Settings(telephony="twilio", twilio_from_number=CALLER_ID))


def test_creates_are_logged_with_the_number_masked(
    provider: TwilioProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sanlv.twilio"):
        info = provider.place_call(call_request())

    assert f"event=call_created attempt=7 sid={info.sid} status=queued to=138****1234" in caplog.messages
    assert RESIDENT not in caplog.text


# -- error mapping ----------------------------------------------------------------------------------------------


def test_invalid_number_is_permanent(provider: TwilioProvider, twilio_standin: TwilioStandIn) -> None:
    with pytest.raises(PermanentNumberError) as caught:
        provider.place_call(call_request(to="12345"))

    assert caught.value.code == 21211
    assert caught.value.status == 400
    assert isinstance(caught.value.__cause__, TwilioRestException)
    assert twilio_standin.created == 0


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, 21214, PermanentNumberError),
        (400, 21215, PermanentNumberError),
        (400, 21216, PermanentNumberError),
        (429, 20429, RateLimitedError),
        (500, 20500, AmbiguousCreateError),
        (503, 20503, AmbiguousCreateError),
        (401, 20003, ConfigurationError),
        (400, 21205, ConfigurationError),
        (400, 21210, ConfigurationError),
        (404, 20404, ConfigurationError),
        (400, 21601, TelephonyError),
    ],
)
def test_twilio_errors_map_to_telephony_errors(
    provider: TwilioProvider, twilio_standin: TwilioStandIn, status: int, code: int, expected: type
) -> None:
    twilio_standin.fail_next(status=status, code=code)

    with pytest.raises(TelephonyError) as caught:
        provider.place_call(call_request())

    assert type(caught.value) is expected
    assert (caught.value.status, caught.value.code) == (status, code)
    assert isinstance(caught.value.__cause__, TwilioRestException)
    assert twilio_standin.created == 0


def test_rate_limited_create_creates_nothing_and_the_next_one_succeeds(
    provider: TwilioProvider, twilio_standin: TwilioStandIn
) -> None:
    twilio_standin.fail_next(status=429, code=20429)

    with pytest.raises(RateLimitedError):
        provider.place_call(call_request())
    assert twilio_standin.created == 0

    assert provider.place_call(call_request()).status == "queued"
    assert len(twilio_standin.create_requests) == 2
    assert twilio_standin.created == 1


def test_server_error_is_ambiguous_and_the_call_can_be_adopted(
    provider: TwilioProvider, twilio_standin: TwilioStandIn
) -> None:
    since = datetime.now(UTC)
    twilio_standin.fail_next(status=500, create_anyway=True)

    with pytest.raises(AmbiguousCreateError) as caught:
        provider.place_call(call_request())

    assert caught.value.status == 500
    [created] = twilio_standin.calls
    [found] = provider.find_calls(RESIDENT, since)
    assert found.sid == created["sid"]
    assert found.status == "queued"
    assert found.start_time is None  # not started yet: a StartTime filter at Twilio would have hidden it


def test_timeout_is_ambiguous_and_does_not_hang(twilio_standin: TwilioStandIn) -> None:  # noqa: F811
    since = datetime.now(UTC)
    twilio_standin.delay_next(10.0)

    with TwilioProvider(twilio_settings(twilio_standin, twilio_http_timeout=0.5)) as provider:
        started = time.monotonic()
        with pytest.raises(AmbiguousCreateError) as caught:
            provider.place_call(call_request())
        elapsed = time.monotonic() - started

        assert elapsed < 3.0
        assert isinstance(caught.value.__cause__, requests.Timeout)
        assert twilio_standin.created == 1  # Twilio got the request; only the answer was lost
        assert [call.sid for call in provider.find_calls(RESIDENT, since)] == [twilio_standin.calls[0]["sid"]]


def test_connection_failure_on_create_is_ambiguous(twilio_standin: TwilioStandIn) -> None:  # noqa: F811
    settings = twilio_settings(twilio_standin, twilio_api_base_url=f"http://127.0.0.1:{free_port()}")

    with TwilioProvider(settings) as provider, pytest.raises(AmbiguousCreateError) as caught:
        provider.place_call(call_request())

    assert isinstance(caught.value.__cause__, requests.ConnectionError)


def test_bad_credentials_are_a_configuration_error(twilio_standin: TwilioStandIn) -> None:  # noqa: F811
    with TwilioProvider(twilio_settings(twilio_standin, twilio_auth_token="not-the-token")) as provider:
        with pytest.raises(ConfigurationError) as caught:
            provider.place_call(call_request())
        assert (caught.value.status, caught.value.code) == (401, 20003)

        # Listing fails differently inside the client (a bare TwilioException carrying the response).
        with pytest.raises(ConfigurationError) as listed:
            provider.find_calls(RESIDENT, datetime.now(UTC))
        assert (listed.value.status, listed.value.code) == (401, 20003)
        assert type(listed.value.__cause__) is TwilioException

    assert twilio_standin.created == 0


# -- fetching, finding and cancelling ---------------------------------------------------------------------------


def test_fetch_call_reports_the_current_state(provider: TwilioProvider, twilio_standin: TwilioStandIn) -> None:
    sid = provider.place_call(call_request(machine_detection=True)).sid

    twilio_standin.set_call_status(sid, "in-progress", answered_by="human")
    answered = provider.fetch_call(sid)
    assert answered.status == "in-progress"
    assert answered.start_time is not None and answered.start_time.tzinfo is not None
    assert answered.duration is None
    assert answered.extra["answered_by"] == "human"

    twilio_standin.set_call_status(sid, "completed", duration=95)
    completed = provider.fetch_call(sid)
    assert (completed.sid, completed.status, completed.duration, completed.to) == (sid, "completed", 95, RESIDENT)
    assert completed.extra["end_time"] >= completed.start_time


def test_fetch_unknown_call_is_a_plain_error(provider: TwilioProvider) -> None:
    with pytest.raises(TelephonyError) as caught:
        provider.fetch_call("CA" + "f" * 32)

    assert type(caught.value) is TelephonyError
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_find_calls_filters_by_number_and_since(provider: TwilioProvider, twilio_standin: TwilioStandIn) -> None:
    twilio_standin.add_call(RESIDENT, date_created=datetime.now(UTC) - timedelta(days=1))
    twilio_standin.add_call(NEIGHBOUR)
    since = datetime.now(UTC)
    first = provider.place_call(call_request())
    second = provider.place_call(call_request())
    provider.place_call(call_request(to=NEIGHBOUR))

    found = provider.find_calls(RESIDENT, since)

    assert {call.sid for call in found} == {first.sid, second.sid}
    assert all(call.to == RESIDENT for call in found)
    [listing] = [r for r in twilio_standin.recorded if r.method == "GET" and r.path.endswith("/Calls.json")]
    assert listing.query["To"] == [RESIDENT]
    assert not any(key.startswith("StartTime") for key in listing.query)


def test_find_calls_counts_from_the_start_of_the_second(
    provider: TwilioProvider, twilio_standin: TwilioStandIn
) -> None:
    # Twilio stamps date_created to the second; a since later within that second must still find the call.
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    sid = twilio_standin.add_call(RESIDENT, status="queued", date_created=created)

    assert [call.sid for call in provider.find_calls(RESIDENT, created + timedelta(microseconds=900_000))] == [sid]
    assert provider.find_calls(RESIDENT, created + timedelta(seconds=1)) == []


def test_find_calls_follows_every_page(provider: TwilioProvider, twilio_standin: TwilioStandIn) -> None:
    since = datetime.now(UTC) - timedelta(hours=1)
    sids = {twilio_standin.add_call(RESIDENT, status="busy") for _ in range(60)}

    found = provider.find_calls(RESIDENT, since)

    assert {call.sid for call in found} == sids
    listings = [r for r in twilio_standin.recorded if r.method == "GET" and r.path.endswith("/Calls.json")]
    assert len(listings) == 2  # pages of 50


def test_find_calls_needs_an_aware_since(provider: TwilioProvider) -> None:
    with pytest.raises(ValueError, match="aware"):
        provider.find_calls(RESIDENT, datetime.now())


def test_cancel_a_queued_call(provider: TwilioProvider, twilio_standin: TwilioStandIn) -> None:
    sid = provider.place_call(call_request()).sid

    provider.cancel_call(sid)

    assert twilio_standin.call(sid)["status"] == "canceled"
    [update] = [r for r in twilio_standin.recorded if r.method == "POST" and r.path.endswith(f"/Calls/{sid}.json")]
    assert update.form == {"Status": ["canceled"]}


def test_cancel_leaves_a_call_in_progress_alone(
    provider: TwilioProvider, twilio_standin: TwilioStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    sid = provider.place_call(call_request()).sid
    twilio_standin.set_call_status(sid, "in-progress")

    with caplog.at_level(logging.INFO, logger="sanlv.twilio"):
        provider.cancel_call(sid)

    assert twilio_standin.call(sid)["status"] == "in-progress"
    assert f"event=cancel_skipped sid={sid} code=21220 reason=call_not_queued_or_ringing" in caplog.messages


def test_cancel_unknown_call_is_an_error(provider: TwilioProvider) -> None:
    with pytest.raises(TelephonyError) as caught:
        provider.cancel_call("CA" + "f" * 32)

    assert caught.value.status == 404


# -- the stand-in itself ----------------------------------------------------------------------------------------


def test_standin_requires_a_url_or_twiml(raw_client: Client, twilio_standin: TwilioStandIn) -> None:  # noqa: F811
    with pytest.raises(TwilioRestException) as caught:
        raw_client.calls.create(to=RESIDENT, from_=CALLER_ID)

    assert (caught.value.status, caught.value.code) == (400, 21200)
    assert twilio_standin.created == 0


def test_standin_start_time_filter_skips_calls_not_started(
    raw_client: Client,
    twilio_standin: TwilioStandIn,  # noqa: F811
) -> None:
    queued = raw_client.calls.create(to=RESIDENT, from_=CALLER_ID, url=f"{WEBHOOK_BASE}/ivr/voice")
    answered = raw_client.calls.create(to=RESIDENT, from_=CALLER_ID, url=f"{WEBHOOK_BASE}/ivr/voice")
    twilio_standin.set_call_status(answered.sid, "in-progress")
    today = datetime.now(UTC)

    by_start = raw_client.calls.list(to=RESIDENT, start_time_after=today - timedelta(days=1))

    assert [call.sid for call in by_start] == [answered.sid]
    assert {call.sid for call in raw_client.calls.list(to=RESIDENT)} == {queued.sid, answered.sid}


def test_standin_records_create_times_for_dial_rate(
    provider: TwilioProvider, twilio_standin: TwilioStandIn
) -> None:
    before = time.monotonic()
    for _ in range(3):
        provider.place_call(call_request())
    after = time.monotonic()

    times = twilio_standin.create_times
    assert len(times) == 3
    assert before <= times[0] <= times[1] <= times[2] <= after
    assert twilio_standin.max_creates_in_window(after - before + 1.0) == 3
    assert twilio_standin.requests == 3
