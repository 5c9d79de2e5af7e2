"""The domain's labels (roles, audit actions, follow-up statuses) as the pages show them, translatable.

Written out with ``lazy_gettext`` so that ``pybabel extract`` finds them; ``tests/web/test_i18n.py`` checks that
they stay equal to the labels the command line prints (``campaigns.accounts``, ``campaigns.audit``,
``campaigns.followups``).
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from campaigns import audit
from campaigns.models import CallStatus, FollowUpStatus, RoundStatus, TargetState, UserRole

ROLE_LABELS = {
    UserRole.ADMIN: _l("管理员"),
    UserRole.OFFICE: _l("综治办"),
    UserRole.SUPERVISOR: _l("督查组"),
    UserRole.CADRE: _l("包户干部"),
}

ACTION_LABELS = {
    audit.LOGIN: _l("登录"),
    audit.LOGIN_FAILED: _l("登录失败"),
    audit.LOGOUT: _l("退出"),
    audit.ROSTER_IMPORT: _l("导入名单"),
    audit.ROUND_CREATE: _l("创建调查"),
    audit.ROUND_LAUNCH: _l("启动调查"),
    audit.ROUND_PAUSE: _l("暂停调查"),
    audit.ROUND_RESUME: _l("恢复调查"),
    audit.ROUND_CANCEL: _l("取消调查"),
    audit.EXPORT: _l("导出"),
    audit.PHONES_VIEW: _l("查看完整号码"),
    audit.FOLLOWUP_MARK: _l("回访记录"),
    audit.USER_ADD: _l("添加用户"),
    audit.USER_DISABLE: _l("停用用户"),
    audit.USER_PASSWORD: _l("修改密码"),
    audit.USER_TOKEN: _l("发放 API 令牌"),
    audit.USER_TOKENS_REVOKE: _l("吊销 API 令牌"),
    audit.DNC_ADD: _l("加入免打扰"),
    audit.DNC_REMOVE: _l("移出免打扰"),
    audit.DNC_IMPORT: _l("导入免打扰名单"),
    audit.HOUSEHOLD_FORGET: _l("删除号码数据"),
    audit.DATA_RETAIN: _l("到期数据去标识"),
    audit.QUESTIONNAIRE_UPLOAD: _l("上传问卷"),
    audit.RECORDING_UPLOAD: _l("上传录音"),
}

FOLLOWUP_STATUS_LABELS = {
    FollowUpStatus.PENDING: _l("待走访"),
    FollowUpStatus.VISITED: _l("已走访"),
    FollowUpStatus.RESOLVED: _l("已解决"),
    FollowUpStatus.UNREACHABLE: _l("无法联系"),
}

ROUND_STATUS_LABELS = {
    RoundStatus.DRAFT: _l("草稿"),
    RoundStatus.RUNNING: _l("进行中"),
    RoundStatus.PAUSED: _l("已暂停"),
    RoundStatus.COMPLETED: _l("已完成"),
    RoundStatus.CANCELLED: _l("已取消"),
}

TARGET_STATE_LABELS = {
    TargetState.PENDING: _l("待拨打"),
    TargetState.DIALING: _l("拨号中"),
    TargetState.IN_CALL: _l("通话中"),
    TargetState.COMPLETED: _l("完成访问"),
    TargetState.REFUSED: _l("拒绝"),
    TargetState.INELIGIBLE: _l("不符合条件"),
    TargetState.OPTED_OUT: _l("要求不再来电"),
    TargetState.UNREACHABLE: _l("未能接通"),
    TargetState.INVALID: _l("号码无效"),
    TargetState.CANCELLED: _l("已取消"),
}

CALL_STATUS_LABELS = {
    CallStatus.CLAIMED: _l("准备拨打"),
    CallStatus.QUEUED: _l("排队中"),
    CallStatus.INITIATED: _l("拨号中"),
    CallStatus.RINGING: _l("振铃中"),
    CallStatus.IN_PROGRESS: _l("通话中"),
    CallStatus.COMPLETED: _l("已接通"),
    CallStatus.BUSY: _l("忙线"),
    CallStatus.NO_ANSWER: _l("无人接听"),
    CallStatus.FAILED: _l("失败"),
    CallStatus.CANCELED: _l("已取消"),
    CallStatus.NOT_PLACED: _l("未拨出"),
}


def label(kind: str, value: object) -> str:
    """The translated label of a role, audit action, follow-up, round, target or call status (``value`` if unknown)."""
    table = {
        "role": ROLE_LABELS,
        "action": ACTION_LABELS,
        "followup": FOLLOWUP_STATUS_LABELS,
        "round": ROUND_STATUS_LABELS,
        "target": TARGET_STATE_LABELS,
        "call": CALL_STATUS_LABELS,
    }[kind]
    key = getattr(value, "value", value)
    for known, text in table.items():
        if getattr(known, "value", known) == key:
            return str(text)
    return str(key)
