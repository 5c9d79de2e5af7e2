"""Default deny: who may reach each route, for every route of the app, and a cadre only their own items."""

from __future__ import annotations

import pytest
from flask import Flask, url_for
from sqlalchemy import select
from werkzeug.routing import IntegerConverter

from campaigns.models import FollowUp
from web.security import rule_for

# The only routes open without signing in, and why (see web.app).
PUBLIC_ENDPOINTS = {
    "static",  # the pages' stylesheet and script
    "healthz",  # health check
    "readyz",  # readiness: names failing parts, nothing personal
    "auth.login",  # the sign-in form
    "ivr.voice",  # Twilio's webhooks: signature-checked
    "ivr.gather",
    "ivr.status",
    "ivr.inbound",
    "ivr.recording",  # recorded prompts Twilio fetches for <Play>
    "ivr_notices.sms_status",  # notices' Twilio webhooks: signature-checked
    "ivr_notices.sms_inbound",
    "ivr_notices.notice_voice",
    "ivr_notices.notice_heard",
    "ivr_notices.notice_key",
    "ivr_notices.notice_status",
}
ROLES = ("admin", "office", "supervisor", "cadre")
EVERYONE = set(ROLES)
READERS = {"admin", "office", "supervisor"}
WRITERS = {"admin", "office"}

# Every protected route: method, URL ({round}, {item}, {lin}, {user} are filled in) and the roles that may use
# it. A new route fails test_the_table_covers_every_protected_route until it is added here.
ACCESS_TABLE = [
    ("GET", "/", EVERYONE),  # the office home; other roles are sent on to their own
    ("GET", "/supervisor", {"admin", "supervisor"}),
    ("GET", "/my", {"cadre"}),
    ("POST", "/logout", EVERYONE),
    ("GET", "/admin/users", {"admin"}),
    ("POST", "/admin/users", {"admin"}),
    ("POST", "/admin/users/{user}/disable", {"admin"}),
    ("POST", "/admin/users/{user}/password", {"admin"}),
    ("GET", "/admin/audit", {"admin"}),
    ("GET", "/api/rounds", READERS),
    ("GET", "/api/rounds/{round}/rates", READERS),
    ("GET", "/api/rounds/{round}/compare/{round}", READERS),
    ("GET", "/api/rounds/{round}/followups", READERS),
    ("GET", "/api/rounds/{round}/supervision", READERS),
    ("GET", "/api/followups/{item}", READERS),
    ("POST", "/api/followups/{item}/status", WRITERS),
    ("GET", "/api/cadres/{lin}/followups", {"admin", "office", "cadre"}),
    ("POST", "/api/cadres/{lin}/followups/{item}/status", {"admin", "office", "cadre"}),
    # The office pages (web.office).
    ("GET", "/roster", WRITERS),
    ("POST", "/roster/upload", WRITERS),
    ("POST", "/roster/import", WRITERS),
    ("POST", "/roster/discard", WRITERS),
    ("GET", "/roster/villages", WRITERS),
    ("GET", "/roster/households", WRITERS),
    ("GET", "/roster/cadres", WRITERS),
    ("GET", "/roster/dnc", WRITERS),
    ("POST", "/roster/dnc", WRITERS),
    ("GET", "/roster/dnc/0000abcdefabcdefabcdefab/remove", WRITERS),
    ("POST", "/roster/dnc/0000abcdefabcdefabcdefab/remove", WRITERS),
    ("GET", "/questionnaires", WRITERS),
    ("POST", "/questionnaires", WRITERS),
    ("GET", "/questionnaires/default", WRITERS),
    ("POST", "/questionnaires/default/prompts/step-security/recording", WRITERS),
    ("GET", "/questionnaires/default/recordings/step-security.wav", WRITERS),
    ("GET", "/rounds", WRITERS),
    ("GET", "/rounds/new", WRITERS),
    ("POST", "/rounds", WRITERS),
    ("GET", "/rounds/{round}", WRITERS),
    ("POST", "/rounds/{round}/launch", WRITERS),
    ("POST", "/rounds/{round}/pause", WRITERS),
    ("POST", "/rounds/{round}/resume", WRITERS),
    ("POST", "/rounds/{round}/cancel", WRITERS),
    ("GET", "/api/rounds/{round}/progress", WRITERS),
    ("GET", "/rounds/{round}/report", READERS),
    ("GET", "/rounds/{round}/compare", READERS),  # the chooser (?with=N): 400 without it
    ("GET", "/rounds/{round}/compare/{round}", READERS),
    ("GET", "/rounds/{round}/followups", READERS),
    # The notices page (web.notices).
    ("GET", "/notices", WRITERS),
    ("GET", "/notices/new", WRITERS),
    ("POST", "/notices", WRITERS),
    ("GET", "/notices/1", WRITERS),
    ("POST", "/notices/1/launch", WRITERS),
    ("POST", "/notices/1/pause", WRITERS),
    ("POST", "/notices/1/resume", WRITERS),
    ("POST", "/notices/1/cancel", WRITERS),
    # The supervisors' pages (web.supervisor): figures per cadre, every follow-up read-only, spot-checks.
    ("GET", "/supervisor/rounds/{round}/followups", {"admin", "supervisor"}),
    ("GET", "/supervisor/followups/{item}", {"admin", "supervisor"}),
    ("GET", "/supervisor/spot-checks/new", {"admin", "supervisor"}),
    ("POST", "/supervisor/spot-checks", {"admin", "supervisor"}),
    ("POST", "/supervisor/spot-checks/{round}/launch", {"admin", "supervisor"}),
    # A cadre's own pages (web.cadre): {item} is on the cadre user's own list.
    ("GET", "/my/{item}", {"cadre"}),
    ("POST", "/my/{item}/status", {"cadre"}),
    ("GET", "/api/roster/households", WRITERS),  # the roster page's data as JSON
]


