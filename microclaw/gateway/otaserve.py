"""OTA on the gateway's port: manifests and images over HTTPS for devices presenting their
client certificate, ``ota.offer`` / ``ota.rollback`` pushed in sessions, ``ota.result`` stored.

HTTP (websockets' ``process_request``: a request under ``/ota/`` is answered as plain HTTP
instead of a WebSocket upgrade; anything else goes on to the WebSocket handler):

    GET /ota/manifest?kind=firmware|model
        200  the canonical manifest bytes; header X-OTA-Signature: base64 ed25519 signature
        204  nothing to install now; header X-OTA-Reason says why (not newer, halted, cohort)
        404  no release of that kind for the device's board (X-OTA-Reason)
    GET /ota/image/<sha256>
        200  the image (application/octet-stream); 404 unless a live release for the device's
             board has that image

Every request needs a client certificate issued by the device CA whose fingerprint is the one
recorded for an active device (401 without one, 403 for an unknown, replaced or revoked one;
the latter audited as ``ota.download``). The device's board and running versions are what its
last ``device.hello`` said. In a session the gateway pushes ``ota.offer`` (after the hello and
when a rollout changes) and ``ota.rollback`` when the device runs a halted release, once per
session each.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from microclaw.gateway import protocol as p
from microclaw.gateway.ca import peer_identity
from microclaw.gateway.otastore import (
    ResultRules,
    halted_running,
    image_path,
    offer_for,
    record_result,
)
from microclaw.store import audit, devices
from microclaw.store import ota as store
from microclaw.store.db import read_tx

logger = logging.getLogger(__name__)

_IMAGE = re.compile(r"^/ota/image/([0-9a-f]{64})$")
KINDS = ("firmware", "model")


def _header(text: str) -> str:
    """Header-safe text (printable ASCII, bounded)."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)[:200]


def _response(
    status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8", **extra: str
) -> Response:
    code = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
        ]
    )
    if status != 204:
        headers["Content-Length"] = str(len(body))
        headers["Content-Type"] = content_type
    for name, value in extra.items():
        headers[name.replace("_", "-")] = _header(value)
    return Response(code.value, code.phrase, headers, body if status != 204 else b"")


def running_version(device: devices.DeviceRow, kind: str) -> str | None:
    return device.fw_version if kind == "firmware" else device.model_version


