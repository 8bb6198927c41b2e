"""Mount policy: the mount allowlist file and what a group's container may see.

Owns the contract API (``load_mount_allowlist``, ``validate_mount``; NanoClaw parity 7.2-7.3)
and ``build_group_mounts``, which assembles a group's full mount list:

==============================  =========================  ======  ========
host                            container                  main    non-main
==============================  =========================  ======  ========
``groups/<folder>``             ``/workspace/group``       rw      rw
``groups/global`` (if present)  ``/workspace/global``      rw      ro
validated extra mounts          ``/workspace/extra/<p>``   per allowlist (ro by default)
==============================  =========================  ======  ========

Rules for extra mounts: no allowlist file means no extra mounts; container paths are
relative, non-empty and free of ``..`` and ``:``; host paths are resolved with ``realpath``
and must exist; the default blocked patterns (``.ssh``, ``.aws``, ``credentials``, ...) are
always merged in and matched, case-insensitively (macOS and Windows volumes are), as
substrings of any path component or of the real path; the path must sit under an allowed root;
a directory must not hold, anywhere below it, a file or folder whose name matches a blocked
pattern (a ``.env`` next to the code): the tree is walked without following symlinks, at most
``MAX_TREE_ENTRIES`` names, and a tree that is larger or has an unreadable folder is refused
(it could not be checked); read-only unless asked otherwise and the root allows it and (for
non-main groups) ``nonMainReadOnly`` is off. The allowlist file itself is never mountable. The
walk happens when the container is created: a secret file added to a mounted tree later is
not seen.

An allowlist file that exists but cannot be used (bad JSON, a wrong structure, nesting too deep
for the parser) is a `MountAllowlistError`; the cache keeps its reason, and every extra mount is
refused with it (``mount allowlist ... unusable: ...``) while the process keeps running.

Pure functions over plain data except for filesystem reads (``realpath``, ``exists``). Does
not audit or log decisions (the service does), start containers, or cache by itself
(``MountAllowlistCache`` implements NanoClaw's caching rules for the long-lived worker).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from microclaw.errors import ConfigError
from microclaw.sandbox.base import (
    DEFAULT_MOUNT_ALLOWLIST_PATH,
    EXTRA_MOUNT_ROOT,
    GLOBAL_MOUNT,
    GROUP_MOUNT,
    Mount,
    validate_group_name,
)

logger = logging.getLogger(__name__)

DEFAULT_ALLOWLIST_PATH = DEFAULT_MOUNT_ALLOWLIST_PATH
#: Names looked at below a mounted directory before it is refused as too large to check.
MAX_TREE_ENTRIES = 10_000

DEFAULT_BLOCKED_PATTERNS: tuple[str, ...] = (
    ".ssh",
    ".gnupg",
    ".gpg",
    ".aws",
    ".azure",
    ".gcloud",
    ".kube",
    ".docker",
    "credentials",
    ".env",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "id_rsa",
    "id_ed25519",
    "private_key",
    ".secret",
)


@dataclass(frozen=True)
class AllowedRoot:
    """A directory under which extra mounts may come from."""

    path: str
    allow_read_write: bool = False
    description: str | None = None


@dataclass(frozen=True)
class MountAllowlist:
    """A parsed allowlist file; ``blocked_patterns`` already includes the defaults."""

    allowed_roots: tuple[AllowedRoot, ...]
    blocked_patterns: tuple[str, ...]
    non_main_read_only: bool
    source: Path | None = None  # the file it came from: never mountable
    error: str | None = None  # set: the file is unusable, every extra mount is refused with this


class MountAllowlistError(ConfigError):
    """The mount allowlist file exists but cannot be used; the message says why."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message, key="mount_allowlist_path")
        self.path = path


@dataclass(frozen=True)
class MountRequest:
    """An extra mount a group asks for (``readonly=False`` is the only way to ask for rw)."""

    host_path: str
    container_path: str | None = None
    readonly: bool | None = None


@dataclass(frozen=True)
class MountDecision:
    """The verdict on one mount request.

    ``host_path`` is the real path (None when it could not be resolved), ``container_path``
    the validated path relative to ``/workspace/extra``, ``readonly`` the effective mode.
    """

    allowed: bool
    reason: str
    host_path: str | None
    container_path: str
    readonly: bool

    @property
    def target(self) -> str:
        """The absolute in-container path: ``/workspace/extra/<container_path>``."""
        return f"{EXTRA_MOUNT_ROOT}/{self.container_path}"


def load_mount_allowlist(path: Path | str) -> MountAllowlist | None:
    """Parse the allowlist at ``path``; None when it is missing or invalid (all extras blocked).

    Shape: ``{"allowedRoots": [{"path", "allowReadWrite", "description"?}],
    "blockedPatterns": [str], "nonMainReadOnly": bool}``; all three keys are required with
    those types, otherwise the whole file is invalid. ``~`` in root paths is expanded.
    """
    try:
        return read_mount_allowlist(path)
    except MountAllowlistError as exc:
        logger.warning("%s: extra mounts are blocked", exc)
        return None


