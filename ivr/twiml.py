"""TwiML for the survey, built with twilio's VoiceResponse (never by string concatenation)."""

from __future__ import annotations

from urllib.parse import urlencode

from twilio.twiml.voice_response import VoiceResponse

from campaigns.questionnaire import Questionnaire
from campaigns.settings import Settings
from ivr.flow import Ask, End


def webhook_url(settings: Settings, base: str, path: str, **params: object) -> str:
    """An absolute webhook URL: Twilio signs the URL it requested, so it must be the public one."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{base}{path}" + (f"?{query}" if query else "")


def _say(parent, settings: Settings, text: str) -> None:
    if text:
        parent.say(text, language=settings.tts_language, voice=settings.tts_voice)


def render(settings: Settings, base: str, questionnaire: Questionnaire, attempt_id: int, action: Ask | End, seq: int) -> str:
    response = VoiceResponse()
    if isinstance(action, End):
        _say(response, settings, questionnaire.messages.get(action.message, ""))
        response.hangup()
        return str(response)
    step = questionnaire.step(action.step)
    gather_url = webhook_url(settings, base, "/ivr/gather", attempt=attempt_id, step=step.key, n=seq)
    gather = response.gather(
        action=gather_url,
        method="POST",
        input="dtmf",
        num_digits=1,
        timeout=questionnaire.gather_timeout,
        finish_on_key="",
    )
    for message in action.preface:
        _say(gather, settings, questionnaire.messages.get(message, ""))
    _say(gather, settings, step.prompt)
    # Silence: Twilio skips the action and goes on to the next verb; come back to count the no-input.
    response.redirect(gather_url, method="POST")
    return str(response)


def hangup(settings: Settings, text: str = "") -> str:
    response = VoiceResponse()
    _say(response, settings, text)
    response.hangup()
    return str(response)
