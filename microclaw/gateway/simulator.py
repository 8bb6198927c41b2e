"""A device simulator speaking the exact device protocol, for tests and benchmarks.

It behaves like the firmware: NVS is a JSON file (device id, the provisioned CA, its own key
and certificate, the last event seq it processed), its key is generated locally and only a
CSR leaves it, it trusts only the provisioned CA (so an impostor gateway fails the TLS
handshake), outgoing messages wait in a bounded offline queue that drops the oldest when full
until the gateway acks them, events are processed in seq order exactly once (a repeated seq
is counted as a duplicate and ignored, a skipped one as a gap), and a lost connection is
retried with exponential backoff.

OTA like the firmware's updater (`check_update`): fetch the manifest over HTTPS with the
client certificate, verify its ed25519 signature with the pinned OTA public key (NVS
``ota_pubkey``), refuse another board, a version that is not newer and one whose
``min_version`` is above the running version, download the image, check size and sha256,
write it into the inactive slot (a file next to the NVS file), switch slots and report
``ota.result`` (kept until the gateway's ``ota.ack``, resent after a reconnect). An
``ota.rollback`` for the running release switches back to the previous slot.

Voice: `listen` sends a voice turn (``listen.start``, PCM16 in binary frames, ``listen.stop``)
on the open connection; ``transcripts`` keeps the gateway's answers by listen id, ``speech``
the audio received between ``speak.start`` and ``speak.end`` by event seq, ``errors`` every
``error`` frame. Declare ``capabilities=["text", "speaker"]`` to be spoken to.

Not a hardware model: no microphone, no screen. It is not imported by the gateway.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import ssl
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from microclaw.gateway import ota
from microclaw.private import private_dir, write_private


class PairingRefused(Exception):
    """The gateway refused a pairing step; ``code`` is its error code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass
