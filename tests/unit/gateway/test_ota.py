"""OTA manifest rules: signatures over canonical JSON, image checks, boards, downgrades, halts,
cohort stability."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from microclaw.gateway.ota import (
    CanaryLimits,
    Manifest,
    ManifestRejected,
    canonical,
    cohort,
    halt_reason,
    judge,
    offer,
    should_halt,
    sign,
    stage_of,
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


def test_a_device_belongs_to_the_first_stage_that_included_it() -> None:
    ids = [f"dev-{i}" for i in range(500)]
    for device_id in ids:
        stage = stage_of(device_id, (10.0, 50.0))
        assert stage == (10.0 if cohort(device_id) < 10 else 50.0 if cohort(device_id) < 50 else None)
    assert stage_of(ids[0], ()) is None


def test_metrics_past_the_canary_limits_turn_a_success_into_a_failure() -> None:
    limits = CanaryLimits(max_boot_failures=0, max_confirm_miss_rate=0.2, max_latency_ms=500)
    assert judge(True, "", {}, limits) == (True, "ok")
    assert judge(True, "", {"confirm_miss_rate": 0.2, "latency_ms": 500, "boot_failures": 0}, limits)[0]
    assert judge(True, "", {"confirm_miss_rate": 0.3}, limits) == (False, "confirm_miss_rate 0.3 > 0.2")
    assert judge(True, "", {"latency_ms": 900}, limits) == (False, "latency_ms 900 > 500")
    assert judge(True, "", {"boot_failures": 1}, limits) == (False, "boot_failures 1 > 0")
    assert judge(False, "flash write failed", {}, limits) == (False, "flash write failed")
    assert judge(True, "", {"confirm_miss_rate": 0.9}, CanaryLimits(max_confirm_miss_rate=None))[0]


def test_a_failing_cohort_halts_even_when_the_release_as_a_whole_would_not() -> None:
    assert halt_reason({10.0: (4, 0), 50.0: (20, 1)}, threshold=0.2, minimum=5) is None
    why = halt_reason({10.0: (20, 0), 50.0: (3, 3)}, threshold=0.2, minimum=5)
    assert why is not None and why.startswith("the 50 % cohort: 3 of 6 failed")
    # Too few per cohort, enough in total.
    total = halt_reason({10.0: (1, 2), 50.0: (1, 2)}, threshold=0.2, minimum=5)
    assert total is not None and total.startswith("the release: 4 of 6")
