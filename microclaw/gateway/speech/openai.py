"""Speech through any OpenAI-compatible server, with the official ``openai`` SDK:
``POST /v1/audio/transcriptions`` (multipart WAV upload) and ``POST /v1/audio/speech``.

Capability card:
- Works with OpenAI and servers speaking the same audio endpoints (e.g. a local
  faster-whisper / Piper server); set ``voice.base_url`` (or ``OPENAI_BASE_URL``). A local
  server needs no key: a placeholder is sent when ``OPENAI_API_KEY`` is unset and a base URL
  is given.
- Settings: ``voice.stt_model`` (``whisper-1``), ``voice.language`` (empty: detect),
  ``voice.tts_model`` (``tts-1``), ``voice.tts_voice`` (``alloy``), ``voice.request_timeout_s``,
  ``voice.max_retries``.
- Wire: transcriptions get the audio as ``audio.wav`` (PCM16 mono at the device's rate),
  ``response_format=json``; speech asks for ``response_format=wav`` and accepts PCM16 WAV.
- Errors: after the SDK's retries, 408/409/429/5xx, timeouts and connection errors are
  transient `SpeechError`s; other API errors permanent. No SDK object leaves this module.
- The SDK is imported only when one of these providers is chosen.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import openai

from microclaw.config import VoiceSettings
from microclaw.errors import ConfigError
from microclaw.gateway.speech.audio import from_wav, to_wav
from microclaw.gateway.speech.base import Pcm, SpeechError, SpeechToText, TextToSpeech

_NO_KEY = "not-needed"


def _client(settings: VoiceSettings, which: str) -> openai.AsyncOpenAI:
    if not settings.api_key and not settings.base_url:
        raise ConfigError(
            f"voice.{which} is 'openai' but neither OPENAI_API_KEY nor voice.base_url "
            "(OPENAI_BASE_URL) is set",
            key="OPENAI_API_KEY",
        )
    return openai.AsyncOpenAI(
        api_key=settings.api_key or _NO_KEY,
        base_url=settings.base_url or None,
        timeout=settings.request_timeout_s,
        max_retries=settings.max_retries,
    )


def _failure(exc: Exception, what: str) -> SpeechError:
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return SpeechError(f"openai {what}: {type(exc).__name__}", transient=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return SpeechError(
            f"openai {what}: HTTP {status}", transient=status in (408, 409, 429) or status >= 500
        )
    return SpeechError(f"openai {what}: {type(exc).__name__}", transient=False)


class OpenAISTT(SpeechToText):
    name: ClassVar[str] = "openai"

    def __init__(self, client: openai.AsyncOpenAI, *, model: str, language: str = "") -> None:
        self._client = client
        self.model = model
        self.language = language

    @classmethod
    def from_settings(cls, settings: VoiceSettings) -> Self:
        return cls(_client(settings, "stt"), model=settings.stt_model, language=settings.language)

    async def transcribe(self, audio: Pcm) -> str:
        extra: dict[str, Any] = {"language": self.language} if self.language else {}
        try:
            result = await self._client.audio.transcriptions.create(
                model=self.model,
                file=("audio.wav", to_wav(audio), "audio/wav"),
                response_format="json",
                **extra,
            )
        except openai.OpenAIError as exc:
            raise _failure(exc, "transcription") from None
        text = getattr(result, "text", None)
        if not isinstance(text, str):
            raise SpeechError("openai transcription: the response had no text", transient=False)
        return text.strip()

    async def close(self) -> None:
        await self._client.close()


class OpenAITTS(TextToSpeech):
    name: ClassVar[str] = "openai"

    def __init__(self, client: openai.AsyncOpenAI, *, model: str, voice: str) -> None:
        self._client = client
        self.model = model
        self.voice = voice

    @classmethod
    def from_settings(cls, settings: VoiceSettings) -> Self:
        return cls(_client(settings, "tts"), model=settings.tts_model, voice=settings.tts_voice)

    async def synthesize(self, text: str) -> Pcm:
        try:
            response = await self._client.audio.speech.create(
                model=self.model, voice=self.voice, input=text, response_format="wav"
            )
            data = response.content
        except openai.OpenAIError as exc:
            raise _failure(exc, "speech") from None
        return from_wav(data)

    async def close(self) -> None:
        await self._client.close()
