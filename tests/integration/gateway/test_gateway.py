"""The device gateway as a real process over real TLS: pairing, mutual-TLS sessions, replay,
acks, revocation and the limits on what an unauthenticated or misbehaving peer can do.

Devices are `DeviceSimulator`s speaking the exact protocol; attackers are raw WebSocket and
socket clients. Messages land in the real app database through the real inbound path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage

from microclaw.gateway.ca import DeviceCA
from microclaw.gateway.simulator import DeviceSimulator, make_csr
from microclaw.store.db import read_tx
from tests.integration.gateway.harness import GatewayRig

pytestmark = pytest.mark.slow

REFUSED = (ssl.SSLError, ConnectionClosed, InvalidHandshake, InvalidMessage, OSError, EOFError)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def stored_messages(rig: GatewayRig, chat: str) -> list[tuple[str, str]]:
    with read_tx(rig.stack.engine) as conn:
        rows = conn.execute(
            text("SELECT id, content FROM messages WHERE chat_jid = :c ORDER BY seq"), {"c": chat}
        ).all()
    return [(r[0], r[1]) for r in rows]


def audit_rows(rig: GatewayRig, kind: str) -> list[dict[str, Any]]:
    with read_tx(rig.stack.engine) as conn:
        rows = conn.execute(
            text("SELECT decision, detail FROM audit_log WHERE kind = :k ORDER BY id"), {"k": kind}
        ).all()
    return [{"decision": r[0], **json.loads(r[1] or "{}")} for r in rows]


async def hello(ws: ClientConnection, sim: DeviceSimulator, last_seen: int = 0) -> dict[str, Any]:
    await ws.send(
        json.dumps({"type": "device.hello", "device_id": sim.device_id, "last_seen_seq": last_seen})
    )
    return dict(json.loads(await ws.recv()))


async def recv_type(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == kind:
            return dict(frame)


async def with_session(sim: DeviceSimulator, body: Callable[[], Awaitable[Any]]) -> Any:
    stop = asyncio.Event()
    task = asyncio.create_task(sim.run(stop))
    try:
        await asyncio.wait_for(sim.connected.wait(), 15)
        return await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


# --- pairing ----------------------------------------------------------------------------


def test_pairing_end_to_end_then_messages_are_stored_once_and_acked(rig: GatewayRig) -> None:
    async def scenario() -> DeviceSimulator:
        sim = await rig.paired("kitchen-1")

        async def talk() -> None:
            first = sim.send_text("turn on the lights", message_id="m-1")
            await until(lambda: first in sim.acks, "the ack")

        await with_session(sim, talk)
        return sim

    sim = run(scenario())
    assert sim.acks == {"m-1": "stored"}
    assert stored_messages(rig, "dev:kitchen-1") == [("dev:kitchen-1:m-1", "turn on the lights")]
    cert = x509.load_pem_x509_certificate(sim.nvs.data["cert_pem"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kitchen-1"
    assert "PRIVATE KEY" not in rig.stack.logs()
    listing = rig.cli("list")
    assert "kitchen-1" in listing.stdout and "sim-1.0.0" in listing.stdout and "active" in listing.stdout


def test_wrong_and_reused_codes_and_tokens_and_a_csr_for_another_id_are_refused(rig: GatewayRig) -> None:
    wrong = rig.cli("claim", "ZZZZ-ZZZZ", "--name", "X")
    assert wrong.returncode != 0 and "unknown_code" in wrong.stdout + wrong.stderr

    async def scenario() -> dict[str, str]:
        seen: dict[str, str] = {}
        async with connect(rig.url, ssl=rig.plain_tls(), compression=None) as ws:

            async def ask(request: dict[str, Any]) -> dict[str, Any]:
                await ws.send(json.dumps(request))
                return dict(json.loads(await ws.recv()))

            begun = await ask({"type": "pair.begin", "device_id": "hall-1"})
            assert begun["type"] == "pair.code"
            assert (await ask({"type": "pair.poll", "code": begun["code"], "secret": begun["secret"]}))[
                "type"
            ] == "pair.pending"
            await asyncio.to_thread(rig.claim, begun["code"], "Hall")
            again = await asyncio.to_thread(rig.cli, "claim", begun["code"], "--name", "Other")
            seen["claim again"] = again.stdout + again.stderr
            stolen = await ask({"type": "pair.poll", "code": begun["code"], "secret": "x" * 32})
            seen["wrong secret"] = stolen["code"]
            token = (await ask({"type": "pair.poll", "code": begun["code"], "secret": begun["secret"]}))[
                "token"
            ]
            key = ec.generate_private_key(ec.SECP256R1())
            seen["bad token"] = (
                await ask({"type": "pair.csr", "token": "y" * 40, "csr": make_csr("hall-1", key)})
            )["code"]
            other = await ask({"type": "pair.csr", "token": token, "csr": make_csr("kitchen-1", key)})
            seen["csr for another id"] = other["code"]
            reused = await ask({"type": "pair.csr", "token": token, "csr": make_csr("hall-1", key)})
            seen["reused token"] = reused["code"]
        return seen

    seen = run(scenario())
    assert "already_claimed" in seen.pop("claim again")
    assert seen == {
        "wrong secret": "unknown_code",
        "bad token": "bad_token",
        "csr for another id": "bad_csr",
        "reused token": "token_used",
    }
    listing = rig.cli("list")
    assert "hall-1" not in listing.stdout and "kitchen-1" not in listing.stdout
    reasons = [r.get("reason") for r in audit_rows(rig, "device.pair.csr")]
    assert (
        "the CSR's subject must be CN=hall-1" in reasons and "this pairing token was already used" in reasons
    )


# --- who may hold a session -------------------------------------------------------------


def _self_signed(device_id: str, directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    now = dt.datetime.now(tz=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "self.crt", directory / "self.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _rogue_ca_cert(device_id: str, directory: Path) -> tuple[Path, Path]:
    rogue = DeviceCA.load_or_create(directory / "rogue-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    issued = rogue.sign_csr(make_csr(device_id, key), device_id=device_id, days=1)
    cert_path, key_path = directory / "rogue.crt", directory / "rogue.key"
    cert_path.write_text(issued.pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def _attempt_session(rig: GatewayRig, device_id: str, cert: tuple[Path, Path]) -> list[dict[str, Any]]:
    """Connect with ``cert``, say hello, send a message; every frame the gateway answered."""
    ctx = rig.plain_tls()
    ctx.load_cert_chain(*cert)
    got: list[dict[str, Any]] = []
    async with connect(rig.url, ssl=ctx, compression=None, open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "device.hello", "device_id": device_id, "last_seen_seq": 0}))
        await ws.send(json.dumps({"type": "message", "message_id": "evil-1", "text": "hi"}))
        async for raw in ws:
            got.append(json.loads(raw))
    return got


@pytest.mark.parametrize("forge", [_self_signed, _rogue_ca_cert], ids=["self-signed", "rogue-CA"])
def test_client_certificates_not_issued_by_the_device_ca_get_nothing(
    rig: GatewayRig, tmp_path: Path, forge: Callable[[str, Path], tuple[Path, Path]]
) -> None:
    async def scenario() -> None:
        sim = await rig.paired("kitchen-1")  # the id exists; only the certificate is forged
        del sim
        cert = forge("kitchen-1", tmp_path / "forged")
        try:
            got = await _attempt_session(rig, "kitchen-1", cert)
        except REFUSED:
            got = []
        assert got == []

    run(scenario())
    assert stored_messages(rig, "dev:kitchen-1") == []


def test_a_revoked_device_is_disconnected_and_refused_from_then_on(rig: GatewayRig) -> None:
    async def scenario() -> DeviceSimulator:
        sim = await rig.paired("kitchen-1")
        ctx = sim.ssl_context()
        async with connect(rig.url, ssl=ctx, compression=None) as ws:
            assert (await hello(ws, sim))["type"] == "welcome"
            revoked = await asyncio.to_thread(rig.cli, "revoke", "kitchen-1")
            assert revoked.returncode == 0, revoked.stderr
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    async for _ in ws:
                        pass
                    raise ConnectionClosed(ws.close_rcvd, ws.close_sent)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        try:
            got = await _attempt_session(
                rig, "kitchen-1", (sim.nvs.path.with_suffix(".crt"), sim.nvs.path.with_suffix(".key"))
            )
        except REFUSED:
            got = []
        assert got == []
        return sim

    run(scenario())
    assert stored_messages(rig, "dev:kitchen-1") == []
    assert "revoked" in rig.cli("list").stdout
    assert any(r["decision"] == "deny" for r in audit_rows(rig, "device.session"))


def test_the_device_refuses_an_impostor_gateway(rig: GatewayRig, make_stack: Any, tmp_path: Path) -> None:
    """Another gateway (its own CA) on another port: the device's pinned CA does not trust it."""
    from tests.integration.gateway.harness import gateway_env

    impostor = GatewayRig(make_stack(**gateway_env(), MICROCLAW_DATA_DIR=str(tmp_path / "impostor")))
    impostor.start()

    async def scenario() -> None:
        sim = await rig.paired("kitchen-1")
        sim.url = impostor.url
        with pytest.raises(ssl.SSLCertVerificationError):
            await sim.session(asyncio.Event())
        naive = rig.device("hall-1")
        naive.url = impostor.url
        with pytest.raises(ssl.SSLCertVerificationError):
            await naive.pair(lambda code: None)

    run(scenario())


