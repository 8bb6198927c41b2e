"""Voice turns through a real gateway process over real TLS, with the real pipeline behind it.

A phrase spoken by espeak-ng and resampled to 16 kHz PCM16 is sent by the device simulator as
a voice turn; the gateway transcribes it (offline: pocketsphinx; or the `openai` providers
against a fake server speaking the real endpoints), the transcript is stored through the
inbound path like a typed message, the router's scripted model answers it, and the reply
comes back as a text event plus synthesized audio frames. Limits: a listen over its length
and audio outside a listen are refused and the session goes on.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from microclaw.gateway.simulator import DeviceSimulator
from microclaw.gateway.speech.audio import from_wav, resample, to_wav
from microclaw.gateway.speech.base import Pcm
from tests.integration.gateway.fake_openai_audio import FakeOpenAIAudio
from tests.integration.gateway.harness import GatewayRig, gateway_env
from tests.integration.gateway.test_gateway import run, stored_messages, until, with_session
from tests.integration.stack import Stack

pytestmark = pytest.mark.slow

PHRASE = "what time is it"


def spoken(text: str) -> bytes:
    """``text`` as espeak-ng says it (a voice and speed pocketsphinx recognises), PCM16 16 kHz."""
    assert shutil.which("espeak-ng"), "espeak-ng is missing: run scripts/install-test-deps.sh"
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us+f2", "-s", "150", "--stdout", text], capture_output=True, check=True
    ).stdout
    return resample(from_wav(wav), 16000).data


def tone(seconds: float, rate: int = 16000) -> bytes:
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(int(seconds * rate))
    )


def voice_rig(make_stack: Callable[..., Stack], *, workers: bool, **env: str) -> GatewayRig:
    stack = make_stack(**gateway_env(), **env)
    rig = GatewayRig(stack)
    rig.start()
    if workers:
        stack.router()
        stack.outbound()
        stack.wait_workers(2)
    return rig


async def voice_turn(rig: GatewayRig, sim: DeviceSimulator, pcm: bytes, listen_id: str) -> dict[str, Any]:
    await sim.listen(listen_id, pcm)

    def refused() -> list[dict[str, Any]]:
        return [e for e in sim.errors if e.get("listen_id") == listen_id]

    await until(lambda: listen_id in sim.transcripts or bool(refused()), "the transcript", timeout=60)
    assert not refused()
    return sim.transcripts[listen_id]


def reply_and_speech(sim: DeviceSimulator) -> tuple[dict[str, Any], dict[str, Any]]:
    event = next(e for e in sim.events if e["body"]["text"].startswith("seen:"))
    return event, sim.speech[int(event["seq"])]


def test_a_spoken_phrase_is_transcribed_offline_answered_and_spoken_back(
    make_stack: Callable[..., Stack],
) -> None:
    rig = voice_rig(make_stack, workers=True)
    pcm = spoken(PHRASE)

    async def scenario() -> tuple[DeviceSimulator, dict[str, Any], dict[str, Any]]:
        sim = await rig.paired("kitchen-1", capabilities=("text", "speaker"))

        async def talk() -> tuple[dict[str, Any], dict[str, Any]]:
            first = await voice_turn(rig, sim, pcm, "l-1")
            await until(lambda: any(s for s in sim.speech), "the spoken reply", timeout=90)
            # The device lost the first answer and sends the same listen again: stored once.
            sim.transcripts.pop("l-1")
            repeat = await voice_turn(rig, sim, pcm, "l-1")
            return first, repeat

        first, repeat = await with_session(sim, talk)
        return sim, first, repeat

    sim, first, repeat = run(scenario())
    assert first == {
        "type": "transcript",
        "listen_id": "l-1",
        "message_id": "voice:l-1",
        "text": PHRASE,
        "status": "stored",
    }
    assert repeat["status"] == "duplicate" and repeat["text"] == PHRASE
    stored = stored_messages(rig, "dev:kitchen-1")
    assert stored.count(("dev:kitchen-1:voice:l-1", PHRASE)) == 1
    event, speech = reply_and_speech(sim)
    assert event["body"]["text"] == f"seen: {PHRASE}"
    assert speech["format"] == "pcm16" and speech["sample_rate"] == 16000 and speech["channels"] == 1
    assert len(speech["audio"]) == speech["bytes"] > 16000  # over half a second of speech
    assert sim.errors == []


def test_replies_to_a_device_without_a_speaker_are_text_only(make_stack: Callable[..., Stack]) -> None:
    rig = voice_rig(make_stack, workers=True)

    async def scenario() -> DeviceSimulator:
        sim = await rig.paired("desk-1")

        async def talk() -> None:
            sim.send_text("hello", message_id="m-1")
            await until(lambda: any(e["body"]["text"] == "seen: hello" for e in sim.events), "the reply", 90)
            await asyncio.sleep(1)

        await with_session(sim, talk)
        return sim

    sim = run(scenario())
    assert sim.speech == {} and sim.errors == []


@pytest.fixture
def openai_audio() -> Iterator[FakeOpenAIAudio]:
    def speech(text: str) -> bytes:
        return to_wav(Pcm(tone(0.5, 24000), 24000))  # what a 24 kHz TTS server returns

    server = FakeOpenAIAudio(transcripts=lambda wav: PHRASE if from_wav(wav).data else "", speech=speech)
    server.start()
    yield server
    server.stop()


def test_the_openai_providers_transcribe_and_speak_through_the_gateway(
    make_stack: Callable[..., Stack], openai_audio: FakeOpenAIAudio
) -> None:
    rig = voice_rig(
        make_stack,
        workers=True,
        MICROCLAW_VOICE__STT="openai",
        MICROCLAW_VOICE__TTS="openai",
        MICROCLAW_VOICE__BASE_URL=openai_audio.base_url,
        MICROCLAW_VOICE__STT_MODEL="whisper-test",
        MICROCLAW_VOICE__LANGUAGE="en",
        OPENAI_API_KEY="sk-test-voice",
    )
    pcm = tone(1.0)

    async def scenario() -> tuple[DeviceSimulator, dict[str, Any]]:
        sim = await rig.paired("hall-1", capabilities=("text", "speaker"))

        async def talk() -> dict[str, Any]:
            heard = await voice_turn(rig, sim, pcm, "l-7")
            await until(lambda: any(s for s in sim.speech), "the spoken reply", timeout=90)
            return heard

        return sim, await with_session(sim, talk)

    sim, heard = run(scenario())
    assert heard["text"] == PHRASE and heard["status"] == "stored"
    transcription = next(r for r in openai_audio.requests if r["path"] == "/v1/audio/transcriptions")
    assert transcription["content_type"] == "multipart/form-data"
    assert transcription["model"] == "whisper-test" and transcription["language"] == "en"
    assert transcription["auth"] == "Bearer sk-test-voice"
    sent = from_wav(transcription["file"])
    assert transcription["filename"] == "audio.wav" and sent == Pcm(pcm, 16000)
    speech_request = next(r for r in openai_audio.requests if r["path"] == "/v1/audio/speech")
    assert speech_request["input"] == f"seen: {PHRASE}" and speech_request["response_format"] == "wav"
    _, speech = reply_and_speech(sim)
    assert speech["sample_rate"] == 16000 and len(speech["audio"]) == 16000  # 0.5 s at 16 kHz, PCM16


def test_oversized_audio_and_audio_outside_a_listen_are_refused_and_the_session_goes_on(
    make_stack: Callable[..., Stack],
) -> None:
    rig = voice_rig(make_stack, workers=False, MICROCLAW_VOICE__MAX_LISTEN_S="1")

    async def scenario() -> list[dict[str, Any]]:
        sim = await rig.paired("porch-1")
        frames: list[dict[str, Any]] = []
        async with connect(rig.url, ssl=sim.ssl_context(), compression=None) as ws:
            await ws.send(json.dumps({"type": "device.hello", "device_id": "porch-1", "last_seen_seq": 0}))
            assert json.loads(await ws.recv())["type"] == "welcome"

            async def answer() -> dict[str, Any]:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                frames.append(frame)
                return dict(frame)

            await ws.send(tone(0.1))  # no listen open
            await answer()
            await ws.send(json.dumps({"type": "listen.start", "listen_id": "big", "sample_rate": 16000}))
            for _ in range(4):  # 2 s in 0.5 s frames: the third passes the 1 s limit
                await ws.send(tone(0.5))
            await answer()
            await ws.send(json.dumps({"type": "listen.stop", "listen_id": "big"}))
            await answer()
            await ws.send(json.dumps({"type": "listen.stop", "listen_id": "never-started"}))
            await answer()
            await ws.send(json.dumps({"type": "listen.start", "listen_id": "x", "channels": 2}))
            await answer()
            await ws.send(json.dumps({"type": "message", "message_id": "m-after", "text": "still here"}))
            await answer()
        return frames

    frames = run(scenario())
    assert [(f["type"], f.get("code") or f.get("status")) for f in frames] == [
        ("error", "no_listen"),
        ("error", "audio_too_long"),
        ("error", "audio_too_long"),
        ("error", "no_listen"),
        ("error", "bad_frame"),
        ("ack", "stored"),
    ]
    assert frames[1]["listen_id"] == "big"
    assert stored_messages(rig, "dev:porch-1") == [("dev:porch-1:m-after", "still here")]
