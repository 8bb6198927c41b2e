"""OTA through the firmware's C core against the real gateway: `microclaw ota` signs, publishes
and rolls out; the gateway pushes `ota.offer`; the core verifies the ed25519 manifest with
Monocypher and the pinned key; the host HAL downloads the image over HTTPS with the device's
client certificate (as app_main.c does with esp_http_client) and streams it through the core
(size, SHA-256) into the inactive slot file; a "reboot" is a new core on the same NVS file.
Then: self-test passed -> marked valid, reported ok; failed -> rolled back, reported; a
tampered download is refused with nothing staged; too many bad boots roll back by themselves.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from microclaw.store.db import read_tx
from tests.integration.firmware.coredev import (
    CoreDevice,
    build_core,
    claim_in_background,
    download_offer,
    load,
)
from tests.integration.gateway.harness import BIN, GatewayRig, gateway_env
from tests.integration.stack import Stack

pytestmark = pytest.mark.slow

BOARD = "esp32s3-box3"
FIRMWARE = 0
MC_OK, MC_ERR_HASH = 0, -11
BOOT_ACTIVE, BOOT_TESTING, BOOT_ROLLED_BACK = 0, 1, 2


@pytest.fixture(scope="module")
def core_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_core(tmp_path_factory.mktemp("core"))


class OtaGateway(GatewayRig):
    def ota(self, *args: str) -> str:
        result = subprocess.run(
            [str(BIN / "microclaw"), "ota", *args],
            env={**self.stack.env, "COLUMNS": "250"},
            cwd=self.stack.root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def publish(self, version: str) -> bytes:
        image = os.urandom(40_000) + version.encode()
        path = self.stack.root / f"fw-{version}.bin"
        path.write_bytes(image)
        self.ota("publish", str(path), "--kind", "firmware", "--version", version, "--board", BOARD)
        self.ota("rollout", "--percent", "100")
        return image

    def results(self) -> list[tuple[str, bool]]:
        with read_tx(self.stack.engine) as conn:
            rows = conn.execute(
                text(
                    "SELECT r.version, x.ok FROM ota_results x JOIN ota_releases r ON r.id = x.release_id "
                    "ORDER BY x.id"
                )
            ).all()
        return [(r[0], bool(r[1])) for r in rows]


@pytest.fixture
def rig(make_stack: Callable[..., Stack], tmp_path: Path) -> Iterator[OtaGateway]:
    env = {**gateway_env(), "MICROCLAW_OTA__KEY_FILE": str(tmp_path / "keys" / "ota.key")}
    gateway = OtaGateway(make_stack(**env))
    gateway.ota("keygen")
    gateway.start()
    yield gateway


def board(rig: OtaGateway, lib: Path, home: Path, **kwargs: object) -> CoreDevice:
    pubkey = bytes.fromhex(rig.ota("pubkey").strip())
    return CoreDevice(load(lib), home, rig.url, rig.ca_pem, "office-1", ota_pubkey=pubkey, **kwargs)


def install(rig: OtaGateway, dev: CoreDevice, version: str, *, tamper: bool = False) -> tuple[bytes, int]:
    image = rig.publish(version)
    dev.pump(lambda: bool(dev.offer_ready))  # the ota.offer pushed after the rollout, verified
    assert dev.offer_version == version
    return image, download_offer(dev, tamper=tamper)


def test_update_self_test_pass_then_a_failed_update_rolls_back(
    rig: OtaGateway, core_lib: Path, tmp_path: Path
) -> None:
    home = tmp_path / "board"
    on_code, failures = claim_in_background(lambda code: rig.claim(code, "Office"))
    dev = board(rig, core_lib, home, on_code=on_code)
    dev.pump(lambda: bool(dev.welcomed) or bool(failures), timeout=60)
    assert not failures

    # A tampered download: refused by the core's SHA-256, nothing staged, reported.
    image, rc = install(rig, dev, "1.1.0", tamper=True)
    assert rc == MC_ERR_HASH and FIRMWARE not in dev.boot_slot
    dev.close()

    # After a reboot the offer comes again; this time the image is whole.
    dev = board(rig, core_lib, home)
    dev.pump(lambda: bool(dev.offer_ready))
    assert download_offer(dev) == MC_OK
    assert dev.boot_slot[FIRMWARE] == 1 and (home / "slot-0-1.bin").read_bytes() == image
    dev.close()

    # Reboot into 1.1.0: under test until the self-test passes (it reached the gateway).
    dev = board(rig, core_lib, home)
    assert dev.boot_fw == BOOT_TESTING
    assert dev.lib.mc_device_version(dev.dev, FIRMWARE) == b"1.1.0"
    dev.pump(lambda: bool(dev.welcomed))
    assert dev.check(dev.lib.mc_device_self_test(dev.dev, FIRMWARE, 1, b""), "self test") == MC_OK
    dev.pump(lambda: any(f["type"] == "ota.ack" for f in dev.received))
    hello = next(f for f in dev.sent if f["type"] == "device.hello")
    assert hello["fw_version"] == "1.1.0"
    assert ("1.1.0", True) in rig.results()

    # 1.2.0 installs into the other slot, fails its self-test and rolls back to 1.1.0.
    image2, rc = install(rig, dev, "1.2.0")
    assert rc == MC_OK and dev.boot_slot[FIRMWARE] == 0 and (home / "slot-0-0.bin").read_bytes() == image2
    dev.close()
    dev = board(rig, core_lib, home)
    assert dev.boot_fw == BOOT_TESTING
    dev.pump(lambda: bool(dev.welcomed))
    dev.check(dev.lib.mc_device_self_test(dev.dev, FIRMWARE, 0, b"model does not load"), "self test")
    assert dev.boot_slot[FIRMWARE] == 1  # back to the slot holding 1.1.0
    dev.pump(lambda: any(f["type"] == "ota.ack" for f in dev.received))
    assert ("1.2.0", False) in rig.results()
    dev.close()
    dev = board(rig, core_lib, home)
    assert dev.boot_fw == BOOT_ACTIVE
    assert dev.lib.mc_device_version(dev.dev, FIRMWARE) == b"1.1.0"
    dev.close()


def test_an_image_that_never_passes_its_self_test_is_rolled_back_after_n_boots(
    rig: OtaGateway, core_lib: Path, tmp_path: Path
) -> None:
    home = tmp_path / "board"
    on_code, failures = claim_in_background(lambda code: rig.claim(code, "Office"))
    dev = board(rig, core_lib, home, on_code=on_code, max_boot_tries=2)
    dev.pump(lambda: bool(dev.welcomed) or bool(failures), timeout=60)
    _, rc = install(rig, dev, "2.0.0")
    assert rc == MC_OK
    dev.close()
    boots = []
    for _ in range(3):  # crashes before its self-test, every time
        again = board(rig, core_lib, home, max_boot_tries=2)
        boots.append(again.boot_fw)
        again.close()
    assert boots[:2] == [BOOT_TESTING, BOOT_TESTING] and boots[2] == BOOT_ROLLED_BACK
    assert again.boot_slot[FIRMWARE] == 0
    after = board(rig, core_lib, home, max_boot_tries=2)
    assert after.boot_fw == BOOT_ACTIVE and after.lib.mc_device_version(after.dev, FIRMWARE) == b"1.0.0"
    after.close()