# --- replay, acks, crashes --------------------------------------------------------------


def test_replay_after_a_disconnect_has_no_gap_and_no_duplicate(rig: GatewayRig) -> None:
    log = rig.log

    async def scenario() -> DeviceSimulator:
        sim = await rig.paired("kitchen-1")
        for i in range(1, 6):
            log.append("kitchen-1", "message", {"text": f"offline {i}"}, idempotency_key=f"a{i}")

        async def first() -> None:
            await until(lambda: len(sim.events) == 5, "the replay")
            for i in range(6, 9):
                log.append("kitchen-1", "message", {"text": f"live {i}"}, idempotency_key=f"a{i}")
            await until(lambda: len(sim.events) == 8, "the stream")

        await with_session(sim, first)
        for i in range(9, 15):
            log.append("kitchen-1", "message", {"text": f"missed {i}"}, idempotency_key=f"a{i}")
        log.append("kitchen-1", "message", {"text": "dup"}, idempotency_key="a3")  # a retried send

        async def second() -> None:
            await until(lambda: len(sim.events) == 14, "the second replay")

        await with_session(sim, second)
        return sim

    sim = run(scenario())
    assert [e["seq"] for e in sim.events] == list(range(1, 15))
    assert sim.gaps == [] and sim.duplicates == 0
    assert sim.events[2]["body"] == {"text": "offline 3"}


