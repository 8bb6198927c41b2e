"""The signed bundle: a good bundle verifies; any tampering (manifest, signature, a model file,
a symlink, an extra path in a name, another key) is rejected; the OTA image is deterministic and
is published as a ``model`` release the gateway can offer."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from microclaw.distill import bundle
from microclaw.distill.labels import label_map
from microclaw.distill.pipeline import make_bundle
from microclaw.gateway import ota
from tests.unit.distill.conftest import Built


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def made(small_model: Built, key: Ed25519PrivateKey, tmp_path: Path) -> Path:
    make_bundle(small_model.paths, version="1.4.0", board="box3", key=key)
    directory = tmp_path / "b"
    shutil.copytree(small_model.paths.bundle / "1.4.0", directory)
    return directory


def test_a_good_bundle_verifies_and_carries_what_the_device_needs(
    made: Path, key: Ed25519PrivateKey, small_model: Built
) -> None:
    manifest = bundle.verify_bundle(made, key.public_key())
    assert manifest["version"] == "1.4.0" and manifest["board"] == "box3" and manifest["kind"] == "model"
    assert [f["name"] for f in manifest["files"]] == ["model.mcm", "model.tflite"]
    assert manifest["labels"] == label_map()
    assert manifest["arena_bytes"] >= small_model.metrics["sizes"]["arena_bytes"]
    assert manifest["features"]["dim"] == small_model.config.dim
    golden = manifest["golden"]
    assert len(golden) >= 11 and all(len(g["logits"]) == 18 and g["buckets"] for g in golden)
    raw = (made / bundle.MANIFEST).read_bytes()
    assert raw == json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def _tampered(made: Path, how: str) -> None:
    raw = (made / bundle.MANIFEST).read_bytes()
    if how == "manifest":
        (made / bundle.MANIFEST).write_bytes(raw.replace(b'"board":"box3"', b'"board":"box4"'))
    elif how == "signature":
        sig = bytearray((made / bundle.SIGNATURE).read_bytes())
        sig[10] ^= 1
        (made / bundle.SIGNATURE).write_bytes(bytes(sig))
    elif how == "model":
        data = bytearray((made / "model.tflite").read_bytes())
        data[len(data) // 2] ^= 0x40
        (made / "model.tflite").write_bytes(bytes(data))
    elif how == "truncated":
        (made / "model.mcm").write_bytes((made / "model.mcm").read_bytes()[:-4])
    elif how == "symlink":
        target = made.parent / "elsewhere.mcm"
        os.replace(made / "model.mcm", target)
        os.symlink(target, made / "model.mcm")
    elif how == "missing":
        (made / "model.mcm").unlink()


@pytest.mark.parametrize("how", ["manifest", "signature", "model", "truncated", "symlink", "missing"])
def test_a_tampered_bundle_is_rejected(made: Path, key: Ed25519PrivateKey, how: str) -> None:
    _tampered(made, how)
    with pytest.raises(bundle.BundleRejected):
        bundle.verify_bundle(made, key.public_key())


def test_another_key_and_non_canonical_or_hostile_manifests_are_rejected(
    made: Path, key: Ed25519PrivateKey
) -> None:
    with pytest.raises(bundle.BundleRejected, match="signature"):
        bundle.verify_bundle(made, Ed25519PrivateKey.generate().public_key())
    manifest = json.loads((made / bundle.MANIFEST).read_bytes())
    pretty = json.dumps(manifest, indent=1).encode()  # same content, not canonical
    with pytest.raises(bundle.BundleRejected, match="canonical"):
        bundle.verify_manifest(pretty, key.sign(pretty), key.public_key())
    manifest["files"][0]["name"] = "../etc/passwd"
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    (made / bundle.MANIFEST).write_bytes(raw)
    (made / bundle.SIGNATURE).write_bytes(key.sign(raw))  # even correctly signed
    with pytest.raises(bundle.BundleRejected, match="bad file name"):
        bundle.verify_bundle(made, key.public_key())


def test_the_ota_image_is_deterministic_and_round_trips(
    made: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    image = bundle.pack(made)
    assert bundle.pack(made) == image
    bundle.unpack(image, tmp_path / "device")
    assert bundle.verify_bundle(tmp_path / "device", key.public_key())["version"] == "1.4.0"


def test_publish_makes_a_signed_model_release(
    made: Path, key: Ed25519PrivateKey, engine: Engine, tmp_path: Path
) -> None:
    row = bundle.publish(engine, tmp_path / "data", made, key=key)
    assert (row.kind, row.version, row.board, row.percent) == ("model", "1.4.0", "box3", 0.0)
    manifest = ota.verify(row.manifest.encode(), base64.b64decode(row.signature), key.public_key())
    image = (tmp_path / "data" / "ota" / "images" / manifest.sha256).read_bytes()
    ota.verify_image(manifest, image)
    assert image == bundle.pack(made)
    _tampered(made, "model")
    with pytest.raises(bundle.BundleRejected):
        bundle.publish(engine, tmp_path / "data", made, key=key)  # never publishes a broken bundle
