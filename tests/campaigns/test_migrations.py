"""Alembic migrations: from empty to head the schema is exactly the models'; ``sanlv db`` through the CLI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from campaigns import models  # noqa: F401  (registers the tables)
from campaigns.db import Base, make_engine
from campaigns.migrate import alembic_config, current, upgrade, upgrade_engine
from campaigns.runtime import set_runtime
from tests.campaigns.test_cli import one_line_error
from tests.conftest import TEST_DATABASE_URL, is_postgres

HEAD = "0009_notice_retention"


def schema_diff(engine: Engine) -> list:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_head_is_the_only_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))

    assert script.get_heads() == [HEAD]


def test_the_test_database_built_by_migrations_matches_the_models(engine: Engine) -> None:
    # conftest migrates the test database (SQLite or PostgreSQL, whichever this run uses) from empty.
    assert schema_diff(engine) == []
    assert current(engine.url.render_as_string(hide_password=False)) == HEAD


def test_upgrade_from_an_empty_sqlite_file_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"

    upgrade(url)

    engine = make_engine(url)
    try:
        assert schema_diff(engine) == []
        assert table_names(engine) == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()
    assert current(url) == HEAD


def test_downgrade_to_base_and_up_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    upgrade(url)

    command.downgrade(alembic_config(url), "base")

    engine = make_engine(url)
    try:
        assert table_names(engine) == {"alembic_version"}
        assert current(url) is None
        upgrade_engine(engine)
        assert schema_diff(engine) == []
    finally:
        engine.dispose()
    assert current(url) == HEAD


@pytest.fixture
def empty_pg_schema() -> Iterator[Engine]:
    """An empty PostgreSQL schema of its own (others' tests share the public schema of the test database)."""
    if not is_postgres():
        pytest.skip("PostgreSQL only (set SANLV_TEST_DATABASE_URL)")
    schema = f"migration_{uuid.uuid4().hex[:12]}"
    admin = make_engine(TEST_DATABASE_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(TEST_DATABASE_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_upgrade_from_an_empty_postgresql_schema_matches_the_models(empty_pg_schema: Engine) -> None:
    assert table_names(empty_pg_schema) == set()

    upgrade_engine(empty_pg_schema)

    assert table_names(empty_pg_schema) == set(Base.metadata.tables) | {"alembic_version"}
    assert schema_diff(empty_pg_schema) == []
    with empty_pg_schema.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == HEAD


# --- 0002: the report figures' copies are filled from existing rows ---------------------------------------

SEED_0001 = [
    "INSERT INTO villages (id, name, created_at) VALUES (1, '东村', '2026-01-01'), (2, '西村', '2026-01-01')",
    "INSERT INTO households (id, phone, village_id, phone_status, created_at, updated_at) VALUES"
    " (1, '+8613800000001', 1, 'ok', '2026-01-01', '2026-01-01'),"
    " (2, '+8613800000002', 2, 'ok', '2026-01-01', '2026-01-01'),"
    " (3, '+8613800000003', 2, 'ok', '2026-01-01', '2026-01-01')",
    "INSERT INTO questionnaire_versions (id, key, checksum, content, created_at)"
    " VALUES (1, 'default', 'x', '{}', '2026-01-01')",
    "INSERT INTO rounds (id, name, questionnaire_id, status, sample, windows, blocked_dates, max_attempts, cps,"
    " max_concurrent, retry, exclude_unsure, rate_targets, machine_detection, created_at) VALUES"
    " (1, 'r', 1, 'running', 'all', '[]', '[]', 3, 1, 5, '{}', false, '{}', false, '2026-01-01')",
    "INSERT INTO round_targets (id, round_id, household_id, phone, state, attempts, updated_at) VALUES"
    " (1, 1, 1, '+8613800000001', 'completed', 1, '2026-01-01'),"
    " (2, 1, 2, '+8613800000002', 'pending', 1, '2026-01-01'),"
    " (3, 1, 3, '+8613800000003', 'pending', 0, '2026-01-01')",
    "INSERT INTO responses (id, round_id, target_id, status, current_try, prompt_seq, started_at, updated_at) VALUES"
    " (1, 1, 1, 'completed', 0, 5, '2026-01-01', '2026-01-01'),"
    " (2, 1, 2, 'in_progress', 1, 3, '2026-01-01', '2026-01-01')",
    "INSERT INTO answers (id, response_id, round_id, question, digit, tries, invalid_keys, silences, created_at,"
    " updated_at) VALUES (1, 1, 1, 'security', '1', 1, 0, 0, '2026-01-01', '2026-01-01'),"
    " (2, 2, 1, 'security', '3', 1, 0, 0, '2026-01-01', '2026-01-01')",
]


def upgrade_0001_data(engine: Engine) -> None:
    upgrade_engine(engine, "0001")
    with engine.begin() as conn:
        for statement in SEED_0001:
            conn.execute(text(statement))
    upgrade_engine(engine)


def copies(engine: Engine) -> tuple[list, list]:
    with engine.connect() as conn:
        targets = conn.execute(text("SELECT id, village_id, response_status FROM round_targets ORDER BY id")).all()
        answers = conn.execute(text("SELECT id, village_id, counted FROM answers ORDER BY id")).all()
    return [tuple(row) for row in targets], [(i, v, bool(c)) for i, v, c in answers]


EXPECTED_COPIES = (
    [(1, 1, "completed"), (2, 2, "in_progress"), (3, 2, None)],
    [(1, 1, True), (2, 2, False)],
)


def test_0002_fills_the_copies_of_existing_rows_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade_0001_data(engine)

        assert copies(engine) == EXPECTED_COPIES
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_0002_fills_the_copies_of_existing_rows_on_postgresql(empty_pg_schema: Engine) -> None:
    upgrade_0001_data(empty_pg_schema)

    assert copies(empty_pg_schema) == EXPECTED_COPIES
    assert schema_diff(empty_pg_schema) == []


# --- 0003: accounts, tokens and the audit log on a database that already holds a round -------------------

USER_COLUMNS = "username, role, cadre_id, password_hash, disabled, session_epoch, created_at, updated_at"


def upgrade_0002_data_to_head(engine: Engine) -> None:
    upgrade_engine(engine, "0001")
    with engine.begin() as conn:
        for statement in SEED_0001:
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO cadres (id, name, phone, created_at) VALUES (1, '林建明', '', '2026-01-01')"))
    upgrade_engine(engine, "0002")
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0002"
    upgrade_engine(engine)


def account_rows_behave(engine: Engine) -> None:
    """The old rows are kept; the new tables take accounts and refuse what the CHECKs forbid."""
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO users (id, {USER_COLUMNS}) VALUES"
                " (1, 'admin', 'admin', NULL, 'h', false, 1, '2026-01-01', '2026-01-01'),"
                " (2, 'lin', 'cadre', 1, 'h', false, 1, '2026-01-01', '2026-01-01')"
            )
        )
        conn.execute(text("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES (1, :h, '2026-01-01')"),
                     {"h": "0" * 64})
        conn.execute(
            text("INSERT INTO audit_log (at, user_id, username, action, detail) VALUES ('2026-01-01', 1, 'admin', 'login', '{}')")
        )
    assert copies(engine) == EXPECTED_COPIES  # 0002's rows untouched
    refused = [
        # a cadre user without a cadre, a staff user linked to one, an unknown role, a second "admin"
        f"INSERT INTO users ({USER_COLUMNS}) VALUES ('x', 'cadre', NULL, 'h', false, 1, '2026-01-01', '2026-01-01')",
        f"INSERT INTO users ({USER_COLUMNS}) VALUES ('y', 'office', 1, 'h', false, 1, '2026-01-01', '2026-01-01')",
        f"INSERT INTO users ({USER_COLUMNS}) VALUES ('z', 'root', NULL, 'h', false, 1, '2026-01-01', '2026-01-01')",
        f"INSERT INTO users ({USER_COLUMNS}) VALUES ('admin', 'office', NULL, 'h', false, 1, '2026-01-01', '2026-01-01')",
        "INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES (2, '" + "0" * 64 + "', '2026-01-01')",
    ]
    for statement in refused:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT username FROM users ORDER BY id")).scalars().all() == ["admin", "lin"]


def test_0003_adds_accounts_to_a_0002_database_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade_0002_data_to_head(engine)

        assert schema_diff(engine) == []
        account_rows_behave(engine)
        command.downgrade(alembic_config(engine.url.render_as_string(hide_password=False)), "0002")
        assert not {"users", "api_tokens", "audit_log"} & table_names(engine)
        assert copies(engine) == EXPECTED_COPIES
    finally:
        engine.dispose()


def test_0003_adds_accounts_to_a_0002_database_on_postgresql(empty_pg_schema: Engine) -> None:
    upgrade_0002_data_to_head(empty_pg_schema)

    assert schema_diff(empty_pg_schema) == []
    account_rows_behave(empty_pg_schema)


# --- sanlv db --------------------------------------------------------------------------------------------


def sanlv(*args: str) -> Result:
    from web.cli import main

    return CliRunner().invoke(main, list(args))


@pytest.fixture
def fresh_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """DATABASE_URL names a file that does not exist yet; the runtime re-reads the environment."""
    path = tmp_path / "office.db"
    url = f"sqlite:///{path}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", url)
    for name in ("SANLV_TELEPHONY", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    set_runtime(None)
    yield path, url
    set_runtime(None)


def test_db_upgrade_creates_the_schema_and_current_prints_the_revision(fresh_sqlite: tuple[Path, str]) -> None:
    path, url = fresh_sqlite

    before = sanlv("db", "current")

    assert before.exit_code == 0, before.output
    assert before.stdout == "(empty database)\n"

    upgraded = sanlv("db", "upgrade")

    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout.splitlines()[-1] == f"database at revision {HEAD}"
    assert path.is_file()
    engine = make_engine(url)
    try:
        assert schema_diff(engine) == []
    finally:
        engine.dispose()

    now = sanlv("db", "current")

    assert now.exit_code == 0, now.output
    assert now.stdout == f"{HEAD}\n"


def test_db_upgrade_twice_changes_nothing(fresh_sqlite: tuple[Path, str]) -> None:
    assert sanlv("db", "upgrade").exit_code == 0

    again = sanlv("db", "upgrade")

    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[-1] == f"database at revision {HEAD}"
    assert sanlv("db", "current").stdout == f"{HEAD}\n"


def test_db_upgrade_to_an_unknown_revision_fails_with_one_line(fresh_sqlite: tuple[Path, str]) -> None:
    result = sanlv("db", "upgrade", "9999")

    assert one_line_error(result) == "revision 9999: Can't locate revision identified by '9999'"
    assert sanlv("db", "current").stdout == "(empty database)\n"


def test_db_commands_report_an_unreachable_database_in_one_line(
    fresh_sqlite: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'no-such-folder' / 'office.db'}")

    for command_ in ("upgrade", "current"):
        assert one_line_error(sanlv("db", command_)) == "database: unable to open database file"


def test_commands_on_a_database_without_the_schema_say_to_upgrade(fresh_sqlite: tuple[Path, str]) -> None:
    for args in (["round", "status", "1"], ["round", "launch", "1"], ["round", "create", "--name", "r"]):
        reason = one_line_error(sanlv(*args))

        assert reason.startswith("database: no such table: ")
        assert reason.endswith("(has `sanlv db upgrade` been run?)")
