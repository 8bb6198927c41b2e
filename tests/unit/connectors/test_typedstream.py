"""microclaw/connectors/typedstream.py: the text inside an iMessage ``attributedBody``."""

from __future__ import annotations

import pytest

from microclaw.connectors.typedstream import decode_attributed_body
from tests.integration.connectors.chatdb import attributed_body

# Real blobs archived by NSArchiver on macOS (published as fixtures by other chat.db readers):
# "Hello, world" with one attribute run, and "Y" with a message-part attribute.
HELLO = bytes.fromhex(
    "040b73747265616d747970656481e803840140848484124e534174747269627574656453747269"
    "6e67008484084e534f626a656374008592848484084e53537472696e67019484012b0c48656c6c"
    "6f2c20776f726c648684026949010c928484840c4e5344696374696f6e6172790094840169008686"
)
Y = bytes.fromhex(
    "040b73747265616d747970656481e803840140848484124e5341747472696275746564537472696e"
    "67008484084e534f626a656374008592848484084e53537472696e67019484012b0159868402694901"
    "01928484840c4e5344696374696f6e617279009484016901928496961d5f5f6b494d4d657373616765"
    "506172744174747269627574654e616d658692848484084e534e756d626572008484074e5356616c75"
    "65009484012a84999900868686"
)


def test_real_blobs() -> None:
    assert decode_attributed_body(HELLO) == "Hello, world"
    assert decode_attributed_body(Y) == "Y"


def test_the_test_encoder_writes_what_macos_writes() -> None:
    assert attributed_body("Hello, world") == HELLO


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "x" * 127,  # the longest one-byte length
        "x" * 128,  # 0x81 + 16-bit length
        "y" * 70_000,  # 0x82 + 32-bit length
        "emoji 👋🏽 and ünïcödé, 中文, עברית",
        'quotes " and \\ backslashes\nand lines',
        "NSString inside the text +\x84\x01+ even",
    ],
)
def test_round_trip(text: str) -> None:
    assert decode_attributed_body(attributed_body(text)) == text


def test_attachment_placeholders_are_dropped() -> None:
    assert decode_attributed_body(attributed_body("\ufffccaption")) == "caption"
    assert decode_attributed_body(attributed_body("\ufffc")) is None


def test_mutable_string_variant() -> None:
    blob = HELLO.replace(b"\x84\x84\x08NSString", b"\x84\x84\x0fNSMutableString")
    assert decode_attributed_body(blob) == "Hello, world"


@pytest.mark.parametrize("blob", [None, b"", b"\x00", b"garbage", b"NSString", b"NSString\x01\x94\x84\x01+"])
def test_nothing_to_decode(blob: bytes | None) -> None:
    assert decode_attributed_body(blob) is None


def test_truncated_blobs_never_raise_and_keep_the_readable_prefix() -> None:
    blob = attributed_body("héllo wörld, a longer message " * 10)
    for cut in range(len(blob) + 1):
        result = decode_attributed_body(blob[:cut])
        assert result is None or ("héllo wörld, a longer message " * 10).startswith(result)
    start = blob.index(b"h\xc3\xa9llo")  # after the 0x81 + 16-bit length
    assert decode_attributed_body(blob[: start + 6]) == "héllo"
    assert decode_attributed_body(blob[: start + 2]) == "h"  # half of "é" is dropped, not garbled


def test_unknown_length_tags_are_not_guessed() -> None:
    blob = HELLO.replace(b"+\x0cHello", b"+\x83Hello")  # 0x83 introduces a float, not a length
    assert decode_attributed_body(blob) is None
