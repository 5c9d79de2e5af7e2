"""Residents' numbers never reach a log line or RQ's failed-job records in full: jobs carry ids, a traceback
that quotes a number is masked before RQ keeps it and before a worker logs it, and Twilio's error text is
masked before it is stored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from campaigns.models import CallAttempt, CallStatus, Household, RoundTarget
from tests.support.twilio_standin import process_environment, twilio_standin  # noqa: F401
from tests.workers.test_campaign_jobs import attempt_of, claimed, clock, twilio_env  # noqa: F401
from workers import placing
from workers.queues import DIALER_QUEUE, enqueue, queue, redis_connection
from workers.runner import InProcessWorker

NUMBER = "+8613812345678"
SHOWN = "138****5678"
ROOT = Path(__file__).resolve().parent.parent.parent


def refuse_quoting_a_number(attempt_id: int) -> None:
    """A job whose error quotes a resident's number, as a provider's error text does."""
    raise RuntimeError(f"attempt {attempt_id}: The 'To' number {NUMBER} is not a valid phone number (13812345678)")


def failed_records(settings) -> list[str]:
    conn = redis_connection(settings)
    registry = FailedJobRegistry(queue=queue(settings), connection=conn)
    texts = []
    for job_id in registry.get_job_ids():
        job = Job.fetch(job_id, connection=conn)
        texts.append(job.latest_result().exc_string)
        texts.append(repr(job.args) + repr(job.kwargs) + (job.description or ""))
    return texts


def test_a_failed_job_keeps_its_traceback_with_the_number_masked(twilio_env, redis_conn) -> None:  # noqa: F811 - the imported fixture
    settings, _standin = twilio_env
    enqueue(settings, refuse_quoting_a_number, 7, job_id="quoting-7")

    InProcessWorker([queue(settings, DIALER_QUEUE)], connection=redis_conn).work(burst=True)

    [stored, args] = failed_records(settings)
    assert "is not a valid phone number" in stored and SHOWN in stored
    assert "13812345678" not in stored and "13812345678" not in args
    assert args.startswith("(7,)")  # the job carries the attempt id, nothing else


def test_a_worker_process_never_logs_the_number(twilio_env, redis_conn, tmp_path: Path) -> None:  # noqa: F811 - the imported fixture
    settings, _standin = twilio_env
    enqueue(settings, refuse_quoting_a_number, 8, job_id="quoting-8")

    worker = subprocess.run([sys.executable, "-m", "web", "worker", "--burst"], env=process_environment(settings),
                            capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)  # fmt: skip

    output = worker.stdout + worker.stderr
    assert "refuse_quoting_a_number" in output and "is not a valid phone number" in output  # it was logged
    assert "13812345678" not in output
    assert SHOWN in output
    assert any(SHOWN in text for text in failed_records(settings))


def test_twilios_error_text_is_stored_with_the_number_masked(twilio_env, sessions) -> None:  # noqa: F811 - the imported fixture
    _settings, standin = twilio_env
    round_id, attempt_id = claimed(sessions, phone=NUMBER)
    standin.fail_next(400, 21211, f"The 'To' number {NUMBER} is not a valid phone number.")

    assert placing.place_call(attempt_id) == "invalid number"

    attempt = attempt_of(sessions, attempt_id)
    with sessions() as session:
        household = session.scalar(select(Household).where(Household.phone == NUMBER))
        target = session.scalar(select(RoundTarget).where(RoundTarget.round_id == round_id))
    assert attempt.status is CallStatus.NOT_PLACED and attempt.error_code == "21211"
    assert attempt.error_message.endswith(f"The 'To' number {SHOWN} is not a valid phone number.")
    assert household.phone_status_reason.startswith("21211: ") and SHOWN in household.phone_status_reason
    assert target.phone == NUMBER  # the number itself is kept where it belongs
    with sessions() as session:
        stored = [m for m in session.scalars(select(CallAttempt.error_message)) if m]
    assert all("13812345678" not in text for text in stored)


def test_the_dialler_enqueues_ids_only(twilio_env, sessions) -> None:  # noqa: F811 - the imported fixture
    settings, _standin = twilio_env
    _round_id, attempt_id = claimed(sessions, phone=NUMBER)

    placing.enqueue_place_call(settings, attempt_id)

    [job] = queue(settings).jobs
    assert job.args == (attempt_id,) and job.kwargs == {}
    assert "13812345678" not in (job.description or "")
