"""Ids in URLs: ``<int:...>`` route arguments are bounded by what the database's INTEGER ids can hold.

Werkzeug's int converter takes any number of digits; an id past 2**31 - 1 then reaches the database, where
SQLite cannot bind it and PostgreSQL refuses it out of range: a 500 for a mistyped URL. Bounded, it is a 404
like any other id that names nothing.
"""

from __future__ import annotations

from typing import Any

from werkzeug.routing import IntegerConverter, Map

MAX_ID = 2**31 - 1  # INTEGER primary keys on both databases


class IdConverter(IntegerConverter):
    """The ``int`` converter of the app's routes: a whole number from 0 to MAX_ID, else the route does not match."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)
