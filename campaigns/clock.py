"""The clock. Everything that decides by time asks ``now()`` so tests can control time across processes.

With ``SANLV_CLOCK_FILE`` set (tests only), the current time is read from that file: an ISO timestamp,
optionally followed by ``+`` meaning "then advance in real time from when the file was written".
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path


def now() -> datetime:
    path = os.environ.get("SANLV_CLOCK_FILE")
    if not path:
        return datetime.now(UTC)
    file = Path(path)
    text = file.read_text(encoding="utf-8").strip()
    running = text.endswith("+")
    value = datetime.fromisoformat(text.rstrip("+"))
    if value.tzinfo is None:
        raise ValueError(f"SANLV_CLOCK_FILE {path}: {text!r} has no UTC offset")
    if running:
        value += timedelta(seconds=max(0.0, datetime.now(UTC).timestamp() - file.stat().st_mtime))
    return value.astimezone(UTC)


def set_clock_file(path: Path, value: datetime, running: bool = False) -> None:
    """Write the controlled time (test helper; atomic so readers never see a half-written file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value.isoformat() + ("+" if running else ""), encoding="utf-8")
    os.replace(tmp, path)
