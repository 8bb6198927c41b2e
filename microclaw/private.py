"""Files only this user may read: the data directory (0700) and everything MicroClaw keeps in it
(0600), whatever the process's umask.

The data directory holds every message, reply, audit row, connector cursor, the broker's task
payloads and the HTTP token, so another local user must not read any of it. Each creator
(engines, the broker, mailboxes, connector state, the pidfile, ``host.log``, the token) goes
through one of these helpers, which create with the private mode and also narrow a file that an
older version left readable. SQLite creates its ``-wal`` and ``-shm`` files with the mode of the
database file itself, so a database created 0600 keeps its side files 0600; existing side files
are narrowed here too.

Not here: group folders (the sandbox owns their modes, because the container user must reach
them) and the sandbox's socket directory (``workers/sandbox.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal", "-writelock")
# secrets.token_urlsafe(32): 43 characters, 256 bits.
TOKEN_BYTES = 32
_MIN_TOKEN_CHARS = 32


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make it 0700; an existing directory is narrowed."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _narrow(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if missing and make it 0600 (a new parent directory is 0700).

    An existing file is narrowed by path, never opened: it may be a SQLite database this process
    already has connections to, and closing *any* descriptor of a file drops every POSIX lock the
    process holds on it, SQLite's included (another process could then write under a reader, or
    two writers overlap).
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        _narrow(path, FILE_MODE)
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def private_sqlite(path: Path) -> Path:
    """Make the SQLite file at ``path`` 0600 before SQLite opens it, and any side files it has.

    SQLite gives new ``-wal``/``-shm`` files the database file's own mode, so this is enough
    for the files it creates later.
    """
    private_file(path)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            _narrow(side, FILE_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace the contents of ``path`` with ``text``; the file is 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(fd, FILE_MODE)
        handle.write(text)


def open_private_append(path: Path) -> IO[str]:
    """``path`` opened for appending text (a log); created or narrowed to 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "a", encoding="utf-8")


def read_token(path: Path) -> str | None:
    """The HTTP token stored at ``path``, or None when there is none (yet) or it is unreadable."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token if len(token) >= _MIN_TOKEN_CHARS else None


def load_or_create_token(path: Path) -> str:
    """The per-install HTTP token at ``path``: read (and narrowed to 0600) when it exists,
    else created with `secrets.token_urlsafe`.

    Creation is atomic (written to a private temporary file, then hard-linked into place), so a
    reader never sees half a token and two starting hosts agree on one.
    """
    existing = read_token(path)
    if existing is not None:
        _narrow(path, FILE_MODE)
        return existing
    if not path.parent.exists():
        private_dir(path.parent)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_private(tmp, token + "\n")
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a blank or truncated token file: no client can be using it
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)
    stored = read_token(path)
    if stored is None:
        raise OSError(f"could not create the HTTP token file {path}")
    return stored


def _narrow(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except PermissionError:
        logger.warning("cannot make %s private (mode %o): not its owner", path, mode)
