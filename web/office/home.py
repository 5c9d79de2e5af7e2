"""The office home page: rounds in progress (updated live), the latest finished round's township rates against
the targets, and the open and overdue follow-ups, with links to each."""

from __future__ import annotations

from flask import render_template

from campaigns.db import session_scope
from reports.dashboard import office_home
from web.office.common import runtime, settings
from web.office.rounds import progress_display


def render_home() -> str:
    """The page (``web.pages.home`` serves it at ``/`` to admin and office users)."""
    config = settings()
    # The summary creates the follow-ups that answers call for first, as every follow-up list does: a write.
    with session_scope(runtime().sessions) as session:
        home = office_home(
            session, tz=config.tz, min_sample=config.report_min_sample, overdue_days=config.followup_overdue_days
        )
    running = [(progress, progress_display(progress)) for progress in (p.to_json() for p in home.in_progress)]
    return render_template("office/home.html", home=home, running=running)
