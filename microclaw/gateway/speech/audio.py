"""PCM16 helpers for voice turns: WAV in and out (stdlib `wave`), resampling (numpy, imported
on first use so a gateway that never speaks does not load it) and framing into chunks."""

from __future__ import annotations

import io
import wave

from microclaw.gateway.speech.base import Pcm, SpeechError


def to_wav(audio: Pcm) -> bytes:
    """``audio`` as a WAV file (PCM16 mono)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.sample_rate)
        w.writeframes(audio.data)
    return out.getvalue()


def from_wav(data: bytes, *, max_bytes: int = 64 * 1024 * 1024) -> Pcm:
    """The PCM16 audio in a WAV file (stereo is mixed down); `SpeechError` for anything else.

    Accepts the "unknown length" headers a streaming writer (``espeak-ng --stdout``) emits."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(max_bytes // max(1, width * channels))
    except (wave.Error, EOFError) as exc:
        raise SpeechError(f"not a WAV file: {exc}", transient=False) from None
    if width != 2 or channels not in (1, 2) or not 4000 <= rate <= 192_000:
        raise SpeechError(
            f"unsupported WAV: {channels} channel(s), {8 * width} bit, {rate} Hz", transient=False
        )
    frames = frames[: len(frames) - len(frames) % (2 * channels)]
    if channels == 2:
        import numpy as np

        stereo = np.frombuffer(frames, dtype="<i2").reshape(-1, 2).astype(np.int32)
        frames = (stereo.sum(axis=1) // 2).astype("<i2").tobytes()
    return Pcm(frames, rate)


def resample(audio: Pcm, rate: int) -> Pcm:
    """``audio`` at ``rate`` (linear interpolation, with a low-pass filter when downsampling)."""
    if audio.sample_rate == rate or not audio.data:
        return Pcm(audio.data, rate)
    import numpy as np

    samples = np.frombuffer(audio.data[: len(audio.data) // 2 * 2], dtype="<i2").astype(np.float64)
    if rate < audio.sample_rate:
        taps = np.arange(63) - 31
        cutoff = 0.45 * rate / audio.sample_rate
        kernel = np.sinc(2 * cutoff * taps) * np.hamming(len(taps))
        samples = np.convolve(samples, kernel / kernel.sum(), mode="same")
    count = int(len(samples) * rate / audio.sample_rate)
    positions = np.arange(count) * (audio.sample_rate / rate)
    out = np.interp(positions, np.arange(len(samples)), samples)
    return Pcm(np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes(), rate)


def chunks(data: bytes, size: int) -> list[bytes]:
    """``data`` in pieces of at most ``size`` bytes, each a whole number of samples."""
    size -= size % 2
    return [data[i : i + size] for i in range(0, len(data), size)]
