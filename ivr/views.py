"""Twilio webhooks: voice (call answered), gather (a key press or silence), status callbacks, inbound calls;
and the recorded prompts that ``<Play>`` fetches.

Thin handlers: validate the signature and parameters, call the domain functions, commit, render TwiML.
Webhooks never need Redis; an answer is committed before its webhook is answered. A parameter that is
missing or malformed, or does not fit the call's state, gets a 4xx and a log line naming it; never a 500,
never a stored answer. The interview's webhooks read without taking a write lock, then write in one short
transaction (see "Read, then write" in campaigns.interview).
"""

from __future__ import annotations

import functools
import logging
import re
import time

from flask import Blueprint, Response, abort, current_app, g, request, send_from_directory
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from twilio.request_validator import RequestValidator

from campaigns import interview
from campaigns.calls import MACHINE_ANSWERS, apply_call_status, heard_from
from campaigns.db import session_scope
from campaigns.logs import log_context
from campaigns.models import CallAttempt
from campaigns.questionnaire import Questionnaire, recording_path
from campaigns.rounds import round_changed
from campaigns.settings import Settings
from ivr.metrics import webhook_metrics
from ivr.twiml import render, say_and_hang_up

log = logging.getLogger("sanlv.ivr")

bp = Blueprint("ivr", __name__, url_prefix="/ivr")

CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
DIGITS = re.compile(r"^[0-9*#]{0,20}$")
POSITION = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")
NUMBER = re.compile(r"^[0-9]{1,10}$")  # ASCII digits only: str.isdigit() also accepts "²" and "١"
MAX_ID = 2**31 - 1  # INTEGER columns: a larger id is malformed, not a database error
ANSWERED_BY = frozenset(MACHINE_ANSWERS | {"human", "unknown"})


@bp.before_request
def _begin_webhook() -> None:
    """Start the webhook's clock, and name its attempt and call sid on every line it logs."""
    g.webhook_started = time.perf_counter()
    attempt = request.args.get("attempt", "")
    sid = request.form.get("CallSid", "").strip() if request.method == "POST" else ""
    context = log_context(
        attempt=int(attempt) if NUMBER.match(attempt) else None, sid=sid if CALL_SID.match(sid) else None
    )
    context.__enter__()
    g.webhook_log_context = context


@bp.teardown_request
def _end_webhook(_exc: BaseException | None) -> None:
    context = g.pop("webhook_log_context", None)
    if context is not None:
        context.__exit__(None, None, None)


@bp.after_request
def _count_response(response: Response) -> Response:
    """Every webhook's latency and status, by route (its rule, never the query string), for Prometheus."""
    started = g.pop("webhook_started", None)
    if started is not None and request.url_rule is not None:
        metrics = webhook_metrics()
        route = request.url_rule.rule
        metrics.seconds.labels(route).observe(time.perf_counter() - started)
        metrics.responses.labels(route, str(response.status_code)).inc()
    return response


def settings() -> Settings:
    return current_app.extensions["sanlv"].settings


def public_base() -> str:
    """The base URL Twilio uses to reach us: PUBLIC_BASE_URL, else the request's own host (local runs)."""
    return settings().public_base_url or request.host_url.rstrip("/")


def signed_url() -> str:
    """The URL as Twilio signed it: the public base + path + the raw query string (not werkzeug's re-encoding)."""
    query = request.query_string.decode("latin-1")
    return public_base() + request.path + (f"?{query}" if query else "")


@functools.lru_cache(maxsize=8)
def _validator(token: str) -> RequestValidator:
    return RequestValidator(token)


def twilio_webhook(view):
    """Refuse (403) any request whose X-Twilio-Signature is not valid for the public URL and its parameters.

    With several Twilio accounts, each signs with its own auth token: the token is the one of the account the
    request's ``AccountSid`` names (itself covered by the signature), else the default account's.
    """

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        signature = request.headers.get("X-Twilio-Signature", "")
        params = request.form if request.method == "POST" else {}
        account_sid = request.form.get("AccountSid") if request.method == "POST" else request.args.get("AccountSid")
        token = settings().webhook_token_for(account_sid) or current_app.extensions["sanlv"].webhook_token
        if not signature or not _validator(token).validate(signed_url(), params, signature):
            log.warning("event=bad_signature path=%s remote=%s", request.path, request.remote_addr)
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def twiml(body: str) -> Response:
    return Response(body, mimetype="text/xml")


