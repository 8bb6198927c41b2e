"""Write the cross-language test vectors for the firmware core as C (vectors.h + vectors.c).

Made at test time by the gateway's own Python code: SHA-256 digests from hashlib, manifests
signed with `cryptography` Ed25519 through `microclaw.gateway.ota` (canonical JSON), the
gateway's frames from `microclaw.gateway.protocol.frame`. The C tests verify the good ones and
must reject the tampered ones.

Usage: python firmware/tools/make_vectors.py OUT_DIR (MC_VECTORS_CORRUPT=1 spoils one good
signature, for the test that proves the C side verifies).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from microclaw.gateway import ota
from microclaw.gateway import protocol as p

# error codes from firmware/components/microclaw_core/include/mc_common.h
MC_OK, MC_ERR_FIELD, MC_ERR_SIGNATURE, MC_ERR_CANONICAL = 0, -6, -10, -15
BOARD = "esp32-s3-box-3"


def c_bytes(data: bytes) -> str:
    if not data:
        return "{0}"
    return "{" + ",".join(str(b) for b in data) + "}"


def c_str(data: bytes) -> str:
    """A C string literal for arbitrary bytes (octal escapes, no trigraph or hex-run surprises)."""
    out = []
    for b in data:
        ch = chr(b)
        if 32 <= b < 127 and ch not in '"\\?':
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def image(n: int, seed: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    sha_inputs = [
        b"",
        b"abc",
        image(55, 1),
        image(56, 2),
        image(63, 3),
        image(64, 4),
        image(65, 5),
        image(1000, 6),
        image(4099, 7),
        "ünïcødé ✓".encode(),
    ]
    fw_image = image(5000, 8)
    model_image = image(3000, 9)

    def manifest(
        kind: str,
        version: str,
        img: bytes,
        url: str = "https://gw.local:8766/ota/image/x",
        min_version: str = "1.0.0",
    ) -> ota.Manifest:
        return ota.Manifest(
            kind=kind,
            version=version,
            board=BOARD,
            url=url,  # type: ignore[arg-type]
            sha256=hashlib.sha256(img).hexdigest(),
            size=len(img),
            min_version=min_version,
        )

    fw = manifest("firmware", "1.2.0", fw_image)
    model = manifest("model", "2.0.1", model_image)
    unicode_url = manifest("firmware", "1.3.0", fw_image, url='https://gw.local/ota/ïmage/✓?a="b"')
    raw = ota.canonical(fw)
    tampered = raw.replace(b'"size":5000', b'"size":5001')
    spaced = json.dumps(json.loads(raw), sort_keys=True).encode()  # signed, but not canonical
    reordered = json.dumps(json.loads(raw), separators=(",", ":")).encode()
    flipped = bytearray(ota.sign(fw, key))
    flipped[10] ^= 1
    manifests = [
        ("good_firmware", raw, ota.sign(fw, key), MC_OK),
        ("good_model", ota.canonical(model), ota.sign(model, key), MC_OK),
        ("good_unicode_url", ota.canonical(unicode_url), ota.sign(unicode_url, key), MC_OK),
        ("tampered_size", tampered, ota.sign(fw, key), MC_ERR_SIGNATURE),
        ("flipped_signature", raw, bytes(flipped), MC_ERR_SIGNATURE),
        ("other_key", raw, ota.sign(fw, other), MC_ERR_SIGNATURE),
        ("signed_not_canonical_spaces", spaced, key.sign(spaced), MC_ERR_CANONICAL),
        (
            "signed_not_canonical_order",
            reordered,
            key.sign(reordered),
            MC_OK if reordered == raw else MC_ERR_CANONICAL,
        ),
        ("signed_not_a_manifest", b'{"kind":"firmware"}', key.sign(b'{"kind":"firmware"}'), MC_ERR_FIELD),
    ]
    if os.environ.get("MC_VECTORS_CORRUPT"):  # for the test that the C side really verifies
        bad = bytearray(manifests[1][2])
        bad[5] ^= 1
        manifests[1] = (manifests[1][0], manifests[1][1], bytes(bad), MC_OK)
    # Python's own verifier agrees on every case (the vectors are not wishful).
    for name, data, sig, expect in manifests:
        try:
            ota.verify(data, sig, key.public_key())
            ok = True
        except ota.ManifestRejected:
            ok = False
        assert ok == (expect == MC_OK) or os.environ.get("MC_VECTORS_CORRUPT"), name

    emoji_text = 'Lights on 💡 — «ok»\n\t"quoted" \\ done'
    frames = [
        (
            "pair_code",
            p.frame("pair.code", code="ABCD-EFGH", secret="s" * 32, expires_in_s=300.0),
            1,
            "ABCD-EFGH",
        ),
        ("pair_pending", p.frame("pair.pending"), 2, ""),
        ("pair_token", p.frame("pair.token", token="t" * 43, expires_in_s=120.0), 3, "t" * 43),
        ("welcome", p.frame("welcome", device_id="kitchen-1", last_seq=44, protocol=1), 5, "kitchen-1"),
        (
            "event_unicode",
            p.frame("event", seq=42, kind="message", body={"text": emoji_text}, ts_ms=1_700_000_000_000),
            6,
            emoji_text,
        ),
        ("ack_stored", p.frame("ack", message_id="m-1001", status="stored"), 7, "m-1001"),
        (
            "ack_rejected",
            p.frame("ack", message_id="m-1002", status="rejected", detail="text: too long"),
            7,
            "m-1002",
        ),
        ("error", p.frame("error", code="bad_frame", detail="frame: invalid"), 8, "bad_frame"),
        (
            "ota_offer",
            p.frame(
                "ota.offer",
                kind="firmware",
                manifest=raw.decode(),
                signature=base64.b64encode(ota.sign(fw, key)).decode(),
            ),
            9,
            raw.decode(),
        ),
        (
            "ota_rollback",
            p.frame("ota.rollback", kind="model", version="2.0.1", reason="halted"),
            10,
            "2.0.1",
        ),
        ("unknown_type", p.frame("future.thing", x=[1, 2, {"y": None}]), 0, ""),
    ]

    h = [
        "/* Generated by firmware/tools/make_vectors.py at test time; do not edit. */",
        "#ifndef MC_VECTORS_H",
        "#define MC_VECTORS_H",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "typedef struct { const uint8_t *data; size_t len; uint8_t digest[32]; } v_sha_t;",
        "typedef struct { const char *name; const char *data; size_t len; uint8_t sig[64]; int expect; }"
        " v_manifest_t;",
        "typedef struct { const char *name; const char *frame; size_t len; int type; const char *field; }"
        " v_frame_t;",
        "extern const v_sha_t V_SHA[]; extern const size_t V_SHA_N;",
        "extern const uint8_t V_PUBKEY[32];",
        "extern const v_manifest_t V_MANIFEST[]; extern const size_t V_MANIFEST_N;",
        "extern const uint8_t V_FW_IMAGE[]; extern const size_t V_FW_IMAGE_LEN;",
        "extern const uint8_t V_MODEL_IMAGE[]; extern const size_t V_MODEL_IMAGE_LEN;",
        "extern const v_frame_t V_FRAME[]; extern const size_t V_FRAME_N;",
        f'#define V_BOARD "{BOARD}"',
        "#endif",
        "",
    ]
    c = ['#include "vectors.h"']
    for i, data in enumerate(sha_inputs):
        c.append(f"static const uint8_t sha_in_{i}[] = {c_bytes(data)};")
    c.append("const v_sha_t V_SHA[] = {")
    for i, data in enumerate(sha_inputs):
        c.append(f"  {{sha_in_{i}, {len(data)}, {c_bytes(hashlib.sha256(data).digest())}}},")
    c.append("};")
    c.append(f"const size_t V_SHA_N = {len(sha_inputs)};")
    c.append(f"const uint8_t V_PUBKEY[32] = {c_bytes(pub)};")
    c.append("const v_manifest_t V_MANIFEST[] = {")
    for name, data, sig, expect in manifests:
        c.append(f'  {{"{name}", {c_str(data)}, {len(data)}, {c_bytes(sig)}, {expect}}},')
    c.append("};")
    c.append(f"const size_t V_MANIFEST_N = {len(manifests)};")
    c.append(f"const uint8_t V_FW_IMAGE[] = {c_bytes(fw_image)};")
    c.append(f"const size_t V_FW_IMAGE_LEN = {len(fw_image)};")
    c.append(f"const uint8_t V_MODEL_IMAGE[] = {c_bytes(model_image)};")
    c.append(f"const size_t V_MODEL_IMAGE_LEN = {len(model_image)};")
    c.append("const v_frame_t V_FRAME[] = {")
    for name, text, ftype, field in frames:
        data = text.encode()
        c.append(f'  {{"{name}", {c_str(data)}, {len(data)}, {ftype}, {c_str(field.encode())}}},')
    c.append("};")
    c.append(f"const size_t V_FRAME_N = {len(frames)};")
    (out_dir / "vectors.h").write_text("\n".join(h))
    (out_dir / "vectors.c").write_text("\n".join(c) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
