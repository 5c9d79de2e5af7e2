"""The supervisors' pages: figures per cadre with the too-few-to-judge mark, every follow-up read-only, and a
spot-check round (``cadre:N``) created through the office create form's own logic, then launched."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from campaigns import audit
from campaigns.followups import mark_followup
from campaigns.models import AuditEntry, Round, RoundStatus, RoundTarget

SPOT_CHECK = {
    "name": "林建明联系情况抽查",
    "questionnaire": "default",
    "sample_n": "1",
    "seed": "7",
    "windows": "09:00-11:30,14:30-20:30",
    "max_attempts": "3",
    "cps": "1",
    "max_concurrent": "10",
}


@pytest.fixture
def jiwei(client_for, township):
    return client_for(township.user("supervisor"))


def test_the_home_page_shows_each_cadres_contact_rate_and_follow_ups(jiwei, township) -> None:
    html = jiwei.get("/supervisor").get_data(as_text=True)

    assert f'data-round="{township.round_id}"' in html
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.DOTALL)
    lin = next(r for r in rows if "林建明" in r)
    chen = next(r for r in rows if "陈志强" in r)
    # 林建明: 4 completed interviews; 陈志强: 2 (G's is not completed). Both far below 10 valid answers: "*".
    assert "重视率" in html and "*" in lin and "*" in chen
    assert re.search(r"<td>2</td><td>2</td>", lin)  # open and overdue follow-ups (asked in March)
    assert "有效回答少于 10 个" in html


def test_the_home_page_names_no_household_and_shows_no_full_number(jiwei, township) -> None:
    html = jiwei.get("/supervisor").get_data(as_text=True)

    for name in ("张三", "李四", "王五", "赵六", "周八", "吴九"):
        assert name not in html
    assert not re.search(r"1381111000\d", html)
    assert "13900000001" not in html  # nor a cadre's


def test_every_follow_up_is_readable_and_none_can_be_changed(jiwei, township, sessions) -> None:
    with sessions.begin() as session:
        mark_followup(session, township.chen_item, "visited", "电话无人接，上门见到本人", actor="chen")
    listing = jiwei.get(f"/supervisor/rounds/{township.round_id}/followups").get_data(as_text=True)
    only_lin = jiwei.get(f"/supervisor/rounds/{township.round_id}/followups?cadre={township.lin_id}")
    detail = jiwei.get(f"/supervisor/followups/{township.chen_item}").get_data(as_text=True)

    assert len(re.findall(r'<tr data-item="\d+"', listing)) == 4
    assert re.findall(r"138\*\*\*\*\d{4}", listing) and not re.search(r"1381111000\d", listing)
    assert f'data-item="{township.chen_item}" data-status="visited"' in listing
    assert len(re.findall(r'<tr data-item="\d+"', only_lin.get_data(as_text=True))) == 2
    assert "电话无人接，上门见到本人" in detail and "chen" in detail
    for page in (listing, detail):
        assert 'method="post"' not in page.replace('method="post" action="/logout"', "")


def test_a_spot_check_round_is_created_with_a_cadre_sample_and_launched(jiwei, township, sessions) -> None:
    form = jiwei.get("/supervisor/spot-checks/new").get_data(as_text=True)
    assert 'value="cadre"' in form and 'value="village"' not in form and 'value="all"' not in form

    created = jiwei.post("/supervisor/spot-checks", data=SPOT_CHECK)

    assert created.status_code == 302
    with sessions() as session:
        spot = session.scalars(select(Round).where(Round.name == SPOT_CHECK["name"])).one()
        targets = session.scalar(select(RoundTarget.id).where(RoundTarget.round_id == spot.id).limit(1))
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == audit.ROUND_CREATE)).one()
    assert (spot.sample, spot.status) == ("cadre:1", RoundStatus.DRAFT)
    assert targets is not None
    assert (entry.username, entry.object_id, entry.detail["sample"]) == ("jiwei", str(spot.id), "cadre:1")
    home = jiwei.get(created.headers["Location"]).get_data(as_text=True)
    assert f"/supervisor/spot-checks/{spot.id}/launch" in home

    launched = jiwei.post(f"/supervisor/spot-checks/{spot.id}/launch")

    assert launched.status_code == 302
    with sessions() as session:
        assert session.get(Round, spot.id).status is RoundStatus.RUNNING
        launch = session.scalars(select(AuditEntry).where(AuditEntry.action == audit.ROUND_LAUNCH)).one()
    assert launch.username == "jiwei"


def test_a_spot_check_form_error_is_shown_beside_its_field(jiwei, township, sessions) -> None:
    page = jiwei.post("/supervisor/spot-checks", data={**SPOT_CHECK, "sample_n": "0", "windows": "09:00-25:00"})

    html = page.get_data(as_text=True)
    assert page.status_code == 400
    assert 'id="sample-error"' in html or 'id="windows-error"' in html
    with sessions() as session:
        assert session.scalar(select(Round.id).where(Round.name == SPOT_CHECK["name"])) is None


def test_a_round_that_is_not_a_spot_check_is_not_theirs_to_launch(jiwei, township, sessions) -> None:
    with sessions.begin() as session:
        round_ = session.get(Round, township.round_id)
        round_.status, round_.sample = RoundStatus.DRAFT, "all"

    refused = jiwei.post(f"/supervisor/spot-checks/{township.round_id}/launch")

    assert refused.status_code == 404
    with sessions() as session:
        assert session.get(Round, township.round_id).status is RoundStatus.DRAFT


def test_the_supervisor_sees_a_cadres_change(jiwei, client_for, township) -> None:
    lin = client_for(township.user("cadre"))
    lin.post(f"/my/{township.lin_item}/status", data={"status": "visited", "note": "已上门"})

    listing = jiwei.get(f"/supervisor/rounds/{township.round_id}/followups?status=visited").get_data(as_text=True)

    assert re.findall(r'<tr data-item="(\d+)" data-status="(\w+)"', listing) == [(str(township.lin_item), "visited")]
    assert "已上门" in jiwei.get(f"/supervisor/followups/{township.lin_item}").get_data(as_text=True)


def test_status_filter_is_checked(jiwei, township) -> None:
    assert jiwei.get(f"/supervisor/rounds/{township.round_id}/followups?status=done").status_code == 400
    assert jiwei.get("/supervisor?round=999").status_code == 404
    assert jiwei.get("/supervisor/followups/999999").status_code == 404
