"""OTA manifests and rollout rules, as pure functions (no I/O).

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

Cohorts: every ``ota rollout --percent P`` adds P to a release's stages; a device belongs to
the first stage that included it (`stage_of`), and `halt_reason` applies `should_halt` to
each stage's results and to the release's total. A result counts as a failure when the
device says so or when its metrics pass the `CanaryLimits` (`judge`): a model canary that
installs fine but misses confirmations or answers slowly is a failure too.

Not here: key files, publishing and release state (`microclaw.gateway.otastore`), serving
manifests and images over HTTPS and ``ota.result`` frames (`microclaw.gateway.otaserve`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
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


def stage_of(device_id: str, stages: Sequence[float]) -> float | None:
    """The first rollout stage (a percent, in the order they were set) that included
    ``device_id``; None when none did yet."""
    position = cohort(device_id)
    for percent in stages:
        if position < percent:
            return percent
    return None


@dataclass(frozen=True)
class CanaryLimits:
    """Metrics past which a reported success counts as a failure (None: not checked)."""

    max_boot_failures: int | None = 0
    max_confirm_miss_rate: float | None = None
    max_latency_ms: float | None = None


def judge(ok: bool, reason: str, metrics: Mapping[str, float], limits: CanaryLimits) -> tuple[bool, str]:
    """Whether a device's result counts as a success, and why not when it does not."""
    if not ok:
        return False, reason or "the device reported a failure"
    boot = metrics.get("boot_failures")
    if limits.max_boot_failures is not None and boot is not None and boot > limits.max_boot_failures:
        return False, f"boot_failures {boot:g} > {limits.max_boot_failures}"
    miss = metrics.get("confirm_miss_rate")
    if limits.max_confirm_miss_rate is not None and miss is not None and miss > limits.max_confirm_miss_rate:
        return False, f"confirm_miss_rate {miss:g} > {limits.max_confirm_miss_rate:g}"
    latency = metrics.get("latency_ms")
    if limits.max_latency_ms is not None and latency is not None and latency > limits.max_latency_ms:
        return False, f"latency_ms {latency:g} > {limits.max_latency_ms:g}"
    return True, "ok"


def halt_reason(
    per_stage: Mapping[float | None, tuple[int, int]], *, threshold: float = 0.2, minimum: int = 5
) -> str | None:
    """Why a release must halt given ``{stage: (successes, failures)}``, or None: any stage's
    failure rate, or the whole release's, past ``threshold`` with at least ``minimum`` results."""
    for stage, (ok, failed) in sorted(per_stage.items(), key=lambda item: (item[0] is None, item[0] or 0)):
        if should_halt(ok, failed, threshold=threshold, minimum=minimum):
            where = f"the {stage:g} % cohort" if stage is not None else "devices outside every cohort"
            return f"{where}: {failed} of {ok + failed} failed (threshold {threshold:.0%})"
    ok = sum(s for s, _ in per_stage.values())
    failed = sum(f for _, f in per_stage.values())
    if should_halt(ok, failed, threshold=threshold, minimum=minimum):
        return f"the release: {failed} of {ok + failed} failed (threshold {threshold:.0%})"
    return None
