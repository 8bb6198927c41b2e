"""Doorbells: one FIFO per consuming connection, beside the broker file.

A consumer that would otherwise poll creates ``<broker file>-consumers/<owner>`` (a named pipe,
mode 0600) and holds it open for reading for as long as its process lives. A publisher that
adds a message to a queue writes one byte to the FIFO of each consumer registered on that
queue, which wakes the consumer's ``select()`` at once; a full pipe means it is already rung.

The same FIFO is the consumer's liveness: opening a FIFO for writing without blocking fails
with ENXIO when no process holds it open for reading, and the kernel closes a process's
descriptors when it dies, SIGKILL included. `alive()` is that test; it is what lets another
consumer hand a dead consumer's unacknowledged messages back to the queue. A FIFO is created
under a temporary name and renamed once it is open, so a consumer is never seen half-made.
Forked children close their inherited copy (`os.register_at_fork`), so a prefork pool child
never keeps its dead parent looking alive.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import select
import stat
import uuid
import weakref
from pathlib import Path

SUPPORTED = hasattr(os, "mkfifo")


def consumers_dir(db_path: Path) -> Path:
    """The directory of doorbells beside the broker file ``db_path``."""
    return db_path.with_name(db_path.name + "-consumers")


def new_owner_id() -> str:
    return uuid.uuid4().hex[:16]


def _open_bell(directory: Path, owner: str) -> int | None:
    """A write end of ``owner``'s doorbell FIFO, or None when nobody holds it open (or it is gone)."""
    try:
        return os.open(directory / owner, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def ring(directory: Path, owner: str) -> bool:
    """Wake ``owner``; False when nobody holds its doorbell open (the consumer is gone)."""
    fd = _open_bell(directory, owner)
    if fd is None:
        return False
    try:
        with contextlib.suppress(BlockingIOError):  # pipe full: it is already rung
            os.write(fd, b"\0")
    finally:
        os.close(fd)
    return True


def alive(directory: Path, owner: str) -> bool:
    """Whether the consumer ``owner`` still holds its doorbell (its process is alive)."""
    fd = _open_bell(directory, owner)
    if fd is None:
        return False
    os.close(fd)
    return True


class Doorbell:
    """This process's end of one consumer's FIFO."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.owner = new_owner_id()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = directory / f".{self.owner}.new"
        os.mkfifo(temporary, 0o600)
        # O_RDWR: the pipe never reports end-of-file between writers (Linux and macOS allow it).
        self.fd: int | None = os.open(temporary, os.O_RDWR | os.O_NONBLOCK)
        os.rename(temporary, directory / self.owner)
        _open_bells.add(self)

    def fileno(self) -> int:
        if self.fd is None:
            raise ValueError("doorbell closed")
        return self.fd

    def wait(self, timeout: float) -> bool:
        """Sleep until rung or ``timeout`` passes; True if rung. Consumes pending rings."""
        if self.fd is None:
            return False
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass
        return True

    def close(self) -> None:
        """Close and remove the FIFO (other processes then see this consumer as gone)."""
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / self.owner)
        os.close(self.fd)
        self.fd = None
        _open_bells.discard(self)

    def _forget_after_fork(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = None


def remove_stale(directory: Path) -> int:
    """Unlink FIFOs (and half-made ones) nobody holds open; returns how many."""
    removed = 0
    if not directory.is_dir():
        return 0
    for entry in directory.iterdir():
        try:
            if not stat.S_ISFIFO(entry.lstat().st_mode):
                continue
        except FileNotFoundError:
            continue
        if not alive(directory, entry.name):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
    return removed


_open_bells: weakref.WeakSet[Doorbell] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for bell in list(_open_bells):
        bell._forget_after_fork()
    _open_bells.clear()


def _close_all_at_exit() -> None:
    for bell in list(_open_bells):
        with contextlib.suppress(OSError):
            bell.close()


if SUPPORTED:
    os.register_at_fork(after_in_child=_after_fork_in_child)
    atexit.register(_close_all_at_exit)
