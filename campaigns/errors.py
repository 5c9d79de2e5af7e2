"""The one base of every error a user can cause and fix.

A ``SanlvError`` is bad input, an unknown record or an impossible request: its :meth:`summary` is one line
that names what is wrong and where, fit to print as a command's error (``web.cli`` does that in one place)
or to show beside a form. Bugs are not ``SanlvError``\\s: they keep their traceback, in the log.
"""

from __future__ import annotations


class SanlvError(Exception):
    """Bad input or an impossible request; the message says what and where."""

    def summary(self) -> str:
        """The one line shown to the user (the message, unless a subclass has a better one)."""
        return str(self)
