"""The canary verdict (pure), and the same rule through the gateway's OTA results: a canary
that misses confirmations is halted and the devices running it are told to roll back."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from microclaw.distill.canary import CanaryPolicy, DeviceReport, ota_limits, verdict
from microclaw.gateway import otastore
from microclaw.store.db import read_tx


def _report(
    device: str, *, confirms: int = 20, misses: int = 0, p95: float = 40.0, crashes: int = 0
) -> DeviceReport:
    return DeviceReport(
        device, utterances=200, confirms=confirms, confirm_misses=misses, latency_p95_ms=p95, crashes=crashes
    )


BASELINE = [_report(f"b{i}", misses=0) for i in range(5)]


def test_a_healthy_canary_is_promoted_and_a_young_one_waits() -> None:
    assert verdict([_report(f"c{i}") for i in range(4)], BASELINE).action == "promote"
    young = verdict([_report("c0", confirms=3)], BASELINE)
    assert young.action == "wait" and not young.rollback


def test_a_canary_that_misses_confirmations_is_halted_and_rolled_back() -> None:
    canary = [_report("c0", misses=3), _report("c1", misses=2), _report("c2", misses=2)]
    result = verdict(canary, BASELINE)
    assert result.action == "halt_rollback" and result.rollback
    assert "confirm miss rate" in result.reasons[0]
    # Only slightly worse than a baseline that misses too: relative rule.
    base = [_report(f"b{i}", misses=1) for i in range(5)]  # 5 %
    slightly = [_report(f"c{i}", misses=1) for i in range(3)]
    assert verdict(slightly, base, CanaryPolicy(max_confirm_miss_rate=0.2)).action == "promote"


def test_latency_regressions_and_crashes_roll_back() -> None:
    slow = verdict([_report(f"c{i}", p95=60.0) for i in range(3)], BASELINE)
    assert slow.rollback and "baseline 40" in slow.reasons[0]
    ceiling = verdict([_report("c0", p95=400.0), _report("c1"), _report("c2")], BASELINE)
    assert ceiling.rollback and "> 150 ms" in ceiling.reasons[0]
    crash = verdict([_report("c0", crashes=2), _report("c1"), _report("c2")], BASELINE)
    assert crash.rollback and "crashed: c0" in crash.reasons[0]


def test_the_gateway_halts_a_model_release_whose_canary_misses_confirmations(
    engine: Engine, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    image = tmp_path / "bundle.tar"
    image.write_bytes(b"bundle" * 100)
    release = otastore.publish(
        engine, tmp_path / "data", image, kind="model", version="2.0.0", board="box3", key=key
    )
    otastore.set_rollout(engine, 10, release_id=release.id)
    rules = otastore.ResultRules(threshold=0.2, minimum=3, limits=ota_limits(CanaryPolicy(), BASELINE))
    halted_by = []
    for i, miss_rate in enumerate((0.0, 0.25, 0.3)):  # the device self-test passed; confirmations did not
        _, why = otastore.record_result(
            engine,
            device_id=f"c{i}",
            board="box3",
            kind="model",
            version="2.0.0",
            ok=True,
            reason="",
            metrics={"confirm_miss_rate": miss_rate, "latency_ms": 35.0, "boot_failures": 0},
            rules=rules,
        )
        halted_by.append(why)
    assert halted_by[:2] == [None, None] and halted_by[2] is not None
    with read_tx(engine) as conn:
        rollback = otastore.halted_running(conn, board="box3", kind="model", running="2.0.0")
        offer = otastore.offer_for(conn, device_id="c9", board="box3", running="1.0.0", kind="model")
    assert rollback is not None and rollback.halted  # devices on 2.0.0 go back to their other slot
    assert offer.release is None  # and nobody else is offered it
