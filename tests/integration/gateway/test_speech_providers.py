"""The speech providers on their own: the offline pair (espeak-ng speaks, pocketsphinx hears)
and the `openai` pair through the real SDK against a fake server speaking the real endpoints,
including how HTTP failures map to transient and permanent `SpeechError`s."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from microclaw.config import VoiceSettings
from microclaw.errors import ConfigError
from microclaw.gateway.speech import load_stt, load_tts
from microclaw.gateway.speech.audio import from_wav, resample, to_wav
from microclaw.gateway.speech.base import Pcm, SpeechError
from microclaw.gateway.speech.espeak import EspeakTTS
from microclaw.gateway.speech.openai import OpenAISTT, OpenAITTS
from microclaw.gateway.speech.pocketsphinx import PocketSphinxSTT
from tests.integration.gateway.fake_openai_audio import FakeOpenAIAudio

pytestmark = pytest.mark.slow


def test_espeak_speaks_and_pocketsphinx_hears_it() -> None:
    async def scenario() -> tuple[Pcm, str]:
        tts = EspeakTTS(voice="en-us+f2", speed=150)
        stt = PocketSphinxSTT()
        try:
            speech = await tts.synthesize("what time is it")
            heard = await stt.transcribe(resample(speech, 16000))
        finally:
            await stt.close()
        return speech, heard

    speech, heard = asyncio.run(scenario())
    assert speech.sample_rate == 22050 and speech.seconds > 0.5
    assert heard == "what time is it"


def test_text_that_looks_like_an_option_is_spoken_not_obeyed() -> None:
    speech = asyncio.run(EspeakTTS().synthesize("--version"))
    assert speech.seconds > 0.2  # spoken as words, not the version banner (which is not WAV)


def test_a_missing_espeak_is_a_permanent_error() -> None:
    with pytest.raises(SpeechError) as caught:
        asyncio.run(EspeakTTS(program="espeak-ng-not-installed").synthesize("hello"))
    assert not caught.value.transient and "not installed" in str(caught.value)


@pytest.fixture
def server() -> Iterator[FakeOpenAIAudio]:
    fake = FakeOpenAIAudio(
        transcripts=lambda wav: f" heard {from_wav(wav).seconds:.1f} s ",
        speech=lambda text: to_wav(Pcm(b"\x01\x00" * 2400, 24000)),
    )
    fake.start()
    yield fake
    fake.stop()


def settings(server: FakeOpenAIAudio, **extra: object) -> VoiceSettings:
    return VoiceSettings.model_validate(
        {"stt": "openai", "tts": "openai", "base_url": server.base_url, "max_retries": 0, **extra}
    )


def test_openai_transcription_and_speech_speak_the_real_endpoints(server: FakeOpenAIAudio) -> None:
    async def scenario() -> tuple[str, Pcm]:
        stt, tts = load_stt(settings(server)), load_tts(settings(server))
        assert isinstance(stt, OpenAISTT) and isinstance(tts, OpenAITTS)
        try:
            return await stt.transcribe(Pcm(bytes(16000), 8000)), await tts.synthesize("hi there")
        finally:
            await stt.close()
            await tts.close()

    text, speech = asyncio.run(scenario())
    assert text == "heard 1.0 s"
    assert speech == Pcm(b"\x01\x00" * 2400, 24000)
    upload, spoken = server.requests
    assert upload["content_type"] == "multipart/form-data" and upload["model"] == "whisper-1"
    assert upload["response_format"] == "json" and "language" not in upload
    assert upload["auth"] == "Bearer not-needed"  # a local server without a key
    assert from_wav(upload["file"]) == Pcm(bytes(16000), 8000)
    assert spoken["model"] == "tts-1" and spoken["voice"] == "alloy" and spoken["input"] == "hi there"


@pytest.mark.parametrize(("status", "transient"), [(503, True), (429, True), (400, False), (401, False)])
def test_openai_failures_are_transient_or_permanent(
    server: FakeOpenAIAudio, status: int, transient: bool
) -> None:
    server.fail_with = [status, status]
    stt, tts = OpenAISTT.from_settings(settings(server)), OpenAITTS.from_settings(settings(server))
    for call in (stt.transcribe(Pcm(bytes(320), 16000)), tts.synthesize("x")):
        with pytest.raises(SpeechError) as caught:
            asyncio.run(call)
        assert caught.value.transient is transient and f"HTTP {status}" in str(caught.value)


def test_a_speech_server_answering_with_something_else_than_wav_is_an_error(server: FakeOpenAIAudio) -> None:
    server.speech = lambda text: b"ID3\x04mp3 bytes"
    with pytest.raises(SpeechError, match="not a WAV file"):
        asyncio.run(OpenAITTS.from_settings(settings(server)).synthesize("x"))


def test_openai_without_key_or_server_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        load_stt(VoiceSettings.model_validate({"stt": "openai"}))
    assert load_stt(VoiceSettings.model_validate({"stt": "off"})) is None
    assert load_tts(VoiceSettings.model_validate({"tts": "off"})) is None
