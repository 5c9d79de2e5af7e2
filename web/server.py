"""Serving the app with gunicorn (production) from the ``sanlv web`` command.

gunicorn believes ``X-Forwarded-Proto`` (https behind a proxy) only from SANLV_TRUSTED_PROXIES; the app itself
applies ``X-Forwarded-For`` / ``-Host`` from the same addresses only (web.security.proxy).
"""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from campaigns.runtime import set_runtime
from web.app import create_app


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Each gunicorn worker builds its own runtime (engine, pool) after the fork.
        set_runtime(None)
        return create_app()


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


def serve_gunicorn(host: str, port: int, workers: int, *, trusted_proxies: tuple[str, ...]) -> None:
    app = _Gunicorn(gunicorn_options(host, port, workers, trusted_proxies))
    app.run()
