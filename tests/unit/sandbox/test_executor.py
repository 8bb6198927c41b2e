"""microclaw.sandbox.executor: the request/response wire format (the running half is tested
inside a real container, in tests/integration/sandbox)."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest

from microclaw.sandbox import executor
from microclaw.sandbox.executor import ProtocolError, Request, Response


def reader(data: bytes):
    pos = 0

    def read_exact(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ProtocolError("eof")
        pos += n
        return data[pos - n : pos]

    return read_exact


def test_request_round_trip() -> None:
    req = Request(
        ["sh", "-c", "echo é"], {"A": "1", "B": "x=y"}, "/workspace/group", 1500, 99, b"\x00stdin\xff"
    )
    back = executor.read_request(reader(executor.encode_request(req)))
    assert (back.argv, back.env, back.cwd, back.timeout_ms, back.max_output, back.stdin) == (
        req.argv,
        req.env,
        req.cwd,
        req.timeout_ms,
        req.max_output,
        req.stdin,
    )


def test_response_round_trip() -> None:
    res = Response(137, True, b"out", b"err", 10_000, 3, True, False, 1234)
    back = executor.read_response(reader(executor.encode_response(res)), max_output=100)
    assert (back.exit_code, back.timed_out, back.stdout, back.stderr) == (137, True, b"out", b"err")
    assert (back.stdout_total, back.stderr_total, back.stdout_truncated, back.duration_ms) == (
        10_000,
        3,
        True,
        1234,
    )


def test_response_over_the_cap_is_refused() -> None:
    frame = executor.encode_response(Response(0, stdout=b"x" * 50))
    with pytest.raises(ProtocolError):
        executor.read_response(reader(frame), max_output=10)


@pytest.mark.parametrize(
    "frame",
    [
        b"XXXX" + b"\x00" * 40,
        executor.REQUEST_MAGIC + struct.pack(">QQQ", 1, 1, 0) + struct.pack(">I", 0),  # empty argv, cut
        executor.REQUEST_MAGIC + struct.pack(">QQQ", 1, 1, 0) + struct.pack(">II", 1, 2**31),  # huge field
        executor.REQUEST_MAGIC + struct.pack(">QQQ", 1, 1, 2**40),  # huge stdin
    ],
)
def test_malformed_requests_raise(frame: bytes) -> None:
    with pytest.raises((ProtocolError, struct.error)):
        executor.read_request(reader(frame))


def test_executor_imports_only_what_python3_minimal_ships() -> None:
    """The file runs inside the container on Debian's python3.11-minimal (no dataclasses, json)."""
    tree = ast.parse(Path(executor.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    allowed = {
        "__future__",
        "contextlib",
        "os",
        "selectors",
        "signal",
        "socket",
        "struct",
        "subprocess",
        "sys",
    }
    allowed |= {"threading", "time"}
    allowed |= {"ctypes"}  # optional (not in python3-minimal): its ImportError is handled
    assert imported <= allowed, imported - allowed
