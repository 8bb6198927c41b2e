"""Signed OTA through a real gateway process over real TLS: `microclaw ota` publishes and
rolls out, simulated devices fetch manifests and images with their client certificates,
verify and install them into A/B slot files, and report ``ota.result``.

Attacks: a tampered manifest (the stored copy edited, and a device pinned to another key), a
tampered image, another board, downgrades, a halted rollout, downloads without or with a
revoked certificate. Rollout: cohorts stay stable as the percent grows, and failures (a model
canary that misses confirmations) halt the rollout by themselves and roll the canaries back.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import os
import ssl
import stat
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from microclaw.gateway import ota
from microclaw.gateway.ota import cohort
from microclaw.gateway.simulator import DeviceSimulator
from microclaw.store.db import read_tx, write_tx
from tests.integration.gateway.harness import BIN, GatewayRig, gateway_env
from tests.integration.stack import Stack

pytestmark = pytest.mark.slow

BOARD = "esp32s3-box3"


class OtaRig(GatewayRig):
    """A gateway plus `microclaw ota` with a signing key outside the data directory."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack)
        self.key_file = Path(stack.env["MICROCLAW_OTA__KEY_FILE"])
        self.images = stack.root / "images"
        self.images.mkdir(exist_ok=True)

    def ota(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "microclaw"), "ota", *args],
            env={**self.stack.env, "COLUMNS": "250"},
            cwd=self.stack.root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def pubkey(self) -> str:
        return self.ota("pubkey").stdout.strip()

    def publish(self, version: str, *, kind: str = "firmware", board: str = BOARD, **extra: str) -> bytes:
        image = os.urandom(4096) + version.encode()
        path = self.images / f"{kind}-{board}-{version}.bin"
        path.write_bytes(image)
        args = ["publish", str(path), "--kind", kind, "--version", version, "--board", board]
        for name, value in extra.items():
            args += [f"--{name.replace('_', '-')}", value]
        self.ota(*args)
        return image

    def sim(self, device_id: str, *, fw: str = "1.0.0", board: str = BOARD, **kwargs: Any) -> DeviceSimulator:
        return self.device(device_id, fw_version=fw, board=board, ota_public_key=self.pubkey(), **kwargs)

    async def paired_sim(self, device_id: str, **kwargs: Any) -> DeviceSimulator:
        sim = self.sim(device_id, **kwargs)
        await sim.pair(lambda code: asyncio.to_thread(self.claim, code, device_id.title()))
        return sim

    def sql(self, query: str, **values: Any) -> list[Any]:
        with read_tx(self.stack.engine) as conn:
            return list(conn.execute(text(query), values).all())

    def audit(self, kind: str) -> list[dict[str, Any]]:
        rows = self.sql("SELECT decision, detail FROM audit_log WHERE kind = :k ORDER BY id", k=kind)
        return [{"decision": r[0], **json.loads(r[1] or "{}")} for r in rows]


@pytest.fixture
def rig(make_stack: Callable[..., Stack], tmp_path: Path) -> Iterator[OtaRig]:
    env = {
        **gateway_env(),
        "MICROCLAW_OTA__KEY_FILE": str(tmp_path / "home" / ".config" / "microclaw" / "ota.key"),
        "MICROCLAW_OTA__HALT_MIN_RESULTS": "3",
    }
    gateway = OtaRig(make_stack(**env))
    gateway.ota("keygen")
    gateway.start()
    yield gateway


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def in_session(sim: DeviceSimulator, body: Callable[[], Awaitable[Any]]) -> Any:
    stop = asyncio.Event()
    task = asyncio.create_task(sim.run(stop))
    try:
        await asyncio.wait_for(sim.connected.wait(), 15)
        return await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def get(rig: GatewayRig, path: str, context: ssl.SSLContext) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", rig.port, context=context, timeout=15)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def ids_by_cohort(below: float, at_least: float = 0.0, count: int = 1, prefix: str = "dev") -> list[str]:
    found = []
    for i in range(100_000):
        device_id = f"{prefix}-{i}"
        if at_least <= cohort(device_id) < below:
            found.append(device_id)
            if len(found) == count:
                return found
    raise AssertionError("no such ids")