def test_a_duplicate_message_id_is_stored_once_and_acked_both_times(rig: GatewayRig) -> None:
    async def scenario() -> list[dict[str, Any]]:
        sim = await rig.paired("kitchen-1")
        async with connect(rig.url, ssl=sim.ssl_context(), compression=None) as ws:
            await hello(ws, sim)
            acks = []
            for _ in range(2):
                await ws.send(json.dumps({"type": "message", "message_id": "same-1", "text": "hello"}))
                acks.append(await recv_type(ws, "ack"))
            return acks

    acks = run(scenario())
    assert [a["status"] for a in acks] == ["stored", "duplicate"]
    assert stored_messages(rig, "dev:kitchen-1") == [("dev:kitchen-1:same-1", "hello")]


def test_sigkill_of_the_gateway_mid_stream_loses_nothing_and_repeats_nothing(rig: GatewayRig) -> None:
    log = rig.log
    total = 40

    async def scenario() -> DeviceSimulator:
        sim = await rig.paired("kitchen-1", queue_limit=total)
        stop = asyncio.Event()
        task = asyncio.create_task(sim.run(stop))
        await asyncio.wait_for(sim.connected.wait(), 15)
        for i in range(total):
            sim.send_text(f"up {i}", message_id=f"u{i}")
            log.append("kitchen-1", "message", {"text": f"down {i}"}, idempotency_key=f"d{i}")
            if i == total // 2:
                await asyncio.to_thread(rig.kill)  # mid-stream: frames in flight both ways
                await asyncio.to_thread(rig.start)
            await asyncio.sleep(0.01)
        await until(lambda: len(sim.events) == total and not sim.queue, "everything to arrive", 60)
        stop.set()
        await asyncio.wait_for(task, 15)
        return sim

    sim = run(scenario())
    assert [e["seq"] for e in sim.events] == list(range(1, total + 1))
    assert sim.gaps == [] and sim.duplicates == 0 and sim.dropped == 0
    assert [m[0] for m in stored_messages(rig, "dev:kitchen-1")] == [
        f"dev:kitchen-1:u{i}" for i in range(total)
    ]


