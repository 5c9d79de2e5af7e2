"""A redis-server of a test run's (or a benchmark's) own, on a free loopback port: never the shared one.

Used by the test suite's Redis, the Redis-restart tests (which kill and start it again, empty) and the
benchmarks.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.support.ports import free_port


class RedisServerError(RuntimeError):
    """redis-server is not installed, or did not answer after starting."""


class RedisServer:
    """``start()`` runs redis-server on a free port (no persistence, files in ``workdir``); ``kill()`` ends it
    at once, as a crash would; ``stop()`` ends it politely. ``url`` stays the same across restarts."""

    def __init__(self, workdir: Path | str):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError("redis-server is not installed")
        self.binary = binary
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        conn = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    conn.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.proc.kill()
                        self.proc = None
                        raise RedisServerError(f"redis-server did not start on port {self.port}") from None
                    time.sleep(0.05)
        finally:
            conn.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
