"""The notices page: create through the form (segments shown before launch, errors beside their field), the
status page, launch and cancel through its buttons, the audit entries."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from campaigns.models import AuditEntry, Notice, NoticeStatus, NoticeTarget
from tests.web.conftest import sign_in

FORM = {"name": "冬季防火", "channel": "sms", "text": "冬季天干物燥，请注意用火安全。", "sample": "all",
        "holdout": "0.5", "seed": "3", "windows": "00:00-24:00", "cps": "2", "ends_at": ""}  # fmt: skip


@pytest.fixture
def office(app, township):
    client = app.test_client()
    assert sign_in(client, "office1").status_code == 302
    return client


def test_create_shows_the_segments_then_launch_and_cancel(office, sessions) -> None:
    created = office.post("/notices", data=FORM)
    assert created.status_code == 302
    notice_id = int(re.search(r"/notices/(\d+)$", created.headers["Location"]).group(1))

    page = office.get(f"/notices/{notice_id}").get_data(as_text=True)
    assert "冬季天干物燥，请注意用火安全。回复TD退订" in page
    assert "每户 1 条（21 字）" in page
    with sessions() as session:
        targets = session.scalars(select(NoticeTarget).where(NoticeTarget.notice_id == notice_id)).all()
        assert targets and sum(t.held_out for t in targets) * 2 == pytest.approx(len(targets), abs=2)

    assert office.post(f"/notices/{notice_id}/launch").status_code == 302
    with sessions() as session:
        assert session.get(Notice, notice_id).status == NoticeStatus.RUNNING
    assert office.post(f"/notices/{notice_id}/cancel").status_code == 302
    refused = office.post(f"/notices/{notice_id}/launch", follow_redirects=True).get_data(as_text=True)
    assert "cannot launch: it is cancelled" in refused
    with sessions() as session:
        assert session.get(Notice, notice_id).status == NoticeStatus.CANCELLED
        actions = session.scalars(select(AuditEntry.action).where(AuditEntry.object_type == "notice")).all()
    assert actions == ["notice.create", "notice.launch", "notice.cancel"]
    assert f"/notices/{notice_id}" in office.get("/notices").get_data(as_text=True)


def test_a_long_text_shows_its_segment_count_and_bad_fields_their_error(office, sessions) -> None:
    long_text = "平安" * 40  # 80 characters + the opt-out line: two segments
    refused = office.post("/notices", data={**FORM, "text": long_text, "holdout": "1.5"})
    assert refused.status_code == 400
    html = refused.get_data(as_text=True)
    assert "--holdout: 1.5 must be at least 0 and below 1" in html
    assert "共 86 字，按 2 条短信计费" in html
    with sessions() as session:
        assert session.scalar(select(Notice.id)) is None
