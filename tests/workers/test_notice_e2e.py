"""Notices end to end: real ``sanlv worker`` processes, the real Flask app over HTTP, the real ``twilio`` client
against the Twilio stand-in (Messages and Calls), real Redis and the real database.

SMS: every household not held out gets exactly one message, even when the stand-in answers 429s and ambiguous
5xx (the message created anyway) and sends its status callbacks twice and out of order; the stored status is
the latest one. A TD reply opts the number out. Voice: the call plays the notice, ``*`` plays it again, ``9``
opts out, and heard-to-end is recorded only for those who listened to the end.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from xml.etree import ElementTree

import pytest
import requests
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from campaigns.db import session_scope
from campaigns.models import (
    DoNotCall,
    NoticeChannel,
    NoticeTarget,
    NoticeTargetState,
    SmsOptOut,
)
from campaigns.notices import NoticeOptions, change_notice, create_notice, notice_status_report
from tests.factories import make_household, make_village
from tests.support.twilio_standin import FROM_NUMBER
from tests.workers.test_campaign_rounds import Campaign, campaign  # noqa: F401 - the deployment fixture
from workers.messaging import after_notice_change

pytestmark = pytest.mark.usefixtures("campaign")


def seed_households(c: Campaign, per_village: int, villages: int = 3) -> list[str]:
    phones = []
    with session_scope(c.sessions) as session:
        for v in range(villages):
            village = make_village(session, name=f"村{v}")
            for i in range(per_village):
                phone = f"+86138{v:02d}{i:06d}"
                make_household(session, village, phone=phone)
                phones.append(phone)
    return phones


def start_notice(c: Campaign, **options) -> int:
    values = {"name": "宣传", "windows": [["00:00", "24:00"]], "cps": 10} | options
    with session_scope(c.sessions) as session:
        notice_id = create_notice(session, NoticeOptions(**values)).id
        change_notice(session, notice_id, "launch")
    after_notice_change(c.settings, notice_id, "launch")
    return notice_id


def notice_status(c: Campaign, notice_id: int) -> dict:
    with c.sessions() as session:
        return notice_status_report(session, notice_id)


def targets(c: Campaign, notice_id: int) -> list[NoticeTarget]:
    with c.sessions() as session:
        return list(session.scalars(select(NoticeTarget).where(NoticeTarget.notice_id == notice_id)))


def chaotic_callbacks(seed: int):
    """Twilio's callbacks for a delivered message, each sent twice, in a shuffled order."""
    rng = random.Random(seed)

    def script(_message: dict) -> list[str]:
        statuses = ["queued", "sent", "delivered"] * 2
        rng.shuffle(statuses)
        return statuses

    return script


def test_sms_notice_sends_each_household_once_through_429s_5xx_and_chaotic_callbacks(campaign):  # noqa: F811
    c: Campaign = campaign
    phones = seed_households(c, per_village=10)
    c.standin.message_callbacks = chaotic_callbacks(seed=3)
    c.standin.fail_next_message(429, times=3)  # refused: nothing created, retried with backoff
    c.standin.fail_next_message(500, create_anyway=True)  # ambiguous: created, then looked up and adopted
    c.standin.fail_next_message(503, create_anyway=False)  # ambiguous: not created, looked up, sent again
    c.start_workers(2)
    c.wait_for_workers(2)

    notice_id = start_notice(c, channel=NoticeChannel.SMS, text="请提高防范电信诈骗意识。", holdout=0.2, seed=7)
    c.wait_for("the notice to complete", lambda: notice_status(c, notice_id)["status"] == "completed", timeout=120)
    c.wait_for(
        "every callback",
        lambda: len(c.standin.callback_results) >= 6 * c.standin.messages_created,
        timeout=60,
    )

    rows = targets(c, notice_id)
    sent_to = Counter(m["to"] for m in c.standin.messages)
    held = {t.phone for t in rows if t.held_out}
    assert len(held) == 6  # 20% of 10 in each of 3 villages
    assert not held & set(sent_to)  # the hold-out got nothing
    assert set(sent_to) == set(phones) - held
    assert max(sent_to.values()) == 1  # nobody texted twice, whatever was refused, ambiguous or retried
    assert all(
        m["body"] == "请提高防范电信诈骗意识。回复TD退订" and m["from"] == FROM_NUMBER for m in c.standin.messages
    )
    assert {t.message_sid for t in rows if not t.held_out} == {m["sid"] for m in c.standin.messages}
    # Callbacks came twice and shuffled; what is stored is the latest status (delivered), never an older one.
    assert {t.provider_status for t in rows if not t.held_out} == {"delivered"}
    assert all(t.delivered and t.state == NoticeTargetState.SENT for t in rows if not t.held_out)
    assert {status for _sid, _s, status in c.standin.callback_results} == {204}
    assert c.standin.max_messages_in_window(1.0) <= 10  # the notice's rate, across both workers
    creates = [r for r in c.standin.recorded if r.method == "POST" and r.path.endswith("/Messages.json")]
    assert len(creates) == c.standin.messages_created + 4  # the three 429s and the 503 created nothing
    assert sum(t.ambiguous for t in rows) == 2  # the 500 (adopted) and the 503 (looked up, then sent)


