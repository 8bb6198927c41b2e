"""Contract §7.3 and checklist 11.15: the mount allowlist file and extra-mount validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from microclaw.sandbox.mounts import (
    DEFAULT_BLOCKED_PATTERNS,
    AllowedRoot,
    MountAllowlist,
    load_mount_allowlist,
    validate_mount,
)


def write_allowlist(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    projects = tmp_path / "projects"
    (projects / "app").mkdir(parents=True)
    (projects / ".ssh").mkdir()
    (projects / "notes-password").mkdir()
    return tmp_path


def allowlist_for(root: Path, *, rw: bool = True, non_main_ro: bool = True, patterns=()) -> MountAllowlist:
    return MountAllowlist(
        (AllowedRoot(str(root / "projects"), rw),),
        tuple(dict.fromkeys([*DEFAULT_BLOCKED_PATTERNS, *patterns])),
        non_main_ro,
    )


# -- loading ------------------------------------------------------------------------------


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert load_mount_allowlist(tmp_path / "nope.json") is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        [],
        {"allowedRoots": [], "blockedPatterns": []},
        {"allowedRoots": {}, "blockedPatterns": [], "nonMainReadOnly": True},
        {"allowedRoots": [], "blockedPatterns": "x", "nonMainReadOnly": True},
        {"allowedRoots": [], "blockedPatterns": [], "nonMainReadOnly": "yes"},
        {"allowedRoots": [{"allowReadWrite": True}], "blockedPatterns": [], "nonMainReadOnly": True},
        {
            "allowedRoots": [{"path": "/x", "allowReadWrite": "no"}],
            "blockedPatterns": [],
            "nonMainReadOnly": True,
        },
        {"allowedRoots": [], "blockedPatterns": [1], "nonMainReadOnly": True},
    ],
)
def test_invalid_structure_is_none(tmp_path: Path, content: object) -> None:
    assert load_mount_allowlist(write_allowlist(tmp_path / "a.json", content)) is None


def test_example_file_parses_and_merges_default_patterns(tmp_path: Path) -> None:
    example = {
        "allowedRoots": [
            {"path": "~/projects", "allowReadWrite": True, "description": "Development projects"},
            {"path": "~/repos", "allowReadWrite": True},
            {"path": "~/Documents/work", "allowReadWrite": False},
        ],
        "blockedPatterns": ["password", "secret", "token"],
        "nonMainReadOnly": True,
    }
    allowlist = load_mount_allowlist(write_allowlist(tmp_path / "a.json", example))
    assert allowlist is not None
    assert [r.path for r in allowlist.allowed_roots] == ["~/projects", "~/repos", "~/Documents/work"]
    assert [r.allow_read_write for r in allowlist.allowed_roots] == [True, True, False]
    assert allowlist.non_main_read_only is True
    for pattern in (*DEFAULT_BLOCKED_PATTERNS, "password", "secret", "token"):
        assert pattern in allowlist.blocked_patterns
    assert allowlist.source == tmp_path / "a.json"


def test_default_blocked_patterns_are_nanoclaws() -> None:
    assert set(DEFAULT_BLOCKED_PATTERNS) == {
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
    }


# -- validation ---------------------------------------------------------------------------


def test_no_allowlist_rejects_everything(root: Path) -> None:
    decision = validate_mount(str(root / "projects" / "app"), None, True, allowlist=None, is_main=True)
    assert not decision.allowed
    assert "allowlist" in decision.reason


def test_container_path_defaults_to_basename(root: Path) -> None:
    decision = validate_mount(
        str(root / "projects" / "app"), None, None, allowlist=allowlist_for(root), is_main=True
    )
    assert decision.allowed
    assert decision.container_path == "app"
    assert decision.target == "/workspace/extra/app"
    assert decision.host_path == os.path.realpath(root / "projects" / "app")


@pytest.mark.parametrize("container_path", ["/abs", "../up", "a/../../b", "x:y", "data:/etc", " "])
def test_bad_container_paths_rejected(root: Path, container_path: str) -> None:
    decision = validate_mount(
        str(root / "projects" / "app"), container_path, True, allowlist=allowlist_for(root), is_main=True
    )
    assert not decision.allowed


def test_nonexistent_host_path_rejected(root: Path) -> None:
    decision = validate_mount(
        str(root / "projects" / "ghost"), "g", True, allowlist=allowlist_for(root), is_main=True
    )
    assert not decision.allowed
    assert "does not exist" in decision.reason


def test_default_blocked_pattern_rejected(root: Path) -> None:
    decision = validate_mount(
        str(root / "projects" / ".ssh"), "keys", True, allowlist=allowlist_for(root), is_main=True
    )
    assert not decision.allowed
    assert ".ssh" in decision.reason


def test_custom_pattern_is_substring_of_a_component(root: Path) -> None:
    allowlist = allowlist_for(root, patterns=["password"])
    decision = validate_mount(
        str(root / "projects" / "notes-password"), "n", True, allowlist=allowlist, is_main=True
    )
    assert not decision.allowed


def test_symlink_into_blocked_dir_rejected_by_real_path(root: Path) -> None:
    link = root / "projects" / "harmless"
    link.symlink_to(root / "projects" / ".ssh")
    decision = validate_mount(str(link), "harmless", True, allowlist=allowlist_for(root), is_main=True)
    assert not decision.allowed
    assert decision.host_path == os.path.realpath(root / "projects" / ".ssh")


def test_symlink_escaping_the_root_rejected(root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    link = root / "projects" / "link-out"
    link.symlink_to(outside)
    decision = validate_mount(str(link), "out", True, allowlist=allowlist_for(root), is_main=True)
    assert not decision.allowed
    assert "allowed root" in decision.reason


def test_outside_every_root_rejected(root: Path) -> None:
    (root / "elsewhere").mkdir()
    decision = validate_mount(str(root / "elsewhere"), "e", True, allowlist=allowlist_for(root), is_main=True)
    assert not decision.allowed


def test_root_that_does_not_exist_never_matches(root: Path) -> None:
    allowlist = MountAllowlist((AllowedRoot(str(root / "missing"), True),), DEFAULT_BLOCKED_PATTERNS, False)
    decision = validate_mount(str(root / "projects" / "app"), "a", True, allowlist=allowlist, is_main=True)
    assert not decision.allowed


@pytest.mark.parametrize(
    ("readonly", "root_rw", "is_main", "non_main_ro", "expect_ro"),
    [
        (None, True, True, False, True),  # read-only is the default
        (True, True, True, False, True),
        (False, True, True, False, False),  # rw needs readonly === false ...
        (False, False, True, False, True),  # ... and a root that allows it ...
        (False, True, False, True, True),  # ... and not (non-main and nonMainReadOnly)
        (False, True, False, False, False),
        (False, True, True, True, False),  # main is not affected by nonMainReadOnly
    ],
)
def test_read_write_rules(
    root: Path, readonly: bool | None, root_rw: bool, is_main: bool, non_main_ro: bool, expect_ro: bool
) -> None:
    allowlist = allowlist_for(root, rw=root_rw, non_main_ro=non_main_ro)
    decision = validate_mount(
        str(root / "projects" / "app"), "app", readonly, allowlist=allowlist, is_main=is_main
    )
    assert decision.allowed
    assert decision.readonly is expect_ro


def test_tilde_is_expanded(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(root))
    allowlist = MountAllowlist((AllowedRoot("~/projects", False),), DEFAULT_BLOCKED_PATTERNS, True)
    decision = validate_mount("~/projects/app", None, None, allowlist=allowlist, is_main=False)
    assert decision.allowed
    assert decision.host_path == os.path.realpath(root / "projects" / "app")


def test_the_allowlist_file_itself_is_never_mountable(root: Path) -> None:
    config_dir = root / "projects" / "cfg"
    config_dir.mkdir()
    file = write_allowlist(
        config_dir / "mount-allowlist.json",
        {
            "allowedRoots": [{"path": str(root / "projects"), "allowReadWrite": True}],
            "blockedPatterns": [],
            "nonMainReadOnly": False,
        },
    )
    allowlist = load_mount_allowlist(file)
    assert allowlist is not None
    for target in (config_dir, root / "projects", file):
        decision = validate_mount(str(target), "c", True, allowlist=allowlist, is_main=True)
        assert not decision.allowed, target
    assert validate_mount(
        str(root / "projects" / "app"), "a", True, allowlist=allowlist, is_main=True
    ).allowed


# -- security: case, secret files below a mount, an unusable allowlist ---------------------------


@pytest.mark.parametrize("name", [".SSH", ".Aws", "Credentials", "ID_RSA"])
def test_blocked_patterns_match_whatever_the_case(root: Path, name: str) -> None:
    # macOS and Windows volumes are case-insensitive: ~/.SSH is ~/.ssh there.
    (root / "projects" / name).mkdir()
    decision = validate_mount(
        str(root / "projects" / name), "x", True, allowlist=allowlist_for(root), is_main=True
    )
    assert not decision.allowed and "blocked pattern" in decision.reason


@pytest.mark.parametrize("secret", [".env", "deep/er/.ENV", "keys/id_ed25519", "cfg/.netrc"])
def test_a_folder_holding_a_blocked_name_is_refused(root: Path, secret: str) -> None:
    app = root / "projects" / "site"
    (app / "src").mkdir(parents=True)
    (app / "src" / "main.py").write_text("print('hi')")
    target = app / secret
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("API_KEY=hunter2")
    decision = validate_mount(str(app), "site", True, allowlist=allowlist_for(root), is_main=True)
    assert not decision.allowed
    assert "the folder holds" in decision.reason and secret in decision.reason
    target.unlink()  # without it the same folder is fine
    assert validate_mount(str(app), "site", True, allowlist=allowlist_for(root), is_main=True).allowed


def test_a_blocked_name_behind_a_symlink_is_seen_but_not_followed(root: Path, tmp_path: Path) -> None:
    app = root / "projects" / "linked"
    app.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "huge").mkdir()
    (app / "elsewhere").symlink_to(outside, target_is_directory=True)
    assert validate_mount(str(app), "l", True, allowlist=allowlist_for(root), is_main=True).allowed
    (app / ".env").symlink_to(outside / "huge")
    decision = validate_mount(str(app), "l", True, allowlist=allowlist_for(root), is_main=True)
    assert not decision.allowed and "'.env'" in decision.reason


def test_a_tree_too_large_to_check_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from microclaw.sandbox import mounts

    monkeypatch.setattr(mounts, "MAX_TREE_ENTRIES", 5)
    app = root / "projects" / "big"
    app.mkdir()
    for i in range(6):
        (app / f"f{i}.txt").write_text("x")
    decision = validate_mount(str(app), "big", True, allowlist=allowlist_for(root), is_main=True)
    assert not decision.allowed and "more than 5 files and folders" in decision.reason
    (app / "f5.txt").unlink()
    assert validate_mount(str(app), "big", True, allowlist=allowlist_for(root), is_main=True).allowed


def test_a_deeply_nested_allowlist_is_a_clear_error_not_a_crash(root: Path, tmp_path: Path) -> None:
    from microclaw.errors import ConfigError
    from microclaw.sandbox.mounts import MountAllowlistCache, read_mount_allowlist

    path = write_allowlist(tmp_path / "deep.json", "[" * 100_000 + "]" * 100_000)
    assert load_mount_allowlist(path) is None  # extras blocked, no RecursionError
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_mount_allowlist(path)
    cached = MountAllowlistCache(path).get()
    decision = validate_mount(str(root / "projects" / "app"), "app", True, allowlist=cached, is_main=True)
    assert not decision.allowed
    assert "nested too deeply" in decision.reason and "additional mounts are blocked" in decision.reason
