"""Serving the app with gunicorn (production) from the ``sanlv web`` command."""

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


def serve_gunicorn(host: str, port: int, workers: int) -> None:
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "gthread",
            "threads": 8,
            "timeout": 30,
            "accesslog": "-",
            "forwarded_allow_ips": "*",
        }
    ).run()
