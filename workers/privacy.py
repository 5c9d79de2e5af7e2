"""What Redis holds about a number that ``sanlv household forget`` erased: the telephony provider's traces.

RQ's own records hold ids only (jobs take ids; logs mask numbers), so the provider's traces are all there is:
the simulated network keeps every call, its transcript and the resident's script under the number. Registered
with campaigns.privacy by ``web.wiring``.
"""

from __future__ import annotations

import logging

from campaigns.settings import Settings
from workers.telephony import get_provider

log = logging.getLogger("sanlv.jobs")


def forget_traces(settings: Settings, phone: str, call_sids: list[str]) -> int:
    """Ask the configured provider to erase what it keeps about ``phone`` and its calls; returns the count."""
    provider = get_provider(settings)
    forget = getattr(provider, "forget_number", None)
    if forget is None:
        return 0
    erased = int(forget(phone, list(call_sids)))
    log.info("event=traces_erased provider=%s records=%s", provider.name, erased)
    return erased
