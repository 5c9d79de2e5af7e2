"""The ``sanlv`` console script: one group assembling each package's commands."""

from __future__ import annotations

import click

from campaigns.cli import COMMAND_GROUPS as CAMPAIGN_GROUPS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """sanlv: telephone surveys for the township three rates (三率)."""


for _group in CAMPAIGN_GROUPS:
    main.add_command(_group)


def _add_optional(module: str, names: tuple[str, ...]) -> None:
    import importlib

    mod = importlib.import_module(module)
    for name in names:
        main.add_command(getattr(mod, name))


_add_optional("workers.cli", ("worker_command",))
_add_optional("reports.cli", ("report_group", "followup_group"))
_add_optional("ivr.commands", ("web_command", "demo_command"))
