"""The text of an iMessage ``attributedBody``: the NSString inside an NSArchiver typedstream.

Newer macOS versions leave ``message.text`` NULL and keep the body only as an archived
``NSAttributedString``. Its typedstream starts with ``\\x04\\x0bstreamtyped``; the string is the
first object of class ``NSString`` (or ``NSMutableString``), stored after the type tag
``\\x84\\x01+`` as a length-prefixed UTF-8 byte run. Lengths use typedstream's integer
encoding: one byte below 0x80, ``0x81`` + 2 bytes or ``0x82`` + 4 bytes little-endian.

This decoder reads only that string (not the attribute runs, mentions or links): it never
raises, returns None when no string can be found, and returns the readable prefix of a
truncated blob.
"""

from __future__ import annotations

_CLASS_NAMES = (b"NSMutableString", b"NSString")
_STRING_TAG = b"\x84\x01+"
# How far after the class name the string's type tag may appear (class version, superclass ref).
_TAG_WINDOW = 32


def _read_length(blob: bytes, pos: int) -> tuple[int, int] | None:
    """(length, position after it) for the typedstream integer at ``pos``."""
    if pos >= len(blob):
        return None
    head = blob[pos]
    if head < 0x80:
        return head, pos + 1
    if head == 0x81 and pos + 3 <= len(blob):
        return int.from_bytes(blob[pos + 1 : pos + 3], "little"), pos + 3
    if head == 0x82 and pos + 5 <= len(blob):
        return int.from_bytes(blob[pos + 1 : pos + 5], "little"), pos + 5
    return None


def _string_start(blob: bytes) -> int | None:
    """Index of the string's length prefix, or None."""
    for name in _CLASS_NAMES:
        at = blob.find(name)
        while at != -1:
            tag = blob.find(_STRING_TAG, at + len(name), at + len(name) + _TAG_WINDOW)
            if tag != -1:
                return tag + len(_STRING_TAG)
            at = blob.find(name, at + 1)
    return None


def decode_attributed_body(blob: bytes | bytearray | memoryview | None) -> str | None:
    """The plain text archived in ``blob``; None when there is none. Never raises."""
    if not blob:
        return None
    data = bytes(blob)
    start = _string_start(data)
    if start is None:
        return None
    header = _read_length(data, start)
    if header is None:
        return None
    length, begin = header
    payload = data[begin : begin + length]  # shorter than ``length`` when the blob is truncated
    text = payload.decode("utf-8", errors="ignore" if len(payload) < length else "replace")
    # U+FFFC marks where an attachment sits in the text; it carries no words.
    text = text.replace("\ufffc", "").replace("\x00", "")
    return text or None
