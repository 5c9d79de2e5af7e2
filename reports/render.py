"""From a report to a format: the one place that picks the renderer, for ``sanlv report`` and the API.

:func:`render` writes any report (``RatesReport``, ``CompareReport``, ``FollowUpReport``, ``CadresReport``)
in any of its formats to a binary stream: the terminal table, JSON (the report's contract, see
``reports.rows``), CSV, XLSX, and for the rates and lift reports the printable HTML page. Text formats are UTF-8 and end
with a newline; CSV starts with a byte-order mark.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO, Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from campaigns.errors import SanlvError
from reports import cadres, compare, export, followups, html, lift, rates
from reports import format as terminal
from reports.rates import DEFAULT_MIN_SAMPLE, RatesReport


class OutputError(SanlvError):
    """A report cannot be written where it was asked to go."""


@dataclass(frozen=True)
class Format:
    name: str
    mimetype: str  # text formats are UTF-8 (a web response adds the charset)
    extension: str
    binary: bool = False  # never printed to a terminal: it needs a file
    download: bool = False  # a file to save (the API sends it as an attachment), not a page to read
    streams: bool = False  # rows are written as they come: a report may leave its rows in the database


FORMATS = {
    "table": Format("table", "text/plain", "txt"),
    "json": Format("json", "application/json", "json"),
    "csv": Format("csv", "text/csv", "csv", download=True, streams=True),
    "xlsx": Format(
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xlsx",
        binary=True,
        download=True,
        streams=True,
    ),
    "html": Format("html", "text/html", "html"),
}

Writer = Callable[[Any, IO[bytes], "ZoneInfo | None"], None]


def _text(draw: Callable[[Any, ZoneInfo | None], str]) -> Writer:
    def write(report: Any, out: IO[bytes], tz: ZoneInfo | None) -> None:
        out.write((draw(report, tz) + "\n").encode("utf-8"))

    return write


def _json(report: Any, out: IO[bytes], tz: ZoneInfo | None) -> None:
    out.write((json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


def _files(tables: Callable[[Any], list]) -> dict[str, Writer]:
    """CSV holds the first of the report's tables; the workbook has a sheet for each."""
    return {
        "csv": lambda report, out, tz: export.write_csv(out, tables(report)[0], tz),
        "xlsx": lambda report, out, tz: export.write_xlsx(out, tables(report), tz),
    }


_WRITERS: dict[type, dict[str, Writer]] = {
    rates.RatesReport: {
        "table": _text(terminal.render_rates_table),
        "json": _json,
        "csv": lambda report, out, tz: export.write_csv(out, rates.tables(report).wide, tz),
        "xlsx": lambda report, out, tz: export.write_xlsx(out, export.rates_sheets(report), tz),
        "html": _text(lambda report, tz: html.render_rates_html(report, followups=report.followups, tz=tz)),
    },
    compare.CompareReport: {"table": _text(terminal.render_compare_table), "json": _json, **_files(compare.tables)},
    followups.FollowUpReport: {
        "table": _text(terminal.render_followups_table),
        "json": _json,
        **_files(followups.tables),
    },
    cadres.CadresReport: {"table": _text(terminal.render_cadres_table), "json": _json, **_files(cadres.tables)},
    lift.LiftReport: {
        "table": _text(terminal.render_lift_table),
        "json": _json,
        **_files(lift.tables),
        "html": _text(lambda report, tz: html.render_lift_html(report, tz=tz)),
    },
}


def formats_of(report_type: type) -> tuple[str, ...]:
    """The formats a kind of report can be written in."""
    return tuple(_WRITERS[report_type])


def render(report: Any, fmt: str, out: IO[bytes], *, tz: ZoneInfo | None = None) -> None:
    """Write ``report`` as ``fmt`` to ``out`` (times in ``tz``).

    Raises:
        ValueError: the report has no such format (callers offer only :func:`formats_of`).
    """
    writers = _WRITERS[type(report)]
    if fmt not in writers:
        raise ValueError(f"a {type(report).__name__} has no {fmt} format (only {', '.join(writers)})")
    writers[fmt](report, out, tz)


def render_bytes(report: Any, fmt: str, *, tz: ZoneInfo | None = None) -> bytes:
    """``report`` as ``fmt``, whole, in memory."""
    buffer = io.BytesIO()
    render(report, fmt, buffer, tz=tz)
    return buffer.getvalue()


def rates_for(
    session: Session,
    round_id: int,
    fmt: str,
    *,
    min_sample: int = DEFAULT_MIN_SAMPLE,
    overdue_days: int = followups.DEFAULT_OVERDUE_DAYS,
) -> RatesReport:
    """The rates report as ``fmt`` shows it: the printable page also carries the office's follow-up list.

    Raises:
        ReportError: no round has this id.
    """
    report = rates.village_rates(session, round_id, min_sample=min_sample)
    if fmt == "html":
        report = replace(report, followups=followups.followup_report(session, round_id, overdue_days=overdue_days))
    return report
