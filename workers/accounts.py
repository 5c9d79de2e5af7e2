"""The Twilio accounts a round dials through: which ones it may use, their shared dial keys, their providers.

A deployment may have several Twilio accounts (SANLV_TWILIO_ACCOUNTS; see campaigns.settings), each with its
own calls-per-second limit. A round may be restricted to some of them (``rounds.accounts``; empty: all). Each
account's limit is held in Redis under a key of its own, shared by every round and worker
(workers.limiter.reserve_pooled_slot and the account's moving-window cap). Without named accounts the one
account of TWILIO_ACCOUNT_SID is the account ``default``; with the simulated network there is none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from campaigns.settings import Settings, TwilioAccount
from workers.queues import redis_key
from workers.telephony import get_provider
from workers.telephony.base import ConfigurationError, TelephonyProvider


def round_accounts(settings: Settings, names: Sequence[str] | None) -> list[TwilioAccount]:
    """The accounts a round with ``names`` (empty: all) may dial through, in the configured order.

    Raises:
        ConfigurationError: the round names accounts of which none is configured any more.
    """
    configured = list(settings.accounts)
    if not names:
        return configured
    chosen = [account for account in configured if account.name in names]
    if configured and not chosen:
        raise ConfigurationError(
            f"the round may only dial through Twilio accounts {', '.join(names)}, and none of them is configured "
            f"(SANLV_TWILIO_ACCOUNTS: {', '.join(a.name for a in configured)})"
        )
    return chosen


def account_dial_key(settings: Settings, name: str) -> str:
    """The Redis key (prefix) of an account's slots and cap: one per account, across every round."""
    return redis_key(settings, "dial-account", name)


def effective_cps(settings: Settings, round_cps: float, names: Sequence[str] | None) -> float:
    """What the round can dial at: its own CPS, or less if its accounts together allow less."""
    try:
        accounts = round_accounts(settings, names)
    except ConfigurationError:
        return round_cps
    if not accounts or any(account.cps is None for account in accounts):
        return round_cps
    pool = math.fsum(account.cps or 0.0 for account in accounts)
    return min(round_cps, pool)


def from_number(settings: Settings, account: TwilioAccount | None) -> str:
    """An account's default caller ID."""
    if account is not None and account.from_number:
        return account.from_number
    return settings.twilio_from_number or "+8610000000"


def providers_for(settings: Settings, names: Sequence[str | None]) -> list[tuple[str | None, TelephonyProvider]]:
    """``(account name, provider)`` for each of ``names`` that is configured (None: the default provider).
    Without accounts (the simulated network) the one provider, named None."""
    if not settings.accounts or settings.telephony != "twilio":
        return [(None, get_provider(settings))]
    known = {account.name for account in settings.accounts}
    found: list[tuple[str | None, TelephonyProvider]] = []
    for name in names:
        if name is None or name in known:
            found.append((name, get_provider(settings, name)))
    return found or [(None, get_provider(settings))]