def dummy_url(app: Flask, rule) -> str:
    """``rule``'s URL with a made-up value for each variable part (1 for numbers, "x" for text)."""
    values = {
        name: 1 if isinstance(converter, IntegerConverter) else "x" for name, converter in rule._converters.items()
    }
    with app.test_request_context():
        return url_for(rule.endpoint, **values)


def test_every_route_declares_who_may_reach_it(app: Flask) -> None:
    undeclared = sorted(rule.endpoint for rule in app.url_map.iter_rules() if rule_for(rule.endpoint, app) is None)

    assert undeclared == []


def test_only_the_listed_routes_are_public(app: Flask) -> None:
    public = {rule.endpoint for rule in app.url_map.iter_rules() if rule_for(rule.endpoint, app).public}

    assert public == PUBLIC_ENDPOINTS


def test_no_other_route_answers_an_anonymous_client(app: Flask) -> None:
    """Every method of every non-public route: pages redirect to the sign-in form, the API answers 401."""
    client = app.test_client()
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        url = dummy_url(app, rule)
        for method in sorted(rule.methods):
            response = client.open(url, method=method)
            where = f"{method} {url}"
            if url.startswith("/api/"):
                assert response.status_code == 401, where
                if method != "HEAD":  # a HEAD answer has no body
                    assert response.is_json and response.get_json()["error"] == "Unauthorized", where
                assert response.headers["WWW-Authenticate"].startswith("Bearer"), where
            else:
                assert response.status_code == 302, where
                assert response.headers["Location"].startswith("/login"), where
            assert b"13811110001" not in response.data
            checked += 1
    assert checked >= 2 * len(ACCESS_TABLE)  # each route answers its own method and OPTIONS (GET: HEAD too)


def test_an_anonymous_page_request_comes_back_after_signing_in(app: Flask, people) -> None:
    from tests.web.conftest import form_token

    client = app.test_client()
    first = client.get("/admin/audit?user=lin")

    assert first.status_code == 302 and first.headers["Location"] == "/login?next=/admin/audit?user%3Dlin"
    signed = client.post(
        "/login",
        data={"username": "admin", "password": "correct horse battery", "next": "/admin/audit?user=lin",
              "csrf_token": form_token(client, first.headers["Location"])},
    )
    assert signed.status_code == 302 and signed.headers["Location"] == "/admin/audit?user=lin"


def test_a_route_nobody_declared_is_refused_to_everyone(make_app, people, client_for) -> None:
    app = make_app()

    @app.get("/forgotten")
    def forgotten():  # no @roles, no @public
        return "secret"

    anonymous = app.test_client().get("/forgotten")
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login")
    from tests.web.conftest import sign_in

    admin = app.test_client()
    assert sign_in(admin, "admin").status_code == 302
    refused = admin.get("/forgotten")
    assert refused.status_code == 403 and b"secret" not in refused.data