def read_mount_allowlist(path: Path | str) -> MountAllowlist | None:
    """Like `load_mount_allowlist`, but an unusable file raises `MountAllowlistError`.

    None only when the file is missing.
    """
    file = Path(path).expanduser()
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        logger.info("mount allowlist %s not found: extra mounts are blocked", file)
        return None
    except RecursionError:
        raise MountAllowlistError(
            f"mount allowlist {file} is unusable: its JSON is nested too deeply", path=file
        ) from None
    except (OSError, ValueError) as exc:
        raise MountAllowlistError(f"mount allowlist {file} is unusable: {exc}", path=file) from exc
    allowlist = _parse_allowlist(raw, file)
    if allowlist is None:
        raise MountAllowlistError(
            f"mount allowlist {file} is unusable: expected allowedRoots (a list of {{path, "
            "allowReadWrite}}), blockedPatterns (a list of strings) and nonMainReadOnly (true/false)",
            path=file,
        )
    return allowlist


def _parse_allowlist(raw: object, source: Path | None) -> MountAllowlist | None:
    if not isinstance(raw, dict):
        return None
    roots, patterns, non_main_ro = (
        raw.get("allowedRoots"),
        raw.get("blockedPatterns"),
        raw.get("nonMainReadOnly"),
    )
    if not isinstance(roots, list) or not isinstance(patterns, list) or not isinstance(non_main_ro, bool):
        return None
    parsed_roots = []
    for root in roots:
        if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
            return None
        rw = root.get("allowReadWrite", False)
        desc = root.get("description")
        if not isinstance(rw, bool) or (desc is not None and not isinstance(desc, str)):
            return None
        parsed_roots.append(AllowedRoot(root["path"], rw, desc))
    if not all(isinstance(p, str) for p in patterns):
        return None
    merged = tuple(dict.fromkeys([*DEFAULT_BLOCKED_PATTERNS, *(p for p in patterns if p)]))
    return MountAllowlist(tuple(parsed_roots), merged, non_main_ro, source)


