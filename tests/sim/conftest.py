"""Fixtures of the simulated phone network's tests: the fake IVR over HTTP, an HTTP session, no simulation
options leaking in from the environment."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from werkzeug.serving import make_server

from campaigns.models import DeploymentSecret
from campaigns.runtime import get_runtime
from campaigns.secrets import WEBHOOK_TOKEN
from tests.sim.fake_ivr import FAKE_TOKEN, FakeIvr


@pytest.fixture(autouse=True)
def _no_sim_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANLV_SIM_SEED", raising=False)
    monkeypatch.delenv("SANLV_SIM_SPEED", raising=False)


@pytest.fixture
def ivr(request: pytest.FixtureRequest) -> Iterator[FakeIvr]:
    if "env" in request.fixturenames:
        # The network's job (run_call) signs with the deployment's own key: make it the one the fake IVR checks.
        request.getfixturevalue("env")
        with get_runtime().sessions.begin() as session:
            session.add(DeploymentSecret(name=WEBHOOK_TOKEN, value=FAKE_TOKEN))
    fake = FakeIvr(token=FAKE_TOKEN)
    server = make_server("127.0.0.1", 0, fake.app(), threaded=True)
    fake.base = f"http://127.0.0.1:{server.port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
