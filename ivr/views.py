"""Twilio webhooks: voice (call answered), gather (a key press or silence), status callbacks.

Thin handlers: validate the signature and parameters, call one domain function, commit, render TwiML.
Webhooks never need Redis; an answer is committed before its webhook is answered.
"""

from __future__ import annotations

import functools
import logging

from flask import Blueprint, Response, abort, current_app, g, request
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from campaigns.calls import apply_call_status
from campaigns.db import session_scope
from campaigns.models import CallAttempt
from campaigns.settings import Settings
from ivr import interview
from ivr.twiml import hangup, render

log = logging.getLogger("sanlv.ivr")

bp = Blueprint("ivr", __name__, url_prefix="/ivr")

MACHINE_ANSWERS = {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}


def settings() -> Settings:
    return current_app.extensions["sanlv"].settings


def public_base() -> str:
    """The base URL Twilio uses to reach us: PUBLIC_BASE_URL, else the request's own host (local runs)."""
    return settings().public_base_url or request.host_url.rstrip("/")


def signed_url() -> str:
    """The URL as Twilio signed it: the public base + path + the raw query string (not werkzeug's re-encoding)."""
    query = request.query_string.decode("latin-1")
    return public_base() + request.path + (f"?{query}" if query else "")


def twilio_webhook(view):
    """Refuse (403) any request whose X-Twilio-Signature is not valid for the public URL and its parameters."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        signature = request.headers.get("X-Twilio-Signature", "")
        validator = RequestValidator(settings().webhook_token)
        params = request.form if request.method == "POST" else {}
        if not signature or not validator.validate(signed_url(), params, signature):
            log.warning("event=bad_signature path=%s remote=%s", request.path, request.remote_addr)
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def twiml(body: str) -> Response:
    return Response(body, mimetype="text/xml")


def _int_param(name: str, *, source=None) -> int:
    raw = (source or request.args).get(name)
    if raw is None or not raw.strip().lstrip("-").isdigit():
        log.warning("event=bad_parameter path=%s name=%s value=%r", request.path, name, raw)
        abort(400, description=f"parameter {name} must be a whole number")
    return int(raw)


def _attempt(session, *, lock: bool = False) -> CallAttempt:
    """The attempt named in the URL; its CallSid must match (a call whose sid was never saved is adopted)."""
    attempt_id = _int_param("attempt")
    call_sid = request.form.get("CallSid", "").strip()
    if not call_sid:
        log.warning("event=bad_parameter path=%s name=CallSid missing", request.path)
        abort(400, description="CallSid is missing")
    attempt = session.get(CallAttempt, attempt_id, with_for_update=lock)
    if attempt is None:
        log.warning("event=unknown_attempt path=%s attempt=%s sid=%s", request.path, attempt_id, call_sid)
        abort(404, description=f"attempt {attempt_id} is not known")
    if attempt.call_sid is None:
        other = session.scalar(select(CallAttempt.id).where(CallAttempt.call_sid == call_sid))
        if other is not None:
            abort(409, description=f"CallSid {call_sid} belongs to another attempt")
        # The worker died between creating the call and saving its sid: adopt it now.
        attempt.call_sid = call_sid
        log.info("event=call_adopted attempt=%s sid=%s", attempt.id, call_sid)
    elif attempt.call_sid != call_sid:
        log.warning("event=sid_mismatch attempt=%s expected=%s got=%s", attempt.id, attempt.call_sid, call_sid)
        abort(409, description="CallSid does not match the attempt")
    return attempt


@bp.post("/voice")
@twilio_webhook
def voice():
    rt = current_app.extensions["sanlv"]
    with session_scope(rt.sessions) as session:
        attempt = _attempt(session)
        answered_by = request.form.get("AnsweredBy", "").strip()
        if answered_by in MACHINE_ANSWERS:
            attempt.answered_by = answered_by
            log.info("event=machine_answer attempt=%s answered_by=%s", attempt.id, answered_by)
            return twiml(hangup(settings()))
        if answered_by:
            attempt.answered_by = answered_by
        try:
            prompt = interview.begin_call(session, attempt)
        except interview.InterviewError as exc:
            log.warning("event=bad_voice_request attempt=%s reason=%s", attempt.id, exc)
            abort(exc.status, description=str(exc))
        body = render(settings(), public_base(), prompt.questionnaire, attempt.id, prompt.action, prompt.seq)
    return twiml(body)


@bp.post("/gather")
@twilio_webhook
def gather():
    rt = current_app.extensions["sanlv"]
    step = (request.args.get("step") or "").strip()
    if not step:
        abort(400, description="parameter step is missing")
    seq = _int_param("n")
    digits = request.form.get("Digits")
    if digits is not None:
        digits = digits.strip()
        if len(digits) > 20:
            abort(400, description="Digits is too long")
    with session_scope(rt.sessions) as session:
        attempt = _attempt(session)
        try:
            prompt = interview.handle_input(session, attempt, step, seq, digits or None)
        except interview.InterviewError as exc:
            log.warning("event=bad_gather attempt=%s step=%s n=%s reason=%s", attempt.id, step, seq, exc)
            session.rollback()
            abort(exc.status, description=str(exc))
        body = render(settings(), public_base(), prompt.questionnaire, attempt.id, prompt.action, prompt.seq)
    return twiml(body)


@bp.post("/status")
@twilio_webhook
def status():
    rt = current_app.extensions["sanlv"]
    call_status = request.form.get("CallStatus", "").strip()
    if not call_status:
        abort(400, description="CallStatus is missing")
    sequence = request.form.get("SequenceNumber")
    if sequence is not None and not sequence.strip().isdigit():
        abort(400, description="SequenceNumber must be a whole number")
    duration = request.form.get("CallDuration")
    with session_scope(rt.sessions) as session:
        # Locked: callbacks for one call may arrive together; SequenceNumber decides which one counts.
        attempt = _attempt(session, lock=True)
        try:
            apply_call_status(
                session,
                attempt,
                call_status,
                int(sequence) if sequence is not None else None,
                duration=int(duration) if duration and duration.isdigit() else None,
                answered_by=request.form.get("AnsweredBy") or None,
                error_code=request.form.get("ErrorCode") or None,
            )
        except ValueError as exc:
            abort(400, description=str(exc))
        log.info("event=call_status attempt=%s status=%s seq=%s", attempt.id, call_status, sequence)
    return Response(status=204)


@bp.post("/inbound")
@twilio_webhook
def inbound():
    """A resident calling our number. Resuming a survey by call-back comes with the full IVR."""
    return twiml(hangup(settings(), _default_message("unknown_caller")))


def _default_message(name: str) -> str:
    from campaigns.questionnaire import builtin_questionnaire

    return builtin_questionnaire().messages.get(name, "")
