"""The log format every process uses: one line per event, role and call fields, numbers masked, JSON lines."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from campaigns.logs import (
    ACCESS_LOG_FORMAT,
    configure_logging,
    current_context,
    log_context,
    mask_phones,
)
from campaigns.settings import Settings
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SID = "CA0123456789abcdef0123456789abcdef"
TEXT_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d) (?P<level>[A-Z]+) role=(?P<role>\w+) "
    r"logger=(?P<logger>\S+) (?P<message>.*)$"
)


@dataclass(frozen=True)
class LogSettings(Settings):
    """Settings with SANLV_LOG_FORMAT's field (parsed with the other settings)."""

    log_format: str = "text"


@pytest.fixture
def capture():
    """configure_logging into a buffer; the handler is taken off the root logger afterwards."""
    handlers: list[logging.Handler] = []
    buffer = io.StringIO()

    def configure(role: str = "worker", fmt: str = "text", timezone: str = "Asia/Shanghai") -> io.StringIO:
        handlers.append(configure_logging(role, LogSettings(log_format=fmt, timezone=timezone), stream=buffer))
        return buffer

    yield configure
    root = logging.getLogger()
    for handler in handlers:
        root.removeHandler(handler)


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_text_line_has_time_with_offset_level_role_logger_and_message(capture):
    buffer = capture("worker")
    logging.getLogger("sanlv.jobs").info("event=call_placed attempt=%s sid=%s", 12, SID)
    (line,) = lines(buffer)
    match = TEXT_LINE.match(line)
    assert match, line
    assert match["time"].endswith("+08:00")  # SANLV_TIMEZONE, with its offset
    assert (match["level"], match["role"], match["logger"]) == ("INFO", "worker", "sanlv.jobs")
    assert match["message"] == f"event=call_placed attempt=12 sid={SID}"


def test_time_is_written_in_the_configured_zone(capture):
    buffer = capture("cli", timezone="UTC")
    logging.getLogger("sanlv.cli").warning("event=x")
    assert TEXT_LINE.match(lines(buffer)[0])["time"].endswith("+00:00")
    assert " WARNING role=cli " in lines(buffer)[0]


@pytest.mark.parametrize("role", ["web", "worker", "cli", "demo"])
def test_every_role_is_named_on_its_lines(capture, role):
    buffer = capture(role)
    logging.getLogger("sanlv").info("event=started")
    assert TEXT_LINE.match(lines(buffer)[0])["role"] == role


def test_unknown_role_or_format_is_refused():
    with pytest.raises(ValueError, match="role 'scheduler'"):
        configure_logging("scheduler", LogSettings(), stream=io.StringIO())
    with pytest.raises(ValueError, match="SANLV_LOG_FORMAT='xml'"):
        configure_logging("web", LogSettings(log_format="xml"), stream=io.StringIO())


def test_context_adds_round_attempt_and_sid_the_message_does_not_say(capture):
    buffer = capture()
    log = logging.getLogger("sanlv.ivr")
    with log_context(round=3, attempt=12):
        with log_context(sid=SID):
            log.info("event=call_status status=completed")
            log.info("event=retry attempt=13")  # the message's own attempt wins and is not repeated
        log.info("event=after_inner")
    log.info("event=outside")
    first, second, third, fourth = lines(buffer)
    assert first.endswith(f"event=call_status status=completed round=3 attempt=12 sid={SID}")
    assert second.endswith(f"event=retry attempt=13 round=3 sid={SID}")
    assert third.endswith("event=after_inner round=3 attempt=12")
    assert fourth.endswith("event=outside")
    assert current_context() == {}


def test_context_belongs_to_its_thread():
    seen: list[dict] = []
    with log_context(round=1):
        thread = threading.Thread(target=lambda: seen.append(current_context()))
        thread.start()
        thread.join()
        assert current_context() == {"round": 1}
    assert seen == [{}]  # a gunicorn thread serving another request does not inherit this one's call


