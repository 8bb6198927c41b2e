"""Offline text to speech with ``espeak-ng`` (Debian package ``espeak-ng``).

Capability card:
- Output: PCM16 mono at 22,050 Hz (the gateway resamples to ``voice.output_sample_rate``).
- Settings: ``voice.espeak_voice`` (e.g. ``en-us``, ``en+f3``), ``voice.espeak_speed`` (words
  per minute). The text goes in on stdin, never on the command line, so it cannot be read as
  an option; SSML and phoneme input stay off.
- Process: one short-lived ``espeak-ng`` per reply, killed after 30 s.
- Errors: the program missing is a permanent `SpeechError` (install ``espeak-ng``); a crash or
  a timeout, a transient one.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from typing import ClassVar, Self

from microclaw.config import VoiceSettings
from microclaw.gateway.speech.audio import from_wav
from microclaw.gateway.speech.base import Pcm, SpeechError, TextToSpeech

PROGRAM = "espeak-ng"
TIMEOUT_S = 30.0


class EspeakTTS(TextToSpeech):
    name: ClassVar[str] = "espeak"

    def __init__(self, *, voice: str = "en-us", speed: int = 160, program: str = PROGRAM) -> None:
        self.voice = voice
        self.speed = speed
        self.program = program

    @classmethod
    def from_settings(cls, settings: VoiceSettings) -> Self:
        return cls(voice=settings.espeak_voice, speed=settings.espeak_speed)

    @property
    def available(self) -> bool:
        return shutil.which(self.program) is not None

    async def synthesize(self, text: str) -> Pcm:
        path = shutil.which(self.program)
        if path is None:
            raise SpeechError(
                f"{self.program} is not installed (Debian: apt-get install espeak-ng)", transient=False
            )
        proc = await asyncio.create_subprocess_exec(
            path,
            "-v",
            self.voice,
            "-s",
            str(self.speed),
            "--stdout",
            "--stdin",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(TIMEOUT_S):
                out, err = await proc.communicate(text.encode())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise SpeechError("espeak-ng timed out", transient=True) from None
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip()[:200]
            raise SpeechError(f"espeak-ng exited with {proc.returncode}: {detail}", transient=True)
        return from_wav(out)
