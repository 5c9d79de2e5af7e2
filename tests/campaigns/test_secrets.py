"""The deployment's own secrets: the simulated network's webhook key is generated once per deployment, kept in
the database, shared by every process, and no public constant signs a webhook."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from campaigns.models import DeploymentSecret
from campaigns.runtime import Runtime
from campaigns.secrets import WEBHOOK_TOKEN, deployment_secret, webhook_token
from campaigns.settings import Settings
from tests.ivr.support import base_params, post
from tests.ivr.support import open_call as open_call_in

OLD_PUBLIC_TOKEN = "sanlv-simulator"  # what every simulator deployment signed with before


def test_the_key_is_generated_once_and_kept(settings: Settings, sessions) -> None:
    first = webhook_token(settings, sessions)
    again = webhook_token(settings, sessions)

    assert first == again and len(first) >= 40 and first != OLD_PUBLIC_TOKEN
    with sessions() as session:
        assert session.scalar(select(DeploymentSecret.value).where(DeploymentSecret.name == WEBHOOK_TOKEN)) == first


def test_two_deployments_get_different_keys(settings: Settings, sessions, tmp_path) -> None:
    from campaigns.migrate import upgrade

    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(other_url)
    other = Runtime(Settings(database_url=other_url))
    try:
        assert webhook_token(settings, sessions) != other.webhook_token
    finally:
        other.dispose()


def test_processes_asking_at_once_all_get_the_one_stored(settings: Settings, sessions) -> None:
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _n: deployment_secret(sessions, "race"), range(16)))

    assert len(keys) == 1
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DeploymentSecret)) == 1


def test_another_process_of_the_deployment_reads_the_same_key(env: Settings, sessions) -> None:
    script = "from campaigns.runtime import get_runtime; print(get_runtime().webhook_token)"
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)

    assert child.stdout.strip() == webhook_token(env, sessions)


def test_twilio_deployments_sign_with_the_auth_token(settings: Settings, sessions) -> None:
    from dataclasses import replace

    assert webhook_token(replace(settings, twilio_auth_token="tw-auth"), sessions) == "tw-auth"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DeploymentSecret)) == 0


def test_a_callback_signed_with_the_old_public_constant_is_refused(live_server, sessions) -> None:
    attempt_id = open_call_in(sessions)
    path = f"/ivr/voice?attempt={attempt_id}"

    forged = post(live_server, path, base_params(), token=OLD_PUBLIC_TOKEN)
    genuine = post(live_server, path, base_params())

    assert forged.status_code == 403
    assert genuine.status_code == 200