def test_context_takes_only_its_fields():
    with pytest.raises(TypeError, match="phone"):
        with log_context(phone="+8613812341234"):
            pass


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("to=+8613812341234", "to=138****1234"),
        ("to=13812341234", "to=138****1234"),
        ("to=138 1234 1234 done", "to=138****1234 done"),
        ("to=138-1234-1234", "to=138****1234"),
        ("to=8613812341234", "to=138****1234"),
        ("to=+86 138 1234 1234", "to=138****1234"),
        ("To=%2B8613812341234&From=%2b8613900000001", "To=138****1234&From=139****0001"),
        ("landline=0593-2612345", "landline=0593-***2345"),
        ("landline=05932612345", "landline=0593-***2345"),
        ("landline=+865932612345", "landline=0593-***2345"),
        ("landline=010-12345678", "landline=010-****5678"),
        ("landline=(0593)2612345", "landline=0593-***2345"),
        ("us=+14155550123", "us=+14*****0123"),
        ("居民电话13812341234。", "居民电话138****1234。"),
        ("error='The To number +8613812341234 is not valid'", "error='The To number 138****1234 is not valid'"),
    ],
)
def test_phone_numbers_are_masked_in_any_shape(text, masked):
    assert mask_phones(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "event=call_placed attempt=123 response=4567 round=12 target=99",
        f"sid={SID}",
        "sid=CA13812341234abcdef0123456789abcdef",  # digits of a mobile's shape inside a CallSid
        "sid=CAabcdef138123412340123456789abcd",
        "job=sanlv-dispatch-12-a1b2c3d4e5f6",
        "at=2026-03-02T10:00:00.123+08:00",
        "epoch_ms=1733512345678 epoch=1733512345",
        "retry_in=0.13812341234",
    ],
)
def test_ids_sids_and_times_are_not_masked(text):
    assert mask_phones(text) == text


def test_numbers_are_masked_in_the_written_line_and_its_traceback(capture):
    buffer = capture()
    log = logging.getLogger("sanlv.jobs")
    log.info("event=calls_found to=%s", "+8613812341234")
    try:
        raise ValueError("cannot call 13987654321\nsecond line")
    except ValueError:
        log.exception("event=failed attempt=%s", 7)
    text = buffer.getvalue()
    assert "13812341234" not in text and "13987654321" not in text
    assert "to=138****1234" in text and "cannot call 139****4321" in text
    found, failed = lines(buffer)  # the traceback stays on its event's line
    assert failed.split(" exception=", 1)[1].startswith("Traceback (most recent call last):\\n")
    assert "\\nsecond line" in failed


def test_a_message_cannot_forge_a_second_line(capture):
    buffer = capture()
    logging.getLogger("sanlv.ivr").warning("event=bad_webhook reason=%r", "x\n2026-01-01 INFO role=web forged")
    assert len(lines(buffer)) == 1


def test_json_lines_parse_and_carry_the_same_fields(capture):
    buffer = capture("web", fmt="json")
    log = logging.getLogger("sanlv.ivr")
    with log_context(round=3, sid=SID):
        log.info("event=call_status attempt=12 status=completed to=+8613812341234")
    log.warning("no fields here: 居民 0593-2612345")
    try:
        raise RuntimeError("boom 13812341234")
    except RuntimeError:
        log.error("event=crash", exc_info=True)
    first, second, third = (json.loads(line) for line in lines(buffer))
    assert first["role"] == "web" and first["level"] == "INFO" and first["logger"] == "sanlv.ivr"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00", first["time"])
    assert first["event"] == "call_status"
    assert (first["round"], first["attempt"], first["sid"]) == (3, 12, SID)
    assert first["message"] == "event=call_status attempt=12 status=completed to=138****1234"
    assert second["message"] == "no fields here: 居民 0593-***2345"
    assert not {"event", "round", "attempt", "sid", "exception"} & set(second)
    assert third["event"] == "crash" and "boom 138****1234" in third["exception"]
    assert "13812341234" not in buffer.getvalue()


