"""Opt-in traces: what people actually said, from the app database, with personal data removed.

Only when asked (``microclaw distill label --traces``): human messages (not the assistant's, not
bot messages) of at most `MAX_CHARS` characters are read through a read-only SQLite connection
(the database is never written). `scrub` removes personal data before anything leaves this
module: e-mail addresses, URLs, @mentions, phone numbers and other long digit runs, and every
name the database knows (senders' display names, chat names, the assistant's name) are
replaced by neutral words; what is left is lower-cased and its whitespace normalised. Scrubbed
texts are what the teacher sees and what the dataset keeps; the originals are not stored.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

MAX_CHARS = 160

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_URL = re.compile(r"(https?://|www\.)\S+", re.I)
_MENTION = re.compile(r"@\w+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
_LONG_DIGITS = re.compile(r"\d{5,}")
# Words of chat names that are not names (kept, so "The Team" does not erase every "the").
_COMMON = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "our",
        "my",
        "your",
        "team",
        "family",
        "group",
        "chat",
        "home",
        "work",
        "friends",
        "main",
        "local",
        "device",
        "news",
    ]
)


def scrub(text: str, names: set[str]) -> str:
    """``text`` without personal data (see the module docstring)."""
    out = _EMAIL.sub(" email ", text)
    out = _URL.sub(" link ", out)
    out = _MENTION.sub(" ", out)
    out = _PHONE.sub(" number ", out)
    out = _LONG_DIGITS.sub(" number ", out)
    for name in sorted(names, key=len, reverse=True):
        out = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", " someone ", out, flags=re.I)
    return " ".join(out.lower().split())


def _names(db: sqlite3.Connection, assistant_name: str) -> set[str]:
    names = {assistant_name}
    for (value,) in db.execute(
        "SELECT sender_name FROM messages UNION SELECT name FROM chats UNION SELECT sender FROM messages"
    ):
        if isinstance(value, str):
            names.add(value.strip())
            names.update(p for p in value.split() if len(p) >= 3 and p.istitle() and p.lower() not in _COMMON)
    return {n for n in names if len(n) >= 2 and n.lower() not in _COMMON}


def read_traces(db_path: Path, *, assistant_name: str, limit: int = 5000) -> list[str]:
    """Scrubbed, distinct human utterances from the app database at ``db_path`` (newest first)."""
    if not db_path.is_file():
        raise ValueError(f"--traces: no app database at {db_path}")
    uri = f"file:{db_path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
        names = _names(db, assistant_name)
        rows = db.execute(
            "SELECT content FROM messages WHERE COALESCE(is_bot_message, 0) = 0"
            " AND COALESCE(is_from_me, 0) = 0 AND content IS NOT NULL AND length(content) BETWEEN 1 AND ?"
            " ORDER BY seq DESC LIMIT ?",
            (MAX_CHARS, limit),
        ).fetchall()
    out: dict[str, None] = {}
    for (content,) in rows:
        cleaned = scrub(content, names)
        if cleaned and any(c.isalpha() for c in cleaned):
            out[cleaned] = None
    return list(out)
