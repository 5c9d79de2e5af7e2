"""Uploaded files kept between a preview and its confirmation (the roster import's two steps).

The file is kept on the server, in a folder of the system's temporary directory named by a random token; the
token is remembered in the signed-in user's session, so the confirmation imports exactly the file that was
checked, and no other user can name it. Nothing the browser sends back stands for the checked rows. A kept
file is removed when it is imported or discarded, when the user uploads another, and by any upload once it is
older than :data:`MAX_AGE` (a preview left open and never confirmed).
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from flask import session
from werkzeug.datastructures import FileStorage

MAX_AGE = 3600  # seconds a preview may wait for its confirmation
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# A file name as the office wrote it (Chinese included), without folders or characters a shell or a
# spreadsheet's title bar would trip on.
_UNSAFE = re.compile(r"[^\w.\-()（）\s]")


def upload_root() -> Path:
    return Path(tempfile.gettempdir()) / "sanlv-uploads"


@dataclass(frozen=True)
class Kept:
    token: str
    name: str  # the file's own name, as uploaded (cleaned)
    path: Path


def clean_name(filename: str | None, default: str) -> str:
    name = Path((filename or "").replace("\\", "/")).name.strip()
    name = _UNSAFE.sub("_", name)[-100:].lstrip(".")
    return name or default


def keep(kind: str, upload: FileStorage, default_name: str) -> Kept:
    """Save ``upload`` under a new token and remember it in the session as this user's ``kind`` upload."""
    sweep()
    discard(kind)
    token = secrets.token_urlsafe(24)
    folder = upload_root() / token
    folder.mkdir(mode=0o700, parents=True)
    name = clean_name(upload.filename, default_name)
    path = folder / name
    upload.save(path)
    session[f"upload_{kind}"] = {"token": token, "name": name}
    return Kept(token, name, path)


def kept(kind: str, token: str | None) -> Kept | None:
    """This user's ``kind`` upload, if ``token`` (from the confirmation form) is the one their session holds."""
    held = session.get(f"upload_{kind}")
    if not held or not token or held.get("token") != token or not _TOKEN.match(token):
        return None
    path = upload_root() / token / held["name"]
    return Kept(token, held["name"], path) if path.is_file() else None


def discard(kind: str) -> None:
    """Forget this user's ``kind`` upload and delete its file."""
    held = session.pop(f"upload_{kind}", None)
    if held and _TOKEN.match(held.get("token", "")):
        shutil.rmtree(upload_root() / held["token"], ignore_errors=True)


def sweep(now: float | None = None) -> int:
    """Delete kept uploads older than MAX_AGE; returns how many."""
    root = upload_root()
    if not root.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for folder in root.iterdir():
        try:
            if _TOKEN.match(folder.name) and now - folder.stat().st_mtime > MAX_AGE:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except FileNotFoundError:  # another process swept it first
            continue
    return removed
