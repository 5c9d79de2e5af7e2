"""Telephony providers: ``twilio`` (the real client) and ``simulator`` (a simulated phone network)."""

from __future__ import annotations

from campaigns.settings import Settings
from workers.telephony.base import TelephonyProvider

_providers: dict[tuple, TelephonyProvider] = {}


def get_provider(settings: Settings) -> TelephonyProvider:
    """The provider the settings name (one instance per process and configuration)."""
    key = (settings.telephony, settings.twilio_account_sid, settings.twilio_api_base_url, settings.redis_url)
    provider = _providers.get(key)
    if provider is None:
        if settings.telephony == "twilio":
            from workers.telephony.twilio_provider import TwilioProvider

            provider = TwilioProvider(settings)
        else:
            from workers.telephony.simulator import SimulatorProvider

            provider = SimulatorProvider(settings)
        _providers[key] = provider
    return provider
