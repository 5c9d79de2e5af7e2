"""The dialler on RQ. One module per concept; imports point up this list, never down (no cycle):

- ``queues``: queue names, the Redis connection, the one enqueue helper, transport retries, job state (the leaf).
- ``leases``: short-lived owned Redis keys, "a worker is on this attempt now".
- ``limiter``: a round's dial rate across every worker (pacing slots and the moving-window cap).
- ``telephony``: the provider interface and the Twilio provider; providers registered by name.
- ``placing``: ``place_call`` (exactly-once create, adoption) and ``cancel_round_calls``.
- ``dispatch``: ``dispatch_round`` ticks, one chain per round, ``kick_dispatch``, ``rebuild_dispatch``.
- ``sweeper``: ``sweep``, the periodic recovery job.
- ``lifecycle``: what a round's launch, resume or cancel starts (the hook campaigns calls).
- ``runner`` and ``cli``: the ``sanlv worker`` process.
"""