# --- the signing key ------------------------------------------------------------------------


def test_keygen_writes_a_private_key_once_outside_the_data_dir(rig: OtaRig) -> None:
    mode = stat.S_IMODE(rig.key_file.stat().st_mode)
    assert mode == 0o600 and stat.S_IMODE(rig.key_file.parent.stat().st_mode) == 0o700
    before = rig.key_file.read_bytes()
    again = rig.ota("keygen", check=False)
    assert again.returncode != 0 and "--force" in again.stderr
    assert rig.key_file.read_bytes() == before  # not overwritten
    inside = rig.ota("keygen", "--key", str(rig.data_dir / "ota.key"), check=False)
    assert inside.returncode != 0 and "outside" in inside.stderr
    assert not (rig.data_dir / "ota.key").exists()
    pub = rig.pubkey()
    assert len(bytes.fromhex(pub)) == 32
    forced = rig.ota("keygen", "--force")
    assert forced.stdout.split()[-1] != pub and rig.pubkey() == forced.stdout.split()[-1]
    assert stat.S_IMODE(rig.key_file.stat().st_mode) == 0o600
    rig.key_file.chmod(0o644)
    loose = rig.ota(
        "publish",
        str(rig.key_file),
        "--kind",
        "firmware",
        "--version",
        "1.0.0",
        "--board",
        BOARD,
        check=False,
    )
    assert loose.returncode != 0 and "chmod 600" in loose.stderr


# --- a whole update -------------------------------------------------------------------------


def test_a_device_is_offered_downloads_verifies_installs_and_reports(rig: OtaRig) -> None:
    image = rig.publish("1.1.0", min_version="1.0.0")

    async def scenario() -> tuple[DeviceSimulator, Any, Any]:
        sim = await rig.paired_sim("kitchen-1")

        async def first() -> Any:
            return await sim.check_update()  # published, not rolled out: 0 %

        before = await in_session(sim, first)

        async def second() -> Any:
            assert not sim.ota_offers
            await asyncio.to_thread(rig.ota, "rollout", "--percent", "100")  # while connected
            await until(lambda: bool(sim.ota_offers), "the ota.offer pushed after the rollout")
            outcome = await sim.check_update()
            await until(lambda: bool(sim.ota_acks), "the ota.ack")
            return outcome

        outcome = await in_session(sim, second)

        async def third() -> None:  # the next hello reports the new version
            await until(lambda: True, "")

        await in_session(sim, third)
        return sim, before, outcome

    sim, before, outcome = run(scenario())
    assert before.status == "none" and "cohort" in before.reason
    assert outcome.status == "installed" and outcome.version == "1.1.0"
    assert sim.slot_image("firmware") == image and sim.fw_version == "1.1.0"
    offer = sim.ota_offers[0]
    assert offer["kind"] == "firmware" and json.loads(offer["manifest"])["version"] == "1.1.0"
    assert sim.ota_acks == [{"type": "ota.ack", "kind": "firmware", "version": "1.1.0", "status": "stored"}]
    assert rig.sql("SELECT device_id, ok, counted_ok, stage FROM ota_results") == [("kitchen-1", 1, 1, 100.0)]
    assert rig.sql("SELECT fw_version, board FROM devices") == [("1.1.0", BOARD)]
    status = rig.ota("status").stdout
    assert "1.1.0" in status and "100%: 1 ok / 0 failed" in status and "live" in status
    assert [r["decision"] for r in rig.audit("ota.published")] == ["allow"]
    # Nothing newer now: the device is told why, and another image under 1.1.0 is refused.
    status_code, headers, _ = get(rig, "/ota/manifest?kind=firmware", sim.ssl_context())
    assert status_code == 204 and "not newer" in headers["x-ota-reason"]
    (rig.images / "other.bin").write_bytes(b"other image")
    clash = rig.ota(
        "publish",
        str(rig.images / "other.bin"),
        "--kind",
        "firmware",
        "--version",
        "1.1.0",
        "--board",
        BOARD,
        check=False,
    )
    assert clash.returncode != 0 and "another image" in clash.stderr


