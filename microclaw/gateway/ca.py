"""The local device CA: an ECDSA P-256 root created at first start, the gateway's server
certificate, and client certificates signed from devices' CSRs.

P-256 because mbedTLS on the ESP32-S3 verifies it (no Ed25519 in X.509 there). Files live in
``<data_dir>/gateway/``: ``ca.key`` and ``server.key`` are 0600 in a 0700 directory; the CA
certificate is what firmware is provisioned with (`pin` is the SHA-256 of its public key, for
display and checks). The server certificate is re-issued when the configured SANs change.

This module does not decide who may get a certificate (`microclaw.gateway.pairing` does) and
does not track revocation (the app database does, by fingerprint).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from microclaw.private import private_dir, write_private

CA_NAME = "MicroClaw device CA"
SERVER_DAYS = 825


class CsrRejected(ValueError):
    """A CSR the CA will not sign; the message says why (sent to the device)."""


@dataclass(frozen=True)
class IssuedCert:
    pem: str
    serial: str  # hex
    fingerprint: str  # sha256 of the DER, hex


def fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER encoding, lower-case hex (what the devices table stores)."""
    return hashlib.sha256(der).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(tz=dt.UTC)


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class DeviceCA:
    """The CA on disk. `load_or_create` is the only constructor processes use."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.directory = directory
        self.key = key
        self.cert = cert

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert_path(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key_path(self) -> Path:
        return self.directory / "server.key"

    @property
    def ca_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def load_or_create(
        cls, directory: Path, *, sans: tuple[str, ...] = ("localhost", "127.0.0.1")
    ) -> DeviceCA:
        """The CA in ``directory`` (created 0700 with a new key on first use), with a server
        certificate for ``sans`` that is present and current."""
        private_dir(directory)
        key_path, cert_path = directory / "ca.key", directory / "ca.pem"
        if key_path.exists() and cert_path.exists():
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: not an EC private key")
            ca = cls(directory, loaded, x509.load_pem_x509_certificate(cert_path.read_bytes()))
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
            now = _now()
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=3650 * 3))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256())
            )
            write_private(key_path, _key_pem(key))
            write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode())
            ca = cls(directory, key, cert)
        ca._ensure_server_cert(sans)
        return ca

    def pin(self) -> str:
        """``sha256/<base64>`` of the CA's SubjectPublicKeyInfo (for provisioning and display)."""
        spki = self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def _ensure_server_cert(self, sans: tuple[str, ...]) -> None:
        path = self.server_cert_path
        if path.exists() and self.server_key_path.exists():
            current = x509.load_pem_x509_certificate(path.read_bytes())
            have = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            fresh = current.not_valid_after_utc - _now() > dt.timedelta(days=30)
            if have == _san(sans) and fresh and current.issuer == self.cert.subject:
                return
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "microclaw-gateway")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(_san(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        write_private(self.server_key_path, _key_pem(key))
        write_private(path, cert.public_bytes(serialization.Encoding.PEM).decode())

    def sign_csr(self, csr_pem: str, *, device_id: str, days: int) -> IssuedCert:
        """A client certificate for ``device_id`` (subject CN) from the device's CSR.

        `CsrRejected` when the CSR does not parse, its signature does not verify (the device
        does not hold the key), its key is not P-256, or its subject names another device.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except (ValueError, UnicodeEncodeError):
            raise CsrRejected("the CSR is not a PEM certificate request") from None
        try:
            valid = csr.is_signature_valid
        except (InvalidSignature, ValueError):
            valid = False
        if not valid:
            raise CsrRejected("the CSR's signature does not verify")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise CsrRejected("the CSR's key must be ECDSA P-256")
        names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [device_id]:
            raise CsrRejected(f"the CSR's subject must be CN={device_id}")
        now = _now()
        serial = int.from_bytes(secrets.token_bytes(16), "big") >> 1
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        return IssuedCert(
            cert.public_bytes(serialization.Encoding.PEM).decode(), format(serial, "x"), fingerprint(der)
        )

    def server_context(self) -> ssl.SSLContext:
        """TLS for the gateway port: client certificates optional (pairing has none) but, when
        sent, verified against this CA only; the session handler then requires one."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.server_cert_path, self.server_key_path)
        ctx.load_verify_locations(cadata=self.ca_pem)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx


def peer_identity(der: bytes | None) -> tuple[str, str] | None:
    """``(common name, fingerprint)`` of a verified peer certificate, None without one."""
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    cn = names[0] if len(names) == 1 and isinstance(names[0], str) else ""
    return cn, fingerprint(der)
