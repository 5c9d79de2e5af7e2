"""``sanlv demo``, and the simulated phone network's registration as a telephony provider.

Only the ``sanlv`` console script (``web.cli``, the composition root) imports this module: production code
never imports ``sim``.
"""

from __future__ import annotations

import click

from sim.demo import run_demo
from sim.network import SimulatorProvider
from workers.telephony import register_provider


def register() -> None:
    """Make ``SANLV_TELEPHONY=simulator`` (the default without Twilio credentials) place calls on the network."""
    register_provider("simulator", SimulatorProvider)


@click.command("demo")
@click.option("--households", default=200, show_default=True, type=int, help="size of the synthetic roster")
@click.option("--villages", default=10, show_default=True, type=int)
@click.option("--workers", "worker_count", default=3, show_default=True, type=int, help="RQ worker processes")
@click.option("--dir", "directory", default=None, help="keep the demo's database here (default: a new temp dir)")
@click.option("--seed", default=2026, show_default=True, type=int)
@click.option("--timeout", default=110, show_default=True, type=int, help="give up after this many seconds")
@click.option("--notice", is_flag=True, help="send an SMS notice (half held out) before the round")
@click.option("--serve", is_flag=True, help="then keep the web app running, with demo logins (Ctrl-C stops)")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="the web app's port (default: a free one)")
def demo_command(
    households: int,
    villages: int,
    worker_count: int,
    directory: str | None,
    seed: int,
    timeout: int,
    notice: bool,
    serve: bool,
    port: int | None,
) -> None:
    """Run a whole survey round on the embedded default (SQLite, simulated phones), then print its report.

    With --notice, an SMS notice goes to the roster first, half of each village held out, and the lift table
    follows the report. With --serve, the web app (and the workers) keep running afterwards: it prints the URL
    and a demo admin, supervisor and cadre login, made in the demo's own database only.
    """
    if villages < 1 or households < villages:
        raise click.UsageError("--households must be at least --villages, and --villages at least 1")
    code = run_demo(
        households=households,
        villages=villages,
        worker_count=worker_count,
        directory=directory,
        seed=seed,
        timeout=timeout,
        notice=notice,
        serve=serve,
        port=port,
    )
    raise SystemExit(code)
