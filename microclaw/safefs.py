"""Host-side file access under directories a container can write, without ever following a link.

Invariant: below a trusted *root*, every path is opened one component at a time, each relative
to the file descriptor of the directory before it (``dir_fd``) and with ``O_NOFOLLOW``
(directories also with ``O_DIRECTORY``). A symbolic link at any component, or anything but a
directory where one is expected, raises `UnsafePath`, and nothing is read or written through
it. Each step starts from a descriptor already held, so a directory swapped for a link after
it was opened changes nothing: there is no window between a check and a use.

- Reads (`read_file`, `open_file_at`) take regular files only. The leaf is ``lstat``-ed
  relative to its directory, opened with ``O_NONBLOCK | O_NOCTTY`` and ``fstat``-ed again, so
  a FIFO, socket or device is refused without being opened or read, and a FIFO swapped in
  between the two steps cannot block. At most ``max_bytes`` are ever read.
- Writes (`write_new_file`, `create_file_at`) create the leaf with ``O_CREAT | O_EXCL``: they
  never open an existing file, so neither a symlink nor a hard link planted at the leaf can
  redirect them. `ensure_dir` and the writers create missing directories one level at a time
  under the same rule.
- Hard links are accepted for reads. link(2) fails across mounts (EXDEV), even of the same
  file system, so a hard link made in a container names a file already inside that
  container's own mount: reading it discloses nothing the container could not read itself.
- The root (``groups_dir``, the transcript archive) is host configuration and is opened by
  name, following links; containers mount folders *below* it, never the root itself.

Missing paths are not refusals: `read_file` returns None, `open_dir` raises
`FileNotFoundError`. Does not audit or log: callers know the group, audit the refusal
(``fs.refused``) and carry on without the content.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from microclaw.errors import UnsafePath

__all__ = [
    "Entry",
    "UnsafePath",
    "create_file_at",
    "ensure_dir",
    "open_dir",
    "open_file_at",
    "read_file",
    "read_file_at",
    "walk",
    "write_new_file",
]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | _CLOEXEC
_CHUNK = 64 * 1024

Parts = Sequence[str]


def _check(parts: Parts) -> tuple[str, ...]:
    """Each item must be one path component; anything else is a caller bug."""
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\0" in part:
            raise ValueError(f"not a single path component: {part!r}")
    return tuple(parts)


def _shown(parts: Parts) -> str:
    return "/".join(parts)


def _what(dir_fd: int, name: str) -> str:
    """Why ``name`` was refused, for the message (the decision itself was already made)."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return "changed while being opened"
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISREG(mode):
        return "is not a directory"
    return "is not a regular file or directory"


def _open_root(root: Path | str, *, create: bool) -> int:
    if create:
        os.makedirs(root, exist_ok=True)
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)


