"""Follow-up items are kept by the interview as it stores the answers that decide them, through real signed
webhooks: an item is on the cadre's list the moment the resident's "visit: yes" is committed, and goes again
if the resident re-chooses before anyone acted on it."""

from __future__ import annotations

import copy

import pytest
from sqlalchemy import select

from campaigns.followups import mark_followup
from campaigns.models import (
    Answer,
    FollowUp,
    FollowUpEvent,
    FollowUpStatus,
    Household,
    ResponseStatus,
    RoundTarget,
)
from campaigns.questionnaire import (
    builtin_questionnaire,
    parse_questionnaire,
    store_version,
)
from reports.followups import cadre_list
from tests.ivr.support import base_params, open_call, post, press, step_of, twiml

Q = builtin_questionnaire()


def items(sessions) -> list[FollowUp]:
    with sessions() as session:
        return list(session.scalars(select(FollowUp)).all())


def answer_keys(doc, settings, keys: list[str]):
    for key in keys:
        doc = press(settings, doc, key)
    return doc


@pytest.fixture
def call(live_server, sessions):
    attempt_id = open_call(sessions)
    return live_server, twiml(post(live_server, f"/ivr/voice?attempt={attempt_id}", base_params()))


def test_an_item_is_listed_as_soon_as_visit_yes_is_stored(call, sessions):
    settings, doc = call
    # consent, screen, security 3 (不太安全), concern 2, awareness, participation, satisfaction 4, cadre contact
    doc = answer_keys(doc, settings, ["1", "1", "3", "2", "1", "1", "4", "1"])
    assert step_of(doc) == "visit"
    assert items(sessions) == []  # completed and dissatisfied, but no visit asked for yet

    delivery = press(settings, doc, "1")

    assert step_of(delivery) == "delivery"  # the call goes on to the delivery check
    [item] = items(sessions)  # committed before the reply
    with sessions() as session:
        visit = session.scalar(select(Answer).where(Answer.question == "visit"))
        cadre_id = session.scalar(select(Household.cadre_id))
        events = session.execute(select(FollowUpEvent.status, FollowUpEvent.actor)).all()
        listed = cadre_list(session, cadre_id).to_json()["items"]
    assert (item.response_id, item.negatives, item.concern, item.status) == (
        visit.response_id, ["security", "satisfaction"], "2", FollowUpStatus.PENDING)  # fmt: skip
    assert (item.cadre_id, item.created_at) == (cadre_id, visit.updated_at)
    assert events == [(FollowUpStatus.PENDING, "sanlv")]
    assert [entry["id"] for entry in listed] == [item.id]
    assert press(settings, delivery, "1").xpath("/Response/Hangup")
    assert [entry.id for entry in items(sessions)] == [item.id]


def test_no_item_for_visit_no_or_a_content_resident(live_server, sessions):
    declined = open_call(sessions, phone="+8613800000011", sid="CA" + "1" * 32)
    content = open_call(sessions, phone="+8613800000012", sid="CA" + "2" * 32)
    for attempt_id, sid, keys in ((declined, "CA" + "1" * 32, ["1", "1", "4", "1", "1", "1", "1", "1", "2", "1"]),
                                  (content, "CA" + "2" * 32, ["1", "1", "1", "1", "1", "1", "1", "1"])):  # fmt: skip
        doc = twiml(post(live_server, f"/ivr/voice?attempt={attempt_id}", base_params(CallSid=sid)))
        for key in keys:
            doc = press(live_server, doc, key, CallSid=sid)
        assert doc.xpath("/Response/Hangup")

    assert items(sessions) == []
    with sessions() as session:
        assert set(session.scalars(select(RoundTarget.response_status))) == {ResponseStatus.COMPLETED}


@pytest.fixture
def visit_read_back(live_server, sessions):
    """A questionnaire whose visit question is read back, so that a resident can re-choose it: here visit
    feeds a rate (participation's), the only way a question is read back."""
    content = copy.deepcopy(dict(Q.content))
    content["readback"] = True
    for step in content["steps"]:
        if step["key"] == "participation":
            for field in ("rate", "positive", "unsure"):
                step.pop(field, None)
        if step["key"] == "visit":
            step.pop("ask_if")
            step["rate"], step["positive"] = "participation", ["1"]
    with sessions.begin() as session:
        version_id = store_version(session, parse_questionnaire(content)).id
    attempt_id = open_call(sessions, questionnaire_id=version_id)
    return live_server, twiml(post(live_server, f"/ivr/voice?attempt={attempt_id}", base_params()))


# consent, screen, security 4 + confirm, concern 1, awareness + confirm, participation, satisfaction + confirm,
# cadre contact + confirm
BEFORE_VISIT = ["1", "1", "4", "1", "1", "1", "1", "1", "1", "1", "1", "1"]


def test_an_item_goes_when_visit_is_re_chosen_before_anyone_acted(visit_read_back, sessions):
    settings, doc = visit_read_back
    doc = answer_keys(doc, settings, BEFORE_VISIT)
    assert step_of(doc) == "visit"

    confirm = press(settings, doc, "1")
    assert step_of(confirm) == "visit.confirm"
    [item] = items(sessions)  # "visit: yes" is kept as soon as it is pressed, and the item with it
    assert item.negatives == ["security"]

    again = press(settings, confirm, "2")  # re-choose
    assert step_of(again) == "visit"
    confirm = press(settings, again, "2")  # no visit after all

    assert step_of(confirm) == "visit.confirm"
    assert items(sessions) == []
    with sessions() as session:
        assert session.scalars(select(FollowUpEvent)).all() == []  # withdrawn with its history
    assert step_of(press(settings, confirm, "1")) == "delivery"


def test_an_item_acted_on_stays_when_visit_is_re_chosen(visit_read_back, sessions):
    settings, doc = visit_read_back
    confirm = press(settings, answer_keys(doc, settings, BEFORE_VISIT), "1")
    [item] = items(sessions)
    with sessions.begin() as session:
        mark_followup(session, item.id, "visited", "已上门", actor="林建明")

    answer_keys(confirm, settings, ["2", "2", "1"])

    [kept] = items(sessions)
    assert (kept.id, kept.status) == (item.id, FollowUpStatus.VISITED)  # the cadre already went: it stays