def test_a_td_reply_opts_out_and_later_sms_notices_skip_the_number(campaign):  # noqa: F811
    c: Campaign = campaign
    phones = seed_households(c, per_village=3, villages=1)
    inbound = f"{c.settings.public_base_url}/ivr/sms/inbound"

    assert c.standin.send_inbound_sms(inbound, phones[0], "TD") == 200
    assert c.standin.send_inbound_sms(inbound, phones[1], "谢谢") == 200
    # Unsigned: refused.
    assert requests.post(inbound, data={"From": phones[2], "Body": "TD"}, timeout=10).status_code == 403

    with c.sessions() as session:
        assert session.scalars(select(SmsOptOut.phone)).all() == [phones[0]]
    c.start_workers(1)
    c.wait_for_workers(1)
    notice_id = start_notice(c, channel=NoticeChannel.SMS, text="冬季防火提示。")
    c.wait_for("the notice to complete", lambda: notice_status(c, notice_id)["status"] == "completed", timeout=60)
    assert sorted(m["to"] for m in c.standin.messages) == phones[1:]


def test_pause_stops_sending_and_resume_finishes_without_doubles(campaign):  # noqa: F811
    c: Campaign = campaign
    seed_households(c, per_village=20, villages=2)
    c.start_workers(2)
    c.wait_for_workers(2)
    notice_id = start_notice(c, channel=NoticeChannel.SMS, text="平安宣传。", cps=4)
    c.wait_for("a few messages", lambda: c.standin.messages_created >= 4, timeout=60)
    with session_scope(c.sessions) as session:
        change_notice(session, notice_id, "pause")
    paused_at = time.monotonic()
    time.sleep(4)
    late = [t for t in c.standin.message_create_times if t > paused_at + 3]
    assert late == []  # nothing sent more than 3 s after the pause
    stopped = c.standin.messages_created
    assert stopped < 40
    with session_scope(c.sessions) as session:
        change_notice(session, notice_id, "resume")
    after_notice_change(c.settings, notice_id, "resume")
    c.wait_for("the notice to complete", lambda: notice_status(c, notice_id)["status"] == "completed", timeout=90)
    assert Counter(m["to"] for m in c.standin.messages).most_common(1)[0][1] == 1
    assert c.standin.messages_created == 40


# --- voice ------------------------------------------------------------------------------------------------


