"""The office home page, a round's report page (drawn from the report's column specification), the comparison
chooser and page, the follow-up list."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from campaigns import audit, clock, privacy
from campaigns.followups import sync_followups
from campaigns.models import AuditEntry, Household, NoticeStatus, RoundStatus
from reports import lift, rates
from reports.rates import village_rates
from tests.factories import (
    interview_answers,
    make_interview,
    make_notice,
    make_notice_target,
    make_round,
)
from tests.web.conftest import CSRF_INPUT, CSRF_META


@pytest.fixture
def office(client_for, township):
    return client_for(township.user("office"))


def asked_again(sessions, name: str = "2026年下半年") -> int:
    """A later round that ended, over the same households: every resident content, one who asked for a visit."""
    with sessions.begin() as session:
        later = make_round(session, name=name, status=RoundStatus.COMPLETED, finished_at=clock.now())
        for index, household in enumerate(session.scalars(select(Household).order_by(Household.id))):
            answers = interview_answers("4", concern="1", visit="1") if index == 0 else interview_answers()
            make_interview(session, later, answers, household=household)
        # The factories store answers directly; the interview would have made the item as "visit: yes" came.
        sync_followups(session, later.id)
        return later.id


# --- report -----------------------------------------------------------------------------------------------


def test_the_report_page_shows_the_township_rates_and_a_chart_per_rate(office, township, sessions) -> None:
    html = office.get(f"/rounds/{township.round_id}/report").get_data(as_text=True)

    with sessions() as session:
        report = village_rates(session, township.round_id)
    labels = report.round.rate_labels
    assert len(labels) == 5
    for key, label in labels.items():
        assert '<div class="rate-tile' in html and f'data-rate="{key}"' in html and label in html
        assert re.search(rf'<figure class="chart-figure" data-rate="{key}">\s*<div class="chart"><h3>', html)
    assert html.count("<svg") == len(labels)
    assert html.count('class="target"') == len(labels)  # each chart's target line
    total = report.total.rates["security"]
    assert f"({total.positive}/{total.valid})" in html


def test_the_village_table_is_the_reports_own_columns_coloured_against_targets(office, township, sessions) -> None:
    html = office.get(f"/rounds/{township.round_id}/report").get_data(as_text=True)

    with sessions() as session:
        summary = rates.tables(village_rates(session, township.round_id)).summary
    for column in summary.shown_in("html"):
        assert f">{column.title}</th>" in html, column.key  # a column added to the report shows here too
    assert '<td class="below">' in html  # a village under a target
    assert '<span class="ci">[' in html  # its Wilson interval
    assert "*" in html and "不足以判断" in html  # the too-few-to-judge mark and what it means
    assert "东村" in html and "西村" in html


def test_the_report_page_has_the_ranking_downloads_and_the_comparison_chooser(office, township, sessions) -> None:
    with sessions.begin() as session:
        other = make_round(session, name="2025年下半年", status=RoundStatus.COMPLETED)
        other_id = other.id

    html = office.get(f"/rounds/{township.round_id}/report").get_data(as_text=True)

    assert "排名与问责提示" in html and "不满意排名" in html
    for fmt in ("xlsx", "csv", "html"):
        assert re.search(rf'id="download-{fmt}"[^>]*href="/api/rounds/{township.round_id}/rates\?format={fmt}"', html)
    assert f'<option value="{other_id}">#{other_id} 2025年下半年' in html


def test_a_download_from_the_report_page_is_audited(office, township, sessions) -> None:
    response = office.get(f"/api/rounds/{township.round_id}/rates?format=xlsx")

    assert response.status_code == 200 and response.data[:2] == b"PK"
    with sessions() as session:
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == audit.EXPORT)).all()
        assert entry.detail["format"] == "xlsx"


def test_the_comparison_chooser_leads_to_the_comparison_page(office, township, sessions) -> None:
    later_id = asked_again(sessions)

    chosen = office.get(f"/rounds/{later_id}/compare?with={township.round_id}")

    assert chosen.status_code == 302
    assert chosen.headers["Location"] == f"/rounds/{township.round_id}/compare/{later_id}"  # earlier one first
    page = office.get(chosen.headers["Location"]).get_data(as_text=True)
    assert "两轮对比" in page and "群众安全感率" in page and "全镇" in page
    assert f'href="/api/rounds/{township.round_id}/compare/{later_id}?format=xlsx"' in page
    assert office.get(f"/rounds/{later_id}/compare").status_code == 400
    assert office.get(f"/rounds/{later_id}/compare?with=999").status_code == 404


def test_supervisors_read_the_report_but_not_the_round_controls(client_for, township) -> None:
    supervisor = client_for(township.user("supervisor"))

    report = supervisor.get(f"/rounds/{township.round_id}/report")

    assert report.status_code == 200 and "群众安全感率" in report.get_data(as_text=True)
    assert supervisor.get(f"/rounds/{township.round_id}").status_code == 403
    assert client_for(township.user("cadre")).get(f"/rounds/{township.round_id}/report").status_code == 403


def test_an_unknown_round_has_no_report(office) -> None:
    assert office.get("/rounds/999/report").status_code == 404


# --- follow-ups -------------------------------------------------------------------------------------------


def test_the_follow_up_list_of_a_round_masks_numbers_and_filters(office, township) -> None:
    every = office.get(f"/rounds/{township.round_id}/followups").get_data(as_text=True)
    overdue = office.get(f"/rounds/{township.round_id}/followups?overdue=1").get_data(as_text=True)

    assert "张三" in every and "138****0001" in every and "13811110001" not in every
    assert "王五" not in every  # declined a visit: counted, never named
    assert "张三" in overdue  # asked long ago (the scenario's requests are in the past)
    assert office.get(f"/rounds/{township.round_id}/followups?status=nonsense").status_code == 400


# --- home -------------------------------------------------------------------------------------------------


def test_the_home_page_shows_running_rounds_the_latest_rates_and_follow_ups(office, township, sessions) -> None:
    ended_id = asked_again(sessions)

    html = office.get("/").get_data(as_text=True)

    running = html[html.index('id="running"') : html.index('id="latest"')]
    assert "2026年上半年" in running and f'data-progress-url="/api/rounds/{township.round_id}/progress"' in running
    assert "<progress" in running
    latest = html[html.index('id="latest"') : html.index('id="followups"')]
    assert f'href="/rounds/{ended_id}/report"' in latest
    assert "群众安全感率" in latest and "100%" in latest and "未达标" in latest
    followups = html[html.index('id="followups"') :]
    assert f'href="/rounds/{ended_id}/followups?status=open"' in followups
    assert f'href="/rounds/{township.round_id}/followups?overdue=1"' in followups  # asked long ago
    assert f'href="/rounds/{ended_id}/followups?overdue=1"' not in followups  # asked just now
    # Four residents asked for a visit in the running round, one in the round that ended.
    assert re.search(r"<strong>5</strong> 待办", followups)


def test_the_home_page_of_a_new_office_says_what_is_missing(client_for, people) -> None:
    html = client_for(people.office).get("/").get_data(as_text=True)

    assert "没有进行中的调查" in html and "还没有结束的调查" in html and "没有待办的回访" in html


# --- the lift of a notice ---------------------------------------------------------------------------------


def test_the_lift_page_compares_notified_and_held_out_households_in_charts(client_for, township, sessions) -> None:
    supervisor = client_for(township.user("supervisor"))
    empty = supervisor.get(f"/rounds/{township.round_id}/lift").get_data(as_text=True)
    with sessions.begin() as session:
        notice = make_notice(session, name="平安短信", holdout=0.5, seed=1)
        for index, household in enumerate(session.scalars(select(Household).order_by(Household.id))):
            make_notice_target(session, notice, household, held_out=index % 2 == 1, delivered=index % 2 == 0)
        notice_id = notice.id

    html = supervisor.get(f"/rounds/{township.round_id}/lift").get_data(as_text=True)
    download = supervisor.get(f"/api/rounds/{township.round_id}/lift?notice={notice_id}&format=csv")
    unknown = supervisor.get(f"/rounds/{township.round_id}/lift?notice=999")

    assert "还没有与本轮调查有共同住户的通知" in empty
    assert f'<option value="{notice_id}" selected>#{notice_id} 平安短信' in html  # the only notice, chosen
    with sessions() as session:
        report = lift.notice_lift(session, township.round_id, notice_id)
    assert html.count("<svg") == len(report.measures) and "应答率" in html
    assert html.count('class="itt"') == len(report.measures) * (1 + len(report.villages))
    for column in lift.tables(report)[0].shown_in("html"):
        assert f">{column.title}</th>" in html, column.key
    assert re.search(rf'id="download-csv"[^>]*href="/api/rounds/{township.round_id}/lift\?notice={notice_id}', html)
    assert download.status_code == 200 and "按分配·差值" in download.get_data(as_text=True)
    with sessions() as session:
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == audit.EXPORT)).all()
    assert entry.detail == {"report": "lift", "format": "csv", "notice": notice_id}
    assert unknown.status_code == 404
    assert supervisor.get(f"/api/rounds/{township.round_id}/lift").status_code == 400  # which notice?
    assert 'id="lift-link"' in supervisor.get(f"/rounds/{township.round_id}/report").get_data(as_text=True)


def test_a_retained_notice_is_still_offered_for_the_lift(client_for, township, sessions) -> None:
    supervisor = client_for(township.user("supervisor"))
    with sessions.begin() as session:
        notice = make_notice(
            session, name="平安短信", holdout=0.5, seed=1, status=NoticeStatus.COMPLETED,
            finished_at=datetime.now(UTC) - timedelta(days=400),
        )  # fmt: skip
        for index, household in enumerate(session.scalars(select(Household).order_by(Household.id))):
            make_notice_target(session, notice, household, held_out=index % 2 == 1, delivered=index % 2 == 0)
        notice_id = notice.id
    before = supervisor.get(f"/rounds/{township.round_id}/lift?notice={notice_id}").get_data(as_text=True)
    with sessions.begin() as session:
        assert [n.id for n in privacy.retain_notices(session, timedelta(days=365))] == [notice_id]

    listed = supervisor.get(f"/rounds/{township.round_id}/lift").get_data(as_text=True)
    after = supervisor.get(f"/rounds/{township.round_id}/lift?notice={notice_id}").get_data(as_text=True)

    assert f'<option value="{notice_id}" selected>#{notice_id} 平安短信' in listed
    assert 'class="itt"' in after
    assert _without_csrf(after) == _without_csrf(before)  # the CSRF tokens carry a timestamp; nothing else differs


def _without_csrf(page: str) -> str:
    for token in (CSRF_INPUT, CSRF_META):
        page = token.sub("csrf", page)
    return page
