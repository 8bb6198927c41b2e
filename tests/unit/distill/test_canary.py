"""The canary verdict (pure), and the same rule through the gateway's OTA store: a canary that
misses confirmations is halted (automatically per result, or by `microclaw distill canary
--apply` over the cohort) and the devices running it are told to roll back."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from microclaw.distill.canary import CanaryPolicy, DeviceReport, ota_limits, reports_from_results, verdict
from microclaw.gateway import otastore
from microclaw.store import ota as store
from microclaw.store.db import read_tx


def _r(device: str, miss: float | None = 0.01, latency: float | None = 40.0, **kw: object) -> DeviceReport:
    return DeviceReport(device, confirm_miss_rate=miss, latency_ms=latency, **kw)  # type: ignore[arg-type]


BASELINE = [_r(f"b{i}") for i in range(5)]


def test_a_healthy_canary_is_promoted_and_a_young_one_waits() -> None:
    assert verdict([_r(f"c{i}") for i in range(4)], BASELINE).action == "promote"
    young = verdict([_r("c0")], BASELINE)
    assert young.action == "wait" and not young.rollback


def test_a_canary_that_misses_confirmations_is_halted_and_rolled_back() -> None:
    result = verdict([_r("c0", 0.1), _r("c1", 0.08), _r("c2", 0.12)], BASELINE)
    assert result.action == "halt_rollback" and result.rollback
    assert result.reasons == ("confirm miss rate 10.0% > 5.0%",)
    # Under the ceiling but clearly worse than the baseline: rolled back too.
    relative = verdict([_r(f"c{i}", 0.045) for i in range(3)], BASELINE)
    assert relative.rollback and "vs baseline 1.0%" in relative.reasons[0]
    # A single bad device among a fresh cohort is enough when it crosses the mean.
    assert verdict([_r("c0", 0.3)], BASELINE).rollback


def test_latency_regressions_failures_and_crashes_roll_back() -> None:
    slow = verdict([_r(f"c{i}", latency=60.0) for i in range(3)], BASELINE)
    assert slow.rollback and "vs baseline 40 ms" in slow.reasons[0]
    ceiling = verdict([_r("c0", latency=400.0), _r("c1"), _r("c2")], BASELINE)
    assert ceiling.rollback and "> 150 ms" in ceiling.reasons[0]
    crash = verdict([_r("c0", boot_failures=2), _r("c1"), _r("c2")], BASELINE)
    assert crash.rollback and "crashed: c0" in crash.reasons[0]
    selftest = verdict([_r("c0", None, None, ok=False), _r("c1"), _r("c2")], BASELINE)
    assert selftest.rollback


def _release(engine: Engine, tmp_path: Path, version: str) -> store.ReleaseRow:
    image = tmp_path / f"bundle-{version}.tar"
    image.write_bytes(version.encode() * 100)
    return otastore.publish(
        engine,
        tmp_path / "data",
        image,
        kind="model",
        version=version,
        board="box3",
        key=Ed25519PrivateKey.generate(),
    )


def _result(
    engine: Engine, device: str, version: str, rules: otastore.ResultRules, **metrics: float
) -> str | None:
    _, why = otastore.record_result(
        engine,
        device_id=device,
        board="box3",
        kind="model",
        version=version,
        ok=True,
        reason="",
        metrics=metrics,
        rules=rules,
    )
    return why


def test_the_gateway_halts_a_model_release_whose_canary_misses_confirmations(
    engine: Engine, tmp_path: Path
) -> None:
    release = _release(engine, tmp_path, "2.0.0")
    otastore.set_rollout(engine, 10, release_id=release.id)
    rules = otastore.ResultRules(threshold=0.2, minimum=3, limits=ota_limits(CanaryPolicy(), BASELINE))
    halted_by = [
        _result(engine, f"c{i}", "2.0.0", rules, confirm_miss_rate=miss, latency_ms=35.0, boot_failures=0)
        for i, miss in enumerate((0.0, 0.25, 0.3))  # the self-test passed; confirmations did not
    ]
    assert halted_by[:2] == [None, None] and halted_by[2] is not None
    with read_tx(engine) as conn:
        rollback = otastore.halted_running(conn, board="box3", kind="model", running="2.0.0")
        offer = otastore.offer_for(conn, device_id="c9", board="box3", running="1.0.0", kind="model")
        reports = reports_from_results(store.results(conn, release.id))
    assert rollback is not None and rollback.halted  # devices on 2.0.0 go back to their other slot
    assert offer.release is None  # and nobody else is offered it
    assert [r.confirm_miss_rate for r in reports] == [0.0, 0.25, 0.3] and verdict(reports, []).rollback


def test_distill_canary_apply_halts_a_cohort_that_misses_confirmations(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    from microclaw.cli.chat import main
    from microclaw.config import load_settings
    from microclaw.runtime.wiring import app_engine, bootstrap_database

    settings = load_settings()
    bootstrap_database(settings)
    engine = app_engine(settings)
    lenient = otastore.ResultRules(threshold=1.0, minimum=100)  # the per-result halt stays out of the way
    old, new = _release(engine, tmp_path, "1.0.0"), _release(engine, tmp_path, "1.1.0")
    for i in range(4):
        _result(engine, f"b{i}", "1.0.0", lenient, confirm_miss_rate=0.01, latency_ms=40.0)
    for i in range(3):
        _result(engine, f"c{i}", "1.1.0", lenient, confirm_miss_rate=0.04, latency_ms=41.0)
    runner = CliRunner()
    shown = runner.invoke(main, ["distill", "canary", "--release", str(new.id)])
    assert shown.exit_code == 0, shown.output
    assert "halt_rollback" in shown.output and "vs baseline 1.0%" in shown.output
    with read_tx(engine) as conn:
        assert store.get_release(conn, new.id).halted is False  # type: ignore[union-attr]  # not without --apply
    applied = runner.invoke(main, ["distill", "canary", "--release", str(new.id), "--apply"])
    assert applied.exit_code == 0, applied.output
    with read_tx(engine) as conn:
        halted = store.get_release(conn, new.id)
        baseline = store.get_release(conn, old.id)
    assert halted is not None and halted.halted and "canary" in (halted.halt_reason or "")
    assert baseline is not None and not baseline.halted
    engine.dispose()
