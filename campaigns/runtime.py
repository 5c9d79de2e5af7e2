"""The process-wide runtime: settings, engine and session factory, created on first use (never at import)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from campaigns.db import make_engine, make_read_session_factory, make_session_factory
from campaigns.secrets import webhook_token
from campaigns.settings import Settings, load_settings


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def reads(self) -> sessionmaker[Session]:
        """Sessions that only read, in autocommit, taking no write lock (campaigns.db.make_read_session_factory)."""
        return make_read_session_factory(self.engine)

    @cached_property
    def webhook_token(self) -> str:
        """The key webhooks are signed with (campaigns.secrets.webhook_token), read once per runtime."""
        return webhook_token(self.settings, self.sessions)

    def dispose(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


_runtime: Runtime | None = None
_runtime_pid: int | None = None


def get_runtime() -> Runtime:
    """The runtime of this process. A forked child (a worker's scheduler process) gets its own engine and pool."""
    global _runtime, _runtime_pid
    if _runtime is None:
        _runtime = Runtime(load_settings())
        _runtime_pid = os.getpid()
    elif _runtime_pid != os.getpid():
        # Connections inherited across fork must not be shared; SQLAlchemy's guidance is dispose(close=False).
        if "engine" in _runtime.__dict__:
            _runtime.engine.dispose(close=False)
        _runtime_pid = os.getpid()
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (tests, the demo) or clear it so the next get_runtime() re-reads the environment."""
    global _runtime, _runtime_pid
    if _runtime is not None and runtime is not _runtime:
        _runtime.dispose()
    _runtime = runtime
    _runtime_pid = os.getpid() if runtime else None
