"""Checking and storing recorded prompts: WAV and MP3 only, length, silence; stored atomically in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns.questionnaire import builtin_questionnaire, find_recording, prompts, step_prompt
from campaigns.recordings import MAX_SECONDS, RecordingError, check_audio, save_recording, sniff
from tests.support.audio import mp3, wav


def test_a_spoken_wav_and_an_mp3_pass() -> None:
    spoken = check_audio(wav(3.0))
    stereo = check_audio(wav(1.0, rate=44100, channels=2))
    eight_bit = check_audio(wav(1.0, width=1))
    compressed = check_audio(mp3(4.0))

    assert (spoken.format, round(spoken.seconds, 2), spoken.sample_rate) == ("wav", 3.0, 8000)
    assert spoken.level_dbfs > -20 and eight_bit.level_dbfs > -20 and stereo.channels == 2
    assert compressed.format == "mp3" and 3.9 < compressed.seconds < 4.1 and compressed.level_dbfs is None


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"RIFF....WAVEnot really", "cannot read the WAV"),
        (b"#!/bin/sh\necho hello\n", "not a WAV or MP3"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a WAV or MP3"),
        (wav(MAX_SECONDS + 1), "too long"),
        (wav(0.2), "too short"),
        (wav(2.0, amplitude=0), "silent"),
        (wav(2.0, amplitude=10), "silent"),  # room noise, not speech
        (wav(1.0, rate=4000), "sample rate"),
    ],
)
def test_what_a_resident_could_not_hear_is_refused(data: bytes, words: str) -> None:
    with pytest.raises(RecordingError, match=words):
        check_audio(data)


def test_the_format_comes_from_the_bytes_not_the_name() -> None:
    assert sniff(wav(1.0)) == "wav" and sniff(mp3(1.0)) == "mp3" and sniff(b"ID3\x04") == "mp3"
    assert sniff(b"hello") is None


def test_a_recording_is_stored_where_the_ivr_looks_and_replaces_the_other_format(tmp_path: Path) -> None:
    questionnaire = builtin_questionnaire()
    prompt = step_prompt(questionnaire.step("security"))
    folder = tmp_path / questionnaire.key

    first = save_recording(tmp_path, questionnaire, prompt, mp3(2.0))
    second = save_recording(tmp_path, questionnaire, prompt, wav(2.0))

    assert first == folder / "step-security.mp3" and second == folder / "step-security.wav"
    assert find_recording(folder, prompt) == second
    assert sorted(p.name for p in folder.iterdir()) == ["step-security.wav"]  # no leftovers, no .part files


def test_a_refused_recording_leaves_the_old_one_in_place(tmp_path: Path) -> None:
    questionnaire = builtin_questionnaire()
    prompt = prompts(questionnaire)[0]
    kept = save_recording(tmp_path, questionnaire, prompt, wav(2.0))

    with pytest.raises(RecordingError):
        save_recording(tmp_path, questionnaire, prompt, wav(2.0, amplitude=0))

    assert kept.read_bytes() == wav(2.0)
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]


def test_a_step_that_names_its_file_gets_that_file_in_that_format(tmp_path: Path) -> None:
    from dataclasses import replace

    questionnaire = builtin_questionnaire()
    prompt = replace(step_prompt(questionnaire.step("security")), audio="anquan.wav")

    with pytest.raises(RecordingError, match="anquan.wav"):
        save_recording(tmp_path, questionnaire, prompt, mp3(2.0))
    stored = save_recording(tmp_path, questionnaire, prompt, wav(2.0))

    assert stored.name == "anquan.wav"
