"""Offline speech to text with CMU PocketSphinx (the PyPI wheel ships the US English acoustic
model, dictionary and language model: nothing is downloaded).

Capability card:
- Input: PCM16 mono at any rate (resampled to 16 kHz); English only; general vocabulary, so
  accuracy on free speech is modest (fine for short commands).
- Threads: decoding is CPU-bound C; it runs in a pool of ``voice.stt_workers`` threads, each with
  its own decoder (a decoder is not thread-safe), never on the gateway's event loop. A decoder
  loads its model (~90 MB) on its first use, so a gateway that never hears a voice turn pays
  nothing for it.
- Errors: a decoder failure is a permanent `SpeechError`; a decode slower than
  ``voice.stt_timeout_s`` a transient one.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Self

from microclaw.config import VoiceSettings
from microclaw.gateway.speech.audio import resample
from microclaw.gateway.speech.base import Pcm, SpeechError, SpeechToText

RATE = 16000


class PocketSphinxSTT(SpeechToText):
    name: ClassVar[str] = "pocketsphinx"

    def __init__(self, *, workers: int = 1, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stt")
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: VoiceSettings) -> Self:
        return cls(workers=settings.stt_workers, timeout_s=settings.stt_timeout_s)

    def _decoder(self) -> Any:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            from pocketsphinx import Decoder

            decoder = Decoder(samprate=RATE, loglevel="FATAL")
            self._local.decoder = decoder
        return decoder

    def _decode(self, pcm: bytes) -> str:
        decoder = self._decoder()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return str(hyp.hypstr).strip() if hyp is not None else ""

    async def transcribe(self, audio: Pcm) -> str:
        loop = asyncio.get_running_loop()
        try:
            pcm = await loop.run_in_executor(self._pool, lambda: resample(audio, RATE).data)
            async with asyncio.timeout(self.timeout_s):
                return await loop.run_in_executor(self._pool, self._decode, pcm)
        except TimeoutError:
            raise SpeechError("pocketsphinx: transcription timed out", transient=True) from None
        except (RuntimeError, ValueError, OSError) as exc:
            raise SpeechError(f"pocketsphinx: {type(exc).__name__}: {exc}", transient=False) from None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
