"""Text that is safe to open in a spreadsheet: every CSV and XLSX sanlv writes passes its text cells through here."""

from __future__ import annotations

# What a spreadsheet reads as the start of a formula (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """``text`` made inert for a spreadsheet: a single quote before anything it would run as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
