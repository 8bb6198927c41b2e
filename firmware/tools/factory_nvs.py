#!/usr/bin/env python3
"""Build the terminal's factory NVS image (partition ``fctry``): what one household's boards
must know before they can pair, written once at the bench and never changed by the firmware.

Namespace ``mc_factory``, keys (<= 15 characters each, read by firmware/main/provision.c):
- ``gateway_url``  string, ``wss://HOST:PORT`` of the gateway;
- ``ca_pem``       string, the device CA certificate (``microclaw-gateway ca-pin --pem``): the TLS
                   client trusts only this CA;
- ``ca_pin``       string, ``sha256/<base64>`` of the CA's SubjectPublicKeyInfo
                   (``microclaw-gateway ca-pin``); computed here from ``--ca-pem`` and, when
                   ``--ca-pin`` is given, required to match it (a pasted pin from another gateway
                   is refused);
- ``ota_pubkey``   blob, the 32-byte ed25519 public key OTA manifests are signed with;
- ``board``        string, the board OTA manifests name (``esp32s3-box3``, `microclaw ota publish --board`).

The image is made by Espressif's ``esp-idf-nvs-partition-gen`` (PyPI) from a CSV this tool
writes; flash it with ``esptool.py --chip esp32s3 write_flash 0xc000 fctry.bin`` (the offset of
``fctry`` in firmware/partitions.csv). Exit status 2 and a one-line reason on bad input;
nothing is written then.

    python firmware/tools/factory_nvs.py --gateway-url wss://192.168.1.10:8766 \
        --ca-pem ca.pem --ca-pin "$(microclaw-gateway ca-pin)" \
        --ota-pubkey "$(microclaw ota pubkey --format hex)" --out fctry.bin
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

NAMESPACE = "mc_factory"
DEFAULT_SIZE = 0x6000  # the fctry partition in firmware/partitions.csv
BOARD = "esp32s3-box3"
MAX_URL = 200
_BOARD = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")


class BadInput(ValueError):
    """Input that must not become a factory image."""


def ca_pin(pem: str) -> str:
    """``sha256/<base64>`` of the certificate's SubjectPublicKeyInfo, as ``microclaw-gateway ca-pin``."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def check(url: str, pem: str, pin: str | None, pubkey_hex: str, board: str) -> str:
    """Validate the inputs; returns the CA pin computed from ``pem``. `BadInput` says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "wss" or not parts.hostname or len(url) > MAX_URL or "," in url:
        raise BadInput(f"gateway URL must be wss://HOST[:PORT] (at most {MAX_URL} characters): {url!r}")
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise BadInput(f"--ca-pem is not a PEM certificate: {exc}") from None
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        raise BadInput("the device CA must be an ECDSA key (the gateway's CA is P-256)")
    if len(pem.encode()) > 4000:
        raise BadInput("the CA PEM is over NVS's 4000-byte string limit")
    computed = ca_pin(pem)
    if pin is not None and pin.strip() != computed:
        raise BadInput(f"--ca-pin {pin.strip()!r} does not match the CA in --ca-pem ({computed})")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", pubkey_hex):
        raise BadInput("--ota-pubkey must be 64 hex digits (a raw 32-byte ed25519 public key)")
    if not _BOARD.fullmatch(board):
        raise BadInput(f"board name {board!r} is not ^[a-z0-9][a-z0-9-]{{1,39}}$")
    return computed


def write_csv(path: Path, url: str, pem_path: Path, pin: str, pubkey_hex: str, board: str) -> None:
    """The generator's input: key,type,encoding,value (a ``file`` row reads the PEM from disk)."""
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["key", "type", "encoding", "value"])
        out.writerow([NAMESPACE, "namespace", "", ""])
        out.writerow(["gateway_url", "data", "string", url])
        out.writerow(["ca_pem", "file", "string", str(pem_path)])
        out.writerow(["ca_pin", "data", "string", pin])
        out.writerow(["ota_pubkey", "data", "hex2bin", pubkey_hex.lower()])
        out.writerow(["board", "data", "string", board])


def build(
    url: str,
    pem: str,
    pin: str | None,
    pubkey_hex: str,
    out: Path,
    *,
    board: str = BOARD,
    size: int = DEFAULT_SIZE,
) -> None:
    """Check the inputs and write the image to ``out`` (via the Espressif generator)."""
    computed = check(url, pem, pin, pubkey_hex, board)
    if size % 4096 or size < 0x3000:
        raise BadInput("size must be a multiple of 4096 and at least 0x3000")
    with tempfile.TemporaryDirectory(prefix="fctry-") as tmp:
        work = Path(tmp)
        pem_path = work / "ca.pem"
        pem_path.write_text(pem)
        table = work / "fctry.csv"
        write_csv(table, url, pem_path, computed, pubkey_hex, board)
        image = work / "fctry.bin"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "esp_idf_nvs_partition_gen",
                "generate",
                str(table),
                str(image),
                hex(size),
            ],
            capture_output=True,
            text=True,
            cwd=work,
            check=False,
        )
        # The generator exits 0 on some errors (it prints and stops): trust only the file.
        if result.returncode != 0 or not image.exists() or image.stat().st_size != size:
            raise BadInput("esp-idf-nvs-partition-gen failed:\n" + result.stdout + result.stderr)
        out.write_bytes(image.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway-url", required=True)
    parser.add_argument("--ca-pem", required=True, type=Path, help="microclaw-gateway ca-pin --pem > ca.pem")
    parser.add_argument("--ca-pin", help="microclaw-gateway ca-pin (checked against --ca-pem)")
    parser.add_argument("--ota-pubkey", required=True, help="raw ed25519 public key, 64 hex digits")
    parser.add_argument("--board", default=BOARD)
    parser.add_argument("--size", default=hex(DEFAULT_SIZE), help="partition size (default: fctry's)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        pem = args.ca_pem.read_text()
        build(
            args.gateway_url,
            pem,
            args.ca_pin,
            args.ota_pubkey,
            args.out,
            board=args.board,
            size=int(args.size, 0),
        )
    except (BadInput, OSError, ValueError) as exc:
        print(f"factory_nvs: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, namespace {NAMESPACE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
