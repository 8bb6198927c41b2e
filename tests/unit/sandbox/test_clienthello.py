"""microclaw.sandbox.clienthello: the SNI of real ClientHellos made by Python's ssl (no network)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from microclaw.sandbox.clienthello import NotClientHello, read_client_hello, server_name


def client_hello(server_hostname: str | None) -> bytes:
    ctx = ssl.create_default_context()
    if server_hostname is None:
        ctx.check_hostname = False
    tls = ctx.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def parse(data: bytes) -> tuple[bytes, bytes]:
    async def run() -> tuple[bytes, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_client_hello(reader)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("api.example.com", "api.example.com"), ("API.Example.COM", "api.example.com"), ("127.0.0.1", None)],
)
def test_server_name_of_a_real_client_hello(name: str, expected: str | None) -> None:
    data = client_hello(name)
    raw, hello = parse(data)
    assert raw == data  # forwarded upstream unchanged
    assert server_name(hello) == expected


def test_a_hello_split_over_two_records_is_reassembled() -> None:
    data = client_hello("split.example")
    body = data[5:]
    half = len(body) // 2
    records = b"".join(
        bytes([0x16]) + data[1:3] + len(part).to_bytes(2, "big") + part for part in (body[:half], body[half:])
    )
    assert server_name(parse(records)[1]) == "split.example"


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes([0x16, 3, 1, 0, 4, 0x02, 0, 0, 0]),  # a ServerHello, not a ClientHello
        bytes([0x16, 3, 1, 0xFF, 0xFF]) + b"x",  # record larger than TLS allows
    ],
)
def test_anything_else_is_not_a_client_hello(data: bytes) -> None:
    with pytest.raises((NotClientHello, asyncio.IncompleteReadError)):
        parse(data)


def test_a_truncated_body_is_refused() -> None:
    _, hello = parse(client_hello("x.example"))
    with pytest.raises(NotClientHello):
        server_name(hello[:40])
