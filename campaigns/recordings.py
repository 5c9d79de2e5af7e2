"""Recorded prompts: checking an uploaded recording and storing it where the IVR plays it from.

Offices record dialect prompts on a phone and upload them. Before a recording replaces text-to-speech for a
prompt it must be something Twilio's ``<Play>`` can play and a resident can hear:

- WAV (PCM, 8 or 16 bit, mono or stereo, 8-48 kHz), read with the standard library's ``wave``; or MP3, read
  with ``mutagen``. Anything else (AMR and M4A from a phone's recorder, a renamed text file) is refused, with
  the advice to export WAV or MP3;
- from :data:`MIN_SECONDS` to :data:`MAX_SECONDS` long: a prompt is a sentence or two;
- not silent: a WAV whose RMS level over the whole file is below :data:`SILENCE_DBFS` is refused (a
  recording made with the microphone muted). MP3 is not decoded, so its level is not checked (the page
  says so).

A recording is stored as ``<recordings dir>/<questionnaire key>/<prompt>.wav`` (or ``.mp3``, or the file name
the questionnaire gives the step), written to a temporary file in the same folder and renamed into place, so
the IVR never plays half a file. A recording of the other format for the same prompt is removed, since the
IVR would prefer a WAV to a newer MP3.
"""

from __future__ import annotations

import io
import math
import operator
import os
import struct
import sys
import tempfile
import wave
from array import array
from dataclasses import dataclass
from pathlib import Path

from campaigns.errors import SanlvError
from campaigns.questionnaire import AUDIO_EXTENSIONS, PromptInfo, Questionnaire, recording_folder

MIN_SECONDS = 0.5
MAX_SECONDS = 60.0
# The RMS level (dB relative to full scale) below which a whole recording counts as silence. Room noise on a
# phone's microphone is around -60 to -50 dBFS; quiet speech is above -35 dBFS.
SILENCE_DBFS = -50.0
WAV_SAMPLE_WIDTHS = (1, 2)  # bytes: 8-bit unsigned and 16-bit signed PCM
SAMPLE_RATES = (8000, 48000)  # the lowest and highest accepted, in Hz
_CHUNK_FRAMES = 16384
_SIGNED_8BIT = bytes(b ^ 0x80 for b in range(256))  # unsigned 8-bit samples, recentred on 0


class RecordingError(SanlvError, ValueError):
    """An uploaded recording cannot be used; ``reason_zh`` / ``reason_en`` say why."""

    def __init__(self, reason_zh: str, reason_en: str):
        self.reason_zh = reason_zh
        self.reason_en = reason_en
        super().__init__(f"{reason_zh} / {reason_en}")


@dataclass(frozen=True)
class AudioInfo:
    """What a checked recording is."""

    format: str  # "wav" or "mp3"
    seconds: float
    sample_rate: int
    channels: int
    level_dbfs: float | None  # the RMS level of a WAV; None for MP3 (not decoded)

    @property
    def extension(self) -> str:
        return f".{self.format}"


