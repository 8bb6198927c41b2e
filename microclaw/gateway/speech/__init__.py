"""Speech providers for voice turns, chosen by name from ``[voice]`` (``stt``, ``tts``).

One small interface (`base`), siblings per engine: ``pocketsphinx`` (offline speech to text,
the English model ships in the wheel), ``espeak`` (offline text to speech, Debian's
``espeak-ng``), ``openai`` (``/v1/audio/transcriptions`` and ``/v1/audio/speech`` of any
OpenAI-compatible server through the ``openai`` SDK). Modules are imported only when chosen,
so an unused SDK or model never loads; ``"off"`` gives None. `audio` holds the PCM helpers.
"""

from __future__ import annotations

from microclaw.config import VoiceSettings
from microclaw.gateway.speech.base import SpeechToText, TextToSpeech
from microclaw.registry import load_class

STT_PROVIDERS: dict[str, str] = {
    "pocketsphinx": "microclaw.gateway.speech.pocketsphinx:PocketSphinxSTT",
    "openai": "microclaw.gateway.speech.openai:OpenAISTT",
}
TTS_PROVIDERS: dict[str, str] = {
    "espeak": "microclaw.gateway.speech.espeak:EspeakTTS",
    "openai": "microclaw.gateway.speech.openai:OpenAITTS",
}


def load_stt(settings: VoiceSettings) -> SpeechToText | None:
    """The speech-to-text provider named by ``voice.stt``, or None for ``off``."""
    if settings.stt == "off":
        return None
    cls = load_class(STT_PROVIDERS, settings.stt, "voice.stt", aliases=("off",))
    provider: SpeechToText = cls.from_settings(settings)
    return provider


def load_tts(settings: VoiceSettings) -> TextToSpeech | None:
    """The text-to-speech provider named by ``voice.tts``, or None for ``off``."""
    if settings.tts == "off":
        return None
    cls = load_class(TTS_PROVIDERS, settings.tts, "voice.tts", aliases=("off",))
    provider: TextToSpeech = cls.from_settings(settings)
    return provider
