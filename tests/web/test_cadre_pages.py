"""A cadre's phone pages: their own list (pending first, overdue marked, tap to call), marking a visit with a
note, the history; another cadre's item does not exist for them; every view and change is audited."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select, update

from campaigns import audit, clock
from campaigns.models import AuditEntry, FollowUp, FollowUpEvent, FollowUpStatus


@pytest.fixture
def lin(client_for, township):
    return client_for(township.user("cadre"))


def item_order(html: str) -> list[tuple[int, str]]:
    return [
        (int(i), s) for i, s in re.findall(r'<li class="followup[^"]*" data-item="(\d+)" data-status="(\w+)"', html)
    ]


def test_the_list_holds_only_their_own_items_with_call_links(lin, township, sessions) -> None:
    with sessions() as session:
        own = set(session.scalars(select(FollowUp.id).where(FollowUp.cadre_id == township.lin_id)))
    page = lin.get("/my")
    html = page.get_data(as_text=True)

    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert 'href="tel:13811110001"' in html and 'href="tel:13811110002"' in html
    assert "13811110005" not in html and "13811110007" not in html  # 陈志强's residents
    assert {item for item, _ in item_order(html)} == own and len(own) == 2
    assert "重视率" not in html  # a figure about the cadre is never shown to them


def test_pending_comes_first_and_overdue_is_marked(lin, township, sessions) -> None:
    with sessions.begin() as session:
        # The other item of lin's list was asked for just now: pending, not overdue.
        other = session.scalar(
            select(FollowUp.id).where(FollowUp.cadre_id == township.lin_id, FollowUp.id != township.lin_item)
        )
        session.execute(update(FollowUp).where(FollowUp.id == other).values(created_at=clock.now()))
    before = item_order(lin.get("/my").get_data(as_text=True))
    assert before[0][0] == township.lin_item  # both pending: the overdue one on top

    lin.post(f"/my/{township.lin_item}/status", data={"status": "visited"})
    html = lin.get("/my").get_data(as_text=True)

    assert item_order(html) == [(other, "pending"), (township.lin_item, "visited")]
    cards = html.split('<li class="followup')
    overdue_card = next(c for c in cards if f'data-item="{township.lin_item}"' in c)
    fresh_card = next(c for c in cards if f'data-item="{other}"' in c)
    assert "badge overdue" not in overdue_card  # visited: no longer overdue
    assert "badge overdue" not in fresh_card
    assert "逾期 0" in html


def test_an_overdue_pending_item_carries_the_mark(lin, township) -> None:
    html = lin.get("/my").get_data(as_text=True)
    card = next(c for c in html.split('<li class="followup') if f'data-item="{township.lin_item}"' in c)

    assert card.startswith(" overdue") and "badge overdue" in card  # asked in March, 7 days allowed


def test_marking_visited_with_a_note_records_it_as_the_signed_in_cadre(lin, township, sessions) -> None:
    done = lin.post(f"/my/{township.lin_item}/status", data={"status": "visited", "note": "已上门，转派出所"})

    assert done.status_code == 302 and done.headers["Location"] == "/my"
    with sessions() as session:
        item = session.get(FollowUp, township.lin_item)
        event = session.scalars(
            select(FollowUpEvent).where(FollowUpEvent.follow_up_id == item.id).order_by(FollowUpEvent.id)
        ).all()[-1]
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == audit.FOLLOWUP_MARK)).one()
    assert item.status is FollowUpStatus.VISITED and item.note == "已上门，转派出所"
    assert (event.actor, event.note) == ("lin", "已上门，转派出所")
    assert (entry.username, entry.object_id, entry.detail["status"]) == ("lin", str(township.lin_item), "visited")
    history = lin.get(f"/my/{township.lin_item}").get_data(as_text=True)
    assert "已上门，转派出所" in history and 'value="resolved"' in history and 'value="visited"' not in history


def test_a_change_the_status_does_not_allow_is_refused_with_a_reason(lin, township, sessions) -> None:
    refused = lin.post(f"/my/{township.lin_item}/status", data={"status": "resolved"})

    assert refused.status_code == 409
    assert "只能改为" in refused.get_data(as_text=True)
    with sessions() as session:
        assert session.get(FollowUp, township.lin_item).status is FollowUpStatus.PENDING


def test_no_outcome_chosen_is_a_message_beside_the_buttons(lin, township) -> None:
    page = lin.post(f"/my/{township.lin_item}/status", data={"note": "没选"})

    assert page.status_code == 400 and "请选择走访结果" in page.get_data(as_text=True)
    assert "没选" in page.get_data(as_text=True)  # the note typed is kept


def test_another_cadres_item_does_not_exist_for_them(lin, township, sessions) -> None:
    for response in (
        lin.get(f"/my/{township.chen_item}"),
        lin.post(f"/my/{township.chen_item}/status", data={"status": "visited"}),
        lin.get("/my/999999"),
    ):
        assert response.status_code == 404
        assert "13811110005" not in response.get_data(as_text=True)
    with sessions() as session:
        assert session.get(FollowUp, township.chen_item).status is FollowUpStatus.PENDING


def test_a_post_without_the_csrf_token_is_refused(lin, township, sessions) -> None:
    lin.environ_base.pop("HTTP_X_CSRFTOKEN")

    refused = lin.post(f"/my/{township.lin_item}/status", data={"status": "visited"})

    assert refused.status_code == 400
    with sessions() as session:
        assert session.get(FollowUp, township.lin_item).status is FollowUpStatus.PENDING


def test_the_item_page_posts_its_csrf_token_and_offers_the_allowed_outcomes(lin, township) -> None:
    html = lin.get(f"/my/{township.lin_item}").get_data(as_text=True)

    assert 'name="csrf_token"' in html
    assert re.findall(r'name="status" value="(\w+)"', html) == ["visited", "unreachable"]
    assert 'href="tel:13811110001"' in html


def test_every_view_of_the_full_numbers_is_audited(lin, township, sessions) -> None:
    lin.get("/my")
    lin.get(f"/my/{township.lin_item}")

    with sessions() as session:
        views = session.scalars(select(AuditEntry).where(AuditEntry.action == audit.PHONES_VIEW)).all()
    assert [(v.username, v.object_type) for v in views] == [("lin", "cadre"), ("lin", "followup")]


def test_nothing_else_is_in_reach(lin) -> None:
    html = lin.get("/my").get_data(as_text=True)
    links = set(re.findall(r'href="(/[^"]*)"', html))

    assert all(link.startswith(("/my", "/static/")) or "lang=" in link for link in links), links
    for path in ("/", "/supervisor", "/rounds", "/roster", "/admin/users"):
        response = lin.get(path)
        assert response.status_code in (302, 403), path
        if response.status_code == 302:
            assert response.headers["Location"] == "/my"
