"""The device CA on disk: key modes, reuse, server certificate SANs, CSR checks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from microclaw.gateway.ca import CsrRejected, DeviceCA
from microclaw.gateway.simulator import make_csr


def test_created_once_with_private_keys_and_reused(tmp_path: Path, umask_022: None) -> None:
    ca = DeviceCA.load_or_create(tmp_path / "gw")
    for name in ("ca.key", "server.key", "ca.pem", "server.pem"):
        assert stat.S_IMODE((tmp_path / "gw" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "gw").stat().st_mode) == 0o700
    again = DeviceCA.load_or_create(tmp_path / "gw")
    assert again.pin() == ca.pin() and again.pin().startswith("sha256/")
    assert isinstance(ca.cert.public_key(), ec.EllipticCurvePublicKey)


def test_server_certificate_follows_the_configured_sans(tmp_path: Path) -> None:
    DeviceCA.load_or_create(tmp_path / "gw", sans=("localhost",))
    ca = DeviceCA.load_or_create(tmp_path / "gw", sans=("gw.lan", "192.168.1.5"))
    cert = x509.load_pem_x509_certificate(ca.server_cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.lan"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.168.1.5"]


def test_sign_csr_checks_subject_key_type_and_signature(tmp_path: Path) -> None:
    ca = DeviceCA.load_or_create(tmp_path / "gw")
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.sign_csr(make_csr("desk-1", key), device_id="desk-1", days=10)
    cert = x509.load_pem_x509_certificate(issued.pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "desk-1"
    assert cert.issuer == ca.cert.subject and cert.public_key() == key.public_key()
    with pytest.raises(CsrRejected, match="CN=desk-1"):
        ca.sign_csr(make_csr("desk-2", key), device_id="desk-1", days=10)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "desk-1")]))
        .sign(rsa_key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(CsrRejected, match="P-256"):
        ca.sign_csr(rsa_csr.public_bytes(serialization.Encoding.PEM).decode(), device_id="desk-1", days=10)
    with pytest.raises(CsrRejected, match="not a PEM"):
        ca.sign_csr(
            "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n",
            device_id="desk-1",
            days=1,
        )
