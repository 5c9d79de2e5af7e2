"""The JSON API through the Flask test client: office and supervisor endpoints, a cadre's own list.

The client is signed in as an office user (who may use every endpoint here); who else may, and who may not,
is tests/web/test_access.py's subject.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import event, func, select

from campaigns.clock import set_clock_file
from campaigns.followups import sync_followups
from campaigns.models import FollowUp, FollowUpEvent, RoundStatus, Village
from reports.rates import village_rates
from tests.factories import interview_answers, make_interview, make_round
from tests.reports.scenarios import ASKED, visits_township
from tests.web.conftest import add_user, sign_in

OFFICE = "zongzhiban"


@pytest.fixture
def client(app, sessions):
    with sessions.begin() as session:
        add_user(session, OFFICE, "office")
    client = app.test_client()
    assert sign_in(client, OFFICE).status_code == 302
    return client


@pytest.fixture
def visits(sessions):
    with sessions.begin() as session:
        scenario = visits_township(session)
        # The factories stored the answers, not the interview: the repair tool makes the items it would have.
        sync_followups(session, scenario.round.id)
    return scenario


def error_of(response) -> str:
    assert response.is_json, response.data
    body = response.get_json()
    assert set(body) == {"error", "description"}
    return body["description"]


def item_ids(sessions) -> dict[int, int]:
    """response id -> follow-up id."""
    with sessions() as session:
        return dict(session.execute(select(FollowUp.response_id, FollowUp.id)).all())


# --- office: rates, compare -----------------------------------------------------------------------------


def test_rounds_list(client, visits) -> None:
    response = client.get("/api/rounds")

    assert response.status_code == 200
    assert response.get_json()["rounds"] == [
        {
            "id": visits.round.id,
            "name": "2026年上半年",
            "status": "running",
            "created_at": visits.round.created_at.isoformat(),
            "launched_at": None,
            "finished_at": None,
        }
    ]


def test_round_rates_is_the_report(client, sessions, visits) -> None:
    response = client.get(f"/api/rounds/{visits.round.id}/rates")

    assert response.status_code == 200 and response.mimetype == "application/json"
    assert "群众安全感率" in response.get_data(as_text=True)  # UTF-8 as written
    with sessions() as session:
        expected = village_rates(session, visits.round.id).to_json()
    assert response.get_json() == json.loads(json.dumps(expected))
    east = response.get_json()["villages"][0]
    assert (east["village"], east["completed"], east["rates"]["security"]["positive"]) == ("东村", 4, 1)  # only 赵六
    assert east["too_few"] is True
    small = client.get(f"/api/rounds/{visits.round.id}/rates?min_sample=2").get_json()
    assert small["round"]["min_sample"] == 2 and small["villages"][0]["too_few"] is False


@pytest.mark.parametrize("query", ["min_sample=0", "min_sample=abc", "min_sample=-3", "format=pdf"])
def test_round_rates_bad_parameters(client, visits, query) -> None:
    response = client.get(f"/api/rounds/{visits.round.id}/rates?{query}")

    assert response.status_code == 400
    assert query.split("=")[0] in error_of(response)


def test_round_rates_unknown_round(client) -> None:
    response = client.get("/api/rounds/999/rates")

    assert response.status_code == 404 and error_of(response) == "round 999 does not exist"


def test_round_rates_downloads(client, visits) -> None:
    base = f"/api/rounds/{visits.round.id}/rates"

    as_csv = client.get(f"{base}?format=csv")
    as_xlsx = client.get(f"{base}?format=xlsx")
    as_html = client.get(f"{base}?format=html")

    assert as_csv.status_code == 200 and as_csv.data.startswith(b"\xef\xbb\xbf")
    assert "attachment" in as_csv.headers["Content-Disposition"]
    book = load_workbook(io.BytesIO(as_xlsx.data))
    assert book.sheetnames[0] == "各村三率" and book["各村三率"]["A2"].value == "东村"
    assert as_html.mimetype == "text/html"
    html = as_html.get_data(as_text=True)
    assert html.count("<svg") == 5 and "138****0001" in html and "13811110001" not in html


def test_compare(client, sessions, visits) -> None:
    with sessions.begin() as session:
        later = make_round(session, name="2026年下半年", status=RoundStatus.COMPLETED)
        east = session.scalar(select(Village).where(Village.name == "东村"))
        for _ in range(3):
            make_interview(session, later, interview_answers(), village=east)
        later_id = later.id

    response = client.get(f"/api/rounds/{visits.round.id}/compare/{later_id}")
    same = client.get(f"/api/rounds/{later_id}/compare/{later_id}")
    unknown = client.get(f"/api/rounds/{later_id}/compare/999")

    assert response.status_code == 200
    east_security = response.get_json()["villages"][0]["rates"]["security"]
    assert east_security["a"]["positive"] == 1 and east_security["b"] == {"positive": 3, "valid": 3, "rate": 1.0}
    assert same.status_code == 400 and "compared with itself" in error_of(same)
    assert unknown.status_code == 404


# --- office: follow-ups, supervision --------------------------------------------------------------------


def test_office_followups_are_listed_and_masked(client, sessions, visits) -> None:
    response = client.get(f"/api/rounds/{visits.round.id}/followups")

    assert response.status_code == 200
    body = response.get_json()
    assert {item["phone"] for item in body["items"]} == {"138****0001", "138****0002", "138****0005", "138****0007"}
    assert {item["id"] for item in body["items"]} == set(item_ids(sessions).values())
    assert body["phones_masked"] is True
    assert [(v["village"], v["requested"], v["declined"]) for v in body["villages"]] == [("东村", 2, 1), ("西村", 2, 1)]
    one_cadre = client.get(f"/api/rounds/{visits.round.id}/followups?cadre={visits.cadres['lin'].id}").get_json()
    assert sorted(i["phone"] for i in one_cadre["items"]) == ["138****0001", "138****0002"]  # office view: masked


def test_office_followups_filters(client, sessions, visits, tmp_path, monkeypatch) -> None:
    clock = tmp_path / "clock"
    set_clock_file(clock, ASKED + timedelta(days=30))
    monkeypatch.setenv("SANLV_CLOCK_FILE", str(clock))
    base = f"/api/rounds/{visits.round.id}/followups"
    client.get(base)
    ids = item_ids(sessions)
    client.post(f"/api/followups/{ids[visits.people['A'].id]}/status", json={"status": "visited"})

    visited = client.get(f"{base}?status=visited").get_json()
    open_items = client.get(f"{base}?status=open").get_json()
    both = client.get(f"{base}?status=pending,已走访").get_json()
    overdue = client.get(f"{base}?overdue=1").get_json()
    bad_status = client.get(f"{base}?status=done")
    bad_overdue = client.get(f"{base}?overdue=maybe")
    bad_cadre = client.get(f"{base}?cadre=x")
    unknown_cadre = client.get(f"{base}?cadre=999")

    assert [i["household"] for i in visited["items"]] == ["张三"]
    assert len(open_items["items"]) == len(both["items"]) == 4
    assert {i["status"] for i in overdue["items"]} == {"pending"} and len(overdue["items"]) == 3
    assert bad_status.status_code == 400 and "status" in error_of(bad_status)
    assert bad_overdue.status_code == 400 and "overdue" in error_of(bad_overdue)
    assert bad_cadre.status_code == 400 and "cadre" in error_of(bad_cadre)
    assert unknown_cadre.status_code == 404 and error_of(unknown_cadre) == "cadre 999 does not exist"


def test_office_followups_downloads(client, visits) -> None:
    base = f"/api/rounds/{visits.round.id}/followups"

    as_csv = client.get(f"{base}?format=csv")
    as_xlsx = client.get(f"{base}?format=xlsx")

    assert as_csv.data.startswith(b"\xef\xbb\xbf") and "138****0001" in as_csv.data.decode("utf-8-sig")
    assert load_workbook(io.BytesIO(as_xlsx.data)).sheetnames == ["整改回访", "各村回访"]


def test_office_marks_an_item(client, sessions, visits) -> None:
    client.get(f"/api/rounds/{visits.round.id}/followups")
    item = item_ids(sessions)[visits.people["A"].id]

    named = client.post(
        f"/api/followups/{item}/status", json={"status": "visited", "note": "已上门", "actor": "综治办"}
    )
    visited = client.post(f"/api/followups/{item}/status", json={"status": "visited", "note": "已上门"})
    again = client.post(f"/api/followups/{item}/status", json={"status": "visited"})
    shown = client.get(f"/api/followups/{item}")

    # Who recorded it is the signed-in user, never a field of the body.
    assert named.status_code == 400 and "actor" in error_of(named)
    assert visited.status_code == 200
    body = visited.get_json()
    assert (body["status"], body["note"], body["phone"]) == ("visited", "已上门", "138****0001")
    assert [(e["status"], e["actor"]) for e in body["history"]] == [("pending", "sanlv"), ("visited", OFFICE)]
    assert again.status_code == 409 and "不能从“已走访”改为“已走访”" in error_of(again)
    assert shown.get_json()["history"] == body["history"]


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ("not json", "JSON"),
        ([], "JSON"),
        ({}, "status"),
        ({"status": "done"}, "status"),
        ({"status": "visited", "note": 5}, "note"),
        ({"status": "visited", "note": "长" * 2001}, "2000"),
        ({"status": "visited", "actor": ["x"]}, "actor"),
        ({"status": "visited", "actor": "综治办"}, "actor"),
    ],
)
def test_marking_bad_bodies_are_400(client, sessions, visits, payload, named) -> None:
    client.get(f"/api/rounds/{visits.round.id}/followups")
    item = item_ids(sessions)[visits.people["A"].id]

    if isinstance(payload, str):
        response = client.post(f"/api/followups/{item}/status", data=payload, content_type="text/plain")
    else:
        response = client.post(f"/api/followups/{item}/status", json=payload)

    assert response.status_code == 400
    assert named in error_of(response)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(FollowUpEvent)) == 4  # nothing recorded


def test_unknown_item(client) -> None:
    assert client.get("/api/followups/999").status_code == 404
    response = client.post("/api/followups/999/status", json={"status": "visited"})
    assert response.status_code == 404 and "999" in error_of(response)


def test_supervision(client, visits) -> None:
    response = client.get(f"/api/rounds/{visits.round.id}/supervision")

    assert response.status_code == 200
    cadres = {c["cadre"]: c for c in response.get_json()["cadres"]}
    assert (cadres["林建明"]["contact"]["positive"], cadres["林建明"]["contact"]["valid"]) == (4, 4)
    assert cadres["林建明"]["phone"] == "139****0001"
    assert cadres["陈志强"]["followups"]["open"] == 2
    assert client.get("/api/rounds/999/supervision").status_code == 404


def test_compare_and_supervision_downloads(client, sessions, visits) -> None:
    with sessions.begin() as session:
        later = make_round(session, name="2026年下半年", status=RoundStatus.COMPLETED)
        make_interview(session, later, interview_answers(), village=session.scalar(select(Village).where(Village.name == "东村")))
        later_id = later.id
    base = f"/api/rounds/{visits.round.id}"

    compared = client.get(f"{base}/compare/{later_id}?format=xlsx")
    supervision = client.get(f"{base}/supervision?format=csv")
    bad = client.get(f"{base}/supervision?format=html")

    assert compared.status_code == 200 and compared.mimetype.endswith("spreadsheetml.sheet")
    assert compared.headers["Content-Disposition"] == (
        f"attachment; filename=round-{visits.round.id}-to-{later_id}-compare.xlsx"
    )
    assert load_workbook(io.BytesIO(compared.data)).sheetnames == ["两轮对比"]
    assert supervision.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(supervision.data.decode("utf-8-sig"))))
    assert [row["干部"] for row in rows] == ["林建明", "陈志强", "合计"] and rows[0]["电话"] == "139****0001"
    assert bad.status_code == 400 and "format" in error_of(bad)


# --- a cadre's own list ---------------------------------------------------------------------------------


def test_cadre_sees_their_own_list_in_full_and_nothing_about_contact(client, visits) -> None:
    lin = visits.cadres["lin"].id

    response = client.get(f"/api/cadres/{lin}/followups")

    assert response.status_code == 200
    body = response.get_json()
    assert body["cadre"] == {"id": lin, "name": "林建明"}
    assert sorted((i["household"], i["phone"]) for i in body["items"]) == [
        ("张三", "13811110001"),
        ("李四", "13811110002"),
    ]
    text = response.get_data(as_text=True)
    # The cadre_contact answers are about this cadre: never on their screen, not even as a rate.
    for hidden in ("cadre_contact", "contact", "重视率", "干部联系率", "王五"):
        assert hidden not in text
    one_round = client.get(f"/api/cadres/{lin}/followups?round={visits.round.id}&status=pending").get_json()
    assert len(one_round["items"]) == 2


def test_cadre_marks_only_their_own_items(client, sessions, visits) -> None:
    lin, chen = visits.cadres["lin"].id, visits.cadres["chen"].id
    client.get(f"/api/cadres/{lin}/followups")
    ids = item_ids(sessions)
    mine, theirs = ids[visits.people["A"].id], ids[visits.people["E"].id]

    ok = client.post(f"/api/cadres/{lin}/followups/{mine}/status", json={"status": "已走访", "note": "已上门了解"})
    refused = client.post(f"/api/cadres/{lin}/followups/{theirs}/status", json={"status": "visited"})
    resolved = client.post(f"/api/cadres/{lin}/followups/{mine}/status", json={"status": "resolved"})
    too_late = client.post(f"/api/cadres/{lin}/followups/{mine}/status", json={"status": "unreachable"})

    assert ok.status_code == 200
    assert (ok.get_json()["status"], ok.get_json()["phone"]) == ("visited", "13811110001")
    assert ok.get_json()["history"][-1]["actor"] == OFFICE
    assert refused.status_code == 404  # another cadre's item does not exist for this cadre
    with sessions() as session:
        assert session.get(FollowUp, theirs).status.value == "pending"
    assert resolved.status_code == 200 and resolved.get_json()["note"] == "已上门了解"
    assert too_late.status_code == 409 and "该事项已结束" in error_of(too_late)
    assert client.get(f"/api/cadres/{chen}/followups").get_json()["summary"]["pending"] == 2


def test_cadre_errors(client, visits) -> None:
    unknown = client.get("/api/cadres/999/followups")
    bad_round = client.get(f"/api/cadres/{visits.cadres['lin'].id}/followups?round=x")
    unknown_round = client.get(f"/api/cadres/{visits.cadres['lin'].id}/followups?round=999")

    assert unknown.status_code == 404 and error_of(unknown) == "cadre 999 does not exist"
    assert bad_round.status_code == 400 and "round" in error_of(bad_round)
    assert unknown_round.status_code == 404


def test_reading_the_lists_and_reports_writes_nothing(client, sessions, visits) -> None:
    # An answer stored without its item (as before the interview kept them): a reader must not create it.
    with sessions.begin() as session:
        make_interview(session, visits.round, interview_answers("4", visit="1"), cadre=visits.cadres["lin"])
    statements: list[str] = []
    engine = client.application.extensions["sanlv"].engine

    def seen(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        for path in (
            f"/api/rounds/{visits.round.id}/followups",
            f"/api/rounds/{visits.round.id}/followups?format=csv",
            f"/api/rounds/{visits.round.id}/followups?format=xlsx",
            f"/api/cadres/{visits.cadres['lin'].id}/followups",
            f"/api/rounds/{visits.round.id}/supervision",
            f"/api/rounds/{visits.round.id}/rates?format=html",
        ):
            assert client.get(path).status_code == 200, path
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    assert statements, "the listener saw the requests' statements"
    writes = [s for s in statements if s.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE", "REPLACE")]
    # The only writes are the web layer's audit entries (downloads, a cadre's list with full numbers).
    assert writes and all(s.lstrip().upper().startswith("INSERT INTO AUDIT_LOG") for s in writes), writes
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(FollowUp)) == 4
