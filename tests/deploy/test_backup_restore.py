"""Backup and restore as docs/operations.md gives them: ``pg_dump --format=custom --no-owner``, then
``pg_restore --no-owner`` into a fresh database, and every report prints the same.

PostgreSQL only (the production database); the test run's schema is dumped (the guide dumps the whole
database) and restored into a database of its own, dropped at the end.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from campaigns.db import make_session_factory
from campaigns.followups import mark_followup, sync_followups
from campaigns.models import FollowUp, ResponseStatus, RoundStatus, TargetState, Village
from campaigns.runtime import Runtime, set_runtime
from campaigns.settings import Settings
from tests.conftest import is_postgres
from tests.factories import interview_answers, make_interview, make_round, make_target, make_village
from tests.reports.scenarios import visits_township
from web.cli import main

pytestmark = pytest.mark.skipif(not is_postgres(), reason="backup and restore are PostgreSQL's (set SANLV_TEST_DATABASE_URL)")


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as pg_dump and pg_restore take it (no driver, no search_path option)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql", query={}).render_as_string(hide_password=False)


def schema_of(url: str) -> str:
    options = make_url(url).query["options"]
    return re.fullmatch(r"-csearch_path=(\w+)", options if isinstance(options, str) else options[0]).group(1)


def client_tools(url: str) -> tuple[str, str]:
    """pg_dump and pg_restore of the server's major version (pg_dump refuses a newer server)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        major = int(conn.execute(text("SHOW server_version_num")).scalar()) // 10000
    engine.dispose()
    found = []
    for tool in ("pg_dump", "pg_restore"):
        versioned = Path(f"/usr/lib/postgresql/{major}/bin/{tool}")
        path = str(versioned) if versioned.exists() else shutil.which(tool)
        if path is None:
            pytest.skip(f"{tool} is not installed (apt-get install postgresql-client-{major})")
        version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
        client = int(re.search(r"(\d+)\.\d+", version).group(1))
        if client < major:
            pytest.skip(f"{tool} is version {client}, the server {major}: install postgresql-client-{major}")
        found.append(path)
    return found[0], found[1]


def build_township(sessions) -> tuple[int, int]:
    """Two rounds of the same township: an earlier completed one and the running one with follow-ups."""
    with sessions.begin() as session:
        visits = visits_township(session)
        current = visits.round
        east = session.scalar(select(Village).where(Village.name == "东村"))
        west = session.scalar(select(Village).where(Village.name == "西村"))
        earlier = make_round(session, name="2025年下半年", status=RoundStatus.COMPLETED)
        for village, answers in (
            (east, interview_answers()),
            (east, interview_answers("2", awareness="2", satisfaction="0")),
            (east, interview_answers("3", satisfaction="3", visit="2")),
            (west, interview_answers(participation="2", cadre_contact="0")),
            (west, interview_answers("4", satisfaction="4", visit="1")),
        ):
            make_interview(session, earlier, answers, village=village)
        make_interview(session, earlier, {"consent": "2"}, village=west, status=ResponseStatus.REFUSED)
        make_target(session, earlier, state=TargetState.UNREACHABLE, attempts=3)
        make_target(session, current, state=TargetState.PENDING, attempts=0)
        sync_followups(session, current.id)
        sync_followups(session, earlier.id)
        first = session.scalars(select(FollowUp.id).where(FollowUp.round_id == current.id).order_by(FollowUp.id)).first()
        # A note a spreadsheet would run as a formula: the CSV export neutralises it, before and after.
        mark_followup(session, first, "visited", "=1+1 已上门,居民表示满意", actor="office",
                      now=datetime(2026, 3, 3, 8, 0, tzinfo=UTC))
        return earlier.id, current.id


def reports(url: str, earlier: int, current: int) -> dict[str, str]:
    """Every report of both rounds, in every text format, read from the database at ``url``."""
    set_runtime(Runtime(Settings(database_url=url, secret_key="test-secret")))
    runner = CliRunner()
    commands = {}
    for round_id in (earlier, current):
        for fmt in ("table", "json", "csv"):
            commands[f"rates {round_id} {fmt}"] = ["rates", str(round_id), "--format", fmt]
            commands[f"followups {round_id} {fmt}"] = ["followups", str(round_id), "--format", fmt]
            commands[f"cadres {round_id} {fmt}"] = ["cadres", str(round_id), "--format", fmt]
    for fmt in ("table", "json", "csv"):
        commands[f"compare {fmt}"] = ["compare", str(earlier), str(current), "--format", fmt]
    out = {}
    try:
        for name, args in commands.items():
            result = runner.invoke(main, ["report", *args])
            assert result.exit_code == 0, f"sanlv report {' '.join(args)}: {result.output}"
            out[name] = result.output
    finally:
        set_runtime(None)
    return out


def test_a_restored_dump_gives_identical_reports(database_url, sessions, tmp_path):
    earlier, current = build_township(sessions)
    before = reports(database_url, earlier, current)
    assert "东村" in before[f"rates {current} json"] and "=1+1" in before[f"followups {current} json"]

    pg_dump, pg_restore = client_tools(database_url)
    schema = schema_of(database_url)
    dump = tmp_path / "sanlv.dump"
    subprocess.run(
        [pg_dump, "--format=custom", "--no-owner", f"--schema={schema}", f"--file={dump}", libpq_url(database_url)],
        check=True, capture_output=True, timeout=300,
    )
    assert dump.read_bytes()[:5] == b"PGDMP"  # the custom format

    name = f"sanlv_restore_{secrets.token_hex(4)}"
    admin = create_engine(make_url(database_url).set(query={}), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    restored_url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    try:
        result = subprocess.run(
            [pg_restore, "--no-owner", "--exit-on-error", f"--dbname={libpq_url(restored_url)}", str(dump)],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr
        after = reports(restored_url, earlier, current)
        assert after.keys() == before.keys()
        for report, output in before.items():
            assert after[report] == output, f"report {report} differs after the restore"

        restored = create_engine(restored_url)
        try:
            with restored.connect() as conn:
                # The schema's migration mark came along, so the app sees a current database.
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            # Sequences came along too: the restored database goes on numbering where the old one stopped.
            with make_session_factory(restored).begin() as session:
                last = session.scalar(select(func.max(Village.id)))
                village = make_village(session, name="新村")
                assert village.id > last
        finally:
            restored.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