def test_sigkill_of_the_gateway_around_a_report_stores_it_once(rig: OtaRig) -> None:
    rig.publish("1.1.0")
    rig.ota("rollout", "--percent", "100")

    async def scenario() -> DeviceSimulator:
        sim = await rig.paired_sim("kitchen-1")
        stop = asyncio.Event()
        task = asyncio.create_task(sim.run(stop))
        await asyncio.wait_for(sim.connected.wait(), 15)
        outcome = await sim.check_update()
        assert outcome.status == "installed"
        await asyncio.to_thread(rig.kill)  # the report is in flight, maybe stored, maybe acked
        await asyncio.to_thread(rig.start)
        await until(lambda: bool(sim.ota_acks) and not sim.ota_reports, "the report to be acked", 60)
        stop.set()
        await asyncio.wait_for(task, 15)
        return sim

    sim = run(scenario())
    assert sim.fw_version == "1.1.0"
    assert rig.sql("SELECT device_id, ok FROM ota_results") == [("kitchen-1", 1)]
    assert all(a["status"] == "stored" for a in sim.ota_acks)


# --- what a device must refuse ---------------------------------------------------------------


def test_wrong_board_downgrade_and_min_version_are_never_installed(rig: OtaRig) -> None:
    rig.publish("1.1.0", min_version="1.0.0")
    rig.ota("rollout", "--percent", "100")
    with read_tx(rig.stack.engine) as conn:
        row = conn.execute(text("SELECT manifest, signature FROM ota_releases")).one()

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for device_id, kwargs in {
            "other-board": {"board": "esp32s3-other"},
            "newer-1": {"fw": "2.0.0"},
            "ancient-1": {"fw": "0.9.0"},
        }.items():
            sim = await rig.paired_sim(device_id, **kwargs)
            seen[device_id] = await in_session(sim, sim.check_update)
            seen[f"{device_id} version"] = sim.fw_version
        # The device's own checks, on a manifest that is validly signed but not for it.
        manifest = ota.Manifest(**json.loads(row[0]))
        downgrade = rig.sim("newer-1", fw="2.0.0")
        seen["device downgrade"] = await downgrade.install_manifest(manifest)
        board = rig.sim("other-board", board="esp32s3-other")
        seen["device board"] = await board.install_manifest(manifest)
        return seen

    seen = run(scenario())
    assert seen["other-board"].status == "none" and seen["other-board"].http_status == 404
    assert "no firmware release for board 'esp32s3-other'" in seen["other-board"].reason
    assert seen["newer-1"].status == "none" and "not newer" in seen["newer-1"].reason
    assert seen["ancient-1"].status == "none" and "below min_version 1.0.0" in seen["ancient-1"].reason
    assert seen["device downgrade"].status == "refused" and "not newer" in seen["device downgrade"].reason
    assert seen["device board"].status == "refused" and "board" in seen["device board"].reason
    assert (seen["other-board version"], seen["newer-1 version"], seen["ancient-1 version"]) == (
        "1.0.0",
        "2.0.0",
        "0.9.0",
    )
    assert rig.sql("SELECT count(*) FROM ota_results") == [(0,)]


