"""The gateway's WebSocket server: one TLS port, pairing for peers without a certificate,
mutual-TLS sessions for paired devices.

A connection without a client certificate is *pre-auth*: it may send only pairing frames of
at most ``preauth_max_bytes``, lives at most ``preauth_timeout_s``, and at most
``max_preauth_connections`` exist at once (the TLS and WebSocket handshakes are bounded by
``handshake_timeout_s``). A client certificate is verified by TLS against the device CA; the
session then also requires that its fingerprint is the one recorded for its device id (CN)
and that the device is not revoked — checked at the handshake, before every inbound frame,
and every ``revocation_check_s`` for idle sessions, so `microclaw device revoke` closes a live
session and refuses the certificate from then on.

A session: ``device.hello {device_id, last_seen_seq, ...}`` (within ``hello_timeout_s``); the
gateway answers ``welcome``, replays every event with seq > last_seen_seq from the
`DeviceLog`, then streams new ones as the log grows (one watcher polls the log for all
devices). Each ``message`` enters the same inbound path as every connector's
(`microclaw.pipeline.inbound`, idempotent by ``message_id``) and is acked only after it is
durable. Voice frames (``listen.*`` and binary audio) go to `microclaw.gateway.voice`, whose
transcripts take the same inbound path; after a ``message`` event is sent, the voice side may
speak it. WebSocket pings keep idle devices connected; a device that stops answering them is
dropped. One session per device: a new one replaces the old.

OTA (optional, `microclaw.gateway.otaserve`): HTTPS requests under ``/ota/`` on the same port
are answered by its ``process_request`` hook; sessions get ``ota.offer`` / ``ota.rollback``
after the hello and when a release changes, and ``ota.result`` frames are stored by it.

Does not sign anything itself (`microclaw.gateway.pairing`) and reads no settings beyond the
`GatewaySettings` slice it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from microclaw.config import GatewaySettings
from microclaw.envelope import ENVELOPE_VERSION, Envelope, parse_envelope
from microclaw.errors import EnvelopeError
from microclaw.gateway import protocol as p
from microclaw.gateway.ca import peer_identity
from microclaw.gateway.devicelog import DeviceLog
from microclaw.gateway.pairing import Paired, Pairing, PairingError, chat_of, display_code
from microclaw.gateway.voice import SPEAKER, VoiceSession, VoiceTurns
from microclaw.pipeline.inbound import IngestResult
from microclaw.store import audit, devices
from microclaw.store.db import now_ms, read_tx, write_tx

if TYPE_CHECKING:
    from microclaw.gateway.otaserve import OtaService

logger = logging.getLogger(__name__)

CLOSE_SUPERSEDED = 4409


@dataclass(slots=True)
class Session:
    ws: ServerConnection
    device: devices.DeviceRow
    fingerprint: str
    sent_seq: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    voice: VoiceSession = field(default_factory=VoiceSession)


def _peer_of(ws: ServerConnection) -> tuple[str, str] | None:
    """The verified client certificate's identity (`peer_identity`); a function of its own so
    that the session's coroutine keeps no certificate bytes alive."""
    ssl_object = ws.transport.get_extra_info("ssl_object")
    return peer_identity(ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None)


