"""The audit log: who did what, when, and from where.

Recorded (by whoever performs the action, in the same transaction as the action itself):

- sign-ins and failed sign-ins, sign-outs (``web.security``);
- roster imports; round create, launch, pause, resume, cancel; follow-up changes (CLI and web);
- every export written to a file (CLI) or downloaded (web);
- every view of a list with full phone numbers (a cadre's own list);
- user changes (CLI and the admin pages);
- do-not-call list changes (the office pages and ``sanlv dnc``), questionnaire and recording uploads;
- erasing a number's data (``household forget``) and pseudonymising old rounds (``data retain``).

The application only ever appends: :func:`record` is the one writer, and the ``AuditEntry`` model refuses
updates and deletes. Admins read it in the audit page; ``sanlv audit`` prints it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.models import AuditEntry, User

LOGIN = "login"
LOGIN_FAILED = "login.failed"
LOGOUT = "logout"
ROSTER_IMPORT = "roster.import"
ROUND_CREATE = "round.create"
ROUND_LAUNCH = "round.launch"
ROUND_PAUSE = "round.pause"
ROUND_RESUME = "round.resume"
ROUND_CANCEL = "round.cancel"
EXPORT = "export"
PHONES_VIEW = "phones.view"
FOLLOWUP_MARK = "followup.mark"
USER_ADD = "user.add"
USER_DISABLE = "user.disable"
USER_PASSWORD = "user.password"
USER_TOKEN = "user.token"
USER_TOKENS_REVOKE = "user.tokens_revoke"
DNC_ADD = "dnc.add"
DNC_REMOVE = "dnc.remove"
DNC_IMPORT = "dnc.import"
HOUSEHOLD_FORGET = "household.forget"
DATA_RETAIN = "data.retain"
QUESTIONNAIRE_UPLOAD = "questionnaire.upload"
RECORDING_UPLOAD = "recording.upload"

ROUND_ACTIONS = {
    "launch": ROUND_LAUNCH,
    "pause": ROUND_PAUSE,
    "resume": ROUND_RESUME,
    "cancel": ROUND_CANCEL,
}

# Shown in the audit page and by ``sanlv audit`` beside the action's key.
ACTION_LABELS = {
    LOGIN: "登录",
    LOGIN_FAILED: "登录失败",
    LOGOUT: "退出",
    ROSTER_IMPORT: "导入名单",
    ROUND_CREATE: "创建调查",
    ROUND_LAUNCH: "启动调查",
    ROUND_PAUSE: "暂停调查",
    ROUND_RESUME: "恢复调查",
    ROUND_CANCEL: "取消调查",
    EXPORT: "导出",
    PHONES_VIEW: "查看完整号码",
    FOLLOWUP_MARK: "回访记录",
    USER_ADD: "添加用户",
    USER_DISABLE: "停用用户",
    USER_PASSWORD: "修改密码",
    USER_TOKEN: "发放 API 令牌",
    USER_TOKENS_REVOKE: "吊销 API 令牌",
    DNC_ADD: "加入免打扰",
    DNC_REMOVE: "移出免打扰",
    DNC_IMPORT: "导入免打扰名单",
    HOUSEHOLD_FORGET: "删除号码数据",
    DATA_RETAIN: "到期数据去标识",
    QUESTIONNAIRE_UPLOAD: "上传问卷",
    RECORDING_UPLOAD: "上传录音",
}


def record(
    session: Session,
    actor: User | str,
    action: str,
    *,
    object_type: str | None = None,
    object_id: object = None,
    detail: Mapping[str, Any] | None = None,
    remote_addr: str | None = None,
    user_id: int | None = None,
) -> AuditEntry:
    """Append one entry. The caller's transaction commits it together with the action it describes.

    Args:
        actor: the signed-in user, or a name such as ``cli:alice`` (the command line) or the username a failed
            sign-in tried.
        action: one of this module's action keys.
        object_type, object_id: what the action was about (``round``, 12).
        detail: anything else worth keeping, as JSON (paths, dates and the like become strings).
        remote_addr: the client's address, for web requests.
        user_id: the account behind a name given as ``actor`` (the signed-in user of a web request, the known
            account a failed sign-in tried).
    """
    if isinstance(actor, User):
        user_id, username = actor.id, actor.username
    else:
        username = actor
    entry = AuditEntry(
        at=clock.now(),
        user_id=user_id,
        username=username[:100],
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id)[:100],
        detail=json.loads(json.dumps(dict(detail or {}), ensure_ascii=False, default=str)),
        remote_addr=(remote_addr or None) and remote_addr[:64],
    )
    session.add(entry)
    session.flush()
    return entry


def query(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    username: str | None = None,
    action: str | None = None,
) -> Select[tuple[AuditEntry]]:
    """The entries matching the filters, newest first (a statement: page it, count it, or run it)."""
    stmt = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.at < until)
    if username:
        # Usernames are stored in lower case; "cli:<os user>" names as the system spells them.
        stmt = stmt.where(AuditEntry.username.in_({username.strip(), username.strip().lower()}))
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    return stmt


def entries(session: Session, **filters: Any) -> list[AuditEntry]:
    """Every entry matching :func:`query`'s filters, oldest first (as a log reads)."""
    return list(reversed(session.scalars(query(**filters)).all()))
