"""The speech provider interface: PCM in, text out (`SpeechToText`); text in, PCM out
(`TextToSpeech`). Audio is always `Pcm`: signed 16-bit little-endian mono at ``sample_rate``.

Failures are `SpeechError` with a ``transient`` flag (a timeout, a 5xx, a busy server: the
device may try the same listen again) and a message that never carries a provider's object or
traceback. Providers are async; blocking engines run their work in threads of their own.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, Self

from microclaw.config import VoiceSettings


@dataclass(frozen=True)
class Pcm:
    """PCM16 little-endian mono audio."""

    data: bytes
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.data) / 2 / self.sample_rate


class SpeechError(Exception):
    """A provider failed; ``transient`` says whether trying again later may work."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class SpeechToText(abc.ABC):
    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: VoiceSettings) -> Self: ...

    @abc.abstractmethod
    async def transcribe(self, audio: Pcm) -> str:
        """What was said (stripped; empty when nothing was recognised); `SpeechError` else."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release threads, clients and models."""


class TextToSpeech(abc.ABC):
    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: VoiceSettings) -> Self: ...

    @abc.abstractmethod
    async def synthesize(self, text: str) -> Pcm:
        """``text`` spoken; `SpeechError` when the engine fails."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients."""