class VoiceNetwork(threading.Thread):
    """Answers the voice notices' calls at the stand-in and talks to our webhooks as Twilio would: the voice
    URL, the Redirect after a Gather (heard to the end), a key press, and the status callbacks in order.

    ``behaviour(phone)``: ``listen`` (to the end), ``again`` (``*`` after the end, then to the end again),
    ``opt_out`` (``9`` while it plays), ``hang_up`` (during the notice), ``busy``.
    """

    def __init__(self, c: Campaign, behaviour):
        super().__init__(daemon=True)
        self.c = c
        self.behaviour = behaviour
        self.done: set[str] = set()
        self.errors: list[str] = []
        self.halt = threading.Event()
        self.validator = RequestValidator(c.standin.auth_token)
        self.http = requests.Session()

    def run(self) -> None:
        while not self.halt.is_set():
            with self.c.standin._lock:
                calls = [(x.sid, x.to, x.form) for x in self.c.standin._calls.values() if x.sid not in self.done]
            for sid, to, form in calls:
                self.done.add(sid)
                try:
                    self.play(sid, to, form)
                except Exception as exc:  # noqa: BLE001 - the test reports it
                    self.errors.append(repr(exc))
            self.halt.wait(0.05)

    def post(self, url: str, params: dict) -> requests.Response:
        signature = self.validator.compute_signature(url, params)
        reply = self.http.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=15)
        if reply.status_code >= 300:
            self.errors.append(f"{url}: HTTP {reply.status_code} {reply.text[:200]}")
        return reply

    def play(self, sid: str, to: str, form: dict) -> None:
        url, status_url = form["Url"][0], form["StatusCallback"][0]
        base = {"AccountSid": self.c.standin.account_sid, "CallSid": sid, "To": to, "From": FROM_NUMBER}
        seq = 0

        def status(value: str) -> None:
            nonlocal seq
            callback = base | {"CallStatus": value, "SequenceNumber": str(seq)}
            self.post(status_url, callback)
            self.post(status_url, callback)  # Twilio may deliver a callback twice
            seq += 1

        what = self.behaviour(to)
        status("initiated")
        status("ringing")
        if what == "busy":
            self.c.standin.set_call_status(sid, "busy")
            status("busy")
            return
        self.c.standin.set_call_status(sid, "in-progress", answered_by="human")
        status("in-progress")
        doc = ElementTree.fromstring(self.post(url, base | {"CallStatus": "in-progress"}).text)
        gather = doc.find("Gather")
        assert gather is not None and (gather.find("Say") is not None or gather.find("Play") is not None)
        if what == "opt_out":
            self.post(gather.get("action"), base | {"Digits": "9"})
        elif what in ("listen", "again"):
            hint = ElementTree.fromstring(self.post(doc.find("Redirect").text, base).text)
            if what == "again":
                replay = ElementTree.fromstring(
                    self.post(hint.find("Gather").get("action"), base | {"Digits": "*"}).text
                )
                self.post(replay.find("Redirect").text, base)
        self.c.standin.set_call_status(sid, "completed")
        status("completed")


def test_voice_notice_plays_repeats_opts_out_and_records_heard_to_end(campaign):  # noqa: F811
    c: Campaign = campaign
    phones = seed_households(c, per_village=5, villages=1)
    plan = {phones[0]: "listen", phones[1]: "again", phones[2]: "opt_out", phones[3]: "hang_up", phones[4]: "busy"}
    network = VoiceNetwork(c, lambda phone: plan[phone])
    network.start()
    c.standin.fail_next(429)  # refused: nothing created, retried
    c.standin.fail_next(500, create_anyway=True)  # ambiguous: the call exists; looked up and adopted
    try:
        c.start_workers(2)
        c.wait_for_workers(2)
        notice_id = start_notice(c, channel=NoticeChannel.VOICE, text="今晚有大风，请注意关好门窗。", max_attempts=1)
        c.wait_for("the notice to complete", lambda: notice_status(c, notice_id)["status"] == "completed", timeout=90)
    finally:
        network.halt.set()
        network.join(timeout=10)
    assert network.errors == []
    by_phone = {t.phone: t for t in targets(c, notice_id)}
    assert by_phone[phones[0]].state == NoticeTargetState.HEARD and by_phone[phones[0]].heard_to_end is True
    assert by_phone[phones[1]].plays == 2 and by_phone[phones[1]].heard_to_end is True
    assert by_phone[phones[2]].heard_to_end is False and by_phone[phones[2]].delivered
    assert by_phone[phones[3]].heard_to_end is False and by_phone[phones[3]].state == NoticeTargetState.HEARD
    assert by_phone[phones[4]].state == NoticeTargetState.FAILED and not by_phone[phones[4]].delivered
    with c.sessions() as session:
        assert session.scalars(select(DoNotCall.phone)).all() == [phones[2]]
    assert Counter(call["to"] for call in c.standin.calls).most_common(1)[0][1] == 1  # nobody called twice
    assert sorted(call["to"] for call in c.standin.calls) == sorted(phones)
    assert sum(t.ambiguous for t in by_phone.values()) == 1
    report = notice_status(c, notice_id)
    assert report["heard_to_end"] == 2 and report["delivered"] == 4
