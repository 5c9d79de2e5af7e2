"""``sanlv report``: village rates and follow-up lists."""

from __future__ import annotations

import json
from pathlib import Path

import click

from campaigns.cli import runtime_or_exit


@click.group("report")
def report_group() -> None:
    """Reports: village rates, follow-up lists."""


@report_group.command("rates")
@click.argument("round_id", metavar="ROUND", type=int)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout.")
def report_rates(round_id: int, fmt: str, output: Path | None) -> None:
    """Per-village rates of ROUND against their targets, and the township total."""
    from reports.format import render_rates_table
    from reports.rates import ReportError, village_rates

    rt = runtime_or_exit()
    try:
        with rt.sessions() as session:
            report = village_rates(session, round_id)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    text = json.dumps(report, ensure_ascii=False, indent=2) if fmt == "json" else render_rates_table(report)
    if output is None:
        click.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"wrote {output}", err=True)
