"""The firmware's C core as a device against the real gateway: a `microclaw-gateway run` process,
real mutual TLS, the real `microclaw device claim` CLI, messages landing in the real app
database. The core is built with gcc (UBSan) and driven through ctypes by a host HAL
(tests/integration/firmware/coredev.py); the ESP-IDF HAL (firmware/main) is not compiled here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from microclaw.store.db import read_tx
from tests.integration.firmware.coredev import ROOT, CoreDevice, build_core, claim_in_background, load
from tests.integration.gateway.harness import GatewayRig, gateway_env
from tests.integration.stack import Stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def core_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_core(tmp_path_factory.mktemp("core"))


@pytest.fixture
def rig(make_stack: Callable[..., Stack]) -> Iterator[GatewayRig]:
    gateway = GatewayRig(make_stack(**gateway_env()))
    gateway.start()
    yield gateway


def test_the_default_offline_queue_fits_the_nvs_partition(core_lib: Path, tmp_path: Path) -> None:
    """The queue's worst case (every slot full with a 2 KiB text), the certificate, CA, key and
    records fit the `nvs` partition of firmware/partitions.csv, counted the way NVS stores blobs
    (32-byte entries plus a header entry per chunk, one page kept free for garbage collection)."""
    lib = load(core_lib)
    dev = CoreDevice(lib, tmp_path / "board", "wss://127.0.0.1:1", "", "sizing-1", ring_slots=0)
    slots = dev.ring_slots
    assert slots == 32  # MC_RING_DEFAULT_SLOTS, what firmware/main passes (0)
    sizes = (
        [lib.mc_ring_slot_bytes()] * slots + [4096, 4096, 600] + [len(v) for v in dev.storage.data.values()]
    )
    entries = sum(2 + (size + 31) // 32 for size in sizes)  # data entries + the chunk and index headers
    line = next(
        x for x in (ROOT / "firmware" / "partitions.csv").read_text().splitlines() if x.startswith("nvs,")
    )
    pages = int(line.split(",")[4], 0) // 4096
    assert entries <= (pages - 1) * 126, f"{entries} NVS entries needed, {(pages - 1) * 126} available"


def stored(rig: GatewayRig, chat: str) -> list[tuple[str, str]]:
    with read_tx(rig.stack.engine) as conn:
        rows = conn.execute(
            text("SELECT id, content FROM messages WHERE chat_jid = :c ORDER BY seq"), {"c": chat}
        ).all()
    return [(r[0], r[1]) for r in rows]


def paired_device(
    rig: GatewayRig, core_lib: Path, home: Path, device_id: str, **kwargs: object
) -> CoreDevice:
    """A board fresh from the factory (URL and CA provisioned), paired through the core."""
    on_code, failures = claim_in_background(lambda code: rig.claim(code, device_id.title()))
    dev = CoreDevice(load(core_lib), home, rig.url, rig.ca_pem, device_id, on_code=on_code, **kwargs)
    dev.pump(lambda: bool(dev.welcomed) or bool(failures), timeout=60)
    assert not failures, failures
    return dev


def test_core_pairs_over_tls_and_its_session_uses_the_issued_certificate(
    rig: GatewayRig, core_lib: Path, tmp_path: Path
) -> None:
    dev = paired_device(rig, core_lib, tmp_path / "board", "kitchen-1")
    try:
        kinds = [frame["type"] for frame in dev.sent]
        assert kinds[0] == "pair.begin" and "pair.poll" in kinds and "pair.csr" in kinds
        assert kinds[-1] == "device.hello"
        assert dev.shown["pair_code"] == ""  # the code is cleared once paired
        cert = x509.load_pem_x509_certificate(dev.storage.data["cert"].rstrip(b"\0"))
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kitchen-1"
        assert "PRIVATE KEY" not in " ".join(str(f) for f in dev.sent)  # only the CSR left the board
        assert "listening" in dev.states
        listing = rig.cli("list")
        assert "kitchen-1" in listing.stdout and "active" in listing.stdout
        # A message said on the device is acked once durable and leaves the offline queue.
        mid = dev.say("turn on the lights")
        dev.pump(lambda: dev.ring_count == 0)
        assert stored(rig, "dev:kitchen-1") == [(f"dev:kitchen-1:{mid}", "turn on the lights")]
        assert dev.bad_frames == 0
    finally:
        dev.close()


def test_replay_after_a_disconnect_and_a_reboot_has_no_gap_no_duplicate_and_flushes_the_queue(
    rig: GatewayRig, core_lib: Path, tmp_path: Path
) -> None:
    home = tmp_path / "board"
    dev = paired_device(rig, core_lib, home, "hall-1")
    log = rig.log
    for i in range(1, 4):
        log.append("hall-1", "message", {"text": f"live {i}"}, idempotency_key=f"k{i}")
    dev.pump(lambda: dev.last_seen == 3)
    assert dev.messages == ["live 1", "live 2", "live 3"]

    # The link drops; replies keep coming and the user keeps talking while offline.
    dev.disconnect()
    for i in range(4, 8):
        log.append("hall-1", "message", {"text": f"missed {i}"}, idempotency_key=f"k{i}")
    queued = [dev.say(f"offline {i}") for i in range(3)]
    assert dev.ring_count == 3
    assert stored(rig, "dev:hall-1") == []
    dev.close()

    # The board reboots: a new core on the same NVS file, which holds last_seen and the queue.
    after = CoreDevice(dev.lib, home, rig.url, rig.ca_pem, "hall-1")
    assert after.last_seen == 3 and after.ring_count == 3
    try:
        after.pump(lambda: after.last_seen == 7 and after.ring_count == 0)
        hello = next(f for f in after.sent if f["type"] == "device.hello")
        assert hello["last_seen_seq"] == 3
        assert after.messages == [f"missed {i}" for i in range(4, 8)]  # 4..7 once, in order
        assert after.gaps == 0 and after.duplicates == 0
        assert [m for _, m in stored(rig, "dev:hall-1")] == ["offline 0", "offline 1", "offline 2"]
        assert [i for i, _ in stored(rig, "dev:hall-1")] == [f"dev:hall-1:{q}" for q in queued]

        # A second reconnect replays nothing new and sends nothing twice.
        after.disconnect()
        log.append("hall-1", "message", {"text": "after"}, idempotency_key="k8")
        after.pump(lambda: after.last_seen == 8)
        assert after.messages[-1] == "after" and after.duplicates == 0 and after.gaps == 0
        assert len(stored(rig, "dev:hall-1")) == 3
    finally:
        after.close()


def test_a_full_queue_drops_the_oldest_and_the_rest_arrive_once(
    rig: GatewayRig, core_lib: Path, tmp_path: Path
) -> None:
    dev = paired_device(rig, core_lib, tmp_path / "board", "den-1", ring_slots=4)
    try:
        dev.disconnect()
        for i in range(6):
            dev.say(f"m{i}")
        assert dev.ring_count == 4 and dev.ring_dropped == 2
        dev.pump(lambda: dev.ring_count == 0)
        assert [m for _, m in stored(rig, "dev:den-1")] == ["m2", "m3", "m4", "m5"]
    finally:
        dev.close()


def test_a_revoked_device_is_refused_by_the_gateway_and_the_core_keeps_running(
    rig: GatewayRig, core_lib: Path, tmp_path: Path
) -> None:
    dev = paired_device(rig, core_lib, tmp_path / "board", "attic-1")
    try:
        revoked = rig.cli("revoke", "attic-1")
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
        dev.pump(lambda: dev.ws is None, reconnect=False)
        assert 4403 in dev.closes or 4401 in dev.closes
        dev.say("anyone there?")
        with pytest.raises(AssertionError, match="timed out"):
            dev.pump(lambda: dev.ring_count == 0, timeout=3)
        assert stored(rig, "dev:attic-1") == []
        assert dev.ring_count == 1  # kept, not lost, while the gateway refuses the board
    finally:
        dev.close()