def _open_child_dir(dir_fd: int, name: str, shown: str, *, create: bool, mode: int) -> int:
    for attempt in range(2):
        try:
            return os.open(name, _DIR, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create or attempt:
                raise
            with contextlib.suppress(FileExistsError):  # raced: the open decides what it is
                os.mkdir(name, mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise UnsafePath(shown, _what(dir_fd, name)) from None
            raise
    raise AssertionError("unreachable")


def open_dir(root: Path | str, parts: Parts, *, create: bool = False, mode: int = 0o755) -> int:
    """A descriptor of the directory ``root/parts...``, reached without following any link.

    ``create`` makes the root (by name) and every missing component (mode ``mode``). The
    caller closes the descriptor. Raises `UnsafePath` when a component is a link or not a
    directory, `FileNotFoundError` when one is missing and ``create`` is false.
    """
    parts = _check(parts)
    fd = _open_root(root, create=create)
    try:
        for i, name in enumerate(parts):
            child = _open_child_dir(fd, name, _shown(parts[: i + 1]), create=create, mode=mode)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure_dir(root: Path | str, parts: Parts, *, mode: int = 0o755) -> None:
    """Create ``root/parts...`` as needed (``mkdir -p``) without following any link.

    Raises `UnsafePath` when an existing component is a link or not a directory.
    """
    os.close(open_dir(root, parts, create=True, mode=mode))


def open_file_at(dir_fd: int, name: str, *, shown: str | None = None) -> int:
    """A read-only descriptor of the regular file ``name`` in the directory ``dir_fd``.

    Raises `UnsafePath` for a link or anything but a regular file (never opened, so a FIFO
    cannot block and a device is not touched), `FileNotFoundError` when it is missing.
    ``shown`` is the path the refusal names (default: ``name``).
    """
    _check([name])
    shown = shown or name
    mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    if not stat.S_ISREG(mode):
        raise UnsafePath(shown, _what(dir_fd, name))
    try:
        fd = os.open(name, _FILE, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # swapped for a link after the lstat
            raise UnsafePath(shown, "is a symbolic link") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a FIFO after the lstat
        os.close(fd)
        raise UnsafePath(shown, "is not a regular file")
    return fd


def read_file_at(dir_fd: int, name: str, *, max_bytes: int, shown: str | None = None) -> bytes | None:
    """At most ``max_bytes`` of the regular file ``name`` in ``dir_fd``; None when missing.

    Raises `UnsafePath` as `open_file_at` does.
    """
    try:
        fd = open_file_at(dir_fd, name, shown=shown)
    except FileNotFoundError:
        return None
    try:
        chunks: list[bytes] = []
        left = max_bytes
        while left > 0:
            chunk = os.read(fd, min(left, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_file(root: Path | str, parts: Parts, *, max_bytes: int) -> bytes | None:
    """At most ``max_bytes`` of the regular file ``root/parts...``; None when it (or a
    directory on the way) is missing. Raises `UnsafePath` for a link at any component, a
    component that is not a directory, or a leaf that is not a regular file."""
    parts = _check(parts)
    if not parts:
        raise ValueError("read_file needs at least a file name")
    try:
        dir_fd = open_dir(root, parts[:-1])
    except FileNotFoundError:
        return None
    try:
        return read_file_at(dir_fd, parts[-1], max_bytes=max_bytes, shown=_shown(parts))
    finally:
        os.close(dir_fd)


def create_file_at(dir_fd: int, name: str, *, mode: int = 0o600) -> int | None:
    """A write descriptor of the new file ``name`` in ``dir_fd``; None when the name exists
    (as anything: a file, a link, a FIFO). Never opens an existing file."""
    _check([name])
    try:
        return os.open(name, _NEW, mode, dir_fd=dir_fd)
    except FileExistsError:
        return None


def write_new_file(
    root: Path | str, parts: Parts, data: bytes, *, mode: int = 0o600, dir_mode: int = 0o700
) -> bool:
    """Create ``root/parts...`` holding ``data`` (directories made as needed, mode
    ``dir_mode``); False, writing nothing, when the name already exists.

    Raises `UnsafePath` when a directory on the way is a link or not a directory.
    """
    parts = _check(parts)
    if not parts:
        raise ValueError("write_new_file needs at least a file name")
    dir_fd = open_dir(root, parts[:-1], create=True, mode=dir_mode)
    try:
        fd = create_file_at(dir_fd, parts[-1], mode=mode)
    finally:
        os.close(dir_fd)
    if fd is None:
        return False
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return True


@dataclass(frozen=True)
class Entry:
    """One non-directory name found by `walk`.

    ``kind`` is ``file`` (a regular file), ``link`` or ``other`` (FIFO, socket, device, or a
    directory that turned out to be unsafe to enter). ``dir_fd`` is its directory, valid only
    until the walk moves on; open the file with `open_file_at` (which checks again).
    """

    rel: tuple[str, ...]
    kind: Literal["file", "link", "other"]
    dir_fd: int
    name: str


def walk(root: Path | str, parts: Parts = ()) -> Iterator[Entry]:
    """Every non-directory entry below ``root/parts...``, depth first in name order,
    descending only into real directories (each entered with `open_dir`'s rule).

    Raises `UnsafePath` when ``root/parts...`` itself cannot be entered safely and
    `FileNotFoundError` when it is missing; below it, unsafe names are yielded, never entered.
    """
    fd = open_dir(root, parts)
    try:
        yield from _walk(fd, ())
    finally:
        os.close(fd)


def _walk(dir_fd: int, rel: tuple[str, ...]) -> Iterator[Entry]:
    with os.scandir(dir_fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        here = (*rel, entry.name)
        if entry.is_symlink():
            yield Entry(here, "link", dir_fd, entry.name)
        elif entry.is_dir(follow_symlinks=False):
            try:
                child = _open_child_dir(dir_fd, entry.name, _shown(here), create=False, mode=0)
            except (UnsafePath, FileNotFoundError):
                yield Entry(here, "other", dir_fd, entry.name)
                continue
            try:
                yield from _walk(child, here)
            finally:
                os.close(child)
        elif entry.is_file(follow_symlinks=False):
            yield Entry(here, "file", dir_fd, entry.name)
        else:
            yield Entry(here, "other", dir_fd, entry.name)
