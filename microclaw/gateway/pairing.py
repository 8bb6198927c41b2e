"""Pairing: a device shows a code, the user claims it, the device trades a single-use token and
a CSR for a client certificate.

    device                         gateway / user
    pair.begin {device_id}   ->    code (shown on the device) + secret (kept by the device)
                                   user: `microclaw device claim CODE --name N`
    pair.poll {code, secret} ->    pending | token (single use, token_ttl_s)
    pair.csr {token, csr}    ->    certificate (CN = device_id), fingerprint recorded,
                                   chat dev:<id> registered as a group

The device's key never leaves it: the gateway only ever sees its CSR, and signs it only when
the CSR proves possession of the key and names the device the code was issued to. Codes expire
(code_ttl_s) and are rate-limited per peer address and in total; the poll secret means that
reading the code off the screen is not enough to collect the token; a token is spent by its
first use, good or bad. Every decision is an audit row (``device.pair.*``, ``device.claim``).

This module holds the rules and runs their transactions; the statements are in
`microclaw.store.devices`, the certificate work in `microclaw.gateway.ca`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from microclaw.gateway.ca import CsrRejected, DeviceCA, IssuedCert
from microclaw.store import audit, devices, groups
from microclaw.store.db import write_tx

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
CODE_LENGTH = 8


class PairingError(Exception):
    """A pairing step refused; ``code`` is stable (sent to the device / printed by the CLI)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class PairingLimits:
    code_ttl_s: float = 300.0
    token_ttl_s: float = 120.0
    begin_per_minute: int = 6
    max_open: int = 50
    cert_days: int = 3650


@dataclass(frozen=True)
class Begun:
    code: str
    secret: str
    expires_in_s: float


@dataclass(frozen=True)
class Paired:
    device_id: str
    name: str
    chat_jid: str
    folder: str
    cert: IssuedCert


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalize_code(code: str) -> str:
    """What the user typed, as stored: upper case, dashes and spaces dropped."""
    return "".join(ch for ch in code.upper() if ch not in "- ")


def display_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def chat_of(device_id: str) -> str:
    return f"dev:{device_id}"


def folder_of(device_id: str) -> str:
    return f"dev_{device_id}"


def _ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


