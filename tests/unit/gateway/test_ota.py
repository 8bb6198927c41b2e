"""OTA manifest rules: signatures over canonical JSON, image checks, boards, downgrades, halts,
cohort stability."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from microclaw.gateway.ota import (
    Manifest,
    ManifestRejected,
    canonical,
    cohort,
    offer,
    should_halt,
    sign,
    verify,
    verify_image,
)

IMAGE = b"\x7fELF firmware image" * 100


def manifest(**overrides: object) -> Manifest:
    fields: dict[str, object] = {
        "kind": "firmware",
        "version": "1.2.0",
        "board": "esp32s3-box3",
        "url": "https://gw.lan:8766/ota/firmware/1.2.0.bin",
        "sha256": hashlib.sha256(IMAGE).hexdigest(),
        "size": len(IMAGE),
        "min_version": "1.0.0",
    }
    fields.update(overrides)
    return Manifest(**fields)  # type: ignore[arg-type]


def test_a_signed_manifest_verifies_and_any_change_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    m = manifest()
    raw, signature = canonical(m), sign(m, key)
    assert verify(raw, signature, key.public_key()) == m
    tampered = raw.replace(b"1.2.0", b"9.9.9")
    with pytest.raises(ManifestRejected, match="signature"):
        verify(tampered, signature, key.public_key())
    with pytest.raises(ManifestRejected, match="signature"):
        verify(raw, signature, Ed25519PrivateKey.generate().public_key())
    loose = json.dumps(json.loads(raw), indent=1).encode()  # same content, not canonical
    with pytest.raises(ManifestRejected, match="canonical"):
        verify(loose, key.sign(loose), key.public_key())


def test_a_tampered_image_is_refused() -> None:
    m = manifest()
    verify_image(m, IMAGE)
    with pytest.raises(ManifestRejected, match="sha256"):
        verify_image(m, IMAGE[:-1] + b"!")
    with pytest.raises(ManifestRejected, match="bytes"):
        verify_image(m, IMAGE + b"x")


def test_offer_refuses_wrong_board_downgrade_below_min_and_halted() -> None:
    m = manifest()
    base = {
        "device_id": "kitchen-1",
        "board": "esp32s3-box3",
        "running": "1.1.0",
        "percent": 100.0,
        "halted": False,
    }
    assert offer(m, **base) == (True, "offer")  # type: ignore[arg-type]
    assert not offer(m, **{**base, "board": "esp32s3-other"})[0]  # type: ignore[arg-type]
    assert not offer(m, **{**base, "running": "1.2.0"})[0]  # type: ignore[arg-type]
    assert not offer(m, **{**base, "running": "2.0.0"})[0]  # type: ignore[arg-type]  # a downgrade
    assert "min_version" in offer(m, **{**base, "running": "0.9.0"})[1]  # type: ignore[arg-type]
    assert offer(m, **{**base, "halted": True}) == (False, "the rollout is halted")  # type: ignore[arg-type]


def test_cohorts_are_stable_and_monotonic_in_percent() -> None:
    ids = [f"dev-{i}" for i in range(2000)]
    at10 = {d for d in ids if cohort(d) < 10}
    at50 = {d for d in ids if cohort(d) < 50}
    assert at10 <= at50 and 100 < len(at10) < 300 and 850 < len(at50) < 1150
    assert [cohort(d) for d in ids[:5]] == [cohort(d) for d in ids[:5]]


def test_the_automatic_halt_needs_enough_results() -> None:
    assert not should_halt(0, 2)
    assert should_halt(3, 2)
    assert not should_halt(9, 1)


@pytest.mark.parametrize("bad", [{"version": "1.2"}, {"sha256": "XYZ"}, {"size": 0}, {"kind": "bootloader"}])
def test_malformed_manifests_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ManifestRejected):
        manifest(**bad)