def _expand(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _blocked_by(path: str, patterns: Sequence[str]) -> str | None:
    folded = path.casefold()
    parts = [p for p in folded.split(os.sep) if p]
    for pattern in patterns:
        needle = pattern.casefold()
        if any(needle in part for part in parts) or needle in folded:
            return pattern
    return None


def _secret_below(root: str, patterns: Sequence[str], limit: int) -> str | None:
    """Why the tree under directory ``root`` may not be mounted, or None when it holds no
    blocked name. Symlinks are looked at by name, never followed."""
    seen = 0
    problem: list[str] = []

    def unreadable(exc: OSError) -> None:
        problem.append(f"{exc.filename or root} cannot be read to check it for secret files")

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        if problem:
            return problem[0]
        for name in (*dirs, *files):
            seen += 1
            if seen > limit:
                return (
                    f"the folder holds more than {limit} files and folders, too many to check for "
                    "secret files; mount a smaller folder"
                )
            pattern = _blocked_by(name, patterns)
            if pattern:
                below = os.path.relpath(os.path.join(folder, name), root)
                return f"the folder holds {below!r}, which matches blocked pattern {pattern!r}"
    return problem[0] if problem else None


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_container_path(container_path: str) -> str | None:
    """Why ``container_path`` is unacceptable as a ``/workspace/extra`` subpath, or None."""
    if not container_path or not container_path.strip():
        return "container path is empty"
    if container_path.startswith("/"):
        return "container path must be relative"
    if ".." in container_path:
        return "container path must not contain '..'"
    if ":" in container_path:
        return "container path must not contain ':'"
    if any(ord(c) < 32 or c in "\\," for c in container_path):
        return "container path contains a forbidden character"
    return None


def validate_mount(
    host_path: str,
    container_path: str | None,
    readonly: bool | None,
    *,
    allowlist: MountAllowlist | None,
    is_main: bool,
) -> MountDecision:
    """Decide one extra mount request (NanoClaw 7.3). Never raises for bad input.

    ``container_path`` defaults to the basename of ``host_path``. Read-write is granted only
    when ``readonly is False`` and the matching root allows it and not (non-main and
    ``nonMainReadOnly``).
    """
    raw_cp = container_path if container_path else os.path.basename(str(host_path).rstrip("/"))
    cp = posixpath.normpath(raw_cp) if raw_cp and ".." not in raw_cp else raw_cp

    def deny(reason: str, real: str | None = None) -> MountDecision:
        return MountDecision(False, reason, real, raw_cp, True)

    if allowlist is None:
        return deny("no mount allowlist: additional mounts are blocked")
    if allowlist.error:
        return deny(f"{allowlist.error}; additional mounts are blocked")
    problem = check_container_path(raw_cp)
    if problem:
        return deny(problem)
    if not isinstance(host_path, str) or not host_path or "\x00" in host_path:
        return deny("host path is empty or invalid")
    expanded = _expand(host_path)
    try:
        real = os.path.realpath(expanded, strict=True)
    except (OSError, RuntimeError):
        return deny(f"host path {host_path} does not exist")
    pattern = _blocked_by(real, allowlist.blocked_patterns) or _blocked_by(
        expanded, allowlist.blocked_patterns
    )
    if pattern:
        return deny(f"path matches blocked pattern {pattern!r}", real)
    if allowlist.source is not None:
        try:
            source_real = os.path.realpath(Path(allowlist.source).expanduser())
        except OSError:
            source_real = None
        if source_real and _is_within(source_real, real):
            return deny("path would expose the mount allowlist itself", real)
    matched: AllowedRoot | None = None
    for root in allowlist.allowed_roots:
        try:
            root_real = os.path.realpath(_expand(root.path), strict=True)
        except (OSError, RuntimeError):
            continue
        if _is_within(real, root_real):
            matched = root
            break
    if matched is None:
        return deny("path is not under any allowed root", real)
    if os.path.isdir(real):
        secret = _secret_below(real, allowlist.blocked_patterns, MAX_TREE_ENTRIES)
        if secret:
            return deny(secret, real)
    want_rw = readonly is False
    rw = want_rw and matched.allow_read_write and (is_main or not allowlist.non_main_read_only)
    if want_rw and not rw:
        reason = "allowed read-only (read-write not permitted here)"
    else:
        reason = "allowed read-write" if rw else "allowed read-only"
    return MountDecision(True, reason, real, cp, not rw)


@dataclass(frozen=True)
class GroupMounts:
    """A group's mount list plus every extra-mount decision (for the audit)."""

    mounts: tuple[Mount, ...]
    decisions: tuple[MountDecision, ...]


def build_group_mounts(
    group: str,
    *,
    is_main: bool,
    groups_dir: Path,
    global_dir: Path | None,
    extra: Sequence[MountRequest] = (),
    allowlist: MountAllowlist | None = None,
) -> GroupMounts:
    """Assemble a group's mounts; rejected extras are left out (and reported), never fatal.

    The group folder must already exist (the service creates it). Raises ValueError for an
    invalid group name or a group folder that resolves outside ``groups_dir``.
    """
    validate_group_name(group)
    base = os.path.realpath(_expand(str(groups_dir)))
    group_real = os.path.realpath(os.path.join(base, group))
    if not _is_within(group_real, base) or group_real == base:
        raise ValueError(f"group folder for {group!r} escapes {groups_dir}")
    mounts = [Mount(group_real, GROUP_MOUNT, readonly=False)]
    if global_dir is not None and os.path.isdir(_expand(str(global_dir))):
        mounts.append(Mount(os.path.realpath(_expand(str(global_dir))), GLOBAL_MOUNT, readonly=not is_main))
    decisions: list[MountDecision] = []
    taken = {m.container_path for m in mounts}
    for req in extra:
        decision = validate_mount(
            req.host_path, req.container_path, req.readonly, allowlist=allowlist, is_main=is_main
        )
        if decision.allowed and decision.target in taken:
            decision = MountDecision(
                False, "container path already in use", decision.host_path, decision.container_path, True
            )
        decisions.append(decision)
        if decision.allowed and decision.host_path:
            taken.add(decision.target)
            mounts.append(Mount(decision.host_path, decision.target, decision.readonly))
    return GroupMounts(tuple(mounts), tuple(decisions))


class MountAllowlistCache:
    """NanoClaw's caching of the allowlist file for a long-lived process.

    A valid file is cached for the process lifetime; a parse or structure error is cached
    too (extras stay blocked until restart, each refusal naming the error); a missing file is
    not cached, so creating it later takes effect.
    """

    def __init__(self, path: Path | str | None) -> None:
        self._path = Path(path).expanduser() if path is not None else None
        self._lock = threading.Lock()
        self._loaded = False
        self._value: MountAllowlist | None = None

    def get(self) -> MountAllowlist | None:
        """The allowlist now, following the caching rules above."""
        if self._path is None:
            return None
        with self._lock:
            if self._loaded:
                return self._value
            if not self._path.exists():
                return None
            try:
                self._value = read_mount_allowlist(self._path)
            except MountAllowlistError as exc:
                logger.warning("%s: extra mounts are blocked until restart", exc)
                self._value = MountAllowlist((), DEFAULT_BLOCKED_PATTERNS, True, self._path, error=str(exc))
            self._loaded = True
            return self._value
