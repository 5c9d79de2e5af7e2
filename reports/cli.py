"""``sanlv report``: village rates, round comparison, follow-up lists, the supervisors' view;
``sanlv followup``: record a visit.

Each command exits non-zero with a one-line reason on bad input (an unknown round, cadre or item; an
impossible status change; XLSX without ``--output``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from campaigns.cli import SanlvGroup, audited_export, followup_group, runtime_or_exit
from campaigns.db import session_scope

TEXT_FORMATS = ("table", "json", "csv")
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


def _deliver(
    fmt: str, output: Path | None, *, text: Callable[[], str] | None = None, write: Callable[[Path], None] | None = None
) -> None:
    """Print ``text()`` or write it to ``output``; binary formats go through ``write(path)`` and need a file."""
    if fmt == "xlsx" and output is None:
        raise click.UsageError("--format xlsx writes a file: add --output FILE.xlsx")
    try:
        if output is not None and write is not None:
            write(output)
        elif output is not None and text is not None:
            body = text()
            # CSV carries its own BOM; every text file is UTF-8.
            output.write_text(body if body.endswith("\n") else body + "\n", encoding="utf-8", newline="")
        elif text is not None:
            click.echo(text(), nl=fmt != "csv")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    if output is not None:
        click.echo(f"wrote {output}", err=True)


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@report_group.command("rates")
@click.argument("round_id", metavar="ROUND", type=int)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv", "xlsx", "html"]), default="table", show_default=True
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help=OUTPUT_HELP)
@_min_sample_option
@audited_export("rates")
def report_rates(round_id: int, fmt: str, output: Path | None, min_sample: int | None) -> None:
    """Per-village rates of ROUND against their targets, and the township total.

    html is the printable report for the township meeting (charts, rankings, follow-up summary; phones masked).
    """
    from campaigns.followups import FollowUpError
    from reports import export
    from reports.followups import followup_report
    from reports.format import render_rates_table
    from reports.html import render_rates_html
    from reports.rates import ReportError, village_rates

    rt = runtime_or_exit()
    settings = rt.settings
    try:
        with session_scope(rt.sessions) as session:
            report = village_rates(session, round_id, min_sample=min_sample or settings.report_min_sample)
            followups = (
                followup_report(session, round_id, overdue_days=settings.followup_overdue_days)
                if fmt == "html"
                else None
            )
    except (ReportError, FollowUpError) as exc:
        raise _fail(exc) from None
    tz = settings.tz
    if fmt in ("xlsx", "csv"):
        tables = [export.rates_csv_table(report)] if fmt == "csv" else export.rates_tables(report)
        if output is None:
            _deliver(fmt, None, text=lambda: export.csv_text(tables[0], tz))
        else:
            _deliver(fmt, output, write=lambda path: export.write_tables(fmt, path, tables, tz))
        return
    render = {
        "table": lambda: render_rates_table(report),
        "json": lambda: _json(report),
        "html": lambda: render_rates_html(report, followups=followups, tz=tz),
    }[fmt]
    _deliver(fmt, output, text=render)


@report_group.command("compare")
@click.argument("round_a", metavar="ROUND_A", type=int)
@click.argument("round_b", metavar="ROUND_B", type=int)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv", "xlsx"]), default="table", show_default=True
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help=OUTPUT_HELP)
@_min_sample_option
@audited_export("compare")
def report_compare(round_a: int, round_b: int, fmt: str, output: Path | None, min_sample: int | None) -> None:
    """Per village and rate: the change from ROUND_A to ROUND_B and whether it exceeds the noise."""
    from reports import export
    from reports.compare import compare_rounds
    from reports.format import render_compare_table
    from reports.rates import ReportError

    rt = runtime_or_exit()
    try:
        with rt.sessions() as session:
            report = compare_rounds(session, round_a, round_b, min_sample=min_sample or rt.settings.report_min_sample)
    except ReportError as exc:
        raise _fail(exc) from None
    _tabular(fmt, output, report, render_compare_table, lambda r: [export.compare_table(r)], rt.settings.tz)


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
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv", "xlsx"]), default="table", show_default=True
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help=OUTPUT_HELP)
@audited_export("followups")
def report_followups(
    round_id: int, cadre_id: int | None, statuses: tuple[str, ...], overdue_only: bool, fmt: str, output: Path | None
) -> None:
    """The residents of ROUND to visit (they were dissatisfied and asked for a visit).

    Phone numbers are masked (138****1234) unless --cadre is given: one cadre's own list carries them in full.
    Residents who declined a visit are counted per village, never listed.
    """
    from campaigns.models import FollowUpStatus
    from reports import export
    from reports.followups import OPEN_STATUSES, followup_report
    from reports.format import render_followups_table
    from reports.rates import ReportError

    wanted: set[FollowUpStatus] = set()
    for status in statuses:
        wanted.update(OPEN_STATUSES if status == "open" else (FollowUpStatus(status),))
    rt = runtime_or_exit()
    settings = rt.settings
    tz = settings.tz
    options = {
        "cadre_id": cadre_id,
        "own": cadre_id is not None,
        "statuses": tuple(sorted(wanted)) or None,
        "overdue_only": overdue_only,
        "overdue_days": settings.followup_overdue_days,
    }
    if fmt in ("csv", "xlsx"):
        # Files stream from the database row by row: flat memory however long the list.
        if fmt == "xlsx" and output is None:
            raise click.UsageError("--format xlsx writes a file: add --output FILE.xlsx")
        try:
            with session_scope(rt.sessions) as session:
                export.export_followups(session, round_id, fmt, output or sys.stdout, tz=tz, **options)
        except ReportError as exc:
            raise _fail(exc) from None
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
        if output is not None:
            click.echo(f"wrote {output}", err=True)
        return
    try:
        with session_scope(rt.sessions) as session:
            report = followup_report(session, round_id, **options)
    except ReportError as exc:
        raise _fail(exc) from None
    text = render_followups_table(report, tz) if fmt == "table" else _json(report)
    _deliver(fmt, output, text=lambda: text)


@report_group.command("cadres")
@click.argument("round_id", metavar="ROUND", type=int)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv", "xlsx"]), default="table", show_default=True
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help=OUTPUT_HELP)
@_min_sample_option
@audited_export("cadres")
def report_cadres(round_id: int, fmt: str, output: Path | None, min_sample: int | None) -> None:
    """For supervisors: per cadre, households, reached, contact rate (重视率), open and overdue follow-ups."""
    from reports import export
    from reports.cadres import cadre_overview
    from reports.format import render_cadres_table
    from reports.rates import ReportError

    rt = runtime_or_exit()
    settings = rt.settings
    try:
        with session_scope(rt.sessions) as session:
            report = cadre_overview(
                session,
                round_id,
                overdue_days=settings.followup_overdue_days,
                min_sample=min_sample or settings.report_min_sample,
            )
    except ReportError as exc:
        raise _fail(exc) from None
    _tabular(fmt, output, report, render_cadres_table, lambda r: [export.cadres_table(r)], settings.tz)


def _tabular(
    fmt: str, output: Path | None, report: dict, table: Callable[[dict], str], tables: Callable[[dict], list], tz
) -> None:
    from reports import export

    if fmt == "table":
        _deliver(fmt, output, text=lambda: table(report))
    elif fmt == "json":
        _deliver(fmt, output, text=lambda: _json(report))
    elif output is None:
        _deliver(fmt, None, text=lambda: export.csv_text(tables(report)[0], tz))
    else:
        _deliver(fmt, output, write=lambda path: export.write_tables(fmt, path, tables(report), tz))


@followup_group.command("show")
@click.argument("item_id", metavar="ITEM", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def followup_show(item_id: int, fmt: str) -> None:
    """One follow-up (phone masked) and every change of its status."""
    from reports.followups import followup_history, iter_followup_items
    from reports.format import local_time

    rt = runtime_or_exit()
    with rt.sessions() as session:
        items = list(iter_followup_items(session, item_id=item_id, overdue_days=rt.settings.followup_overdue_days))
        if not items:
            raise click.ClickException(f"回访事项 {item_id} 不存在 / follow-up {item_id} does not exist")
        item = {**items[0], "history": followup_history(session, item_id)}
    if fmt == "json":
        click.echo(_json(item))
        return
    tz = rt.settings.tz
    click.echo(
        f"{item['id']}  {item['village']} {item['household'] or ''} {item['phone']}  {item['status_label']}"
        + ("（逾期）" if item["overdue"] else "")
    )
    for event in item["history"]:
        click.echo(
            f"  {local_time(event['at'], tz)}  {event['status_label']}  {event['actor'] or ''}  {event['note'] or ''}".rstrip()
        )
