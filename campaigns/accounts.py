"""Accounts: users and their roles, passwords, sessions' identity, and per-user API tokens.

- **Roles** (:class:`campaigns.models.UserRole`): ``admin``, ``office``, ``supervisor``, ``cadre``. A cadre user
  is linked to exactly one roster cadre; no other user is linked to any (a CHECK constraint holds this too).
- **Passwords** are hashed with argon2id (argon2-cffi's defaults, the RFC 9106 low-memory profile) and checked
  in constant time; a hash made with older parameters is upgraded at the next successful sign-in. An unknown
  username costs the same hashing work as a known one, so timing does not reveal which names exist.
- **Sessions** carry :func:`session_key` (the user's id and ``session_epoch``). A new password, or disabling
  the user, bumps the epoch, so every session signed in before it is refused by :func:`user_for_session_key`.
- **API tokens** (``Authorization: Bearer``) are ``secrets.token_urlsafe`` values shown once; only their
  SHA-256 is stored. A token of a disabled user, or a revoked one, is refused.

Services take a ``Session`` and never commit; the caller owns the transaction. Every change here is a user
change that the caller records in the audit log (``campaigns.audit``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from campaigns import clock
from campaigns.errors import SanlvError
from campaigns.models import ApiToken, Cadre, User, UserRole

# Letters (Chinese too), digits, "." "_" "-"; stored in lower case so "Lin" and "lin" are one user.
USERNAME = re.compile(r"^[\w.-]{2,50}$")
PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 256  # argon2 hashes any length; this only bounds the work one request can ask for
TOKEN_PREFIX = "sanlv_"

ROLE_LABELS = {
    UserRole.ADMIN: "管理员",
    UserRole.OFFICE: "综治办",
    UserRole.SUPERVISOR: "督查组",
    UserRole.CADRE: "包户干部",
}

_hasher = PasswordHasher()


class AccountError(SanlvError, ValueError):
    """A user request cannot be done; the message says why, in Chinese then English.

    ``field`` names the input at fault (``username``, ``role``, ``cadre_id``, ``password``), so a form can show
    the message beside it; ``not_found`` is set when the user does not exist.
    """

    def __init__(self, message: str, *, field: str | None = None, not_found: bool = False):
        super().__init__(message)
        self.field = field
        self.not_found = not_found


class LoginFailed(SanlvError):
    """A sign-in was refused. The message never says whether the name or the password was wrong.

    ``reason`` (for the audit log only): ``unknown_user``, ``wrong_password`` or ``disabled``; ``user`` is the
    account the name belongs to, when there is one.
    """

    def __init__(self, reason: str, user: User | None = None):
        super().__init__("用户名或密码不正确 / wrong username or password")
        self.reason = reason
        self.user = user


# --- names, roles, passwords ------------------------------------------------------------------------------


def normalise_username(username: str) -> str:
    """The stored form of a username: trimmed and lower case. AccountError if it is not a valid name."""
    name = username.strip().lower()
    if not USERNAME.match(name):
        raise AccountError(
            f"用户名 {username!r} 无效：2 至 50 个字母、数字、汉字或 . _ - / "
            f"username {username!r} must be 2 to 50 letters, digits, '.', '_' or '-'",
            field="username",
        )
    return name


def parse_role(text: str | UserRole) -> UserRole:
    try:
        return UserRole(str(text).strip().lower())
    except ValueError:
        names = ", ".join(role.value for role in UserRole)
        raise AccountError(
            f"角色 {text!r} 不存在，只能是 {names} / role {text!r} must be one of {names}", field="role"
        ) from None


def check_password(password: str, username: str | None = None) -> None:
    """AccountError unless ``password`` is long enough, not too long, and not the username."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise AccountError(
            f"密码至少 {PASSWORD_MIN_LENGTH} 个字符 / the password must have at least {PASSWORD_MIN_LENGTH} characters",
            field="password",
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        raise AccountError(
            f"密码不能超过 {PASSWORD_MAX_LENGTH} 个字符 / "
            f"the password must have at most {PASSWORD_MAX_LENGTH} characters",
            field="password",
        )
    if username is not None and password.strip().lower() == username.strip().lower():
        raise AccountError("密码不能与用户名相同 / the password must not be the username", field="password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if ``password`` matches ``password_hash`` (argon2's own constant-time comparison)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@cache
def _decoy_hash() -> str:
    # Verified against when the username is unknown, so that case costs what a wrong password costs.
    return _hasher.hash(secrets.token_urlsafe(16))


# --- users ------------------------------------------------------------------------------------------------


def get_user(session: Session, username: str) -> User:
    """The user called ``username`` (any case). AccountError (``not_found``) if there is none."""
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        raise AccountError(f"用户 {username} 不存在 / user {username} does not exist", not_found=True)
    return user


def create_user(
    session: Session, username: str, role: str | UserRole, password: str, *, cadre_id: int | None = None
) -> User:
    """Add a user. A cadre user needs ``cadre_id`` (a roster cadre); no other role may have one.

    Raises:
        AccountError: a bad or taken username, an unknown role, a missing or unexpected cadre, a weak password.
    """
    name = normalise_username(username)
    user_role = parse_role(role)
    if user_role is UserRole.CADRE and cadre_id is None:
        raise AccountError(
            "包户干部账号必须指定关联的干部（名单中干部的编号）/ a cadre user needs a cadre (--cadre CADRE_ID)",
            field="cadre_id",
        )
    if user_role is not UserRole.CADRE and cadre_id is not None:
        raise AccountError(
            f"只有包户干部账号关联干部，{user_role.value} 不能指定干部 / only a cadre user is linked to a cadre",
            field="cadre_id",
        )
    if cadre_id is not None and session.get(Cadre, cadre_id) is None:
        raise AccountError(f"干部 {cadre_id} 不存在 / cadre {cadre_id} does not exist", field="cadre_id")
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise AccountError(f"用户名 {name} 已被使用 / username {name} is taken", field="username")
    check_password(password, name)
    user = User(username=name, role=user_role, cadre_id=cadre_id, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: User, password: str) -> None:
    """Give ``user`` a new password and end every session signed in with the old one."""
    check_password(password, user.username)
    user.password_hash = hash_password(password)
    user.session_epoch += 1
    session.flush()


def disable_user(session: Session, user: User) -> None:
    """Refuse the user's sign-ins, end their sessions and revoke their API tokens. Idempotent."""
    if not user.disabled:
        user.disabled = True
        user.session_epoch += 1
    revoke_tokens(session, user)
    session.flush()


def authenticate(session: Session, username: str, password: str) -> User:
    """The user whose name and password these are, if they may sign in. Records the sign-in time.

    Raises:
        LoginFailed: unknown name, wrong password or disabled user (one message for all three).
    """
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        verify_password(_decoy_hash(), password)
        raise LoginFailed("unknown_user")
    if not verify_password(user.password_hash, password):
        raise LoginFailed("wrong_password", user)
    if user.disabled:
        raise LoginFailed("disabled", user)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)  # same password, current parameters: the epoch stays
    user.last_login_at = clock.now()
    session.flush()
    return user


