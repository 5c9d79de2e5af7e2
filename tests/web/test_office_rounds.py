"""Rounds on the office pages: the create form (every CLI option, errors beside their field), launch, pause,
resume and cancel through the forms (audited, then announced to the dialler), the progress page and its JSON."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from campaigns import audit, clock
from campaigns.models import (
    AuditEntry,
    CallAttempt,
    CallDirection,
    CallStatus,
    InboundMode,
    Notice,
    NoticeStatus,
    NoticeTarget,
    Round,
    RoundStatus,
    RoundTarget,
    TargetState,
)
from campaigns.questionnaire import from_version
from campaigns.settings import Settings
from tests.web.conftest import sign_in
from workers.queues import DIALER_QUEUE, queue

FORM = {
    "name": "2026年下半年",
    "questionnaire": "default",
    "sample_kind": "all",
    "sample_n": "",
    "seed": "",
    "windows": "09:00-11:30,14:30-20:30",
    "blocked": "",
    "max_attempts": "3",
    "cps": "1",
    "max_concurrent": "10",
    "starts_at": "",
    "ends_at": "",
    "retry_busy": "30m",
    "retry_no-answer": "2h",
    "retry_failed": "4h",
    "retry_machine": "2h",
    "retry_dropped": "1h",
}


@pytest.fixture
def office(app, township):
    client = app.test_client()
    assert sign_in(client, "office1").status_code == 302
    return client


def create(client, **changes):
    return client.post("/rounds", data={**FORM, **changes})


def created_id(response) -> int:
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(re.fullmatch(r"/rounds/(\d+)", response.headers["Location"]).group(1))


def entries(sessions, action: str) -> list[AuditEntry]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


# --- create -----------------------------------------------------------------------------------------------


def test_the_form_offers_every_option_with_the_defaults(office) -> None:
    html = office.get("/rounds/new").get_data(as_text=True)

    assert 'id="round-create"' in html
    for name in ("name", "questionnaire", "sample_kind", "sample_n", "seed", "windows", "blocked", "max_attempts",
                 "cps", "max_concurrent", "starts_at", "ends_at", "retry_busy", "retry_no-answer", "retry_failed",
                 "retry_machine", "retry_dropped", "target_security", "target_cadre_contact", "exclude_unsure",
                 "machine_detection", "no_delivery_check", "inbound_answer"):  # fmt: skip
        assert f'name="{name}"' in html, name
    assert 'value="09:00-11:30,14:30-20:30"' in html and 'value="30m"' in html
    assert 'placeholder="100"' in html  # the security target the questionnaire sets


def test_a_round_is_created_with_every_option(office, sessions) -> None:
    response = create(
        office,
        name="抽查",
        sample_kind="cadre",
        sample_n="1",
        seed="7",
        windows="08:00-12:00",
        blocked="2030-10-01..2030-10-03",
        max_attempts="5",
        cps="0.5",
        max_concurrent="4",
        starts_at="2030-05-01T09:00",
        ends_at="2030-05-31T20:30",
        retry_busy="10m",
        target_security="90",
        target_participation="80%",
        exclude_unsure="1",
        machine_detection="1",
        inbound_answer="1",
    )

    round_id = created_id(response)
    with sessions() as session:
        round_ = session.get(Round, round_id)
        assert (round_.name, round_.status, round_.sample, round_.seed) == ("抽查", RoundStatus.DRAFT, "cadre:1", 7)
        assert round_.windows == [["08:00", "12:00"]]
        assert round_.blocked_dates == ["2030-10-01", "2030-10-02", "2030-10-03"]
        assert (round_.max_attempts, round_.cps, round_.max_concurrent) == (5, 0.5, 4)
        assert round_.retry["busy"] == 600 and round_.retry["no-answer"] == 7200
        assert round_.rate_targets == {"security": 0.9, "participation": 0.8}
        assert round_.exclude_unsure and round_.machine_detection
        assert round_.inbound is InboundMode.ANSWER
        assert round_.starts_at.isoformat().startswith("2030-05-01T01:00")  # 09:00 in Shanghai
        targets = session.scalars(select(RoundTarget).where(RoundTarget.round_id == round_id)).all()
        assert len(targets) == 2  # one per cadre
    [entry] = entries(sessions, audit.ROUND_CREATE)
    assert entry.username == "office1" and entry.object_id == str(round_id)
    assert entry.detail["sample"] == "cadre:1"


def test_a_round_may_leave_out_the_delivery_check(office, sessions) -> None:
    asked = created_id(create(office, name="问送达"))
    left_out = created_id(create(office, name="不问送达", no_delivery_check="1"))

    with sessions() as session:
        steps = {
            round_id: [step.key for step in from_version(session.get(Round, round_id).questionnaire).steps]
            for round_id in (asked, left_out)
        }
    assert steps[asked][-1] == "delivery" and "delivery" not in steps[left_out]
    assert "本轮不询问" in office.get(f"/rounds/{left_out}").get_data(as_text=True)
    assert "本轮不询问" not in office.get(f"/rounds/{asked}").get_data(as_text=True)


def test_by_default_a_round_calls_inbound_callers_back(office, sessions) -> None:
    round_id = created_id(create(office, name="默认"))

    with sessions() as session:
        assert session.get(Round, round_id).inbound is InboundMode.CALL_BACK
    assert "回拨后作答" in office.get(f"/rounds/{round_id}").get_data(as_text=True)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"name": " "}, "name", "--name"),
        ({"windows": "09:00-25:00"}, "windows", "--window"),
        ({"windows": ""}, "windows", "no window given"),
        ({"blocked": "2030-13-01"}, "blocked", "--blocked"),
        ({"max_attempts": "0"}, "max_attempts", "at least 1"),
        ({"max_attempts": "three"}, "max_attempts", "请填写整数"),
        ({"cps": "500"}, "cps", "--cps"),
        ({"cps": "fast"}, "cps", "请填写数字"),
        ({"max_concurrent": "0"}, "max_concurrent", "--max-concurrent"),
        ({"retry_busy": "soon"}, "retry", "--retry"),
        ({"sample_kind": "village", "sample_n": ""}, "sample", "户数"),
        ({"sample_kind": "village", "sample_n": "0"}, "sample", "--sample"),
        ({"seed": "x"}, "seed", "请填写整数"),
        ({"starts_at": "tomorrow"}, "starts_at", "--starts-at"),
        ({"starts_at": "2030-05-02T09:00", "ends_at": "2030-05-01T09:00"}, "ends_at", "--ends-at"),
        ({"target_security": "150"}, "targets", "--target"),
        ({"questionnaire": "no-such"}, "questionnaire", "--questionnaire"),
    ],
)
def test_a_bad_option_is_shown_beside_its_field(office, sessions, changes, field, words) -> None:
    before = len(entries(sessions, audit.ROUND_CREATE))

    response = create(office, **changes)

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    errors = dict(re.findall(r'<p class="field-error" id="([\w-]+)-error">([^<]*)</p>', html))
    assert list(errors) == [field], errors
    assert words in errors[field]
    assert f'aria-describedby="{field}-error"' in html
    assert len(entries(sessions, audit.ROUND_CREATE)) == before
    for name, value in {**FORM, **changes}.items():  # what was typed is kept
        if value.strip() and name not in ("sample_kind", "questionnaire"):
            assert f'value="{value}"' in html, name


def test_a_word_where_a_number_goes_and_a_bad_window_are_shown_together(office) -> None:
    response = create(office, max_attempts="zero", windows="09:00-25:00")

    errors = dict(
        re.findall(r'<p class="field-error" id="([\w-]+)-error">([^<]*)</p>', response.get_data(as_text=True))
    )
    assert response.status_code == 400
    assert set(errors) == {"max_attempts", "windows"} and "25:00" in errors["windows"]


def test_a_round_without_a_roster_is_refused_at_the_top(app, people) -> None:
    client = app.test_client()
    sign_in(client, "office1")

    response = create(client)

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert re.search(r'id="form-error">[^<]*no callable households', html)


def test_the_form_refuses_a_post_without_the_csrf_token(app, office, sessions) -> None:
    del office.environ_base["HTTP_X_CSRFTOKEN"]

    response = create(office)

    assert response.status_code == 400 and entries(sessions, audit.ROUND_CREATE) == []


# --- lifecycle --------------------------------------------------------------------------------------------


def dialler_jobs(settings: Settings) -> list[str]:
    q = queue(settings, DIALER_QUEUE)
    return [*q.job_ids, *q.scheduled_job_registry.get_job_ids()]


def test_launch_pause_resume_cancel_through_the_forms(app, office, sessions) -> None:
    settings = app.extensions["sanlv"].settings
    round_id = created_id(create(office))
    page = office.get(f"/rounds/{round_id}").get_data(as_text=True)
    assert 'id="round-launch"' in page and 'id="round-pause"' not in page
    assert re.search(r'id="round-status" data-status="draft"', page)

    launched = office.post(f"/rounds/{round_id}/launch")
    assert launched.status_code == 302
    running = office.get(f"/rounds/{round_id}").get_data(as_text=True)
    assert 'data-status="running"' in running and 'id="round-pause"' in running and 'id="round-launch"' not in running
    assert any(f"dispatch-{round_id}-" in job for job in dialler_jobs(settings))  # the dialler heard of it

    office.post(f"/rounds/{round_id}/pause")
    assert 'id="round-resume"' in office.get(f"/rounds/{round_id}").get_data(as_text=True)
    office.post(f"/rounds/{round_id}/resume")
    asked = office.post(f"/rounds/{round_id}/cancel")  # no JavaScript: the question comes as a page
    with sessions() as session:
        assert session.get(Round, round_id).status is RoundStatus.RUNNING
    assert asked.status_code == 200 and 'id="round-cancel-confirm"' in asked.get_data(as_text=True)
    cancelled = office.post(f"/rounds/{round_id}/cancel", data={"confirmed": "yes"})

    assert cancelled.status_code == 302
    with sessions() as session:
        round_ = session.get(Round, round_id)
        assert round_.status is RoundStatus.CANCELLED
        states = set(session.scalars(select(RoundTarget.state).where(RoundTarget.round_id == round_id)))
        assert states == {TargetState.CANCELLED}
    for action in (audit.ROUND_LAUNCH, audit.ROUND_PAUSE, audit.ROUND_RESUME, audit.ROUND_CANCEL):
        [entry] = entries(sessions, action)
        assert entry.username == "office1" and entry.object_id == str(round_id), action
    final = office.get(f"/rounds/{round_id}").get_data(as_text=True)
    assert 'data-status="cancelled"' in final and not re.search(r'id="round-(launch|pause|resume|cancel)"', final)
    assert "data-progress-url" not in final  # nothing left to watch


def test_a_pre_survey_sms_is_created_with_the_round_and_follows_its_launch_and_cancel(app, office, sessions) -> None:
    settings = app.extensions["sanlv"].settings
    text = "镇综治办将来电了解平安建设情况，请您接听。"
    page = office.get("/rounds/new").get_data(as_text=True)
    assert 'name="notify"' in page and 'name="notify_holdout"' in page and 'name="notify_seed"' in page

    response = create(office, name="带短信", notify=text, notify_holdout="0.5", notify_seed="3")

    round_id = created_id(response)
    assert "调查前短信已创建" in office.get(f"/rounds/{round_id}").get_data(as_text=True)
    with sessions() as session:
        [notice] = session.scalars(select(Notice).where(Notice.round_id == round_id)).all()
        assert (notice.status, notice.holdout, notice.seed) == (NoticeStatus.DRAFT, 0.5, 3)
        assert text in notice.text and notice.text.endswith("回复TD退订")
        targets = session.scalar(select(func.count()).where(RoundTarget.round_id == round_id))
        assert session.scalar(select(func.count()).where(NoticeTarget.notice_id == notice.id)) == targets
        assert 0 < session.scalar(select(func.count()).where(NoticeTarget.notice_id == notice.id, NoticeTarget.held_out))
        notice_id = notice.id
    [entry] = entries(sessions, "notice.create")
    assert entry.username == "office1" and entry.detail == {"round": round_id, "holdout": 0.5}

    office.post(f"/rounds/{round_id}/launch")
    with sessions() as session:
        assert session.get(Notice, notice_id).status is NoticeStatus.RUNNING
    assert any(f"notice-dispatch-{notice_id}-" in job for job in dialler_jobs(settings))  # its sender heard of it
    office.post(f"/rounds/{round_id}/cancel", data={"confirmed": "yes"})
    with sessions() as session:
        assert session.get(Notice, notice_id).status is NoticeStatus.CANCELLED


@pytest.mark.parametrize(
    "changes", [{"notify_holdout": "0.2"}, {"notify_holdout": "1.5", "notify_seed": "1"}, {"notify_seed": "x"}]
)
def test_a_bad_pre_survey_sms_is_shown_beside_it_and_creates_nothing(office, sessions, changes) -> None:
    response = create(office, name="错误短信", notify="请接听来电。", **changes)

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert re.search(r'id="f-notify"[^>]*aria-invalid="true"', html) and 'id="notify-error"' in html
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Round.name == "错误短信")) == 0
        assert session.scalar(select(func.count()).select_from(Notice)) == 0


def test_the_spot_check_form_offers_no_pre_survey_sms(client_for, township) -> None:
    supervisor = client_for(township.user("supervisor"))
    page = supervisor.get("/supervisor/spot-checks/new").get_data(as_text=True)
    assert 'name="sample_kind"' in page and 'name="notify"' not in page


def test_the_cancel_button_carries_its_question_for_javascript(office, township) -> None:
    html = office.get(f"/rounds/{township.round_id}").get_data(as_text=True)

    form = re.search(r'<form method="post" action="/rounds/\d+/cancel"[^>]*>.*?</form>', html, re.DOTALL).group(0)
    assert "data-confirm=" in form and 'name="confirmed" value=""' in form and 'id="round-cancel"' in form


def test_an_impossible_transition_says_why_and_changes_nothing(office, township, sessions) -> None:
    response = office.post(f"/rounds/{township.round_id}/launch")  # it is running already

    assert response.status_code == 302
    assert "already running" in office.get(f"/rounds/{township.round_id}").get_data(as_text=True)
    assert entries(sessions, audit.ROUND_LAUNCH) == []


def test_an_unknown_round_is_a_404(office) -> None:
    assert office.get("/rounds/999").status_code == 404
    assert office.post("/rounds/999/pause").status_code == 404
    assert office.get("/api/rounds/999/progress").status_code == 404


def test_a_lifecycle_post_without_the_csrf_token_is_refused(office, township, sessions) -> None:
    del office.environ_base["HTTP_X_CSRFTOKEN"]

    assert office.post(f"/rounds/{township.round_id}/pause").status_code == 400
    with sessions() as session:
        assert session.get(Round, township.round_id).status is RoundStatus.RUNNING


# --- progress ---------------------------------------------------------------------------------------------


@pytest.fixture
def calls(township, sessions):
    """Two calls of the running round: one answered a minute ago, one ringing now."""
    now = clock.now()
    with sessions.begin() as session:
        first, second = session.scalars(
            select(RoundTarget).where(RoundTarget.round_id == township.round_id).order_by(RoundTarget.id).limit(2)
        ).all()
        second.state = TargetState.DIALING
        for number, (target, status, placed) in enumerate(
            [(first, CallStatus.COMPLETED, now - timedelta(seconds=50)), (second, CallStatus.RINGING, now)], 1
        ):
            session.add(
                CallAttempt(round_id=township.round_id, target_id=target.id, number=number, status=status,
                            direction=CallDirection.OUTBOUND, call_sid=f"CA{number:032d}", placed_at=placed,
                            duration_seconds=75 if status is CallStatus.COMPLETED else None)
            )  # fmt: skip
        return [first.phone, second.phone]


def test_the_progress_json_has_the_status_contract_and_recent_calls(office, township, calls) -> None:
    response = office.get(f"/api/rounds/{township.round_id}/progress")

    data = response.get_json()
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert {"id", "name", "status", "targets", "attempts", "live_calls", "dial_rate", "eta_seconds"} <= set(data)
    assert data["status"] == "running" and data["attempts"] == 2 and data["live_calls"] == 1
    assert data["targets"]["dialing"] == 1 and data["total"] == sum(data["targets"].values())
    assert data["dial_rate"] > 0
    assert [call["status"] for call in data["recent_calls"]] == ["ringing", "completed"]
    assert [call["phone"] for call in data["recent_calls"]] == ["138****0002", "138****0001"]
    assert "1381111000" not in response.get_data(as_text=True)
    assert data["display"]["status"] == "进行中" and data["display"]["recent_calls"][0]["status"] == "振铃中"


def test_the_progress_page_shows_states_rate_eta_and_masked_calls(office, township, calls) -> None:
    html = office.get(f"/rounds/{township.round_id}").get_data(as_text=True)

    assert re.search(r'id="round-status" data-status="running"', html)
    assert f'data-progress-url="/api/rounds/{township.round_id}/progress"' in html
    assert '<noscript><meta http-equiv="refresh"' in html  # without JavaScript the page refreshes itself
    assert 'data-field="target-dialing">1<' in html and "拨号速度" in html and "预计剩余" in html
    assert "138****0002" in html and "13811110002" not in html
    assert "振铃中" in html and "已接通" in html


def test_the_progress_json_is_for_office_staff_only(client_for, township) -> None:
    anonymous = client_for(None).get(f"/api/rounds/{township.round_id}/progress")
    supervisor = client_for(township.user("supervisor")).get(f"/api/rounds/{township.round_id}/progress")

    assert anonymous.status_code == 401 and supervisor.status_code == 403


def test_the_rounds_list_filters_by_status(office, township) -> None:
    running = office.get("/rounds?status=running").get_data(as_text=True)
    drafts = office.get("/rounds?status=draft").get_data(as_text=True)

    assert "2026年上半年" in running and "2026年上半年" not in drafts
