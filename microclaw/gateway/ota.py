"""OTA manifests and rollout rules, as pure functions (the serving and CLI parts are not built yet).

A manifest is canonical JSON (keys sorted, ``separators=(",", ":")``, UTF-8, no floats) of
``{kind, version, board, url, sha256, size, min_version}`` with a detached ed25519 signature
over exactly those bytes. Ed25519 stays out of X.509 (mbedTLS lacks it); the device verifies
with Monocypher or libsodium, which accept signatures made by Python ``cryptography``
(checked: FIELD-NOTES, "Device tier, checked recipes").

Rollout: a device is in a rollout at P % when a stable hash of its id falls below P, so a
device in at 10 % stays in at 50 %. `offer` says whether a device should install a manifest:
the board must match, the version must be newer than the running one and not below
``min_version`` (no downgrades), the rollout must not be halted and must include the device.
`should_halt` is the automatic halt: a cohort's failure rate past a threshold.

Not here: key files (`microclaw ota keygen`), publishing, serving manifests and images over
HTTPS, ``ota.result`` frames (left for the OTA issue).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

Kind = Literal["firmware", "model"]
_VERSION = re.compile(r"^(\d{1,5})\.(\d{1,5})\.(\d{1,5})$")


class ManifestRejected(ValueError):
    """A manifest that must not be installed; the message says why."""


@dataclass(frozen=True)
class Manifest:
    kind: Kind
    version: str
    board: str
    url: str
    sha256: str
    size: int
    min_version: str

    def __post_init__(self) -> None:
        if self.kind not in ("firmware", "model"):
            raise ManifestRejected(f"unknown kind {self.kind!r}")
        for name in ("version", "min_version"):
            parse_version(getattr(self, name))
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ManifestRejected("sha256 must be 64 lower-case hex digits")
        if not isinstance(self.size, int) or self.size <= 0:
            raise ManifestRejected("size must be a positive integer")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; `ManifestRejected` for anything else."""
    match = _VERSION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ManifestRejected(f"version {text!r} is not MAJOR.MINOR.PATCH")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def canonical(manifest: Manifest) -> bytes:
    """The exact bytes that are signed and verified."""
    return json.dumps(asdict(manifest), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(manifest: Manifest, key: Ed25519PrivateKey) -> bytes:
    return key.sign(canonical(manifest))


def verify(raw: bytes, signature: bytes, public: Ed25519PublicKey) -> Manifest:
    """The manifest in ``raw`` if ``signature`` verifies over exactly these bytes and they are
    canonical; `ManifestRejected` otherwise (never another exception)."""
    try:
        public.verify(signature, raw)
    except InvalidSignature:
        raise ManifestRejected("the signature does not verify") from None
    try:
        data: Any = json.loads(raw)
        manifest = Manifest(**data)
    except (ValueError, TypeError) as exc:
        raise ManifestRejected(f"not a manifest: {exc}") from None
    if canonical(manifest) != raw:
        raise ManifestRejected("the manifest is not in canonical form")
    return manifest


def verify_image(manifest: Manifest, image: bytes) -> None:
    """`ManifestRejected` unless ``image`` has the manifest's size and sha256."""
    if len(image) != manifest.size:
        raise ManifestRejected(f"image is {len(image)} bytes, the manifest says {manifest.size}")
    if hashlib.sha256(image).hexdigest() != manifest.sha256:
        raise ManifestRejected("image sha256 does not match the manifest")


def cohort(device_id: str) -> float:
    """A stable position in [0, 100) for ``device_id`` (sha256-based, same on every host)."""
    digest = hashlib.sha256(device_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def offer(
    manifest: Manifest, *, device_id: str, board: str, running: str, percent: float, halted: bool
) -> tuple[bool, str]:
    """Whether ``device_id`` should install ``manifest`` now, and why not when it should not."""
    if manifest.board != board:
        return False, f"built for board {manifest.board!r}, the device is {board!r}"
    current = parse_version(running)
    if parse_version(manifest.version) <= current:
        return False, "not newer than the running version"
    if current < parse_version(manifest.min_version):
        return False, f"the device runs {running}, below min_version {manifest.min_version}"
    if halted:
        return False, "the rollout is halted"
    if cohort(device_id) >= percent:
        return False, f"outside the {percent:g} % cohort"
    return True, "offer"


def should_halt(successes: int, failures: int, *, threshold: float = 0.2, minimum: int = 5) -> bool:
    """The automatic halt: at least ``minimum`` results and a failure rate above ``threshold``."""
    total = successes + failures
    return total >= minimum and failures / total > threshold
