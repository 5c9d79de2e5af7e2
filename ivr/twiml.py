"""TwiML for the survey, built with twilio's VoiceResponse (never by string concatenation).

Each prompt is a recording played with ``<Play>`` where one exists in the questionnaire's recordings folder
(served by the app at ``/ivr/recordings/<questionnaire>/<file>``), else text-to-speech with ``<Say>`` in the
configured language and voice.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from twilio.twiml.voice_response import VoiceResponse

from campaigns.questionnaire import (
    PromptInfo,
    Questionnaire,
    find_recording,
    message_prompt,
    readback_prompt,
    recording_folder,
    step_prompt,
)
from campaigns.settings import Settings
from ivr.flow import Ask, End


def webhook_url(settings: Settings, base: str, path: str, **params: object) -> str:
    """An absolute webhook URL: Twilio signs the URL it requested, so it must be the public one."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{base}{path}" + (f"?{query}" if query else "")


class Voice:
    """Says prompts: ``<Play>`` of the recording when there is one, ``<Say>`` otherwise."""

    def __init__(self, settings: Settings, base: str, questionnaire: Questionnaire):
        self.settings = settings
        self.base = base
        self.questionnaire = questionnaire
        self.folder = recording_folder(settings.recordings_dir, questionnaire)

    def recording_url(self, path: Path) -> str:
        # The file's modification time in the URL: Twilio caches media by URL, a new recording gets a new one.
        version = int(path.stat().st_mtime)
        return f"{self.base}/ivr/recordings/{quote(self.questionnaire.key)}/{quote(path.name)}?v={version}"

    def speak(self, parent, prompt: PromptInfo) -> None:
        recording = find_recording(self.folder, prompt)
        if recording is not None:
            parent.play(self.recording_url(recording))
        elif prompt.text:
            parent.say(prompt.text, language=self.settings.tts_language, voice=self.settings.tts_voice)

    def message(self, parent, name: str) -> None:
        self.speak(parent, message_prompt(self.questionnaire, name))


def render(
    settings: Settings,
    base: str,
    questionnaire: Questionnaire,
    attempt_id: int,
    action: Ask | End,
    seq: int,
    chosen: str | None = None,
) -> str:
    """The TwiML document for ``action``: a Gather (with a Redirect after it for silence), or the end.

    ``chosen`` is the key read back when ``action`` is a confirmation.
    """
    voice = Voice(settings, base, questionnaire)
    response = VoiceResponse()
    if isinstance(action, End):
        voice.message(response, action.message)
        response.hangup()
        return str(response)
    step = questionnaire.step(action.step)
    gather_url = webhook_url(settings, base, "/ivr/gather", attempt=attempt_id, step=action.position, n=seq)
    gather = response.gather(
        action=gather_url,
        method="POST",
        input="dtmf",
        num_digits=1,
        timeout=questionnaire.gather_timeout,
        finish_on_key="",
    )
    for message in action.preface:
        voice.message(gather, message)
    if action.confirm:
        voice.speak(gather, readback_prompt(questionnaire, step, chosen or ""))
    else:
        voice.speak(gather, step_prompt(step))
    # Silence: Twilio skips the action and goes on to the next verb; come back to count the no-input.
    response.redirect(gather_url, method="POST")
    return str(response)


def say_and_hang_up(settings: Settings, base: str, questionnaire: Questionnaire, message: str) -> str:
    """Say the questionnaire's ``message`` (recorded or TTS) and hang up."""
    response = VoiceResponse()
    Voice(settings, base, questionnaire).message(response, message)
    response.hangup()
    return str(response)
