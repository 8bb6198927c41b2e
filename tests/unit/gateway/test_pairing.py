"""Pairing rules on a real SQLite database and a real CA, with the clock injected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, text

from microclaw.gateway.ca import DeviceCA
from microclaw.gateway.pairing import Pairing, PairingError, PairingLimits, RateLimiter, claim
from microclaw.gateway.simulator import make_csr
from microclaw.store import devices, groups
from microclaw.store.db import read_tx


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pairing(engine: Engine, tmp_path: Path, clock: Clock) -> Pairing:
    ca = DeviceCA.load_or_create(tmp_path / "ca")
    return Pairing(
        engine,
        ca,
        PairingLimits(code_ttl_s=60, token_ttl_s=30, begin_per_minute=3),
        trigger="@Andy",
        clock=clock,
        monotonic=clock,
    )


def csr(device_id: str) -> str:
    return make_csr(device_id, ec.generate_private_key(ec.SECP256R1()))


def claimed_token(pairing: Pairing, clock: Clock, device_id: str = "desk-1") -> str:
    begun = pairing.begin(device_id, "10.0.0.2")
    claim(pairing.engine, begun.code, name="Desk", now_ms=int(clock() * 1000))
    token = pairing.poll(begun.code, begun.secret)
    assert token is not None
    return token


def test_the_happy_path_registers_the_device_and_its_chat(pairing: Pairing, clock: Clock) -> None:
    begun = pairing.begin("desk-1", "10.0.0.2")
    assert pairing.poll(begun.code, begun.secret) is None  # not claimed yet
    claim(pairing.engine, begun.code.lower().replace("-", " "), name="Desk", now_ms=int(clock() * 1000))
    token = pairing.poll(begun.code, begun.secret)
    assert token is not None
    paired = pairing.redeem(token, csr("desk-1"))
    with read_tx(pairing.engine) as conn:
        row = devices.get_device(conn, "desk-1")
        group = groups.get_group(conn, "dev:desk-1")
        stored = conn.execute(text("SELECT secret_hash, token_hash FROM device_pairings")).one()
    assert row is not None and row.status == "active" and row.cert_fingerprint == paired.cert.fingerprint
    assert group is not None and group.folder == "dev_desk-1" and not group.requires_trigger
    assert begun.secret not in stored and token not in stored  # hashes only


def test_an_expired_code_can_be_neither_claimed_nor_polled(pairing: Pairing, clock: Clock) -> None:
    begun = pairing.begin("desk-1", "10.0.0.2")
    clock.now += 61
    with pytest.raises(PairingError) as refused:
        claim(pairing.engine, begun.code, name="Desk", now_ms=int(clock() * 1000))
    assert refused.value.code == "code_expired"
    with pytest.raises(PairingError) as polled:
        pairing.poll(begun.code, begun.secret)
    assert polled.value.code == "code_expired"


def test_an_expired_token_is_refused_and_spent(pairing: Pairing, clock: Clock) -> None:
    token = claimed_token(pairing, clock)
    clock.now += 31
    with pytest.raises(PairingError) as refused:
        pairing.redeem(token, csr("desk-1"))
    assert refused.value.code == "token_expired"
    with pytest.raises(PairingError) as again:
        pairing.redeem(token, csr("desk-1"))
    assert again.value.code == "token_used"


def test_a_token_is_spent_by_a_bad_csr(pairing: Pairing, clock: Clock) -> None:
    token = claimed_token(pairing, clock)
    with pytest.raises(PairingError) as refused:
        pairing.redeem(token, csr("someone-else"))
    assert refused.value.code == "bad_csr"
    with pytest.raises(PairingError) as again:
        pairing.redeem(token, csr("desk-1"))
    assert again.value.code == "token_used"
    with read_tx(pairing.engine) as conn:
        assert devices.get_device(conn, "desk-1") is None
        decisions = conn.execute(
            text("SELECT decision, detail FROM audit_log WHERE kind = 'device.pair.csr' ORDER BY id")
        ).all()
    assert [d[0] for d in decisions] == ["deny", "deny"]
    assert json.loads(decisions[0][1])["reason"] == "the CSR's subject must be CN=desk-1"


def test_a_new_poll_replaces_the_previous_token(pairing: Pairing, clock: Clock) -> None:
    begun = pairing.begin("desk-1", "10.0.0.2")
    claim(pairing.engine, begun.code, name="Desk", now_ms=int(clock() * 1000))
    first = pairing.poll(begun.code, begun.secret)
    second = pairing.poll(begun.code, begun.secret)
    assert first and second and first != second
    with pytest.raises(PairingError) as refused:
        pairing.redeem(first, csr("desk-1"))
    assert refused.value.code == "bad_token"
    assert pairing.redeem(second, csr("desk-1")).device_id == "desk-1"


def test_wrong_secret_looks_like_an_unknown_code(pairing: Pairing, clock: Clock) -> None:
    begun = pairing.begin("desk-1", "10.0.0.2")
    claim(pairing.engine, begun.code, name="Desk", now_ms=int(clock() * 1000))
    with pytest.raises(PairingError) as refused:
        pairing.poll(begun.code, "A" * 32)
    assert refused.value.code == "unknown_code"


def test_a_paired_device_cannot_pair_again_until_revoked(pairing: Pairing, clock: Clock) -> None:
    pairing.redeem(claimed_token(pairing, clock), csr("desk-1"))
    with pytest.raises(PairingError) as refused:
        pairing.begin("desk-1", "10.0.0.3")
    assert refused.value.code == "already_paired"


def test_begin_is_rate_limited_per_address_and_recovers(pairing: Pairing, clock: Clock) -> None:
    for i in range(3):
        pairing.begin(f"dev-{i}", "10.0.0.9")
    with pytest.raises(PairingError) as refused:
        pairing.begin("dev-x", "10.0.0.9")
    assert refused.value.code == "rate_limited"
    pairing.begin("dev-y", "10.0.0.10")  # another address is not affected
    clock.now += 60
    pairing.begin("dev-z", "10.0.0.9")


def test_open_pairings_are_capped(engine: Engine, tmp_path: Path, clock: Clock) -> None:
    ca = DeviceCA.load_or_create(tmp_path / "ca")
    small = Pairing(
        engine,
        ca,
        PairingLimits(max_open=2, begin_per_minute=100),
        trigger="@A",
        clock=clock,
        monotonic=clock,
    )
    small.begin("a-1", "p")
    small.begin("a-2", "p")
    with pytest.raises(PairingError) as refused:
        small.begin("a-3", "p")
    assert refused.value.code == "busy"


def test_rate_limiter_memory_is_bounded() -> None:
    t = [0.0]
    limiter = RateLimiter(1, lambda: t[0])
    for i in range(10_050):
        t[0] += 0.01
        limiter.allow(f"10.{i}")
    assert len(limiter._seen) <= 10_001