class Gateway:
    """Serves devices until `stop`. Its collaborators arrive built (see `microclaw.cli.gateway`)."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        engine: Engine,
        ssl_context: ssl.SSLContext,
        pairing: Pairing,
        log: DeviceLog,
        ingest: Callable[[Envelope], IngestResult],
        reject: Callable[[EnvelopeError], None],
        on_paired: Callable[[Paired], object] = lambda paired: None,
        max_text_bytes: int = 65536,
        ota: OtaService | None = None,
        voice: VoiceTurns | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.ssl_context = ssl_context
        self.pairing = pairing
        self.log = log
        self.ingest = ingest
        self.reject = reject
        self.on_paired = on_paired
        self.max_text_bytes = max_text_bytes
        self.ota = ota
        self.voice = voice
        self.sessions: dict[str, Session] = {}
        self.preauth = 0
        self.connections_seen = 0  # connections opened + closed (the entry point trims memory by it)
        self._stop = asyncio.Event()

    # --- serving ------------------------------------------------------------------------

    async def serve(self, host: str, port: int, *, ready: Callable[[Server], object] | None = None) -> None:
        """Listen on ``host:port`` until `stop` is called."""
        s = self.settings
        await asyncio.to_thread(self._mark_all_offline)
        async with serve(
            self.handler,
            host,
            port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=s.handshake_timeout_s,
            open_timeout=s.handshake_timeout_s,
            ping_interval=s.ping_interval_s,
            ping_timeout=s.ping_timeout_s,
            max_size=s.preauth_max_bytes,
            max_queue=4,
            compression=None,
            server_header=None,
            process_request=self.ota.process_request if self.ota is not None else None,
        ) as server:
            logger.info("gateway listening on %s:%s", host, port)
            if ready is not None:
                ready(server)
            watcher = asyncio.create_task(self._watch())
            try:
                await self._stop.wait()
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                if self.voice is not None:
                    await self.voice.close()

    def stop(self) -> None:
        self._stop.set()

    async def handler(self, ws: ServerConnection) -> None:
        self.connections_seen += 1
        try:
            identity = _peer_of(ws)
            if identity is None:
                await self._preauth(ws)
            else:
                await self._session(ws, *identity)
        finally:
            self.connections_seen += 1

    # --- pre-auth: pairing only -----------------------------------------------------------

    async def _preauth(self, ws: ServerConnection) -> None:
        if self.preauth >= self.settings.max_preauth_connections:
            await ws.close(p.CLOSE_BUSY, "too many unauthenticated connections")
            return
        self.preauth += 1
        peer = str(ws.remote_address[0]) if ws.remote_address else "?"
        try:
            async with asyncio.timeout(self.settings.preauth_timeout_s):
                async for raw in ws:
                    try:
                        request = p.parse_frame(raw, "pairing")
                    except p.ProtocolError as exc:
                        logger.info("pre-auth frame refused from %s: %s", peer, exc.code)
                        await ws.send(p.frame("error", code=exc.code, detail=exc.detail))
                        await ws.close(p.CLOSE_POLICY, exc.code)
                        return
                    await ws.send(await asyncio.to_thread(self._pair_step, request, peer))
        except TimeoutError:
            await ws.close(p.CLOSE_TIMEOUT, "pre-auth time limit")
        except ConnectionClosed:
            pass
        finally:
            self.preauth -= 1

    def _pair_step(self, request: Any, peer: str) -> str:
        try:
            if isinstance(request, p.PairBegin):
                begun = self.pairing.begin(request.device_id, peer)
                logger.info(
                    "pairing code issued for %s", request.device_id, extra={"device_id": request.device_id}
                )
                return p.frame(
                    "pair.code",
                    code=display_code(begun.code),
                    secret=begun.secret,
                    expires_in_s=begun.expires_in_s,
                )
            if isinstance(request, p.PairPoll):
                token = self.pairing.poll(request.code, request.secret)
                if token is None:
                    return p.frame("pair.pending")
                return p.frame("pair.token", token=token, expires_in_s=self.pairing.limits.token_ttl_s)
            paired = self.pairing.redeem(request.token, request.csr)
        except PairingError as exc:
            return p.frame("error", code=exc.code, detail=exc.detail)
        logger.info("device %s paired", paired.device_id, extra={"device_id": paired.device_id})
        self.on_paired(paired)
        return p.frame(
            "pair.cert", device_id=paired.device_id, cert=paired.cert.pem, ca=self.pairing.ca.ca_pem
        )

    # --- sessions -------------------------------------------------------------------------

    def _recognise(self, device_id: str, fingerprint: str) -> devices.DeviceRow | None:
        with read_tx(self.engine) as conn:
            row = devices.get_device(conn, device_id)
        if row is None or row.status != devices.ACTIVE or row.cert_fingerprint != fingerprint:
            audit.record_now(
                self.engine,
                "device.session",
                decision="deny",
                device_id=device_id,
                reason="unknown device"
                if row is None
                else f"certificate {row.status if row.status != devices.ACTIVE else 'replaced'}",
            )
            return None
        return row

    async def _session(self, ws: ServerConnection, device_id: str, fingerprint: str) -> None:
        row = await asyncio.to_thread(self._recognise, device_id, fingerprint)
        if row is None:
            await ws.close(p.CLOSE_UNAUTHORIZED, "certificate not accepted")
            return
        ws.protocol.max_message_size = self.settings.max_frame_bytes
        try:
            async with asyncio.timeout(self.settings.hello_timeout_s):
                raw = await ws.recv()
            hello = p.parse_frame(raw, "hello")
        except TimeoutError:
            await ws.close(p.CLOSE_TIMEOUT, "no device.hello in time")
            return
        except ConnectionClosed:
            return
        except p.ProtocolError as exc:
            await ws.send(p.frame("error", code=exc.code, detail=exc.detail))
            await ws.close(p.CLOSE_POLICY, exc.code)
            return
        if hello.device_id != device_id:
            await ws.close(p.CLOSE_UNAUTHORIZED, "device_id does not match the certificate")
            return
        previous = self.sessions.get(device_id)
        if previous is not None:
            await previous.ws.close(CLOSE_SUPERSEDED, "a newer session replaced this one")
        last_seq = await asyncio.to_thread(self.log.last_seq, device_id)
        session = Session(ws, row, fingerprint, sent_seq=min(hello.last_seen_seq, last_seq))
        session.voice.speaker = SPEAKER in hello.capabilities
        self.sessions[device_id] = session
        await asyncio.to_thread(self._record, device_id, True, hello)
        logger.info("device %s online (fw %s)", device_id, hello.fw_version, extra={"device_id": device_id})
        del raw, hello  # not kept for the session's lifetime (~1 KB per device)
        pump = asyncio.create_task(self._pump(session))
        try:
            await ws.send(
                p.frame("welcome", device_id=device_id, last_seq=last_seq, protocol=p.PROTOCOL_VERSION)
            )
            if self.ota is not None:
                self.ota.session_started(device_id)
                await self._push_ota(session)
            async for raw in ws:
                if not await asyncio.to_thread(self._still_valid, session):
                    await ws.close(p.CLOSE_REVOKED, "certificate revoked")
                    break
                await self._on_frame(session, raw)
        except ConnectionClosed:
            pass
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await pump
            if self.voice is not None:
                self.voice.end(session.voice)
            if self.sessions.get(device_id) is session:
                del self.sessions[device_id]
                if self.ota is not None:
                    self.ota.session_ended(device_id)
                await asyncio.to_thread(self._record, device_id, False, None)
            logger.info("device %s offline", device_id, extra={"device_id": device_id})

    async def _on_frame(self, session: Session, raw: str | bytes) -> None:
        if isinstance(raw, bytes) and self.voice is not None:
            await self.voice.on_audio(session.voice, raw, session.ws.send)
            return
        try:
            message = p.parse_frame(raw, "session")
        except p.ProtocolError as exc:
            await session.ws.send(p.frame("error", code=exc.code, detail=exc.detail))
            return
        if isinstance(message, p.OtaResult):
            if self.ota is None:
                await session.ws.send(p.frame("error", code="unsupported", detail="OTA is not enabled"))
            else:
                try:
                    answer = await asyncio.to_thread(self.ota.on_result, session.device, message)
                except Exception:  # a locked or full disk: no ack, the device keeps its report
                    logger.exception("storing an ota.result failed")
                    answer = p.frame("error", code="unavailable", detail="not stored; report again later")
                await session.ws.send(answer)
            return
        if isinstance(message, p.ListenStart | p.ListenStop | p.ListenCancel):
            await self._on_listen(session, message)
            return
        status, detail = await asyncio.to_thread(self._ingest_message, session.device, message)
        await session.ws.send(p.frame("ack", message_id=message.message_id, status=status, **detail))

    async def _on_listen(
        self, session: Session, frame: p.ListenStart | p.ListenStop | p.ListenCancel
    ) -> None:
        if self.voice is None:
            await session.ws.send(
                p.frame(
                    "error",
                    code="voice_off",
                    detail="voice is off on this gateway",
                    listen_id=frame.listen_id,
                )
            )
            return

        async def ingest(message_id: str, text: str) -> tuple[str, dict[str, str]]:
            message = p.DeviceMessage(type="message", message_id=message_id, text=text)
            return await asyncio.to_thread(self._ingest_message, session.device, message)

        await self.voice.on_frame(session.voice, frame, session.ws.send, ingest)

    def _ingest_message(
        self, device: devices.DeviceRow, message: p.DeviceMessage
    ) -> tuple[str, dict[str, str]]:
        chat = chat_of(device.device_id)
        try:
            envelope = parse_envelope(
                {
                    "v": ENVELOPE_VERSION,
                    "seq": 0,
                    "ts_ms": message.ts_ms if message.ts_ms is not None else now_ms(),
                    "source": "device",
                    "device_id": device.device_id,
                    "message_id": f"{chat}:{message.message_id}",
                    "payload": {
                        "chat_id": chat,
                        "sender": chat,
                        "sender_name": device.name,
                        "text": message.text,
                    },
                },
                max_text_bytes=self.max_text_bytes,
            )
        except EnvelopeError as exc:
            self.reject(exc)
            return "rejected", {"detail": str(exc)}
        return self.ingest(envelope).status, {}

    async def _pump(self, session: Session) -> None:
        """Replay, then stream: every event after ``sent_seq``, in order, once per session."""
        batch_size = self.settings.replay_batch
        device_id = session.device.device_id
        while True:
            session.wake.clear()
            batch = await asyncio.to_thread(self.log.after, device_id, session.sent_seq, limit=batch_size)
            for event in batch:
                await session.ws.send(
                    p.frame(
                        "event", seq=event.seq, kind=event.kind, body=event.body, ts_ms=event.created_at_ms
                    )
                )
                session.sent_seq = event.seq
                if self.voice is not None:
                    await self.voice.speak(session.voice, event, session.ws.send)
            if len(batch) < batch_size:
                await session.wake.wait()

    async def _watch(self) -> None:
        """Wake the sessions whose devices got new events; close revoked sessions."""
        loop = asyncio.get_running_loop()
        last_id = await asyncio.to_thread(self.log.newest_id)
        next_check = loop.time()
        pushing: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                last_id, woken = await asyncio.to_thread(self.log.devices_since, last_id)
                for device_id in woken:
                    session = self.sessions.get(device_id)
                    if session is not None:
                        session.wake.set()
                if loop.time() >= next_check and self.sessions:
                    next_check = loop.time() + self.settings.revocation_check_s
                    await self._close_revoked()
                    idle = pushing is None or pushing.done()
                    if self.ota is not None and idle and await asyncio.to_thread(self.ota.changed):
                        # Off the watch loop: 1,000 sessions' offers must not delay streaming.
                        pushing = asyncio.create_task(self._push_ota_all())
            except Exception:  # a locked file or a full disk must not stop the gateway
                logger.exception("device log watch failed; retrying")

    async def _push_ota(self, session: Session) -> None:
        """OTA offers and rollbacks for this session's device; a failure only skips them (the
        device also asks over HTTPS, and the next change or session tries again)."""
        assert self.ota is not None
        try:
            frames = await asyncio.to_thread(self.ota.frames_for, session.device.device_id)
        except Exception:
            logger.exception("OTA offers for %s failed", session.device.device_id)
            return
        for frame in frames:
            with contextlib.suppress(ConnectionClosed):
                await session.ws.send(frame)

    async def _push_ota_all(self) -> None:
        for session in list(self.sessions.values()):
            await self._push_ota(session)

    async def _close_revoked(self) -> None:
        live = dict(self.sessions)
        valid = await asyncio.to_thread(self._valid_fingerprints, list(live))
        for device_id, session in live.items():
            if valid.get(device_id) != session.fingerprint:
                logger.info("closing revoked device %s", device_id, extra={"device_id": device_id})
                await session.ws.close(p.CLOSE_REVOKED, "certificate revoked")

    def _valid_fingerprints(self, device_ids: list[str]) -> dict[str, str]:
        with read_tx(self.engine) as conn:
            return devices.fingerprints(conn, device_ids)

    def _still_valid(self, session: Session) -> bool:
        return (
            self._valid_fingerprints([session.device.device_id]).get(session.device.device_id)
            == session.fingerprint
        )

    def _record(self, device_id: str, online: bool, hello: p.Hello | None) -> None:
        with write_tx(self.engine) as conn:
            devices.record_session(
                conn,
                device_id,
                online=online,
                now_ms=now_ms(),
                fw_version=hello.fw_version if hello else None,
                model_version=hello.model_version if hello else None,
                capabilities=hello.capabilities if hello else None,
                board=hello.board if hello else None,
            )

    def _mark_all_offline(self) -> None:
        with write_tx(self.engine) as conn:
            devices.mark_all_offline(conn, now_ms())
