"""An independent reader of ESP-IDF NVS partition images (format version 2), for the tests.

It follows the layout ESP-IDF documents (4 KiB pages: a 32-byte header with a CRC, a 2-bit
entry state bitmap, 126 entries of 32 bytes each with their own CRC; strings span entries,
blobs are chunks plus an index) and checks every CRC, so a test can read back what
``esp-idf-nvs-partition-gen`` wrote without trusting the generator's own code.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

PAGE = 4096
ENTRIES = 126
U8, SZ, BLOB_DATA, BLOB_IDX = 0x01, 0x21, 0x42, 0x48
ACTIVE, FULL, EMPTY = 0xFFFFFFFE, 0xFFFFFFFC, 0xFFFFFFFF


class NvsFormatError(ValueError):
    pass


def _crc(data: bytes) -> int:
    return zlib.crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF


@dataclass
class Image:
    pages: int
    used_pages: int
    namespaces: dict[str, int]
    values: dict[tuple[str, str], bytes | str | int]


def read(image: bytes) -> Image:
    if len(image) % PAGE:
        raise NvsFormatError(f"size {len(image)} is not a multiple of {PAGE}")
    namespaces: dict[str, int] = {}
    raw: list[tuple[int, int, int, str, bytes]] = []  # ns, type, chunk, key, payload
    used = 0
    for start in range(0, len(image), PAGE):
        page = image[start : start + PAGE]
        state, _seq = struct.unpack_from("<II", page, 0)
        if state == EMPTY:
            continue
        if state not in (ACTIVE, FULL):
            raise NvsFormatError(f"page at {start:#x}: state {state:#x}")
        if page[8] != 0xFE:
            raise NvsFormatError(f"page at {start:#x}: version {page[8]:#x}, expected 0xfe (v2)")
        if struct.unpack_from("<I", page, 28)[0] != _crc(page[4:28]):
            raise NvsFormatError(f"page at {start:#x}: header CRC mismatch")
        used += 1
        bitmap = page[32:64]
        index = 0
        while index < ENTRIES:
            bits = (bitmap[index // 4] >> ((index % 4) * 2)) & 3
            if bits != 2:  # 3 empty, 0 erased: only "written" entries count
                index += 1
                continue
            at = 64 + index * 32
            entry = page[at : at + 32]
            ns, kind, span, chunk = entry[0], entry[1], entry[2], entry[3]
            if struct.unpack_from("<I", entry, 4)[0] != _crc(entry[0:4] + entry[8:32]):
                raise NvsFormatError(f"page at {start:#x} entry {index}: CRC mismatch")
            key = entry[8:24].split(b"\0", 1)[0].decode()
            if kind in (SZ, BLOB_DATA):
                size, _, crc = struct.unpack_from("<HHI", entry, 24)
                payload = page[at + 32 : at + 32 + size]
                if len(payload) != size or _crc(payload) != crc:
                    raise NvsFormatError(f"{key}: data CRC mismatch")
                raw.append((ns, kind, chunk, key, payload))
            elif kind == BLOB_IDX:
                size, count, first = struct.unpack_from("<IBB", entry, 24)
                raw.append((ns, kind, first, key, struct.pack("<IB", size, count)))
            elif kind == U8 and ns == 0:
                namespaces[key] = entry[24]
            elif kind == U8:
                raw.append((ns, kind, chunk, key, bytes(entry[24:25])))
            else:
                raise NvsFormatError(f"{key}: entry type {kind:#x} not handled by this reader")
            index += max(span, 1)
    names = {number: name for name, number in namespaces.items()}
    values: dict[tuple[str, str], bytes | str | int] = {}
    chunks: dict[tuple[int, str], dict[int, bytes]] = {}
    for ns, kind, chunk, key, payload in raw:
        if kind == BLOB_DATA:
            chunks.setdefault((ns, key), {})[chunk] = payload
    for ns, kind, chunk, key, payload in raw:
        if ns not in names:
            raise NvsFormatError(f"{key}: namespace index {ns} was never declared")
        where = (names[ns], key)
        if kind == SZ:
            if not payload.endswith(b"\0"):
                raise NvsFormatError(f"{key}: string without its terminating NUL")
            values[where] = payload[:-1].decode()
        elif kind == U8:
            values[where] = payload[0]
        elif kind == BLOB_IDX:
            size, count = struct.unpack("<IB", payload)
            parts = chunks.get((ns, key), {})
            blob = b"".join(parts[chunk + i] for i in range(count))
            if len(blob) != size:
                raise NvsFormatError(f"{key}: blob is {len(blob)} bytes, its index says {size}")
            values[where] = blob
    return Image(len(image) // PAGE, used, namespaces, values)