def test_configure_again_replaces_its_handler_and_leaves_others(capture):
    other = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(other)
    try:
        first = capture("worker")
        capture("worker", fmt="json")  # the same buffer: only the JSON handler writes now
        logging.getLogger("sanlv").info("event=once")
        assert [json.loads(line)["event"] for line in lines(first)] == ["once"]
        assert other in root.handlers and "event=once" in other.stream.getvalue()
    finally:
        root.removeHandler(other)


def test_the_twilio_clients_request_dumps_are_kept_out(capture):
    buffer = capture()
    logging.getLogger("twilio.http_client").info("-- BEGIN Twilio API Request -- To=+8613812341234")
    logging.getLogger("twilio.http_client").warning("event=twilio_slow")
    assert [TEXT_LINE.match(line)["message"] for line in lines(buffer)] == ["event=twilio_slow"]


# gunicorn, for real: its error and access logs through the same handler, paths without query strings.
GUNICORN_APP = """
import logging, sys
from dataclasses import dataclass
from gunicorn.app.base import BaseApplication
from campaigns.logs import ACCESS_LOG_FORMAT, gunicorn_logconfig
from campaigns.settings import Settings

@dataclass(frozen=True)
class LogSettings(Settings):
    log_format: str = "text"

def app(environ, start_response):
    logging.getLogger("sanlv.ivr").info("event=voice to=%s", "+8613812341234")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

class Server(BaseApplication):
    def load_config(self):
        for key, value in {
            "bind": "127.0.0.1:" + sys.argv[1],
            "workers": 1,
            "accesslog": "-",
            "access_log_format": ACCESS_LOG_FORMAT,
            "logconfig_dict": gunicorn_logconfig(LogSettings(log_format=sys.argv[2])),
        }.items():
            self.cfg.set(key, value)

    def load(self):
        return app

Server().run()
"""


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_gunicorn_logs_through_the_handler_without_query_strings(fmt, tmp_path):
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(GUNICORN_APP, encoding="utf-8")
    err = tmp_path / "stderr.log"
    out = tmp_path / "stdout.log"
    with err.open("wb") as err_handle, out.open("wb") as out_handle:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(port), fmt],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out_handle, stderr=err_handle,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = requests.get(
                    f"http://127.0.0.1:{port}/ivr/voice?attempt=41&To=%2B8613812341234", timeout=2
                )
                break
            except requests.ConnectionError:
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        assert reply.status_code == 200
        deadline = time.monotonic() + 10
        while "/ivr/voice" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    written = err.read_text()
    assert out.read_text() == ""  # nothing on stdout: one stream, one format
    assert "13812341234" not in written and "attempt=41" not in written and "?" not in written
    logged = [json.loads(line) for line in written.splitlines()] if fmt == "json" else written.splitlines()
    if fmt == "json":
        access = [entry for entry in logged if entry["logger"] == "gunicorn.access"]
        app = [entry for entry in logged if entry["logger"] == "sanlv.ivr"]
        booted = [entry for entry in logged if entry["logger"] == "gunicorn.error"]
        assert len(access) == 1 and '"GET /ivr/voice HTTP/1.1" 200 2 ' in access[0]["message"]
        assert app[0]["message"] == "event=voice to=138****1234" and app[0]["role"] == "web"
        assert booted and all(entry["role"] == "web" for entry in logged)
    else:
        parsed = [TEXT_LINE.match(line) for line in logged]
        assert all(parsed), written
        access = [m for m in parsed if m["logger"] == "gunicorn.access"]
        assert len(access) == 1 and '"GET /ivr/voice HTTP/1.1" 200 2 ' in access[0]["message"]
        assert any(m["logger"] == "sanlv.ivr" and m["message"] == "event=voice to=138****1234" for m in parsed)
        assert {m["role"] for m in parsed} == {"web"}


def test_access_log_format_has_the_path_without_query():
    assert "%(U)s" in ACCESS_LOG_FORMAT and "%(r)s" not in ACCESS_LOG_FORMAT and "%(q)s" not in ACCESS_LOG_FORMAT