class OtaService:
    """The gateway's OTA side. ``rules`` decide when results halt a release."""

    def __init__(self, engine: Engine, data_dir: Path, rules: ResultRules) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.rules = rules
        self._sent: dict[str, set[tuple[str, int]]] = {}
        self._seen_change = 0

    # --- HTTP -----------------------------------------------------------------------------

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The ``process_request`` hook: answers ``/ota/...``, lets everything else through."""
        if not request.path.startswith("/ota/"):
            return None
        ssl_object = connection.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        identity = peer_identity(der)
        if identity is None:
            # Not audited: anyone can knock, and TLS-unauthenticated requests must not grow the DB.
            return _response(401, b"a device client certificate is required\n")
        try:
            return await asyncio.to_thread(self._answer, identity, request.path)
        except Exception:  # a locked or full disk: a retryable answer, never a traceback
            logger.exception("OTA request failed")
            return _response(503, b"try again later\n")

    def _answer(self, identity: tuple[str, str], path: str) -> Response:
        device_id, fingerprint = identity
        with read_tx(self.engine) as conn:
            device = devices.get_device(conn, device_id)
        if device is None or device.status != devices.ACTIVE or device.cert_fingerprint != fingerprint:
            why = "unknown device" if device is None else f"certificate {device.status}"
            if device is not None and device.status == devices.ACTIVE:
                why = "certificate replaced"
            audit.record_now(
                self.engine, "ota.download", decision="deny", device_id=device_id, path=path[:120], reason=why
            )
            return _response(403, b"certificate not accepted\n")
        url = urlsplit(path)
        if url.path == "/ota/manifest":
            kinds = parse_qs(url.query).get("kind", [])
            if len(kinds) != 1 or kinds[0] not in KINDS:
                return _response(400, b"kind must be firmware or model\n")
            return self._manifest(device, kinds[0])
        match = _IMAGE.fullmatch(url.path)
        if match is not None:
            return self._image(device, match.group(1))
        return _response(404, b"no such OTA resource\n")

    def _manifest(self, device: devices.DeviceRow, kind: str) -> Response:
        with read_tx(self.engine) as conn:
            answer = offer_for(
                conn,
                device_id=device.device_id,
                board=device.board,
                running=running_version(device, kind),
                kind=kind,
            )
        if answer.release is None:
            status = 204 if answer.found else 404
            body = b"" if status == 204 else answer.reason.encode() + b"\n"
            return _response(status, body, X_OTA_Reason=answer.reason)
        release = answer.release
        return _response(
            200,
            release.manifest.encode(),
            "application/json",
            X_OTA_Signature=release.signature,
            X_OTA_Release=str(release.id),
        )

    def _image(self, device: devices.DeviceRow, sha256: str) -> Response:
        with read_tx(self.engine) as conn:
            live = [
                r
                for r in store.releases_with_image(conn, sha256)
                if r.board == device.board and not r.halted and r.percent > 0
            ]
        if not live:
            return _response(404, b"no live release for this board has that image\n")
        try:
            body = image_path(self.data_dir, sha256).read_bytes()
        except FileNotFoundError:
            logger.error("OTA image %s is missing from the image store", sha256)
            return _response(404, b"image missing\n")
        return _response(200, body, "application/octet-stream")

    # --- sessions ---------------------------------------------------------------------------

    def frames_for(self, device_id: str) -> list[str]:
        """Offers and rollbacks for ``device_id`` not yet sent in its current session."""
        with read_tx(self.engine) as conn:
            device = devices.get_device(conn, device_id)
            if device is None:
                return []
            sent = self._sent.setdefault(device_id, set())
            frames: list[str] = []
            for kind in KINDS:
                running = running_version(device, kind)
                bad = halted_running(conn, board=device.board, kind=kind, running=running)
                if bad is not None and ("rollback", bad.id) not in sent:
                    sent.add(("rollback", bad.id))
                    frames.append(
                        p.frame("ota.rollback", kind=kind, version=bad.version, reason=bad.halt_reason or "")
                    )
                answer = offer_for(conn, device_id=device_id, board=device.board, running=running, kind=kind)
                if answer.release is not None and ("offer", answer.release.id) not in sent:
                    sent.add(("offer", answer.release.id))
                    r = answer.release
                    frames.append(p.frame("ota.offer", kind=kind, manifest=r.manifest, signature=r.signature))
        return frames

    def session_started(self, device_id: str) -> None:
        self._sent.pop(device_id, None)

    def session_ended(self, device_id: str) -> None:
        self._sent.pop(device_id, None)

    def changed(self) -> bool:
        """Whether any release changed (rollout, halt, publish) since the last call."""
        with read_tx(self.engine) as conn:
            newest = store.newest_change(conn)
        if newest == self._seen_change:
            return False
        self._seen_change = newest
        return True

    def on_result(self, device: devices.DeviceRow, frame: p.OtaResult) -> str:
        """Store an ``ota.result`` and answer with ``ota.ack``."""
        with read_tx(self.engine) as conn:
            fresh = devices.get_device(conn, device.device_id)
        metrics: Mapping[str, Any] = frame.metrics.model_dump(exclude_none=True) if frame.metrics else {}
        status, halted = record_result(
            self.engine,
            device_id=device.device_id,
            board=fresh.board if fresh is not None else device.board,
            kind=frame.kind,
            version=frame.version,
            ok=frame.ok,
            reason=frame.reason,
            metrics=metrics,
            rules=self.rules,
        )
        if halted is not None:
            logger.warning("OTA %s %s halted automatically: %s", frame.kind, frame.version, halted)
        return p.frame("ota.ack", kind=frame.kind, version=frame.version, status=status)
