"""Voice turns from the firmware's C core against the real gateway: push-to-talk in the core
opens a listen, a phrase spoken by espeak-ng (16 kHz PCM16) goes out in the binary frames the
core sizes, the gateway's pocketsphinx transcribes it and the turn is stored once (a retry
after a lost answer and a reboot reuses the persisted listen id: `duplicate`); a reply to a
board with a speaker comes back as speech that the core hands to its audio HAL. The core is
built with gcc (UBSan) and driven through ctypes (coredev.py); the reply is scripted into the
device log the way the other firmware integration tests do it (no model, no workers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.firmware.coredev import CoreDevice, build_core
from tests.integration.firmware.test_core_on_gateway import paired_device, stored
from tests.integration.gateway.harness import GatewayRig, gateway_env
from tests.integration.gateway.test_voice import PHRASE, spoken, tone

pytestmark = pytest.mark.slow

MC_ACK_DUPLICATE = 1
PCM16_MONO_16K = {"format": "pcm16", "sample_rate": 16000, "channels": 1}
MC_AUDIO_PLAY_START, MC_AUDIO_PLAY_END = 2, 4


@pytest.fixture(scope="module")
def core_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_core(tmp_path_factory.mktemp("core"))


@pytest.fixture
def rig(make_stack: Any) -> Iterator[GatewayRig]:
    gateway = GatewayRig(make_stack(**gateway_env()))
    gateway.start()
    yield gateway


def transcripts(dev: CoreDevice) -> list[dict[str, Any]]:
    return [f for f in dev.received if f["type"] == "transcript"]


def test_a_voice_turn_from_the_core_is_stored_once_and_the_reply_plays_through_its_audio_hal(
    rig: GatewayRig, core_lib: Path, tmp_path: Path
) -> None:
    home = tmp_path / "board"
    pcm = spoken(PHRASE)
    dev = paired_device(rig, core_lib, home, "kitchen-1", speaker=True)
    hello = [f for f in dev.sent if f["type"] == "device.hello"][-1]
    assert hello["capabilities"] == ["text", "speaker"]  # the board's HAL can play

    # The first answer is lost on its way to the core (the link "drops" it).
    dev.drop = lambda frame: frame["type"] == "transcript"
    listen_id = dev.talk(pcm)
    dev.pump(lambda: bool(transcripts(dev)), timeout=120)
    assert transcripts(dev) == [
        {
            "type": "transcript",
            "listen_id": listen_id,
            "message_id": f"voice:{listen_id}",
            "text": PHRASE,
            "status": "stored",
        }
    ]
    starts = [f for f in dev.sent if f["type"] == "listen.start"]
    assert starts == [{"type": "listen.start", "listen_id": listen_id, **PCM16_MONO_16K}]
    assert dev.audio_sent == len(pcm) // 2 * 2
    assert dev.voice_pending == 1 and dev.voice_transcripts == 0  # the core never saw the answer
    dev.disconnect()
    dev.close()

    # The board reboots: the pending listen comes back from NVS and is sent again, same id.
    after = CoreDevice(dev.lib, home, rig.url, rig.ca_pem, "kitchen-1", speaker=True)
    try:
        assert after.voice_pending == 1 and after.voice_listen_id == listen_id
        after.pump(lambda: bool(after.welcomed))
        assert after.talk(pcm, retry=True) == listen_id
        after.pump(lambda: after.voice_transcripts == 1, timeout=120)
        repeat = transcripts(after)[-1]
        assert repeat["listen_id"] == listen_id and repeat["text"] == PHRASE
        assert repeat["status"] == "duplicate" and after.voice_last_status == MC_ACK_DUPLICATE
        assert after.voice_pending == 0 and "listen" not in after.storage.data  # answered: forgotten
        assert stored(rig, "dev:kitchen-1") == [(f"dev:kitchen-1:voice:{listen_id}", PHRASE)]

        # The reply (scripted into the device log as the assistant's answer would be) is shown
        # and spoken: every advertised byte reaches the audio HAL, between PLAY_START and PLAY_END.
        rig.log.append("kitchen-1", "message", {"text": "It is ten past four."}, idempotency_key="r1")
        after.pump(lambda: after.voice_speeches == 1, timeout=90)
        start = next(f for f in after.received if f["type"] == "speak.start")
        assert start["format"] == "pcm16" and start["sample_rate"] == 16000 and start["channels"] == 1
        assert len(after.played) == start["bytes"] == after.voice_speak_bytes > 16000
        assert after.audio_cmds[-2:] == [MC_AUDIO_PLAY_START, MC_AUDIO_PLAY_END]
        assert after.messages[-1] == "It is ten past four."
        assert after.states[-1] == "listening"  # speaking ended with speak.end
        assert after.bad_frames == 0 and not [f for f in after.received if f["type"] == "error"]
    finally:
        after.close()


def test_the_cores_cap_on_a_listen_is_what_the_gateway_accepts(
    rig: GatewayRig, core_lib: Path, tmp_path: Path
) -> None:
    """31 s held down: the core sends exactly 30 s (the gateway's default max_listen_s), ends the
    listen itself, and the gateway answers with a transcript, not `audio_too_long`."""
    dev = paired_device(rig, core_lib, tmp_path / "board", "porch-1")
    try:
        dev.check(dev.lib.mc_device_event(dev.dev, 8), "PTT down")
        listen_id = str(dev.voice_listen_id)
        dev.send_audio(tone(31))
        assert dev.audio_sent == 30 * 16000 * 2 and not dev.voice_recording
        assert dev.sent[-1] == {"type": "listen.stop", "listen_id": listen_id}  # the core's own stop
        dev.check(dev.lib.mc_device_event(dev.dev, 9), "PTT up")
        assert dev.lib.mc_device_listen_stop(dev.dev) == 0 and dev.sent[-1]["type"] == "listen.stop"
        assert len([f for f in dev.sent if f["type"] == "listen.stop"]) == 1  # release sent nothing more
        dev.pump(lambda: dev.voice_transcripts == 1, timeout=120)
        assert transcripts(dev)[-1]["listen_id"] == listen_id
        assert not [f for f in dev.received if f["type"] == "error"]
    finally:
        dev.close()


def test_a_text_only_core_declares_no_speaker_and_gets_no_speech(
    rig: GatewayRig, core_lib: Path, tmp_path: Path
) -> None:
    dev = paired_device(rig, core_lib, tmp_path / "board", "hall-1")
    try:
        hello = [f for f in dev.sent if f["type"] == "device.hello"][-1]
        assert hello["capabilities"] == ["text"]
        rig.log.append("hall-1", "message", {"text": "first"}, idempotency_key="a")
        rig.log.append("hall-1", "message", {"text": "second"}, idempotency_key="b")
        dev.pump(lambda: dev.last_seen == 2)
        assert dev.messages == ["first", "second"]
        assert not [f for f in dev.received if f["type"].startswith("speak.")] and dev.voice_speeches == 0
    finally:
        dev.close()
