"""The model bundle: model files plus a manifest signed with the gateway's OTA ed25519 key.

A bundle directory holds ``model.tflite`` (for TensorFlow Lite Micro), ``model.mcm`` (the same
int8 model for the firmware core's C inference), ``manifest.json`` (canonical JSON: keys sorted,
``separators=(",", ":")``, UTF-8, integers only, no floats) and ``manifest.sig`` (the detached
64-byte ed25519 signature over exactly those bytes). The manifest carries the version, board,
every file's name, sha256 and size, the tensor arena bytes measured in tflite-micro, the label
map, the feature recipe and golden inputs/outputs the device re-runs as its self-test before it
activates the slot.

`verify_bundle` is what a device (and `microclaw distill bundle --check`) does: signature over
the exact bytes, canonical form, file names without paths, each file's size and sha256, files
read without following symlinks. Any mismatch is `BundleRejected`.

For the OTA channel the bundle travels as one image, `pack` (an uncompressed tar with fixed
owners and times, so the same bundle gives the same bytes), published by
`microclaw.gateway.otastore.publish` as a ``model`` release (`publish`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from microclaw.store.ota import ReleaseRow

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
IMAGE = "bundle.tar"
FORMAT = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^\d{1,5}\.\d{1,5}\.\d{1,5}$")
MAX_FILE_BYTES = 4 * 1024 * 1024


class BundleRejected(ValueError):
    """A bundle that must not be installed; the message says why."""


def canonical(manifest: dict[str, Any]) -> bytes:
    _no_floats(manifest)
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _no_floats(value: Any) -> None:
    if isinstance(value, float):
        raise ValueError("manifests carry no floats (the device parses integers only)")
    if isinstance(value, dict):
        for item in value.values():
            _no_floats(item)
    elif isinstance(value, list):
        for item in value:
            _no_floats(item)


def _file_entry(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def build(
    directory: Path,
    *,
    files: dict[str, bytes],
    version: str,
    board: str,
    arena_bytes: int,
    labels: dict[str, list[str]],
    features: dict[str, Any],
    golden: list[dict[str, Any]],
    teacher: str,
    key: Ed25519PrivateKey,
) -> dict[str, Any]:
    """Write the bundle into ``directory`` (created); the manifest."""
    if not _VERSION.fullmatch(version):
        raise ValueError(f"version {version!r} is not MAJOR.MINOR.PATCH")
    for name in files:
        if not _NAME.fullmatch(name) or name in (MANIFEST, SIGNATURE, IMAGE):
            raise ValueError(f"bad bundle file name {name!r}")
    manifest = {
        "kind": "model",
        "format": FORMAT,
        "version": version,
        "board": board,
        "files": [_file_entry(name, data) for name, data in sorted(files.items())],
        "arena_bytes": arena_bytes,
        "labels": labels,
        "features": features,
        "golden": golden,
        "teacher": teacher,
    }
    raw = canonical(manifest)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / MANIFEST).write_bytes(raw)
    (directory / SIGNATURE).write_bytes(key.sign(raw))
    return manifest


def _read(directory: Path, name: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, never through a symlink (the directory may come from anywhere)."""
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise BundleRejected(f"{name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BundleRejected(f"{name} is larger than {limit} bytes")
    return data


def verify_manifest(raw: bytes, signature: bytes, public: Ed25519PublicKey) -> dict[str, Any]:
    try:
        public.verify(signature, raw)
    except InvalidSignature:
        raise BundleRejected("the manifest signature does not verify") from None
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or canonical(manifest) != raw:
            raise BundleRejected("the manifest is not in canonical form")
    except ValueError as exc:
        raise BundleRejected(f"not a manifest: {exc}") from None
    if manifest.get("kind") != "model" or manifest.get("format") != FORMAT:
        raise BundleRejected("not a format-1 model bundle")
    return manifest


def verify_bundle(directory: Path, public: Ed25519PublicKey) -> dict[str, Any]:
    """The manifest of the bundle in ``directory`` if everything checks (module docstring)."""
    manifest = verify_manifest(_read(directory, MANIFEST), _read(directory, SIGNATURE, 64), public)
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise BundleRejected("the manifest lists no files")
    for entry in files:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise BundleRejected(f"bad file name {name!r} in the manifest")
        data = _read(directory, name)
        if len(data) != entry.get("size"):
            raise BundleRejected(f"{name} is {len(data)} bytes, the manifest says {entry.get('size')}")
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise BundleRejected(f"{name}: sha256 does not match the manifest")
    return manifest


def pack(directory: Path) -> bytes:
    """The bundle as one deterministic tar image (manifest, signature, then the files)."""
    manifest = json.loads(_read(directory, MANIFEST))
    names = [MANIFEST, SIGNATURE, *(entry["name"] for entry in manifest["files"])]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in names:
            data = _read(directory, name)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o644, 0, 0, 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def unpack(image: bytes, directory: Path) -> None:
    """Extract a `pack` image (regular files with plain names only) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(image), mode="r:") as tar:
        for member in tar.getmembers():
            if not member.isfile() or not (
                _NAME.fullmatch(member.name) or member.name in (MANIFEST, SIGNATURE)
            ):
                raise BundleRejected(f"unexpected tar member {member.name!r}")
            extracted = tar.extractfile(member)
            assert extracted is not None
            (directory / member.name).write_bytes(extracted.read(MAX_FILE_BYTES))


def publish(
    engine: Engine,
    data_dir: Path,
    directory: Path,
    *,
    key: Ed25519PrivateKey,
    base_url: str = "",
    max_image_bytes: int = 16 * 1024 * 1024,
) -> ReleaseRow:
    """Publish the bundle as an OTA ``model`` release at 0 % (`microclaw ota rollout` widens it)."""
    from microclaw.gateway import otastore

    manifest = verify_bundle(directory, key.public_key())
    image = directory / IMAGE
    image.write_bytes(pack(directory))
    return otastore.publish(
        engine,
        data_dir,
        image,
        kind="model",
        version=manifest["version"],
        board=manifest["board"],
        key=key,
        base_url=base_url,
        max_image_bytes=max_image_bytes,
    )
