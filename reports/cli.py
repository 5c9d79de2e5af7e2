"""``sanlv report``: village rates and follow-up lists."""

from __future__ import annotations

import click


@click.group("report")
def report_group() -> None:
    """Reports: village rates, follow-up lists."""
