"""What the dialler does when a round's lifecycle changes (registered with campaigns.rounds.on_round_change)."""

from __future__ import annotations

from campaigns.settings import Settings
from workers.dispatch import kick_dispatch
from workers.placing import cancel_round_calls
from workers.queues import enqueue


def after_round_change(settings: Settings, round_id: int, command: str) -> None:
    """Called after a round's launch, pause, resume or cancel is committed, or a call-back was asked for (an
    inbound call: the dispatcher claims it at once)."""
    if command in ("launch", "resume", "call-back"):
        kick_dispatch(settings, round_id)
    elif command == "cancel":
        enqueue(settings, cancel_round_calls, round_id, job_id=f"cancel-round-{round_id}")
