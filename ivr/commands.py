"""``sanlv web`` and ``sanlv demo``."""

from __future__ import annotations

import click


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", "worker_count", default=2, show_default=True, type=int, help="gunicorn worker processes")
@click.option("--dev", is_flag=True, help="Flask's development server with the reloader (never in production).")
def web_command(host: str, port: int, worker_count: int, dev: bool) -> None:
    """Serve the web app (IVR webhooks, API) with gunicorn."""
    from campaigns.cli import runtime_or_exit

    rt = runtime_or_exit()
    if dev:
        from ivr.app import create_app

        create_app(rt).run(host=host, port=port, debug=True, use_reloader=True)
        return
    from ivr.server import serve_gunicorn

    serve_gunicorn(host, port, worker_count)


@click.command("demo")
@click.option("--households", default=200, show_default=True, type=int, help="size of the synthetic roster")
@click.option("--villages", default=10, show_default=True, type=int)
@click.option("--workers", "worker_count", default=3, show_default=True, type=int, help="RQ worker processes")
@click.option("--dir", "directory", default=None, help="keep the demo's database here (default: a new temp dir)")
@click.option("--seed", default=2026, show_default=True, type=int)
@click.option("--timeout", default=110, show_default=True, type=int, help="give up after this many seconds")
def demo_command(households: int, villages: int, worker_count: int, directory: str | None, seed: int, timeout: int) -> None:
    """Run a whole survey round on the embedded default (SQLite, simulated phones), then print its report."""
    from ivr.demo import DemoError, run_demo

    if villages < 1 or households < villages:
        raise click.UsageError("--households must be at least --villages, and --villages at least 1")
    try:
        code = run_demo(
            households=households,
            villages=villages,
            worker_count=worker_count,
            directory=directory,
            seed=seed,
            timeout=timeout,
        )
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(code)
