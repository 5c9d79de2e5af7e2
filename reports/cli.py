"""``sanlv report``: village rates, round comparison, follow-up lists, the supervisors' view, a notice's lift;
``sanlv followup show``: one follow-up and its history.

Each command builds its report and hands it to :func:`reports.render.render`. Every error a user can cause
(an unknown round, cadre or item; a file that cannot be written) is a SanlvError, which the command group
prints as one line; asking for XLSX on the terminal is a usage error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from campaigns.cli import SanlvGroup, audited_export, followup_group, runtime_or_exit
from campaigns.db import session_scope
from campaigns.models import FollowUpStatus
from reports.cadres import CadresReport, cadre_overview
from reports.compare import CompareReport, compare_rounds
from reports.followups import OPEN_STATUSES, FollowUpReport, followup_detail, followup_report
from reports.format import local_time
from reports.lift import LiftReport, notice_lift
from reports.rates import RatesReport
from reports.render import FORMATS, OutputError, formats_of, rates_for, render
from reports.rows import to_json

OUTPUT_HELP = "Write to FILE instead of stdout (required for xlsx)."


@click.group("report", cls=SanlvGroup)
def report_group() -> None:
    """Reports: village rates, round comparison, follow-up lists, cadres."""


def _min_sample_option(command):
    return click.option(
        "--min-sample",
        type=click.IntRange(min=1),
        default=None,
        help="Mark rates with fewer valid answers as too few to judge (default: SANLV_REPORT_MIN_SAMPLE, 10).",
    )(command)


def _output_options(report_type: type):
    """``--format`` (the formats the report has) and ``--output``."""

    def decorate(command):
        command = click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help=OUTPUT_HELP)(
            command
        )
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(formats_of(report_type)),
            default="table",
            show_default=True,
        )(command)

    return decorate


def _check_output(fmt: str, output: Path | None) -> None:
    """Before any work: a binary format needs a file."""
    if FORMATS[fmt].binary and output is None:
        raise click.UsageError(f"--format {fmt} writes a file: add --output FILE.{FORMATS[fmt].extension}")


def _deliver(report: Any, fmt: str, output: Path | None) -> None:
    """Render ``report`` to stdout or to ``output`` (times in the configured time zone)."""
    tz = runtime_or_exit().settings.tz
    if output is None:
        sys.stdout.flush()
        render(report, fmt, sys.stdout.buffer, tz=tz)
        sys.stdout.buffer.flush()
        return
    try:
        with output.open("wb") as handle:
            render(report, fmt, handle, tz=tz)
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"wrote {output}", err=True)


@report_group.command("rates")
@click.argument("round_id", metavar="ROUND", type=int)
@_output_options(RatesReport)
@_min_sample_option
@audited_export("rates")
def report_rates(round_id: int, fmt: str, output: Path | None, min_sample: int | None) -> None:
    """Per-village rates of ROUND against their targets, and the township total.

    html is the printable report for the township meeting (charts, rankings, follow-up summary; phones masked).
    """
    _check_output(fmt, output)
    rt = runtime_or_exit()
    settings = rt.settings
    with session_scope(rt.sessions) as session:
        report = rates_for(
            session,
            round_id,
            fmt,
            min_sample=min_sample or settings.report_min_sample,
            overdue_days=settings.followup_overdue_days,
        )
        _deliver(report, fmt, output)


@report_group.command("compare")
@click.argument("round_a", metavar="ROUND_A", type=int)
@click.argument("round_b", metavar="ROUND_B", type=int)
@_output_options(CompareReport)
@_min_sample_option
@audited_export("compare")
def report_compare(round_a: int, round_b: int, fmt: str, output: Path | None, min_sample: int | None) -> None:
    """Per village and rate: the change from ROUND_A to ROUND_B and whether it exceeds the noise."""
    _check_output(fmt, output)
    rt = runtime_or_exit()
    with rt.sessions() as session:
        report = compare_rounds(session, round_a, round_b, min_sample=min_sample or rt.settings.report_min_sample)
    _deliver(report, fmt, output)


@report_group.command("followups")
@click.argument("round_id", metavar="ROUND", type=int)
@click.option("--cadre", "cadre_id", type=int, help="Only this cadre's list: the one to hand to them, numbers in full.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["pending", "visited", "resolved", "unreachable", "open"]),
    help="Only items in this status (repeatable; open = pending or visited).",
)
@click.option("--overdue", "overdue_only", is_flag=True, help="Only overdue items.")
@_output_options(FollowUpReport)
@audited_export("followups")
def report_followups(
    round_id: int, cadre_id: int | None, statuses: tuple[str, ...], overdue_only: bool, fmt: str, output: Path | None
) -> None:
    """The residents of ROUND to visit (they were dissatisfied and asked for a visit).

    Phone numbers are masked (138****1234) unless --cadre is given: one cadre's own list carries them in full.
    Residents who declined a visit are counted per village, never listed.
    """
    _check_output(fmt, output)
    wanted: set[FollowUpStatus] = set()
    for status in statuses:
        wanted.update(OPEN_STATUSES if status == "open" else (FollowUpStatus(status),))
    rt = runtime_or_exit()
    with session_scope(rt.sessions) as session:
        report = followup_report(
            session,
            round_id,
            cadre_id=cadre_id,
            own=cadre_id is not None,
            statuses=tuple(sorted(wanted)) or None,
            overdue_only=overdue_only,
            overdue_days=rt.settings.followup_overdue_days,
            # Files are written from the database row by row: flat memory however long the list.
            stream=FORMATS[fmt].streams,
        )
        _deliver(report, fmt, output)


@report_group.command("cadres")
@click.argument("round_id", metavar="ROUND", type=int)
@_output_options(CadresReport)
@_min_sample_option
@audited_export("cadres")
def report_cadres(round_id: int, fmt: str, output: Path | None, min_sample: int | None) -> None:
    """For supervisors: per cadre, households, reached, contact rate (重视率), open and overdue follow-ups."""
    _check_output(fmt, output)
    rt = runtime_or_exit()
    settings = rt.settings
    with session_scope(rt.sessions) as session:
        report = cadre_overview(
            session,
            round_id,
            overdue_days=settings.followup_overdue_days,
            min_sample=min_sample or settings.report_min_sample,
        )
    _deliver(report, fmt, output)


@report_group.command("lift")
@click.argument("round_id", metavar="ROUND", type=int)
@click.option("--notice", "notice_id", required=True, type=int, help="The notice whose households are compared.")
@_output_options(LiftReport)
@_min_sample_option
@audited_export("lift")
def report_lift(round_id: int, notice_id: int, fmt: str, output: Path | None, min_sample: int | None) -> None:
    """Each rate of ROUND (and its response rate) between the households sent NOTICE and those held out.

    For the township and each village: the difference with its 95% interval, a two-proportion test and the
    households on each side; intention to treat, with delivered-only beside it. html is the printable report.
    """
    _check_output(fmt, output)
    rt = runtime_or_exit()
    with rt.sessions() as session:
        report = notice_lift(session, round_id, notice_id, min_sample=min_sample or rt.settings.report_min_sample)
    _deliver(report, fmt, output)


@followup_group.command("show")
@click.argument("item_id", metavar="ITEM", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def followup_show(item_id: int, fmt: str) -> None:
    """One follow-up (phone masked) and every change of its status."""
    rt = runtime_or_exit()
    with rt.sessions() as session:
        detail = followup_detail(session, item_id, overdue_days=rt.settings.followup_overdue_days)
    if fmt == "json":
        click.echo(json.dumps(to_json(detail), ensure_ascii=False, indent=2))
        return
    tz = rt.settings.tz
    item = detail.item
    click.echo(
        f"{item.id}  {item.village} {item.household or ''} {item.phone}  {item.status_label}"
        + ("（逾期）" if item.overdue else "")
    )
    for event in detail.history:
        click.echo(f"  {local_time(event.at, tz)}  {event.status_label}  {event.actor or ''}  {event.note or ''}".rstrip())
