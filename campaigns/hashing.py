"""Keyed hashes of phone numbers: HMAC-SHA256 with a key generated once per database (``hash_keys``).

A forgotten number (campaigns.privacy) can still be recognised, and never called, without being kept. The key
lives in the database because it must outlive any ``SECRET_KEY`` rotation; the hash therefore protects a number
from being read off a row, not from someone holding a copy of the whole database (the space of phone numbers
is small enough to try them all).
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns.models import PHONE_HASH_KEY, HashKey, keyed_phone_hash

PHONE_KEY = PHONE_HASH_KEY


def hash_key(session: Session, name: str = PHONE_KEY) -> bytes:
    """The database's key called ``name``, generated on first use (the migration makes the phone key)."""
    cache = session.info.setdefault("sanlv_hash_keys", {})
    if name in cache:
        return cache[name]
    value = session.scalar(select(HashKey.key).where(HashKey.name == name))
    if value is None:
        try:
            with session.begin_nested():
                session.add(HashKey(name=name, key=secrets.token_hex(32)))
        except IntegrityError:  # another process made it first: use theirs
            pass
        value = session.scalar(select(HashKey.key).where(HashKey.name == name))
    assert value is not None
    cache[name] = bytes.fromhex(value)
    return cache[name]


def phone_hash(session: Session, e164: str) -> str:
    """The keyed hash (hex) of an E.164 number."""
    return keyed_phone_hash(hash_key(session), e164)
