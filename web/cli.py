"""The ``sanlv`` console script: the one place that assembles every package's commands.

This module is the composition root of the command line. It wires the layers together (:func:`web.wiring.wire`:
campaigns tells the dialler about a launched, resumed or cancelled round without importing it) and registers
the simulated phone network (``sim``) as the telephony provider for the embedded default and the demo. Every
error a user can cause (:class:`campaigns.errors.SanlvError`) and every unreachable or unmigrated database
becomes a one-line message and exit code 1 (:class:`campaigns.cli.SanlvGroup`), so no command converts errors
itself.
"""

from __future__ import annotations

import logging

import click

from campaigns.cli import COMMAND_GROUPS as CAMPAIGN_GROUPS
from campaigns.cli import SanlvGroup, runtime_or_exit
from campaigns.logs import configure_logging
from campaigns.privacy_cli import PRIVACY_GROUPS
from campaigns.settings import Settings, SettingsError, load_settings
from reports.cli import report_group
from sim import cli as sim_cli
from web.app import create_app
from web.server import serve_gunicorn
from web.wiring import wire
from workers.cli import worker_command


@click.group(cls=SanlvGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """sanlv: telephone surveys for the township three rates (三率)."""
    wire()
    sim_cli.register()
    setup_logging(click.get_current_context().invoked_subcommand)


# The process role each command runs as in the logs, and the least level it writes: servers log every event;
# a command typed at a prompt only what went wrong (its own output is the answer).
ROLES = {"web": ("web", logging.INFO), "worker": ("worker", logging.INFO), "demo": ("demo", logging.WARNING)}


def setup_logging(command: str | None) -> None:
    """One line per event on stderr, for the role ``command`` runs as (campaigns.logs)."""
    role, level = ROLES.get(command or "", ("cli", logging.WARNING))
    try:
        settings = load_settings()
    except SettingsError:
        settings = Settings()  # the command reports the bad variable itself; log in the default format meanwhile
    configure_logging(role, settings, level=level)


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", "worker_count", default=2, show_default=True, type=int, help="gunicorn worker processes")
@click.option("--dev", is_flag=True, help="Flask's development server with the reloader (never in production).")
def web_command(host: str, port: int, worker_count: int, dev: bool) -> None:
    """Serve the web app (pages, IVR webhooks, API) with gunicorn. Needs a real SECRET_KEY."""
    rt = runtime_or_exit()
    rt.settings.require_secret_key()
    if dev:
        create_app(rt).run(host=host, port=port, debug=True, use_reloader=True)
        return
    serve_gunicorn(host, port, worker_count, settings=rt.settings)


for _command in (*CAMPAIGN_GROUPS, *PRIVACY_GROUPS, worker_command, report_group, web_command, sim_cli.demo_command):
    main.add_command(_command)
