"""Group folder names: validation and safe resolution under a base directory (contract §7.1).

A group's folder name is its identity on disk (memory files, logs, sandbox mounts) and for
host-side tool authorization, so it must be a single safe path component. Owns that rule and
the lexical check that a resolved path stays inside its base directory.

Does not create directories, follow symlinks or check that anything exists; the same resolver
serves any base (the groups directory, the per-group IPC or session directories).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["RESERVED_FOLDERS", "is_valid_group_folder", "resolve_group_folder_path"]

_FOLDER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
RESERVED_FOLDERS = frozenset({"global"})
"""Folder names no group may take, compared case-insensitively (``groups/global`` is shared)."""


def is_valid_group_folder(folder: str) -> bool:
    """True for 1-64 characters of ``[A-Za-z0-9_-]`` starting with a letter or digit.

    The name must equal its trimmed form, must not contain ``/``, ``\\`` or ``..`` and must
    not be ``global`` in any case.
    """
    if not isinstance(folder, str) or not folder:
        return False
    if folder != folder.strip():
        return False
    if _FOLDER_PATTERN.fullmatch(folder) is None:
        return False
    if "/" in folder or "\\" in folder or ".." in folder:
        return False
    return folder.lower() not in RESERVED_FOLDERS


def resolve_group_folder_path(folder: str, groups_dir: Path) -> Path:
    """Absolute ``<groups_dir>/<folder>``, normalized lexically (symlinks are not followed).

    Raises ValueError when the folder name is invalid or the result would leave ``groups_dir``.
    """
    if not is_valid_group_folder(folder):
        raise ValueError(f"invalid group folder {folder!r}")
    base = Path(os.path.abspath(groups_dir))
    resolved = Path(os.path.normpath(base / folder))
    if resolved == base or not resolved.is_relative_to(base):
        raise ValueError(f"group folder {folder!r} escapes {str(base)!r}")
    return resolved
