"""The column specification of a report: every renderer draws a report's tables from it.

Each report module says, once, which tables it shows and their columns (its ``tables`` function); a
:class:`Column` is a key, a Chinese title, a :class:`Kind` and how to read its cell from a row. The renderers
know how to draw each kind in their format -- ``reports.format`` (terminal), ``reports.html`` (printable
page), ``reports.export`` (CSV and XLSX) -- and none of them names a column, so adding a column to a report is
one line in its table. A column may be shown in some formats only: the terminal and the printed page show a
rate as one cell (``96.0% (24/25) ✗*``), a spreadsheet splits it into figures one can sort and sum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

# The formats that draw tables (JSON is the rows themselves).
TABLE_FORMATS = frozenset({"table", "html", "csv", "xlsx"})
READING = frozenset({"table", "html"})  # read by people: a figure and its marks in one cell
FILES = frozenset({"csv", "xlsx"})  # worked on in a spreadsheet: one figure per cell


class Kind(Enum):
    """What a cell holds, which decides how each format draws it."""

    TEXT = "text"  # words (names, labels, notes); in files, never run as a spreadsheet formula
    INT = "int"  # a count, an id or a rank (None: no rank, "—")
    PERCENT = "percent"  # a fraction shown as a percentage, rounded down (None: no data)
    FLOAT = "float"  # a statistic such as a p-value
    BOOL = "bool"  # yes or no; read by people as the column's title when yes, blank when no
    DATETIME = "datetime"  # a moment, shown in local time to the minute
    RATE = "rate"  # a rate's figures (reports.rates.RateFigures): the rate, counts, interval and marks
    CHANGE = "change"  # a compared rate (reports.compare.RateChange): A → B and the change, arrowed if significant
    # A share without a target: ``positive`` of ``valid`` with its interval (``ci_low``, ``ci_high``) and the
    # ``too_few`` mark, such as reports.cadres.DeliveryFigures; read by people only (files get its figures).
    SHARE = "share"
    # A difference of two shares with its interval (reports.lift.Lift: ``difference``, ``ci_low``, ``ci_high``,
    # ``direction``), in percentage points, arrowed when significant; read by people only.
    DIFFERENCE = "difference"


NUMERIC_KINDS = frozenset({Kind.INT, Kind.PERCENT, Kind.FLOAT, Kind.RATE, Kind.CHANGE, Kind.SHARE, Kind.DIFFERENCE})


@dataclass(frozen=True)
class Column:
    """One column of a report table.

    Attributes:
        key: a stable English name; also the cell's path in the row (``rates.security.rate``: attribute by
            attribute, or entry by entry in a map) unless ``get`` is given.
        title: the header, in Chinese.
        kind: what the cell holds (see :class:`Kind`).
        get: reads the cell from a row, when the key is not a path.
        width: the spreadsheet column's width in characters (by kind when not given).
        alert: whether the cell calls for attention (highlighted in XLSX and HTML); a rate below its target
            always does.
        alert_class: the HTML class of such a cell.
        formats: the formats that show the column.
    """

    key: str
    title: str
    kind: Kind = Kind.TEXT
    get: Callable[[Any], Any] | None = field(default=None, compare=False)
    width: float | None = None
    alert: Callable[[Any], bool] | None = field(default=None, compare=False)
    alert_class: str = "below"
    formats: frozenset[str] = TABLE_FORMATS

    def value(self, row: Any) -> Any:
        return self.get(row) if self.get is not None else lookup(row, self.key)

    def is_alert(self, row: Any) -> bool:
        if self.alert is not None:
            return bool(self.alert(row))
        if self.kind is Kind.RATE:
            return below_target(self.value(row))
        return False

    @property
    def numeric(self) -> bool:
        """Right-aligned where people read it."""
        return self.kind in NUMERIC_KINDS


@dataclass(frozen=True)
class Table:
    """A titled table: its columns, its rows, and total rows set apart below them.

    ``title`` names the XLSX sheet (at most 31 characters); ``freeze`` is the first cell that scrolls there.
    """

    title: str
    columns: Sequence[Column]
    rows: Iterable[Any]
    total: Sequence[Any] = ()
    freeze: str = "B2"

    def shown_in(self, fmt: str) -> list[Column]:
        """The columns ``fmt`` shows."""
        return [column for column in self.columns if fmt in column.formats]


def only(formats: frozenset[str], *columns: Column) -> list[Column]:
    """``columns``, shown in ``formats`` only."""
    return [replace(column, formats=column.formats & formats) for column in columns]


def per_rate(labels: Mapping[str, str], make: Callable[[str, str], Column | Sequence[Column]]) -> list[Column]:
    """The columns ``make(rate key, rate label)`` gives for each rate of the report, in the report's order."""
    out: list[Column] = []
    for key, label in labels.items():
        made = make(key, label)
        out.extend([made] if isinstance(made, Column) else made)
    return out


def lookup(row: Any, path: str) -> Any:
    """The value at ``path`` (dot-separated) in ``row``; None as soon as a step is None."""
    value = row
    for part in path.split("."):
        if value is None:
            return None
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return value


def below_target(figures: Any) -> bool:
    """A rate with valid answers that misses its target (figures: a RateFigures or None)."""
    return figures is not None and figures.valid > 0 and not figures.meets_target