@dataclass
class RateLimiter:
    """At most ``per_minute`` events per key in any 60 s window (clock injected)."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        now = self.clock()
        window = self._seen.setdefault(key, deque())
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= self.per_minute:
            return False
        window.append(now)
        if len(self._seen) > 10_000:  # bounded memory under an address-spraying peer
            self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] < 60.0}
        return True


class Pairing:
    """The gateway's side of pairing (the CLI's side is `claim`)."""

    def __init__(
        self,
        engine: Engine,
        ca: DeviceCA,
        limits: PairingLimits,
        *,
        trigger: str,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.ca = ca
        self.limits = limits
        self.trigger = trigger
        self.clock = clock
        self.limiter = RateLimiter(limits.begin_per_minute, monotonic)

    def begin(self, device_id: str, peer: str) -> Begun:
        """A fresh code for ``device_id``; `PairingError` when rate-limited, too many pairings
        are open, or the device is already paired (revoke it first)."""
        now = _ms(self.clock)
        if not self.limiter.allow(peer):
            audit.record_now(
                self.engine,
                "device.pair.begin",
                decision="deny",
                device_id=device_id,
                peer=peer,
                reason="rate_limited",
            )
            raise PairingError("rate_limited", "too many pairing attempts from this address; wait a minute")
        secret = secrets.token_urlsafe(24)
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        expires = now + int(self.limits.code_ttl_s * 1000)
        refusal: PairingError | None = None
        with write_tx(self.engine) as conn:
            devices.delete_expired_pairings(conn, now - 86_400_000)
            existing = devices.get_device(conn, device_id)
            if existing is not None and existing.status == devices.ACTIVE:
                refusal = PairingError(
                    "already_paired", "this device is paired; revoke it before pairing again"
                )
            elif devices.count_open_pairings(conn, now) >= self.limits.max_open:
                refusal = PairingError("busy", "too many pairings are open; try again later")
            else:
                devices.add_pairing(
                    conn,
                    code=code,
                    device_id=device_id,
                    secret_hash=_hash(secret),
                    now_ms=now,
                    expires_at_ms=expires,
                )
            audit.record(
                conn,
                "device.pair.begin",
                decision="deny" if refusal else "allow",
                device_id=device_id,
                peer=peer,
                reason=refusal.code if refusal else None,
            )
        if refusal is not None:
            raise refusal
        return Begun(code, secret, self.limits.code_ttl_s)

    def poll(self, code: str, secret: str) -> str | None:
        """The token once the code is claimed (a new one each call, the last one alone valid),
        None while it is not; `PairingError` for an unknown code or wrong secret (the same
        answer, so a guess learns nothing) and for an expired code."""
        now = _ms(self.clock)
        token = secrets.token_urlsafe(32)
        with write_tx(self.engine) as conn:
            row = devices.get_pairing(conn, normalize_code(code))
            if row is None or not secrets.compare_digest(row.secret_hash, _hash(secret)):
                raise PairingError("unknown_code", "no pairing with this code and secret")
            if row.used_at_ms is not None:
                raise PairingError("token_used", "this pairing is finished")
            if row.claimed_at_ms is None:
                if row.expires_at_ms <= now:
                    raise PairingError("code_expired", "the code expired; start pairing again")
                return None
            devices.set_token(
                conn,
                row.code,
                token_hash=_hash(token),
                expires_at_ms=now + int(self.limits.token_ttl_s * 1000),
            )
        return token

    def redeem(self, token: str, csr_pem: str) -> Paired:
        """Spend ``token`` on a certificate for the CSR; `PairingError` for an unknown, expired
        or spent token, or a CSR the CA rejects (the token is spent either way)."""
        now = _ms(self.clock)
        refusal: PairingError | None = None
        paired: Paired | None = None
        with write_tx(self.engine) as conn:
            row = devices.pairing_by_token(conn, _hash(token))
            if row is None:
                refusal = PairingError("bad_token", "unknown pairing token")
            elif not devices.mark_used(conn, row.code, now):
                refusal = PairingError("token_used", "this pairing token was already used")
            elif row.token_expires_at_ms is None or row.token_expires_at_ms <= now:
                refusal = PairingError("token_expired", "the pairing token expired; start pairing again")
            else:
                try:
                    cert = self.ca.sign_csr(csr_pem, device_id=row.device_id, days=self.limits.cert_days)
                except CsrRejected as exc:
                    refusal = PairingError("bad_csr", str(exc))
                else:
                    paired = self._save(conn, row, cert, now)
            audit.record(
                conn,
                "device.pair.csr",
                decision="deny" if refusal else "allow",
                device_id=row.device_id if row else None,
                reason=refusal.detail if refusal else None,
                serial=paired.cert.serial if paired else None,
            )
        if refusal is not None:
            raise refusal
        assert paired is not None
        return paired

    def _save(self, conn: Connection, row: devices.PairingRow, cert: IssuedCert, now: int) -> Paired:
        name = row.name or row.device_id
        chat = chat_of(row.device_id)
        devices.save_device(
            conn,
            device_id=row.device_id,
            name=name,
            chat_jid=chat,
            cert_serial=cert.serial,
            cert_fingerprint=cert.fingerprint,
            now_ms=now,
        )
        if groups.get_group(conn, chat) is None:
            groups.register_group(
                conn,
                jid=chat,
                name=name,
                folder=folder_of(row.device_id),
                trigger=self.trigger,
                requires_trigger=False,
            )
        return Paired(row.device_id, name, chat, folder_of(row.device_id), cert)


def claim(engine: Engine, code: str, *, name: str, now_ms: int) -> devices.PairingRow:
    """The user vouches for the device showing ``code``; `PairingError` for an unknown,
    expired or already claimed code. Audited either way."""
    with write_tx(engine) as conn:
        row, refusal = record_claim(conn, code, name=name, now_ms=now_ms)
    if refusal is not None:
        raise refusal
    assert row is not None
    return row


def record_claim(
    conn: Connection, code: str, *, name: str, now_ms: int, **audit_detail: Any
) -> tuple[devices.PairingRow | None, PairingError | None]:
    """`claim` inside the caller's transaction (the agent's host tool fences its lease in the
    same one): the claimed pairing, or the refusal; the ``device.claim`` audit row either way
    (with ``audit_detail``). Never raises a refusal, so the audit row is committed with it."""
    key = normalize_code(code)
    row = devices.get_pairing(conn, key)
    refusal: PairingError | None = None
    if row is None:
        refusal = PairingError("unknown_code", f"no device is showing code {code!r}")
    elif row.expires_at_ms <= now_ms:
        refusal = PairingError("code_expired", "that code expired; restart pairing on the device")
    elif not devices.mark_claimed(conn, key, name=name, now_ms=now_ms):
        refusal = PairingError("already_claimed", "that code was already claimed")
    audit.record(
        conn,
        "device.claim",
        decision="deny" if refusal else "allow",
        device_id=row.device_id if row else None,
        reason=refusal.code if refusal else None,
        **audit_detail,
    )
    return (None if refusal else row), refusal
