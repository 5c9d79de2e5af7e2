"""With several Twilio accounts each signs its webhooks with its own auth token: the served app (real HTTP)
checks each request with the token of the account its ``AccountSid`` names."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import select
from twilio.request_validator import RequestValidator
from werkzeug.serving import make_server

from campaigns.models import CallAttempt
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings, SettingsError, TwilioAccount, load_settings
from tests.conftest import TEST_SECRET_KEY
from tests.ivr.support import SID, base_params, open_call
from tests.support.ports import free_port
from web.app import create_app

SID_A, SID_B = "AC" + "a" * 32, "AC" + "b" * 32
TOKEN_A, TOKEN_B = "token-a-" + "1" * 24, "token-b-" + "2" * 24


@pytest.fixture
def served(database_url: str, redis_url: str) -> Iterator[Settings]:
    port = free_port()
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        telephony="twilio",
        public_base_url=f"http://127.0.0.1:{port}",
        secret_key=TEST_SECRET_KEY,
        twilio_from_number="+8659122340009",
        twilio_accounts=(
            TwilioAccount("a", SID_A, TOKEN_A, 10.0),
            TwilioAccount("b", SID_B, TOKEN_B, 10.0),
        ),
    )
    runtime = Runtime(settings)
    set_runtime(runtime)
    server = make_server("127.0.0.1", port, create_app(runtime), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield settings
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    set_runtime(None)


def post_signed(settings: Settings, path: str, params: dict[str, str], token: str) -> requests.Response:
    url = settings.public_base_url + path
    signature = RequestValidator(token).compute_signature(url, params)
    return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


def test_a_callback_signed_by_account_b_is_checked_with_b_token(served, sessions):
    attempt_id = open_call(sessions)
    ringing = base_params(AccountSid=SID_B, CallStatus="ringing", SequenceNumber="1")

    # Signed with A's token but claiming to be B's: refused, nothing stored.
    assert post_signed(served, f"/ivr/status?attempt={attempt_id}", ringing, TOKEN_A).status_code == 403
    # B's callback signed with B's token: accepted.
    assert post_signed(served, f"/ivr/status?attempt={attempt_id}", ringing, TOKEN_B).status_code == 204
    with sessions() as session:
        assert session.scalar(select(CallAttempt.status).where(CallAttempt.id == attempt_id)) == "ringing"

    # A's own callback with A's token is accepted too; B's token does not pass for A.
    answered = base_params(AccountSid=SID_A, CallSid=SID)
    assert post_signed(served, f"/ivr/voice?attempt={attempt_id}", answered, TOKEN_B).status_code == 403
    reply = post_signed(served, f"/ivr/voice?attempt={attempt_id}", answered, TOKEN_A)
    assert reply.status_code == 200 and b"<Gather" in reply.content


def test_an_account_sid_nobody_configured_is_checked_with_the_default_token(served, sessions):
    attempt_id = open_call(sessions)
    stranger = base_params(AccountSid="AC" + "f" * 32, CallStatus="ringing", SequenceNumber="1")

    # Only the default (first) account's token can sign for an unknown account: a stranger's own token cannot.
    assert post_signed(served, f"/ivr/status?attempt={attempt_id}", stranger, "strangers-token").status_code == 403
    assert post_signed(served, f"/ivr/status?attempt={attempt_id}", stranger, TOKEN_B).status_code == 403
    assert post_signed(served, f"/ivr/status?attempt={attempt_id}", stranger, TOKEN_A).status_code == 204


def test_accounts_are_read_from_the_environment_with_their_own_variables() -> None:
    settings = load_settings(
        {
            "SANLV_TWILIO_ACCOUNTS": "east, west",
            "TWILIO_ACCOUNT_SID_EAST": SID_A,
            "TWILIO_AUTH_TOKEN_EAST": TOKEN_A,
            "TWILIO_CPS_EAST": "10",
            "TWILIO_FROM_NUMBER_EAST": "+8659122340001",
            "TWILIO_ACCOUNT_SID_WEST": SID_B,
            "TWILIO_AUTH_TOKEN_WEST": TOKEN_B,
            "TWILIO_FROM_NUMBER": "+8659122340009",
            "PUBLIC_BASE_URL": "https://survey.example.cn",
        }
    )

    assert settings.telephony == "twilio"
    east, west = settings.accounts
    assert (east.name, east.sid, east.cps, east.from_number) == ("east", SID_A, 10.0, "+8659122340001")
    assert (west.name, west.sid, west.cps, west.from_number) == ("west", SID_B, 1.0, None)  # Twilio's default CPS
    assert settings.webhook_token_for(SID_B) == TOKEN_B
    assert TOKEN_A not in repr(settings.accounts)  # the tokens stay out of logs and tracebacks


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SANLV_TWILIO_ACCOUNTS": "east"}, "TWILIO_ACCOUNT_SID_EAST is required"),
        ({"SANLV_TWILIO_ACCOUNTS": "east", "TWILIO_ACCOUNT_SID_EAST": SID_A}, "TWILIO_AUTH_TOKEN_EAST is required"),
        ({"SANLV_TWILIO_ACCOUNTS": "East Side"}, "'east side' is not an account name"),
        (
            {"SANLV_TWILIO_ACCOUNTS": "east", "TWILIO_ACCOUNT_SID_EAST": SID_A, "TWILIO_AUTH_TOKEN_EAST": "t",
             "TWILIO_CPS_EAST": "-1"},
            "TWILIO_CPS_EAST='-1' must be greater than zero",
        ),
        (
            {"SANLV_TWILIO_ACCOUNTS": "east", "TWILIO_ACCOUNT_SID_EAST": SID_A, "TWILIO_AUTH_TOKEN_EAST": "t",
             "PUBLIC_BASE_URL": "https://survey.example.cn"},
            "TWILIO_FROM_NUMBER_EAST (or TWILIO_FROM_NUMBER) is required",
        ),
    ],
)
def test_a_bad_account_configuration_names_the_variable(env, message) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env)
