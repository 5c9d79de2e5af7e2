"""Audio files made in the test, for the recording checks: WAV by the standard library, MP3 frame by frame."""

from __future__ import annotations

import io
import math
import struct
import wave


def wav(seconds: float = 2.0, *, amplitude: int = 8000, rate: int = 8000, width: int = 2, channels: int = 1) -> bytes:
    """A 440 Hz tone (``amplitude`` 0 is digital silence) as a PCM WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        frames = bytearray()
        for n in range(int(seconds * rate)):
            value = int(amplitude * math.sin(2 * math.pi * 440 * n / rate))
            sample = struct.pack("<h", value) if width == 2 else bytes([(value >> 8) + 128 & 0xFF])
            frames += sample * channels
        writer.writeframes(bytes(frames))
    return out.getvalue()


def mp3(seconds: float = 2.0) -> bytes:
    """An MPEG-1 Layer III stream of silent frames at 128 kbit/s, 44.1 kHz: what a reader sees of a real one."""
    header = bytes([0xFF, 0xFB, 0x90, 0x00])  # sync, MPEG-1 layer III no CRC; 128 kbit/s, 44.1 kHz; stereo
    frame = header + bytes(417 - len(header))  # 144 * 128000 / 44100 = 417 bytes a frame
    frames = math.ceil(seconds * 44100 / 1152)
    return frame * frames
