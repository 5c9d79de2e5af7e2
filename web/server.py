"""Serving the app with gunicorn (production) from the ``sanlv web`` command.

gunicorn believes ``X-Forwarded-Proto`` (https behind a proxy) only from SANLV_TRUSTED_PROXIES; the app itself
applies ``X-Forwarded-For`` / ``-Host`` from the same addresses only (web.security.proxy).

Logs: gunicorn's error and access logs and the app's own lines go through sanlv's one-line handler
(campaigns.logs, role ``web``); the access log writes the path without its query string.

Metrics: with SANLV_METRICS_BIND, gunicorn binds a second listener there, which answers ``/metrics`` and
nothing else (web.monitoring.MetricsListener). Its workers count in prometheus-client's multiprocess mode:
``PROMETHEUS_MULTIPROC_DIR`` if it is set (emptied at start, as prometheus-client requires), else a fresh
temporary directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gunicorn.app.base import BaseApplication
from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead

from campaigns.errors import SanlvError
from campaigns.logs import ACCESS_LOG_FORMAT, gunicorn_logconfig
from campaigns.runtime import get_runtime, set_runtime
from campaigns.settings import Settings
from web.app import create_app
from web.monitoring import MetricsListener


class ServingError(SanlvError):
    """The web server cannot be set up as configured."""


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict, metrics_port: int | None = None):
        self.options = options
        self.metrics_port = metrics_port
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Each gunicorn worker builds its own runtime (engine, pool) after the fork.
        set_runtime(None)
        app = create_app()
        if self.metrics_port is None:
            return app
        return MetricsListener(app, self.metrics_port, get_runtime())


def _child_exit(_server, worker) -> None:
    # prometheus-client's bookkeeping for a worker that ended (its live gauges).
    mark_process_dead(worker.pid)


def gunicorn_options(host: str, port: int, workers: int, trusted_proxies: tuple[str, ...]) -> dict:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": 8,
        "timeout": 30,
        "accesslog": "-",
        "forwarded_allow_ips": ",".join(trusted_proxies),
    }


def prepare_multiprocess_dir() -> str:
    """Point prometheus-client at an empty multiprocess directory, before any metric is made or forked."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):  # counts of a previous run's processes
            stale.unlink()
    else:
        path = tempfile.mkdtemp(prefix="sanlv-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    # prometheus-client chose its value class when it was imported; choose again now that the directory is set
    # (the webhook metrics are made on first use, in the workers, after this).
    values.ValueClass = values.get_value_class()
    return path


def metrics_port(bind: str, public_port: int) -> int:
    """The port of SANLV_METRICS_BIND, which must differ from the public listener's."""
    port = int(bind.rpartition(":")[2])
    if port == public_port:
        raise ServingError(f"SANLV_METRICS_BIND={bind!r} uses the web server's own port {public_port}; choose another")
    return port


def serve_gunicorn(host: str, port: int, workers: int, *, settings: Settings) -> None:
    options = gunicorn_options(host, port, workers, settings.trusted_proxies)
    options["logconfig_dict"] = gunicorn_logconfig(settings)
    options["access_log_format"] = ACCESS_LOG_FORMAT
    listener = None
    if settings.metrics_bind:
        listener = metrics_port(settings.metrics_bind, port)
        options["bind"] = [options["bind"], settings.metrics_bind]
        options["child_exit"] = _child_exit
        prepare_multiprocess_dir()
    _Gunicorn(options, listener).run()
