"""OTA releases on this host: the signing key file, publishing (image + signed manifest +
release row), rollout, halts, device results and what each device is offered.

The key is an ed25519 private key (PKCS#8 PEM, 0600) outside the project and the data
directory: `generate_key` refuses to overwrite one without ``force``. Only publishers read it;
the gateway serves manifests that were signed at publish time and never holds the key.

`publish` is the one way a release comes to exist, from the CLI (``microclaw ota publish``)
and from Python (the distillation pipeline publishing a model bundle): it copies the image
into ``<data_dir>/ota/images/<sha256>`` (content-addressed, 0600), writes the canonical
manifest and its detached signature into ``ota_releases`` and audits ``ota.published``.
`record_result` stores a device's ``ota.result`` and halts the release by itself when
`microclaw.gateway.ota.halt_reason` says so. Rules come from `microclaw.gateway.ota`,
statements from `microclaw.store.ota`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine

from microclaw.gateway import ota
from microclaw.private import FILE_MODE, private_dir
from microclaw.store import audit
from microclaw.store import ota as store
from microclaw.store.db import now_ms, read_tx, write_tx

logger = logging.getLogger(__name__)
IMAGES = Path("ota") / "images"
KeyFormat = Literal["hex", "base64", "raw", "pem"]


class OtaError(Exception):
    """A refused OTA operation; the message says why (printed by the CLI). Permanent."""


@dataclass(frozen=True)
class ResultRules:
    """When results halt a release and when a reported success counts as a failure."""

    threshold: float = 0.2
    minimum: int = 5
    limits: ota.CanaryLimits = field(default_factory=ota.CanaryLimits)


# --- the signing key ----------------------------------------------------------------------


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def generate_key(path: Path, *, force: bool = False, forbidden: Sequence[Path] = ()) -> Ed25519PublicKey:
    """A new signing key written to ``path`` (0600, its directory created 0700); its public key.

    `OtaError` when ``path`` exists and ``force`` is not set, or lies inside one of the
    ``forbidden`` directories (the project, the data directory).
    """
    path = path.expanduser()
    for directory in forbidden:
        if _inside(path, directory):
            raise OtaError(f"{path} is inside {directory}; keep the OTA signing key outside it")
    if (path.exists() or path.is_symlink()) and not force:
        raise OtaError(f"{path} exists; pass --force to replace it (devices pinned to it stop updating)")
    private_dir(path.parent)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key.public_key()


def load_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at ``path``; `OtaError` when missing, readable by others, or not ed25519."""
    path = path.expanduser()
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise OtaError(f"no OTA signing key at {path}; run `microclaw ota keygen`") from None
    if not stat.S_ISREG(info.st_mode):
        raise OtaError(f"{path} is not a regular file")
    if info.st_mode & 0o077:
        raise OtaError(f"{path} is readable by others (mode {info.st_mode & 0o777:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise OtaError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise OtaError(f"{path}: not an ed25519 key")
    return key


def public_key_text(public: Ed25519PublicKey, fmt: KeyFormat = "hex") -> bytes:
    """The public key as firmware pins it: 32 raw bytes, hex, base64 or PEM."""
    if fmt == "pem":
        return public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if fmt == "raw":
        return raw
    return (raw.hex() if fmt == "hex" else base64.b64encode(raw).decode()).encode() + b"\n"


def _hex(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


# --- images and publishing ----------------------------------------------------------------


def image_path(data_dir: Path, sha256: str) -> Path:
    return data_dir / IMAGES / sha256


def _store_image(source: Path, data_dir: Path, max_bytes: int) -> tuple[str, int]:
    """Copy ``source`` into the image store under its sha256; ``(sha256, size)``."""
    directory = private_dir(data_dir / IMAGES)
    tmp = directory / f".upload.{os.getpid()}.tmp"
    digest, size = hashlib.sha256(), 0
    try:
        with source.open("rb") as src:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
            with os.fdopen(fd, "wb") as dst:
                while chunk := src.read(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise OtaError(f"{source} is larger than max_image_bytes ({max_bytes})")
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        if size == 0:
            raise OtaError(f"{source} is empty")
        sha = digest.hexdigest()
        os.replace(tmp, directory / sha)
        return sha, size
    except OSError as exc:
        raise OtaError(f"cannot store {source}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def publish(
    engine: Engine,
    data_dir: Path,
    image: Path,
    *,
    kind: str,
    version: str,
    board: str,
    key: Ed25519PrivateKey,
    min_version: str = "0.0.0",
    base_url: str = "",
    max_image_bytes: int = 16 * 1024 * 1024,
) -> store.ReleaseRow:
    """Publish ``image`` as release ``version`` of ``kind`` for ``board``: image stored, manifest
    signed with ``key``, release recorded at 0 % (roll it out with `set_rollout`). Publishing
    the same image again under the same version returns the existing release; another image
    under a published version is an `OtaError`."""
    if not board or len(board) > 64 or not board.isprintable():
        raise OtaError("--board must be 1-64 printable characters")
    try:
        ota.parse_version(version)
        ota.parse_version(min_version)
    except ota.ManifestRejected as exc:
        raise OtaError(str(exc)) from None
    if kind not in ("firmware", "model"):
        raise OtaError(f"--kind must be firmware or model, not {kind!r}")
    if not image.is_file():
        raise OtaError(f"{image} is not a file")
    sha, size = _store_image(image, data_dir, max_image_bytes)
    manifest = ota.Manifest(
        kind=kind,  # type: ignore[arg-type]  # checked above
        version=version,
        board=board,
        url=f"{base_url.rstrip('/')}/ota/image/{sha}",
        sha256=sha,
        size=size,
        min_version=min_version,
    )
    raw, signature = ota.canonical(manifest), ota.sign(manifest, key)
    ota.verify(raw, signature, key.public_key())  # what devices will do, before anyone sees it
    with write_tx(engine) as conn:
        existing = store.find_release(conn, kind, board, version)
        if existing is not None:
            if existing.sha256 != sha:
                raise OtaError(f"{kind} {version} for {board} is already published with another image")
            return existing
        release_id = store.add_release(
            conn,
            kind=kind,
            board=board,
            version=version,
            sha256=sha,
            size=size,
            min_version=min_version,
            manifest=raw.decode(),
            signature=base64.b64encode(signature).decode(),
            public_key=_hex(key.public_key()),
            now_ms=now_ms(),
        )
        assert release_id is not None
        audit.record(
            conn,
            "ota.published",
            decision="allow",
            release_id=release_id,
            ota_kind=kind,
            board=board,
            version=version,
            sha256=sha,
            size=size,
        )
        row = store.get_release(conn, release_id)
    assert row is not None
    return row


# --- choosing a release ---------------------------------------------------------------------


def _newest(rows: Sequence[store.ReleaseRow]) -> list[store.ReleaseRow]:
    return sorted(rows, key=lambda r: ota.parse_version(r.version), reverse=True)


def select_release(
    conn: Connection, *, release_id: int | None = None, kind: str | None = None, board: str | None = None
) -> store.ReleaseRow:
    """The release an operator means: by id, else the newest of ``kind``/``board`` (which
    must then name exactly one kind and board among the releases)."""
    if release_id is not None:
        row = store.get_release(conn, release_id)
        if row is None:
            raise OtaError(f"no release {release_id}")
        return row
    rows = store.releases(conn, kind=kind, board=board)
    if not rows:
        raise OtaError("no release matches; publish one first (`microclaw ota publish`)")
    lines = {(r.kind, r.board) for r in rows}
    if len(lines) > 1:
        named = ", ".join(f"{k}/{b}" for k, b in sorted(lines))
        raise OtaError(f"several kinds or boards match ({named}); pass --kind and --board or --release")
    return _newest(rows)[0]


def set_rollout(
    engine: Engine,
    percent: float,
    *,
    release_id: int | None = None,
    kind: str | None = None,
    board: str | None = None,
    resume: bool = False,
) -> store.ReleaseRow:
    """Offer a release to ``percent`` % of devices (a stable cohort: raising it only adds
    devices). A halted release stays halted unless ``resume``."""
    if not 0 <= percent <= 100:
        raise OtaError("--percent must be between 0 and 100")
    now = now_ms()
    with write_tx(engine) as conn:
        row = select_release(conn, release_id=release_id, kind=kind, board=board)
        if row.halted and not resume:
            raise OtaError(
                f"release {row.id} ({row.kind} {row.version}) is halted: {row.halt_reason}; "
                "publish a fixed version, or pass --resume"
            )
        if row.halted:
            store.set_halted(conn, row.id, halted=False, reason=None, now_ms=now)
        stages = row.stages + ((percent,) if percent > max(row.stages, default=0.0) else ())
        store.set_percent(conn, row.id, percent, stages, now)
        audit.record(
            conn,
            "ota.rollout",
            decision="allow",
            release_id=row.id,
            ota_kind=row.kind,
            version=row.version,
            percent=percent,
            resumed=bool(row.halted),
        )
        fresh = store.get_release(conn, row.id)
    assert fresh is not None
    return fresh


def halt(
    engine: Engine,
    reason: str,
    *,
    release_id: int | None = None,
    kind: str | None = None,
    board: str | None = None,
) -> tuple[store.ReleaseRow, bool]:
    """Halt a release (devices are offered it no longer); ``(release, whether it changed)``."""
    with write_tx(engine) as conn:
        row = select_release(conn, release_id=release_id, kind=kind, board=board)
        changed = store.set_halted(conn, row.id, halted=True, reason=reason, now_ms=now_ms())
        if changed:
            audit.record(
                conn,
                "ota.halted",
                decision="deny",
                release_id=row.id,
                ota_kind=row.kind,
                version=row.version,
                reason=reason,
                automatic=False,
            )
        fresh = store.get_release(conn, row.id)
    assert fresh is not None
    return fresh, changed


# --- what a device gets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """The answer to one device asking for one kind: a release, or why none (``found`` False
    when no release of that kind exists for its board at all)."""

    release: store.ReleaseRow | None
    reason: str
    found: bool = True


def _running(version: str | None) -> str:
    return version or "0.0.0"


def offer_for(
    conn: Connection, *, device_id: str, board: str | None, running: str | None, kind: str
) -> Offer:
    """The newest release of ``kind`` for the device's board that `microclaw.gateway.ota.offer`
    allows (so a halted newest release falls back to the previous live one)."""
    if not board:
        return Offer(None, "the device reported no board in device.hello", found=False)
    rows = _newest(store.releases(conn, kind=kind, board=board))
    if not rows:
        return Offer(None, f"no {kind} release for board {board!r}", found=False)
    current = _running(running)
    try:
        ota.parse_version(current)
    except ota.ManifestRejected:
        return Offer(None, f"the running {kind} version {current!r} is not MAJOR.MINOR.PATCH")
    first_reason = ""
    for row in rows:
        try:
            manifest = manifest_of(row)
        except ota.ManifestRejected as exc:  # the stored copy was altered: never offered
            logger.error("OTA release %s: stored manifest refused: %s", row.id, exc)
            first_reason = first_reason or f"{row.version}: the stored manifest is invalid"
            continue
        ok, why = ota.offer(
            manifest,
            device_id=device_id,
            board=board,
            running=current,
            percent=row.percent,
            halted=row.halted,
        )
        if ok:
            return Offer(row, "offer")
        first_reason = first_reason or f"{row.version}: {why}"
    return Offer(None, first_reason)


def manifest_of(row: store.ReleaseRow) -> ota.Manifest:
    """The stored manifest, checked against its stored signature and key (which catches a
    corrupted or carelessly edited row; devices check against the key they pin)."""
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(row.public_key))
    return ota.verify(row.manifest.encode(), base64.b64decode(row.signature), public)


def halted_running(
    conn: Connection, *, board: str | None, kind: str, running: str | None
) -> store.ReleaseRow | None:
    """The halted release the device runs, if it runs one (it should roll back)."""
    if not board or not running:
        return None
    row = store.find_release(conn, kind, board, running)
    return row if row is not None and row.halted else None


def record_result(
    engine: Engine,
    *,
    device_id: str,
    board: str | None,
    kind: str,
    version: str,
    ok: bool,
    reason: str,
    metrics: Mapping[str, float],
    rules: ResultRules,
) -> tuple[str, str | None]:
    """Store a device's ``ota.result``; ``(status, halt reason if this result halted the
    release)``. Status ``stored`` or ``unknown_release`` (audited, nothing stored)."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None}
    now = now_ms()
    with write_tx(engine) as conn:
        row = store.find_release(conn, kind, board or "", version)
        if row is None:
            audit.record(
                conn,
                "ota.result",
                decision="deny",
                device_id=device_id,
                ota_kind=kind,
                version=version,
                reason="unknown_release",
            )
            return "unknown_release", None
        counted, why = ota.judge(ok, reason, clean, rules.limits)
        stage = ota.stage_of(device_id, row.stages)
        store.save_result(
            conn,
            release_id=row.id,
            device_id=device_id,
            ok=ok,
            counted_ok=counted,
            reason=reason or (None if counted else why),
            metrics=clean,
            stage=stage,
            now_ms=now,
        )
        audit.record(
            conn,
            "ota.result",
            decision="allow" if counted else "deny",
            device_id=device_id,
            release_id=row.id,
            ota_kind=kind,
            version=version,
            ok=ok,
            counted_ok=counted,
            reason=None if counted else why,
            stage=stage,
            metrics=clean or None,
        )
        halted_why: str | None = None
        if not row.halted:
            halted_why = ota.halt_reason(
                store.tally(conn, row.id), threshold=rules.threshold, minimum=rules.minimum
            )
            if halted_why is not None:
                store.set_halted(conn, row.id, halted=True, reason=f"automatic: {halted_why}", now_ms=now)
                audit.record(
                    conn,
                    "ota.halted",
                    decision="deny",
                    release_id=row.id,
                    ota_kind=kind,
                    version=version,
                    reason=halted_why,
                    automatic=True,
                )
    return "stored", halted_why


# --- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseStatus:
    release: store.ReleaseRow
    per_stage: dict[float | None, tuple[int, int]]


def status(engine: Engine) -> list[ReleaseStatus]:
    with read_tx(engine) as conn:
        return [ReleaseStatus(r, store.tally(conn, r.id)) for r in store.releases(conn)]
