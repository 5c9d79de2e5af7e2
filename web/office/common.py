"""What the office page modules share: the runtime, numbers from forms, local times, durations."""

from __future__ import annotations

from datetime import datetime

from flask import abort, current_app, request
from flask_babel import gettext

from campaigns.runtime import Runtime
from campaigns.settings import Settings


def runtime() -> Runtime:
    return current_app.extensions["sanlv"]


def settings() -> Settings:
    return runtime().settings


def int_arg(name: str) -> int | None:
    """A whole-number query parameter (None when absent or empty); 400 naming it otherwise."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 9:
        abort(400, description=f"参数 {name} 必须是正整数 / {name} must be a whole number: {raw!r}")
    return int(raw)


def duration_text(seconds: float | None) -> str:
    """``5400`` -> ``1 小时 30 分``; None -> ``—`` (a draft or paused round has no ETA)."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return gettext("%(days)d 天 %(hours)d 小时", days=days, hours=hours)
    if hours:
        return gettext("%(hours)d 小时 %(minutes)d 分", hours=hours, minutes=minutes)
    if minutes:
        return gettext("%(minutes)d 分 %(seconds)d 秒", minutes=minutes, seconds=secs)
    return gettext("%(seconds)d 秒", seconds=secs)


def local_input(moment: datetime | None) -> str:
    """An aware time as the value of an ``<input type="datetime-local">`` in SANLV_TIMEZONE."""
    if moment is None:
        return ""
    return moment.astimezone(settings().tz).strftime("%Y-%m-%dT%H:%M")
