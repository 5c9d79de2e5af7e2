"""The audit log: one entry for each audited action, from the web and from the command line; append-only."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from campaigns import audit
from campaigns.models import AuditEntry, Round
from tests.web.conftest import PASSWORD, form_token, page_token, sign_in


def entries(sessions, **filters) -> list[tuple]:
    """(username, action, object_type, object_id) of every entry, oldest first."""
    with sessions() as session:
        return [
            (e.username, e.action, e.object_type, e.object_id)
            for e in audit.entries(session, **filters)
        ]


def last(sessions) -> AuditEntry:
    with sessions() as session:
        return session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()


def sanlv(*args: str, input: str | None = None) -> Result:
    from web.cli import main

    return CliRunner().invoke(main, list(args), input=input)


# --- from the web ---------------------------------------------------------------------------------------------


def test_sign_ins_failed_sign_ins_and_sign_outs(app, people, sessions) -> None:
    client = app.test_client()
    for username, password in (("office1", "wrong password!"), ("ghost", PASSWORD), ("office1", PASSWORD)):
        client.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": form_token(client)},
            headers={"X-Forwarded-For": "198.51.100.23"},
        )
    client.post("/logout", headers={"X-CSRFToken": page_token(client), "X-Forwarded-For": "198.51.100.23"})

    assert entries(sessions) == [
        ("office1", "login.failed", "user", "office1"),
        ("ghost", "login.failed", "user", "ghost"),
        ("office1", "login", "user", "office1"),
        ("office1", "logout", None, None),
    ]
    with sessions() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [r.detail.get("reason") for r in rows[:2]] == ["wrong_password", "unknown_user"]
        assert [r.user_id for r in rows] == [people.office.id, None, people.office.id, people.office.id]
        assert {r.remote_addr for r in rows} == {"198.51.100.23"}  # the address behind the trusted proxy


def test_a_disabled_users_attempt_is_recorded_as_such(app, people, sessions) -> None:
    admin = app.test_client()
    sign_in(admin, "admin")
    admin.post(f"/admin/users/{people.office.id}/disable")

    sign_in(app.test_client(), "office1")

    assert last(sessions).action == "login.failed" and last(sessions).detail == {"reason": "disabled"}


def test_full_phone_lists_are_audited_each_time_they_are_seen(township, client_for, sessions) -> None:
    lin = client_for(township.user("cadre"))
    office = client_for(township.user("office"))

    lin.get("/my")
    lin.get(f"/api/cadres/{township.lin_id}/followups")
    office.get(f"/api/cadres/{township.lin_id}/followups")
    office.get(f"/api/rounds/{township.round_id}/followups")  # masked: not a full-phone list

    views = entries(sessions, action="phones.view")
    assert views == [
        ("lin", "phones.view", "cadre", str(township.lin_id)),
        ("lin", "phones.view", "cadre", str(township.lin_id)),
        ("office1", "phones.view", "cadre", str(township.lin_id)),
    ]
    assert last(sessions).remote_addr == "127.0.0.1"


@pytest.mark.parametrize(
    ("path", "audited"),
    [
        ("rates?format=csv", True),
        ("rates?format=xlsx", True),
        ("rates?format=html", True),
        ("rates", False),
        ("followups?format=csv", True),
        ("followups?format=xlsx&cadre={lin}", True),
        ("followups", False),
    ],
)
def test_every_download_is_audited(township, client_for, sessions, path, audited) -> None:
    client = client_for(township.user("supervisor"))

    response = client.get(f"/api/rounds/{township.round_id}/{path.format(lin=township.lin_id)}")

    assert response.status_code == 200
    exports = entries(sessions, action="export")
    if not audited:
        assert exports == []
        return
    assert exports == [("jiwei", "export", "round", str(township.round_id))]
    detail = last(sessions).detail
    assert detail["report"] == path.split("?")[0] and detail["format"] == path.split("format=")[1].split("&")[0]
    if "cadre" in path:
        assert detail["cadre"] == township.lin_id


def test_follow_up_changes_are_audited(township, client_for, sessions) -> None:
    office = client_for(township.user("office"))
    lin = client_for(township.user("cadre"))

    office.post(f"/api/followups/{township.chen_item}/status", json={"status": "visited", "note": "电话联系"})
    lin.post(f"/api/cadres/{township.lin_id}/followups/{township.lin_item}/status", json={"status": "unreachable"})
    lin.post(f"/api/cadres/{township.lin_id}/followups/{township.lin_item}/status", json={"status": "visited"})  # 409

    assert entries(sessions, action="followup.mark") == [
        ("office1", "followup.mark", "followup", str(township.chen_item)),
        ("lin", "followup.mark", "followup", str(township.lin_item)),
    ]
    assert last(sessions).detail == {"status": "unreachable", "note": None, "cadre": township.lin_id}


def test_user_changes_from_the_admin_pages_are_audited(app, people, sessions) -> None:
    admin = app.test_client()
    sign_in(admin, "admin")

    admin.post(
        "/admin/users", data={"username": "newbie", "role": "supervisor", "password": PASSWORD, "password2": PASSWORD}
    )
    new_password = {"password": "a new long password", "password2": "a new long password"}
    admin.post(f"/admin/users/{people.office.id}/password", data=new_password)
    admin.post(f"/admin/users/{people.office.id}/disable")

    assert entries(sessions, username="admin")[1:] == [
        ("admin", "user.add", "user", "newbie"),
        ("admin", "user.password", "user", "office1"),
        ("admin", "user.disable", "user", "office1"),
    ]


# --- from the command line --------------------------------------------------------------------------------


@pytest.fixture
def operator(env, monkeypatch) -> str:
    for name in ("LOGNAME", "USER"):
        monkeypatch.setenv(name, "operator")
    return "cli:operator"


ROSTER = "村,户主,电话,包户干部\n东村,张三,13800000001,林建明\n东村,李四,13800000002,林建明\n"


def test_roster_imports_and_round_changes_from_the_cli(operator, tmp_path: Path, sessions) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER, encoding="utf-8")

    assert sanlv("roster", "import", str(roster), "--dry-run").exit_code == 0  # writes nothing: not audited
    assert sanlv("roster", "import", str(roster)).exit_code == 0
    created = sanlv("round", "create", "--name", "上半年")
    round_id = created.stdout.strip()
    for command in ("launch", "pause", "resume", "cancel"):
        assert sanlv("round", command, round_id).exit_code == 0, command
    assert sanlv("round", "pause", round_id).exit_code == 1  # refused: nothing happened, nothing recorded

    assert entries(sessions) == [
        (operator, "roster.import", "file", "roster.csv"),
        (operator, "round.create", "round", round_id),
        (operator, "round.launch", "round", round_id),
        (operator, "round.pause", "round", round_id),
        (operator, "round.resume", "round", round_id),
        (operator, "round.cancel", "round", round_id),
    ]
    with sessions() as session:
        imported = session.scalars(select(AuditEntry).where(AuditEntry.action == "roster.import")).one()
        assert imported.detail["path"] == str(roster) and imported.detail["skipped"] == 0
        assert session.get(Round, int(round_id)).name == "上半年"


def test_exports_written_to_a_file_and_follow_up_marks_from_the_cli(operator, township, tmp_path, sessions) -> None:
    rid, lin = str(township.round_id), str(township.lin_id)
    commands = [
        ["report", "rates", rid, "--format", "csv", "--output", str(tmp_path / "rates.csv")],
        ["report", "compare", rid, rid, "--format", "json"],  # printed, and refused: no file, no entry
        ["report", "followups", rid, "--cadre", lin, "--format", "xlsx", "--output", str(tmp_path / "lin.xlsx")],
        ["report", "cadres", rid, "--format", "json", "--output", str(tmp_path / "cadres.json")],
        ["report", "rates", rid, "--format", "json"],  # printed: not an export to a file
        ["followup", "mark", str(township.lin_item), "--status", "visited", "--note", "已上门"],
    ]
    for args in commands:
        sanlv(*args)

    assert entries(sessions) == [
        (operator, "export", "round", rid),
        (operator, "export", "round", rid),
        (operator, "export", "round", rid),
        (operator, "followup.mark", "followup", str(township.lin_item)),
    ]
    with sessions() as session:
        details = [e.detail for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert details[0] == {"report": "rates", "format": "csv", "output": str(tmp_path / "rates.csv")}
    assert details[1]["cadre"] == township.lin_id and details[1]["format"] == "xlsx"
    assert details[2]["report"] == "cadres"
    assert details[3]["status"] == "visited"


# --- append-only --------------------------------------------------------------------------------------------


def test_the_application_cannot_change_or_delete_an_entry(sessions) -> None:
    with sessions.begin() as session:
        entry = audit.record(session, "cli:operator", audit.LOGIN)

    with sessions() as session:
        loaded = session.get(AuditEntry, entry.id)
        loaded.username = "someone else"
        with pytest.raises(RuntimeError, match="append-only"):
            session.flush()
        session.rollback()
        session.delete(session.get(AuditEntry, entry.id))
        with pytest.raises(RuntimeError, match="append-only"):
            session.flush()
