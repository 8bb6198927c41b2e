"""Voice turns in a device session: audio in, transcript into the pipeline, replies spoken.

Inbound: ``listen.start {listen_id, format, sample_rate, channels}`` opens a listen; binary
frames until ``listen.stop {listen_id}`` are its audio (PCM16 mono). A listen holds at most
``max_listen_s`` of audio: past that it is refused with ``audio_too_long`` (sent then and again
in answer to its ``listen.stop``) and its buffer is freed; binary frames with no open listen
get ``no_listen``; at most ``max_active_listens`` listens are open in the gateway at once
(``busy``). On ``listen.stop`` the audio is transcribed by the `SpeechToText` provider (off
the event loop) and the text goes to the ``ingest`` callback: the same inbound path as a typed
``message``, under ``message_id`` ``voice:<listen_id>``, so a device that sends the same listen
again after a lost answer is stored once (``duplicate``). The answer is one ``transcript``
frame with the text and the ingest status.

Outbound: after the gateway sends a ``message`` event to a device whose hello listed the
``speaker`` capability, `speak` synthesizes its text and streams it as binary frames between
``speak.start {seq, format, sample_rate, channels, bytes}`` and ``speak.end {seq}``. The text
event is the durable record (logged, replayed, acknowledged by ``last_seen_seq``); audio is
derived from it when it is sent and never stored: an event sent more than ``speak_max_age_s``
after it was written (a replay to a device that was away) is shown, not spoken, and audio cut
off by a lost connection is not sent again.

Holds no settings beyond `VoiceLimits` and never touches the store itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from microclaw.config import VoiceSettings
from microclaw.gateway import protocol as p
from microclaw.gateway.devicelog import DeviceEvent
from microclaw.gateway.speech.audio import chunks, resample
from microclaw.gateway.speech.base import Pcm, SpeechError, SpeechToText, TextToSpeech

logger = logging.getLogger(__name__)

Send = Callable[[str | bytes], Awaitable[None]]
#: (device message id, text) -> (ack status, extra fields), as for a typed ``message``.
Ingest = Callable[[str, str], Awaitable[tuple[str, dict[str, str]]]]
SPEAKER = "speaker"


@dataclass(frozen=True)
class VoiceLimits:
    max_listen_s: float = 30.0
    max_active_listens: int = 16
    speak_max_age_s: float = 120.0
    max_speak_chars: int = 1000
    output_sample_rate: int = 16000
    chunk_bytes: int = 4096
    tts_concurrency: int = 2

    @classmethod
    def from_settings(cls, settings: VoiceSettings) -> VoiceLimits:
        return cls(
            max_listen_s=settings.max_listen_s,
            max_active_listens=settings.max_active_listens,
            speak_max_age_s=settings.speak_max_age_s,
            max_speak_chars=settings.max_speak_chars,
            output_sample_rate=settings.output_sample_rate,
            chunk_bytes=settings.chunk_bytes,
            tts_concurrency=settings.tts_concurrency,
        )


@dataclass(slots=True)
class Listen:
    listen_id: str
    sample_rate: int
    max_bytes: int
    audio: bytearray = field(default_factory=bytearray)
    overflowed: bool = False


@dataclass(slots=True)
class VoiceSession:
    """One connection's voice state."""

    speaker: bool = False
    listen: Listen | None = None


def _error(code: str, detail: str, **fields: object) -> str:
    return p.frame("error", code=code, detail=detail, **fields)