def test_a_tampered_manifest_or_image_is_refused_and_nothing_is_installed(rig: OtaRig) -> None:
    rig.publish("1.1.0")
    rig.ota("rollout", "--percent", "100")
    sha = rig.sql("SELECT sha256 FROM ota_releases")[0][0]

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        sim = await rig.paired_sim("kitchen-1")
        original = rig.sql("SELECT manifest, signature, public_key FROM ota_releases")[0]
        # Someone in control of the gateway host serves their own image, signed with their key.
        evil = os.urandom(4096)
        attacker = Ed25519PrivateKey.generate()
        forged = ota.Manifest(
            **{
                **json.loads(original[0]),
                "sha256": hashlib.sha256(evil).hexdigest(),
                "version": "1.1.1",
            }
        )
        with write_tx(rig.stack.engine) as conn:
            conn.execute(
                text("UPDATE ota_releases SET manifest = :m, signature = :s, public_key = :k"),
                {
                    "m": ota.canonical(forged).decode(),
                    "s": base64.b64encode(ota.sign(forged, attacker)).decode(),
                    "k": attacker.public_key().public_bytes_raw().hex(),
                },
            )
        seen["manifest"] = await in_session(sim, sim.check_update)
        with write_tx(rig.stack.engine) as conn:
            conn.execute(
                text("UPDATE ota_releases SET manifest = :m, signature = :s, public_key = :k"),
                dict(zip("msk", original, strict=True)),
            )
        # A device pinned to another key refuses the genuine manifest as well.
        stranger = rig.sim("kitchen-1")
        stranger.nvs.data["ota_pubkey"] = "11" * 32
        seen["other key"] = await in_session(stranger, stranger.check_update)
        # The stored image is replaced (same size, other bytes).
        path = rig.data_dir / "ota" / "images" / sha
        path.write_bytes(os.urandom(path.stat().st_size))
        sim = rig.sim("kitchen-1")

        async def tampered_image() -> Any:
            outcome = await sim.check_update()
            await until(lambda: bool(sim.ota_acks), "the failure's ota.ack")
            return outcome

        seen["image"] = await in_session(sim, tampered_image)
        seen["version"] = sim.fw_version
        seen["slot"] = sim.slot_image("firmware")
        return seen

    seen = run(scenario())
    assert seen["manifest"].status == "refused" and "signature" in seen["manifest"].reason
    assert seen["other key"].status == "refused" and "signature" in seen["other key"].reason
    assert seen["image"].status == "refused" and "sha256" in seen["image"].reason
    assert seen["version"] == "1.0.0" and seen["slot"] is None
    assert rig.sql("SELECT device_id, ok, counted_ok FROM ota_results") == [("kitchen-1", 0, 0)]
    assert "sha256" in rig.sql("SELECT reason FROM ota_results")[0][0]


def test_a_halted_rollout_is_not_offered_and_its_image_is_not_served(rig: OtaRig) -> None:
    rig.publish("1.1.0")
    rig.ota("rollout", "--percent", "100")
    sha = rig.sql("SELECT sha256 FROM ota_releases")[0][0]
    halted = rig.ota("halt", "--reason", "bricks the speaker")
    assert "halted" in halted.stdout
    refused = rig.ota("rollout", "--percent", "50", check=False)
    assert refused.returncode != 0 and "halted" in refused.stderr and "--resume" in refused.stderr

    async def scenario() -> tuple[Any, int]:
        sim = await rig.paired_sim("kitchen-1")
        outcome = await in_session(sim, sim.check_update)
        code, _, _ = await asyncio.to_thread(get, rig, f"/ota/image/{sha}", sim.ssl_context())
        return outcome, code

    outcome, image_status = run(scenario())
    assert outcome.status == "none" and "halted" in outcome.reason
    assert image_status == 404
    status = rig.ota("status").stdout
    assert "halted: bricks the speaker" in status
    assert [r["reason"] for r in rig.audit("ota.halted")] == ["bricks the speaker"]
    resumed = rig.ota("rollout", "--percent", "100", "--resume")
    assert "100 %" in resumed.stdout


def test_downloads_need_the_client_certificate_of_an_active_device(rig: OtaRig) -> None:
    rig.publish("1.1.0")
    rig.ota("rollout", "--percent", "100")
    sha = rig.sql("SELECT sha256 FROM ota_releases")[0][0]

    sim = run(scenario_with_hello(rig))
    for path in ("/ota/manifest?kind=firmware", f"/ota/image/{sha}"):
        code, _, body = get(rig, path, rig.plain_tls())
        assert code == 401 and b"certificate" in body
        assert get(rig, path, sim.ssl_context())[0] == 200
    assert get(rig, "/ota/manifest?kind=bootloader", sim.ssl_context())[0] == 400
    assert get(rig, "/ota/image/" + "0" * 64, sim.ssl_context())[0] == 404
    revoke = rig.cli("revoke", "kitchen-1")
    assert revoke.returncode == 0
    for path in ("/ota/manifest?kind=firmware", f"/ota/image/{sha}"):
        code, _, body = get(rig, path, sim.ssl_context())
        assert code == 403 and b"image" not in body
    denied = rig.audit("ota.download")
    assert len(denied) == 2 and {d["reason"] for d in denied} == {"certificate revoked"}


