"""Typed report rows: every report is a tree of dataclasses, and its JSON is that tree as it stands.

A report function returns a :class:`Row` (``RatesReport``, ``CompareReport``, ``FollowUpReport``,
``CadresReport``...) whose fields are, in order, the keys of the report's JSON contract. :func:`to_json` walks
the tree: nested rows become objects, lists and maps stay lists and maps, times become ISO 8601 text. A field
may say how it appears (its ``metadata``):

- :data:`INLINE`: its own fields sit beside its parent's (a village's progress counts beside its name);
- :data:`OMIT_NONE`: left out while None (the per-village counts that a cadre's own list never carries);
- :data:`NOT_JSON`: not part of the contract (data that only one renderer needs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields, is_dataclass
from datetime import date, datetime
from enum import Enum
from typing import Any, Generic, TypeVar

INLINE = {"json": "inline"}
OMIT_NONE = {"json": "omit_none"}
NOT_JSON = {"json": "skip"}

T = TypeVar("T")


class Row:
    """Base of the report dataclasses: :meth:`to_json` gives the report's JSON contract."""

    def to_json(self) -> dict[str, Any]:
        return _fields_json(self)


class LazyRows(Generic[T]):
    """Rows read from the database each time they are iterated, one batch at a time (flat memory).

    A report that holds these can be rendered more than once while its session is open; its JSON lists them.
    """

    def __init__(self, produce: Callable[[], Iterator[T]]):
        self._produce = produce

    def __iter__(self) -> Iterator[T]:
        return self._produce()


def to_json(value: Any) -> Any:
    """``value`` as JSON data: rows as objects (see the module notes), times as ISO 8601, enums as values."""
    if isinstance(value, Row):
        return value.to_json()
    if is_dataclass(value) and not isinstance(value, type):
        return _fields_json(value)
    if isinstance(value, Mapping):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | LazyRows):
        return [to_json(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def _fields_json(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in fields(row):
        how = field.metadata.get("json")
        value = getattr(row, field.name)
        if how == "skip" or (how == "omit_none" and value is None):
            continue
        if how == "inline":
            out.update(to_json(value))
        else:
            out[field.name] = to_json(value)
    return out
