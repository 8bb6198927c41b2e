"""PCM helpers of the voice providers: WAV in and out, resampling, framing."""

from __future__ import annotations

import io
import itertools
import math
import struct
import wave

import pytest

from microclaw.gateway.speech.audio import chunks, from_wav, resample, to_wav
from microclaw.gateway.speech.base import Pcm, SpeechError


def sine(seconds: float, rate: int, hz: float = 440.0) -> bytes:
    n = int(seconds * rate)
    return b"".join(struct.pack("<h", int(10000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(n))


def test_wav_round_trip_and_stereo_is_mixed_down() -> None:
    pcm = Pcm(sine(0.1, 16000), 16000)
    assert from_wav(to_wav(pcm)) == pcm
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack("<hhhh", 100, 300, -100, -300))
    assert from_wav(out.getvalue()) == Pcm(struct.pack("<hh", 200, -200), 8000)


def test_anything_but_pcm16_wav_is_a_permanent_error() -> None:
    for data in (b"", b"ID3 not a wav", b"RIFF\x00\x00\x00\x00WAVE"):
        with pytest.raises(SpeechError) as caught:
            from_wav(data)
        assert not caught.value.transient
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 10)
    with pytest.raises(SpeechError, match="8 bit"):
        from_wav(out.getvalue())


def test_resampling_keeps_duration_and_pitch() -> None:
    original = Pcm(sine(1.0, 22050, hz=300), 22050)
    down = resample(original, 16000)
    assert down.sample_rate == 16000 and len(down.data) == 2 * 16000
    samples = struct.unpack(f"<{len(down.data) // 2}h", down.data)
    crossings = sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
    assert 295 <= crossings <= 305  # still 300 Hz
    assert resample(original, 22050) == original


def test_chunks_are_whole_samples_and_cover_everything() -> None:
    data = bytes(range(256)) * 40
    parts = chunks(data, 1001)
    assert all(len(p) % 2 == 0 and len(p) <= 1000 for p in parts)
    assert b"".join(parts) == data
