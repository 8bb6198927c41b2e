"""A distilled bundle through the real gateway: `microclaw distill all --publish` signs it with the
OTA key and publishes it, a simulated terminal pinned to that key downloads and installs it into
its model slot over mutual TLS, and what landed in the slot passes the device's checks: the
bundle's own signature and file hashes, then the golden self-test in tflite-micro."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from microclaw.distill import bundle, verify
from microclaw.gateway.simulator import DeviceSimulator
from tests.integration.gateway.harness import BIN
from tests.integration.gateway.test_ota import BOARD, OtaRig, in_session, run

pytestmark = pytest.mark.slow


def test_a_distilled_bundle_is_published_installed_and_passes_the_self_test(
    rig: OtaRig, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            str(BIN / "microclaw"),
            "distill",
            "all",
            "--teacher",
            "grammar",
            "--per-template",
            "15",
            "--epochs",
            "10",
            "--version",
            "1.0.0",
            "--board",
            BOARD,
            "--publish",
        ],
        env={**rig.stack.env, "COLUMNS": "200"},
        cwd=rig.stack.root,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "published: release 1" in done.stdout
    rig.ota("rollout", "--percent", "100", "--kind", "model")

    async def scenario() -> tuple[Any, DeviceSimulator]:
        sim = await rig.paired_sim("kitchen-1")
        outcome = await in_session(sim, lambda: sim.check_update("model"))
        return outcome, sim

    outcome, sim = run(scenario())
    assert outcome.status == "installed" and sim.model_version == "1.0.0"
    image = sim.slot_image("model")
    assert image is not None
    slot = tmp_path / "slot"
    bundle.unpack(image, slot)
    pinned = Ed25519PublicKey.from_public_bytes(bytes.fromhex(rig.pubkey()))
    manifest = bundle.verify_bundle(slot, pinned)
    assert manifest["version"] == "1.0.0" and manifest["board"] == BOARD
    tflite = (slot / "model.tflite").read_bytes()
    dim = manifest["features"]["dim"]
    for golden in manifest["golden"]:
        row = np.zeros((1, dim), np.int8)
        row[0, golden["buckets"]] = 1
        assert verify.run_tflm(tflite, row, arena=manifest["arena_bytes"])[0].tolist() == golden["logits"]
