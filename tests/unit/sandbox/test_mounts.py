"""microclaw.sandbox.mounts: a group's full mount list and the allowlist cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from microclaw.sandbox.base import Mount
from microclaw.sandbox.mounts import (
    DEFAULT_BLOCKED_PATTERNS,
    AllowedRoot,
    MountAllowlist,
    MountAllowlistCache,
    MountRequest,
    build_group_mounts,
)


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    (tmp_path / "groups" / "alpha").mkdir(parents=True)
    (tmp_path / "groups" / "global").mkdir()
    (tmp_path / "projects" / "app").mkdir(parents=True)
    (tmp_path / "projects" / "lib").mkdir()
    return tmp_path


def allowlist(layout: Path) -> MountAllowlist:
    return MountAllowlist((AllowedRoot(str(layout / "projects"), True),), DEFAULT_BLOCKED_PATTERNS, True)


def real(p: Path) -> str:
    return os.path.realpath(p)


def test_non_main_layout(layout: Path) -> None:
    built = build_group_mounts(
        "alpha", is_main=False, groups_dir=layout / "groups", global_dir=layout / "groups" / "global"
    )
    assert built.mounts == (
        Mount(real(layout / "groups" / "alpha"), "/workspace/group", readonly=False),
        Mount(real(layout / "groups" / "global"), "/workspace/global", readonly=True),
    )
    assert built.decisions == ()


def test_main_gets_global_read_write(layout: Path) -> None:
    built = build_group_mounts(
        "alpha", is_main=True, groups_dir=layout / "groups", global_dir=layout / "groups" / "global"
    )
    assert Mount(real(layout / "groups" / "global"), "/workspace/global", readonly=False) in built.mounts


def test_missing_global_is_not_mounted(layout: Path) -> None:
    built = build_group_mounts(
        "alpha", is_main=False, groups_dir=layout / "groups", global_dir=layout / "nothing"
    )
    assert [m.container_path for m in built.mounts] == ["/workspace/group"]


def test_extras_are_validated_and_mapped_under_extra(layout: Path) -> None:
    built = build_group_mounts(
        "alpha",
        is_main=False,
        groups_dir=layout / "groups",
        global_dir=None,
        extra=[
            MountRequest(str(layout / "projects" / "app"), "code/app", readonly=False),
            MountRequest(str(layout / "projects" / "lib")),
            MountRequest(str(layout / "projects" / "lib"), "lib"),  # same target twice
            MountRequest("/etc", "etc"),
        ],
        allowlist=allowlist(layout),
    )
    assert (
        Mount(real(layout / "projects" / "app"), "/workspace/extra/code/app", readonly=True) in built.mounts
    )
    assert Mount(real(layout / "projects" / "lib"), "/workspace/extra/lib", readonly=True) in built.mounts
    assert [d.allowed for d in built.decisions] == [True, True, False, False]
    assert "already in use" in built.decisions[2].reason
    assert len(built.mounts) == 3


def test_extras_without_allowlist_are_all_refused(layout: Path) -> None:
    built = build_group_mounts(
        "alpha",
        is_main=True,
        groups_dir=layout / "groups",
        global_dir=None,
        extra=[MountRequest(str(layout / "projects" / "app"))],
        allowlist=None,
    )
    assert len(built.mounts) == 1
    assert not built.decisions[0].allowed


@pytest.mark.parametrize("group", ["global", "GLOBAL", "../x", "a/b", "", " a", "-x"])
def test_invalid_group_names_raise(layout: Path, group: str) -> None:
    with pytest.raises(ValueError):
        build_group_mounts(group, is_main=False, groups_dir=layout / "groups", global_dir=None)


def test_group_folder_symlinked_out_of_groups_dir_raises(layout: Path) -> None:
    (layout / "groups" / "evil").symlink_to(layout / "projects")
    with pytest.raises(ValueError):
        build_group_mounts("evil", is_main=False, groups_dir=layout / "groups", global_dir=None)


def test_cache_follows_nanoclaw_rules(tmp_path: Path) -> None:
    path = tmp_path / "allow.json"
    cache = MountAllowlistCache(path)
    assert cache.get() is None  # missing: not cached
    path.write_text(json.dumps({"allowedRoots": [], "blockedPatterns": [], "nonMainReadOnly": True}))
    first = cache.get()
    assert first is not None  # created later: takes effect
    path.write_text("{broken")
    assert cache.get() is first  # valid: cached for the process lifetime

    broken = tmp_path / "broken.json"
    broken.write_text("{broken")
    cache2 = MountAllowlistCache(broken)
    unusable = cache2.get()
    assert unusable is not None and unusable.error and "unusable" in unusable.error
    broken.write_text(json.dumps({"allowedRoots": [], "blockedPatterns": [], "nonMainReadOnly": True}))
    assert cache2.get() is unusable  # a parse error stays cached until restart


def test_cache_without_path_blocks_everything() -> None:
    assert MountAllowlistCache(None).get() is None
