"""Schema migrations (Alembic). The app never calls ``create_all`` in production paths."""

from __future__ import annotations

import functools

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from campaigns.db import make_engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "campaigns:migrations")
    # Alembic's Config interpolates %; escape it so URLs with encoded passwords survive.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    """Upgrade through an existing engine (tests, the demo)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    # Not engine.begin(): the migrations begin their own transaction (on SQLite, after switching foreign keys
    # off, which SQLite ignores inside a transaction; see campaigns/migrations/env.py).
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


@functools.cache
def head_revision() -> str:
    """The newest migration of this release (the one head; read once from the migration scripts)."""
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {', '.join(heads)}")
    return heads[0]


def current_revision(connection: Connection) -> str | None:
    """The migration the database is at (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()
