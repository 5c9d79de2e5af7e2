"""Twilio webhooks of notices: SMS status callbacks, inbound SMS (TD / 退订 / STOP opt-outs), and the voice
notice's call (play, ``*`` to hear it again, ``9`` to opt out, heard-to-end) and its status callbacks.

Every route is signature-checked (``ivr.views.twilio_webhook``) and needs no Redis; the change is committed
before the webhook is answered. A parameter that is missing or malformed gets a 4xx, never a 500.

Heard to the end: the notice is played inside a ``<Gather>`` (so ``*`` and ``9`` work while it plays); when
it ends without a key, Twilio goes on to the ``<Redirect>`` after the Gather, to ``/ivr/notice/heard``, which
records that the notice was heard to the end. A resident who hangs up during it never reaches that URL.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import quote

from flask import Blueprint, Response, request
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from campaigns import clock, dnc, notices
from campaigns.models import Notice, NoticeTarget, NoticeTargetState
from campaigns.notices import RECORDINGS_KEY
from ivr.twiml import webhook_url
from ivr.views import (
    CALL_SID,
    _int_param,
    in_transaction,
    public_base,
    reject,
    settings,
    twilio_webhook,
    twiml,
)

log = logging.getLogger("sanlv.ivr")

bp = Blueprint("ivr_notices", __name__, url_prefix="/ivr")

MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
ERROR_CODE = re.compile(r"^[0-9]{1,10}$")

HINT = "重听请按星号键，今后不再接听此类电话请按9。"
GOODBYE = "谢谢收听，再见。"
OPTED_OUT = "已为您登记，今后不再给您打此类电话。再见。"
SMS_OPT_OUT_REPLY = "您已退订，今后不会再收到此类短信。"
KEY_TIMEOUT = 2  # seconds after the notice ends before it counts as heard to the end
HINT_TIMEOUT = 5


def _target_id() -> int:
    value = _int_param("target", request.args.get("target"))
    assert value is not None
    return value


def _call_number() -> int:
    """Which call of the target this is (``n``, its attempt number): a late request of an earlier call of a
    target that is being called again must not be taken for the new one."""
    value = _int_param("n", request.args.get("n"))
    assert value is not None
    return value


def _message_sid() -> str:
    sid = request.form.get("MessageSid", "").strip()
    if not MESSAGE_SID.match(sid):
        reject(400, "MessageSid is not a message sid (SM + 32 hex digits)", value=sid[:40])
    return sid


def _call_sid() -> str:
    sid = request.form.get("CallSid", "").strip()
    if not CALL_SID.match(sid):
        reject(400, "CallSid is not a call sid (CA + 32 hex digits)", value=sid[:40])
    return sid


# --- SMS ----------------------------------------------------------------------------------------------------


@bp.post("/sms/status")
@twilio_webhook
def sms_status():
    """A message's status callback: applied in order (never backwards); duplicates and late ones change nothing."""
    target_id = _target_id()
    sid = _message_sid()
    status = (request.form.get("MessageStatus") or request.form.get("SmsStatus") or "").strip().lower()
    if not status:
        reject(400, "MessageStatus is missing", sid=sid)
    error_code = request.form.get("ErrorCode", "").strip() or None
    if error_code is not None and not ERROR_CODE.match(error_code):
        reject(400, "ErrorCode must be a Twilio error number", value=error_code[:40])

    def work(session) -> str:
        target = session.get(NoticeTarget, target_id, with_for_update=True)
        if target is None:
            reject(404, f"notice target {target_id} is not known", sid=sid)
        if target.message_sid is None and target.state == NoticeTargetState.SENDING:
            # The create's reply never reached the worker (it died, a timeout): the callback names the message.
            notices.record_sms_sent(session, target_id, sid, status, clock.now())
            return "adopted"
        if target.message_sid != sid:
            reject(409, f"MessageSid {sid} is not the message of notice target {target_id}", sid=sid)
        outcome = notices.apply_message_status(session, sid, status, error_code)
        if outcome == "unknown-status":
            session.rollback()
            reject(400, f"MessageStatus {status!r} is not one of Twilio's", sid=sid)
        return outcome

    outcome = in_transaction(work)
    log.info("event=sms_status target=%s status=%s outcome=%s", target_id, status, outcome)
    return Response(status=204)


@bp.post("/sms/inbound")
@twilio_webhook
def sms_inbound():
    """An SMS to our number. TD / 退订 / STOP puts the sender on the SMS do-not-contact list (and confirms)."""
    sender = request.form.get("From", "").strip()
    if not sender:
        reject(400, "From is missing")
    body = request.form.get("Body", "")
    sid = request.form.get("MessageSid", "").strip() or None

    def work(session) -> str | None:
        return notices.record_inbound_sms(session, sender, body, sid)

    keyword = in_transaction(work)
    reply = MessagingResponse()
    if keyword is not None:
        log.info("event=sms_opt_out from=%s keyword=%s", notices.masked_phone(sender), keyword)
        reply.message(SMS_OPT_OUT_REPLY)
    return twiml(str(reply))


# --- voice notices ------------------------------------------------------------------------------------------


