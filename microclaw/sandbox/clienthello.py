"""Reading the server name (SNI) from a TLS ClientHello, for the egress proxy's CONNECT check.

The egress proxy lets a CONNECT tunnel through only when the first bytes the client sends
are a TLS ClientHello whose SNI names the host the tunnel was allowed for (see
``egress.py``). This module is that parser: pure functions over bytes plus one small async
reader that collects the handshake message from the client's TLS records (a ClientHello may
span several records; the total is capped).

Does not: validate the rest of the handshake, see inside Encrypted Client Hello (only the
outer, cleartext SNI is visible: that is the one checked), or talk to the upstream.
"""

from __future__ import annotations

import asyncio
import struct

MAX_HELLO_BYTES = 64 * 1024
_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_EXT_SERVER_NAME = 0x0000
_HOST_NAME = 0x00


class NotClientHello(Exception):
    """The bytes are not a (well-formed, complete) TLS ClientHello."""


async def read_client_hello(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Read TLS records until one whole ClientHello is in; returns (raw records, hello body).

    The raw bytes are what must be forwarded upstream unchanged. Raises NotClientHello when
    the client speaks anything else, and asyncio.IncompleteReadError on early EOF.
    """
    raw = bytearray()
    message = bytearray()
    while True:
        header = await reader.readexactly(5)
        kind, _version, length = struct.unpack(">BHH", header)
        if kind != _HANDSHAKE or not 0 < length <= 16384 + 2048:
            raise NotClientHello("not a TLS handshake record")
        fragment = await reader.readexactly(length)
        raw += header + fragment
        message += fragment
        if len(raw) > MAX_HELLO_BYTES:
            raise NotClientHello("ClientHello too large")
        if len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                raise NotClientHello("first handshake message is not a ClientHello")
            size = int.from_bytes(message[1:4], "big")
            if len(message) >= 4 + size:
                return bytes(raw), bytes(message[4 : 4 + size])


def server_name(hello: bytes) -> str | None:
    """The host name in a ClientHello body's SNI extension (lowercased), or None when absent.

    Raises NotClientHello for a malformed body.
    """
    try:
        pos = 2 + 32  # legacy_version, random
        pos += 1 + hello[pos]  # session id
        pos += 2 + struct.unpack_from(">H", hello, pos)[0]  # cipher suites
        pos += 1 + hello[pos]  # compression methods
        if pos == len(hello):
            return None  # no extensions at all
        (ext_total,) = struct.unpack_from(">H", hello, pos)
        pos += 2
        end = pos + ext_total
        if end > len(hello):
            raise NotClientHello("extensions overrun the ClientHello")
        while pos + 4 <= end:
            ext_type, ext_len = struct.unpack_from(">HH", hello, pos)
            pos += 4
            if ext_type == _EXT_SERVER_NAME:
                return _host_name(hello[pos : pos + ext_len])
            pos += ext_len
        return None
    except (IndexError, struct.error) as exc:
        raise NotClientHello("truncated ClientHello") from exc


def _host_name(ext: bytes) -> str:
    (list_len,) = struct.unpack_from(">H", ext, 0)
    pos, end = 2, min(2 + list_len, len(ext))
    while pos + 3 <= end:
        name_type, name_len = struct.unpack_from(">BH", ext, pos)
        pos += 3
        if name_type == _HOST_NAME:
            name = ext[pos : pos + name_len]
            if len(name) != name_len:
                raise NotClientHello("truncated server name")
            try:
                return name.decode("ascii").lower().rstrip(".")
            except UnicodeDecodeError as exc:
                raise NotClientHello("server name is not ASCII") from exc
        pos += name_len
    raise NotClientHello("server_name extension without a host name")