# --- hostile and idle peers -------------------------------------------------------------


def test_garbage_binary_and_oversized_frames_before_auth_close_the_connection(rig: GatewayRig) -> None:
    async def closes_with(payload: str | bytes) -> tuple[int | None, list[dict[str, Any]]]:
        got: list[dict[str, Any]] = []
        async with connect(rig.url, ssl=rig.plain_tls(), compression=None, max_size=2**20) as ws:
            await ws.send(payload)
            try:
                async for raw in ws:
                    got.append(json.loads(raw))
            except ConnectionClosed:
                pass
            return ws.close_code, got

    async def scenario() -> dict[str, Any]:
        return {
            "garbage": await closes_with("{not json"),
            "binary": await closes_with(b"\x00\xff" * 10),
            "session frame": await closes_with(
                json.dumps({"type": "message", "message_id": "a", "text": "x"})
            ),
            "oversized": await closes_with(json.dumps({"type": "pair.begin", "device_id": "a" * 6000})),
        }

    results = run(scenario())
    assert results["garbage"] == (
        4400,
        [{"type": "error", "code": "bad_json", "detail": "the frame is not valid JSON"}],
    )
    assert results["binary"][0] == 4400 and results["binary"][1][0]["code"] == "binary_unsupported"
    assert results["session frame"][0] == 4400 and results["session frame"][1][0]["code"] == "unexpected_type"
    assert results["oversized"] == (1009, [])
    assert stored_messages(rig, "dev:a") == []


def test_garbage_and_binary_frames_after_auth_get_errors_and_the_session_goes_on(rig: GatewayRig) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        sim = await rig.paired("kitchen-1")
        answers = []
        async with connect(rig.url, ssl=sim.ssl_context(), compression=None, max_size=2**20) as ws:
            await hello(ws, sim)
            for bad in (
                "{not json",
                b"\x00\x01audio?",
                json.dumps({"type": "message", "message_id": "../x", "text": "t"}),
            ):
                await ws.send(bad)
                answers.append(await recv_type(ws, "error"))
            await ws.send(json.dumps({"type": "message", "message_id": "ok-1", "text": "still here"}))
            answers.append(await recv_type(ws, "ack"))
            await ws.send(json.dumps({"type": "message", "message_id": "big", "text": "x" * 200_000}))
            with pytest.raises(ConnectionClosed):
                await recv_type(ws, "ack")
            big_close = ws.close_code
        async with connect(rig.url, ssl=sim.ssl_context(), compression=None) as ws:  # still serving
            assert (await hello(ws, sim))["type"] == "welcome"
        return answers, big_close

    answers, big_close = run(scenario())
    # Binary frames in a session are audio: refused outside a listen (see test_voice.py).
    assert [a.get("code") for a in answers[:3]] == ["bad_json", "no_listen", "bad_frame"]
    assert answers[3] == {"type": "ack", "message_id": "ok-1", "status": "stored"}
    assert big_close == 1009
    assert stored_messages(rig, "dev:kitchen-1") == [("dev:kitchen-1:ok-1", "still here")]