class Nvs:
    """The device's non-volatile storage, one JSON file (0600), written atomically."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> Nvs:
        data = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, data)

    def save(self) -> None:
        private_dir(self.path.parent)
        tmp = self.path.with_name(self.path.name + ".tmp")
        write_private(tmp, json.dumps(self.data))
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class UpdateOutcome:
    """What one `DeviceSimulator.check_update` did: ``installed``, ``none`` (nothing offered:
    the gateway's reason) or ``refused`` (the device would not install it: why)."""

    status: Literal["installed", "none", "refused"]
    reason: str
    version: str | None = None
    http_status: int | None = None


def make_csr(device_id: str, key: ec.EllipticCurvePrivateKey) -> str:
    """A PEM CSR with subject CN=``device_id``, signed by ``key``."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


class DeviceSimulator:
    """One simulated terminal. Provision with ``device_id`` and the CA PEM, then `pair`, then
    `run` (or `session` for one connection)."""

    def __init__(
        self,
        nvs_path: Path,
        url: str,
        *,
        device_id: str | None = None,
        ca_pem: str | None = None,
        queue_limit: int = 64,
        fw_version: str = "sim-1.0.0",
        model_version: str = "",
        backoff: tuple[float, float] = (0.05, 2.0),
        board: str = "",
        ota_public_key: str | None = None,
        capabilities: tuple[str, ...] = ("text",),
    ) -> None:
        self.nvs = Nvs.open(nvs_path)
        if device_id is not None:
            self.nvs.data.setdefault("device_id", device_id)
        if ca_pem is not None:
            self.nvs.data["ca_pem"] = ca_pem
        self.nvs.data.setdefault("last_seen_seq", 0)
        if ota_public_key is not None:
            self.nvs.data["ota_pubkey"] = ota_public_key
        self.nvs.data.setdefault("versions", {"firmware": fw_version, "model": model_version})
        self.nvs.save()
        self.url = url
        self.board = board
        self.ota_metrics: dict[str, dict[str, float]] = {}  # kind -> metrics to report after install
        self.ota_reports: list[dict[str, Any]] = []
        self.ota_acks: list[dict[str, Any]] = []
        self.ota_offers: list[dict[str, Any]] = []
        self.ota_rollbacks: list[dict[str, Any]] = []
        self.backoff = backoff
        self.queue: deque[dict[str, Any]] = deque(maxlen=queue_limit)
        self.dropped = 0
        self.events: list[dict[str, Any]] = []
        self.duplicates = 0
        self.gaps: list[tuple[int, int]] = []
        self.acks: dict[str, str] = {}
        self.closes: list[int | None] = []
        self.connected = asyncio.Event()
        self._wake = asyncio.Event()
        self.capabilities = list(capabilities)
        self.transcripts: dict[str, dict[str, Any]] = {}
        self.speech: dict[int, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        self._speaking: dict[str, Any] | None = None
        self._ws: ClientConnection | None = None

    # --- identity -------------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return str(self.nvs.data["device_id"])

    @property
    def last_seen_seq(self) -> int:
        return int(self.nvs.data["last_seen_seq"])

    @property
    def fw_version(self) -> str:
        return str(self.nvs.data["versions"]["firmware"])

    @property
    def model_version(self) -> str:
        return str(self.nvs.data["versions"]["model"])

    @property
    def paired(self) -> bool:
        return "cert_pem" in self.nvs.data

    def _key(self) -> ec.EllipticCurvePrivateKey:
        pem = self.nvs.data.get("key_pem")
        if pem is None:
            key = ec.generate_private_key(ec.SECP256R1())
            self.nvs.data["key_pem"] = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            self.nvs.save()
            return key
        loaded = serialization.load_pem_private_key(pem.encode(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        return loaded

    def ssl_context(self, *, with_cert: bool = True) -> ssl.SSLContext:
        """TLS trusting only the provisioned CA, presenting the device certificate once paired."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.nvs.data["ca_pem"])
        if with_cert and self.paired:
            directory = self.nvs.path.parent
            cert, key = directory / f"{self.nvs.path.stem}.crt", directory / f"{self.nvs.path.stem}.key"
            write_private(cert, self.nvs.data["cert_pem"])
            write_private(key, self.nvs.data["key_pem"])
            ctx.load_cert_chain(cert, key)
        return ctx

    # --- pairing --------------------------------------------------------------------------

    async def pair(self, claim: Callable[[str], Awaitable[object] | object], *, poll_s: float = 0.05) -> None:
        """Run the pairing flow: show the code (``claim`` is the user typing it in), poll for
        the token, send the CSR, store the certificate. `PairingRefused` on a refusal."""
        # A pre-auth connection is time-limited (preauth_timeout_s) and the user may take longer
        # to claim the code: like the firmware, poll on a fresh connection when one was closed.
        ws: ClientConnection | None = None
        try:
            ws = await self._preauth_connect()
            begun = await self._ask(ws, {"type": "pair.begin", "device_id": self.device_id}, "pair.code")
            shown = claim(begun["code"])
            if asyncio.iscoroutine(shown):
                await shown
            poll = {"type": "pair.poll", "code": begun["code"], "secret": begun["secret"]}
            while True:
                try:
                    answer = await self._ask(ws, poll)
                except ConnectionClosed:
                    ws = await self._preauth_connect()
                    continue
                if answer["type"] == "pair.token":
                    break
                await asyncio.sleep(poll_s)
            request = {
                "type": "pair.csr",
                "token": answer["token"],
                "csr": make_csr(self.device_id, self._key()),
            }
            issued = await self._ask(ws, request, "pair.cert")
        finally:
            if ws is not None:
                await ws.close()
        self.nvs.data["cert_pem"] = issued["cert"]
        self.nvs.save()

    async def _preauth_connect(self) -> ClientConnection:
        return await connect(self.url, ssl=self.ssl_context(with_cert=False), compression=None)

    @staticmethod
    async def _ask(
        ws: ClientConnection, request: dict[str, Any], expect: str | None = None
    ) -> dict[str, Any]:
        await ws.send(json.dumps(request))
        answer: dict[str, Any] = json.loads(await ws.recv())
        if answer.get("type") == "error":
            raise PairingRefused(str(answer.get("code")), str(answer.get("detail")))
        if expect is not None and answer.get("type") != expect:
            raise PairingRefused("unexpected", f"expected {expect}, got {answer.get('type')}")
        return answer

    # --- messages -------------------------------------------------------------------------

    def send_text(self, text: str, message_id: str | None = None) -> str:
        """Queue a message for the host (sent now if connected, else after reconnecting)."""
        mid = message_id or uuid.uuid4().hex
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append({"type": "message", "message_id": mid, "text": text})
        self._wake.set()
        return mid

    def _on_event(self, event: dict[str, Any]) -> None:
        seq = int(event["seq"])
        last = self.last_seen_seq
        if seq <= last:
            self.duplicates += 1
            return
        if seq != last + 1:
            self.gaps.append((last, seq))
        self.events.append(event)
        self.nvs.data["last_seen_seq"] = seq
        self.nvs.save()

    async def session(self, stop: asyncio.Event) -> None:
        """One connection: hello, then exchange frames until ``stop`` or the link drops."""
        async with connect(self.url, ssl=self.ssl_context(), compression=None, open_timeout=10) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "device.hello",
                        "device_id": self.device_id,
                        "last_seen_seq": self.last_seen_seq,
                        "fw_version": self.fw_version,
                        "model_version": self.model_version,
                        "capabilities": self.capabilities,
                        "board": self.board,
                    }
                )
            )
            welcome = json.loads(await ws.recv())
            if welcome.get("type") != "welcome":
                raise ConnectionError(f"no welcome: {welcome}")
            if self.last_seen_seq > int(welcome["last_seq"]):
                self.nvs.data["last_seen_seq"] = 0  # the gateway's log was reset
                self.nvs.save()
            self._ws = ws
            self.connected.set()
            sender = asyncio.create_task(self._send_queue(ws))
            stopper = asyncio.create_task(stop.wait())
            try:
                async for raw in ws:
                    if isinstance(raw, bytes):
                        self._on_audio(raw)
                        continue
                    frame = json.loads(raw)
                    self._on_voice(frame)
                    if frame["type"] == "event":
                        self._on_event(frame)
                    elif frame["type"] == "ack":
                        self.acks[frame["message_id"]] = frame["status"]
                        self._drop_acked(frame["message_id"])
                    elif frame["type"] == "ota.ack":
                        self.ota_acks.append(frame)
                        self.ota_reports = [
                            r
                            for r in self.ota_reports
                            if (r["kind"], r["version"]) != (frame["kind"], frame["version"])
                        ]
                    elif frame["type"] == "ota.offer":
                        self.ota_offers.append(frame)
                    elif frame["type"] == "ota.rollback":
                        self.ota_rollbacks.append(frame)
                        self._rollback(frame["kind"], frame["version"])
                    if stop.is_set():
                        break
            finally:
                self._ws = None
                self.connected.clear()
                self.closes.append(ws.close_code)
                sender.cancel()
                stopper.cancel()

    # --- voice ----------------------------------------------------------------------------

    async def listen(
        self, listen_id: str, pcm: bytes, *, sample_rate: int = 16000, chunk_bytes: int = 3200
    ) -> None:
        """Send one voice turn on the open connection (`ConnectionError` when there is none)."""
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        start = {
            "type": "listen.start",
            "listen_id": listen_id,
            "format": "pcm16",
            "sample_rate": sample_rate,
        }
        await ws.send(json.dumps(start))
        for i in range(0, len(pcm), chunk_bytes):
            await ws.send(pcm[i : i + chunk_bytes])
        await ws.send(json.dumps({"type": "listen.stop", "listen_id": listen_id}))

    def _on_voice(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "transcript":
            self.transcripts[str(frame["listen_id"])] = frame
        elif kind == "error":
            self.errors.append(frame)
        elif kind == "speak.start":
            self._speaking = {**frame, "audio": bytearray()}
        elif kind == "speak.end" and self._speaking is not None:
            done, self._speaking = self._speaking, None
            done["audio"] = bytes(done["audio"])
            self.speech[int(frame["seq"])] = done

    def _on_audio(self, data: bytes) -> None:
        if self._speaking is not None:
            self._speaking["audio"] += data

    def _drop_acked(self, message_id: str) -> None:
        for item in list(self.queue):
            if item["message_id"] == message_id:
                self.queue.remove(item)

    async def _send_queue(self, ws: ClientConnection) -> None:
        sent: set[str] = set()
        reported: set[str] = set()
        while True:
            self._wake.clear()
            for item in list(self.queue):
                if item["message_id"] not in sent:
                    await ws.send(json.dumps(item))
                    sent.add(item["message_id"])
            for report in list(self.ota_reports):
                text = json.dumps(report)
                if text not in reported:
                    await ws.send(text)
                    reported.add(text)
            await self._wake.wait()

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop``: reconnect with exponential backoff after any failure."""
        delay = self.backoff[0]
        while not stop.is_set():
            try:
                session = asyncio.create_task(self.session(stop))
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait({session, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not session.done():
                    session.cancel()
                await asyncio.gather(session, return_exceptions=False)
                delay = self.backoff[0]
            except asyncio.CancelledError:
                if stop.is_set():
                    return
                raise
            except (OSError, ConnectionClosed, ConnectionError, TimeoutError, ssl.SSLError):
                pass
            if not stop.is_set():
                await asyncio.sleep(delay)
                delay = min(self.backoff[1], delay * 2)

    # --- OTA --------------------------------------------------------------------------------

    def _http_get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """One HTTPS GET to the gateway with the device certificate (blocking)."""
        url = urlsplit(self.url)
        target = urlsplit(path)
        host = target.hostname or url.hostname or "localhost"
        port = target.port or url.port or 443
        conn = http.client.HTTPSConnection(host, port, context=self.ssl_context(), timeout=30)
        try:
            conn.request("GET", target.path + (f"?{target.query}" if target.query else ""))
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def _slot_path(self, kind: str, slot: str) -> Path:
        return self.nvs.path.with_name(f"{self.nvs.path.stem}.{kind}.{slot}")

    def slot_image(self, kind: str) -> bytes | None:
        """The image in the active slot of ``kind`` (None before any install)."""
        state = self.nvs.data.get("slots", {}).get(kind)
        if state is None:
            return None
        return self._slot_path(kind, state["active"]).read_bytes()

    def _report(self, kind: str, version: str, ok: bool, reason: str = "") -> None:
        report: dict[str, Any] = {"type": "ota.result", "kind": kind, "version": version, "ok": ok}
        if reason:
            report["reason"] = reason[:256]
        if ok and self.ota_metrics.get(kind):
            report["metrics"] = self.ota_metrics[kind]
        self.ota_reports.append(report)
        self._wake.set()

    def _install(self, manifest: ota.Manifest, image: bytes) -> None:
        """Write ``image`` into the inactive slot, then make it active (an A/B switch)."""
        slots = self.nvs.data.setdefault("slots", {})
        kind = manifest.kind
        previous = slots.get(kind, {"active": "a", "versions": {"a": self.nvs.data["versions"][kind]}})
        target = "b" if previous["active"] == "a" else "a"
        path = self._slot_path(kind, target)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(image)
        os.replace(tmp, path)
        ota.verify_image(manifest, path.read_bytes())  # what was written, not what was received
        versions = {**previous.get("versions", {}), target: manifest.version}
        slots[kind] = {"active": target, "previous": previous["active"], "versions": versions}
        self.nvs.data["versions"][kind] = manifest.version
        self.nvs.save()

    def _rollback(self, kind: str, version: str) -> bool:
        """Switch ``kind`` back to its previous slot if it runs ``version``; whether it did."""
        state = self.nvs.data.get("slots", {}).get(kind)
        if state is None or self.nvs.data["versions"].get(kind) != version or not state.get("previous"):
            return False
        back = state["previous"]
        old = state["versions"].get(back)
        if old is None:
            return False
        state["active"], state["previous"] = back, None
        self.nvs.data["versions"][kind] = old
        self.nvs.save()
        return True

    async def check_update(self, kind: str = "firmware", *, install: bool = True) -> UpdateOutcome:
        """Ask the gateway for an update of ``kind`` and install it like the firmware would."""
        status, headers, body = await asyncio.to_thread(self._http_get, f"/ota/manifest?kind={kind}")
        if status in (204, 404):
            return UpdateOutcome("none", headers.get("x-ota-reason", ""), http_status=status)
        if status != 200:
            return UpdateOutcome("refused", f"HTTP {status}: {body[:200]!r}", http_status=status)
        pinned = self.nvs.data.get("ota_pubkey")
        if not pinned:
            return UpdateOutcome("refused", "no OTA public key provisioned", http_status=status)
        try:
            signature = base64.b64decode(headers.get("x-ota-signature", ""), validate=True)
            manifest = ota.verify(body, signature, Ed25519PublicKey.from_public_bytes(bytes.fromhex(pinned)))
        except (ota.ManifestRejected, ValueError) as exc:
            return UpdateOutcome("refused", f"manifest: {exc}", http_status=status)
        return await self.install_manifest(manifest, install=install)

    async def install_manifest(self, manifest: ota.Manifest, *, install: bool = True) -> UpdateOutcome:
        """The device's checks on a manifest whose signature verified, then download and install."""
        if manifest.kind not in ("firmware", "model"):
            return UpdateOutcome("refused", f"unknown kind {manifest.kind}", manifest.version)
        running = self.nvs.data["versions"][manifest.kind] or "0.0.0"
        try:
            ok, why = ota.offer(
                manifest,
                device_id=self.device_id,
                board=self.board,
                running=running,
                percent=100,
                halted=False,
            )
        except ota.ManifestRejected as exc:
            ok, why = False, str(exc)
        if not ok:
            return UpdateOutcome("refused", why, manifest.version)
        if not install:
            return UpdateOutcome("none", "offered, not installed", manifest.version)
        status, _, image = await asyncio.to_thread(self._http_get, manifest.url)
        if status != 200:
            return UpdateOutcome("refused", f"image download: HTTP {status}", manifest.version, status)
        try:
            ota.verify_image(manifest, image)
            self._install(manifest, image)
        except ota.ManifestRejected as exc:
            self._report(manifest.kind, manifest.version, False, str(exc))
            return UpdateOutcome("refused", str(exc), manifest.version, status)
        self._report(manifest.kind, manifest.version, True)
        return UpdateOutcome("installed", "ok", manifest.version, status)
