"""Telephony providers, by the name ``SANLV_TELEPHONY`` gives: ``twilio`` (the real client) is built in;
others are registered by the composition root (the ``sanlv`` script registers the simulated phone network,
``simulator``, which production code never imports)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from campaigns.settings import Settings
from workers.telephony.base import ConfigurationError, TelephonyProvider
from workers.telephony.twilio_provider import TwilioProvider

ProviderFactory = Callable[[Settings], TelephonyProvider]

_factories: dict[str, ProviderFactory] = {"twilio": TwilioProvider}
_providers: dict[tuple, TelephonyProvider] = {}


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Make ``SANLV_TELEPHONY=name`` build its provider with ``factory(settings)``."""
    _factories[name] = factory


def get_provider(settings: Settings, account: str | None = None) -> TelephonyProvider:
    """The provider the settings name (one instance per process, configuration and Twilio account).

    Args:
        account: the Twilio account to act as (see ``Settings.accounts``); None: the first one. Providers
            other than ``twilio`` have no accounts and ignore it.

    Raises:
        ConfigurationError: no provider of that name is registered in this process, or no such account.
    """
    if settings.telephony == "twilio" and settings.twilio_accounts:
        chosen = settings.twilio_accounts[0]
        if account is not None:
            matching = [a for a in settings.twilio_accounts if a.name == account]
            if not matching:
                raise ConfigurationError(f"Twilio account {account!r} is not configured (SANLV_TWILIO_ACCOUNTS)")
            chosen = matching[0]
        settings = replace(
            settings,
            twilio_account_sid=chosen.sid,
            twilio_auth_token=chosen.auth_token,
            twilio_from_number=chosen.from_number or settings.twilio_from_number,
            twilio_accounts=(),
        )
    key = (settings.telephony, settings.twilio_account_sid, settings.twilio_api_base_url, settings.redis_url)
    provider = _providers.get(key)
    if provider is None:
        factory = _factories.get(settings.telephony)
        if factory is None:
            known = ", ".join(sorted(_factories))
            raise ConfigurationError(f"SANLV_TELEPHONY={settings.telephony!r} has no provider here (known: {known})")
        provider = _providers[key] = factory(settings)
    return provider