def test_slow_clients_cannot_hold_pre_auth_sockets(make_stack: Any) -> None:
    """A TCP peer that never starts TLS, and a WebSocket peer that never sends a frame, are both
    closed by the gateway on its own (handshake_timeout_s = 2, preauth_timeout_s = 3)."""
    from tests.integration.gateway.harness import gateway_env

    rig = GatewayRig(make_stack(**{**gateway_env(), "MICROCLAW_GATEWAY__PREAUTH_TIMEOUT_S": "3"}))
    rig.start()
    silent = socket.create_connection(("127.0.0.1", rig.port))
    silent.settimeout(30)
    assert silent.recv(1) == b""  # closed by the server, not by our timeout
    silent.close()

    async def idle_websocket() -> int | None:
        async with connect(rig.url, ssl=rig.plain_tls(), compression=None) as ws:
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(30):
                    await ws.recv()
            return ws.close_code

    assert run(idle_websocket()) == 4408


def test_a_healthy_idle_device_is_kept_alive_by_pings(rig: GatewayRig) -> None:
    """ping_interval_s = 0.3: over many intervals of silence the session stays up and usable."""

    async def scenario() -> dict[str, Any]:
        sim = await rig.paired("kitchen-1")
        async with connect(rig.url, ssl=sim.ssl_context(), compression=None, ping_interval=None) as ws:
            await hello(ws, sim)
            await asyncio.sleep(3)  # ten ping intervals, more than the pre-auth and hello limits
            await ws.send(json.dumps({"type": "message", "message_id": "after-idle", "text": "still here"}))
            return await recv_type(ws, "ack")

    assert run(scenario())["status"] == "stored"


def test_pairing_codes_are_rate_limited_per_address_and_pre_auth_connections_are_capped(
    make_stack: Any,
) -> None:
    from tests.integration.gateway.harness import gateway_env

    rig = GatewayRig(
        make_stack(
            **{
                **gateway_env(),
                "MICROCLAW_GATEWAY__PAIR_BEGIN_PER_MINUTE": "3",
                "MICROCLAW_GATEWAY__MAX_PREAUTH_CONNECTIONS": "2",
                "MICROCLAW_GATEWAY__PREAUTH_TIMEOUT_S": "30",
            }
        )
    )
    rig.start()

    async def scenario() -> tuple[list[str], int | None]:
        answers = []
        for i in range(5):
            async with connect(rig.url, ssl=rig.plain_tls(), compression=None) as ws:
                await ws.send(json.dumps({"type": "pair.begin", "device_id": f"spray-{i}"}))
                answer = json.loads(await ws.recv())
                answers.append(answer["type"] if answer["type"] != "error" else answer["code"])
        held = [await connect(rig.url, ssl=rig.plain_tls(), compression=None) for _ in range(2)]
        for ws in held:  # both are really being served
            await ws.send(json.dumps({"type": "pair.poll", "code": "AAAA-AAAA", "secret": "s" * 20}))
            assert json.loads(await ws.recv())["code"] == "unknown_code"
        async with connect(rig.url, ssl=rig.plain_tls(), compression=None) as third:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(third.recv(), 10)
            code = third.close_code
        for ws in held:
            await ws.close()
        return answers, code

    answers, third_close = run(scenario())
    assert answers[:3] == ["pair.code"] * 3
    assert answers[3:] == ["rate_limited", "rate_limited"]
    assert [r["reason"] for r in audit_rows(rig, "device.pair.begin")][3:] == ["rate_limited"] * 2
    assert third_close == 4429