def session_key(user: User) -> str:
    """What a web session stores to name its user: id and epoch, so a new password ends older sessions."""
    return f"{user.id}:{user.session_epoch}"


def user_for_session_key(session: Session, key: str) -> User | None:
    """The user a session names, if the session is still valid (same epoch, user not disabled)."""
    user_id, _, epoch = str(key).partition(":")
    if not (user_id.isdigit() and epoch.isdigit()):
        return None
    user = session.get(User, int(user_id))
    if user is None or user.disabled or user.session_epoch != int(epoch):
        return None
    return user


# --- API tokens -------------------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, user: User) -> str:
    """A new API token for ``user``. Only its hash is stored: the returned value is the one chance to see it."""
    if user.disabled:
        raise AccountError(f"用户 {user.username} 已停用 / user {user.username} is disabled")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_digest(token)))
    session.flush()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    """The user a bearer token belongs to, or None (unknown, revoked, or its user is disabled).

    The lookup is by the token's SHA-256: an index search on a hash of 256 random bits tells a guesser nothing
    about any stored token; the final comparison is constant-time all the same.
    """
    if not token or len(token) > 200:
        return None
    digest = _digest(token)
    row = session.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    api_token, user = row
    if not hmac.compare_digest(api_token.token_hash, digest) or user.disabled:
        return None
    api_token.last_used_at = clock.now()
    session.flush()
    return user


def revoke_tokens(session: Session, user: User) -> int:
    """Revoke every API token of ``user``; returns how many were still valid."""
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))
