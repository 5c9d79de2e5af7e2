"""TwiML for the survey, built with twilio's VoiceResponse (never by string concatenation).

Each prompt is a recording played with ``<Play>`` where one exists in the questionnaire's recordings folder
(served by the app at ``/ivr/recordings/<questionnaire>/<file>``), else text-to-speech with ``<Say>`` in the
configured language and voice.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote, urlencode

from twilio.twiml.voice_response import VoiceResponse

from campaigns.flow import Ask, End
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


# Rendered documents, by everything they depend on but the call: the attempt id and the prompt's sequence
# number are marks in the cached text, replaced per request. A prompt is the same for every resident, so a
# busy round renders each one once. Entries hold their questionnaire, so the id in a key is never reused.
_RENDERED: OrderedDict[tuple, tuple[Questionnaire, str]] = OrderedDict()
_RENDERED_MAX = 512
_RENDERED_LOCK = threading.Lock()  # the web server answers requests in threads
_ATTEMPT_MARK = f"a{secrets.token_hex(8)}"
_SEQ_MARK = f"n{secrets.token_hex(8)}"


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

    ``chosen`` is the key read back when ``action`` is a confirmation. Documents are cached (see _RENDERED);
    the key includes the questionnaire's recordings as they are on disk now, so a recording added, replaced or
    removed is played (or not) from the next request on.
    """
    folder = recording_folder(settings.recordings_dir, questionnaire)
    key = (id(questionnaire), base, settings.tts_language, settings.tts_voice, folder, action, chosen,
           _recordings_on_disk(folder))  # fmt: skip
    with _RENDERED_LOCK:
        cached = _RENDERED.get(key)
        if cached is not None:
            _RENDERED.move_to_end(key)
    if cached is None or cached[0] is not questionnaire:
        cached = (questionnaire, _render(settings, base, questionnaire, _ATTEMPT_MARK, action, _SEQ_MARK, chosen))
        with _RENDERED_LOCK:
            _RENDERED[key] = cached
            while len(_RENDERED) > _RENDERED_MAX:
                _RENDERED.popitem(last=False)
    return cached[1].replace(_ATTEMPT_MARK, str(attempt_id)).replace(_SEQ_MARK, str(seq))


def _recordings_on_disk(folder: Path) -> tuple[tuple[str, int], ...]:
    """The recordings folder's files with their modification times (empty if there is no folder)."""
    try:
        with os.scandir(folder) as entries:
            return tuple(sorted((entry.name, entry.stat().st_mtime_ns) for entry in entries if entry.is_file()))
    except (FileNotFoundError, NotADirectoryError):
        return ()


def _render(
    settings: Settings,
    base: str,
    questionnaire: Questionnaire,
    attempt_id: int | str,
    action: Ask | End,
    seq: int | str,
    chosen: str | None = None,
) -> str:
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