def in_transaction(write, read=None):
    """Run a webhook's work: ``write(session)`` in one write transaction; its result once committed.

    With ``read``: ``read(session)`` first, in a read session, which takes no write lock (Runtime.reads).
    If it returns a Prompt (a replay), that is the result and nothing is written; else the write transaction
    runs ``write(session, what_was_read)``. Callers render the reply after this returns, so no transaction is
    open while TwiML is built.

    A uniqueness violation, or an interview that moved on after it was read (ConcurrentChange), means a
    concurrent delivery of the same webhook stored its effect first: it all runs once more, in new
    transactions, where the read finds that and answers as a replay. A database connection found dead (the
    server restarted) is replaced and it all runs once more too: every webhook's work is idempotent, so even
    one lost while its commit was on the way is answered right (as a replay if it was stored).
    """
    rt = current_app.extensions["sanlv"]
    for attempt in (1, 2):
        try:
            if read is None:
                with session_scope(rt.sessions) as session:
                    return write(session)
            with rt.reads() as session:
                found = read(session)
            if isinstance(found, interview.Prompt):
                return found
            with session_scope(rt.sessions) as session:
                return write(session, found)
        except (IntegrityError, interview.ConcurrentChange):
            if attempt == 2:
                raise
            log.info("event=concurrent_delivery path=%s", request.path)
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
            log.warning("event=database_connection_lost path=%s retrying=1 error=%r", request.path, exc.orig)
    raise AssertionError("unreachable")


def render_prompt(prompt: interview.Prompt, attempt_id: int) -> str:
    return render(settings(), public_base(), prompt.questionnaire, attempt_id, prompt.action, prompt.seq, prompt.chosen)


def reject(status: int, reason: str, **fields: object) -> None:
    """Log the refused request (key=value) and answer it with ``status``; nothing is stored."""
    extra = "".join(f" {name}={value!r}" for name, value in fields.items())
    log.warning("event=bad_webhook path=%s status=%s reason=%r%s", request.path, status, reason, extra)
    abort(status, description=reason)


def _int_param(name: str, raw: str | None, *, required: bool = True) -> int | None:
    if raw is None or raw == "":
        if required:
            reject(400, f"parameter {name} is missing")
        return None
    if not NUMBER.match(raw) or int(raw) > MAX_ID:
        reject(400, f"parameter {name} must be a whole number", value=raw[:40])
    return int(raw)


def _call_sid() -> str:
    call_sid = request.form.get("CallSid", "").strip()
    if not call_sid:
        reject(400, "CallSid is missing")
    if not CALL_SID.match(call_sid):
        reject(400, "CallSid is not a call sid (CA + 32 hex digits)", value=call_sid[:40])
    return call_sid


def _attempt(session, *, lock: bool = False, attempt_required: bool = True) -> CallAttempt:
    """The attempt named in the URL (or, where the URL may not name one, by CallSid).

    The CallSid must match; a call whose sid was never saved (the worker died after creating it) is adopted.
    """
    attempt_id = _int_param("attempt", request.args.get("attempt"), required=attempt_required)
    call_sid = _call_sid()
    if attempt_id is None:
        # Status callbacks configured on our number (inbound calls) cannot carry an attempt id.
        query = select(CallAttempt).where(CallAttempt.call_sid == call_sid)
        attempt = session.scalar(query.with_for_update() if lock else query)
        if attempt is None:
            reject(404, f"CallSid {call_sid} is not a known call", sid=call_sid)
        return attempt
    attempt = session.get(CallAttempt, attempt_id, with_for_update=lock)
    if attempt is None:
        reject(404, f"attempt {attempt_id} is not known", attempt=attempt_id, sid=call_sid)
    try:
        interview.check_call_sid(session, attempt, call_sid)
    except interview.InterviewError as exc:
        reject(exc.status, str(exc), attempt=attempt.id, expected=attempt.call_sid, sid=call_sid)
    return attempt


def _answered_by() -> str | None:
    answered_by = request.form.get("AnsweredBy", "").strip()
    if not answered_by:
        return None
    if answered_by not in ANSWERED_BY:
        reject(400, "AnsweredBy is not one of Twilio's values", value=answered_by[:40])
    return answered_by


@bp.post("/voice")
@twilio_webhook
def voice():
    answered_by = _answered_by()
    attempt_id = _int_param("attempt", request.args.get("attempt"))
    call_sid = _call_sid()

    def read(session) -> interview.Call:
        try:
            return interview.read_call(session, attempt_id, call_sid)
        except interview.InterviewError as exc:
            reject(exc.status, str(exc), attempt=attempt_id, sid=call_sid)

    def write(session, call: interview.Call) -> interview.Prompt | Questionnaire:
        heard_from(session, attempt_id, last=call.heard_at)
        if answered_by in MACHINE_ANSWERS:
            # Not reached: hang up at once; the status callback settles the attempt as "machine" (retried).
            interview.machine_answered(session, call, answered_by)
            return call.questionnaire
        return interview.begin_call(session, call, answered_by)

    done = in_transaction(write, read)
    if isinstance(done, interview.Prompt):
        return twiml(render_prompt(done, attempt_id))
    return twiml(say_and_hang_up(settings(), public_base(), done, "machine"))