def _voice_target(session, *, lock: bool = True) -> tuple[NoticeTarget, Notice]:
    target_id = _target_id()
    call_sid = _call_sid()
    target = session.get(NoticeTarget, target_id, with_for_update=lock)
    if target is None:
        reject(404, f"notice target {target_id} is not known", sid=call_sid)
    if _call_number() != target.attempts:
        reject(409, f"call {call_sid} is not notice target {target_id}'s current call", sid=call_sid)
    if target.call_sid is None:
        notices.adopt_call_sid(session, target, call_sid)
    if target.call_sid != call_sid:
        reject(409, f"CallSid {call_sid} is not the call of notice target {target_id}", sid=call_sid)
    notice = session.get(Notice, target.notice_id)
    assert notice is not None
    return target, notice


def _speak_notice(parent, notice: Notice, base: str) -> None:
    folder = Path(settings().recordings_dir) / RECORDINGS_KEY
    if notice.recording and (folder / notice.recording).is_file():
        version = int((folder / notice.recording).stat().st_mtime)
        parent.play(f"{base}/ivr/recordings/{RECORDINGS_KEY}/{quote(notice.recording)}?v={version}")
    elif notice.text:
        parent.say(notice.text, language=settings().tts_language, voice=settings().tts_voice)


def _say(parent, text: str) -> None:
    parent.say(text, language=settings().tts_language, voice=settings().tts_voice)


def _play_document(target_id: int, number: int, notice: Notice) -> str:
    base = public_base()
    response = VoiceResponse()
    gather = response.gather(
        action=webhook_url(settings(), base, "/ivr/notice/key", target=target_id, n=number, step="notice"),
        method="POST",
        input="dtmf",
        num_digits=1,
        timeout=KEY_TIMEOUT,
        finish_on_key="",
    )
    _speak_notice(gather, notice, base)
    response.redirect(webhook_url(settings(), base, "/ivr/notice/heard", target=target_id, n=number), method="POST")
    return str(response)


def _hint_document(target_id: int, number: int) -> str:
    base = public_base()
    response = VoiceResponse()
    gather = response.gather(
        action=webhook_url(settings(), base, "/ivr/notice/key", target=target_id, n=number, step="notice_hint"),
        method="POST",
        input="dtmf",
        num_digits=1,
        timeout=HINT_TIMEOUT,
        finish_on_key="",
    )
    _say(gather, HINT)
    _say(response, GOODBYE)
    response.hangup()
    return str(response)


def _end_document(text: str) -> str:
    response = VoiceResponse()
    _say(response, text)
    response.hangup()
    return str(response)


@bp.post("/notice/voice")
@twilio_webhook
def notice_voice():
    """The resident answered a voice notice: play it."""

    def work(session) -> tuple[int, int, Notice]:
        target, notice = _voice_target(session)
        notices.mark_played(session, target)
        session.expunge(notice)
        return target.id, target.attempts, notice

    target_id, number, notice = in_transaction(work)
    return twiml(_play_document(target_id, number, notice))


@bp.post("/notice/heard")
@twilio_webhook
def notice_heard():
    """The notice played to its end without a key: heard to the end. Then the hint (``*`` again, ``9`` out)."""

    def work(session) -> tuple[int, int]:
        target, _notice = _voice_target(session)
        notices.mark_heard_to_end(session, target)
        return target.id, target.attempts

    target_id, number = in_transaction(work)
    return twiml(_hint_document(target_id, number))


@bp.post("/notice/key")
@twilio_webhook
def notice_key():
    """A key during or after the notice: ``*`` plays it again, ``9`` opts out (do-not-call list)."""
    digits = request.form.get("Digits", "").strip()
    if len(digits) > 20 or not re.fullmatch(r"[0-9*#]*", digits):
        reject(400, "Digits must be keypad keys", value=digits[:40])

    def work(session) -> tuple[str, int, int, Notice]:
        target, notice = _voice_target(session)
        session.expunge(notice)
        if digits == "*":
            notices.mark_played(session, target)
            return "again", target.id, target.attempts, notice
        if digits == "9":
            dnc.add_from_keypad(session, target.phone, None)  # once, whatever else put it there
            return "opted_out", target.id, target.attempts, notice
        return "hint", target.id, target.attempts, notice

    what, target_id, number, notice = in_transaction(work)
    if what == "again":
        return twiml(_play_document(target_id, number, notice))
    if what == "opted_out":
        log.info("event=notice_opt_out target=%s", target_id)
        return twiml(_end_document(OPTED_OUT))
    return twiml(_hint_document(target_id, number))


@bp.post("/notice/status")
@twilio_webhook
def notice_status():
    """A voice notice's call status callback, in SequenceNumber order."""
    call_status = request.form.get("CallStatus", "").strip()
    if not call_status:
        reject(400, "CallStatus is missing")
    sequence = _int_param("SequenceNumber", request.form.get("SequenceNumber", "").strip(), required=False)

    def work(session) -> str:
        target_id = _target_id()
        call_sid = _call_sid()
        target = session.get(NoticeTarget, target_id, with_for_update=True)
        if target is None:
            reject(404, f"notice target {target_id} is not known", sid=call_sid)
        if _call_number() != target.attempts:
            return "other call"  # an earlier call of this target, already settled: nothing to change
        if target.call_sid is None:
            notices.adopt_call_sid(session, target, call_sid)
        if target.call_sid != call_sid:
            return "other call"  # an earlier call of this target, already settled: nothing to change
        outcome = notices.apply_notice_call_status(session, target, call_status, sequence)
        if outcome == "unknown-status":
            session.rollback()
            reject(400, f"CallStatus {call_status!r} is not one of Twilio's", sid=call_sid)
        return outcome

    outcome = in_transaction(work)
    log.info("event=notice_call_status status=%s seq=%s outcome=%s", call_status, sequence, outcome)
    return Response(status=204)