def test_the_table_covers_every_protected_route(app: Flask) -> None:
    adapter = app.url_map.bind("localhost")
    covered = set()
    for method, template, _roles in ACCESS_TABLE:
        url = template.format(round=1, item=1, lin=1, user=1)
        endpoint, _args = adapter.match(url, method=method)
        covered.add((endpoint, method))
    protected = {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in PUBLIC_ENDPOINTS
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }

    assert protected == covered


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "template", "allowed"), ACCESS_TABLE, ids=lambda v: v if isinstance(v, str) else "")
def test_roles_on_every_route(township, client_for, sessions, role, method, template, allowed) -> None:
    from tests.web.conftest import add_user

    with sessions.begin() as session:
        target_user = add_user(session, "throwaway", "office")  # the one a disable or password post is about
    client = client_for(township.user(role))
    url = template.format(round=township.round_id, item=township.lin_item, lin=township.lin_id, user=target_user.id)

    response = client.open(url, method=method, json={"status": "visited"} if "/api/" in url else None)

    if role in allowed:
        assert response.status_code not in (401, 403), (role, method, url, response.status_code)
        assert not response.headers.get("Location", "").startswith("/login") or template == "/logout"
    else:
        assert response.status_code == 403, (role, method, url, response.status_code)


# --- a cadre reaches only their own list ------------------------------------------------------------------


def test_a_cadre_sees_their_own_list_in_full(township, client_for) -> None:
    lin = client_for(township.user("cadre"))

    own = lin.get(f"/api/cadres/{township.lin_id}/followups")

    assert own.status_code == 200
    assert sorted(i["phone"] for i in own.get_json()["items"]) == ["13811110001", "13811110002"]
    assert own.headers["Cache-Control"] == "no-store"


def test_another_cadres_list_and_items_do_not_exist_for_a_cadre(township, client_for, sessions) -> None:
    lin = client_for(township.user("cadre"))

    their_list = lin.get(f"/api/cadres/{township.chen_id}/followups")
    their_item_on_my_url = lin.post(
        f"/api/cadres/{township.lin_id}/followups/{township.chen_item}/status", json={"status": "visited"}
    )
    their_item_on_their_url = lin.post(
        f"/api/cadres/{township.chen_id}/followups/{township.chen_item}/status", json={"status": "visited"}
    )
    unknown_cadre = lin.get("/api/cadres/999/followups")

    for response in (their_list, their_item_on_my_url, their_item_on_their_url, unknown_cadre):
        assert response.status_code == 404
        assert b"13811110005" not in response.data
    with sessions() as session:
        assert session.scalar(select(FollowUp.status).where(FollowUp.id == township.chen_item)).value == "pending"


def test_a_cadre_marks_their_own_item_as_themselves(township, client_for) -> None:
    lin = client_for(township.user("cadre"))

    marked = lin.post(
        f"/api/cadres/{township.lin_id}/followups/{township.lin_item}/status",
        json={"status": "visited", "note": "已上门"},
    )

    assert marked.status_code == 200
    assert marked.get_json()["history"][-1]["actor"] == "lin"


def test_a_cadre_page_lists_only_their_own_items_with_call_links(township, client_for) -> None:
    page = client_for(township.user("cadre")).get("/my").get_data(as_text=True)

    assert 'href="tel:13811110001"' in page and 'href="tel:13811110002"' in page
    assert "13811110005" not in page and "13811110007" not in page  # 陈志强's residents
    assert "重视率" not in page


def test_a_supervisor_reads_every_follow_up_but_changes_none(township, client_for) -> None:
    supervisor = client_for(township.user("supervisor"))

    listed = supervisor.get(f"/api/rounds/{township.round_id}/followups")
    item = supervisor.get(f"/api/followups/{township.chen_item}")
    change = supervisor.post(f"/api/followups/{township.chen_item}/status", json={"status": "visited"})

    assert listed.status_code == 200 and len(listed.get_json()["items"]) == 4
    assert all("****" in i["phone"] for i in listed.get_json()["items"])  # masked
    assert item.status_code == 200 and item.get_json()["status"] == "pending"
    assert change.status_code == 403


@pytest.mark.parametrize(
    ("role", "home"), [("admin", "/"), ("office", "/"), ("supervisor", "/supervisor"), ("cadre", "/my")]
)
def test_each_role_lands_on_its_home(township, app, role, home) -> None:
    from tests.web.conftest import sign_in

    client = app.test_client()
    response = sign_in(client, township.user(role).username)

    assert response.status_code == 302 and response.headers["Location"] == home
    root = client.get("/")
    assert root.status_code == 200 if home == "/" else root.headers["Location"] == home
