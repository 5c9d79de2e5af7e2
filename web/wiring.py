"""How the layers meet: what ``campaigns`` announces, the dialler acts on.

``campaigns`` imports no other project package, so a round launched, resumed or cancelled (from the command
line or the dashboard) reaches the dialler through the round-change hook that :func:`wire` registers. The
command line and the web app both call it at start-up. Without it a committed launch still happens: the
workers' sweeper rebuilds every running round's dispatch from the database, only later.
"""

from __future__ import annotations

from campaigns.notices import on_notice_change
from campaigns.privacy import on_forget
from campaigns.rounds import on_round_change
from workers.lifecycle import after_round_change
from workers.messaging import after_notice_change
from workers.privacy import forget_traces


def wire() -> None:
    """Register the dialler's round-change listener, its forget listener and the messaging worker's
    notice-change listener (idempotent)."""
    on_round_change(after_round_change)
    on_forget(forget_traces)
    on_notice_change(after_notice_change)
