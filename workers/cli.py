"""``sanlv worker``: an RQ worker with the scheduler."""

from __future__ import annotations

import click

from campaigns.cli import runtime_or_exit
from workers.runner import run_worker


@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
def worker_command(burst: bool) -> None:
    """Run an RQ worker (with the scheduler) on sanlv's queues."""
    run_worker(runtime_or_exit().settings, burst=burst)