def sniff(data: bytes) -> str | None:
    """``wav``, ``mp3`` or None, from the first bytes (never from the file's name)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def check_audio(data: bytes) -> AudioInfo:
    """Check an uploaded recording (see the module notes).

    Raises:
        RecordingError: not WAV or MP3, unreadable, too short, too long, or silent.
    """
    kind = sniff(data)
    if kind == "wav":
        info = _check_wav(data)
    elif kind == "mp3":
        info = _check_mp3(data)
    else:
        raise RecordingError(
            "不是 WAV 或 MP3 音频文件，请在手机或电脑上导出为 WAV 或 MP3 后再上传",
            "not a WAV or MP3 audio file; export the recording as WAV or MP3 and upload it again",
        )
    if not SAMPLE_RATES[0] <= info.sample_rate <= SAMPLE_RATES[1]:
        raise RecordingError(
            f"采样率 {info.sample_rate} Hz 不在 8000 至 48000 Hz 之间",
            f"the sample rate {info.sample_rate} Hz is outside 8000-48000 Hz",
        )
    if info.seconds < MIN_SECONDS:
        raise RecordingError(
            f"录音太短（{info.seconds:.1f} 秒），至少 {MIN_SECONDS:g} 秒",
            f"the recording is too short ({info.seconds:.1f} s; at least {MIN_SECONDS:g} s)",
        )
    if info.seconds > MAX_SECONDS:
        raise RecordingError(
            f"录音太长（{info.seconds:.0f} 秒），最多 {MAX_SECONDS:g} 秒",
            f"the recording is too long ({info.seconds:.0f} s; at most {MAX_SECONDS:g} s)",
        )
    if info.level_dbfs is not None and info.level_dbfs < SILENCE_DBFS:
        raise RecordingError(
            "录音几乎没有声音（可能是静音或麦克风被关闭），请重新录制",
            f"the recording is silent (RMS level {info.level_dbfs:.0f} dBFS, below {SILENCE_DBFS:g} dBFS)",
        )
    return info


def _check_wav(data: bytes) -> AudioInfo:
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            channels, width, rate, frames = (
                reader.getnchannels(),
                reader.getsampwidth(),
                reader.getframerate(),
                reader.getnframes(),
            )
            if width not in WAV_SAMPLE_WIDTHS:
                raise RecordingError(
                    f"不支持 {width * 8} 位 WAV，请导出为 16 位 PCM WAV",
                    f"{width * 8}-bit WAV is not supported; export 16-bit PCM WAV",
                )
            if channels not in (1, 2) or rate <= 0:
                raise RecordingError(
                    f"不支持 {channels} 声道的 WAV，请导出为单声道或立体声",
                    f"a WAV with {channels} channels is not supported; export mono or stereo",
                )
            level = _rms_dbfs(reader, width)
    except (wave.Error, EOFError, RuntimeError, struct.error, ValueError) as exc:
        # The standard library's reader meets a malformed file with any of these (a truncated chunk is a
        # RuntimeError from its chunk reader).
        raise RecordingError(
            "无法读取 WAV 文件（只支持未压缩的 PCM WAV），请重新导出",
            f"cannot read the WAV file ({type(exc).__name__}: {exc}); only uncompressed PCM WAV is supported",
        ) from None
    return AudioInfo("wav", frames / rate, rate, channels, level)


def _rms_dbfs(reader: wave.Wave_read, width: int) -> float:
    """The RMS level of every sample of the file, in dB relative to full scale (-inf for digital silence)."""
    total = 0
    count = 0
    while True:
        chunk = reader.readframes(_CHUNK_FRAMES)
        if not chunk:
            break
        if width == 1:  # 8-bit WAV is unsigned, centred on 128
            samples = array("b", chunk.translate(_SIGNED_8BIT))
        else:
            samples = array("h")
            samples.frombytes(chunk[: len(chunk) - len(chunk) % 2])
            if sys.byteorder == "big":  # WAV is little-endian
                samples.byteswap()
        total += sum(map(operator.mul, samples, samples))
        count += len(samples)
    if count == 0 or total == 0:
        return -math.inf
    full_scale = float(1 << (8 * width - 1))
    return 20 * math.log10(math.sqrt(total / count) / full_scale)


def _check_mp3(data: bytes) -> AudioInfo:
    from mutagen import MutagenError
    from mutagen.mp3 import MP3

    try:
        audio = MP3(io.BytesIO(data))
    except MutagenError as exc:
        raise RecordingError("无法读取 MP3 文件，请重新导出", f"cannot read the MP3 file ({exc})") from None
    info = audio.info
    return AudioInfo("mp3", float(info.length), int(info.sample_rate), int(info.channels), None)


def recording_name(prompt: PromptInfo, info: AudioInfo) -> str:
    """The file name the recording of ``prompt`` is stored under.

    Raises:
        RecordingError: the questionnaire names the step's file with the other format's extension.
    """
    if prompt.audio:
        if Path(prompt.audio).suffix.lower() != info.extension:
            raise RecordingError(
                f"问卷指定此提示的录音文件为 {prompt.audio}，请上传 {Path(prompt.audio).suffix.lstrip('.').upper()} 格式",
                f"the questionnaire names this prompt's recording {prompt.audio}; upload that format",
            )
        return prompt.audio
    return prompt.name + info.extension


def save_recording(recordings_dir: Path | str, questionnaire: Questionnaire, prompt: PromptInfo, data: bytes) -> Path:
    """Check ``data`` and store it as the recording of ``prompt``, atomically; returns the stored path.

    Raises:
        RecordingError: see :func:`check_audio` and :func:`recording_name`.
    """
    info = check_audio(data)
    name = recording_name(prompt, info)
    folder = recording_folder(recordings_dir, questionnaire)
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o640)  # mkstemp makes it 0600; the group may read it, as the folder's other files
        os.replace(temporary, folder / name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if not prompt.audio:
        for extension in AUDIO_EXTENSIONS:
            other = folder / (prompt.name + extension)
            if other.name != name:
                other.unlink(missing_ok=True)
    return folder / name
