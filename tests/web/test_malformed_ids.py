"""Every route, walked with ids a mistyped or hostile URL carries (far too big, negative, not a number) in its
path, its query string and its form: each answer is a 4xx, never a 500. Webhooks too, signed as Twilio signs."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from campaigns.models import Round, RoundStatus
from campaigns.runtime import get_runtime
from tests.factories import make_household, make_round, make_target
from tests.ivr.support import SID, base_params
from tests.web.conftest import sign_in

BAD_IDS = ("99999999999999999999", "2147483648", "-1", "abc", "1e9", "0x10", "１２")
# Query and form fields that carry ids or whole numbers somewhere in the app.
ID_FIELDS = ("round", "cadre", "village", "with", "page", "min_sample", "overdue", "before", "after", "cadre_id",
             "round_id", "item_id", "seed", "max_attempts", "max_concurrent", "sample_n", "cps", "token", "attempt",
             "n", "SequenceNumber", "CallDuration", "ErrorCode")  # fmt: skip
USERS = ("admin", "office1", "jiwei", "lin")


def concrete(rule: str, value: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?[a-z_]+>", value, rule)


def walk(app: Flask, client, value: str, path_value: str | None = None) -> list[str]:
    """Every route with ``path_value`` (default ``value``) for each of its arguments and ``value`` in every id
    field: the requests answered with a 5xx."""
    failures = []
    fields = dict.fromkeys(ID_FIELDS, value)
    for rule in app.url_map.iter_rules():
        # readyz answers 503 by design while a part is down (no worker runs here): it takes no ids anyway.
        if rule.endpoint in ("static", "readyz") or rule.endpoint.startswith("ivr."):
            continue
        url = concrete(rule.rule, value if path_value is None else path_value)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method == "GET":
                response = client.get(url, query_string=fields)
            else:
                response = client.open(url, method=method, data=fields)
            if response.status_code >= 500:
                failures.append(f"{method} {url} -> {response.status_code}")
    return failures


@pytest.fixture
def township(sessions, people) -> None:
    """Something for every id 1 to name: a round with a target, villages, cadres, users."""
    with sessions.begin() as session:
        round_ = make_round(session, status=RoundStatus.RUNNING)
        make_target(session, round_, make_household(session, cadre=people.lin))


@pytest.mark.parametrize("username", USERS)
def test_no_route_answers_a_malformed_id_with_a_500(app: Flask, township, username: str) -> None:
    client = app.test_client()
    assert sign_in(client, username).status_code == 302

    failures = [failure for value in BAD_IDS for failure in walk(app, client, value)]
    # Ids in the path that name something, malformed ids in the query string and the form.
    failures += [failure for value in BAD_IDS for failure in walk(app, client, value, path_value="1")]

    assert failures == []


def test_an_id_past_the_database_range_is_a_404_not_a_database_error(app: Flask, people) -> None:
    client = app.test_client()
    sign_in(client, "office1")

    for url in ("/rounds/99999999999999999999", "/rounds/2147483648", "/rounds/-1", "/rounds/abc",
                "/api/rounds/99999999999999999999/rates", "/rounds/1/compare/99999999999999999999"):  # fmt: skip
        assert client.get(url).status_code == 404, url
    assert client.get("/rounds/2147483647").status_code == 404  # the largest id: looked up, not there
    assert client.get("/api/rounds/1/followups", query_string={"cadre": "99999999999999999999"}).status_code in (400, 404)


def test_webhooks_with_malformed_ids_are_refused_with_a_4xx(live_server) -> None:
    import requests

    token = get_runtime().webhook_token  # the live server's runtime
    for path in ("/ivr/voice", "/ivr/gather", "/ivr/status", "/ivr/inbound"):
        for value in BAD_IDS:
            url = f"{live_server.public_base_url}{path}?attempt={value}&step=consent&n={value}"
            params = base_params(SequenceNumber=value, CallDuration=value, CallSid=SID)
            signature = RequestValidator(token).compute_signature(url, params)
            response = requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)
            assert 400 <= response.status_code < 500, (path, value, response.status_code)


@pytest.mark.parametrize("value", BAD_IDS)
def test_whole_numbers_in_otherwise_good_forms_are_field_errors(app: Flask, township, sessions, value: str) -> None:
    office = app.test_client()
    sign_in(office, "office1")
    admin = app.test_client()
    sign_in(admin, "admin")

    for field in ("seed", "max_attempts", "max_concurrent", "sample_n"):
        form = {"name": "r", "windows": "09:00-11:30", "sample_kind": "village", "sample_n": "1", field: value}
        # A field error (or, for a negative seed, a round): never a database error.
        assert office.post("/rounds", data=form).status_code in (200, 302, 400), (field, value)
    user = {"username": "newcadre", "role": "cadre", "password": "a-long-password-1", "password2": "a-long-password-1",
            "cadre_id": value}  # fmt: skip
    assert admin.post("/admin/users", data=user).status_code in (200, 400)
    with sessions() as session:
        seeds = session.scalars(select(Round.seed)).all()
    assert all(seed is None or -(2**31) <= seed < 2**31 for seed in seeds)