@bp.post("/gather")
@twilio_webhook
def gather():
    position = (request.args.get("step") or "").strip()
    if not position:
        reject(400, "parameter step is missing")
    if not POSITION.match(position):
        reject(400, "parameter step is not a step key", value=position[:60])
    seq = _int_param("n", request.args.get("n"))
    digits = request.form.get("Digits")
    if digits is not None:
        digits = digits.strip()
        if not DIGITS.match(digits):
            reject(400, "Digits must be at most 20 keypad keys (0-9, *, #)", value=digits[:40])

    attempt_id = _int_param("attempt", request.args.get("attempt"))
    call_sid = _call_sid()

    stored_answer = False

    def read(session) -> interview.Press | interview.Prompt:
        nonlocal stored_answer
        stored_answer = False
        try:
            press = interview.read_press(session, attempt_id, call_sid, position, seq, digits or None)
        except interview.InterviewError as exc:
            reject(exc.status, str(exc), attempt=attempt_id, step=position, n=seq, sid=call_sid)
        return press.replay if press.nothing_to_write else press

    def write(session, press: interview.Press) -> interview.Prompt:
        nonlocal stored_answer
        heard_from(session, attempt_id, last=press.call.heard_at)
        stored_answer = press.turn is not None and press.turn.answer is not None
        return interview.store_press(session, press)

    prompt = in_transaction(write, read)
    if stored_answer:
        webhook_metrics().answers.inc()
    return twiml(render_prompt(prompt, attempt_id))


@bp.post("/status")
@twilio_webhook
def status():
    call_status = request.form.get("CallStatus", "").strip()
    if not call_status:
        reject(400, "CallStatus is missing")
    sequence = _int_param("SequenceNumber", request.form.get("SequenceNumber", "").strip(), required=False)
    duration = _int_param("CallDuration", request.form.get("CallDuration", "").strip(), required=False)
    error_code = request.form.get("ErrorCode", "").strip() or None
    if error_code is not None and not NUMBER.match(error_code):
        reject(400, "ErrorCode must be a Twilio error number", value=error_code[:40])
    answered_by = _answered_by()

    def work(session) -> None:
        if not request.args.get("attempt") and request.form.get("Direction", "").strip() == "inbound":
            # Our number's callback for a call a resident made: one that was not interviewed (the default:
            # they are called back) has no attempt, and there is nothing to record.
            sid = _call_sid()
            if session.scalar(select(CallAttempt.id).where(CallAttempt.call_sid == sid)) is None:
                log.info("event=inbound_call_ended sid=%s status=%s", sid, call_status)
                return
        # Locked: callbacks for one call may arrive together; SequenceNumber decides which one counts.
        attempt = _attempt(session, lock=True, attempt_required=False)
        heard_from(session, attempt.id, last=attempt.last_heard_at)
        try:
            apply_call_status(
                session, attempt, call_status, sequence, duration=duration, answered_by=answered_by, error_code=error_code
            )
        except ValueError as exc:
            session.rollback()
            reject(400, str(exc), attempt=attempt.id)
        log.info("event=call_status attempt=%s status=%s seq=%s", attempt.id, call_status, sequence)

    in_transaction(work)
    return Response(status=204)


@bp.post("/inbound")
@twilio_webhook
def inbound():
    """A resident calling our number: the same greeting for every caller and a call-back (the default), or the
    interview, where the round answers on inbound calls (campaigns.interview.begin_inbound_call)."""
    call_sid = _call_sid()
    caller = request.form.get("From", "").strip()
    if not caller:
        reject(400, "From is missing", sid=call_sid)
    direction = request.form.get("Direction", "inbound").strip()
    if direction != "inbound":
        reject(400, "Direction must be inbound", value=direction[:40], sid=call_sid)

    def work(session) -> interview.InboundReply:
        try:
            return interview.begin_inbound_call(session, call_sid, caller)
        except interview.InterviewError as exc:
            session.rollback()
            reject(exc.status, str(exc), sid=call_sid)

    reply = in_transaction(work)
    if reply.call_back_round is not None:
        _call_back_now(reply.call_back_round)
    if reply.prompt is None:
        return twiml(say_and_hang_up(settings(), public_base(), reply.questionnaire, reply.message or "call_back"))
    return twiml(render_prompt(reply.prompt, reply.attempt_id))


def _call_back_now(round_id: int) -> None:
    """Wake the round's dialler for the call-back just committed. Best effort: webhooks never need Redis, and
    without the wake-up the dispatcher's next tick (within half a minute) claims it first anyway."""
    try:
        round_changed(settings(), round_id, "call-back")
    except Exception as exc:  # noqa: BLE001 - Redis down must not fail the caller's call
        log.warning("event=call_back_wakeup_failed round=%s error=%s", round_id, type(exc).__name__)


@bp.get("/recordings/<key>/<name>")
def recording(key: str, name: str):
    """A recorded prompt, for ``<Play>`` (Twilio fetches media unsigned). Only audio files in the folder."""
    path = recording_path(settings().recordings_dir, key, name)
    if path is None:
        abort(404)
    # send_from_directory checks the name again.
    return send_from_directory(path.parent, path.name, max_age=3600)