async def scenario_with_hello(rig: OtaRig) -> DeviceSimulator:
    sim = await rig.paired_sim("kitchen-1")
    await in_session(sim, lambda: asyncio.sleep(0))
    return sim


# --- rollout ---------------------------------------------------------------------------------


def test_a_device_in_at_10_percent_stays_in_at_50(rig: OtaRig) -> None:
    rig.publish("1.1.0")
    early = ids_by_cohort(10)[0]
    middle = ids_by_cohort(50, at_least=10)[0]
    late = ids_by_cohort(100, at_least=50)[0]

    async def scenario() -> dict[str, list[str]]:
        sims = {d: await rig.paired_sim(d) for d in (early, middle, late)}
        seen: dict[str, list[str]] = {}
        for percent in ("10", "50"):
            await asyncio.to_thread(rig.ota, "rollout", "--percent", percent)
            for device_id, sim in sims.items():
                outcome = await in_session(sim, lambda s=sim: s.check_update(install=False))
                seen.setdefault(device_id, []).append(outcome.reason)
        return seen

    seen = run(scenario())
    assert seen[early] == ["offered, not installed", "offered, not installed"]
    assert seen[middle][0].endswith("outside the 10 % cohort") and seen[middle][1] == "offered, not installed"
    assert all(r.endswith(f"outside the {p} % cohort") for r, p in zip(seen[late], (10, 50), strict=True))
    assert rig.sql("SELECT percent, stages FROM ota_releases") == [(50.0, "[10.0, 50.0]")]


def test_a_model_canary_missing_confirmations_halts_the_rollout_and_rolls_back(rig: OtaRig) -> None:
    bundle = rig.publish("1.0.0", kind="model")
    rig.ota("rollout", "--percent", "100", "--kind", "model")
    # halt_min_results = 3, halt_failure_rate = 0.2 (defaults); confirm_miss_rate limit 0.2.
    canaries = {"canary-1": 0.05, "canary-2": 0.5, "canary-3": 0.6}

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        sims: dict[str, DeviceSimulator] = {}
        for device_id, miss in canaries.items():
            sim = await rig.paired_sim(device_id)
            sim.ota_metrics["model"] = {"confirm_miss_rate": miss, "latency_ms": 40}

            async def update(sim: DeviceSimulator = sim) -> Any:
                outcome = await sim.check_update("model")
                await until(lambda: bool(sim.ota_acks), "the ota.ack")
                return outcome

            seen[device_id] = await in_session(sim, update)
            seen[f"{device_id} halted"] = rig.sql("SELECT halted FROM ota_releases")[0][0]
            sims[device_id] = sim
        # Reconnecting, every canary says it runs the halted model: it is told to roll back.
        for device_id, sim in sims.items():
            await in_session(sim, lambda sim=sim: until(lambda: bool(sim.ota_rollbacks), "ota.rollback"))
            seen[f"{device_id} after"] = sim.model_version
        late = await rig.paired_sim("late-1")
        seen["late"] = await in_session(late, lambda: late.check_update("model"))
        return seen

    seen = run(scenario())
    assert all(seen[d].status == "installed" for d in canaries)
    assert [seen[f"{d} halted"] for d in canaries] == [0, 0, 1]  # only with enough results
    assert [seen[f"{d} after"] for d in canaries] == ["", "", ""]
    assert seen["late"].status == "none" and "halted" in seen["late"].reason
    results = rig.sql("SELECT device_id, ok, counted_ok FROM ota_results ORDER BY device_id")
    assert results == [("canary-1", 1, 1), ("canary-2", 1, 0), ("canary-3", 1, 0)]
    halts = rig.audit("ota.halted")
    assert len(halts) == 1 and halts[0]["automatic"] is True and "2 of 3 failed" in halts[0]["reason"]
    misses = [r["reason"] for r in rig.audit("ota.result") if r["decision"] == "deny"]
    assert misses == ["confirm_miss_rate 0.5 > 0.2", "confirm_miss_rate 0.6 > 0.2"]
    status = rig.ota("status").stdout
    assert "halted: automatic" in status and "100%: 1 ok / 2 failed" in status
    assert len(bundle) > 4096