class VoiceTurns:
    """The gateway's voice side: shared providers and limits, per-session `VoiceSession`s."""

    def __init__(
        self,
        limits: VoiceLimits,
        *,
        stt: SpeechToText | None,
        tts: TextToSpeech | None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.limits = limits
        self.stt = stt
        self.tts = tts
        self.clock_ms = clock_ms
        self.active = 0
        self._tts_slots = asyncio.Semaphore(limits.tts_concurrency)

    # --- inbound ----------------------------------------------------------------------------

    def _release(self, vs: VoiceSession) -> Listen | None:
        listen, vs.listen = vs.listen, None
        if listen is not None and not listen.overflowed:
            self.active -= 1
        return listen

    def end(self, vs: VoiceSession) -> None:
        """The session ended: drop its open listen."""
        self._release(vs)

    async def on_audio(self, vs: VoiceSession, data: bytes, send: Send) -> None:
        listen = vs.listen
        if listen is None:
            await send(
                _error(
                    "no_listen", "binary frames are audio, accepted only between listen.start and listen.stop"
                )
            )
            return
        if listen.overflowed:
            return
        if len(listen.audio) + len(data) > listen.max_bytes:
            self._release(vs)
            listen.overflowed = True
            listen.audio = bytearray()
            vs.listen = listen
            await send(
                _error(
                    "audio_too_long",
                    f"a listen holds at most {self.limits.max_listen_s:g} s of audio",
                    listen_id=listen.listen_id,
                )
            )
            return
        listen.audio += data

    async def on_frame(
        self,
        vs: VoiceSession,
        frame: p.ListenStart | p.ListenStop | p.ListenCancel,
        send: Send,
        ingest: Ingest,
    ) -> None:
        if isinstance(frame, p.ListenStart):
            await self._start(vs, frame, send)
        elif isinstance(frame, p.ListenCancel):
            if vs.listen is not None and vs.listen.listen_id == frame.listen_id:
                self._release(vs)
        else:
            await self._stop(vs, frame, send, ingest)

    async def _start(self, vs: VoiceSession, frame: p.ListenStart, send: Send) -> None:
        if self.stt is None:
            await send(
                _error("voice_off", "speech to text is off on this gateway", listen_id=frame.listen_id)
            )
            return
        self._release(vs)  # a new listen replaces an unfinished one
        if self.active >= self.limits.max_active_listens:
            await send(_error("busy", "too many voice turns at once; try again", listen_id=frame.listen_id))
            return
        self.active += 1
        max_bytes = int(self.limits.max_listen_s * frame.sample_rate) * 2
        vs.listen = Listen(frame.listen_id, frame.sample_rate, max_bytes)

    async def _stop(self, vs: VoiceSession, frame: p.ListenStop, send: Send, ingest: Ingest) -> None:
        listen = vs.listen
        if listen is None or listen.listen_id != frame.listen_id:
            await send(_error("no_listen", "no open listen with this id", listen_id=frame.listen_id))
            return
        self._release(vs)
        if listen.overflowed:
            await send(
                _error(
                    "audio_too_long",
                    f"a listen holds at most {self.limits.max_listen_s:g} s of audio",
                    listen_id=listen.listen_id,
                )
            )
            return
        assert self.stt is not None
        audio = Pcm(bytes(listen.audio[: len(listen.audio) // 2 * 2]), listen.sample_rate)
        listen.audio = bytearray()
        try:
            text = await self.stt.transcribe(audio) if audio.data else ""
        except SpeechError as exc:
            logger.warning("transcription failed: %s", exc)
            await send(_error("stt_failed", str(exc), listen_id=listen.listen_id, transient=exc.transient))
            return
        message_id = p.voice_message_id(listen.listen_id)
        text = text[: p.MAX_TEXT_CHARS]
        extra: dict[str, str] = {}
        if not text:
            status = "empty"
        else:
            status, extra = await ingest(message_id, text)
        await send(
            p.frame(
                "transcript",
                listen_id=listen.listen_id,
                message_id=message_id,
                text=text,
                status=status,
                **extra,
            )
        )

    # --- outbound ---------------------------------------------------------------------------

    def should_speak(self, vs: VoiceSession, event: DeviceEvent) -> bool:
        if self.tts is None or not vs.speaker or event.kind != "message":
            return False
        if not isinstance(event.body.get("text"), str) or not event.body["text"].strip():
            return False
        return self.clock_ms() - event.created_at_ms <= self.limits.speak_max_age_s * 1000

    async def speak(self, vs: VoiceSession, event: DeviceEvent, send: Send) -> None:
        """Stream ``event``'s text as audio, if this device speaks and the event is fresh."""
        if not self.should_speak(vs, event):
            return
        assert self.tts is not None
        text = str(event.body["text"])[: self.limits.max_speak_chars]
        try:
            async with self._tts_slots:
                pcm = await self.tts.synthesize(text)
                pcm = await asyncio.to_thread(resample, pcm, self.limits.output_sample_rate)
        except SpeechError as exc:
            logger.warning("speech synthesis failed for seq %s: %s", event.seq, exc)
            await send(_error("tts_failed", str(exc), seq=event.seq, transient=exc.transient))
            return
        await send(
            p.frame(
                "speak.start",
                seq=event.seq,
                format="pcm16",
                sample_rate=pcm.sample_rate,
                channels=1,
                bytes=len(pcm.data),
            )
        )
        for chunk in chunks(pcm.data, self.limits.chunk_bytes):
            await send(chunk)
        await send(p.frame("speak.end", seq=event.seq))

    async def close(self) -> None:
        for provider in (self.stt, self.tts):
            if provider is not None:
                await provider.close()
