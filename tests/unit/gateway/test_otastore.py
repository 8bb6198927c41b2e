"""OTA releases on a real SQLite database: publishing (the Python entry point the distillation
pipeline calls), the signing key file, offers, results and the automatic halt."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from microclaw.gateway import ota, otastore
from microclaw.store import devices
from microclaw.store import ota as store
from microclaw.store.db import read_tx, write_tx


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _image(tmp_path: Path, data: bytes, name: str = "image.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_publish_stores_the_image_by_hash_and_signs_a_canonical_manifest(
    engine: Engine, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    data = b"model bundle" * 1000
    row = otastore.publish(
        engine,
        tmp_path / "data",
        _image(tmp_path, data),
        kind="model",
        version="1.2.0",
        board="box3",
        key=key,
    )
    sha = hashlib.sha256(data).hexdigest()
    stored = tmp_path / "data" / "ota" / "images" / sha
    assert stored.read_bytes() == data and stat.S_IMODE(stored.stat().st_mode) == 0o600
    manifest = ota.verify(row.manifest.encode(), base64.b64decode(row.signature), key.public_key())
    assert manifest == ota.Manifest("model", "1.2.0", "box3", f"/ota/image/{sha}", sha, len(data), "0.0.0")
    assert (row.percent, row.halted, row.stages) == (0.0, False, ())
    again = otastore.publish(
        engine,
        tmp_path / "data",
        _image(tmp_path, data),
        kind="model",
        version="1.2.0",
        board="box3",
        key=key,
    )
    assert again.id == row.id
    with pytest.raises(otastore.OtaError, match="another image"):
        otastore.publish(
            engine,
            tmp_path / "data",
            _image(tmp_path, b"x"),
            kind="model",
            version="1.2.0",
            board="box3",
            key=key,
        )
    with pytest.raises(otastore.OtaError, match="MAJOR\\.MINOR\\.PATCH"):
        otastore.publish(
            engine,
            tmp_path / "data",
            _image(tmp_path, b"x"),
            kind="model",
            version="v2",
            board="box3",
            key=key,
        )
    with pytest.raises(otastore.OtaError, match="max_image_bytes"):
        otastore.publish(
            engine,
            tmp_path / "data",
            _image(tmp_path, b"y" * 100),
            kind="firmware",
            version="1.0.0",
            board="box3",
            key=key,
            max_image_bytes=10,
        )
    with read_tx(engine) as conn:
        assert len(store.releases(conn)) == 1


def test_the_key_file_is_private_and_never_silently_replaced(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ota.key"
    public = otastore.generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert otastore.load_key(path).public_key().public_bytes_raw() == public.public_bytes_raw()
    with pytest.raises(otastore.OtaError, match="--force"):
        otastore.generate_key(path)
    with pytest.raises(otastore.OtaError, match="inside"):
        otastore.generate_key(tmp_path / "project" / "k.key", forbidden=(tmp_path / "project",))
    path.chmod(0o640)
    with pytest.raises(otastore.OtaError, match="chmod 600"):
        otastore.load_key(path)
    assert otastore.public_key_text(public, "hex").strip() == public.public_bytes_raw().hex().encode()
    assert len(otastore.public_key_text(public, "raw")) == 32


def _device(engine: Engine, device_id: str, board: str, fw: str) -> None:
    with write_tx(engine) as conn:
        devices.save_device(
            conn,
            device_id=device_id,
            name=device_id,
            chat_jid=f"dev:{device_id}",
            cert_serial="1",
            cert_fingerprint="f",
            now_ms=1,
        )
        devices.record_session(conn, device_id, online=True, now_ms=2, fw_version=fw, board=board)


def test_offers_fall_back_to_the_newest_live_release_and_results_halt_it(
    engine: Engine, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    data_dir = tmp_path / "data"
    for version in ("1.1.0", "1.2.0"):
        otastore.publish(
            engine,
            data_dir,
            _image(tmp_path, version.encode() * 10),
            kind="firmware",
            version=version,
            board="box3",
            key=key,
        )
    otastore.set_rollout(engine, 100, release_id=1)
    otastore.set_rollout(engine, 100, kind="firmware", board="box3")  # the newest: 1.2.0

    def offered(device_id: str, running: str) -> str | None:
        with read_tx(engine) as conn:
            answer = otastore.offer_for(
                conn, device_id=device_id, board="box3", running=running, kind="firmware"
            )
        return answer.release.version if answer.release else answer.reason

    assert offered("d-1", "1.0.0") == "1.2.0"
    rules = otastore.ResultRules(threshold=0.2, minimum=3)
    statuses = []
    for i, ok in enumerate((True, False, False)):
        _device(engine, f"d-{i}", "box3", "1.0.0")
        statuses.append(
            otastore.record_result(
                engine,
                device_id=f"d-{i}",
                board="box3",
                kind="firmware",
                version="1.2.0",
                ok=ok,
                reason="" if ok else "self-test failed",
                metrics={},
                rules=rules,
            )
        )
    assert [s for s, _ in statuses] == ["stored"] * 3
    assert statuses[1][1] is None and statuses[2][1] is not None and "2 of 3 failed" in statuses[2][1]
    with read_tx(engine) as conn:
        halted = store.get_release(conn, 2)
    assert halted is not None and halted.halted and halted.halt_reason.startswith("automatic:")
    assert offered("d-1", "1.0.0") == "1.1.0"  # the halted newest falls back to the live one
    assert offered("d-1", "1.1.0").startswith("1.2.0: the rollout is halted")
    unknown = otastore.record_result(
        engine,
        device_id="d-0",
        board="box3",
        kind="firmware",
        version="9.9.9",
        ok=True,
        reason="",
        metrics={},
        rules=rules,
    )
    assert unknown == ("unknown_release", None)
