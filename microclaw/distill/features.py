"""Hashed n-gram features: the model's input, computable the same way on the device.

Text -> lower-case ASCII, split into tokens of letters, digits and apostrophes (every run of
digits becomes ``0``, so unseen numbers look like seen ones); features are word unigrams
(``w:``), word bigrams (``b:``) and character trigrams of ``^token$`` (``c:``), each hashed with
32-bit FNV-1a into ``dim`` buckets. The input vector is int8 0/1 (present or not): the model's
input tensor is quantized with scale 1 and zero point 0, so these bytes go in unchanged.
Pure Python; numpy only builds the matrix.
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

_TOKEN = re.compile(r"[a-z0-9']+")
_DIGITS = re.compile(r"[0-9]+")
FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193


def fnv1a(data: bytes) -> int:
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return h


def tokens(text: str) -> list[str]:
    lowered = text.encode("ascii", "ignore").decode().lower()
    return [_DIGITS.sub("0", t) for t in _TOKEN.findall(lowered)]


def feature_strings(text: str) -> list[str]:
    words = tokens(text)
    feats = [f"w:{w}" for w in words]
    feats += [f"b:{a} {b}" for a, b in itertools.pairwise(words)]
    for w in words:
        padded = f"^{w}$"
        feats += [f"c:{padded[i : i + 3]}" for i in range(len(padded) - 2)]
    return feats


def buckets(text: str, dim: int) -> list[int]:
    """The sorted distinct buckets set to 1 for ``text``."""
    return sorted({fnv1a(f.encode()) % dim for f in feature_strings(text)})


def matrix(texts: list[str], dim: int) -> np.ndarray:
    """``len(texts) x dim`` int8 0/1 matrix."""
    import numpy as np

    out = np.zeros((len(texts), dim), dtype=np.int8)
    for row, text in enumerate(texts):
        out[row, buckets(text, dim)] = 1
    return out
