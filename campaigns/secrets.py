"""Secrets the deployment generates for itself and keeps in the database (``deployment_secrets``).

A deployment without Twilio credentials (the simulated phone network: the demo, a trial) still signs and
checks every webhook. Its key is not a constant in the source, which anyone could use to sign a forged
callback: the first process that needs it generates a random one, and every process of the deployment
(web, workers, the simulator) reads the same row.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from campaigns import clock
from campaigns.db import session_scope
from campaigns.models import DeploymentSecret
from campaigns.settings import Settings

log = logging.getLogger("sanlv.secrets")

WEBHOOK_TOKEN = "webhook_token"  # signs the simulated network's webhooks when there is no Twilio auth token


def deployment_secret(sessions: sessionmaker[Session], name: str) -> str:
    """The secret ``name``, generated (32 random bytes, URL-safe) and stored the first time it is asked for.

    Processes that ask at the same moment all get the one stored first (INSERT ... ON CONFLICT DO NOTHING).
    """
    with sessions() as session:
        value = session.scalar(select(DeploymentSecret.value).where(DeploymentSecret.name == name))
    if value is not None:
        return value
    with session_scope(sessions) as session:
        insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(
            insert(DeploymentSecret)
            .values(name=name, value=secrets.token_urlsafe(32), created_at=clock.now())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        value = session.scalar(select(DeploymentSecret.value).where(DeploymentSecret.name == name))
    assert value is not None
    log.info("event=secret_ready name=%s", name)
    return value


def webhook_token(settings: Settings, sessions: sessionmaker[Session]) -> str:
    """The key webhooks are signed with: Twilio's auth token (the first named account's when there are several);
    without one, the deployment's own."""
    if settings.twilio_auth_token:
        return settings.twilio_auth_token
    if settings.twilio_accounts:
        return settings.twilio_accounts[0].auth_token
    return deployment_secret(sessions, WEBHOOK_TOKEN)
